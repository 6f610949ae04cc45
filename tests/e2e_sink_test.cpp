// Sinks end to end through the `weir` binary with the test plugin (tests/plugins/sinks.cpp):
// its "file" sink must end up holding every committed row exactly once, equal to the store's
// results and to a brute-force reference computed here; a delivery that throws is retried; a
// crash between a delivery and its cursor is redelivered and deduplicated by the epoch; bad sink
// settings fail the config naming line and key.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "actors/runtime.hpp"
#include "actors/sink_driver.hpp"
#include "store/warehouse.hpp"
#include "tests/test_support.hpp"

namespace {

using weir::test::temp_dir;
using weir::test::write_file;

const std::string weir_bin = WEIR_BINARY;
const std::string plugin = WEIR_SINK_PLUGIN;

weir::test::command_result run(const std::string& cmd) {
  return weir::test::sh("timeout 120 " + cmd);
}

/// One result row as compared: pipeline, start, end, key (display form), values as text.
using row = std::tuple<std::string, int64_t, int64_t, std::string, std::vector<double>>;

/// The sink's file: the epoch it records and its rows, sorted.
struct sink_file {
  uint64_t epoch = 0;
  std::vector<row> rows;
};

sink_file read_sink(const std::filesystem::path& p) {
  sink_file out;
  std::istringstream in{weir::test::read_text(p)};
  std::string line;
  if (std::getline(in, line) && line.rfind("epoch ", 0) == 0)
    out.epoch = std::stoull(line.substr(6));
  while (std::getline(in, line)) {
    auto f = weir::test::split(line, ' ');
    REQUIRE(f.size() >= 4);
    row r{f[0], std::stoll(f[1]), std::stoll(f[2]), f[3], {}};
    for (size_t i = 4; i < f.size(); ++i)
      std::get<4>(r).push_back(std::stod(f[i]));
    out.rows.push_back(std::move(r));
  }
  std::sort(out.rows.begin(), out.rows.end());
  return out;
}

/// Everything the store holds for pipeline p, as rows.
std::vector<row> store_rows(const std::string& store, const std::string& p) {
  auto a = weir::query_store(store, p, "", std::nullopt, std::nullopt);
  REQUIRE(a);
  std::vector<row> out;
  for (const auto& r : a->rows)
    out.emplace_back(p, r.start, r.end, weir::display_key(r.key), r.values);
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t last_epoch(const std::string& store, const std::string& p) {
  auto wh = weir::warehouse::open(store);
  REQUIRE(wh);
  auto e = wh->last_epoch(p);
  REQUIRE(e);
  return *e;
}

/// In-order events of 7 keys of two fields over `minutes`, whole amounts (exact sums); the
/// reference is count and sum per (1 minute window, key).
struct input {
  std::string csv = "ts,k,j,amount\n";
  std::vector<row> reference;
};

input make_input(int n, const std::string& pipeline) {
  input in;
  std::map<std::tuple<int64_t, int64_t, std::string>, std::pair<double, double>> acc;
  const int64_t base = 1717200000;
  for (int i = 0; i < n; ++i) {
    const int64_t t = base + i;
    const std::string k = "k" + std::to_string(i % 7);
    const std::string j = "j" + std::to_string(i % 2);
    const double amount = (i * 37) % 101;
    in.csv += weir::test::iso(t) + "," + k + "," + j + "," + std::to_string(int(amount)) + "\n";
    const int64_t start = (t - t % 60) * 1000000;
    auto& a = acc[{start, start + 60000000, k + "|" + j}];
    a.first += 1;
    a.second += amount;
  }
  for (const auto& [w, a] : acc)
    in.reference.emplace_back(pipeline, std::get<0>(w), std::get<1>(w), std::get<2>(w),
                              std::vector<double>{a.first, a.second});
  std::sort(in.reference.begin(), in.reference.end());
  return in;
}

/// A config of pipeline "p" over `input` with the given [[pipeline.sink]] text; small epochs.
std::string config(const std::string& input, const std::string& sinks,
                   const std::string& extra = "") {
  std::ostringstream c;
  c << "plugins = [\"" << plugin << "\"]\nstore = \"store\"\ncommit_interval = \"20ms\"\n"
    << "batch_bytes = 2048\nmax_epoch_bytes = 4096\nrestart_backoff = \"20ms\"\n"
    << "restart_backoff_max = \"100ms\"\n\n"
    << "[[pipeline]]\nname = \"p\"\npartitions = 2\n\n"
    << "  [[pipeline.source]]\n  name = \"in\"\n  path = \"" << input << "\"\n\n"
    << "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\", \"j\"]\n  measures = [\"amount\"]\n\n"
    << "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1m\"\n\n"
    << "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n"
    << extra << "\n"
    << sinks;
  return c.str();
}

std::string file_sink(const std::string& name, const std::string& path,
                      const std::string& more = "") {
  return "  [[pipeline.sink]]\n  name = \"" + name +
         "\"\n  kind = \"file\"\n  options = { path = \"" + path + "\"" + more + " }\n";
}

} // namespace

TEST_CASE("a file sink holds every committed row once: the store's results and a reference") {
  temp_dir dir;
  auto in = make_input(3000, "p");
  write_file(dir.path / "in.csv", in.csv);
  const auto out = (dir.path / "out.txt").string();
  const auto out2 = (dir.path / "out2.txt").string();
  write_file(dir.path / "w.toml",
             config((dir.path / "in.csv").string(), file_sink("a", out) + file_sink("b", out2)));
  auto r = run(weir_bin + " run --final " + (dir.path / "w.toml").string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const auto store = (dir.path / "store").string();
  const auto last = last_epoch(store, "p");
  CHECK(last > 3); // several epochs were delivered
  for (const auto& path : {out, out2}) {
    auto got = read_sink(path);
    CHECK(got.epoch == last);
    CHECK(got.rows == in.reference);
    CHECK(got.rows == store_rows(store, "p"));
  }
  // A second run has nothing new: the files stay as they are.
  auto again = run(weir_bin + " run --final " + (dir.path / "w.toml").string());
  INFO(again.out);
  REQUIRE(again.rc == 0);
  CHECK(read_sink(out).rows == in.reference);
}

TEST_CASE("a sink whose delivery throws is retried until it takes the epoch") {
  temp_dir dir;
  auto in = make_input(2000, "p");
  write_file(dir.path / "in.csv", in.csv);
  const auto out = (dir.path / "out.txt").string();
  write_file(dir.path / "w.toml", config((dir.path / "in.csv").string(),
                                         file_sink("a", out, ", fail_epoch = 2, fail_times = 3")));
  auto r = run(weir_bin + " run --final " + (dir.path / "w.toml").string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("planned failure at epoch 2; retrying") != std::string::npos);
  auto got = read_sink(out);
  CHECK(got.epoch == last_epoch((dir.path / "store").string(), "p"));
  CHECK(got.rows == in.reference);
}

TEST_CASE("a crash between a delivery and its cursor delivers the epoch again, applied once") {
  temp_dir dir;
  auto in = make_input(4000, "p");
  write_file(dir.path / "in.csv", in.csv);
  const auto out = (dir.path / "out.txt").string();
  const auto cfg = (dir.path / "w.toml").string();
  write_file(cfg, config((dir.path / "in.csv").string(), file_sink("a", out)));
  auto crashed = run("env WEIR_FAULT=sink.delivered@3 " + weir_bin + " run --final " + cfg);
  INFO(crashed.out);
  REQUIRE(crashed.rc != 0);
  REQUIRE(crashed.out.find("injected fault at sink.delivered") != std::string::npos);
  // The sink applied epoch 3; the store's cursor says 2.
  CHECK(read_sink(out).epoch == 3);
  auto r = run(weir_bin + " run --final " + cfg);
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto got = read_sink(out);
  CHECK(got.epoch == last_epoch((dir.path / "store").string(), "p"));
  CHECK(got.rows == in.reference);
  CHECK(got.rows == store_rows((dir.path / "store").string(), "p"));
}

TEST_CASE("sink settings the config cannot take fail it naming line and key") {
  temp_dir dir;
  write_file(dir.path / "in.csv", make_input(10, "p").csv);
  const auto in = (dir.path / "in.csv").string();
  const auto cfg = (dir.path / "w.toml").string();
  auto check = [&](const std::string& sinks, const std::string& where, const std::string& what) {
    write_file(cfg, config(in, sinks));
    auto r = run(weir_bin + " run " + cfg);
    INFO(r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.find(where) != std::string::npos);
    CHECK(r.out.find(what) != std::string::npos);
    CHECK(!std::filesystem::exists(dir.path / "store"));
  };
  // The sinks start at line 32 of the config.
  check("  [[pipeline.sink]]\n  name = \"a\"\n  kind = \"kafka\"\n",
        "w.toml:34: pipeline[0].sink[0].kind",
        "\"kafka\" is not a registered sink (registered: discard, file)");
  check(file_sink("a", "x") + file_sink("a", "y"), "w.toml:37: pipeline[0].sink[1].name",
        "duplicate sink name \"a\"");
  check(file_sink("a", "x", ", fail_epoch = \"soon\""),
        "w.toml:35: pipeline[0].sink[0].options.fail_epoch", "must be a whole number");
  check("  [[pipeline.sink]]\n  name = \"a\"\n  kind = \"file\"\n",
        "pipeline[0].sink[0].options.path", "needs the path of its file");
  check(file_sink("a b", "x"), "w.toml:33: pipeline[0].sink[0].name", "[A-Za-z0-9_.-]+");
  // Without exactly-once there is no change feed to deliver from.
  write_file(cfg, config(in, file_sink("a", (dir.path / "o").string())));
  auto r = run(weir_bin + " run --no-exactly-once " + cfg);
  INFO(r.out);
  CHECK(r.rc == 2);
  CHECK(r.out.find("only an exactly-once run keeps") != std::string::npos);
  // A dry run delivers to no sink.
  auto dry = run(weir_bin + " run --dry-run " + cfg);
  INFO(dry.out);
  CHECK(dry.rc == 0);
  CHECK(!std::filesystem::exists(dir.path / "o"));
}
