#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "actors/core/error.hpp"
#include "actors/core/window_operator.hpp"

using namespace weir;

namespace {

constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();

/// One input record of a test: its aggregate inputs are two numeric fields and one hash.
struct rec {
  int64_t t = 0;
  std::string key;
  uint64_t key_hash = 0;
  double a = nan_value;
  double b = nan_value;
  uint64_t h = 0;
};

/// The aggregates every randomized test computes, with the field each one reads.
std::vector<aggregate_config> all_aggregates() {
  return {
    {agg_fn::count, "", "n", 0.5},        {agg_fn::count, "a", "na", 0.5},
    {agg_fn::sum, "a", "sum_a", 0.5},     {agg_fn::avg, "b", "avg_b", 0.5},
    {agg_fn::min, "a", "min_a", 0.5},     {agg_fn::max, "b", "max_b", 0.5},
    {agg_fn::distinct, "h", "dist", 0.5}, {agg_fn::quantile, "a", "p90_a", 0.9},
    {agg_fn::quantile, "b", "p0_b", 0.0},
  };
}

/// Lays records out the way preprocess does: one column per aggregate per make_layout().
event_columns columns_of(const std::vector<rec>& rs, size_t from, size_t to,
                         const std::vector<int64_t>& wm_before,
                         const std::vector<aggregate_config>& aggs) {
  auto layout = make_layout(aggs);
  event_columns c;
  for (size_t i = from; i < to; ++i) {
    const auto& r = rs[i];
    c.time.push_back(r.t);
    c.wm_before.push_back(wm_before[i]);
    c.key_hash.push_back(r.key_hash);
    c.key_bytes += r.key;
    c.key_end.push_back(static_cast<uint32_t>(c.key_bytes.size()));
    std::vector<double> vals(layout.value_width, nan_value);
    std::vector<uint64_t> hs(layout.hash_width, 0);
    for (size_t j = 0; j < aggs.size(); ++j) {
      if (layout.value_col[j] >= 0)
        vals[layout.value_col[j]] = aggs[j].field == "a" ? r.a : r.b;
      if (layout.hash_col[j] >= 0)
        hs[layout.hash_col[j]] = r.h;
    }
    c.values.insert(c.values.end(), vals.begin(), vals.end());
    c.hashes.insert(c.hashes.end(), hs.begin(), hs.end());
  }
  return c;
}

void feed(window_operator& op, const event_columns& c, const std::vector<aggregate_config>& aggs) {
  auto layout = make_layout(aggs);
  op.process(view_of(c, layout.value_width, layout.hash_width));
}

// -- the brute-force reference ---------------------------------------------------------

struct ref_window {
  std::string key;
  int64_t start = 0;
  int64_t end = 0;
  std::vector<size_t> recs;
  bool fired = false;
  bool gone = false;
};

/// Straight from the rules, with vectors and loops: computes W itself, decides lateness per
/// record, assigns windows and keeps every window that ever got a record.
struct reference {
  window_config w;
  std::vector<rec> records;
  std::vector<ref_window> wins;
  int64_t wm = min_timestamp;
  std::vector<int64_t> wm_before;

  explicit reference(window_config cfg)
    : w(cfg) {}

  void add(const rec& r) {
    size_t idx = records.size();
    records.push_back(r);
    wm_before.push_back(wm);
    const int64_t wb = wm;
    const int64_t lat = w.allowed_lateness;
    if (w.kind == window_kind::session) {
      if (wb < r.t + w.gap + lat) {
        ref_window cur{r.key, r.t, r.t + w.gap, {idx}};
        bool changed = true;
        while (changed) {
          changed = false;
          for (size_t i = 0; i < wins.size(); ++i) {
            auto& o = wins[i];
            if (o.key == cur.key && !o.fired && o.start <= cur.end && cur.start <= o.end) {
              cur.start = std::min(cur.start, o.start);
              cur.end = std::max(cur.end, o.end);
              cur.recs.insert(cur.recs.end(), o.recs.begin(), o.recs.end());
              wins.erase(wins.begin() + i);
              changed = true;
              break;
            }
          }
        }
        wins.push_back(cur);
      }
    } else {
      const int64_t step = w.kind == window_kind::tumbling ? w.size : w.slide;
      for (int64_t k = (r.t - w.offset - w.size) / step - 2; k <= (r.t - w.offset) / step + 2;
           ++k) {
        int64_t s = w.offset + k * step;
        if (!(s <= r.t && r.t < s + w.size))
          continue;
        int64_t e = s + w.size;
        ref_window* found = nullptr;
        for (auto& o : wins)
          if (o.key == r.key && o.start == s && !o.gone)
            found = &o;
        if (wb >= e + lat) { // late for this window
          if (w.late == late_policy::update && wb < e + lat + w.update_horizon) {
            // Within the horizon a window is never gone, so not found means it never had a
            // record of this key: the late record opens it.
            if (found)
              found->recs.push_back(idx);
            else
              wins.push_back(ref_window{r.key, s, e, {idx}});
          }
          continue;
        }
        if (found)
          found->recs.push_back(idx);
        else
          wins.push_back(ref_window{r.key, s, e, {idx}});
      }
    }
    wm = std::max(wm, r.t - w.out_of_orderness);
    for (auto& o : wins) {
      if (!o.fired && wm >= o.end + lat)
        o.fired = true;
      bool retain = w.late == late_policy::update && w.kind != window_kind::session;
      if (o.fired && (!retain || wm >= o.end + lat + w.update_horizon))
        o.gone = true;
    }
  }
};

double true_quantile(std::vector<double> xs, double q) {
  if (xs.empty())
    return nan_value;
  std::sort(xs.begin(), xs.end());
  return xs[static_cast<size_t>(std::floor(q * static_cast<double>(xs.size() - 1)))];
}

/// Exact aggregates of one reference window, as listed by all_aggregates().
std::vector<double> expected_values(const reference& ref, const ref_window& win) {
  double n = 0, na = 0, sum_a = 0, sum_b = 0, nb = 0;
  double min_a = INFINITY, max_b = -INFINITY;
  std::set<uint64_t> hashes;
  std::vector<double> as, bs;
  for (size_t i : win.recs) {
    const auto& r = ref.records[i];
    n += 1;
    hashes.insert(r.h);
    if (!std::isnan(r.a)) {
      na += 1;
      sum_a += r.a;
      min_a = std::min(min_a, r.a);
      as.push_back(r.a);
    }
    if (!std::isnan(r.b)) {
      nb += 1;
      sum_b += r.b;
      max_b = std::max(max_b, r.b);
      bs.push_back(r.b);
    }
  }
  return {n,
          na,
          na > 0 ? sum_a : nan_value,
          nb > 0 ? sum_b / nb : nan_value,
          na > 0 ? min_a : nan_value,
          nb > 0 ? max_b : nan_value,
          static_cast<double>(hashes.size()),
          true_quantile(as, 0.9),
          true_quantile(bs, 0.0)};
}

bool same(double x, double y) {
  return (std::isnan(x) && std::isnan(y)) || x == y;
}

void check_values(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  // count, count a, distinct: exact
  for (size_t i : {0, 1, 6})
    CHECK(got[i] == want[i]);
  // sum, avg, min, max: relative 1e-9
  for (size_t i : {2, 3, 4, 5}) {
    INFO("aggregate " << i << " got " << got[i] << " want " << want[i]);
    if (std::isnan(want[i]))
      CHECK(std::isnan(got[i]));
    else
      CHECK(std::fabs(got[i] - want[i]) <= 1e-9 * std::max(1.0, std::fabs(want[i])));
  }
  // quantiles: 1 % relative
  for (size_t i : {7, 8}) {
    INFO("quantile " << i << " got " << got[i] << " want " << want[i]);
    if (std::isnan(want[i]))
      CHECK(std::isnan(got[i]));
    else
      CHECK(std::fabs(got[i] - want[i]) <= 0.01 * std::fabs(want[i]) * (1 + 1e-9) + 1e-12);
  }
}

void check_order(const std::vector<window_result>& out, size_t from) {
  for (size_t i = from + 1; i < out.size(); ++i) {
    const auto& x = out[i - 1];
    const auto& y = out[i];
    CHECK(std::tie(x.start, x.end, x.key) < std::tie(y.start, y.end, y.key));
  }
}

void check_identical(const std::vector<window_result>& x, const std::vector<window_result>& y) {
  REQUIRE(x.size() == y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    CHECK(x[i].key == y[i].key);
    CHECK(x[i].start == y[i].start);
    CHECK(x[i].end == y[i].end);
    CHECK(x[i].version == y[i].version);
    REQUIRE(x[i].values.size() == y[i].values.size());
    for (size_t j = 0; j < x[i].values.size(); ++j)
      CHECK(same(x[i].values[j], y[i].values[j]));
  }
}

window_config random_window(std::mt19937_64& rng, window_kind kind, late_policy late) {
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  window_config w;
  w.kind = kind;
  w.late = late;
  w.size = pick(3, 30);
  w.slide = kind == window_kind::sliding ? pick(std::max<int64_t>(1, w.size / 6), w.size) : 0;
  w.gap = kind == window_kind::session ? pick(1, 15) : 0;
  w.offset = pick(-10, 10);
  w.out_of_orderness = pick(0, 12);
  w.allowed_lateness = pick(0, 10);
  w.update_horizon = late == late_policy::update ? pick(0, 30) : 0;
  return w;
}

std::vector<rec> random_records(std::mt19937_64& rng, size_t n, bool colliding_hashes) {
  std::vector<std::string> keys{"k0", "k1",
                                "k2", std::string{"x"} + key_separator + "y",
                                "",   "a long key that is longer than a small string buffer"};
  std::uniform_int_distribution<int> pct(0, 99);
  std::uniform_int_distribution<size_t> pick_key(0, keys.size() - 1);
  std::uniform_int_distribution<int> small(-100, 100);
  std::vector<rec> rs;
  int64_t base = std::uniform_int_distribution<int64_t>(-50, 50)(rng);
  for (size_t i = 0; i < n; ++i) {
    base += std::uniform_int_distribution<int64_t>(0, 3)(rng);
    rec r;
    int p = pct(rng);
    if (p < 5) // very late
      r.t = base - std::uniform_int_distribution<int64_t>(0, 100)(rng);
    else if (p < 40) // out of order within a few ticks
      r.t = base - std::uniform_int_distribution<int64_t>(0, 15)(rng);
    else
      r.t = base;
    size_t k = pick_key(rng);
    r.key = keys[k];
    r.key_hash = colliding_hashes ? k % 2 : XXH3_64bits(r.key.data(), r.key.size());
    r.a = pct(rng) < 10 ? nan_value : small(rng) * 0.25;
    r.b = pct(rng) < 10 ? nan_value : small(rng) * 1.5;
    uint64_t hv = static_cast<uint64_t>(small(rng) % 12);
    r.h = XXH3_64bits(&hv, sizeof hv);
    rs.push_back(r);
  }
  return rs;
}

/// One randomized run: feeds the operator in random batches with random advance() calls and
/// snapshot/restore cycles (a restored twin must emit exactly what the original emits), then
/// compares the highest version of every window with the reference.
void run_random(uint64_t seed, window_kind kind, late_policy late) {
  std::mt19937_64 rng{seed};
  auto w = random_window(rng, kind, late);
  auto aggs = all_aggregates();
  pipeline_config cfg;
  cfg.window = w;
  cfg.aggregates = aggs;
  INFO("seed " << seed << " size " << w.size << " slide " << w.slide << " gap " << w.gap
               << " offset " << w.offset << " ooo " << w.out_of_orderness << " lateness "
               << w.allowed_lateness << " horizon " << w.update_horizon);
  size_t n = std::uniform_int_distribution<size_t>(0, 400)(rng);
  auto rs = random_records(rng, n, rng() % 3 == 0);
  reference ref{w};
  for (const auto& r : rs)
    ref.add(r);

  window_operator op{cfg};
  std::unique_ptr<window_operator> twin;
  std::vector<window_result> out;
  std::vector<window_result> twin_out;
  std::uniform_int_distribution<int> pct(0, 99);
  // What a store holds after applying every checkpoint's delta, as the warehouse does:
  // deletes first, then puts.
  std::map<std::string, std::string> stored;
  std::string stored_meta;
  state_delta delta;
  auto commit = [&] {
    op.checkpoint(delta);
    REQUIRE(for_each_key(delta.dels, [&](std::string_view k) {
      CHECK(stored.erase(std::string{k}) == 1); // only rows that were written are deleted
    }));
    REQUIRE(for_each_row(delta.puts, [&](std::string_view k, std::string_view v) {
      stored[std::string{k}] = std::string{v};
    }));
    stored_meta = delta.meta;
  };
  size_t i = 0;
  while (i < rs.size()) {
    size_t len = std::uniform_int_distribution<size_t>(1, 40)(rng);
    size_t to = std::min(rs.size(), i + len);
    auto cols = columns_of(rs, i, to, ref.wm_before, aggs);
    feed(op, cols, aggs);
    if (twin)
      feed(*twin, cols, aggs);
    i = to;
    // The watermark after the batch's last record, as the actor would pass it on.
    int64_t wm_now = i < rs.size() ? ref.wm_before[i] : ref.wm;
    if (pct(rng) < 50) {
      size_t from = out.size();
      op.advance(wm_now, out);
      check_order(out, from);
      CHECK(op.watermark() == std::max(wm_now, op.watermark()));
      if (twin)
        twin->advance(wm_now, twin_out);
    }
    // State is taken at an epoch's end, right after advance() (nothing pending): half of the
    // time the whole snapshot, half of the time the rows the checkpoints left in a store.
    if (pct(rng) < 15) {
      op.advance(wm_now, out);
      if (twin)
        twin->advance(wm_now, twin_out);
      commit();
      std::string bytes = op.snapshot();
      if (pct(rng) < 50) {
        bytes = window_operator::snapshot_of(stored_meta);
        for (const auto& [k, v] : stored)
          window_operator::append_row(bytes, k, v);
      }
      twin = std::make_unique<window_operator>(cfg);
      REQUIRE_FALSE(twin->restore(bytes));
      // Snapshots are not canonical (key slots depend on the table's history), so the twin is
      // judged by what it does: it must emit exactly what the original emits from here on.
      CHECK(twin->open_windows() == op.open_windows());
      CHECK(twin->watermark() == op.watermark());
      twin_out = out;
    }
  }
  // The store holds exactly the state: deltas add up to the snapshot.
  commit();
  {
    window_operator from_rows{cfg};
    std::string bytes = window_operator::snapshot_of(stored_meta);
    for (const auto& [k, v] : stored)
      window_operator::append_row(bytes, k, v);
    REQUIRE_FALSE(from_rows.restore(bytes));
    CHECK(from_rows.open_windows() == op.open_windows());
    CHECK(from_rows.slices() == op.slices());
  }
  size_t from = out.size();
  timestamp before = op.watermark();
  timestamp after = op.flush(out);
  check_order(out, from);
  timestamp expected_wm = before;
  for (size_t j = from; j < out.size(); ++j)
    if (out[j].version == 1)
      expected_wm = std::max(expected_wm, out[j].end + w.allowed_lateness);
  CHECK(after == expected_wm);
  CHECK(op.watermark() == after);
  CHECK(op.open_windows() == 0);
  if (twin) {
    CHECK(twin->flush(twin_out) == after);
    check_identical(out, twin_out);
  }

  // Versions count up from 1 per window; without late updates each window is emitted once.
  std::map<std::tuple<std::string, int64_t, int64_t>, const window_result*> final_results;
  for (const auto& r : out) {
    auto id = std::make_tuple(r.key, r.start, r.end);
    auto it = final_results.find(id);
    uint32_t expected_version = it == final_results.end() ? 1 : it->second->version + 1;
    CHECK(r.version == expected_version);
    final_results[id] = &r;
  }
  if (late == late_policy::dead_letter || kind == window_kind::session)
    for (const auto& [id, r] : final_results)
      CHECK(r->version == 1);

  REQUIRE(final_results.size() == ref.wins.size());
  for (const auto& win : ref.wins) {
    auto it = final_results.find(std::make_tuple(win.key, win.start, win.end));
    INFO("window [" << win.start << ", " << win.end << ") of key '" << win.key << "'");
    REQUIRE(it != final_results.end());
    check_values(it->second->values, expected_values(ref, win));
  }
}

/// Builds a one-column (count + sum of a) operator input for hand-written cases.
struct small_case {
  pipeline_config cfg;
  std::vector<window_result> out;
  std::unique_ptr<window_operator> op;

  explicit small_case(window_config w) {
    cfg.window = w;
    cfg.aggregates = {{agg_fn::count, "", "n", 0.5}, {agg_fn::sum, "a", "s", 0.5}};
    op = std::make_unique<window_operator>(cfg);
  }

  /// Adds one record with the given watermark-before.
  void add(int64_t t, int64_t wm_before, double a, const std::string& key = "k") {
    rec r;
    r.t = t;
    r.key = key;
    r.key_hash = XXH3_64bits(key.data(), key.size());
    r.a = a;
    std::vector<rec> rs{r};
    std::vector<int64_t> wm{wm_before};
    feed(*op, columns_of(rs, 0, 1, wm, cfg.aggregates), cfg.aggregates);
  }
};

} // namespace

TEST_CASE("randomized against the brute-force reference") {
  uint64_t seed = 1;
  for (auto kind : {window_kind::tumbling, window_kind::sliding, window_kind::session}) {
    for (auto late : {late_policy::dead_letter, late_policy::update}) {
      for (int i = 0; i < 150; ++i)
        run_random(seed++, kind, late);
    }
  }
}

TEST_CASE("a record exactly on a window boundary starts the next window") {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = 10;
  small_case c{w};
  c.add(9, min_timestamp, 1);
  c.add(10, min_timestamp, 2);
  c.add(0, min_timestamp, 4);
  c.add(-1, min_timestamp, 8);
  c.op->advance(20, c.out);
  REQUIRE(c.out.size() == 3);
  CHECK(c.out[0].start == -10);
  CHECK(c.out[0].values == std::vector<double>{1, 8});
  CHECK(c.out[1].start == 0);
  CHECK(c.out[1].end == 10);
  CHECK(c.out[1].values == std::vector<double>{2, 5});
  CHECK(c.out[2].start == 10);
  CHECK(c.out[2].values == std::vector<double>{1, 2});
  CHECK(c.op->open_windows() == 0);
}

TEST_CASE("sliding windows with an offset") {
  window_config w;
  w.kind = window_kind::sliding;
  w.size = 10;
  w.slide = 4;
  w.offset = 1;
  small_case c{w};
  c.add(10, min_timestamp, 1); // windows starting at 1, 5, 9 (not -3: [-3, 7) ends before)
  c.op->flush(c.out);
  REQUIRE(c.out.size() == 3);
  std::vector<int64_t> starts;
  for (const auto& r : c.out)
    starts.push_back(r.start);
  CHECK(starts == std::vector<int64_t>{1, 5, 9});
}

TEST_CASE("a record in between merges two sessions") {
  window_config w;
  w.kind = window_kind::session;
  w.gap = 5;
  small_case c{w};
  c.add(0, min_timestamp, 1);  // [0, 5)
  c.add(10, min_timestamp, 2); // [10, 15)
  c.add(30, min_timestamp, 3, "other");
  CHECK(c.op->open_windows() == 3);
  c.add(5, min_timestamp, 4); // [5, 10) touches both ends
  CHECK(c.op->open_windows() == 2);
  c.add(16, min_timestamp, 8); // [16, 21) does not touch [0, 15)
  c.op->advance(1000, c.out);
  REQUIRE(c.out.size() == 3);
  CHECK(c.out[0].start == 0);
  CHECK(c.out[0].end == 15);
  CHECK(c.out[0].values == std::vector<double>{3, 7});
  CHECK(c.out[1].start == 16);
  CHECK(c.out[1].end == 21);
  CHECK(c.out[2].key == "other");
}

TEST_CASE("lateness exactly at end + allowed lateness") {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = 10;
  w.allowed_lateness = 5;
  small_case c{w};
  c.add(3, min_timestamp, 1);
  c.op->advance(14, c.out);
  CHECK(c.out.empty());
  c.add(4, 14, 2); // W = e + L - 1: still counts
  c.add(5, 15, 4); // W = e + L: late, skipped
  c.op->advance(15, c.out);
  REQUIRE(c.out.size() == 1);
  CHECK(c.out[0].values == std::vector<double>{2, 3});
  c.add(6, 15, 4); // after firing: late, no new window
  CHECK(c.op->open_windows() == 0);
  c.op->flush(c.out);
  CHECK(c.out.size() == 1);
}

TEST_CASE("session lateness is judged from t + gap + allowed lateness") {
  window_config w;
  w.kind = window_kind::session;
  w.gap = 4;
  w.allowed_lateness = 2;
  small_case c{w};
  c.add(10, 15, 1); // 15 < 10 + 4 + 2: accepted
  c.add(10, 16, 2); // 16 >= 16: late
  // The late record's watermark fired [10, 14) already; its result waits for advance().
  CHECK(c.op->open_windows() == 0);
  c.op->advance(16, c.out); // [10, 14) fires at 16
  REQUIRE(c.out.size() == 1);
  CHECK(c.out[0].values == std::vector<double>{1, 1});
  // Not late by its own time, touching the fired session: starts a new one.
  c.add(13, 16, 5);
  c.op->flush(c.out);
  REQUIRE(c.out.size() == 2);
  CHECK(c.out[1].start == 13);
  CHECK(c.out[1].end == 17);
}

TEST_CASE("late = update re-emits a dirty window until the horizon") {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = 10;
  w.allowed_lateness = 0;
  w.late = late_policy::update;
  w.update_horizon = 20;
  small_case c{w};
  c.add(1, min_timestamp, 1);
  c.op->advance(10, c.out);
  REQUIRE(c.out.size() == 1);
  CHECK(c.out[0].version == 1);
  c.add(2, 10, 2);
  c.add(3, 12, 4);
  CHECK(c.op->open_windows() == 0);
  c.op->advance(12, c.out);
  REQUIRE(c.out.size() == 2);
  CHECK(c.out[1].version == 2);
  CHECK(c.out[1].values == std::vector<double>{3, 7});
  c.op->advance(13, c.out); // nothing dirty: nothing emitted
  CHECK(c.out.size() == 2);
  c.add(4, 29, 8);  // 29 < 10 + 0 + 20: still retained
  c.add(5, 30, 16); // 30 >= 30: gone, skipped
  c.op->advance(30, c.out);
  REQUIRE(c.out.size() == 3);
  CHECK(c.out[2].version == 3);
  CHECK(c.out[2].values == std::vector<double>{4, 15});
  {
    // Past the horizon nothing of the window is left: the state is that of an empty operator.
    window_operator empty{c.cfg};
    std::vector<window_result> none;
    empty.advance(30, none);
    CHECK(c.op->snapshot() == empty.snapshot());
  }
  c.add(6, 30, 32); // the window is gone now for sure
  c.op->flush(c.out);
  CHECK(c.out.size() == 3);
  // A late record within the horizon for a window its key never had a record in opens that
  // window: nothing was committed for it yet, so it is emitted once, as version 1.
  c.add(25, 40, 1);
  c.op->flush(c.out);
  REQUIRE(c.out.size() == 4);
  CHECK(c.out[3].start == 20);
  CHECK(c.out[3].version == 1);
  CHECK(c.out[3].values == std::vector<double>{1, 1});
  // For [0, 10) the watermark 40 is past 10 + 0 + 20: that late record is skipped.
  c.add(5, 40, 1, "other");
  c.op->flush(c.out);
  CHECK(c.out.size() == 4);
}

TEST_CASE("flush returns the watermark that holds afterwards") {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = 10;
  w.allowed_lateness = 3;
  small_case c{w};
  CHECK(c.op->flush(c.out) == min_timestamp);
  c.add(5, min_timestamp, 1);
  c.add(25, min_timestamp, 1);
  CHECK(c.op->flush(c.out) == 33);
  CHECK(c.out.size() == 2);
  c.add(26, c.op->watermark(), 1); // late for [20, 30)
  CHECK(c.op->open_windows() == 0);
  c.op->advance(100, c.out);
  CHECK(c.op->flush(c.out) == 100);
}

TEST_CASE("keys with colliding hashes stay apart, freed key slots are reused") {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = 10;
  pipeline_config cfg;
  cfg.window = w;
  cfg.aggregates = {{agg_fn::count, "", "n", 0.5}};
  window_operator op{cfg};
  std::vector<window_result> out;
  // Many rounds of many keys sharing few hash values stress probing and deletion.
  for (int round = 0; round < 20; ++round) {
    event_columns c;
    std::map<std::string, int> truth;
    for (int i = 0; i < 500; ++i) {
      std::string key = "key" + std::to_string((i * 7 + round) % 97);
      c.time.push_back(round * 10 + i % 10);
      c.wm_before.push_back(round * 10 - 1);
      c.key_hash.push_back(static_cast<uint64_t>(key.size() % 3) << 50);
      c.key_bytes += key;
      c.key_end.push_back(static_cast<uint32_t>(c.key_bytes.size()));
      ++truth[key];
    }
    op.process(view_of(c, 0, 0));
    size_t from = out.size();
    op.advance(round * 10 + 10, out);
    REQUIRE(out.size() - from == truth.size());
    for (size_t j = from; j < out.size(); ++j)
      CHECK(out[j].values[0] == truth[out[j].key]);
  }
}

TEST_CASE("restore rejects bad bytes and keeps the state") {
  window_config w;
  w.kind = window_kind::session;
  w.gap = 5;
  pipeline_config cfg;
  cfg.window = w;
  cfg.aggregates = all_aggregates();
  window_operator op{cfg};
  std::mt19937_64 rng{77};
  auto rs = random_records(rng, 200, false);
  std::vector<int64_t> wm(rs.size(), min_timestamp);
  feed(op, columns_of(rs, 0, rs.size(), wm, cfg.aggregates), cfg.aggregates);
  auto good = op.snapshot();
  REQUIRE(op.open_windows() > 0);

  window_operator victim{cfg};
  victim.restore(good);
  auto check_rejected = [&](std::string_view bytes) {
    auto err = victim.restore(bytes);
    CHECK(err);
    CHECK(err.code() == static_cast<uint8_t>(errc::store_corrupt));
    CHECK(victim.snapshot() == good);
  };
  check_rejected("");
  check_rejected(std::string_view{good}.substr(0, good.size() - 1));
  check_rejected(good + '\0');
  for (size_t cut = 0; cut < good.size(); cut += 7)
    check_rejected(std::string_view{good}.substr(0, cut));
  std::string junk = good;
  junk[0] = 9; // unknown format version
  check_rejected(junk);
  std::mt19937 flip{1};
  for (int i = 0; i < 3000; ++i) {
    std::string bad = good;
    bad[flip() % bad.size()] = static_cast<char>(flip());
    window_operator other{cfg};
    auto err = other.restore(bad);
    if (err) {
      CHECK(err.code() == static_cast<uint8_t>(errc::store_corrupt));
    } else { // a flip inside an accumulator double can decode; it must still run
      std::vector<window_result> out;
      other.flush(out);
    }
  }
  // A snapshot of another configuration does not restore.
  pipeline_config other_cfg = cfg;
  other_cfg.window.gap = 6;
  window_operator other{other_cfg};
  CHECK(other.restore(good));
  other_cfg = cfg;
  other_cfg.aggregates.pop_back();
  window_operator fewer{other_cfg};
  CHECK(fewer.restore(good));
}

TEST_CASE("large windows: HyperLogLog and DDSketch through merges and snapshots") {
  window_config w;
  w.kind = window_kind::session;
  w.gap = 100;
  pipeline_config cfg;
  cfg.window = w;
  cfg.aggregates = {{agg_fn::distinct, "h", "d", 0.5},
                    {agg_fn::quantile, "a", "p50", 0.5},
                    {agg_fn::quantile, "a", "p99", 0.99},
                    {agg_fn::count, "", "n", 0.5}};
  std::mt19937_64 rng{21};
  std::lognormal_distribution<double> lognormal(1, 1.5);
  // Two sessions of 40000 records each ([0, 4099) and [4190, 8289)), then one record at 4095
  // ([4095, 4195)) that touches both and merges them.
  std::vector<rec> rs;
  std::set<uint64_t> distinct;
  std::vector<double> as;
  auto add = [&](int64_t t, uint64_t v) {
    rec r;
    r.t = t;
    r.key = "big";
    r.key_hash = 1;
    r.h = XXH3_64bits(&v, sizeof v);
    r.a = (v % 5 == 0 ? -1 : 1) * lognormal(rng);
    rs.push_back(r);
    distinct.insert(r.h);
    as.push_back(r.a);
  };
  for (int i = 0; i < 40000; ++i)
    add(i / 10, rng() % 30000);
  for (int i = 0; i < 40000; ++i)
    add(4190 + i / 10, 20000 + rng() % 30000);
  add(4095, 99999999);
  std::vector<int64_t> wm(rs.size(), min_timestamp);
  window_operator op{cfg};
  feed(op, columns_of(rs, 0, 40000, wm, cfg.aggregates), cfg.aggregates);
  window_operator restored{cfg};
  REQUIRE_FALSE(restored.restore(op.snapshot()));
  feed(restored, columns_of(rs, 40000, rs.size(), wm, cfg.aggregates), cfg.aggregates);
  CHECK(restored.open_windows() == 1);
  std::vector<window_result> out;
  restored.flush(out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].start == 0);
  CHECK(out[0].end == 8289);
  const double d = static_cast<double>(distinct.size());
  CHECK(std::fabs(out[0].values[0] - d) <= 3 * distinct_counter::standard_error * d);
  for (auto [i, q] : {std::pair<size_t, double>{1, 0.5}, {2, 0.99}}) {
    double truth = true_quantile(as, q);
    CHECK(std::fabs(out[0].values[i] - truth) <= 0.01 * std::fabs(truth) * (1 + 1e-9));
  }
  CHECK(out[0].values[3] == static_cast<double>(rs.size()));
}

TEST_CASE("a batch with the wrong layout is refused") {
  pipeline_config cfg;
  cfg.window.size = 10;
  cfg.aggregates = all_aggregates();
  window_operator op{cfg};
  event_columns c;
  c.time.push_back(1);
  c.wm_before.push_back(min_timestamp);
  c.key_hash.push_back(1);
  c.key_end.push_back(0);
  CHECK_THROWS_AS(op.process(view_of(c, 0, 0)), std::invalid_argument);
}

TEST_CASE("throughput: tumbling, 300 keys, count sum min max avg") {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = 1000 * us_per_ms;
  w.out_of_orderness = 100 * us_per_ms;
  pipeline_config cfg;
  cfg.window = w;
  cfg.aggregates = {{agg_fn::count, "", "n", 0.5},
                    {agg_fn::sum, "v", "sum", 0.5},
                    {agg_fn::min, "v", "min", 0.5},
                    {agg_fn::max, "v", "max", 0.5},
                    {agg_fn::avg, "v", "avg", 0.5}};
  auto layout = make_layout(cfg.aggregates);
  std::mt19937_64 rng{3};
  std::vector<std::string> keys;
  std::vector<uint64_t> key_hashes;
  for (int k = 0; k < 300; ++k) {
    keys.push_back("sensor-" + std::to_string(k));
    key_hashes.push_back(XXH3_64bits(keys.back().data(), keys.back().size()));
  }
  // Pre-built batches of 1000 records, 10k records per second of event time.
  const size_t batch = 1000;
  const size_t batches = 1000;
  std::vector<event_columns> input(20);
  int64_t t = 0;
  int64_t wm = min_timestamp;
  for (auto& c : input) {
    for (size_t i = 0; i < batch; ++i) {
      t += 100;
      int64_t et = t - static_cast<int64_t>(rng() % (50 * us_per_ms));
      size_t k = rng() % keys.size();
      c.time.push_back(et);
      c.wm_before.push_back(wm);
      c.key_hash.push_back(key_hashes[k]);
      c.key_bytes += keys[k];
      c.key_end.push_back(static_cast<uint32_t>(c.key_bytes.size()));
      double v = static_cast<double>(rng() % 1000) / 10;
      for (size_t j = 0; j < layout.value_width; ++j)
        c.values.push_back(v);
      wm = std::max(wm, et - w.out_of_orderness);
    }
  }
  // Replaying the 20 prepared batches shifted in time keeps the input realistic.
  const int64_t span = t;
  window_operator op{cfg};
  std::vector<window_result> out;
  std::vector<int64_t> time_buf(batch);
  std::vector<int64_t> wm_buf(batch);
  size_t fired = 0;
  auto begin = std::chrono::steady_clock::now();
  for (size_t b = 0; b < batches; ++b) {
    const auto& c = input[b % input.size()];
    int64_t shift = static_cast<int64_t>(b / input.size()) * span;
    for (size_t i = 0; i < batch; ++i) {
      time_buf[i] = c.time[i] + shift;
      wm_buf[i] = c.wm_before[i] == min_timestamp ? min_timestamp : c.wm_before[i] + shift;
    }
    auto v = view_of(c, layout.value_width, layout.hash_width);
    v.time = time_buf.data();
    v.wm_before = wm_buf.data();
    op.process(v);
    op.advance(wm_buf[batch - 1], out);
    fired += out.size();
    out.clear();
  }
  auto elapsed = std::chrono::steady_clock::now() - begin;
  double ns = std::chrono::duration<double, std::nano>(elapsed).count();
  std::cout << "window_operator tumbling, 300 keys, 5 aggregates: "
            << ns / static_cast<double>(batch * batches) << " ns/record (" << fired
            << " results)\n";
  CHECK(fired > 0);
}

TEST_CASE("an epoch writes only the windows it changed") {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = 100;
  small_case c{w};
  for (int k = 0; k < 1000; ++k)
    c.add(10, min_timestamp, 1, "key" + std::to_string(k));
  state_delta d;
  c.op->checkpoint(d);
  CHECK(d.put_count == 1000);
  CHECK(d.del_count == 0);
  // Ten keys get a record: ten rows change, nothing else is written.
  for (int k = 0; k < 10; ++k)
    c.add(20, min_timestamp, 2, "key" + std::to_string(k * 7));
  c.op->checkpoint(d);
  CHECK(d.put_count == 10);
  CHECK(d.del_count == 0);
  c.op->checkpoint(d);
  CHECK(d.put_count == 0);
  CHECK(d.puts.empty());
  // The window fires: its 1000 rows are deleted, none written.
  c.op->advance(100, c.out);
  CHECK(c.out.size() == 1000);
  c.op->checkpoint(d);
  CHECK(d.put_count == 0);
  CHECK(d.del_count == 1000);
  // A window opened and fired within one epoch never reaches the store.
  c.add(150, 100, 1);
  c.op->advance(200, c.out);
  c.op->checkpoint(d);
  CHECK(d.put_count == 0);
  CHECK(d.del_count == 0);
}

TEST_CASE("memory per open window: 1 M keys, sum and avg") {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = 86400 * us_per_s;
  pipeline_config cfg;
  cfg.window = w;
  cfg.aggregates = {{agg_fn::sum, "v", "sum", 0.5}, {agg_fn::avg, "v", "avg", 0.5}};
  auto layout = make_layout(cfg.aggregates);
  window_operator op{cfg};
  const size_t keys = 1'000'000;
  event_columns c;
  for (size_t k = 0; k < keys; ++k) {
    std::string key = "c" + std::to_string(k);
    c.time.push_back(static_cast<int64_t>(k));
    c.wm_before.push_back(min_timestamp);
    c.key_hash.push_back(XXH3_64bits(key.data(), key.size()));
    c.key_bytes += key;
    c.key_end.push_back(static_cast<uint32_t>(c.key_bytes.size()));
    for (size_t j = 0; j < layout.value_width; ++j)
      c.values.push_back(1.5);
    if (c.size() == 10000 || k + 1 == keys) {
      op.process(view_of(c, layout.value_width, layout.hash_width));
      c.clear();
    }
  }
  REQUIRE(op.open_windows() == keys);
  double per_window = static_cast<double>(op.memory_bytes()) / keys;
  std::cout << "state memory: " << per_window << " bytes per open window (1 M keys, sum+avg)\n";
  CHECK(per_window <= 128);
}

TEST_CASE("windows near the end of time fire once and do not wrap around") {
  for (auto kind : {window_kind::tumbling, window_kind::sliding}) {
    for (auto late : {late_policy::dead_letter, late_policy::update}) {
      window_config w;
      w.kind = kind;
      w.size = int64_t{1} << 62;
      w.slide = kind == window_kind::sliding ? int64_t{1} << 61 : 0;
      w.late = late;
      w.update_horizon = late == late_policy::update ? int64_t{1} << 60 : 0;
      small_case c{w};
      c.add(max_timestamp - 10, min_timestamp, 1);
      c.add(min_timestamp + 10, min_timestamp, 2);
      c.op->advance(max_timestamp - 5, c.out);
      c.add(max_timestamp - 20, max_timestamp - 5, 4); // late for the fired ones
      c.op->flush(c.out);
      INFO("kind " << static_cast<int>(kind) << " late " << static_cast<int>(late));
      CHECK(!c.out.empty());
      for (const auto& r : c.out) {
        CHECK(r.start < r.end);
        CHECK(r.values[0] >= 1);
      }
    }
  }
}

TEST_CASE("without checkpoints, discarded changes do not pile up") {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = 100;
  small_case c{w};
  for (int i = 0; i < 50; ++i) {
    c.add(i * 10, i * 10 - 1, 1, "k" + std::to_string(i % 7));
    c.op->advance(i * 10, c.out);
    c.op->discard_changes();
  }
  // What changed after the discards is only what changed since the last one.
  c.add(495, 490, 1, "new");
  state_delta d;
  c.op->checkpoint(d);
  CHECK(d.put_count == 1);
  CHECK(d.del_count == 0);
}
