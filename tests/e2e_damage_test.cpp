// A damaged or mismatched store is refused, never half-read: each kind of damage, made to the
// files of a store written by `weir run`, gives exit code 4 and a message naming the damage from
// the `weir` binary (never a signal, never exit 0 with some of the rows), and `weir check`
// reports it.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "tests/raw_lmdb.hpp"
#include "tests/test_support.hpp"

namespace fs = std::filesystem;

namespace {

using weir::test::temp_dir;
using weir::test::write_file;

const std::string weir_bin = WEIR_BINARY;

/// Every command is bounded: a hang fails the test (exit code 124) instead of stalling it.
weir::test::command_result run(const std::string& args) {
  return weir::test::sh("timeout 60 " + weir_bin + " " + args);
}

constexpr int64_t base = 1717200000;
constexpr int events = 6000;
constexpr int keys = 20;

/// The input: one event every 2 s over 20 keys; and the number of (minute, key) windows it
/// fills, counted here from the same generator.
std::pair<std::string, size_t> input() {
  std::mt19937 rng(7);
  std::string csv = "ts,k,amount\n";
  std::set<std::pair<int64_t, int>> windows;
  for (int i = 0; i < events; ++i) {
    int64_t t = base + 2 * i;
    int k = static_cast<int>(rng() % keys);
    csv +=
      std::to_string(t) + ",k" + std::to_string(k) + "," + std::to_string(rng() % 1000) + ".25\n";
    windows.emplace(t / 60, k);
  }
  return {csv, windows.size()};
}

std::string config(const std::string& store) {
  return "store = \"" + store +
         "\"\ncommit_interval = \"20ms\"\nbatch_bytes = 4096\n\n"
         "[[pipeline]]\nname = \"p\"\npartitions = 2\n\n"
         "  [[pipeline.source]]\n  name = \"in\"\n  path = \"in.csv\"\n\n"
         "  [pipeline.fields]\n  time = \"ts\"\n  time_format = \"epoch_s\"\n  key = [\"k\"]\n"
         "  measures = [\"amount\"]\n\n"
         "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"60s\"\n\n"
         "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n";
}

/// A directory with in.csv, p.toml (store "store") and the store written by a run.
struct fixture {
  temp_dir dir{"weir_damage_"};
  size_t windows = 0;
  std::string clean_query;

  fixture() {
    auto [csv, n] = input();
    windows = n;
    write_file(dir.path / "in.csv", csv);
    write_file(dir.path / "p.toml", config("store"));
    auto r = run("run --quiet --final " + toml());
    INFO(r.out);
    REQUIRE(r.rc == 0);
    auto q = query();
    REQUIRE(q.rc == 0);
    clean_query = q.out;
    REQUIRE(rows(q.out) == windows); // the reference: one row per (minute, key)
  }
  std::string store() const { return (dir.path / "store").string(); }
  std::string toml() const { return (dir.path / "p.toml").string(); }
  fs::path wh_file() const { return dir.path / "store" / "warehouse" / "data.mdb"; }
  fs::path lake_file() const { return dir.path / "store" / "lake" / "data.mdb"; }
  weir::test::command_result query() const {
    return run("query --store " + store() + " --pipeline p --format csv");
  }
  weir::test::command_result check() const { return run("check --store " + store()); }
  static size_t rows(const std::string& csv) {
    size_t n = 0;
    std::istringstream in(csv);
    for (std::string line; std::getline(in, line);)
      n += line.rfind("20", 0) == 0 ? 1 : 0; // data rows start with a year
    return n;
  }
};

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << bytes;
}

/// Exit code 4 and a message that says the store is damaged (or names `what`).
void require_refused(const weir::test::command_result& r, const std::string& what = "damaged") {
  INFO(r.out);
  CHECK(r.rc == 4);
  CHECK_THAT(r.out, Catch::Contains(what));
}

/// Either refused (exit 4, a message) or, when the damage hit only pages not in use, exactly
/// the clean answer: never a signal, never part of the rows.
bool refused_or_whole(const weir::test::command_result& r, const std::string& clean) {
  INFO(r.out.substr(0, 2000));
  REQUIRE((r.rc == 4 || r.rc == 0));
  if (r.rc == 0) {
    CHECK(r.out == clean);
    return false;
  }
  CHECK_THAT(r.out, Catch::Contains("damaged"));
  return true;
}

} // namespace

TEST_CASE("a clean store passes weir check") {
  fixture f;
  auto c = f.check();
  INFO(c.out);
  CHECK(c.rc == 0);
  CHECK_THAT(c.out, Catch::Contains("no problems"));
  CHECK_THAT(c.out, Catch::Contains("lake and warehouse agree"));
  CHECK_THAT(c.out, Catch::Contains("results"));
}

TEST_CASE("a warehouse file cut to 8 KiB is refused by every command, not SIGBUS") {
  fixture f;
  fs::resize_file(f.wh_file(), 8192);
  require_refused(f.query(), "cut short");
  require_refused(run("inspect --store " + f.store()), "cut short");
  require_refused(run("dead-letters --store " + f.store()), "cut short");
  require_refused(run("run " + f.toml()), "cut short");
  require_refused(f.check(), "cut short");
}

TEST_CASE("random pages over the warehouse are refused, not SIGABRT or SIGSEGV") {
  int refused = 0;
  for (unsigned seed = 1; seed <= 6; ++seed) {
    fixture f;
    auto bytes = read_bytes(f.wh_file());
    const size_t pages = bytes.size() / 4096;
    REQUIRE(pages > 8);
    std::mt19937 rng(seed);
    for (int i = 0; i < 4; ++i) {
      size_t page = 2 + rng() % (pages - 2); // the meta pages are checked on their own
      for (size_t b = 0; b < 4096; ++b)
        bytes[page * 4096 + b] = static_cast<char>(rng());
    }
    write_bytes(f.wh_file(), bytes);
    INFO("seed " << seed);
    bool q = refused_or_whole(f.query(), f.clean_query);
    auto c = f.check();
    INFO(c.out);
    REQUIRE((c.rc == 0 || c.rc == 4));
    CHECK(!(q && c.rc == 0)); // what query refuses, check reports
    refused += q ? 1 : 0;
  }
  CHECK(refused >= 3);
}

TEST_CASE("50 flipped bytes in the warehouse give exit 4, never part of the rows") {
  int refused = 0;
  for (unsigned seed = 1; seed <= 4; ++seed) {
    fixture f;
    auto bytes = read_bytes(f.wh_file());
    std::mt19937 rng(seed);
    for (int i = 0; i < 50; ++i)
      bytes[8192 + rng() % (bytes.size() - 8192)] ^= static_cast<char>(0xFF);
    write_bytes(f.wh_file(), bytes);
    INFO("seed " << seed);
    bool q = refused_or_whole(f.query(), f.clean_query);
    auto c = f.check();
    INFO(c.out);
    REQUIRE((c.rc == 0 || c.rc == 4));
    CHECK(!(q && c.rc == 0));
    refused += q ? 1 : 0;
  }
  CHECK(refused >= 3);
}

TEST_CASE("a lost warehouse beside a lake with data is refused, and so is a lost lake") {
  fixture f;
  SECTION("warehouse") {
    fs::remove_all(f.dir.path / "store" / "warehouse");
    auto r = run("run " + f.toml());
    require_refused(r, "records no store identity");
    CHECK_THAT(r.out, Catch::Contains("warehouse"));
    // Refused again, not resumed half-way, on the next try.
    require_refused(run("run " + f.toml()), "records no store identity");
    require_refused(f.check(), "records no store identity");
  }
  SECTION("lake") {
    fs::remove_all(f.dir.path / "store" / "lake");
    auto r = run("run " + f.toml());
    require_refused(r, "records no store identity");
    CHECK_THAT(r.out, Catch::Contains("source ids"));
    auto c = f.check();
    CHECK(c.rc == 4);
    CHECK_THAT(c.out, Catch::Contains("records no store identity"));
    CHECK_THAT(c.out, Catch::Contains("which the lake does not know"));
  }
}

TEST_CASE("lake and warehouse of two different stores are refused as a pair") {
  fixture a;
  fixture b;
  fs::remove_all(a.dir.path / "store" / "lake");
  fs::copy(b.dir.path / "store" / "lake", a.dir.path / "store" / "lake");
  require_refused(run("run " + a.toml()), "belongs to store");
  require_refused(run("inspect --store " + a.store()), "belongs to store");
  require_refused(a.check(), "belongs to store");
}

TEST_CASE("a flipped byte in a lake chunk is refused when the chunk is replayed") {
  temp_dir dir{"weir_damage_"};
  auto [csv, n] = input();
  write_file(dir.path / "in.csv", csv);
  write_file(dir.path / "p.toml", config("store"));
  const auto toml = (dir.path / "p.toml").string();
  // Dies before the first epoch commit: the chunks are landed, nothing is committed, so the
  // next run replays them from the lake.
  auto crashed =
    weir::test::sh("env WEIR_FAULT=epoch.before_commit timeout 60 " + weir_bin + " run " + toml);
  REQUIRE(crashed.rc != 0);
  auto lake = dir.path / "store" / "lake" / "data.mdb";
  auto bytes = read_bytes(lake);
  const std::string line = std::to_string(base + 2 * 10) + ",k";
  auto at = bytes.find(line);
  REQUIRE(at != std::string::npos);
  bytes[at + 2] ^= 0x01; // a digit of the time becomes another digit: a key that never existed
  write_bytes(lake, bytes);
  auto r = run("run " + toml);
  require_refused(r, "table chunks");
  CHECK_THAT(r.out, Catch::Contains("checksum mismatch"));
  auto c = run("check --store " + (dir.path / "store").string());
  require_refused(c, "table chunks");
}

TEST_CASE("a store of another format version is refused with exit 4") {
  fixture f;
  std::string one(4, '\0');
  one[0] = 1;
  weir::test::raw_put((f.dir.path / "store" / "warehouse").string(), "meta", "format_version", one);
  require_refused(f.query(), "format version 1");
  require_refused(run("run " + f.toml()), "format version 1");
}
