#include "store/warehouse.hpp"

#include "actors/core/state_rows.hpp"
#include "store/warehouse_rows.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <tuple>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "actors/core/codec.hpp"
#include "actors/core/fault.hpp"

namespace weir {

namespace {

constexpr size_t result_prefix = 2 + 8 + 8;
constexpr size_t key_hash_size = 8;

caf::error corrupt(const std::string& what) {
  return make_error(errc::store_corrupt, "warehouse: " + what + " does not decode");
}

void encode_pipeline(const pipeline_info& p, std::string& out) {
  out.clear();
  codec::writer w{out};
  w.u16(p.id);
  w.str(p.window);
  w.u32(static_cast<uint32_t>(p.aggregates.size()));
  for (const auto& a : p.aggregates)
    w.str(a);
  w.str(p.definition);
}

/// Looks a pipeline up by name inside a txn; nullopt when unknown.
caf::expected<std::optional<pipeline_info>> find_pipeline(lmdb::txn& t, lmdb::dbi d,
                                                          const std::string& name) {
  if (name.empty())
    return std::optional<pipeline_info>{};
  auto v = t.get_sealed(d, name);
  if (!v)
    return std::move(v.error());
  if (!*v)
    return std::optional<pipeline_info>{};
  pipeline_info p;
  if (auto err = decode_pipeline(name, **v, p))
    return err;
  return std::optional<pipeline_info>{std::move(p)};
}

caf::expected<uint64_t> read_u64(lmdb::txn& t, lmdb::dbi d, std::string_view key,
                                 const char* what) {
  auto v = t.get_sealed(d, key);
  if (!v)
    return std::move(v.error());
  if (!*v)
    return uint64_t{0};
  if ((*v)->size() != 8)
    return corrupt(what);
  return codec::get_le64((*v)->data());
}

caf::error write_u64(lmdb::txn& t, lmdb::dbi d, std::string_view key, uint64_t value) {
  char b[8];
  codec::put_le64(b, value);
  return t.put_sealed(d, key, std::string_view{b, 8});
}

/// Adds n to the counter under `key` (a missing one starts at `start`) and returns the value
/// it had.
caf::expected<uint64_t> add_to_counter(lmdb::txn& t, lmdb::dbi d, const std::string& key,
                                       uint64_t n, uint64_t start = 0) {
  auto old = read_u64(t, d, key, "a counter");
  if (!old)
    return old;
  const uint64_t from = *old == 0 ? start : *old;
  if (auto err = write_u64(t, d, key, from + n))
    return err;
  return from;
}

/// Result rows written by every commit of a pipeline (late updates count again).
std::string windows_counter_key(uint16_t pid) {
  return "windows/" + std::to_string(pid);
}

std::string seq_counter_key(uint16_t pid) {
  return "dead_letter_seq/" + std::to_string(pid);
}

std::string dedupe_cutoff_key(uint16_t pid) {
  return "dedupe_cutoff/" + std::to_string(pid);
}

int64_t wall_clock_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

std::string key_index_key(uint16_t pid) {
  return "key_index/" + std::to_string(pid);
}

std::string change_keep_key(uint16_t pid) {
  return "change_keep/" + std::to_string(pid);
}

/// The prefix of the sink cursors of a pipeline: "sink/<id>/", then the sink's name.
std::string sink_prefix(uint16_t pid) {
  return "sink/" + std::to_string(pid) + "/";
}

/// The lowest sink cursor of pipeline `pid` (none: no sink).
caf::expected<std::optional<uint64_t>> lowest_sink_cursor(lmdb::txn& t, lmdb::dbi counters,
                                                          uint16_t pid) {
  std::optional<uint64_t> low;
  const auto prefix = sink_prefix(pid);
  auto cur = lmdb::cursor::open(t, counters);
  if (!cur)
    return std::move(cur.error());
  for (auto more = cur->seek(prefix);; more = cur->next()) {
    if (!more)
      return std::move(more.error());
    if (!*more || cur->key().substr(0, prefix.size()) != prefix)
      return low;
    auto v = cur->sealed_value();
    if (!v)
      return std::move(v.error());
    if (v->size() != 8)
      return t.corrupt(counters, cur->key(), "a sink cursor");
    const uint64_t at = codec::get_le64(v->data());
    low = low ? std::min(*low, at) : at;
  }
}

/// A by_key entry: (pipeline, hash of the key, start, end).
constexpr size_t by_key_size = 26;
void by_key_entry(char* out, uint16_t pid, std::string_view key, timestamp start, timestamp end) {
  codec::put_be16(out, pid);
  codec::put_be64(out + 2, XXH3_64bits(key.data(), key.size()));
  codec::put_be64_signed(out + 10, start);
  codec::put_be64_signed(out + 18, end);
}

/// A by_key value: the whole key (u32 length, bytes), then the row as the results table holds
/// it (version, count, values), so that a lookup reads the index alone, in order.
void by_key_row(std::string_view key, std::string_view stored, std::string& out) {
  out.clear();
  codec::writer w{out};
  w.str(key);
  w.raw(stored);
}

/// A changes key: (pipeline, epoch, row).
constexpr size_t change_key_size = 14;
void change_key(char* out, uint16_t pid, uint64_t epoch, uint32_t row) {
  codec::put_be16(out, pid);
  codec::put_be64(out + 2, epoch);
  codec::put_be32(out + 10, row);
}

/// The dedupe cutoff is stored with its sign bit flipped, so that 0 (a missing counter) means
/// that there is no cutoff yet.
uint64_t cutoff_bits(int64_t cut) {
  return static_cast<uint64_t>(cut) ^ (uint64_t{1} << 63);
}

int64_t cutoff_of(uint64_t bits) {
  return bits == 0 ? std::numeric_limits<int64_t>::min()
                   : static_cast<int64_t>(bits ^ (uint64_t{1} << 63));
}

/// Appends the results-table key of (pipeline, start, end, key) to `out`. Keys that fit are
/// stored as they are; longer ones as a prefix plus the hash of the whole key, which makes the
/// stored key exactly `max_key` bytes long, a length no stored-as-is key reaches.
/// Returns whether the key was too long.
bool append_result_key(uint16_t pid, timestamp start, timestamp end, std::string_view key,
                       size_t max_key, std::string& out) {
  const size_t at = out.size();
  const size_t room = max_key - result_prefix;
  const bool long_key = key.size() >= room;
  out.resize(at + result_prefix + (long_key ? room : key.size()));
  char* p = out.data() + at;
  codec::put_be16(p, pid);
  codec::put_be64_signed(p + 2, start);
  codec::put_be64_signed(p + 10, end);
  p += result_prefix;
  if (!long_key) {
    if (!key.empty())
      std::memcpy(p, key.data(), key.size());
    return false;
  }
  std::memcpy(p, key.data(), room - key_hash_size);
  codec::put_be64(p + room - key_hash_size, XXH3_64bits(key.data(), key.size()));
  return true;
}

bool encode_result_key(uint16_t pid, timestamp start, timestamp end, std::string_view key,
                       size_t max_key, std::string& out) {
  out.clear();
  return append_result_key(pid, start, end, key, max_key, out);
}

/// The results-table value of `r`: its stored part as it lies in the pack, plus the whole key
/// when the key was too long.
std::string_view result_value(const result_view& r, bool long_key, std::string& buf) {
  if (!long_key)
    return r.stored;
  buf.assign(r.stored.data(), r.stored.size());
  codec::writer{buf}.str(r.key);
  return buf;
}

/// Where one result's stored key lies in a shared key buffer.
struct keyed_row {
  size_t at;
  uint32_t len;
  uint32_t index;
  bool long_key;
};

/// The stored keys of `results` in one buffer `keys`, as rows sorted by key. Stable: of two
/// rows for one window in a commit, the later one wins, as it would unsorted.
std::vector<keyed_row> sorted_result_keys(uint16_t pid, const result_pack& results, size_t max_key,
                                          std::string& keys) {
  keys.reserve(results.size() * (result_prefix + 16));
  std::vector<keyed_row> keyed;
  keyed.reserve(results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    const auto r = results[i];
    const size_t at = keys.size();
    bool long_key = append_result_key(pid, r.start, r.end, r.key, max_key, keys);
    keyed.push_back(
      {at, static_cast<uint32_t>(keys.size() - at), static_cast<uint32_t>(i), long_key});
  }
  auto view = [&keys](const keyed_row& x) { return std::string_view{keys}.substr(x.at, x.len); };
  auto less = [&view](const keyed_row& x, const keyed_row& y) { return view(x) < view(y); };
  // Rows come as a few runs already in order (one per partition, sorted by the operator): merge
  // the runs; sort only when there are many.
  std::vector<size_t> runs{0};
  for (size_t i = 1; i < keyed.size() && runs.size() <= 16; ++i)
    if (less(keyed[i], keyed[i - 1]))
      runs.push_back(i);
  if (runs.size() > 16) {
    std::stable_sort(keyed.begin(), keyed.end(), less);
    return keyed;
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    const size_t end = r + 1 < runs.size() ? runs[r + 1] : keyed.size();
    std::inplace_merge(keyed.begin(), keyed.begin() + static_cast<std::ptrdiff_t>(runs[r]),
                       keyed.begin() + static_cast<std::ptrdiff_t>(end), less);
  }
  return keyed;
}

/// The greatest key of table d, if it has any.
caf::expected<std::optional<std::string>> last_key(lmdb::txn& t, lmdb::dbi d) {
  auto cur = lmdb::cursor::open(t, d);
  if (!cur)
    return std::move(cur.error());
  auto found = cur->last();
  if (!found)
    return std::move(found.error());
  if (!*found)
    return std::optional<std::string>{};
  return std::optional<std::string>{std::string{cur->key()}};
}

/// Moves a cursor over every entry whose key starts with the BE16 id, in key order, calling
/// fn(cursor) at each; fn returns false to stop (it may delete the entry it is at).
template <class F>
caf::error walk_pipeline(lmdb::txn& t, lmdb::dbi d, uint16_t pid, F&& fn) {
  auto c = lmdb::cursor::open(t, d);
  if (!c)
    return std::move(c.error());
  char prefix[2];
  codec::put_be16(prefix, pid);
  std::string_view p{prefix, 2};
  for (auto found = c->seek(p);; found = c->next()) {
    if (!found)
      return std::move(found.error());
    if (!*found || c->key().substr(0, 2) != p)
      return caf::none;
    caf::expected<bool> go_on = fn(*c);
    if (!go_on)
      return std::move(go_on.error());
    if (!*go_on)
      return caf::none;
  }
}

/// Runs fn(key after the prefix, value) over every entry whose key starts with the BE16 id.
template <class F>
caf::error for_pipeline(lmdb::txn& t, lmdb::dbi d, uint16_t pid, F&& fn) {
  return walk_pipeline(t, d, pid, [&](lmdb::cursor& c) -> caf::expected<bool> {
    auto body = c.sealed_value();
    if (!body)
      return std::move(body.error());
    if (auto err = fn(c.key().substr(2), *body))
      return err;
    return true;
  });
}

} // namespace

// -- row decoders (store/warehouse_rows.hpp), shared with `weir check` -----------------

caf::error decode_pipeline(std::string_view name, std::string_view v, pipeline_info& out) {
  codec::reader r{v};
  out.name.assign(name.data(), name.size());
  out.id = r.u16();
  out.window = r.str();
  const uint32_t n = r.u32();
  // Each name needs at least its 4-byte length: bounds n before reserving for it.
  if (!r.ok() || n > r.remaining() / 4)
    return corrupt("pipeline '" + out.name + "'");
  out.aggregates.resize(n);
  for (auto& a : out.aggregates)
    a = r.str();
  out.definition = r.done() ? std::string_view{} : r.str();
  if (!r.done())
    return corrupt("pipeline '" + out.name + "'");
  return caf::none;
}

caf::error decode_result(std::string_view k, std::string_view v, size_t max_key,
                         window_result& row) {
  if (k.size() < result_prefix)
    return corrupt("a results key");
  row.start = codec::get_be64_signed(k.data() + 2);
  row.end = codec::get_be64_signed(k.data() + 10);
  codec::reader r{v};
  row.version = r.u32();
  const uint32_t n = r.u32();
  if (!r.ok() || n > r.remaining() / 8)
    return corrupt("a results row");
  row.values.resize(n);
  for (auto& x : row.values)
    x = r.f64();
  if (k.size() == max_key) {
    std::string_view whole = r.str();
    if (!r.ok())
      return corrupt("a results row (long key)");
    row.key.assign(whole.data(), whole.size());
  } else {
    row.key.assign(k.data() + result_prefix, k.size() - result_prefix);
  }
  if (!r.done())
    return corrupt("a results row");
  return caf::none;
}

bool decode_by_key(std::string_view k, std::string_view v, window_result& row) {
  row.start = codec::get_be64_signed(k.data() + 10);
  row.end = codec::get_be64_signed(k.data() + 18);
  codec::reader r{v};
  const std::string_view key = r.str();
  if (!r.ok())
    return false;
  row.key.assign(key.data(), key.size());
  codec::reader body{v.substr(4 + key.size())};
  row.version = body.u32();
  const uint32_t n = body.u32();
  if (!body.ok() || n > body.remaining() / 8)
    return false;
  row.values.resize(n);
  for (auto& x : row.values)
    x = body.f64();
  return body.done();
}

caf::error decode_change(std::string_view v, size_t max_key, window_result& row) {
  codec::reader r{v};
  const uint16_t klen = r.u16();
  if (!r.ok() || klen > r.remaining())
    return corrupt("a change row");
  return decode_result(v.substr(2, klen), v.substr(2 + klen), max_key, row);
}

caf::error decode_lake_sources(std::string_view v,
                               std::vector<std::pair<uint32_t, std::string>>& out) {
  codec::reader r{v};
  const uint32_t n = r.u32();
  out.clear();
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    const uint32_t id = r.u32();
    const std::string_view key = r.str();
    if (id == 0 || key.empty() || (!out.empty() && id <= out.back().first))
      r.fail();
    else
      out.emplace_back(id, std::string{key});
  }
  if (!r.done())
    return corrupt("the lake sources in meta");
  return caf::none;
}

caf::error decode_dead_letter(std::string_view v, dead_letter& d) {
  dead_letter_view x;
  if (!read_dead_letter(v, x) || !v.empty())
    return corrupt("a dead letter");
  d.source = x.source;
  d.offset = x.offset;
  d.reason.assign(x.reason.data(), x.reason.size());
  d.raw.assign(x.raw.data(), x.raw.size());
  return caf::none;
}

template <class F>
caf::error warehouse::scan_pipeline(const std::string& pipeline, lmdb::dbi d, F&& fn) {
  return env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return caf::none; // an unknown pipeline has nothing stored
    return for_pipeline(t, d, (*found)->id, fn);
  });
}

caf::expected<warehouse> warehouse::open(const std::string& dir, bool durable, size_t map_size) {
  lmdb::env_options opts;
  opts.max_dbs = 16;
  opts.map_size = map_size;
  opts.durable = durable;
  auto path = dir + "/warehouse";
  auto e = lmdb::env::open(path, opts);
  if (!e)
    return std::move(e.error());
  if (e->max_key_size() < result_prefix + key_hash_size + 64)
    return make_error(errc::store_io, "LMDB of this build allows keys of only " +
                                        std::to_string(e->max_key_size()) + " bytes");
  warehouse w;
  w.env_ = std::move(*e);
  auto err = w.env_.with_write([&](lmdb::txn& t) -> caf::error {
    auto meta = t.open_dbi("meta", true);
    if (!meta)
      return std::move(meta.error());
    if (auto ferr = lmdb::check_format(t, *meta, path, "warehouse", format_version))
      return ferr;
    w.meta_ = *meta;
    std::pair<const char*, lmdb::dbi*> tables[] = {
      {"pipelines", &w.pipelines_}, {"counters", &w.counters_},
      {"offsets", &w.offsets_},     {"epochs", &w.epochs_},
      {"results", &w.results_},     {"state", &w.state_},
      {"dedupe", &w.dedupe_},       {"dead_letters", &w.dead_letters_},
      {"windows", &w.windows_},     {"by_key", &w.by_key_},
      {"changes", &w.changes_}};
    for (auto& [name, slot] : tables) {
      auto d = t.open_dbi(name, true);
      if (!d)
        return std::move(d.error());
      *slot = *d;
    }
    return caf::none;
  });
  if (err)
    return err;
  return w;
}

caf::expected<pipeline_info>
warehouse::register_pipeline(const std::string& name, const std::vector<std::string>& aggregates,
                             const std::string& window, const std::string& definition) {
  if (name.empty() || name.size() > env_.max_key_size())
    return make_error(errc::bad_config, "pipeline name must have 1 to " +
                                          std::to_string(env_.max_key_size()) + " bytes");
  auto list = [](const std::vector<std::string>& xs) {
    std::string s = "[";
    for (size_t i = 0; i < xs.size(); ++i)
      s += (i ? ", " : "") + xs[i];
    return s + "]";
  };
  pipeline_info info;
  std::string buf;
  auto err = env_.with_write([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, name);
    if (!found)
      return std::move(found.error());
    if (*found) {
      info = std::move(**found);
      if (info.aggregates != aggregates)
        return make_error(errc::bad_config, "pipeline '" + name + "' in store " + env_.dir() +
                                              " was created with aggregates " +
                                              list(info.aggregates) +
                                              " but is now configured with " + list(aggregates) +
                                              ": use a new store directory or a new pipeline name");
      if (info.window == window && (definition.empty() || info.definition == definition))
        return caf::none;
      info.window = window;
      if (!definition.empty())
        info.definition = definition;
    } else {
      auto next = read_u64(t, counters_, "next_pipeline_id", "counter next_pipeline_id");
      if (!next)
        return std::move(next.error());
      uint64_t id = *next == 0 ? 1 : *next;
      if (id > std::numeric_limits<uint16_t>::max())
        return make_error(errc::bad_config,
                          "store " + env_.dir() + " holds the maximum number of pipelines");
      if (auto werr = write_u64(t, counters_, "next_pipeline_id", id + 1))
        return werr;
      info.id = static_cast<uint16_t>(id);
      info.name = name;
      info.aggregates = aggregates;
      info.window = window;
      info.definition = definition;
    }
    encode_pipeline(info, buf);
    return t.put_sealed(pipelines_, name, buf);
  });
  if (err)
    return err;
  return info;
}

caf::expected<std::optional<pipeline_info>> warehouse::pipeline(const std::string& name) {
  std::optional<pipeline_info> out;
  auto err = env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, name);
    if (!found)
      return std::move(found.error());
    out = std::move(*found);
    return caf::none;
  });
  if (err)
    return err;
  return out;
}

caf::expected<std::vector<pipeline_info>> warehouse::pipelines() {
  std::vector<pipeline_info> out;
  auto err = env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto c = lmdb::cursor::open(t, pipelines_);
    if (!c)
      return std::move(c.error());
    for (auto found = c->first();; found = c->next()) {
      if (!found)
        return std::move(found.error());
      if (!*found)
        return caf::none;
      pipeline_info p;
      auto body = c->sealed_value();
      if (!body)
        return std::move(body.error());
      if (auto derr = decode_pipeline(c->key(), *body, p))
        return derr;
      out.push_back(std::move(p));
    }
  });
  if (err)
    return err;
  std::sort(out.begin(), out.end(),
            [](const pipeline_info& a, const pipeline_info& b) { return a.id < b.id; });
  return out;
}

caf::expected<bool> warehouse::commit(const epoch_commit& c) {
  // Fault injection (docs/faults.md): epoch.before_commit / during_commit / after_commit.
  if (fault::hit("epoch.before_commit"))
    return fault::injected("epoch.before_commit");
  bool applied = false;
  // Exactly-once rests on this: every step writes inside the one txn, so an epoch lands whole
  // (with its last_epoch) or not at all.
  auto err = env_.with_write([&](lmdb::txn& t) -> caf::error {
    applied = false;
    auto found = find_pipeline(t, pipelines_, c.pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return make_error(errc::bad_config, "commit for pipeline '" + c.pipeline + "', which store " +
                                            env_.dir() + " does not know");
    const uint16_t pid = (*found)->id;
    auto fresh = write_epoch(t, pid, c);
    if (!fresh)
      return std::move(fresh.error());
    if (!*fresh)
      return caf::none; // a replay of a committed epoch: nothing to do
    if (auto e = write_offsets(t, pid, c.offsets))
      return e;
    if (auto e = write_dead_letters(t, pid, c.dead_letters))
      return e;
    if (auto e = write_results(t, pid, c))
      return e;
    if (auto e = write_window_rows(t, pid, c))
      return e;
    if (auto e = write_states(t, pid, c.states))
      return e;
    if (auto e = write_dedupe(t, pid, c))
      return e;
    // Fault injection: the whole epoch is written, mdb_txn_commit is not (a fail aborts it).
    if (fault::hit("epoch.during_commit"))
      return fault::injected("epoch.during_commit");
    applied = true;
    return caf::none;
  });
  if (err)
    return err;
  if (fault::hit("epoch.after_commit")) // fault injection: the epoch is durable
    return fault::injected("epoch.after_commit");
  return applied;
}

caf::expected<bool> warehouse::write_epoch(lmdb::txn& t, uint16_t pid, const epoch_commit& c) {
  char ek[2];
  codec::put_be16(ek, pid);
  auto last = read_u64(t, epochs_, std::string_view{ek, 2}, "an epoch");
  if (!last)
    return std::move(last.error());
  if (c.without_epoch)
    return true;
  if (c.epoch <= *last)
    return false;
  if (auto err = write_u64(t, epochs_, std::string_view{ek, 2}, c.epoch))
    return err;
  return true;
}

caf::error warehouse::write_offsets(lmdb::txn& t, uint16_t pid,
                                    const std::vector<std::pair<uint32_t, uint64_t>>& offsets) {
  char ok[6];
  codec::put_be16(ok, pid);
  for (const auto& [source, offset] : offsets) {
    codec::put_be32(ok + 2, source);
    if (auto err = write_u64(t, offsets_, std::string_view{ok, 6}, offset))
      return err;
  }
  return caf::none;
}

caf::error warehouse::write_dead_letters(lmdb::txn& t, uint16_t pid,
                                         const dead_letter_pack& letters) {
  if (letters.empty())
    return caf::none;
  // Dead letters continue the pipeline's sequence.
  auto first = add_to_counter(t, counters_, seq_counter_key(pid), letters.size(), 1);
  if (!first)
    return std::move(first.error());
  char dk[10];
  codec::put_be16(dk, pid);
  codec::put_be64(dk + 2, *first);
  // Keys rise with the sequence: past the table's end (the usual case, unless a pipeline with
  // a greater id has dead letters) every one is appended without a lookup.
  auto table_end = last_key(t, dead_letters_);
  if (!table_end)
    return std::move(table_end.error());
  const unsigned flags = !*table_end || std::string_view{dk, 10} > **table_end ? MDB_APPEND : 0u;
  for (size_t i = 0; i < letters.size(); ++i) {
    codec::put_be64(dk + 2, *first + i);
    if (auto err = t.put_sealed(dead_letters_, std::string_view{dk, 10}, letters.entry(i), flags))
      return err;
  }
  return caf::none;
}

caf::error warehouse::write_results(lmdb::txn& t, uint16_t pid, const epoch_commit& c) {
  const auto& results = c.results;
  const std::string& pipeline = c.pipeline;
  // The indexes this pipeline keeps: the key index only while it is complete (its counter one
  // above the windows counter), the change feed for epochs in sequence.
  auto windows = read_u64(t, counters_, windows_counter_key(pid), "a windows counter");
  if (!windows)
    return std::move(windows.error());
  auto indexed = read_u64(t, counters_, key_index_key(pid), "a key index counter");
  if (!indexed)
    return std::move(indexed.error());
  auto keep = read_u64(t, counters_, change_keep_key(pid), "a change feed retention");
  if (!keep)
    return std::move(keep.error());
  const bool by_key = *indexed != 0 && *indexed == *windows + 1;
  const bool feed = *keep != 0 && !c.without_epoch;
  if (by_key)
    if (auto err = write_u64(t, counters_, key_index_key(pid), *windows + results.size() + 1))
      return err;
  std::optional<lmdb::cursor> changes;
  uint32_t change_rows = 0;
  char ck[change_key_size];
  std::string change;
  std::string entry; // a by_key value
  if (feed) {
    auto cur = lmdb::cursor::open(t, changes_);
    if (!cur)
      return std::move(cur.error());
    changes.emplace(std::move(*cur));
    // The epoch's header row: when it was committed (for the retention). Epochs only grow, so
    // its rows go after everything of this pipeline (appended when it is the last).
    auto end = last_key(t, changes_);
    if (!end)
      return std::move(end.error());
    change_key(ck, pid, c.epoch, 0);
    const bool append = !*end || std::string_view{**end} < std::string_view{ck, change_key_size};
    char head[8];
    codec::put_le64(head, static_cast<uint64_t>(wall_clock_us()));
    if (auto err = changes->put_sealed(std::string_view{ck, change_key_size},
                                       std::string_view{head, 8}, append ? MDB_APPEND : 0))
      return err;
    if (!append)
      changes.reset(); // rows of a later pipeline follow: plain puts
    if (auto err = prune_changes(t, pid, c.epoch, static_cast<int64_t>(*keep)))
      return err;
  }
  // What a written row adds to the indexes.
  auto index = [&](const result_view& r, std::string_view stored_key,
                   std::string_view value) -> caf::error {
    if (by_key) {
      char bk[by_key_size];
      by_key_entry(bk, pid, r.key, r.start, r.end);
      by_key_row(r.key, r.stored, entry);
      if (auto err = t.put_sealed(by_key_, std::string_view{bk, by_key_size}, entry))
        return err;
    }
    if (feed) {
      change_key(ck, pid, c.epoch, ++change_rows);
      change.clear();
      codec::writer w{change};
      w.u16(static_cast<uint16_t>(stored_key.size()));
      w.raw(stored_key);
      w.raw(value);
      const std::string_view k{ck, change_key_size};
      if (auto err = changes ? changes->put_sealed(k, change, MDB_APPEND)
                             : t.put_sealed(changes_, k, change))
        return err;
    }
    return caf::none;
  };
  if (results.empty())
    return caf::none;
  if (auto n = add_to_counter(t, counters_, windows_counter_key(pid), results.size()); !n)
    return std::move(n.error());
  // Upserts that never go back to an older version, written in key order; rows past the
  // table's current end (the usual case: windows fire in time order) are appended through one
  // cursor without a lookup. The keys go into one buffer (no allocation per row) and are
  // sorted as views; values are written as they lie in the pack.
  const size_t max_key = env_.max_key_size();
  std::string keys;
  auto keyed = sorted_result_keys(pid, results, max_key, keys);
  auto view = [&keys](const keyed_row& x) { return std::string_view{keys}.substr(x.at, x.len); };
  auto table_end = last_key(t, results_);
  if (!table_end)
    return std::move(table_end.error());
  auto cur = lmdb::cursor::open(t, results_);
  if (!cur)
    return std::move(cur.error());
  std::string key;
  std::string val;
  window_result stored;
  std::string_view previous;
  bool first = true;
  for (const auto& row : keyed) {
    const auto sorted_key = view(row);
    const auto r = results[row.index];
    if (r.end < r.start)
      return make_error(errc::internal, "result of pipeline '" + pipeline + "' ends (" +
                                          std::to_string(r.end) + ") before it starts (" +
                                          std::to_string(r.start) + ")");
    const bool fresh =
      (!*table_end || sorted_key > **table_end) && (first || sorted_key != previous);
    previous = sorted_key;
    first = false;
    if (fresh) {
      const auto value = result_value(r, row.long_key, val);
      if (auto err = cur->put_sealed(sorted_key, value, MDB_APPEND))
        return err;
      if (auto err = index(r, sorted_key, value))
        return err;
      continue;
    }
    key = sorted_key;
    auto old = t.get_sealed(results_, key);
    if (!old)
      return std::move(old.error());
    if (*old) {
      if (auto err = decode_result(key, **old, max_key, stored))
        return err;
      if (stored.key != r.key)
        return make_error(errc::store_corrupt, "warehouse: two result keys of pipeline '" +
                                                 pipeline + "' share a stored key");
      if (r.version < stored.version)
        continue;
    }
    const auto value = result_value(r, row.long_key, val);
    if (auto err = t.put_sealed(results_, key, value))
      return err;
    if (auto err = index(r, key, value))
      return err;
  }
  return caf::none;
}

caf::error warehouse::prune_changes(lmdb::txn& t, uint16_t pid, uint64_t epoch, int64_t keep_us) {
  const int64_t before = wall_clock_us() - keep_us;
  auto hold = lowest_sink_cursor(t, counters_, pid);
  if (!hold)
    return std::move(hold.error());
  auto cur = lmdb::cursor::open(t, changes_);
  if (!cur)
    return std::move(cur.error());
  char from[change_key_size];
  change_key(from, pid, 0, 0);
  auto more = cur->seek(std::string_view{from, change_key_size});
  // Whole epochs go, oldest first, while their header says they are older than `before`;
  // the epoch being committed stays.
  while (more && *more) {
    auto k = cur->key();
    if (k.size() != change_key_size || codec::get_be16(k.data()) != pid)
      break;
    const uint64_t e = codec::get_be64(k.data() + 2);
    if (e >= epoch || (*hold && e > **hold))
      break;
    if (codec::get_be32(k.data() + 10) == 0) {
      auto head = cur->sealed_value();
      if (!head)
        return std::move(head.error());
      if (head->size() != 8)
        return t.corrupt(changes_, k, "a change feed header");
      if (static_cast<int64_t>(codec::get_le64(head->data())) >= before)
        break;
    }
    if (auto err = cur->del())
      return err;
    more = cur->next();
  }
  if (!more)
    return std::move(more.error());
  return caf::none;
}

caf::error warehouse::write_states(lmdb::txn& t, uint16_t pid,
                                   const std::vector<std::pair<uint32_t, std::string>>& states) {
  // Operator state replaces what was there.
  char sk[6];
  codec::put_be16(sk, pid);
  for (const auto& [partition, blob] : states) {
    codec::put_be32(sk + 2, partition);
    if (auto err = t.put_sealed(state_, std::string_view{sk, 6}, blob))
      return err;
  }
  return caf::none;
}

caf::error warehouse::write_dedupe(lmdb::txn& t, uint16_t pid, const epoch_commit& c) {
  // The ids an epoch adds are one segment under (pipeline, epoch), so an epoch costs one write
  // however many events it has. Ids with a time below the cutoff are expired: reads skip them,
  // and a segment whose newest id is below it is deleted.
  if (!c.dedupe_added.empty()) {
    char xk[10];
    codec::put_be16(xk, pid);
    codec::put_be64(xk + 2, c.epoch);
    int64_t newest = std::numeric_limits<int64_t>::min();
    for (const auto& [id, time] : c.dedupe_added)
      newest = std::max(newest, time);
    auto err = t.put_sealed_with(dedupe_, std::string_view{xk, 10}, 8 + 16 * c.dedupe_added.size(),
                                 [&](char* p) {
                                   codec::put_le64(p, static_cast<uint64_t>(newest));
                                   p += 8;
                                   for (const auto& [id, time] : c.dedupe_added) {
                                     codec::put_le64(p, id);
                                     codec::put_le64(p + 8, static_cast<uint64_t>(time));
                                     p += 16;
                                   }
                                 });
    if (err)
      return err;
  }
  if (c.dedupe_expire_before == std::numeric_limits<int64_t>::min())
    return caf::none;
  auto ckey = dedupe_cutoff_key(pid);
  auto old_cut = read_u64(t, counters_, ckey, "a dedupe cutoff");
  if (!old_cut)
    return std::move(old_cut.error());
  int64_t cut = std::max(c.dedupe_expire_before, cutoff_of(*old_cut));
  if (auto err = write_u64(t, counters_, ckey, cutoff_bits(cut)))
    return err;
  // Segments come in epoch order and mostly in time order: delete expired ones from the oldest
  // on and stop at the first live one (a later expired one goes at a later commit).
  return walk_pipeline(t, dedupe_, pid, [&](lmdb::cursor& cur) -> caf::expected<bool> {
    auto body = cur.sealed_value();
    if (!body)
      return std::move(body.error());
    auto v = *body;
    if (v.size() < 8 || (v.size() - 8) % 16 != 0)
      return corrupt("a dedupe segment");
    if (static_cast<int64_t>(codec::get_le64(v.data())) >= cut)
      return false;
    if (auto err = cur.del())
      return err;
    return true;
  });
}

template <class KeyOf>
caf::expected<uint64_t> warehouse::pipeline_u64(const std::string& pipeline, lmdb::dbi d,
                                                KeyOf&& key_of, const char* what) {
  uint64_t out = 0;
  auto err = env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return caf::none;
    auto n = read_u64(t, d, key_of((*found)->id), what);
    if (!n)
      return std::move(n.error());
    out = *n;
    return caf::none;
  });
  if (err)
    return err;
  return out;
}

caf::expected<uint64_t> warehouse::last_epoch(const std::string& pipeline) {
  return pipeline_u64(
    pipeline, epochs_,
    [](uint16_t pid) {
      std::string k(2, '\0');
      codec::put_be16(k.data(), pid);
      return k;
    },
    "an epoch");
}

caf::expected<uint64_t> warehouse::windows_committed(const std::string& pipeline) {
  return pipeline_u64(pipeline, counters_, windows_counter_key, "a windows counter");
}

caf::expected<uint64_t> warehouse::dead_letters_committed(const std::string& pipeline) {
  // The counter holds the next sequence number.
  auto next = pipeline_u64(pipeline, counters_, seq_counter_key, "a dead-letter counter");
  if (!next)
    return next;
  return *next > 0 ? *next - 1 : 0;
}

caf::expected<std::vector<std::pair<uint32_t, uint64_t>>>
warehouse::offsets(const std::string& pipeline) {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  auto err =
    scan_pipeline(pipeline, offsets_, [&](std::string_view k, std::string_view v) -> caf::error {
      if (k.size() != 4 || v.size() != 8)
        return corrupt("an offset");
      out.emplace_back(codec::get_be32(k.data()), codec::get_le64(v.data()));
      return caf::none;
    });
  if (err)
    return err;
  return out;
}

caf::expected<std::vector<std::pair<uint32_t, std::string>>>
warehouse::states(const std::string& pipeline) {
  std::vector<std::pair<uint32_t, std::string>> out;
  auto err =
    scan_pipeline(pipeline, state_, [&](std::string_view k, std::string_view v) -> caf::error {
      if (k.size() != 4)
        return corrupt("a state key");
      out.emplace_back(codec::get_be32(k.data()), std::string{v});
      return caf::none;
    });
  if (err)
    return err;
  return out;
}

namespace {

constexpr size_t window_prefix = 6; ///< pipeline BE16, partition BE32

/// The LMDB key of a window-state row; false when the row key is too long and was cut to its
/// first bytes plus a hash (the value then carries it whole).
bool window_row_key(uint16_t pid, uint32_t partition, std::string_view row, size_t max_key,
                    std::string& out) {
  out.resize(window_prefix);
  codec::put_be16(out.data(), pid);
  codec::put_be32(out.data() + 2, partition);
  if (window_prefix + row.size() < max_key) {
    out.append(row.data(), row.size());
    return false;
  }
  out.append(row.data(), max_key - window_prefix - key_hash_size);
  char h[key_hash_size];
  codec::put_be64(h, XXH3_64bits(row.data(), row.size()));
  out.append(h, key_hash_size);
  return true;
}

} // namespace

/// One epoch's window-state changes: deletes, then puts, so that a row deleted and written again
/// in one epoch (a session whose start moved onto a merged one's) ends up written.
caf::error warehouse::write_window_rows(lmdb::txn& t, uint16_t pid, const epoch_commit& c) {
  const size_t max_key = env_.max_key_size();
  std::string key;
  std::string val;
  caf::error err;
  // The rows of a partition come sorted by row key: through one cursor, each is found on the
  // page of the one before instead of by a search from the root.
  auto cur = lmdb::cursor::open(t, windows_);
  if (!cur)
    return std::move(cur.error());
  for (const auto& part : c.windows) {
    bool ok = for_each_key(part.dels, [&](std::string_view row) {
      window_row_key(pid, part.partition, row, max_key, key);
      if (err)
        return;
      auto there = cur->find(key);
      if (!there)
        err = std::move(there.error());
      else if (*there)
        err = cur->del();
    });
    ok = ok && for_each_row(part.puts, [&](std::string_view row, std::string_view v) {
           val.clear();
           if (window_row_key(pid, part.partition, row, max_key, key)) {
             val.push_back(1);
             codec::writer{val}.bytes(row);
           } else {
             val.push_back(0);
           }
           val.append(v.data(), v.size());
           if (!err)
             err = cur->put_sealed(key, val);
         });
    if (err)
      return err;
    if (!ok)
      return make_error(errc::internal, "malformed window-state rows");
  }
  return caf::none;
}

caf::error
warehouse::window_rows(const std::string& pipeline, uint32_t partition,
                       const std::function<void(std::string_view, std::string_view)>& fn) {
  return env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return caf::none;
    char prefix[window_prefix];
    codec::put_be16(prefix, (*found)->id);
    codec::put_be32(prefix + 2, partition);
    const std::string_view want{prefix, window_prefix};
    auto c = lmdb::cursor::open(t, windows_);
    if (!c)
      return std::move(c.error());
    for (auto at = c->seek(want); at && *at; at = c->next()) {
      if (c->key().substr(0, window_prefix) != want)
        return caf::none;
      auto body = c->sealed_value();
      if (!body)
        return std::move(body.error());
      codec::reader in{*body};
      auto flag = in.u8();
      std::string_view row = c->key().substr(window_prefix);
      if (flag == 1)
        row = in.bytes();
      if (!in.ok() || flag > 1)
        return t.corrupt(windows_, c->key(), "a window-state row");
      fn(row, body->substr(body->size() - in.remaining()));
    }
    return caf::none;
  });
}

caf::expected<std::vector<std::pair<uint64_t, int64_t>>>
warehouse::dedupe(const std::string& pipeline) {
  // The greatest time per id over every live segment, without the expired ones.
  std::map<uint64_t, int64_t> ids;
  int64_t cut = std::numeric_limits<int64_t>::min();
  auto err = env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return caf::none;
    auto c = read_u64(t, counters_, dedupe_cutoff_key((*found)->id), "a dedupe cutoff");
    if (!c)
      return std::move(c.error());
    cut = cutoff_of(*c);
    return for_pipeline(t, dedupe_, (*found)->id,
                        [&](std::string_view k, std::string_view v) -> caf::error {
                          if (k.size() != 8 || v.size() < 8 || (v.size() - 8) % 16 != 0)
                            return corrupt("a dedupe segment");
                          for (size_t o = 8; o < v.size(); o += 16) {
                            auto time = static_cast<int64_t>(codec::get_le64(v.data() + o + 8));
                            if (time < cut)
                              continue;
                            auto [it, fresh] = ids.emplace(codec::get_le64(v.data() + o), time);
                            if (!fresh)
                              it->second = std::max(it->second, time);
                          }
                          return caf::none;
                        });
  });
  if (err)
    return err;
  std::vector<std::pair<uint64_t, int64_t>> out;
  out.reserve(ids.size());
  for (const auto& [id, time] : ids)
    out.emplace_back(id, time);
  return out;
}

caf::error warehouse::query(const result_query& q,
                            const std::function<bool(const window_result&)>& fn) {
  const size_t max_key = env_.max_key_size();
  // The stored form of the wanted key, to compare without decoding rows of other keys.
  std::string want;
  if (q.key)
    encode_result_key(0, 0, 0, *q.key, max_key, want);
  std::string_view want_suffix =
    std::string_view{want}.substr(std::min(want.size(), result_prefix));
  return env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, q.pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return caf::none;
    const uint16_t pid = (*found)->id;
    if (q.from && q.to && *q.from > *q.to)
      return caf::none;
    if (q.key) {
      // Through the key index when it is complete.
      auto windows = read_u64(t, counters_, windows_counter_key(pid), "a windows counter");
      if (!windows)
        return std::move(windows.error());
      auto indexed = read_u64(t, counters_, key_index_key(pid), "a key index counter");
      if (!indexed)
        return std::move(indexed.error());
      if (*indexed != 0 && *indexed == *windows + 1)
        return query_by_key(t, pid, q, fn);
    }
    auto c = lmdb::cursor::open(t, results_);
    if (!c)
      return std::move(c.error());
    std::string start_key(10, '\0');
    codec::put_be16(start_key.data(), pid);
    codec::put_be64_signed(start_key.data() + 2, q.from ? *q.from : min_timestamp);
    // Resuming after a row: from its own key (skipped below) when that is further on.
    std::string after_key;
    if (q.after) {
      encode_result_key(pid, q.after->start, q.after->end, q.after->key, max_key, after_key);
      if (after_key > start_key)
        start_key = after_key;
    }
    window_result row;
    std::string previous;
    // A whole-table query that meets no row of a pipeline that committed rows: a damaged page
    // hid them (rows are never deleted), and the answer would be silently empty.
    const bool whole = !q.key && !q.from && !q.to && !q.after;
    bool seen = false;
    auto end_of_rows = [&]() -> caf::error {
      if (!whole || seen)
        return caf::none;
      auto n = read_u64(t, counters_, windows_counter_key(pid), "a windows counter");
      if (!n)
        return std::move(n.error());
      if (*n > 0)
        return t.corrupt(results_, start_key,
                         "no result rows where " + std::to_string(*n) + " were committed");
      return caf::none;
    };
    for (auto more = c->seek(start_key);; more = c->next()) {
      if (!more)
        return std::move(more.error());
      if (!*more)
        return end_of_rows();
      // Every row the scan meets is verified, also the ones it skips or stops at: a damaged
      // key could otherwise hide rows (end the scan early or fail a filter) without a word.
      auto k = c->key();
      auto body = c->sealed_value();
      if (!body)
        return std::move(body.error());
      if (k.size() < result_prefix)
        return t.corrupt(results_, k, "a results key shorter than its prefix");
      if (!previous.empty() && k <= previous)
        return t.corrupt(results_, k, "results out of key order");
      previous.assign(k.data(), k.size());
      if (codec::get_be16(k.data()) != pid)
        return end_of_rows();
      seen = true;
      timestamp start = codec::get_be64_signed(k.data() + 2);
      timestamp end = codec::get_be64_signed(k.data() + 10);
      // Rows are in start order and no row ends before it starts: past `to`, nothing fits.
      if (q.to && start > *q.to)
        return caf::none;
      if (q.to && end > *q.to)
        continue;
      if (q.key && k.substr(result_prefix) != want_suffix)
        continue;
      if (!after_key.empty() && k <= std::string_view{after_key})
        continue;
      if (auto derr = decode_result(k, *body, max_key, row))
        return derr;
      if (q.key && row.key != *q.key)
        continue; // a long key sharing prefix and hash
      if (!fn(row))
        return caf::none;
    }
  });
}

caf::error warehouse::query_by_key(lmdb::txn& t, uint16_t pid, const result_query& q,
                                   const std::function<bool(const window_result&)>& fn) {
  char from[by_key_size];
  by_key_entry(from, pid, *q.key, q.from ? *q.from : min_timestamp, min_timestamp);
  if (q.after && q.after->key == *q.key && q.after->start > (q.from ? *q.from : min_timestamp))
    by_key_entry(from, pid, *q.key, q.after->start, min_timestamp);
  auto c = lmdb::cursor::open(t, by_key_);
  if (!c)
    return std::move(c.error());
  window_result row;
  for (auto more = c->seek(std::string_view{from, by_key_size});; more = c->next()) {
    if (!more)
      return std::move(more.error());
    if (!*more)
      return caf::none;
    auto k = c->key();
    if (k.size() != by_key_size)
      return t.corrupt(by_key_, k, "a key index entry of the wrong size");
    if (std::memcmp(k.data(), from, 10) != 0)
      return caf::none; // past this key's hash
    auto body = c->sealed_value();
    if (!body)
      return std::move(body.error());
    const timestamp start = codec::get_be64_signed(k.data() + 10);
    const timestamp end = codec::get_be64_signed(k.data() + 18);
    if (q.to && start > *q.to)
      return caf::none;
    if (q.to && end > *q.to)
      continue;
    if (q.after && (start < q.after->start || (start == q.after->start && end <= q.after->end)))
      continue;
    if (!decode_by_key(k, *body, row))
      return t.corrupt(by_key_, k, "a key index entry");
    if (row.key != *q.key)
      continue; // another key with the same hash
    if (!fn(row))
      return caf::none;
  }
}

caf::error warehouse::set_indexes(const std::string& pipeline, const result_indexes& x) {
  return env_.with_write([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return caf::none;
    const uint16_t pid = (*found)->id;
    auto windows = read_u64(t, counters_, windows_counter_key(pid), "a windows counter");
    if (!windows)
      return std::move(windows.error());
    auto indexed = read_u64(t, counters_, key_index_key(pid), "a key index counter");
    if (!indexed)
      return std::move(indexed.error());
    auto drop = [&](lmdb::dbi d) -> caf::error {
      return walk_pipeline(t, d, pid, [](lmdb::cursor& cur) -> caf::expected<bool> {
        if (auto err = cur.del())
          return err;
        return true;
      });
    };
    const bool complete = *indexed != 0 && *indexed == *windows + 1;
    if (!x.by_key || !complete) {
      if (auto err = drop(by_key_))
        return err;
      if (auto d = t.del(counters_, key_index_key(pid)); !d)
        return std::move(d.error());
    }
    if (x.by_key && !complete) {
      // Built from the results, in one pass.
      char bk[by_key_size];
      window_result row;
      std::string entry;
      const size_t max_key = env_.max_key_size();
      auto err = walk_pipeline(t, results_, pid, [&](lmdb::cursor& cur) -> caf::expected<bool> {
        auto body = cur.sealed_value();
        if (!body)
          return std::move(body.error());
        if (auto derr = decode_result(cur.key(), *body, max_key, row))
          return derr;
        // The row as stored (version, count, values), without a long key's copy after it.
        const auto stored = body->substr(0, 8 + 8 * row.values.size());
        by_key_entry(bk, pid, row.key, row.start, row.end);
        by_key_row(row.key, stored, entry);
        if (auto perr = t.put_sealed(by_key_, std::string_view{bk, by_key_size}, entry))
          return perr;
        return true;
      });
      if (err)
        return err;
      if (auto werr = write_u64(t, counters_, key_index_key(pid), *windows + 1))
        return werr;
    }
    if (x.change_keep_us <= 0) {
      if (auto err = drop(changes_))
        return err;
      if (auto d = t.del(counters_, change_keep_key(pid)); !d)
        return std::move(d.error());
      return caf::none;
    }
    return write_u64(t, counters_, change_keep_key(pid), static_cast<uint64_t>(x.change_keep_us));
  });
}

caf::expected<change_feed_state>
warehouse::changes(const std::string& pipeline, uint64_t since_epoch,
                   std::optional<std::pair<uint64_t, uint32_t>> after,
                   const std::function<bool(const change_row&)>& fn) {
  change_feed_state st;
  auto err = env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return caf::none;
    const uint16_t pid = (*found)->id;
    char ek[2];
    codec::put_be16(ek, pid);
    auto last = read_u64(t, epochs_, std::string_view{ek, 2}, "an epoch");
    if (!last)
      return std::move(last.error());
    st.last_epoch = *last;
    auto keep = read_u64(t, counters_, change_keep_key(pid), "a change feed retention");
    if (!keep)
      return std::move(keep.error());
    st.enabled = *keep != 0;
    st.oldest = *last + 1;
    auto c = lmdb::cursor::open(t, changes_);
    if (!c)
      return std::move(c.error());
    char from[change_key_size];
    change_key(from, pid, 0, 0);
    auto first = c->seek(std::string_view{from, change_key_size});
    if (!first)
      return std::move(first.error());
    if (*first && c->key().size() == change_key_size && codec::get_be16(c->key().data()) == pid)
      st.oldest = codec::get_be64(c->key().data() + 2);
    if (!st.enabled || since_epoch + 1 < st.oldest)
      return caf::none;
    change_key(from, pid, since_epoch + 1, 0);
    if (after && after->first > since_epoch)
      change_key(from, pid, after->first, after->second);
    const size_t max_key = env_.max_key_size();
    change_row out;
    for (auto more = c->seek(std::string_view{from, change_key_size});; more = c->next()) {
      if (!more)
        return std::move(more.error());
      if (!*more)
        return caf::none;
      auto k = c->key();
      if (k.size() != change_key_size)
        return t.corrupt(changes_, k, "a change key of the wrong size");
      if (codec::get_be16(k.data()) != pid)
        return caf::none;
      auto body = c->sealed_value();
      if (!body)
        return std::move(body.error());
      out.epoch = codec::get_be64(k.data() + 2);
      out.index = codec::get_be32(k.data() + 10);
      if (out.index == 0 || (after && std::pair{out.epoch, out.index} <= *after))
        continue;
      if (auto derr = decode_change(*body, max_key, out.row))
        return derr;
      if (!fn(out))
        return caf::none;
    }
  });
  if (err)
    return err;
  return st;
}

caf::expected<std::vector<uint64_t>>
warehouse::register_sinks(const std::string& pipeline, const std::vector<std::string>& names) {
  std::vector<uint64_t> out;
  auto err = env_.with_write([&](lmdb::txn& t) -> caf::error {
    out.clear();
    auto found = find_pipeline(t, pipelines_, pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return make_error(errc::bad_input, "no pipeline '" + pipeline + "' in the warehouse");
    const uint16_t pid = (*found)->id;
    const auto prefix = sink_prefix(pid);
    // Cursors of sinks the config no longer names go first.
    std::vector<std::string> stale;
    auto cur = lmdb::cursor::open(t, counters_);
    if (!cur)
      return std::move(cur.error());
    for (auto more = cur->seek(prefix);; more = cur->next()) {
      if (!more)
        return std::move(more.error());
      if (!*more || cur->key().substr(0, prefix.size()) != prefix)
        break;
      auto name = cur->key().substr(prefix.size());
      if (std::find(names.begin(), names.end(), name) == names.end())
        stale.emplace_back(cur->key());
    }
    for (const auto& k : stale)
      if (auto d = t.del(counters_, k); !d)
        return std::move(d.error());
    // A new sink starts at the oldest epoch the feed holds (after the last one without it).
    char ek[2];
    codec::put_be16(ek, pid);
    auto last = read_u64(t, epochs_, std::string_view{ek, 2}, "an epoch");
    if (!last)
      return std::move(last.error());
    uint64_t start = *last;
    char from[change_key_size];
    change_key(from, pid, 0, 0);
    auto c = lmdb::cursor::open(t, changes_);
    if (!c)
      return std::move(c.error());
    auto first = c->seek(std::string_view{from, change_key_size});
    if (!first)
      return std::move(first.error());
    if (*first && c->key().size() == change_key_size && codec::get_be16(c->key().data()) == pid)
      start = std::min(start, codec::get_be64(c->key().data() + 2) - 1);
    for (const auto& n : names) {
      auto at = t.get_sealed(counters_, prefix + n);
      if (!at)
        return std::move(at.error());
      if (*at && (*at)->size() != 8)
        return t.corrupt(counters_, prefix + n, "a sink cursor");
      out.push_back(*at ? codec::get_le64((*at)->data()) : start);
      if (!*at)
        if (auto werr = write_u64(t, counters_, prefix + n, start))
          return werr;
    }
    return caf::none;
  });
  if (err)
    return err;
  return out;
}

caf::error warehouse::set_sink_cursor(const std::string& pipeline, const std::string& name,
                                      uint64_t epoch) {
  return env_.with_write([&](lmdb::txn& t) -> caf::error {
    auto found = find_pipeline(t, pipelines_, pipeline);
    if (!found)
      return std::move(found.error());
    if (!*found)
      return make_error(errc::bad_input, "no pipeline '" + pipeline + "' in the warehouse");
    return write_u64(t, counters_, sink_prefix((*found)->id) + name, epoch);
  });
}

caf::error warehouse::dead_letters(const std::optional<std::string>& pipeline,
                                   const std::function<bool(const dead_letter_row&)>& fn,
                                   uint64_t after_seq) {
  return env_.with_read([&](lmdb::txn& t) -> caf::error {
    // Names by id, to label rows (few pipelines).
    std::vector<std::pair<uint16_t, std::string>> names;
    auto pc = lmdb::cursor::open(t, pipelines_);
    if (!pc)
      return std::move(pc.error());
    pipeline_info p;
    for (auto found = pc->first();; found = pc->next()) {
      if (!found)
        return std::move(found.error());
      if (!*found)
        break;
      auto body = pc->sealed_value();
      if (!body)
        return std::move(body.error());
      if (auto derr = decode_pipeline(pc->key(), *body, p))
        return derr;
      names.emplace_back(p.id, p.name);
    }
    std::optional<uint16_t> only;
    if (pipeline) {
      auto it = std::find_if(names.begin(), names.end(),
                             [&](const auto& n) { return n.second == *pipeline; });
      if (it == names.end())
        return caf::none;
      only = it->first;
    }
    auto c = lmdb::cursor::open(t, dead_letters_);
    if (!c)
      return std::move(c.error());
    char start[10];
    codec::put_be16(start, only ? *only : 0);
    codec::put_be64(start + 2, only && after_seq < UINT64_MAX ? after_seq + 1 : 0);
    dead_letter_row row;
    uint16_t row_pid = 0;
    bool named = false;
    for (auto more = c->seek(std::string_view{start, 10});; more = c->next()) {
      if (!more)
        return std::move(more.error());
      if (!*more)
        return caf::none;
      auto k = c->key();
      if (k.size() != 10)
        return corrupt("a dead-letter key");
      uint16_t pid = codec::get_be16(k.data());
      if (only && pid != *only)
        return caf::none;
      if (!named || pid != row_pid) {
        auto it =
          std::find_if(names.begin(), names.end(), [&](const auto& n) { return n.first == pid; });
        row.pipeline = it != names.end() ? it->second : "#" + std::to_string(pid);
        row_pid = pid;
        named = true;
      }
      row.seq = codec::get_be64(k.data() + 2);
      auto body = c->sealed_value();
      if (!body)
        return std::move(body.error());
      if (auto derr = decode_dead_letter(*body, row.letter))
        return derr;
      if (!fn(row))
        return caf::none;
    }
  });
}

namespace {

constexpr std::string_view lake_sources_key = "lake_sources";

using source_map = std::map<uint32_t, std::string>;

/// The recorded lake sources, inside a txn (none recorded: empty).
caf::error read_lake_sources(lmdb::txn& t, lmdb::dbi meta, source_map& out) {
  out.clear();
  auto v = t.get_sealed(meta, lake_sources_key);
  if (!v)
    return std::move(v.error());
  if (!*v)
    return caf::none;
  std::vector<std::pair<uint32_t, std::string>> list;
  if (auto err = decode_lake_sources(**v, list))
    return err;
  out.insert(list.begin(), list.end());
  return caf::none;
}

/// Adds the ids of `add` that `known` lacks: true when it added one. A known id with another
/// key is errc::store_corrupt.
caf::expected<bool> merge_lake_sources(source_map& known,
                                       const std::vector<std::pair<uint32_t, std::string>>& add,
                                       const std::string& dir) {
  bool added = false;
  for (const auto& [id, key] : add) {
    auto [it, fresh] = known.emplace(id, key);
    added = added || fresh;
    if (!fresh && it->second != key)
      return make_error(errc::store_corrupt,
                        "warehouse " + dir + ": lake source id " + std::to_string(id) +
                          " is recorded as '" + it->second + "' but the lake now names it '" + key +
                          "': its offsets and dead letters refer to another lake");
  }
  return added;
}

std::string encode_lake_sources(const source_map& sources) {
  std::string out;
  codec::writer w{out};
  w.u32(static_cast<uint32_t>(sources.size()));
  for (const auto& [id, key] : sources) {
    w.u32(id);
    w.str(key);
  }
  return out;
}

} // namespace

caf::error
warehouse::record_lake_sources(const std::vector<std::pair<uint32_t, std::string>>& sources) {
  for (const auto& [id, key] : sources)
    if (id == 0 || key.empty())
      return make_error(errc::internal, "warehouse: a lake source needs an id from 1 and a key");
  // Mostly the sources are known already: a read txn says so without taking the writer's lock.
  source_map known;
  if (auto err = env_.with_read([&](lmdb::txn& t) { return read_lake_sources(t, meta_, known); }))
    return err;
  auto added = merge_lake_sources(known, sources, dir());
  if (!added)
    return std::move(added.error());
  if (!*added)
    return caf::none;
  // Merged again inside the write txn: another writer may have recorded some since.
  return env_.with_write([&](lmdb::txn& t) -> caf::error {
    if (auto err = read_lake_sources(t, meta_, known))
      return err;
    auto now = merge_lake_sources(known, sources, dir());
    if (!now)
      return std::move(now.error());
    return *now ? t.put_sealed(meta_, lake_sources_key, encode_lake_sources(known)) : caf::none;
  });
}

caf::expected<std::vector<std::pair<uint32_t, std::string>>> warehouse::lake_sources() {
  source_map known;
  if (auto err = env_.with_read([&](lmdb::txn& t) { return read_lake_sources(t, meta_, known); }))
    return err;
  return std::vector<std::pair<uint32_t, std::string>>{known.begin(), known.end()};
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> warehouse::table_counts() {
  return env_.table_report({{"by_key", by_key_},
                            {"changes", changes_},
                            {"counters", counters_},
                            {"dead_letters", dead_letters_},
                            {"dedupe", dedupe_},
                            {"epochs", epochs_},
                            {"meta", meta_},
                            {"offsets", offsets_},
                            {"pipelines", pipelines_},
                            {"results", results_},
                            {"state", state_},
                            {"windows", windows_}},
                           format_version);
}

} // namespace weir
