#include "store/check.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "actors/core/codec.hpp"
#include "store/lake.hpp"
#include "store/lmdb.hpp"
#include "store/store.hpp"
#include "store/warehouse.hpp"
#include "store/warehouse_rows.hpp"

namespace weir {

namespace {

/// Problems printed one by one; the rest are counted.
constexpr size_t max_shown = 100;
/// A table walk gives up after this many problems in it (a wrecked table says enough).
constexpr size_t max_per_table = 1000;

/// What one entry check says: empty when the entry is fine.
using entry_check = std::function<std::string(std::string_view key, std::string_view body)>;

struct walker {
  const std::function<void(const std::string&)>& line;
  check_report& report;

  void problem(const std::string& text) {
    report.problems.push_back(text);
    if (report.problems.size() <= max_shown)
      line("  problem: " + text);
  }
};

std::string count_line(const std::string& name, uint64_t n, size_t problems) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "  %-14s %12llu entries%s", name.c_str(),
                static_cast<unsigned long long>(n), problems ? "  DAMAGED" : "");
  return buf;
}

/// Walks table d of e in key order: order, seal (all but meta's unsealed format_version and
/// kind), fn per entry, and the entry count against LMDB's.
void walk_table(walker& w, lmdb::env& e, const std::string& where, const char* table, lmdb::dbi d,
                const entry_check& fn) {
  const std::string at = where + ", table " + table + ": ";
  const bool is_meta = std::string_view{table} == "meta";
  const size_t before = w.report.problems.size();
  uint64_t n = 0;
  auto err = e.with_read([&](lmdb::txn& t) -> caf::error {
    auto c = lmdb::cursor::open(t, d);
    if (!c)
      return std::move(c.error());
    std::string prev;
    for (auto more = c->first();; more = c->next()) {
      if (!more)
        return std::move(more.error());
      if (!*more || w.report.problems.size() - before >= max_per_table)
        break;
      auto k = c->key();
      if (n++ > 0 && k <= prev)
        w.problem(at + "key " + lmdb::show_key(k) + " out of order after " + lmdb::show_key(prev));
      prev.assign(k.data(), k.size());
      caf::expected<std::string_view> body = c->value();
      if (!is_meta || (k != "format_version" && k != "kind"))
        body = c->sealed_value();
      if (!body) {
        w.problem(at + "key " + lmdb::show_key(k) + ": checksum mismatch");
        continue;
      }
      if (auto why = fn(k, *body); !why.empty())
        w.problem(at + "key " + lmdb::show_key(k) + ": " + why);
    }
    auto recorded = t.count(d);
    if (!recorded)
      return std::move(recorded.error());
    if (*recorded != n && w.report.problems.size() - before < max_per_table)
      w.problem(at + "walked " + std::to_string(n) + " entries but LMDB records " +
                std::to_string(*recorded) + " (pages lost or damaged)");
    return caf::none;
  });
  if (err)
    w.problem(at + "walk stopped: " + render(err));
  w.report.entries += n;
  w.line(count_line(table, n, w.report.problems.size() - before));
}

std::string expect_size(std::string_view v, size_t n, const char* what) {
  if (v.size() == n)
    return {};
  return std::string{what} + " of " + std::to_string(v.size()) + " bytes, expected " +
         std::to_string(n);
}

/// The meta table of a lake, or with `lake_sources` of a warehouse: its recorded lake sources
/// (warehouse::record_lake_sources) land there, and `recorded` says whether there were any.
entry_check meta_check(std::string_view kind,
                       std::map<uint32_t, std::string>* lake_sources = nullptr,
                       bool* recorded = nullptr) {
  return [=](std::string_view k, std::string_view v) -> std::string {
    if (k == "format_version")
      return expect_size(v, 4, "format version");
    if (k == "kind")
      return v == kind ? "" : "kind '" + std::string{v} + "', expected '" + std::string{kind} + "'";
    if (k == "store_id")
      return expect_size(v, 16, "store identity");
    if (k == "lake_sources" && lake_sources) {
      std::vector<std::pair<uint32_t, std::string>> list;
      if (decode_lake_sources(v, list))
        return "recorded lake sources that do not decode";
      lake_sources->insert(list.begin(), list.end());
      *recorded = true;
      return {};
    }
    return "an unknown meta key";
  };
}

/// What the lake walk learns for the warehouse walk.
struct lake_facts {
  std::map<uint32_t, std::string> sources;
  std::optional<std::string> identity;
  uint64_t chunks = 0;
};

void walk_lake(walker& w, lake& lk, lake_facts& facts) {
  auto& e = lk.environment();
  const std::string where = "lake " + lk.dir();
  auto tables = lk.tables();
  auto id = lk.identity();
  if (id)
    facts.identity = *id;
  walk_table(w, e, where, "meta", tables[0].second, meta_check("lake"));
  walk_table(w, e, where, "source_keys", tables[2].second,
             [&](std::string_view k, std::string_view v) -> std::string {
               if (k.size() != 4)
                 return "a source id key of " + std::to_string(k.size()) + " bytes";
               facts.sources[codec::get_be32(k.data())] = std::string{v};
               return {};
             });
  walk_table(w, e, where, "source_ids", tables[1].second,
             [&](std::string_view k, std::string_view v) -> std::string {
               if (v.size() != 4)
                 return expect_size(v, 4, "a source id");
               auto it = facts.sources.find(codec::get_le32(v.data()));
               if (it == facts.sources.end() || it->second != k)
                 return "source id " + std::to_string(codec::get_le32(v.data())) +
                        " does not map back to this source in source_keys";
               return {};
             });
  walk_table(w, e, where, "chunks", tables[3].second,
             [&](std::string_view k, std::string_view v) -> std::string {
               ++facts.chunks;
               if (k.size() != 12)
                 return "a chunk key of " + std::to_string(k.size()) + " bytes, expected 12";
               if (v.size() < lake::chunk_header)
                 return "a chunk shorter than its header";
               if (!facts.sources.count(codec::get_be32(k.data())))
                 return "a chunk of unknown source id " + std::to_string(codec::get_be32(k.data()));
               return {};
             });
}

/// Pipeline ids with their aggregate count, from the pipelines table.
using pipeline_ids = std::map<uint16_t, uint32_t>;

std::string check_pipeline(std::string_view k, std::string_view v, pipeline_ids& ids) {
  pipeline_info p;
  if (decode_pipeline(k, v, p) || p.id == 0)
    return "a pipeline that does not decode";
  if (!ids.emplace(p.id, static_cast<uint32_t>(p.aggregates.size())).second)
    return "a second pipeline with id " + std::to_string(p.id);
  return {};
}

/// Checks that a key starts with a known pipeline id and has `size` bytes (0: at least `least`;
/// 18 is a results key).
std::string check_pid(std::string_view k, size_t size, const pipeline_ids& ids,
                      size_t least = 2 + 8 + 8) {
  if (size ? k.size() != size : k.size() < least)
    return "a key of " + std::to_string(k.size()) + " bytes";
  if (!ids.count(codec::get_be16(k.data())))
    return "a row of unknown pipeline id " + std::to_string(codec::get_be16(k.data()));
  return {};
}

std::string check_result(std::string_view k, std::string_view v, size_t max_key,
                         const pipeline_ids& ids, window_result& row) {
  if (auto why = check_pid(k, 0, ids); !why.empty())
    return why;
  if (decode_result(k, v, max_key, row))
    return "a result row that does not decode";
  auto n = row.values.size();
  if (n != ids.at(codec::get_be16(k.data())))
    return "a result row with " + std::to_string(n) + " values, not one per aggregate";
  return {};
}

std::string check_dead_letter(std::string_view k, std::string_view v, const pipeline_ids& ids,
                              dead_letter& d) {
  if (auto why = check_pid(k, 10, ids); !why.empty())
    return why;
  if (decode_dead_letter(v, d))
    return "a dead letter that does not decode";
  return {};
}

/// The source ids the warehouse's offsets may name: those of the lake beside it, else those
/// recorded of a lake on another node; `what` names them in a problem.
struct known_sources {
  std::map<uint32_t, std::string> ids;
  bool checked = false; ///< false: no lake here and none recorded, offsets are not checked
  std::string what;
};

void walk_warehouse(walker& w, warehouse& wh, const lake_facts* lk) {
  auto& e = wh.environment();
  const std::string where = "warehouse " + wh.dir();
  std::map<std::string, lmdb::dbi> t;
  for (auto& [name, d] : wh.tables())
    t[name] = d;
  pipeline_ids ids;
  window_result row;  // reused by every results row
  dead_letter letter; // and every dead letter
  known_sources known;
  bool recorded = false;
  walk_table(w, e, where, "meta", t["meta"], meta_check("warehouse", &known.ids, &recorded));
  if (lk) {
    known = {lk->sources, true, "which the lake does not know"};
  } else {
    // A store whose lake is on another node records that lake's sources; one that records none
    // lost its lake, and its offsets count bytes of sources nothing knows.
    known.checked = true;
    known.what = recorded ? "which the recorded sources of the lake on another node do not name"
                          : "but there is no lake here and the warehouse records no lake on "
                            "another node (was the lake lost?)";
    if (recorded)
      w.line("  no lake to read: offsets checked against the " + std::to_string(known.ids.size()) +
             " lake sources the warehouse recorded");
  }
  walk_table(w, e, where, "pipelines", t["pipelines"],
             [&](std::string_view k, std::string_view v) { return check_pipeline(k, v, ids); });
  // Per pipeline id: its windows counter and key-index counter, result rows and key-index rows.
  std::map<uint16_t, uint64_t> windows_counter, key_index_counter, result_rows, index_rows;
  walk_table(w, e, where, "counters", t["counters"], [&](std::string_view k, std::string_view v) {
    auto why = expect_size(v, 8, "a counter");
    for (auto [prefix, into] : {std::pair{std::string_view{"windows/"}, &windows_counter},
                                std::pair{std::string_view{"key_index/"}, &key_index_counter}})
      if (why.empty() && k.substr(0, prefix.size()) == prefix)
        (*into)[static_cast<uint16_t>(std::atoi(std::string{k.substr(prefix.size())}.c_str()))] =
          codec::get_le64(v.data());
    return why;
  });
  walk_table(w, e, where, "epochs", t["epochs"], [&](std::string_view k, std::string_view v) {
    auto why = check_pid(k, 2, ids);
    return why.empty() ? expect_size(v, 8, "an epoch") : why;
  });
  walk_table(w, e, where, "offsets", t["offsets"], [&](std::string_view k, std::string_view v) {
    auto why = check_pid(k, 6, ids);
    if (why.empty())
      why = expect_size(v, 8, "an offset");
    if (why.empty() && known.checked && !known.ids.count(codec::get_be32(k.data() + 2)))
      why = "an offset of source id " + std::to_string(codec::get_be32(k.data() + 2)) + ", " +
            known.what;
    return why;
  });
  walk_table(w, e, where, "results", t["results"], [&](std::string_view k, std::string_view v) {
    auto why = check_result(k, v, e.max_key_size(), ids, row);
    if (why.empty())
      ++result_rows[codec::get_be16(k.data())];
    return why;
  });
  // The key index: (pipeline, hash of the key, start, end) -> key and row.
  walk_table(w, e, where, "by_key", t["by_key"], [&](std::string_view k, std::string_view v) {
    auto why = check_pid(k, 26, ids);
    if (!why.empty())
      return why;
    if (!decode_by_key(k, v, row))
      return std::string{"a key index row that does not decode"};
    if (codec::get_be64(k.data() + 2) != XXH3_64bits(row.key.data(), row.key.size()))
      return std::string{"a key index row filed under another key's hash"};
    if (row.values.size() != ids.at(codec::get_be16(k.data())))
      return "a key index row with " + std::to_string(row.values.size()) +
             " values, not one per aggregate";
    ++index_rows[codec::get_be16(k.data())];
    return std::string{};
  });
  // The change feed: (pipeline, epoch, row) -> row 0 the epoch's header, then its rows.
  walk_table(w, e, where, "changes", t["changes"], [&](std::string_view k, std::string_view v) {
    auto why = check_pid(k, 14, ids);
    if (!why.empty())
      return why;
    if (codec::get_be32(k.data() + 10) == 0)
      return expect_size(v, 8, "a change feed header");
    if (decode_change(v, e.max_key_size(), row))
      return std::string{"a change row that does not decode"};
    return std::string{};
  });
  // A key index in use (its counter one above the windows counter) holds every result row.
  for (const auto& [pid, n] : key_index_counter)
    if (n != 0 && n == windows_counter[pid] + 1 && index_rows[pid] != result_rows[pid])
      w.problem(where + ", table by_key: pipeline id " + std::to_string(pid) + " has " +
                std::to_string(index_rows[pid]) + " key index rows for " +
                std::to_string(result_rows[pid]) + " result rows");
  walk_table(w, e, where, "state", t["state"],
             [&](std::string_view k, std::string_view) { return check_pid(k, 6, ids); });
  walk_table(w, e, where, "dedupe", t["dedupe"], [&](std::string_view k, std::string_view v) {
    auto why = check_pid(k, 10, ids);
    if (why.empty() && (v.size() < 8 || (v.size() - 8) % 16 != 0))
      why = "a dedupe segment of " + std::to_string(v.size()) + " bytes";
    return why;
  });
  walk_table(
    w, e, where, "dead_letters", t["dead_letters"],
    [&](std::string_view k, std::string_view v) { return check_dead_letter(k, v, ids, letter); });
  // Window-state rows: pipeline, partition, start, key; a flag byte says whether the value
  // carries the whole row key (too long for an LMDB key).
  walk_table(w, e, where, "windows", t["windows"], [&](std::string_view k, std::string_view v) {
    auto why = check_pid(k, 0, ids, 2 + 4 + 8);
    if (why.empty() && (v.empty() || static_cast<uint8_t>(v[0]) > 1))
      why = "a window-state row with a bad flag";
    return why;
  });
}

void check_identity(walker& w, lake& lk, warehouse& wh, const lake_facts& facts) {
  auto wid = wh.identity();
  if (!wid) {
    w.problem("warehouse " + wh.dir() + ": " + render(wid.error()));
    return;
  }
  if (!facts.identity || !*wid) {
    w.problem(std::string{!facts.identity ? "the lake " + lk.dir() : "the warehouse " + wh.dir()} +
              " records no store identity");
    return;
  }
  if (**wid != *facts.identity)
    w.problem("the lake " + lk.dir() + " belongs to store " + show_identity(*facts.identity) +
              " but the warehouse " + wh.dir() + " to store " + show_identity(**wid));
  else
    w.line("store identity " + show_identity(**wid) + " (lake and warehouse agree)");
}

/// The identity of a warehouse without a lake beside it.
void warehouse_identity_line(walker& w, warehouse& wh) {
  auto wid = wh.identity();
  if (!wid)
    w.problem("warehouse " + wh.dir() + ": " + render(wid.error()));
  else if (*wid)
    w.line("store identity " + show_identity(**wid) + " (the warehouse's)");
}

} // namespace

caf::expected<check_report> check_store(const std::string& dir,
                                        const std::function<void(const std::string&)>& line) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool has_lake = fs::is_directory(dir + "/lake", ec);
  const bool has_wh = fs::is_directory(dir + "/warehouse", ec);
  if (!has_lake && !has_wh)
    return make_error(errc::bad_input, "no Weir store at " + dir);
  check_report report;
  walker w{line, report};
  line("store " + dir);
  std::optional<lake> lk;
  lake_facts facts;
  if (!has_lake) {
    // Not a problem: the coordinating node of a cluster whose ingest runs on another node holds
    // the warehouse alone (its lake is in that node's store).
    line("lake: none here (on another node, or none)");
  } else if (auto l = lake::open(dir); !l) {
    w.problem("the lake " + dir + "/lake cannot be opened: " + render(l.error()));
  } else {
    lk = std::move(*l);
    line("lake " + lk->dir());
    walk_lake(w, *lk, facts);
  }
  std::optional<warehouse> wh;
  if (!has_wh) {
    w.problem("the warehouse " + dir + "/warehouse is missing" +
              (facts.chunks ? " while the lake holds " + std::to_string(facts.chunks) + " chunks"
                            : std::string{}));
  } else if (auto h = warehouse::open(dir); !h) {
    w.problem("the warehouse " + dir + "/warehouse cannot be opened: " + render(h.error()));
  } else {
    wh = std::move(*h);
    line("warehouse " + wh->dir());
    walk_warehouse(w, *wh, lk ? &facts : nullptr);
  }
  if (lk && wh)
    check_identity(w, *lk, *wh, facts);
  else if (wh)
    warehouse_identity_line(w, *wh);
  if (report.problems.size() > max_shown)
    line("  ... and " + std::to_string(report.problems.size() - max_shown) + " more problems");
  return report;
}

} // namespace weir
