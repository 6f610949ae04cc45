// End to end through the `weir` binary with the test plugin (tests/plugins/stages.cpp) loaded
// by the config: stages scale a measure, drop records and fill a field of their own before the
// window aggregates; the results equal a brute-force computation over the CSV read back here,
// the dropped records count as filtered, bad stage settings fail the config (exit 2, naming
// line and key), a kill -9 mid-run and a rerun give the same results, and a stage that throws
// on a record makes it a poison record.

#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <regex>

#include "actors/runtime.hpp"
#include "store/warehouse.hpp"
#include "tests/e2e_source_support.hpp"

using namespace weir::test;

namespace {

const std::string plugin = WEIR_STAGE_PLUGIN;

/// ts,k,v,w: v and w small integers (sums stay exact), w empty every 17th line.
std::string make_input(int64_t lines) {
  std::string text = "ts,k,v,w\n";
  for (int64_t n = 0; n < lines; ++n) {
    std::string w = n % 17 == 5 ? "" : std::to_string(n * 7 % 10);
    text += iso(event_base + n / 3) + ",k" + std::to_string(n % 4) + "," + std::to_string(n % 50) +
            "," + w + "\n";
  }
  return text;
}

/// The config head and pipeline "p" with the stages `stages` (TOML) and the aggregates count,
/// sum(v), sum(vw), max(w).
std::string stage_config(const std::string& stages, const std::string& extra_root = "") {
  std::ostringstream c;
  c << "plugins = [\"" << plugin << "\"]\n"
    << "store = \"store\"\ncommit_interval = \"20ms\"\nbatch_bytes = 4096\n"
    << extra_root << "\n[[pipeline]]\nname = \"p\"\npartitions = 3\n\n"
    << "  [[pipeline.source]]\n  name = \"in\"\n  path = \"in.csv\"\n\n"
    << "  [pipeline.fields]\n  time = \"ts\"\n  key = \"k\"\n  measures = [\"v\", \"w\"]\n\n"
    << "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"10s\"\n\n"
    << stages << "\n"
    << "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"v\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"vw\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"max\"\n  field = \"w\"\n";
  return c.str();
}

/// v *= 3; drop w > 6; vw = v * w.
const std::string three_stages =
  "  [[pipeline.stage]]\n  kind = \"scale\"\n  options = { field = \"v\", factor = 3 }\n\n"
  "  [[pipeline.stage]]\n  kind = \"drop_above\"\n  options = { field = \"w\", threshold = 6 }\n\n"
  "  [[pipeline.stage]]\n  kind = \"enrich\"\n  options = { a = \"v\", b = \"w\", into = \"vw\" }\n"
  "  outputs = [\"vw\"]\n";

/// (window start, key) -> "count,sum_v,sum_vw,max_w" with numbers as integers ("" for none).
using results = std::map<std::pair<std::string, std::string>, std::string>;

std::string num(double x) {
  if (std::isnan(x))
    return "";
  return std::to_string(static_cast<long long>(std::llround(x)));
}

/// The brute-force reference over the csv text: the stages applied by hand. `skip_v`: lines
/// whose v has this value are left out (a poison record), -1 for none.
results reference(const std::string& text, uint64_t& dropped, int skip_v = -1) {
  struct acc {
    int64_t count = 0;
    double v = 0;
    double vw = NAN;
    double w = NAN;
  };
  std::map<std::pair<std::string, std::string>, acc> m;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line); // header
  dropped = 0;
  while (std::getline(in, line)) {
    auto f = split(line, ',');
    f.resize(4);
    double v = std::stod(f[2]);
    if (static_cast<int>(v) == skip_v)
      continue;
    double w = f[3].empty() ? NAN : std::stod(f[3]);
    v *= 3;
    if (w > 6) {
      ++dropped;
      continue;
    }
    double vw = v * w;
    // The window start of an ISO time of whole seconds: its seconds rounded down to 10.
    auto start = f[0];
    start[18] = '0';
    auto& a = m[{start, f[1]}];
    ++a.count;
    a.v += v;
    if (!std::isnan(vw))
      a.vw = std::isnan(a.vw) ? vw : a.vw + vw;
    if (!std::isnan(w))
      a.w = std::isnan(a.w) ? w : std::max(a.w, w);
  }
  results out;
  for (auto& [k, a] : m)
    out[k] = std::to_string(a.count) + "," + num(a.v) + "," + num(a.vw) + "," + num(a.w);
  return out;
}

/// What the store committed: window_start,window_end,key,count,sum_v,sum_vw,max_w,version.
results committed(const fs::path& store) {
  auto r = weir_cmd("query --store " + quoted(store) + " --pipeline p --format csv");
  results out;
  std::istringstream in(r.out);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    auto f = split(line, ',');
    if (f.size() < 7)
      continue;
    auto n = [](const std::string& s) { return s.empty() ? NAN : std::stod(s); };
    out[{f[0], f[2]}] = f[3] + "," + num(n(f[4])) + "," + num(n(f[5])) + "," + num(n(f[6]));
  }
  return out;
}

/// The number after "  NAME" in `weir run`'s summary.
uint64_t summary_count(const std::string& out, const std::string& name) {
  std::smatch m;
  std::regex re("\\n  " + name + " +([0-9]+)\\n");
  REQUIRE(std::regex_search(out, m, re));
  return std::stoull(m[1]);
}

/// The pipeline's counters as committed in the store (over all runs).
weir::preprocess_counters store_counters(const fs::path& store) {
  auto wh = weir::warehouse::open(store.string());
  REQUIRE(wh);
  auto st = weir::committed_status_of(*wh, "p");
  REQUIRE(st);
  return st->counters;
}

/// The line (1-based) of the first occurrence of `needle` in `text`.
size_t line_of(const std::string& text, const std::string& needle) {
  auto pos = text.find(needle);
  REQUIRE(pos != std::string::npos);
  return 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + pos, '\n'));
}

} // namespace

TEST_CASE("stage: weir run with plugin stages equals the brute-force results", "[e2e][stage]") {
  temp_dir dir;
  auto text = make_input(3000);
  write_file(dir.path / "in.csv", text);
  write_file(dir.path / "p.toml", stage_config(three_stages));
  auto r = weir_cmd("run --final " + quoted(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  uint64_t dropped = 0;
  auto want = reference(text, dropped);
  REQUIRE(dropped > 500);
  CHECK(table_diff(committed(dir.path / "store"), want) == "");
  CHECK(summary_count(r.out, "events read") == 3000);
  CHECK(summary_count(r.out, "filtered") == dropped);
  CHECK(summary_count(r.out, "accepted") == 3000 - dropped);
  CHECK(store_counters(dir.path / "store").filtered == dropped);
}

TEST_CASE("stage: a pass-through stage changes nothing", "[e2e][stage]") {
  temp_dir dir;
  auto text = make_input(500);
  write_file(dir.path / "in.csv", text);
  // Without the drop and the scale: the pass stage, and enrich for vw.
  write_file(dir.path / "p.toml",
             stage_config("  [[pipeline.stage]]\n  kind = \"pass\"\n\n"
                          "  [[pipeline.stage]]\n  kind = \"enrich\"\n"
                          "  options = { a = \"v\", b = \"w\", into = \"vw\" }\n"
                          "  outputs = [\"vw\"]\n"));
  auto r = weir_cmd("run --final " + quoted(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  // The reference with factor 1 and no threshold: scale and drop undone on the input.
  std::string unscaled = "ts,k,v,w\n";
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  results want;
  {
    std::map<std::pair<std::string, std::string>, std::tuple<int64_t, double, double, double>> m;
    while (std::getline(in, line)) {
      auto f = split(line, ',');
      f.resize(4);
      double v = std::stod(f[2]);
      double w = f[3].empty() ? NAN : std::stod(f[3]);
      auto start = f[0];
      start[18] = '0';
      auto& [c, sv, svw, mw] = m.try_emplace({start, f[1]}, 0, 0.0, NAN, NAN).first->second;
      ++c;
      sv += v;
      if (!std::isnan(w)) {
        svw = std::isnan(svw) ? v * w : svw + v * w;
        mw = std::isnan(mw) ? w : std::max(mw, w);
      }
    }
    for (auto& [k, a] : m)
      want[k] = std::to_string(std::get<0>(a)) + "," + num(std::get<1>(a)) + "," +
                num(std::get<2>(a)) + "," + num(std::get<3>(a));
  }
  CHECK(table_diff(committed(dir.path / "store"), want) == "");
  CHECK(summary_count(r.out, "filtered") == 0);
}

TEST_CASE("stage: bad stage settings fail the config naming line and key", "[e2e][stage]") {
  temp_dir dir;
  write_file(dir.path / "in.csv", make_input(10));
  struct bad {
    std::string stages;
    std::string at;   ///< text on the line the error names
    std::string says; ///< in the message
  };
  const std::vector<bad> cases{
    {"  [[pipeline.stage]]\n  kind = \"nope\"\n", "kind = \"nope\"",
     "pipeline[0].stage[0].kind: \"nope\" is not a registered stage (registered: drop_above, "
     "enrich, fail_on, pass, scale)"},
    {three_stages + "\n  [[pipeline.stage]]\n  kind = \"pass\"\n  outputs = [\"w\"]\n",
     "outputs = [\"w\"]", "pipeline[0].stage[3].outputs[0]: field \"w\" already exists"},
    {"  [[pipeline.stage]]\n  kind = \"scale\"\n  options = { field = \"v\", factor = \"lots\" }\n",
     "options = { field = \"v\", factor = \"lots\" }",
     "pipeline[0].stage[0].options.factor: expected a number, got \"lots\""},
    {"  [[pipeline.stage]]\n  kind = \"scale\"\n  options = { field = \"nah\", factor = 2 }\n",
     "options = { field = \"nah\"",
     "pipeline[0].stage[0].options.field: \"nah\" is not a numeric "
     "field of pipeline p"},
    {"  [[pipeline.stage]]\n  kind = \"pass\"\n  colour = \"red\"\n", "colour",
     "pipeline[0].stage[0].colour"},
  };
  for (const auto& c : cases) {
    // The aggregate over vw needs enrich's output: these configs aggregate sum(v) only.
    auto cfg = stage_config(c.stages);
    auto vw = cfg.find("  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"vw\"\n");
    if (c.stages.find("into = \"vw\"") == std::string::npos)
      cfg.erase(vw,
                std::string{"  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"vw\"\n"}.size());
    write_file(dir.path / "p.toml", cfg);
    auto r = weir_cmd("run " + quoted(dir.path / "p.toml"));
    INFO(cfg);
    INFO(r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.find("p.toml:" + std::to_string(line_of(cfg, c.at)) + ": " + c.says) !=
          std::string::npos);
  }
}

TEST_CASE("stage: killed with SIGKILL mid-run, the rerun's results and counts are exact",
          "[e2e][stage]") {
  temp_dir dir;
  auto text = make_input(30000);
  write_file(dir.path / "in.csv", text);
  write_file(dir.path / "p.toml", stage_config(three_stages, "commit_events = 500\n"));
  {
    weir_process run({"run", "--final", (dir.path / "p.toml").string()}, dir.path / "run1.log",
                     "epoch.after_commit@4");
    int rc = run.wait(60);
    INFO(run.log());
    REQUIRE(rc == 128 + SIGKILL);
  }
  auto r = weir_cmd("run --final " + quoted(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  uint64_t dropped = 0;
  auto want = reference(text, dropped);
  CHECK(table_diff(committed(dir.path / "store"), want) == "");
  // The counters are committed with each epoch: over both runs, each record once.
  auto k = store_counters(dir.path / "store");
  CHECK(k.read == 30000);
  CHECK(k.filtered == dropped);
  CHECK(k.accepted == 30000 - dropped);
  // The rerun counted only what the first run had not committed.
  CHECK(summary_count(r.out, "filtered") < dropped);
}

TEST_CASE("stage: a stage that throws on a record makes it a poison record", "[e2e][stage]") {
  temp_dir dir;
  auto text = make_input(400);
  write_file(dir.path / "in.csv", text);
  // fail_on throws for v = 37 (before scale: lines n % 50 == 37, 8 of them).
  write_file(dir.path / "p.toml",
             stage_config("  [[pipeline.stage]]\n  kind = \"fail_on\"\n"
                          "  options = { field = \"v\", value = 37 }\n\n" +
                            three_stages,
                          "restart_backoff = \"10ms\"\nrestart_budget = 100\n"));
  auto r = weir_cmd("run --final " + quoted(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  uint64_t dropped = 0;
  auto want = reference(text, dropped, 37);
  CHECK(table_diff(committed(dir.path / "store"), want) == "");
  auto dl = dead_letter_rows(dir.path / "store");
  REQUIRE(dl.size() == 8);
  for (const auto& d : dl) {
    REQUIRE(d.size() == 5);
    CHECK(d[3].find("stage fail_on: refused the value 37") != std::string::npos);
    CHECK(split(d[4], ',')[2] == "37");
  }
  CHECK(summary_count(r.out, "filtered") == dropped);
}
