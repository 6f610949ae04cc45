// End to end through the `weir` binary: ordinary use that must not lose data while looking
// like success. One writer per store, input that does not fit the config, config changes on an
// existing store, stdin without a format, output that round-trips, exit codes that tell the
// truth, bounds on sizes. Expected values are computed here from the raw input.

#include <catch2/catch.hpp>

#include "tests/background.hpp"
#include "tests/test_support.hpp"

#include <sys/stat.h>

#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace {

using weir::test::background;
using weir::test::command_result;
using weir::test::iso;
using weir::test::split;
using weir::test::temp_dir;
using weir::test::write_file;

const std::string weir_bin = WEIR_BINARY;

command_result weir_cmd(const std::string& args) {
  return weir::test::sh("timeout 60 " + weir_bin + " " + args);
}

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}

/// A pipeline `p`: hourly sum of `amount` per `key_field`, one source.
std::string config(const std::string& path, const std::string& key_field = "k",
                   const std::string& source_extra = "", const std::string& window = "",
                   const std::string& pre = "", const std::string& aggs = "") {
  std::ostringstream c;
  c << "store = \"store\"\ncommit_interval = \"20ms\"\n\n[[pipeline]]\nname = \"p\"\n"
    << "partitions = 2\n\n  [[pipeline.source]]\n  name = \"in\"\n  path = \"" << path << "\"\n"
    << source_extra << "\n  [pipeline.fields]\n  time = \"ts\"\n  key = [\"" << key_field
    << "\"]\n  measures = [\"amount\"]\n\n  [pipeline.window]\n"
    << (window.empty() ? "  kind = \"tumbling\"\n  size = \"1h\"\n" : window) << "\n"
    << (pre.empty() ? "" : "  [pipeline.preprocess]\n" + pre + "\n")
    << (aggs.empty() ? "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n" : aggs);
  return c.str();
}

/// csv rows "ts,k,amount" of `n` events over `hours` hours and `keys` keys.
std::string csv_rows(size_t n, int64_t t0, int hours, int keys, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    int64_t t = t0 + static_cast<int64_t>(i) * hours * 3600 / static_cast<int64_t>(n);
    out += iso(t) + ",k" + std::to_string(rng() % keys) + "," + std::to_string(rng() % 1000) + "." +
           std::to_string(rng() % 10) + "\n";
  }
  return out;
}

/// The brute-force hourly sums of csv rows (ts,k,amount), by (window start, key), summed in
/// file order (as one partition sums one key).
std::map<std::pair<std::string, std::string>, double> hourly_sums(const std::string& rows) {
  std::map<std::pair<std::string, std::string>, double> out;
  std::istringstream in{rows};
  for (std::string line; std::getline(in, line);) {
    auto f = split(line, ',');
    if (f.size() != 3 || f[0] == "ts")
      continue;
    auto hour = f[0].substr(0, 13) + ":00:00Z";
    out[{hour, f[1]}] += std::strtod(f[2].c_str(), nullptr);
  }
  return out;
}

const int64_t t0 = 1717200000; // 2024-06-01T00:00:00Z

/// The number after `name` on its line of `out` (a run summary or `weir inspect`), -1 if none.
long long value_after(const std::string& out, const std::string& name) {
  std::istringstream in{out};
  for (std::string line; std::getline(in, line);) {
    auto at = line.find_first_not_of(' ');
    if (at != std::string::npos && line.compare(at, name.size() + 1, name + " ") == 0)
      return std::stoll(line.substr(at + name.size()));
  }
  return -1;
}

} // namespace

TEST_CASE("one writer per store: a second run fails at once, readers go on, a killed "
          "writer's lock does not block",
          "[e2e][lock]") {
  temp_dir dir;
  write_file(dir.path / "in.csv", "ts,k,amount\n" + csv_rows(200, t0, 3, 4, 1));
  write_file(dir.path / "p.toml", config("in.csv", "k", "  follow = true\n"));
  background first({weir_bin, "run", (dir.path / "p.toml").string()}, dir.path / "first.log");
  REQUIRE(first.started());
  // Wait for its first commit, so that readers have something to read.
  bool committed = false;
  for (int i = 0; i < 300 && !committed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto r = weir_cmd("inspect --store " + q(dir.path / "store"));
    committed = r.rc == 0 && r.out.find("last committed epoch 0") == std::string::npos &&
                r.out.find("last committed epoch") != std::string::npos;
  }
  REQUIRE(committed);
  auto second = weir_cmd("run " + q(dir.path / "p.toml"));
  INFO(second.out);
  CHECK(second.rc == 4);
  CHECK(second.out.find("is in use by process " + std::to_string(first.pid())) !=
        std::string::npos);
  // Readers work beside the writer.
  CHECK(weir_cmd("query --store " + q(dir.path / "store") + " --pipeline p").rc == 0);
  CHECK(weir_cmd("inspect --store " + q(dir.path / "store")).rc == 0);
  CHECK(weir_cmd("dead-letters --store " + q(dir.path / "store")).rc == 0);
  // A writer killed with SIGKILL leaves its lock file behind, but not its lock.
  first.signal(SIGKILL);
  CHECK(first.wait(10) == 128 + SIGKILL);
  CHECK(fs::exists(dir.path / "store" / "LOCK"));
  write_file(dir.path / "q.toml", config("in.csv"));
  auto third = weir_cmd("run " + q(dir.path / "q.toml") + " --quiet --final");
  INFO(third.out);
  CHECK(third.rc == 0);
  // The store holds every window of the input once.
  auto out = weir_cmd("query --store " + q(dir.path / "store") + " --pipeline p --format csv");
  REQUIRE(out.rc == 0);
  auto want = hourly_sums(csv_rows(200, t0, 3, 4, 1));
  size_t rows = 0;
  std::istringstream in{out.out};
  for (std::string line; std::getline(in, line);) {
    auto f = split(line, ',');
    if (f.size() != 5 || f[0] == "window_start")
      continue;
    ++rows;
    auto it = want.find({f[0], f[2]});
    REQUIRE(it != want.end());
    CHECK(std::strtod(f[3].c_str(), nullptr) == Approx(it->second));
  }
  CHECK(rows == want.size());
}

TEST_CASE("a csv header without a configured field fails before anything runs", "[e2e][input]") {
  temp_dir dir;
  write_file(dir.path / "in.csv", "ts,ip,amount\n" + iso(t0) + ",a,1\n");
  write_file(dir.path / "p.toml", config("in.csv", "IP"));
  auto r = weir_cmd("run " + q(dir.path / "p.toml"));
  INFO(r.out);
  CHECK(r.rc == 2);
  CHECK(r.out.find("in.csv") != std::string::npos);
  CHECK(r.out.find("field \"IP\" is not a column (did you mean \"ip\"?)") != std::string::npos);
  CHECK(r.out.find("\"ts\", \"ip\", \"amount\"") != std::string::npos);
  CHECK(!fs::exists(dir.path / "store"));
  // A spelling slip is caught too.
  write_file(dir.path / "p.toml", config("in.csv", "ipp"));
  r = weir_cmd("run " + q(dir.path / "p.toml"));
  CHECK(r.rc == 2);
  CHECK(r.out.find("did you mean \"ip\"") != std::string::npos);
}

TEST_CASE("ndjson whose records are mostly rejected stops the run instead of succeeding",
          "[e2e][input]") {
  temp_dir dir;
  // 3,000 records that all lack the configured key "k" (they have "K").
  std::string lines;
  std::string good;
  for (int i = 0; i < 3000; ++i) {
    lines += "{\"ts\": \"" + iso(t0 + i) + "\", \"K\": \"a\", \"amount\": 1}\n";
    good += "{\"ts\": \"" + iso(t0 + i) + "\", \"k\": \"a\", \"amount\": 1}\n";
  }
  write_file(dir.path / "in.ndjson", lines);
  write_file(dir.path / "p.toml", config("in.ndjson"));
  auto r = weir_cmd("run " + q(dir.path / "p.toml"));
  INFO(r.out);
  CHECK(r.rc == 1);
  CHECK(r.out.find("records read were rejected") != std::string::npos);
  CHECK(r.out.find("missing field k") != std::string::npos);
  // Nothing was consumed: with the config fixed, the same input is processed in full.
  write_file(dir.path / "p.toml", config("in.ndjson", "K"));
  r = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto out = weir_cmd("query --store " + q(dir.path / "store") + " --pipeline p --format csv");
  CHECK(out.out.find("2024-06-01T00:00:00Z,2024-06-01T01:00:00Z,a,3000,1") != std::string::npos);
  // A user who expects rejects says so.
  temp_dir other;
  write_file(other.path / "in.ndjson", lines);
  write_file(other.path / "p.toml", config("in.ndjson", "k", "", "", "  max_reject_ratio = 1.0\n"));
  r = weir_cmd("run " + q(other.path / "p.toml"));
  INFO(r.out);
  CHECK(r.rc == 0);
  // A small run that is mostly rejected commits its dead letters but exits 1.
  temp_dir small;
  write_file(small.path / "in.ndjson",
             good.substr(0, good.find('\n') + 1) + lines.substr(0, 3 * (lines.find('\n') + 1)));
  write_file(small.path / "p.toml", config("in.ndjson"));
  r = weir_cmd("run " + q(small.path / "p.toml"));
  INFO(r.out);
  CHECK(r.rc == 1);
  CHECK(r.out.find("3 of the 4 records read were rejected") != std::string::npos);
  auto dl = weir_cmd("dead-letters --store " + q(small.path / "store") + " --format csv");
  CHECK(std::count(dl.out.begin(), dl.out.end(), '\n') == 4);
}

TEST_CASE("a config change that the stored results cannot take is refused and changes nothing",
          "[e2e][definition]") {
  temp_dir dir;
  auto rows = csv_rows(300, t0, 5, 3, 7);
  write_file(dir.path / "in.csv", "ts,k,amount\n" + rows);
  write_file(dir.path / "p.toml", config("in.csv"));
  REQUIRE(weir_cmd("run " + q(dir.path / "p.toml") + " --quiet").rc == 0);
  auto inspect = [&] { return weir_cmd("inspect --store " + q(dir.path / "store")).out; };
  auto before = inspect();
  auto data_before = weir_cmd("query --store " + q(dir.path / "store") + " --pipeline p").out;
  // A different window size, and a different kind with another aggregate.
  write_file(dir.path / "p.toml",
             config("in.csv", "k", "", "  kind = \"tumbling\"\n  size = \"2h\"\n"));
  auto r = weir_cmd("run " + q(dir.path / "p.toml"));
  INFO(r.out);
  CHECK(r.rc == 2);
  CHECK(r.out.find("window.size: the store has 1h, the config says 2h") != std::string::npos);
  CHECK(r.out.find("new pipeline name") != std::string::npos);
  write_file(dir.path / "p.toml",
             config("in.csv", "k", "", "  kind = \"sliding\"\n  size = \"1h\"\n  slide = \"30m\"\n",
                    "",
                    "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n"
                    "  [[pipeline.aggregate]]\n  fn = \"count\"\n"));
  r = weir_cmd("run " + q(dir.path / "p.toml"));
  INFO(r.out);
  CHECK(r.rc == 2);
  CHECK(r.out.find("window.kind: the store has tumbling, the config says sliding") !=
        std::string::npos);
  CHECK(r.out.find("window.slide: the store has 1h, the config says 30m") != std::string::npos);
  CHECK(r.out.find("aggregates: ") != std::string::npos);
  CHECK(inspect() == before);
  CHECK(weir_cmd("query --store " + q(dir.path / "store") + " --pipeline p").out == data_before);
  // A change that only affects records from now on is taken, and recorded.
  write_file(dir.path / "p.toml",
             config("in.csv", "k", "",
                    "  kind = \"tumbling\"\n  size = \"1h\"\n  out_of_orderness = \"5m\"\n"));
  std::ofstream(dir.path / "in.csv", std::ios::app) << csv_rows(10, t0 + 6 * 3600, 1, 3, 8);
  r = weir_cmd("run " + q(dir.path / "p.toml") + " --quiet");
  INFO(r.out);
  CHECK(r.rc == 0);
  CHECK(r.out.find("window.out_of_orderness changed from 0s to 5m") != std::string::npos);
  CHECK(inspect().find("window.out_of_orderness = 5m") != std::string::npos);
}

TEST_CASE("stdin needs a format, and dead letters name their source", "[e2e][stdin]") {
  temp_dir dir;
  write_file(dir.path / "p.toml", config("-"));
  auto r = weir_cmd("run " + q(dir.path / "p.toml") + " < /dev/null");
  INFO(r.out);
  CHECK(r.rc == 2);
  CHECK(r.out.find("p.toml:") != std::string::npos);
  CHECK(r.out.find("format") != std::string::npos);
  write_file(dir.path / "p.toml", config("-", "k", "  format = \"csv\"\n"));
  write_file(dir.path / "in.csv",
             "ts,k,amount\n" + iso(t0) + ",a,1\n" + iso(t0) + ",a,x\n" + iso(t0 + 5) + ",a,2\n");
  r = weir_cmd("run " + q(dir.path / "p.toml") + " --quiet < " + q(dir.path / "in.csv"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto dl = weir_cmd("dead-letters --store " + q(dir.path / "store") + " --format csv");
  INFO(dl.out);
  CHECK(dl.out.find("p,in (stdin),") != std::string::npos);
  CHECK(std::count(dl.out.begin(), dl.out.end(), '\n') == 2); // header + one, written once
}

TEST_CASE("command line: --version, --log-level after the command, --threads bounded",
          "[e2e][cli]") {
  auto v = weir_cmd("--version");
  CHECK(v.rc == 0);
  CHECK(v.out.rfind("weir ", 0) == 0);
  temp_dir dir;
  write_file(dir.path / "in.csv", "ts,k,amount\n" + iso(t0) + ",a,1\n");
  write_file(dir.path / "p.toml", config("in.csv"));
  auto r = weir_cmd("run " + q(dir.path / "p.toml") + " --log-level info");
  INFO(r.out);
  CHECK(r.rc == 0);
  CHECK(r.out.find("[info]") != std::string::npos);
  r = weir_cmd("run " + q(dir.path / "p.toml") + " --threads 100000");
  CHECK(r.rc == 2);
  CHECK(r.out.find("--threads 100000") != std::string::npos);
  write_file(dir.path / "p.toml", config("in.csv") + "\n" + "");
  auto text = config("in.csv");
  text.replace(text.find("partitions = 2"), 14, "partitions = 100000");
  write_file(dir.path / "p.toml", text);
  r = weir_cmd("run " + q(dir.path / "p.toml"));
  CHECK(r.rc == 2);
  CHECK(r.out.find("partitions") != std::string::npos);
}

TEST_CASE("query output round-trips: shortest numbers, valid JSON, aligned tables",
          "[e2e][output]") {
  temp_dir dir;
  // Sums like 0.1 + 0.2 that have no short decimal form, one that overflows to infinity, keys
  // of different lengths.
  std::string rows = "ts,k,amount\n";
  std::mt19937_64 rng(5);
  for (int i = 0; i < 400; ++i)
    rows += iso(t0 + i * 40) + "," + (i % 3 == 0 ? "a" : "longer-key") + ",0." +
            std::to_string(1 + rng() % 9) + "\n";
  rows += iso(t0 + 20000) + ",huge,1e308\n" + iso(t0 + 20001) + ",huge,1e308\n";
  write_file(dir.path / "in.csv", rows);
  write_file(dir.path / "p.toml", config("in.csv"));
  REQUIRE(weir_cmd("run " + q(dir.path / "p.toml") + " --quiet --final").rc == 0);
  auto want = hourly_sums(rows);
  auto csv = weir_cmd("query --store " + q(dir.path / "store") + " --pipeline p --format csv");
  REQUIRE(csv.rc == 0);
  size_t seen = 0;
  std::istringstream in{csv.out};
  for (std::string line; std::getline(in, line);) {
    auto f = split(line, ',');
    if (f[0] == "window_start")
      continue;
    REQUIRE(f.size() == 5);
    auto it = want.find({f[0], f[2]});
    REQUIRE(it != want.end());
    // Exactly the same double, not a rounding of it.
    CHECK(std::strtod(f[3].c_str(), nullptr) == it->second);
    ++seen;
  }
  CHECK(seen == want.size());
  auto json = weir_cmd("query --store " + q(dir.path / "store") + " --pipeline p --format json");
  REQUIRE(json.rc == 0);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json.out).get(doc) == simdjson::SUCCESS);
  size_t n = 0;
  for (auto row : doc.get_array()) {
    std::string_view key = row["key"].get_string().value();
    std::string_view start = row["window_start"].get_string().value();
    auto it = want.find({std::string{start}, std::string{key}});
    REQUIRE(it != want.end());
    auto v = row["sum_amount"];
    if (std::isinf(it->second))
      CHECK(v.get_string().value() == (it->second > 0 ? "inf" : "-inf"));
    else
      CHECK(v.get_double().value() == it->second);
    ++n;
  }
  CHECK(n == want.size());
  // Tables: text left-aligned (a short key is followed by padding), numbers right-aligned.
  auto table = weir_cmd("query --store " + q(dir.path / "store") + " --pipeline p");
  REQUIRE(table.rc == 0);
  CHECK(table.out.find("Z  a           ") != std::string::npos);
  CHECK(table.out.find("  version") != std::string::npos);
  std::istringstream tl{table.out};
  std::string head;
  std::getline(tl, head);
  std::string line;
  std::getline(tl, line); // dashes
  while (std::getline(tl, line)) {
    REQUIRE(line.size() == head.size()); // the version column ends every line at one place
    CHECK(line.back() != ' ');
  }
}

TEST_CASE("dead-letters --format json is valid JSON holding every letter, bad bytes included",
          "[e2e][output]") {
  temp_dir dir;
  std::string rows = "ts,k,amount\n" + iso(t0) + ",a,1\n" + iso(t0) + ",a,\"q\"x\n" + iso(t0) +
                     ",b\xff\xfe,2\n" + iso(t0) + ",c,3\n";
  write_file(dir.path / "in.csv", rows);
  write_file(dir.path / "p.toml", config("in.csv"));
  auto r = weir_cmd("run " + q(dir.path / "p.toml") + " --quiet");
  REQUIRE(r.rc == 0);
  auto json = weir_cmd("dead-letters --store " + q(dir.path / "store") + " --format json");
  REQUIRE(json.rc == 0);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  INFO(json.out);
  REQUIRE(parser.parse(json.out).get(doc) == simdjson::SUCCESS);
  size_t n = 0;
  for (auto row : doc.get_array()) {
    CHECK(row["pipeline"].get_string().value() == "p");
    CHECK(std::string{row["source"].get_string().value()}.rfind("in (", 0) == 0);
    CHECK(row["offset"].get_uint64().value() > 0);
    CHECK(!row["reason"].get_string().value().empty());
    ++n;
  }
  CHECK(n == 2);
  CHECK(weir_cmd("dead-letters --store " + q(dir.path / "store") + " --pipeline nope").rc == 3);
}

TEST_CASE("exit codes: an interrupted bounded run, an unreadable source, a missing source",
          "[e2e][exit]") {
  temp_dir dir;
  // A bounded stdin stream that stays open: SIGINT ends the run, which says where it resumes.
  std::string fifo = (dir.path / "fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  write_file(dir.path / "p.toml", config("-", "k", "  format = \"csv\"\n"));
  background run({weir_bin, "run", (dir.path / "p.toml").string()}, dir.path / "run.log", fifo);
  REQUIRE(run.started());
  std::string head = "ts,k,amount\n" + iso(t0) + ",a,1\n" + iso(t0 + 1) + ",a,2\n";
  {
    std::ofstream w(fifo, std::ios::binary);
    w << head;
    w.flush();
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    run.signal(SIGINT);
    CHECK(run.wait(30) == 130);
  }
  auto log = run.log();
  INFO(log);
  CHECK(log.find("interrupted (SIGINT): the next run resumes from") != std::string::npos);
  CHECK(log.find("in (stdin) offset " + std::to_string(head.size())) != std::string::npos);
  // A glob that matches a directory: exit 3 at once, not after restarts.
  fs::create_directories(dir.path / "data" / "sub.csv");
  write_file(dir.path / "data" / "a.csv", "ts,k,amount\n");
  write_file(dir.path / "g.toml", config("data/*.csv"));
  auto r = weir_cmd("run " + q(dir.path / "g.toml"));
  INFO(r.out);
  CHECK(r.rc == 3);
  CHECK(r.out.find("sub.csv is not a regular file") != std::string::npos);
  // A missing source creates no store.
  temp_dir other;
  write_file(other.path / "p.toml", config("nothere.csv"));
  r = weir_cmd("run " + q(other.path / "p.toml"));
  CHECK(r.rc == 3);
  CHECK(!fs::exists(other.path / "store"));
}

TEST_CASE("open windows are rows of the store: one per window, written as they change",
          "[e2e][state]") {
  temp_dir dir;
  const fs::path input = dir.path / "in.csv";
  // 3 hours of 300 keys: the last hour's windows stay open (no --final).
  auto rows = csv_rows(6000, t0, 3, 300, 11);
  write_file(input, "ts,k,amount\n" + rows);
  write_file(dir.path / "p.toml", config("in.csv"));
  auto r = weir_cmd("run " + q(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  // Independently: the keys seen in the last hour whose window the watermark left open.
  std::set<std::string> last_hour;
  std::string last = iso(t0 + 2 * 3600).substr(0, 13);
  std::istringstream in{rows};
  for (std::string line; std::getline(in, line);)
    if (line.substr(0, 13) == last)
      last_hour.insert(split(line, ',')[1]);
  auto open = value_after(r.out, "windows open");
  CHECK(open == static_cast<long long>(last_hour.size()));
  CHECK(r.out.find("state written") != std::string::npos);
  CHECK(r.out.find("state per window") != std::string::npos);
  auto inspect = weir_cmd("inspect --store " + q(dir.path / "store"));
  REQUIRE(inspect.rc == 0);
  CHECK(value_after(inspect.out, "windows") == open);
  auto check = weir_cmd("check --store " + q(dir.path / "store"));
  INFO(check.out);
  CHECK(check.rc == 0);
  CHECK(check.out.find("windows") != std::string::npos);
  // --final fires them from the stored rows, and the store holds none afterwards.
  auto fin = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(fin.out);
  REQUIRE(fin.rc == 0);
  auto after = weir_cmd("inspect --store " + q(dir.path / "store"));
  INFO(after.out);
  CHECK(value_after(after.out, "windows") == 0);
  auto sums = hourly_sums(rows);
  CHECK(value_after(fin.out, "windows committed") == static_cast<long long>(last_hour.size()));
  CHECK(sums.size() > last_hour.size());
}
