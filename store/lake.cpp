#include "store/lake.hpp"

#include <chrono>
#include <cstring>
#include <limits>

#include "actors/core/codec.hpp"
#include "actors/core/fault.hpp"

namespace weir {

namespace {

constexpr size_t chunk_key_size = 12;
/// A scan ends its read txn after this many chunks or bytes and carries on in a new one.
constexpr size_t scan_slice_chunks = 1024;
constexpr size_t scan_slice_bytes = size_t{16} << 20;

void chunk_key(char* out, uint32_t source, uint64_t offset) {
  codec::put_be32(out, source);
  codec::put_be64(out + 4, offset);
}

int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

/// One stored chunk, decoded with bounds checks.
struct chunk_entry {
  uint32_t source = 0;
  uint64_t offset = 0;
  int64_t landed = 0;
  std::string_view data;
  uint64_t end() const { return offset + data.size(); }
};

/// Decodes the chunk under a cursor without verifying its seal: for prune, which only deletes
/// chunks already committed past and must not hash every byte of the lake on each epoch.
caf::error decode_chunk_unverified(const lmdb::cursor& c, chunk_entry& out) {
  auto key = c.key();
  auto value = c.value();
  if (key.size() != chunk_key_size)
    return make_error(errc::store_corrupt,
                      "lake chunk key of " + std::to_string(key.size()) + " bytes, expected 12");
  if (value.size() < lake::chunk_header + lmdb::seal_size)
    return make_error(errc::store_corrupt, "lake chunk value of " + std::to_string(value.size()) +
                                             " bytes is shorter than its header");
  out.source = codec::get_be32(key.data());
  out.offset = codec::get_be64(key.data() + 4);
  out.landed = static_cast<int64_t>(codec::get_le64(value.data()));
  out.data = value.substr(lake::chunk_header, value.size() - lake::chunk_header - lmdb::seal_size);
  return caf::none;
}

/// Decodes the chunk under a cursor after verifying its seal (key and bytes).
caf::error decode_chunk(const lmdb::cursor& c, chunk_entry& out) {
  if (c.key().size() != chunk_key_size)
    return make_error(errc::store_corrupt, "lake chunk key of " + std::to_string(c.key().size()) +
                                             " bytes, expected 12");
  auto body = c.sealed_value();
  if (!body)
    return std::move(body.error());
  return decode_chunk_unverified(c, out);
}

} // namespace

caf::expected<lake> lake::open(const std::string& dir, bool durable, size_t map_size) {
  lmdb::env_options opts;
  opts.max_dbs = 8;
  opts.map_size = map_size;
  opts.durable = durable;
  auto path = dir + "/lake";
  auto e = lmdb::env::open(path, opts);
  if (!e)
    return std::move(e.error());
  lake result;
  result.env_ = std::move(*e);
  // Tables are opened once, in one txn: lmdb.h allows only one txn at a time to open them,
  // and the handles then serve every later txn.
  auto err = result.env_.with_write([&](lmdb::txn& t) -> caf::error {
    auto meta = t.open_dbi("meta", true);
    if (!meta)
      return std::move(meta.error());
    if (auto ferr = lmdb::check_format(t, *meta, path, "lake", format_version))
      return ferr;
    auto ids = t.open_dbi("source_ids", true);
    if (!ids)
      return std::move(ids.error());
    auto keys = t.open_dbi("source_keys", true);
    if (!keys)
      return std::move(keys.error());
    auto chunks = t.open_dbi("chunks", true);
    if (!chunks)
      return std::move(chunks.error());
    result.meta_ = *meta;
    result.source_ids_ = *ids;
    result.source_keys_ = *keys;
    result.chunks_ = *chunks;
    return caf::none;
  });
  if (err)
    return err;
  return result;
}

caf::expected<uint32_t> lake::source_id(const std::string& source_key) {
  if (source_key.empty() || source_key.size() > env_.max_key_size())
    return make_error(errc::bad_config, "source key must have 1 to " +
                                          std::to_string(env_.max_key_size()) + " bytes: '" +
                                          source_key + "'");
  uint32_t id = 0;
  auto decode = [&](std::string_view v) -> caf::error {
    if (v.size() != 4)
      return make_error(errc::store_corrupt, "lake source id of " + std::to_string(v.size()) +
                                               " bytes for '" + source_key + "'");
    id = codec::get_le32(v.data());
    return caf::none;
  };
  // The common case, a known source, needs no write txn.
  auto err = env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto v = t.get_sealed(source_ids_, source_key);
    if (!v)
      return std::move(v.error());
    return *v ? decode(**v) : caf::none;
  });
  if (err)
    return err;
  if (id != 0)
    return id;
  err = env_.with_write([&](lmdb::txn& t) -> caf::error {
    auto v = t.get_sealed(source_ids_, source_key);
    if (!v)
      return std::move(v.error());
    if (*v) // another thread created it meanwhile
      return decode(**v);
    auto c = lmdb::cursor::open(t, source_keys_);
    if (!c)
      return std::move(c.error());
    auto found = c->last();
    if (!found)
      return std::move(found.error());
    uint32_t next = 1;
    if (*found) {
      if (c->key().size() != 4)
        return make_error(errc::store_corrupt, "lake source_keys key is not 4 bytes");
      uint32_t last = codec::get_be32(c->key().data());
      if (last == std::numeric_limits<uint32_t>::max())
        return make_error(errc::store_io, "lake has run out of source ids");
      next = last + 1;
    }
    char idv[4];
    codec::put_le32(idv, next);
    char idk[4];
    codec::put_be32(idk, next);
    if (auto perr = t.put_sealed(source_ids_, source_key, std::string_view{idv, 4}))
      return perr;
    if (auto perr = t.put_sealed(source_keys_, std::string_view{idk, 4}, source_key))
      return perr;
    id = next;
    return caf::none;
  });
  if (err)
    return err;
  return id;
}

caf::expected<std::vector<std::pair<uint32_t, std::string>>> lake::sources() {
  std::vector<std::pair<uint32_t, std::string>> out;
  auto err = env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto c = lmdb::cursor::open(t, source_keys_);
    if (!c)
      return std::move(c.error());
    for (auto more = c->first();; more = c->next()) {
      if (!more)
        return std::move(more.error());
      if (!*more)
        return caf::none;
      if (c->key().size() != 4)
        return make_error(errc::store_corrupt, "lake source_keys key is not 4 bytes");
      auto name = c->sealed_value();
      if (!name)
        return std::move(name.error());
      out.emplace_back(codec::get_be32(c->key().data()), std::string{*name});
    }
  });
  if (err)
    return err;
  return out;
}

caf::error lake::append(const std::vector<chunk_ref>& chunks) {
  for (const auto& c : chunks)
    if (c.data.size() > std::numeric_limits<uint64_t>::max() - c.offset)
      return make_error(errc::bad_input, "lake chunk at offset " + std::to_string(c.offset) +
                                           " of source " + std::to_string(c.source) +
                                           " ends beyond 2^64");
  const int64_t landed = now_us();
  // Fault injection (docs/faults.md): lake.before_commit / during_commit / after_commit.
  if (fault::hit("lake.before_commit"))
    return fault::injected("lake.before_commit");
  auto err = env_.with_write([&](lmdb::txn& t) -> caf::error {
    // Batches are mostly of one source: check each source once per run of equal ids.
    uint32_t checked = 0;
    char key[chunk_key_size];
    for (const auto& c : chunks) {
      if (c.source != checked || checked == 0) {
        char idk[4];
        codec::put_be32(idk, c.source);
        auto known = t.get_sealed(source_keys_, std::string_view{idk, 4});
        if (!known)
          return std::move(known.error());
        if (!*known)
          return make_error(errc::internal,
                            "lake append to unknown source id " + std::to_string(c.source));
        checked = c.source;
      }
      chunk_key(key, c.source, c.offset);
      auto perr =
        t.put_sealed_with(chunks_, std::string_view{key, chunk_key_size},
                          chunk_header + c.data.size(), [&](char* dst) {
                            codec::put_le64(dst, static_cast<uint64_t>(landed));
                            if (!c.data.empty())
                              std::memcpy(dst + chunk_header, c.data.data(), c.data.size());
                          });
      if (perr)
        return perr;
    }
    // Fault injection: every put is done, mdb_txn_commit is not (a fail aborts the txn).
    if (fault::hit("lake.during_commit"))
      return fault::injected("lake.during_commit");
    return caf::none;
  });
  if (err)
    return err;
  if (fault::hit("lake.after_commit")) // fault injection: the chunks are durable
    return fault::injected("lake.after_commit");
  return caf::none;
}

caf::expected<uint64_t> lake::end_offset(uint32_t source) {
  uint64_t end = 0;
  auto err = env_.with_read([&](lmdb::txn& t) -> caf::error {
    auto c = lmdb::cursor::open(t, chunks_);
    if (!c)
      return std::move(c.error());
    // The last chunk of `source` is the one before the first key of the next source.
    caf::expected<bool> found = false;
    if (source < std::numeric_limits<uint32_t>::max()) {
      char key[chunk_key_size];
      chunk_key(key, source + 1, 0);
      found = c->seek(std::string_view{key, chunk_key_size});
      if (!found)
        return std::move(found.error());
      found = *found ? c->prev() : c->last();
    } else {
      found = c->last();
    }
    if (!found)
      return std::move(found.error());
    if (!*found)
      return caf::none;
    chunk_entry e;
    if (auto derr = decode_chunk(*c, e))
      return derr;
    if (e.source == source)
      end = e.end();
    return caf::none;
  });
  if (err)
    return err;
  return end;
}

caf::error lake::scan(uint32_t source, uint64_t from,
                      const std::function<bool(uint64_t, std::string_view)>& fn) {
  bool first_slice = true;
  uint64_t resume = 0; // the first offset of the next slice
  for (;;) {
    bool more_slices = false;
    bool stopped = false;
    auto err = env_.with_read([&](lmdb::txn& t) -> caf::error {
      auto c = lmdb::cursor::open(t, chunks_);
      if (!c)
        return std::move(c.error());
      char key[chunk_key_size];
      chunk_key(key, source, first_slice ? from : resume);
      auto found = c->seek(std::string_view{key, chunk_key_size});
      if (!found)
        return std::move(found.error());
      chunk_entry e;
      if (first_slice) {
        // A chunk starting before `from` may still reach past it: look one entry back.
        bool exact = *found && c->key() == std::string_view{key, chunk_key_size};
        if (!exact) {
          auto back = *found ? c->prev() : c->last();
          if (!back)
            return std::move(back.error());
          bool use_back = false;
          if (*back) {
            if (auto derr = decode_chunk(*c, e))
              return derr;
            use_back = e.source == source && e.end() > from;
          }
          if (!use_back)
            found = c->seek(std::string_view{key, chunk_key_size});
          else
            found = true;
          if (!found)
            return std::move(found.error());
        }
      }
      size_t n = 0;
      size_t bytes = 0;
      for (;; found = c->next()) {
        if (!found)
          return std::move(found.error());
        if (!*found)
          break;
        if (auto derr = decode_chunk(*c, e))
          return derr;
        if (e.source != source)
          break;
        if (e.end() > from) {
          if (!fn(e.offset, e.data)) {
            stopped = true;
            return caf::none;
          }
          ++n;
          bytes += e.data.size();
        }
        if (n >= scan_slice_chunks || bytes >= scan_slice_bytes) {
          more_slices = e.offset < std::numeric_limits<uint64_t>::max();
          resume = e.offset + 1;
          return caf::none;
        }
      }
      return caf::none;
    });
    if (err || stopped || !more_slices)
      return err;
    first_slice = false;
  }
}

caf::expected<size_t> lake::prune(uint32_t source, uint64_t below, int64_t landed_before) {
  size_t deleted = 0;
  auto err = env_.with_write([&](lmdb::txn& t) -> caf::error {
    deleted = 0; // a retry after map growth starts over
    auto c = lmdb::cursor::open(t, chunks_);
    if (!c)
      return std::move(c.error());
    char key[chunk_key_size];
    chunk_key(key, source, 0);
    auto found = c->seek(std::string_view{key, chunk_key_size});
    chunk_entry e;
    for (;;) {
      if (!found)
        return std::move(found.error());
      if (!*found)
        return caf::none;
      if (auto derr = decode_chunk_unverified(*c, e))
        return derr;
      // A chunk ending at or before `below` starts at or before it; later ones start later.
      if (e.source != source || e.offset > below)
        return caf::none;
      if (e.end() <= below && e.landed < landed_before) {
        if (auto derr = c->del())
          return derr;
        ++deleted;
      }
      found = c->next();
    }
  });
  if (err)
    return err;
  return deleted;
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> lake::table_counts() {
  return env_.table_report({{"chunks", chunks_},
                            {"meta", meta_},
                            {"source_ids", source_ids_},
                            {"source_keys", source_keys_}},
                           format_version);
}

} // namespace weir
