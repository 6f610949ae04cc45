// End to end through the `weir` binary: generated input, `weir run`, `weir query --format csv`
// compared with a brute-force reference computed here from the raw events; re-runs change
// nothing; bad input gives the documented errors.

#include <catch2/catch.hpp>

#include "store/lmdb.hpp"
#include "tests/test_support.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace fs = std::filesystem;

namespace {

using weir::test::temp_dir;
using weir::test::write_file;

/// Runs a shell command with a time bound, capturing stdout and stderr together.
weir::test::command_result run(const std::string& cmd) {
  return weir::test::sh("timeout 120 " + cmd);
}

using weir::test::iso;

struct event {
  int64_t t; // seconds
  std::string key;
  double amount;
};

struct agg {
  double count = 0, sum = 0, min = INFINITY, max = -INFINITY;
};

using window_key = std::tuple<int64_t, int64_t, std::string>; // start, end, key

/// The reference: watermark = max event time - ooo over accepted records in order; a record is
/// late when W >= window end + lateness; at the end every window fires.
std::map<window_key, agg> reference(const std::vector<event>& evs, int64_t size, int64_t ooo,
                                    int64_t lateness, size_t& late) {
  std::map<window_key, agg> out;
  int64_t max_t = INT64_MIN;
  late = 0;
  for (const auto& e : evs) {
    int64_t start = e.t - ((e.t % size) + size) % size;
    int64_t end = start + size;
    bool has_w = max_t != INT64_MIN;
    int64_t w = has_w ? max_t - ooo : 0;
    if (has_w && w >= end + lateness) {
      ++late;
      continue;
    }
    auto& a = out[{start, end, e.key}];
    a.count += 1;
    a.sum += e.amount;
    a.min = std::min(a.min, e.amount);
    a.max = std::max(a.max, e.amount);
    max_t = std::max(max_t, e.t);
  }
  return out;
}

using weir::test::split;

const std::string weir_bin = WEIR_BINARY;

std::string config_text(const std::string& input, int64_t size, int64_t ooo, int64_t lateness) {
  std::ostringstream c;
  c << "store = \"store\"\ncommit_interval = \"20ms\"\nbatch_bytes = 4096\n\n"
    << "[[pipeline]]\nname = \"p\"\npartitions = 3\n\n"
    << "  [[pipeline.source]]\n  name = \"in\"\n  path = \"" << input << "\"\n\n"
    << "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n  measures = [\"amount\"]\n\n"
    << "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"" << size << "s\"\n"
    << "  out_of_orderness = \"" << ooo << "s\"\n  allowed_lateness = \"" << lateness << "s\"\n\n"
    << "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"min\"\n  field = \"amount\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"max\"\n  field = \"amount\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"avg\"\n  field = \"amount\"\n";
  return c.str();
}

} // namespace

TEST_CASE("weir run + query equals a brute-force reference and a re-run adds nothing") {
  temp_dir dir;
  std::mt19937_64 rng(12345);
  const int64_t base = 1717200000;
  const int64_t size = 600, ooo = 30, lateness = 20;
  std::vector<event> evs;
  std::string csv = "ts,k,amount\n";
  size_t bad = 0;
  for (int i = 0; i < 20000; ++i) {
    int64_t t = base + i * 3;
    auto r = rng() % 100;
    if (r < 10)
      t -= static_cast<int64_t>(rng() % 40); // out of order, mostly within bounds
    else if (r < 12)
      t -= static_cast<int64_t>(rng() % 2000); // late
    std::string key = "k" + std::to_string(rng() % 17);
    double amount = static_cast<double>(rng() % 100000) / 100.0;
    if (rng() % 500 == 0) {
      csv += iso(t) + "," + key + ",notanumber\n";
      ++bad;
      continue;
    }
    if (rng() % 700 == 0) {
      csv += iso(t) + "," + key + "\n";
      ++bad;
      continue;
    }
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.2f", amount);
    amount = std::stod(buf);
    csv += iso(t) + "," + key + "," + buf + "\n";
    evs.push_back({t, key, amount});
  }
  write_file(dir.path / "in.csv", csv);
  write_file(dir.path / "p.toml", config_text("in.csv", size, ooo, lateness));
  size_t late = 0;
  auto expected = reference(evs, size, ooo, lateness, late);
  REQUIRE(late > 0);

  auto r1 = run(weir_bin + " run --final " + (dir.path / "p.toml").string());
  INFO(r1.out);
  REQUIRE(r1.rc == 0);
  CHECK(r1.out.find("events read") != std::string::npos);

  auto q1 = run(weir_bin + " query --store " + (dir.path / "store").string() +
                " --pipeline p --format csv");
  REQUIRE(q1.rc == 0);
  std::istringstream in(q1.out);
  std::string line;
  std::getline(in, line);
  CHECK(line == "window_start,window_end,key,count,sum_amount,min_amount,max_amount,"
                "avg_amount,version");
  size_t rows = 0;
  std::map<window_key, agg> seen;
  while (std::getline(in, line)) {
    auto f = split(line, ',');
    REQUIRE(f.size() == 9);
    ++rows;
    // Map ISO times back to seconds through the reference's own formatting.
    int64_t start = 0, end = 0;
    bool found = false;
    for (auto& [k, a] : expected) {
      if (iso(std::get<0>(k)) == f[0] && iso(std::get<1>(k)) == f[1] && std::get<2>(k) == f[2]) {
        start = std::get<0>(k);
        end = std::get<1>(k);
        found = true;
        const auto& e = a;
        CHECK(std::stod(f[3]) == e.count);
        CHECK(std::stod(f[4]) == Approx(e.sum).epsilon(1e-9));
        CHECK(std::stod(f[5]) == Approx(e.min));
        CHECK(std::stod(f[6]) == Approx(e.max));
        CHECK(std::stod(f[7]) == Approx(e.sum / e.count).epsilon(1e-6));
        CHECK(f[8] == "1");
        break;
      }
    }
    INFO(line);
    CHECK(found);
    seen[{start, end, f[2]}] = {};
  }
  CHECK(rows == expected.size());
  CHECK(seen.size() == expected.size());

  // The dead letters hold the malformed rows and the late ones.
  auto d =
    run(weir_bin + " dead-letters --store " + (dir.path / "store").string() + " --format csv");
  REQUIRE(d.rc == 0);
  size_t dl_rows = 0;
  std::istringstream din(d.out);
  std::getline(din, line);
  while (std::getline(din, line))
    ++dl_rows;
  CHECK(dl_rows == bad + late);

  // A second run on the same input and store changes nothing.
  auto r2 = run(weir_bin + " run --final " + (dir.path / "p.toml").string());
  REQUIRE(r2.rc == 0);
  auto q2 = run(weir_bin + " query --store " + (dir.path / "store").string() +
                " --pipeline p --format csv");
  CHECK(q2.out == q1.out);
  auto d2 =
    run(weir_bin + " dead-letters --store " + (dir.path / "store").string() + " --format csv");
  CHECK(d2.out == d.out);

  // Without exactly-once the same results are written (the reference above), with no offsets,
  // state or lake; on a store that holds epochs it is refused.
  const auto noeo = (dir.path / "noeo").string();
  auto r3 = run(weir_bin + " run " + (dir.path / "p.toml").string() + " --no-exactly-once " +
                "--store " + noeo);
  INFO(r3.out);
  REQUIRE(r3.rc == 0);
  CHECK_THAT(r3.out, Catch::Contains("without exactly-once"));
  auto q3 = run(weir_bin + " query --store " + noeo + " --pipeline p --format csv");
  CHECK(q3.out == q1.out);
  auto i3 = run(weir_bin + " inspect --store " + noeo);
  CHECK_THAT(i3.out, Catch::Matches("[\\s\\S]*epochs +0\n[\\s\\S]*"));
  CHECK_THAT(i3.out, Catch::Matches("[\\s\\S]*state +0\n[\\s\\S]*"));
  CHECK_THAT(i3.out, Catch::Matches("[\\s\\S]*chunks +0\n[\\s\\S]*"));
  auto refused = run(weir_bin + " run " + (dir.path / "p.toml").string() + " --no-exactly-once");
  CHECK(refused.rc == 3);
  CHECK_THAT(refused.out, Catch::Contains("holds committed epochs of pipeline p"));

  // A dry run counts what a run commits and writes nothing.
  const auto dry = dir.path / "dry";
  auto r4 = run(weir_bin + " run " + (dir.path / "p.toml").string() + " --dry-run --store " +
                dry.string());
  INFO(r4.out);
  REQUIRE(r4.rc == 0);
  CHECK_FALSE(std::filesystem::exists(dry));
  CHECK_THAT(r4.out, Catch::Contains("dry run: nothing was written"));
  auto line_of = [](const std::string& out, const std::string& what) {
    auto at = out.find(what);
    return at == std::string::npos ? std::string{} : out.substr(at, out.find('\n', at) - at);
  };
  for (const char* what : {"events read", "accepted", "late (dead letter)", "windows committed"}) {
    CHECK(line_of(r4.out, what) == line_of(r1.out, what));
    CHECK_FALSE(line_of(r1.out, what).empty());
  }
}

TEST_CASE("a bad config fails before anything runs, naming file, line and key") {
  temp_dir dir;
  write_file(dir.path / "in.csv", "ts,k,amount\n");
  auto text = config_text("in.csv", 60, 0, 0);
  text += "  bogus_key = 1\n";
  write_file(dir.path / "bad.toml", text);
  auto r = run(weir_bin + " run " + (dir.path / "bad.toml").string());
  CHECK(r.rc == 2);
  CHECK(r.out.find("bad.toml:") != std::string::npos);
  CHECK(r.out.find("bogus_key") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.path / "store"));
}

TEST_CASE("a missing input file is a clear error") {
  temp_dir dir;
  write_file(dir.path / "p.toml", config_text("nothere.csv", 60, 0, 0));
  auto r = run(weir_bin + " run " + (dir.path / "p.toml").string());
  CHECK(r.rc == 3);
  CHECK(r.out.find("nothere.csv") != std::string::npos);
}

TEST_CASE("query, inspect and dead-letters refuse a directory that is no store") {
  temp_dir dir;
  auto r = run(weir_bin + " query --store " + (dir.path / "none").string() + " --pipeline p");
  CHECK(r.rc == 3);
  CHECK(r.out.find("no Weir store") != std::string::npos);
}

TEST_CASE("weir --help documents the commands and the exit codes") {
  auto r = run(weir_bin + " --help");
  CHECK(r.rc == 0);
  for (auto word : {"run", "query", "inspect", "dead-letters", "Exit codes"})
    CHECK(r.out.find(word) != std::string::npos);
  auto q = run(weir_bin + " query --help");
  CHECK(q.out.find("--format") != std::string::npos);
}

TEST_CASE("a pipeline actor that fails stops the run with an error and commits nothing") {
  temp_dir dir;
  std::string csv = "ts,k,amount\n";
  for (int i = 0; i < 100; ++i)
    csv += iso(1717200000 + i * 7) + ",k" + std::to_string(i % 3) + ",1.5\n";
  write_file(dir.path / "in.csv", csv);
  write_file(dir.path / "p.toml", config_text("in.csv", 60, 0, 0));
  auto r1 = run(weir_bin + " run " + (dir.path / "p.toml").string());
  REQUIRE(r1.rc == 0);
  auto before = run(weir_bin + " inspect --store " + (dir.path / "store").string());
  // Damage every stored operator state: restoring it must fail, not be ignored.
  {
    auto env =
      weir::lmdb::env::open((dir.path / "store" / "warehouse").string(), 16, size_t{1} << 28);
    REQUIRE(env);
    auto err = env->with_write([](weir::lmdb::txn& t) -> caf::error {
      auto d = t.open_dbi("state", true);
      if (!d)
        return d.error();
      auto c = weir::lmdb::cursor::open(t, *d);
      if (!c)
        return c.error();
      std::vector<std::string> keys;
      for (auto f = c->first(); f && *f; f = c->next())
        keys.emplace_back(c->key());
      for (auto& k : keys)
        if (auto err = t.put_sealed(*d, k, "garbage")) // checksum right, blob wrong
          return err;
      return caf::none;
    });
    INFO(weir::render(err));
    REQUIRE(!err);
  }
  std::ofstream(dir.path / "in.csv", std::ios::app) << iso(1717300000) << ",k1,2.5\n";
  auto r2 = run(weir_bin + " run " + (dir.path / "p.toml").string());
  INFO(r2.out);
  // State that does not decode is a damaged store: the run ends at once with exit code 4
  // (restarting cannot heal it).
  CHECK(r2.rc == 4);
  CHECK(r2.out.find("state") != std::string::npos);
  auto after = run(weir_bin + " inspect --store " + (dir.path / "store").string());
  // Nothing was committed: same epoch, offsets and results as before the failed run.
  auto committed = [](const std::string& text) {
    std::string out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      if (line.find("epoch") != std::string::npos || line.find("offset") != std::string::npos ||
          line.find("results") != std::string::npos)
        out += line + "\n";
    return out;
  };
  CHECK(committed(after.out) == committed(before.out));
  CHECK(committed(before.out).find("last committed epoch 1") != std::string::npos);
}

TEST_CASE("commit_events drives epochs without waiting for the commit interval") {
  temp_dir dir;
  std::string csv = "ts,k,amount\n";
  for (int i = 0; i < 20000; ++i)
    csv += iso(1717200000 + i) + ",k" + std::to_string(i % 5) + ",1\n";
  write_file(dir.path / "in.csv", csv);
  auto text = config_text("in.csv", 600, 0, 0);
  // One hour between timer epochs: only commit_events and the end of input start epochs.
  auto pos = text.find("commit_interval = \"20ms\"");
  REQUIRE(pos != std::string::npos);
  text.replace(pos, std::string("commit_interval = \"20ms\"").size(),
               "commit_interval = \"1h\"\ncommit_events = 1000\nmax_inflight_batches = 1");
  write_file(dir.path / "p.toml", text);
  auto r = run(weir_bin + " run --final " + (dir.path / "p.toml").string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto q = run(weir_bin + " query --store " + (dir.path / "store").string()
               + " --pipeline p --format csv");
  REQUIRE(q.rc == 0);
  // 20000 events, one per second, in 600 s windows per key: the counts add up to 20000.
  double total = 0;
  std::istringstream in(q.out);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line))
    total += std::stod(split(line, ',')[3]);
  CHECK(total == 20000);
  auto epochs_line = r.out.find("epochs committed");
  REQUIRE(epochs_line != std::string::npos);
  CHECK(std::stoul(r.out.substr(epochs_line + 16)) >= 2);
}

TEST_CASE("the supervisor restarts a failed run from the last commit, within its budget") {
  temp_dir dir;
  std::string csv = "ts,k,amount\n";
  for (int i = 0; i < 30000; ++i)
    csv += iso(1717200000 + i * 2) + ",k" + std::to_string(i % 11) + "," +
           std::to_string(i % 97) + ".25\n";
  write_file(dir.path / "in.csv", csv);
  auto text = config_text("in.csv", 300, 10, 0);
  text = "restart_backoff = \"10ms\"\nrestart_backoff_max = \"40ms\"\n" + text;
  write_file(dir.path / "p.toml", text);
  auto query = [&](const std::string& store) {
    return run(weir_bin + " query --store " + (dir.path / store).string() +
               " --pipeline p --format csv")
      .out;
  };
  auto clean = run(weir_bin + " run --store " + (dir.path / "ref").string() + " " +
                   (dir.path / "p.toml").string());
  REQUIRE(clean.rc == 0);
  SECTION("a transient failure: one restart, the same results as a run without failure") {
    auto r = run("env WEIR_FAULT=aggregator.mid_batch@5:fail " + weir_bin + " run --store " +
                 (dir.path / "s1").string() + " " + (dir.path / "p.toml").string());
    INFO(r.out);
    REQUIRE(r.rc == 0);
    auto at = r.out.find("restarts ");
    REQUIRE(at != std::string::npos);
    CHECK(std::stoul(r.out.substr(at + 9)) == 1);
    CHECK(query("s1") == query("ref"));
  }
  SECTION("a failure that comes back every time: the budget is spent, the run fails") {
    auto r = run("env WEIR_FAULT=aggregator.mid_batch@3+:fail " + weir_bin + " run --store " +
                 (dir.path / "s2").string() + " " + (dir.path / "p.toml").string());
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(r.out.find("injected fault at aggregator.mid_batch") != std::string::npos);
    CHECK(r.out.find("gave up after 3 restart(s)") != std::string::npos);
    // A later run without the fault finishes the job: nothing lost, nothing twice.
    auto again = run(weir_bin + " run --store " + (dir.path / "s2").string() + " " +
                     (dir.path / "p.toml").string());
    REQUIRE(again.rc == 0);
    CHECK(query("s2") == query("ref"));
  }
}

TEST_CASE("a run from another working directory resumes instead of reading the input again") {
  temp_dir dir;
  std::string csv = "ts,k,amount\n";
  for (int i = 0; i < 500; ++i)
    csv += iso(1717200000 + i * 30) + ",k" + std::to_string(i % 4) + ",1\n";
  fs::create_directories(dir.path / "conf");
  write_file(dir.path / "conf" / "in.csv", csv);
  write_file(dir.path / "conf" / "p.toml", config_text("in.csv", 600, 0, 0));
  auto first = run("sh -c 'cd " + dir.str() + " && " + weir_bin + " run conf/p.toml'");
  REQUIRE(first.rc == 0);
  auto before = run(weir_bin + " query --store " + (dir.path / "conf" / "store").string() +
                    " --pipeline p --format csv");
  auto second =
    run("sh -c 'cd " + (dir.path / "conf").string() + " && " + weir_bin + " run p.toml'");
  INFO(second.out);
  REQUIRE(second.rc == 0);
  auto read = second.out.find("events read");
  REQUIRE(read != std::string::npos);
  CHECK(std::stoul(second.out.substr(read + 11)) == 0);
  auto after = run(weir_bin + " query --store " + (dir.path / "conf" / "store").string() +
                   " --pipeline p --format csv");
  CHECK(after.out == before.out);
}
