#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <lmdb.h>

#include "actors/core/codec.hpp"
#include "store/warehouse.hpp"
#include "tests/raw_lmdb.hpp"
#include "tests/test_support.hpp"

using namespace weir;
namespace fs = std::filesystem;

namespace {

using weir::test::temp_dir;

using weir::test::has_code;

using weir::test::raw_put;

/// The reference model of one pipeline, kept with plain std containers.
struct pipeline_model {
  uint64_t epoch = 0;
  std::map<uint32_t, uint64_t> offsets;
  std::map<std::tuple<timestamp, timestamp, std::string>, std::pair<uint32_t, std::vector<double>>>
    results;
  std::map<uint32_t, std::string> states;
  std::map<uint64_t, int64_t> dedupe; // id -> greatest time committed
  int64_t dedupe_cut = std::numeric_limits<int64_t>::min();
  std::vector<dead_letter> letters;

  void apply(const epoch_commit& c) {
    if (c.epoch <= epoch)
      return;
    epoch = c.epoch;
    apply_without_epoch(c);
  }

  /// A commit with without_epoch: everything it carries, whatever the epoch.
  void apply_without_epoch(const epoch_commit& c) {
    for (const auto& [s, o] : c.offsets)
      offsets[s] = o;
    for (const auto& view : c.results) {
      const window_result r = view;
      auto k = std::make_tuple(r.start, r.end, r.key);
      auto it = results.find(k);
      if (it == results.end() || r.version >= it->second.first)
        results[k] = {r.version, r.values};
    }
    for (const auto& [p, blob] : c.states)
      states[p] = blob;
    for (const auto& [id, t] : c.dedupe_added) {
      auto [it, fresh] = dedupe.emplace(id, t);
      if (!fresh)
        it->second = std::max(it->second, t);
    }
    dedupe_cut = std::max(dedupe_cut, c.dedupe_expire_before);
    for (const auto& d : c.dead_letters)
      letters.push_back(d);
  }
};

using row_t = std::tuple<timestamp, timestamp, std::string, uint32_t, std::vector<double>>;

std::vector<row_t> brute_query(const pipeline_model& m, const result_query& q) {
  std::vector<row_t> out;
  for (const auto& [k, v] : m.results) {
    const auto& [start, end, key] = k;
    if (q.from && start < *q.from)
      continue;
    if (q.to && end > *q.to)
      continue;
    if (q.key && key != *q.key)
      continue;
    out.emplace_back(start, end, key, v.first, v.second);
  }
  return out; // std::map order is (start, end, key) with bytewise key order
}

std::vector<row_t> run_query(warehouse& w, const result_query& q) {
  std::vector<row_t> out;
  auto err = w.query(q, [&](const window_result& r) {
    out.emplace_back(r.start, r.end, r.key, r.version, r.values);
    return true;
  });
  REQUIRE(!err);
  return out;
}

std::vector<dead_letter_row> all_letters(warehouse& w, const std::optional<std::string>& p) {
  std::vector<dead_letter_row> out;
  REQUIRE(!w.dead_letters(p, [&](const dead_letter_row& r) {
    out.push_back(r);
    return true;
  }));
  return out;
}

bool same_letter(const dead_letter& a, const dead_letter& b) {
  return a.source == b.source && a.offset == b.offset && a.raw == b.raw && a.reason == b.reason;
}

epoch_commit random_commit(std::mt19937_64& rng, const std::string& pipeline, uint64_t epoch,
                           const std::vector<std::string>& keys, size_t n_values) {
  epoch_commit c;
  c.pipeline = pipeline;
  c.epoch = epoch;
  for (int i = 0, n = rng() % 3; i < n; ++i)
    c.offsets.emplace_back(1 + rng() % 4, rng() % 100000);
  for (int i = 0, n = rng() % 12; i < n; ++i) {
    window_result r;
    r.key = keys[rng() % keys.size()];
    // Negative and positive times; few distinct windows so that upserts hit stored rows.
    r.start = (static_cast<int64_t>(rng() % 9) - 4) * 1000;
    r.end = r.start + 1000 * static_cast<int64_t>(1 + rng() % 2);
    r.version = 1 + rng() % 3;
    for (size_t j = 0; j < n_values; ++j)
      r.values.push_back(static_cast<double>(rng() % 1000) / 8.0);
    c.results.push_back(r);
  }
  for (int i = 0, n = rng() % 3; i < n; ++i)
    c.states.emplace_back(rng() % 2 ? warehouse::preprocess_partition
                                    : static_cast<uint32_t>(rng() % 4),
                          std::string(rng() % 50, static_cast<char>('a' + rng() % 26)));
  for (int i = 0, n = rng() % 4; i < n; ++i)
    c.dedupe_added.emplace_back(rng() % 20, static_cast<int64_t>(rng() % 1000) - 500);
  if (rng() % 4 == 0)
    c.dedupe_expire_before = static_cast<int64_t>(rng() % 1000) - 600;
  for (int i = 0, n = rng() % 3; i < n; ++i) {
    dead_letter d;
    d.source = 1 + rng() % 4;
    d.offset = rng() % 100000;
    d.raw = "raw " + std::to_string(rng());
    d.reason = "reason " + std::to_string(rng() % 5);
    c.dead_letters.push_back(d);
  }
  return c;
}

/// Compares everything the warehouse returns for `name` with the model.
void check_against(warehouse& w, const std::string& name, const pipeline_model& m,
                   const std::vector<std::string>& keys, std::mt19937_64& rng) {
  INFO("pipeline " << name);
  CHECK(*w.last_epoch(name) == m.epoch);
  auto offs = w.offsets(name);
  REQUIRE(offs);
  CHECK(*offs == std::vector<std::pair<uint32_t, uint64_t>>(m.offsets.begin(), m.offsets.end()));
  auto st = w.states(name);
  REQUIRE(st);
  CHECK(*st == std::vector<std::pair<uint32_t, std::string>>(m.states.begin(), m.states.end()));
  auto dd = w.dedupe(name);
  REQUIRE(dd);
  std::vector<std::pair<uint64_t, int64_t>> live;
  for (const auto& [id, t] : m.dedupe)
    if (t >= m.dedupe_cut)
      live.emplace_back(id, t);
  CHECK(*dd == live);
  auto letters = all_letters(w, name);
  REQUIRE(letters.size() == m.letters.size());
  for (size_t i = 0; i < letters.size(); ++i) {
    CHECK(letters[i].pipeline == name);
    CHECK(letters[i].seq == i + 1);
    CHECK(same_letter(letters[i].letter, m.letters[i]));
  }
  // Every combination of filters, with bounds on, between and beyond the stored windows.
  std::vector<std::optional<timestamp>> bounds = {std::nullopt, min_timestamp, max_timestamp};
  for (int i = 0; i < 6; ++i)
    bounds.push_back((static_cast<int64_t>(rng() % 13) - 6) * 1000 +
                     static_cast<int64_t>(rng() % 3) * 500);
  std::vector<std::optional<std::string>> wanted = {std::nullopt, std::string("no such key")};
  for (const auto& k : keys)
    wanted.push_back(k);
  for (const auto& from : bounds)
    for (const auto& to : bounds)
      for (const auto& key : wanted) {
        result_query q{name, key, from, to};
        INFO("from " << (from ? std::to_string(*from) : "-") << " to "
                     << (to ? std::to_string(*to) : "-") << " key "
                     << (key ? *key : std::string("-")));
        CHECK(run_query(w, q) == brute_query(m, q));
      }
}

} // namespace

TEST_CASE("warehouse: pipelines register once and refuse changed aggregates", "[warehouse]") {
  temp_dir dir;
  auto w = warehouse::open(dir.str());
  REQUIRE(w);
  auto a = w->register_pipeline("clicks", {"n", "total"}, "tumbling 1m");
  REQUIRE(a);
  auto b = w->register_pipeline("views", {"n"}, "sliding 5m/1m");
  REQUIRE(b);
  CHECK(a->id != b->id);
  auto again = w->register_pipeline("clicks", {"n", "total"}, "tumbling 1m");
  REQUIRE(again);
  CHECK(again->id == a->id);
  auto changed = w->register_pipeline("clicks", {"n", "avg"}, "tumbling 1m");
  REQUIRE(!changed);
  CHECK(has_code(changed.error(), errc::bad_config));
  CHECK(render(changed.error()).find("clicks") != std::string::npos);
  CHECK(render(changed.error()).find("avg") != std::string::npos);
  CHECK(has_code(w->register_pipeline("clicks", {"n"}, "tumbling 1m").error(), errc::bad_config));
  auto rewindowed = w->register_pipeline("clicks", {"n", "total"}, "tumbling 2m");
  REQUIRE(rewindowed);
  CHECK(rewindowed->window == "tumbling 2m");
  CHECK(rewindowed->id == a->id);
  CHECK(has_code(w->register_pipeline("", {"n"}, "x").error(), errc::bad_config));
  auto none = w->pipeline("nope");
  REQUIRE(none);
  CHECK(!*none);
  auto one = w->pipeline("views");
  REQUIRE(one);
  REQUIRE(*one);
  CHECK((*one)->aggregates == std::vector<std::string>{"n"});
  CHECK((*one)->window == "sliding 5m/1m");
  w = make_error(errc::stopped, "closed"); // LMDB: never the same env twice in one process
  w = warehouse::open(dir.str());
  REQUIRE(w);
  auto all = w->pipelines();
  REQUIRE(all);
  REQUIRE(all->size() == 2);
  CHECK((*all)[0].name == "clicks");
  CHECK((*all)[0].window == "tumbling 2m");
  CHECK((*all)[0].aggregates == std::vector<std::string>{"n", "total"});
  CHECK((*all)[1].name == "views");
  CHECK((*all)[0].id < (*all)[1].id);
}

TEST_CASE("warehouse: random commits match a model, old epochs are no-ops", "[warehouse]") {
  temp_dir dir;
  std::mt19937_64 rng{77};
  // Keys include the separator byte, a high byte and prefixes of each other (order checks).
  std::vector<std::string> keys = {"a",
                                   "ab",
                                   "b",
                                   std::string("a\x1f"
                                               "b"),
                                   "\xc3\xa9t\xc3\xa9",
                                   ""};
  std::map<std::string, pipeline_model> models;
  const std::vector<std::string> names = {"p1", "p2"};
  {
    auto w = warehouse::open(dir.str());
    REQUIRE(w);
    for (const auto& n : names)
      REQUIRE(w->register_pipeline(n, {"count", "sum"}, "tumbling"));
    uint64_t last[2] = {0, 0};
    uint64_t rows[2] = {0, 0}; // result rows of the applied commits: windows_committed
    for (int i = 0; i < 150; ++i) {
      size_t p = rng() % 2;
      // Now and then replay an old epoch (what recovery does): it must change nothing.
      // Otherwise the next epoch, sometimes with a gap (aborted epochs leave gaps).
      bool replay = rng() % 5 == 0 && last[p] > 0;
      uint64_t epoch = replay ? 1 + rng() % last[p] : last[p] + 1 + rng() % 2;
      if (!replay)
        last[p] = epoch;
      auto c = random_commit(rng, names[p], epoch, keys, 2);
      auto applied = w->commit(c);
      REQUIRE(applied);
      CHECK(*applied == !replay);
      if (!replay)
        rows[p] += c.results.size();
      CHECK(*w->windows_committed(names[p]) == rows[p]);
      models[names[p]].apply(c);
    }
    CHECK(*w->windows_committed("zzz") == 0);
    // Results written outside the epoch sequence count too and leave last_epoch alone.
    auto extra = random_commit(rng, "p1", 1, keys, 2);
    extra.without_epoch = true;
    REQUIRE(*w->commit(extra));
    CHECK(*w->last_epoch("p1") == last[0]);
    CHECK(*w->windows_committed("p1") == rows[0] + extra.results.size());
    models["p1"].apply_without_epoch(extra);
    // Epoch 0 never commits: 0 means "none".
    epoch_commit zero;
    zero.pipeline = "p1";
    zero.epoch = 0;
    CHECK(!*w->commit(zero));
    for (const auto& n : names)
      check_against(*w, n, models[n], keys, rng);
    // Unknown pipelines read as empty.
    CHECK(*w->last_epoch("zzz") == 0);
    CHECK(w->offsets("zzz")->empty());
    CHECK(run_query(*w, {"zzz", std::nullopt, std::nullopt, std::nullopt}).empty());
    CHECK(all_letters(*w, std::string("zzz")).empty());
    // All dead letters: by pipeline id, then sequence.
    auto letters = all_letters(*w, std::nullopt);
    REQUIRE(letters.size() == models["p1"].letters.size() + models["p2"].letters.size());
    for (size_t i = 0; i < letters.size(); ++i) {
      bool first = i < models["p1"].letters.size();
      CHECK(letters[i].pipeline == (first ? "p1" : "p2"));
      size_t j = first ? i : i - models["p1"].letters.size();
      CHECK(letters[i].seq == j + 1);
      CHECK(same_letter(letters[i].letter, models[letters[i].pipeline].letters[j]));
    }
    auto counts = w->table_counts();
    REQUIRE(counts);
    std::map<std::string, uint64_t> tc(counts->begin(), counts->end());
    CHECK(tc["results"] == models["p1"].results.size() + models["p2"].results.size());
    CHECK(tc["pipelines"] == 2);
    CHECK(tc["epochs"] == 2);
    CHECK(tc["dead_letters"] == letters.size());
    CHECK(tc["format_version"] == warehouse::format_version);
  }
  // Reopened, everything is still there and the dead-letter sequence continues.
  auto w = warehouse::open(dir.str());
  REQUIRE(w);
  for (const auto& n : names)
    check_against(*w, n, models[n], keys, rng);
  auto c = random_commit(rng, "p1", models["p1"].epoch + 1, keys, 2);
  c.dead_letters.push_back({3, 42, "after reopen", "late"});
  REQUIRE(*w->commit(c));
  models["p1"].apply(c);
  check_against(*w, "p1", models["p1"], keys, rng);
}

TEST_CASE("warehouse: bad commits are refused and change nothing", "[warehouse]") {
  temp_dir dir;
  auto w = warehouse::open(dir.str());
  REQUIRE(w);
  epoch_commit c;
  c.pipeline = "unregistered";
  c.epoch = 1;
  CHECK(has_code(w->commit(c).error(), errc::bad_config));
  REQUIRE(w->register_pipeline("p", {"n"}, "t"));
  c.pipeline = "p";
  c.offsets = {{1, 10}};
  c.results.push_back({"k", 100, 50, 1, {1.0}});
  CHECK(has_code(w->commit(c).error(), errc::internal));
  CHECK(*w->last_epoch("p") == 0);
  CHECK(w->offsets("p")->empty());
}

TEST_CASE("warehouse: versions only move forward", "[warehouse]") {
  temp_dir dir;
  auto w = warehouse::open(dir.str());
  REQUIRE(w);
  REQUIRE(w->register_pipeline("p", {"n"}, "t"));
  auto commit = [&](uint64_t e, uint32_t version, double v) {
    epoch_commit c;
    c.pipeline = "p";
    c.epoch = e;
    c.results.push_back({"k", -60, 0, version, {v}});
    REQUIRE(*w->commit(c));
  };
  auto value = [&] {
    auto rows = run_query(*w, {"p", std::string("k"), std::nullopt, std::nullopt});
    REQUIRE(rows.size() == 1);
    return std::make_pair(std::get<3>(rows[0]), std::get<4>(rows[0])[0]);
  };
  commit(1, 2, 5.0);
  CHECK(value() == std::make_pair(2u, 5.0));
  commit(2, 1, 7.0); // older version: ignored
  CHECK(value() == std::make_pair(2u, 5.0));
  commit(3, 2, 8.0); // same version: replaces
  CHECK(value() == std::make_pair(2u, 8.0));
  commit(4, 3, 9.0);
  CHECK(value() == std::make_pair(3u, 9.0));
}

TEST_CASE("warehouse: long keys and long dead letters", "[warehouse]") {
  temp_dir dir;
  auto w = warehouse::open(dir.str());
  REQUIRE(w);
  REQUIRE(w->register_pipeline("p", {"n"}, "t"));
  std::string base(590, 'k');
  std::vector<std::string> keys = {
    base + "1", base + "2", std::string(492, 'k'), std::string(493, 'k'), std::string(5000, 'z'),
    "short"};
  epoch_commit c;
  c.pipeline = "p";
  c.epoch = 1;
  pipeline_model m;
  for (size_t i = 0; i < keys.size(); ++i)
    c.results.push_back({keys[i], 0, 10, 1, {static_cast<double>(i)}});
  std::string huge(200'000, 'r');
  huge[0] = 'R';
  c.dead_letters.push_back({1, 7, huge, "too long"});
  c.dead_letters.push_back({1, 8, std::string(warehouse::max_dead_letter_raw, 'x'), "exact"});
  REQUIRE(*w->commit(c));
  m.apply(c);
  std::mt19937_64 rng{3};
  for (const auto& k : keys) {
    auto rows = run_query(*w, {"p", k, std::nullopt, std::nullopt});
    REQUIRE(rows.size() == 1);
    CHECK(std::get<2>(rows[0]) == k);
  }
  auto all = run_query(*w, {"p", std::nullopt, std::nullopt, std::nullopt});
  CHECK(all.size() == keys.size());
  std::set<std::string> got;
  for (const auto& r : all)
    got.insert(std::get<2>(r));
  CHECK(got == std::set<std::string>(keys.begin(), keys.end()));
  // A newer version of a long key replaces its row.
  epoch_commit c2;
  c2.pipeline = "p";
  c2.epoch = 2;
  c2.results.push_back({keys[0], 0, 10, 2, {42.0}});
  REQUIRE(*w->commit(c2));
  auto rows = run_query(*w, {"p", keys[0], std::nullopt, std::nullopt});
  REQUIRE(rows.size() == 1);
  CHECK(std::get<3>(rows[0]) == 2);
  CHECK(std::get<4>(rows[0]) == std::vector<double>{42.0});
  CHECK(run_query(*w, {"p", keys[1], std::nullopt, std::nullopt}).size() == 1);
  auto letters = all_letters(*w, std::string("p"));
  REQUIRE(letters.size() == 2);
  const auto& cut = letters[0].letter.raw;
  CHECK(cut.size() > warehouse::max_dead_letter_raw);
  CHECK(cut.size() < warehouse::max_dead_letter_raw + 100);
  CHECK(cut.compare(0, warehouse::max_dead_letter_raw, huge, 0, warehouse::max_dead_letter_raw) ==
        0);
  CHECK(cut.find("200000") != std::string::npos);
  CHECK(letters[0].letter.reason == "too long");
  CHECK(letters[1].letter.raw == std::string(warehouse::max_dead_letter_raw, 'x'));
}

TEST_CASE("warehouse: a 64 KiB map grows to hold several MiB of commits", "[warehouse]") {
  temp_dir dir;
  std::mt19937_64 rng{11};
  pipeline_model m;
  {
    auto w = warehouse::open(dir.str(), false, size_t{64} << 10);
    REQUIRE(w);
    REQUIRE(w->register_pipeline("big", {"a", "b", "c", "d"}, "t"));
    for (uint64_t e = 1; e <= 12; ++e) {
      epoch_commit c;
      c.pipeline = "big";
      c.epoch = e;
      for (int i = 0; i < 2000; ++i) {
        window_result r;
        r.key = "key-" + std::to_string(rng() % 5000);
        r.start = static_cast<int64_t>(e) * 60'000'000 - 400'000'000;
        r.end = r.start + 60'000'000;
        r.values = {1.0 * i, 2.0, 3.0, static_cast<double>(e)};
        c.results.push_back(std::move(r));
      }
      c.states.emplace_back(static_cast<uint32_t>(e % 3), std::string(200'000, 's'));
      auto applied = w->commit(c);
      REQUIRE(applied);
      CHECK(*applied);
      m.apply(c);
    }
    auto counts = w->table_counts();
    REQUIRE(counts);
    std::map<std::string, uint64_t> tc(counts->begin(), counts->end());
    // Rows appended in key order fill pages densely, so less than the raw 3 MiB is used; the
    // map has grown well past its 64 KiB all the same.
    CHECK(tc["map_used"] > (uint64_t{1} << 20));
    CHECK(tc["map_size"] > (uint64_t{1} << 20));
  }
  auto w = warehouse::open(dir.str(), true, size_t{64} << 10);
  REQUIRE(w);
  result_query q{"big", std::nullopt, std::nullopt, std::nullopt};
  CHECK(run_query(*w, q) == brute_query(m, q));
  auto st = w->states("big");
  REQUIRE(st);
  CHECK(*st == std::vector<std::pair<uint32_t, std::string>>(m.states.begin(), m.states.end()));
}

TEST_CASE("warehouse: readers see whole epochs only", "[warehouse]") {
  temp_dir dir;
  auto w = warehouse::open(dir.str(), false, size_t{64} << 10);
  REQUIRE(w);
  REQUIRE(w->register_pipeline("p", {"v"}, "t"));
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::atomic<int> queries{0};
  std::thread reader{[&] {
    while (!done) {
      std::set<double> seen;
      size_t rows = 0;
      auto err =
        w->query({"p", std::nullopt, std::nullopt, std::nullopt}, [&](const window_result& r) {
          seen.insert(r.values.at(0));
          ++rows;
          return true;
        });
      if (err || seen.size() > 1 || (rows != 0 && rows != 300))
        ++torn;
      ++queries;
    }
  }};
  for (uint64_t e = 1; e <= 60; ++e) {
    epoch_commit c;
    c.pipeline = "p";
    c.epoch = e;
    for (int i = 0; i < 300; ++i)
      c.results.push_back(
        {"k" + std::to_string(i), 0, 10, static_cast<uint32_t>(e), {static_cast<double>(e)}});
    REQUIRE(*w->commit(c));
  }
  done = true;
  reader.join();
  CHECK(torn == 0);
  CHECK(queries > 0);
}

TEST_CASE("warehouse: unknown format version and damaged rows are refused", "[warehouse]") {
  temp_dir dir;
  {
    auto w = warehouse::open(dir.str());
    REQUIRE(w);
    REQUIRE(w->register_pipeline("p", {"n"}, "t"));
    epoch_commit c;
    c.pipeline = "p";
    c.epoch = 1;
    c.results.push_back({"k", 0, 10, 1, {1.0, 2.0}});
    REQUIRE(*w->commit(c));
  }
  // Truncate the row's value: 1 double announced as 2.
  char key[2 + 8 + 8 + 1];
  codec::put_be16(key, 1);
  codec::put_be64_signed(key + 2, 0);
  codec::put_be64_signed(key + 10, 10);
  key[18] = 'k';
  std::string value;
  codec::writer wr{value};
  wr.u32(1);
  wr.u32(2);
  wr.f64(1.0);
  raw_put(dir.str() + "/warehouse", "results", std::string_view{key, sizeof key}, value);
  raw_put(dir.str() + "/warehouse", "pipelines", "broken", "\x01");
  {
    auto w = warehouse::open(dir.str());
    REQUIRE(w);
    auto err = w->query({"p", std::nullopt, std::nullopt, std::nullopt},
                        [](const window_result&) { return true; });
    CHECK(has_code(err, errc::store_corrupt));
    CHECK(has_code(w->pipeline("broken").error(), errc::store_corrupt));
    CHECK(has_code(w->pipelines().error(), errc::store_corrupt));
  }
  char v[4];
  codec::put_le32(v, 99);
  raw_put(dir.str() + "/warehouse", "meta", "format_version", std::string_view{v, 4});
  auto w = warehouse::open(dir.str());
  REQUIRE(!w);
  CHECK(has_code(w.error(), errc::store_format));
  auto text = render(w.error());
  CHECK(text.find(dir.str() + "/warehouse") != std::string::npos);
  CHECK(text.find("version 99") != std::string::npos);
  CHECK(text.find("version " + std::to_string(warehouse::format_version)) != std::string::npos);
}

namespace {

/// A row of the change feed as the model sees it.
using change_t =
  std::tuple<uint64_t, timestamp, timestamp, std::string, uint32_t, std::vector<double>>;

/// Applies an epoch's results to `m` the way a commit writes them (in stored-key order, the
/// later of two rows for one window last), recording each row written in `feed`.
void apply_recording(pipeline_model& m, const epoch_commit& c, std::vector<change_t>& feed) {
  if (c.epoch <= m.epoch)
    return;
  std::vector<window_result> rows;
  for (const auto& view : c.results)
    rows.push_back(view);
  std::stable_sort(rows.begin(), rows.end(), [](const window_result& a, const window_result& b) {
    return std::tie(a.start, a.end, a.key) < std::tie(b.start, b.end, b.key);
  });
  auto stored = m.results;
  for (const auto& r : rows) {
    auto it = stored.find({r.start, r.end, r.key});
    if (it == stored.end() || r.version >= it->second.first) {
      feed.emplace_back(c.epoch, r.start, r.end, r.key, r.version, r.values);
      stored[{r.start, r.end, r.key}] = {r.version, r.values};
    }
  }
  m.apply(c);
}

std::vector<change_t> read_feed(warehouse& w, const std::string& p, uint64_t since,
                                size_t page = 0) {
  std::vector<change_t> out;
  std::optional<std::pair<uint64_t, uint32_t>> after;
  for (;;) {
    size_t got = 0;
    auto st = w.changes(p, since, after, [&](const change_row& c) {
      out.emplace_back(c.epoch, c.row.start, c.row.end, c.row.key, c.row.version, c.row.values);
      after = std::pair{c.epoch, c.index};
      return page == 0 || ++got < page;
    });
    REQUIRE(st);
    REQUIRE(st->enabled);
    if (page == 0 || got < page)
      return out;
  }
}

/// Every result of `key` through paging by `after`, `page` rows a time.
std::vector<row_t> paged_key_query(warehouse& w, const std::string& p, const std::string& key,
                                   size_t page) {
  std::vector<row_t> out;
  std::optional<window_result> after;
  for (;;) {
    result_query q{p, key, std::nullopt, std::nullopt, after};
    size_t got = 0;
    REQUIRE(!w.query(q, [&](const window_result& r) {
      out.emplace_back(r.start, r.end, r.key, r.version, r.values);
      after = r;
      return ++got < page;
    }));
    if (got < page)
      return out;
  }
}

} // namespace

TEST_CASE("warehouse: the key index and the change feed agree with a model", "[warehouse]") {
  temp_dir dir;
  std::mt19937_64 rng{4242};
  std::vector<std::string> keys = {"a",
                                   "ab",
                                   "b",
                                   std::string("a\x1f"
                                               "b"),
                                   "",
                                   std::string(600, 'k')}; // a key too long for LMDB
  auto w = warehouse::open(dir.str());
  REQUIRE(w);
  // p1 keeps both, p2 neither: p2's commits go between p1's (and their changes before or
  // after p1's in the table).
  for (const auto& n : {"p1", "p2"})
    REQUIRE(w->register_pipeline(n, {"count", "sum"}, "tumbling"));
  REQUIRE(!w->set_indexes("p1", {true, int64_t{3600} * 1000000}));
  REQUIRE(!w->set_indexes("p2", {}));
  std::map<std::string, pipeline_model> models;
  std::vector<change_t> feed;
  uint64_t last[2] = {0, 0};
  auto step = [&](size_t p) {
    const std::string name = p == 0 ? "p1" : "p2";
    bool replay = rng() % 6 == 0 && last[p] > 0;
    uint64_t epoch = replay ? 1 + rng() % last[p] : last[p] + 1 + rng() % 2;
    if (!replay)
      last[p] = epoch;
    auto c = random_commit(rng, name, epoch, keys, 2);
    REQUIRE(w->commit(c));
    if (p == 0)
      apply_recording(models[name], c, feed);
    else
      models[name].apply(c);
  };
  for (int i = 0; i < 120; ++i)
    step(rng() % 2);
  for (const auto& n : {"p1", "p2"})
    check_against(*w, n, models[n], keys, rng);
  for (const auto& k : keys)
    CHECK(paged_key_query(*w, "p1", k, 2) == brute_query(models["p1"], {"p1", k}));

  // The feed since any epoch: exactly the rows the later epochs wrote, also page by page.
  for (uint64_t since : {uint64_t{0}, last[0] / 3, last[0] / 2, last[0] - 1, last[0]}) {
    std::vector<change_t> want;
    for (const auto& c : feed)
      if (std::get<0>(c) > since)
        want.push_back(c);
    INFO("since " << since);
    CHECK(read_feed(*w, "p1", since) == want);
    CHECK(read_feed(*w, "p1", since, 3) == want);
  }
  auto off = w->changes("p2", 0, std::nullopt, [](const change_row&) { return true; });
  REQUIRE(off);
  CHECK_FALSE(off->enabled);

  // Turned off and on again: the index is built anew from the results and is complete.
  REQUIRE(!w->set_indexes("p1", {false, int64_t{3600} * 1000000}));
  for (int i = 0; i < 20; ++i)
    step(0);
  REQUIRE(!w->set_indexes("p1", {true, int64_t{3600} * 1000000}));
  check_against(*w, "p1", models["p1"], keys, rng);
  auto counts = w->table_counts();
  REQUIRE(counts);
  std::map<std::string, uint64_t> tc(counts->begin(), counts->end());
  CHECK(tc["by_key"] == models["p1"].results.size());

  // A short retention: each commit drops the epochs before it that are older than that.
  REQUIRE(!w->set_indexes("p1", {true, 1}));
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    step(0);
  }
  auto st = w->changes("p1", 0, std::nullopt, [](const change_row&) {
    FAIL("rows of a feed that moved on");
    return false;
  });
  REQUIRE(st);
  CHECK(st->last_epoch == last[0]);
  CHECK(st->oldest == last[0]);
  std::vector<change_t> want;
  for (const auto& c : feed)
    if (std::get<0>(c) == last[0])
      want.push_back(c);
  CHECK(read_feed(*w, "p1", last[0] - 1) == want);
  // Turned off: the feed is dropped.
  REQUIRE(!w->set_indexes("p1", {true, 0}));
  counts = w->table_counts();
  tc = std::map<std::string, uint64_t>(counts->begin(), counts->end());
  CHECK(tc["changes"] == 0);
}

namespace {

using source_list = std::vector<std::pair<uint32_t, std::string>>;

/// The id of the last committed txn of the environment in `env_dir`, read with raw LMDB: it
/// moves with every write that changed anything.
size_t last_txnid(const std::string& env_dir) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_maxdbs(env, 16) == 0);
  REQUIRE(mdb_env_open(env, env_dir.c_str(), MDB_RDONLY, 0644) == 0);
  MDB_envinfo info;
  REQUIRE(mdb_env_info(env, &info) == 0);
  mdb_env_close(env);
  return info.me_last_txnid;
}

std::string source_key(uint32_t id, uint64_t variant = 0) {
  return "p" + std::to_string(id % 3) + "/s" + std::to_string(id) + ":/data/in" +
         std::to_string(id) + (variant ? "." + std::to_string(variant) : std::string{}) + ".csv";
}

} // namespace

TEST_CASE("warehouse: lake sources merge like a map and survive a reopen", "[warehouse]") {
  temp_dir dir;
  std::mt19937_64 rng(GENERATE(1, 2, 3));
  std::map<uint32_t, std::string> model;
  std::optional<warehouse> w;
  auto reopen = [&] {
    w.reset(); // LMDB: never the same env twice in one process
    auto x = warehouse::open(dir.str());
    REQUIRE(x);
    w.emplace(std::move(*x));
  };
  reopen();
  REQUIRE(w->lake_sources());
  CHECK(w->lake_sources()->empty());
  for (int round = 0; round < 60; ++round) {
    source_list add;
    const size_t n = rng() % 4;
    bool conflicts = false;
    for (size_t i = 0; i < n; ++i) {
      const auto id = static_cast<uint32_t>(1 + rng() % 12);
      const bool other = rng() % 8 == 0; // a known id reported with another key
      add.emplace_back(id, source_key(id, other ? 1 + rng() % 3 : 0));
      auto it = model.find(id);
      conflicts = conflicts || (it != model.end() && it->second != add.back().second);
      // Within one call too: a second entry of an id must repeat the first one's key.
      for (size_t j = 0; j + 1 < add.size(); ++j)
        conflicts = conflicts || (add[j].first == id && add[j].second != add.back().second);
    }
    auto err = w->record_lake_sources(add);
    if (conflicts) {
      CHECK(has_code(err, errc::store_corrupt));
      CHECK_THAT(render(err), Catch::Contains("lake source id"));
    } else {
      REQUIRE(!err);
      for (const auto& [id, key] : add)
        model.emplace(id, key);
    }
    if (round % 20 == 19)
      reopen();
    auto got = w->lake_sources();
    REQUIRE(got);
    CHECK(*got == source_list(model.begin(), model.end()));
  }
  CHECK(has_code(w->record_lake_sources({{0, "p/s:/x"}}), errc::internal));
  CHECK(has_code(w->record_lake_sources({{5, ""}}), errc::internal));
  CHECK(*w->lake_sources() == source_list(model.begin(), model.end()));
}

TEST_CASE("warehouse: recording lake sources it knows writes nothing", "[warehouse]") {
  temp_dir dir;
  const source_list first{{1, source_key(1)}, {2, source_key(2)}};
  {
    auto w = warehouse::open(dir.str());
    REQUIRE(w);
    REQUIRE(!w->record_lake_sources(first));
  }
  const auto env_dir = dir.str() + "/warehouse";
  const auto before = last_txnid(env_dir);
  {
    auto w = warehouse::open(dir.str());
    REQUIRE(w);
    CHECK(!w->record_lake_sources(first));
    CHECK(!w->record_lake_sources({first[1]}));
    CHECK(!w->record_lake_sources({}));
    CHECK(has_code(w->record_lake_sources({{2, source_key(7)}}), errc::store_corrupt));
  }
  CHECK(last_txnid(env_dir) == before);
  {
    auto w = warehouse::open(dir.str());
    REQUIRE(w);
    CHECK(!w->record_lake_sources({first[0], {3, source_key(3)}}));
  }
  CHECK(last_txnid(env_dir) == before + 1);
}

TEST_CASE("warehouse: sink cursors hold the change feed back and go with their sink",
          "[warehouse]") {
  temp_dir dir;
  std::mt19937_64 rng{77};
  const std::vector<std::string> keys = {"a", "b", "c"};
  auto w = warehouse::open(dir.str());
  REQUIRE(w);
  REQUIRE(w->register_pipeline("p", {"count", "sum"}, "tumbling"));
  REQUIRE(!w->set_indexes("p", {false, 1})); // a retention of 1 us: only sinks keep epochs
  // A new sink of a pipeline without epochs starts at 0.
  auto cur = w->register_sinks("p", {"s1", "s2"});
  REQUIRE(cur);
  CHECK(*cur == std::vector<uint64_t>{0, 0});
  auto commit = [&](uint64_t e) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    REQUIRE(w->commit(random_commit(rng, "p", e, keys, 2)));
  };
  auto oldest = [&] {
    auto st = w->changes("p", 0, std::nullopt, [](const change_row&) { return true; });
    REQUIRE(st);
    return st->oldest;
  };
  for (uint64_t e = 1; e <= 4; ++e)
    commit(e);
  CHECK(oldest() == 1); // nothing delivered: every epoch kept, however old
  REQUIRE(!w->set_sink_cursor("p", "s1", 3));
  REQUIRE(!w->set_sink_cursor("p", "s2", 2));
  commit(5);
  CHECK(oldest() == 3); // the lowest cursor (2) holds epochs after it
  // A cursor survives registration; s2 is no longer configured: its cursor goes, s3 is new
  // and starts at the oldest epoch kept.
  cur = w->register_sinks("p", {"s1", "s3"});
  REQUIRE(cur);
  CHECK(*cur == std::vector<uint64_t>{3, 2});
  REQUIRE(!w->set_sink_cursor("p", "s3", 5));
  commit(6);
  CHECK(oldest() == 4); // s1 at 3 holds the rest
  REQUIRE(!w->set_sink_cursor("p", "s1", 6));
  commit(7);
  CHECK(oldest() == 6); // s3 at 5
  // Without sinks, the retention alone decides.
  REQUIRE(w->register_sinks("p", {}));
  commit(8);
  CHECK(oldest() == 8);
  CHECK_FALSE(w->register_sinks("nope", {"s"}));
}
