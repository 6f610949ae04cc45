#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "actors/core/config.hpp"
#include "actors/core/error.hpp"
#include "actors/core/preprocessor.hpp"

using namespace weir;

namespace {

constexpr int64_t ooo = 10 * us_per_s;
constexpr int64_t size = 60 * us_per_s;

/// Sources "a", "b", "c" (lake ids 10, 11, 12): csv lines `ts,k`, epoch seconds; tumbling
/// 60 s windows, out_of_orderness 10 s, no allowed lateness; late records are dead letters.
pipeline_config config(std::vector<int64_t> idle) {
  pipeline_config p;
  p.name = "w";
  for (size_t i = 0; i < idle.size(); ++i) {
    source_config s;
    s.name = std::string(1, static_cast<char>('a' + i));
    s.path = s.name + ".csv";
    s.header = false;
    s.columns = {"ts", "k"};
    s.idle_timeout = idle[i];
    p.sources.push_back(s);
  }
  p.fields.time = "ts";
  p.fields.time_fmt = time_format::epoch_s;
  p.fields.key = {"k"};
  p.window.kind = window_kind::tumbling;
  p.window.size = size;
  p.window.slide = size;
  p.window.out_of_orderness = ooo;
  aggregate_config a;
  a.fn = agg_fn::count;
  p.aggregates.push_back(a);
  return p;
}

std::unique_ptr<preprocessor> make(const pipeline_config& cfg) {
  auto pre = std::make_unique<preprocessor>(cfg, 1);
  for (size_t i = 0; i < cfg.sources.size(); ++i)
    pre->bind_source(static_cast<uint32_t>(10 + i), i);
  return pre;
}

/// One step of a schedule: a record of source `src` at `t` seconds, or a tick at `now` (us).
struct step {
  bool tick = false;
  size_t src = 0;
  int64_t t = 0;
  int64_t now = 0;
};

std::string line(int64_t t) {
  return std::to_string(t) + ",k\n";
}

/// What the engine did with each record: accepted or not, and the watermark it carried.
struct outcome {
  std::vector<bool> accepted;
  std::vector<int64_t> wm_before; ///< of accepted records, in order
  int64_t final_wm = min_timestamp;
};

outcome run_engine(const pipeline_config& cfg, const std::vector<step>& steps) {
  auto pre_p = make(cfg);
  auto& pre = *pre_p;
  outcome o;
  for (const auto& s : steps) {
    if (s.tick) {
      pre.tick(s.now);
      continue;
    }
    pre.process(static_cast<uint32_t>(10 + s.src), 0, line(s.t));
    bool ok = pre.partition(0).size() == 1;
    o.accepted.push_back(ok);
    if (ok)
      o.wm_before.push_back(pre.partition(0).wm_before[0]);
    pre.clear_outputs();
  }
  o.final_wm = pre.watermark();
  return o;
}

/// The definition, recomputed from the whole history at every step: source s is idle after
/// step j when some tick k <= j (not the first) finds it silent for its timeout, measured from
/// the last tick before k that followed a line of s (or from the first tick), and s has no line
/// between k and j. W after step j is the max over steps i <= j of (min over the sources not
/// idle after i of their largest accepted event time) - ooo; a source without accepted records
/// holds it; with no source counting that step adds nothing.
outcome run_reference(const std::vector<int64_t>& idle, const std::vector<step>& steps) {
  const size_t ns = idle.size();
  std::vector<bool> accepted(steps.size(), false);
  std::vector<size_t> ticks;
  for (size_t k = 0; k < steps.size(); ++k)
    if (steps[k].tick)
      ticks.push_back(k);
  auto line_between = [&](size_t s, size_t from, size_t to) { // steps (from, to)
    for (size_t x = from + 1; x < to; ++x)
      if (!steps[x].tick && steps[x].src == s)
        return true;
    return false;
  };
  // Tick ticks[i] (i >= 1) makes s idle: its clock started at the latest tick ticks[c] <= it
  // that had a line of s since the tick before (or at the first tick), and has run out.
  auto makes_idle = [&](size_t s, size_t i) {
    size_t c = i;
    while (c > 0 && !line_between(s, ticks[c - 1], ticks[c]))
      --c;
    return c < i && steps[ticks[i]].now - steps[ticks[c]].now >= idle[s];
  };
  auto idle_after = [&](size_t s, size_t j) {
    if (idle[s] <= 0)
      return false;
    for (size_t i = 1; i < ticks.size() && ticks[i] <= j; ++i)
      if (makes_idle(s, i) && !line_between(s, ticks[i], j + 1))
        return true;
    return false;
  };
  auto wm_after = [&](size_t j) { // j: number of steps done
    int64_t w = min_timestamp;
    for (size_t i = 0; i < j; ++i) {
      int64_t low = max_timestamp;
      bool any = false;
      for (size_t s = 0; s < ns; ++s) {
        if (idle_after(s, i))
          continue;
        any = true;
        int64_t mx = min_timestamp;
        for (size_t x = 0; x <= i; ++x)
          if (!steps[x].tick && steps[x].src == s && accepted[x])
            mx = std::max(mx, steps[x].t * us_per_s);
        low = std::min(low, mx);
      }
      if (any && low != min_timestamp)
        w = std::max(w, low - ooo);
    }
    return w;
  };
  outcome o;
  for (size_t j = 0; j < steps.size(); ++j) {
    if (steps[j].tick)
      continue;
    int64_t w = wm_after(j);
    int64_t t = steps[j].t * us_per_s;
    int64_t end = (t >= 0 ? t / size : (t - size + 1) / size) * size + size;
    accepted[j] = w == min_timestamp || w < end;
    o.accepted.push_back(accepted[j]);
    if (accepted[j])
      o.wm_before.push_back(w);
  }
  o.final_wm = wm_after(steps.size());
  return o;
}

} // namespace

TEST_CASE("watermark: min over sources and idle sources match the definition") {
  std::mt19937_64 rng{20261128};
  for (int round = 0; round < 150; ++round) {
    const size_t ns = 1 + rng() % 3;
    std::vector<int64_t> idle(ns, 0);
    for (auto& x : idle)
      x = rng() % 2 ? 0 : static_cast<int64_t>(1 + rng() % 4) * us_per_s;
    std::vector<int64_t> clock(ns, static_cast<int64_t>(rng() % 100));
    std::vector<step> steps;
    int64_t now = 0;
    const size_t n = 20 + rng() % 40;
    for (size_t i = 0; i < n; ++i) {
      if (rng() % 4 == 0) {
        now += static_cast<int64_t>(rng() % 3) * us_per_s;
        steps.push_back({true, 0, 0, now});
        continue;
      }
      // Bursts from one source, sources apart in time: interleavings that make records late.
      size_t s = rng() % 5 == 0 ? rng() % ns : (steps.empty() ? 0 : steps.back().src % ns);
      clock[s] += static_cast<int64_t>(rng() % 40) - 8;
      steps.push_back({false, s, clock[s], 0});
    }
    auto cfg = config(idle);
    auto want = run_reference(idle, steps);
    auto got = run_engine(cfg, steps);
    INFO("round " << round);
    REQUIRE(got.accepted == want.accepted);
    REQUIRE(got.wm_before == want.wm_before);
    REQUIRE(got.final_wm == want.final_wm);
  }
}

TEST_CASE("watermark: a source without records holds it; sources are read one after another") {
  auto cfg = config({0, 0});
  auto pre_p = make(cfg);
  auto& pre = *pre_p;
  // Host a's hour first, then host b's same hour: nothing of b is late.
  for (int64_t t = 0; t < 3600; t += 60)
    pre.process(10, 0, line(t));
  CHECK(pre.watermark() == min_timestamp);
  for (int64_t t = 30; t < 3600; t += 60)
    pre.process(11, 0, line(t));
  CHECK(pre.dead_letters().empty());
  CHECK(pre.partition(0).size() == 120);
  CHECK(pre.watermark() == 3540 * us_per_s - ooo); // min(3540 s, 3570 s) - 10 s
  auto sw = pre.source_watermarks();
  REQUIRE(sw.size() == 2);
  CHECK(sw[0].name == "a");
  CHECK(sw[0].max_time == 3540 * us_per_s);
  CHECK(sw[1].max_time == 3570 * us_per_s);
}

TEST_CASE("watermark: an idle source stops holding it back and counts again when it moves") {
  auto cfg = config({0, 30 * us_per_s});
  auto pre_p = make(cfg);
  auto& pre = *pre_p;
  pre.tick(0);
  pre.process(10, 0, line(1000));
  pre.tick(29 * us_per_s);
  CHECK(pre.watermark() == min_timestamp); // b has had nothing, and not for 30 s yet
  pre.tick(30 * us_per_s);
  CHECK(pre.source_watermarks()[1].idle);
  CHECK(pre.watermark() == 1000 * us_per_s - ooo);
  pre.process(10, 0, line(2000));
  CHECK(pre.watermark() == 2000 * us_per_s - ooo);
  // b moves: it counts again; the watermark does not go back, b's old record is late.
  pre.process(11, 0, line(100) + line(1995));
  CHECK_FALSE(pre.source_watermarks()[1].idle);
  CHECK(pre.dead_letters().size() == 1);
  CHECK(pre.watermark() == 2000 * us_per_s - ooo);
  pre.process(10, 0, line(3000));
  CHECK(pre.watermark() == 2000 * us_per_s - ooo); // min(3000 s, 1995 s) - 10 s is lower
  pre.process(11, 0, line(2500));
  CHECK(pre.watermark() == 2500 * us_per_s - ooo);
  // With no tick at all (the default of bounded sources) nothing is ever idle.
  auto quiet_p = make(config({30 * us_per_s, 30 * us_per_s}));
  auto& quiet = *quiet_p;
  quiet.process(10, 0, line(1000));
  CHECK(quiet.watermark() == min_timestamp);
}

TEST_CASE("watermark: snapshots keep each source's event time; older snapshots still read") {
  auto cfg = config({0, 0});
  auto pre_p = make(cfg);
  auto& pre = *pre_p;
  pre.process(10, 0, line(1000));
  pre.process(11, 0, line(500));
  auto snap = pre.snapshot();
  CHECK(snap.substr(0, 4) == "WPP3");
  auto back_p = make(cfg);
  auto& back = *back_p;
  REQUIRE_FALSE(back.restore_snapshot(snap));
  CHECK(back.watermark() == pre.watermark());
  // b is still the slowest after the restore: a's progress alone does not move W.
  back.process(10, 0, line(2000));
  CHECK(back.watermark() == 500 * us_per_s - ooo);
  back.process(11, 0, line(1500));
  CHECK(back.watermark() == 1500 * us_per_s - ooo);
  // A source the snapshot does not know has had no records.
  auto more = config({0, 0, 0});
  auto grown_p = make(more);
  auto& grown = *grown_p;
  REQUIRE_FALSE(grown.restore_snapshot(snap));
  grown.process(10, 0, line(3000));
  grown.process(11, 0, line(3000));
  CHECK(grown.watermark() == pre.watermark());
  // "WPP2" (before per-source watermarks): every source stands at the old watermark.
  std::string old = "WPP2";
  auto put = [&](uint64_t x, int n) {
    for (int i = 0; i < n; ++i)
      old.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
  };
  put(static_cast<uint64_t>(700 * us_per_s), 8);
  for (int i = 0; i < 7; ++i)
    put(static_cast<uint64_t>(i), 8);
  put(0, 4);
  auto legacy_p = make(cfg);
  auto& legacy = *legacy_p;
  REQUIRE_FALSE(legacy.restore_snapshot(old));
  CHECK(legacy.counters().accepted == 1);
  CHECK(legacy.source_watermarks()[0].max_time == 700 * us_per_s + ooo);
  legacy.process(10, 0, line(2000));
  CHECK(legacy.watermark() == 700 * us_per_s);
  legacy.process(11, 0, line(900));
  CHECK(legacy.watermark() == 900 * us_per_s - ooo);
}

TEST_CASE("watermark: idle_timeout is off for bounded sources and 30 s for followed ones") {
  auto text = [](const std::string& extra) {
    return "[[pipeline]]\nname = \"p\"\n"
           "[[pipeline.source]]\nname = \"a\"\npath = \"a.csv\"\n"
           "[[pipeline.source]]\nname = \"b\"\npath = \"b.csv\"\nfollow = true\n"
           "[[pipeline.source]]\nname = \"c\"\npath = \"c.csv\"\n" +
           extra +
           "[pipeline.fields]\ntime = \"ts\"\nkey = \"k\"\n"
           "[pipeline.window]\nkind = \"tumbling\"\nsize = \"1h\"\n"
           "[[pipeline.aggregate]]\nfn = \"count\"\n";
  };
  auto cfg = parse_config(text("idle_timeout = \"5s\"\n"), "w.toml");
  REQUIRE(cfg);
  const auto& src = cfg->pipelines[0].sources;
  CHECK(src[0].idle_timeout == 0);
  CHECK(src[1].idle_timeout == 30 * us_per_s);
  CHECK(src[2].idle_timeout == 5 * us_per_s);
  auto bad = parse_config(text("idle_timeout = \"soon\"\n"), "w.toml");
  REQUIRE_FALSE(bad);
  CHECK(render(bad.error()).find("idle_timeout") != std::string::npos);
}
