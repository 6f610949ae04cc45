#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "actors/core/error.hpp"
#include "actors/core/window_operator.hpp"
#include "tests/plugins/aggregates.hpp"

using namespace weir;

namespace {

constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();
constexpr double alpha = 0.3;

/// Counts values, and checks the promise about merge: every record behind `into` is older than
/// every record behind `other`. A broken promise shows as -1.
struct ordered_count {
  struct state {
    timestamp first;
    timestamp last;
    double n;
    bool broken;
  };
  state init() const { return {0, 0, 0, false}; }
  void add(state& s, double, timestamp t) const {
    s.first = s.n == 0 ? t : std::min(s.first, t);
    s.last = s.n == 0 ? t : std::max(s.last, t);
    s.n += 1;
  }
  void merge(state& into, const state& other) const {
    if (other.n == 0) {
      into.broken = into.broken || other.broken;
      return;
    }
    if (into.n > 0 && into.last >= other.first)
      into.broken = true;
    into.first = into.n == 0 ? other.first : into.first;
    into.last = other.last;
    into.n += other.n;
    into.broken = into.broken || other.broken;
  }
  double result(const state& s) const { return s.broken ? -1 : s.n; }
};

/// A sum written against the raw interface, whose stored form starts with a tag byte that
/// deserialize checks: bytes it does not recognize are refused.
class tagged_sum final : public aggregate_function {
public:
  size_t state_size() const override { return sizeof(double); }
  void init(void* s) const override { std::memset(s, 0, sizeof(double)); }
  void add(void* s, double v, timestamp) const override { *static_cast<double*>(s) += v; }
  void merge(void* into, const void* other) const override {
    *static_cast<double*>(into) += *static_cast<const double*>(other);
  }
  double result(const void* s) const override { return *static_cast<const double*>(s); }
  void serialize(const void* s, std::string& out) const override {
    out += 'S';
    out.append(static_cast<const char*>(s), sizeof(double));
  }
  bool deserialize(std::string_view in, void* s) const override {
    if (in.size() != 1 + sizeof(double) || in[0] != 'S')
      return false;
    std::memcpy(s, in.data() + 1, sizeof(double));
    return true;
  }
};

aggregate_config custom(const std::string& name, std::shared_ptr<const aggregate_function> f,
                        std::vector<std::pair<std::string, std::string>> options = {}) {
  aggregate_config a;
  a.fn = agg_fn::custom;
  a.field = "v";
  a.name = name;
  a.custom_name = name;
  a.options = std::move(options);
  a.custom = std::move(f);
  return a;
}

std::vector<aggregate_config> test_aggregates() {
  extension_options o{{{"alpha", "0.3"}}};
  return {
    custom("sum_sq", std::make_shared<aggregate_of<weir_test::sum_sq>>(extension_options{})),
    custom("ewma", std::make_shared<aggregate_of<weir_test::ewma>>(o), o.values()),
    custom("ordered", std::make_shared<aggregate_of<ordered_count>>()),
    {agg_fn::sum, "v", "sum_v", 0.5},
  };
}

struct rec {
  timestamp t = 0;
  std::string key;
  double v = nan_value;
};

using window_id = std::tuple<std::string, timestamp, timestamp>;

/// The brute-force values of one window from its records: sum of squares, the time-weighted
/// mean, the count of values and the plain sum.
std::vector<double> reference_values(const std::vector<const rec*>& rs) {
  double sq = 0;
  double n = 0;
  double sum = 0;
  timestamp newest = min_timestamp;
  for (const auto* r : rs)
    if (!std::isnan(r->v)) {
      sq += r->v * r->v;
      n += 1;
      sum += r->v;
      newest = std::max(newest, r->t);
    }
  double num = 0;
  double den = 0;
  for (const auto* r : rs)
    if (!std::isnan(r->v)) {
      double w = std::pow(1 - alpha, static_cast<double>(newest - r->t) / 1e6);
      num += r->v * w;
      den += w;
    }
  if (n == 0)
    return {nan_value, nan_value, 0, nan_value};
  return {sq, num / den, n, sum};
}

/// Tumbling or sliding windows: every window of the grid that holds a record of the key.
std::map<window_id, std::vector<double>> reference_fixed(const window_config& w,
                                                         const std::vector<rec>& rs) {
  const int64_t step = w.kind == window_kind::tumbling ? w.size : w.slide;
  std::map<window_id, std::vector<const rec*>> wins;
  for (const auto& r : rs)
    for (int64_t k = r.t / step - w.size / step - 2; k <= r.t / step + 1; ++k) {
      const timestamp s = k * step;
      if (s <= r.t && r.t < s + w.size)
        wins[{r.key, s, s + w.size}].push_back(&r);
    }
  std::map<window_id, std::vector<double>> out;
  for (const auto& [id, list] : wins)
    out[id] = reference_values(list);
  return out;
}

/// Session windows: per key, the records sorted by time, cut where one starts after the
/// previous session's end (last + gap).
std::map<window_id, std::vector<double>> reference_sessions(int64_t gap,
                                                            const std::vector<rec>& rs) {
  std::map<std::string, std::vector<const rec*>> by_key;
  for (const auto& r : rs)
    by_key[r.key].push_back(&r);
  std::map<window_id, std::vector<double>> out;
  for (auto& [key, list] : by_key) {
    std::stable_sort(list.begin(), list.end(), [](auto* a, auto* b) { return a->t < b->t; });
    size_t a = 0;
    while (a < list.size()) {
      size_t b = a + 1;
      timestamp end = list[a]->t + gap;
      while (b < list.size() && list[b]->t <= end) {
        end = std::max(end, list[b]->t + gap);
        ++b;
      }
      out[{key, list[a]->t, end}] =
        reference_values(std::vector<const rec*>(list.begin() + a, list.begin() + b));
      a = b;
    }
  }
  return out;
}

/// Records over `span` seconds for three keys, out of order by up to `disorder`; some without a
/// value.
std::vector<rec> make_records(uint32_t seed, size_t n, int64_t span, int64_t disorder) {
  std::mt19937_64 rng{seed};
  std::vector<rec> rs;
  for (size_t i = 0; i < n; ++i) {
    rec r;
    const int64_t base = static_cast<int64_t>(i) * span / static_cast<int64_t>(n);
    r.t = std::max<int64_t>(0, base - static_cast<int64_t>(rng() % (disorder + 1)));
    r.key = std::string{"k"} + std::to_string(rng() % 3);
    if (rng() % 10 != 0)
      r.v = static_cast<double>(rng() % 2000) / 10.0 - 50;
    rs.push_back(r);
  }
  return rs;
}

/// Runs records through an operator in batches of 16, each record seen with the watermark of
/// the bounded-disorder source (max time - disorder), advancing after each batch; `restart_at`
/// (a batch) checkpoints the state as rows, builds a new operator from them and goes on with it.
struct driver {
  pipeline_config cfg;
  int64_t disorder = 0;
  std::vector<window_result> results;

  void run(const std::vector<rec>& rs, size_t restart_at = SIZE_MAX) {
    auto op = std::make_unique<window_operator>(cfg);
    std::map<std::string, std::string> rows; // the store's `windows` table
    state_delta delta;
    auto layout = make_layout(cfg.aggregates);
    timestamp max_t = min_timestamp;
    size_t batch = 0;
    for (size_t from = 0; from < rs.size(); from += 16, ++batch) {
      event_columns c;
      for (size_t i = from; i < std::min(rs.size(), from + 16); ++i) {
        c.time.push_back(rs[i].t);
        c.wm_before.push_back(max_t == min_timestamp ? min_timestamp : max_t - disorder);
        c.key_hash.push_back(std::hash<std::string>{}(rs[i].key));
        c.key_bytes += rs[i].key;
        c.key_end.push_back(static_cast<uint32_t>(c.key_bytes.size()));
        for (size_t j = 0; j < layout.value_width; ++j)
          c.values.push_back(rs[i].v);
        max_t = std::max(max_t, rs[i].t);
      }
      op->process(view_of(c, layout.value_width, layout.hash_width));
      op->advance(max_t - disorder, results);
      op->checkpoint(delta);
      // As the store applies them: deletes first (a row may be deleted and put again).
      for_each_key(delta.dels, [&](std::string_view k) { rows.erase(std::string{k}); });
      for_each_row(delta.puts, [&](std::string_view k, std::string_view v) {
        rows[std::string{k}] = std::string{v};
      });
      if (batch == restart_at) {
        op = std::make_unique<window_operator>(cfg);
        REQUIRE(!op->restore_begin(delta.meta));
        for (const auto& [k, v] : rows)
          REQUIRE(!op->restore_row(k, v));
        REQUIRE(!op->restore_end());
        // And the same through a snapshot of the restored operator.
        auto snap = op->snapshot();
        op = std::make_unique<window_operator>(cfg);
        REQUIRE(!op->restore(snap));
      }
    }
    op->flush(results);
  }
};

void check_against(const std::vector<window_result>& results,
                   const std::map<window_id, std::vector<double>>& expected) {
  std::map<window_id, const window_result*> latest;
  for (const auto& r : results) {
    auto& at = latest[{r.key, r.start, r.end}];
    if (at == nullptr || at->version < r.version)
      at = &r;
  }
  REQUIRE(latest.size() == expected.size());
  for (const auto& [id, want] : expected) {
    auto it = latest.find(id);
    INFO("window " << std::get<0>(id) << " [" << std::get<1>(id) << ", " << std::get<2>(id) << ")");
    REQUIRE(it != latest.end());
    const auto& got = it->second->values;
    REQUIRE(got.size() == 4);
    for (size_t i = 0; i < 4; ++i) {
      INFO("aggregate " << i << ": " << got[i] << " vs " << want[i]);
      if (std::isnan(want[i]))
        CHECK(std::isnan(got[i]));
      else
        CHECK(got[i] == Approx(want[i]).epsilon(1e-9).margin(1e-9));
    }
  }
}

bool same_results(const std::vector<window_result>& a, const std::vector<window_result>& b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].key != b[i].key || a[i].start != b[i].start || a[i].end != b[i].end ||
        a[i].version != b[i].version || a[i].values.size() != b[i].values.size())
      return false;
    for (size_t j = 0; j < a[i].values.size(); ++j)
      if (std::memcmp(&a[i].values[j], &b[i].values[j], sizeof(double)) != 0)
        return false;
  }
  return true;
}

driver make_driver(window_config w, int64_t disorder) {
  driver d;
  d.cfg.window = w;
  d.cfg.aggregates = test_aggregates();
  d.disorder = disorder;
  return d;
}

window_config tumbling(int64_t size) {
  window_config w;
  w.kind = window_kind::tumbling;
  w.size = size;
  w.slide = size;
  return w;
}

window_config sliding(int64_t size, int64_t slide) {
  window_config w;
  w.kind = window_kind::sliding;
  w.size = size;
  w.slide = slide;
  return w;
}

} // namespace

TEST_CASE("custom aggregates over tumbling windows equal a brute-force computation") {
  auto rs = make_records(1, 3000, 600 * us_per_s, 20 * us_per_s);
  auto d = make_driver(tumbling(60 * us_per_s), 20 * us_per_s);
  d.run(rs);
  check_against(d.results, reference_fixed(d.cfg.window, rs));
}

TEST_CASE("custom aggregates over sliding windows merge their slices oldest first") {
  // Windows of 60 s every 15 s: four slices each.
  auto rs = make_records(2, 3000, 600 * us_per_s, 20 * us_per_s);
  auto d = make_driver(sliding(60 * us_per_s, 15 * us_per_s), 20 * us_per_s);
  d.run(rs);
  auto want = reference_fixed(d.cfg.window, rs);
  check_against(d.results, want);
  // Several slices per window were merged: the windows outnumber the slices' tumbling windows.
  CHECK(want.size() > 3 * 600 / 60);
}

TEST_CASE("custom aggregates over sessions that merge") {
  // Sparse records (gaps often larger than the session gap) that arrive out of order, so that
  // a late-coming record bridges two sessions of its key. The watermark trails by the disorder
  // and windows fire 1 us after their end, so no record comes after its session fired.
  auto rs = make_records(3, 1500, 6000 * us_per_s, 40 * us_per_s);
  window_config w;
  w.kind = window_kind::session;
  w.gap = 10 * us_per_s;
  w.allowed_lateness = 1;
  auto d = make_driver(w, 40 * us_per_s);
  d.run(rs);
  auto want = reference_sessions(w.gap, rs);
  check_against(d.results, want);
  // Sessions of several records (merged ones among them) were formed.
  size_t multi = 0;
  for (const auto& [id, v] : want)
    multi += v[2] > 1 ? 1 : 0;
  CHECK(multi > 20);
}

TEST_CASE("custom aggregates are re-emitted with late = update") {
  auto w = sliding(60 * us_per_s, 20 * us_per_s);
  w.late = late_policy::update;
  w.update_horizon = 100000 * us_per_s;
  auto d = make_driver(w, 0);
  // In-order records, then late ones for windows that have fired already.
  auto rs = make_records(4, 1500, 600 * us_per_s, 0);
  auto late = make_records(5, 300, 500 * us_per_s, 0);
  auto all = rs;
  all.insert(all.end(), late.begin(), late.end());
  d.run(all);
  check_against(d.results, reference_fixed(w, all));
  size_t updates = 0;
  for (const auto& r : d.results)
    updates += r.version > 1 ? 1 : 0;
  CHECK(updates > 20);
}

TEST_CASE("a restore from the stored rows mid-run gives the results of an uninterrupted run") {
  auto rs = make_records(6, 2000, 400 * us_per_s, 15 * us_per_s);
  window_config session;
  session.kind = window_kind::session;
  session.gap = 3 * us_per_s;
  session.allowed_lateness = 1;
  auto update = sliding(40 * us_per_s, 10 * us_per_s);
  update.late = late_policy::update;
  update.update_horizon = 1000 * us_per_s;
  for (const auto& w :
       {tumbling(30 * us_per_s), sliding(40 * us_per_s, 10 * us_per_s), session, update}) {
    auto plain = make_driver(w, 15 * us_per_s);
    plain.run(rs);
    for (size_t at : {size_t{3}, size_t{60}, size_t{110}}) {
      auto restarted = make_driver(w, 15 * us_per_s);
      restarted.run(rs, at);
      INFO("window kind " << static_cast<int>(w.kind) << ", restart after batch " << at);
      CHECK(same_results(plain.results, restarted.results));
    }
  }
}

TEST_CASE("custom aggregate state that its deserialize refuses is corrupt") {
  pipeline_config cfg;
  cfg.window = tumbling(60 * us_per_s);
  cfg.aggregates = {custom("tagged", std::make_shared<tagged_sum>())};
  window_operator op{cfg};
  auto rs = make_records(7, 50, 100 * us_per_s, 0);
  event_columns c;
  for (const auto& r : rs) {
    c.time.push_back(r.t);
    c.wm_before.push_back(min_timestamp);
    c.key_hash.push_back(std::hash<std::string>{}(r.key));
    c.key_bytes += r.key;
    c.key_end.push_back(static_cast<uint32_t>(c.key_bytes.size()));
    c.values.push_back(r.v);
  }
  op.process(view_of(c, 1, 0));
  state_delta delta;
  op.checkpoint(delta);
  std::vector<std::pair<std::string, std::string>> rows;
  for_each_row(delta.puts, [&](std::string_view k, std::string_view v) {
    rows.emplace_back(std::string{k}, std::string{v});
  });
  REQUIRE(rows.size() >= 3);
  auto restore = [&](const std::vector<std::pair<std::string, std::string>>& with) {
    window_operator fresh{cfg};
    if (auto err = fresh.restore_begin(delta.meta))
      return err;
    for (const auto& [k, v] : with)
      if (auto err = fresh.restore_row(k, v))
        return err;
    return fresh.restore_end();
  };
  REQUIRE(!restore(rows));
  SECTION("a tag its deserialize does not know") {
    // The row ends with the accumulator's bytes: 'S' and the double.
    auto& v = rows[1].second;
    REQUIRE(v[v.size() - 9] == 'S');
    v[v.size() - 9] = 'X';
  }
  SECTION("bytes cut short") {
    auto& v = rows[1].second;
    v.resize(v.size() - 3);
  }
  auto err = restore(rows);
  REQUIRE(err);
  CHECK(err.code() == static_cast<uint8_t>(errc::store_corrupt));
}

TEST_CASE("the state of another custom aggregate or other options is refused") {
  auto d = make_driver(tumbling(60 * us_per_s), 0);
  window_operator op{d.cfg};
  auto snap = op.snapshot();
  auto other = d.cfg;
  extension_options o{{{"alpha", "0.4"}}};
  other.aggregates[1] =
    custom("ewma", std::make_shared<aggregate_of<weir_test::ewma>>(o), o.values());
  window_operator changed{other};
  CHECK(changed.restore(snap).code() == static_cast<uint8_t>(errc::store_corrupt));
  other = d.cfg;
  other.aggregates[0].custom_name = "sum_sq2";
  window_operator renamed{other};
  CHECK(renamed.restore(snap).code() == static_cast<uint8_t>(errc::store_corrupt));
  window_operator same{d.cfg};
  CHECK(!same.restore(snap));
}
