// Fault injection (actors/core/fault.hpp, docs/faults.md): WEIR_FAULT parsing, hit counting,
// fail versus crash (in forked children), and one end-to-end check per family of points
// through the `weir` binary: a crashed or failed run, then a plain run, gives the results of a
// failure-free run.

#include <catch2/catch.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "actors/core/fault.hpp"
#include "tests/test_support.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using weir::fault::action;
using weir::fault::plan;
using weir::test::temp_dir;
using weir::test::write_file;

/// Runs fn in a forked child; returns the raw wait status. The child ends with _exit(fn()).
int in_child(const std::function<int()>& fn) {
  auto pid = ::fork();
  if (pid == 0)
    ::_exit(fn());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

bool killed_by_sigkill(int status) {
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

plan parse_ok(const std::string& text) {
  auto p = plan::parse(text);
  INFO(text);
  REQUIRE(p);
  return std::move(*p);
}

} // namespace

TEST_CASE("WEIR_FAULT: good syntax") {
  SECTION("a point alone: crash at its first hit") {
    auto p = parse_ok("epoch.during_commit");
    REQUIRE(p.rules().size() == 1);
    CHECK(p.rules()[0].point == "epoch.during_commit");
    CHECK(p.rules()[0].nth == 1);
    CHECK_FALSE(p.rules()[0].onwards);
    CHECK(p.rules()[0].what == action::crash);
  }
  SECTION("count, onwards and action") {
    auto p = parse_ok("lake.after_commit@3, aggregator.mid_batch@2:fail,send.batch@4+:crash");
    REQUIRE(p.rules().size() == 3);
    CHECK(p.rules()[0].point == "lake.after_commit");
    CHECK(p.rules()[0].nth == 3);
    CHECK(p.rules()[0].what == action::crash);
    CHECK(p.rules()[1].point == "aggregator.mid_batch");
    CHECK(p.rules()[1].nth == 2);
    CHECK(p.rules()[1].what == action::fail);
    CHECK(p.rules()[2].nth == 4);
    CHECK(p.rules()[2].onwards);
    CHECK(p.rules()[2].what == action::crash);
  }
  SECTION("every documented point is accepted") {
    for (auto point : weir::fault::points())
      CHECK(plan::parse(std::string(point) + "@1:fail"));
    // The code knows exactly the points docs/faults.md lists, in its order.
    std::ifstream doc{std::string{WEIR_SOURCE_DIR} + "/docs/faults.md"};
    std::vector<std::string> documented;
    for (std::string line; std::getline(doc, line);)
      if (line.rfind("| `", 0) == 0 && line.find('.') < line.find('`', 3))
        documented.push_back(line.substr(3, line.find('`', 3) - 3));
    std::vector<std::string> known(weir::fault::points().begin(), weir::fault::points().end());
    CHECK(documented == known);
  }
  SECTION("a record point with ~TEXT") {
    auto p = parse_ok("preprocess.record~POISON@1+:fail,aggregator.record~k7@2");
    REQUIRE(p.rules().size() == 2);
    CHECK(p.rules()[0].point == "preprocess.record");
    CHECK(p.rules()[0].match == "POISON");
    CHECK(p.rules()[0].onwards);
    CHECK(p.rules()[0].what == action::fail);
    CHECK(p.rules()[1].point == "aggregator.record");
    CHECK(p.rules()[1].match == "k7");
    CHECK(p.rules()[1].nth == 2);
  }
  SECTION("empty means no rules") {
    CHECK(parse_ok("").empty());
    CHECK(parse_ok("  ").empty());
  }
}

TEST_CASE("WEIR_FAULT: bad syntax is an error that names the item") {
  struct bad_case {
    const char* text;
    const char* says;
  };
  for (auto c : std::vector<bad_case>{
         {"lake.commit", "unknown fault point 'lake.commit'"},
         {"epoch.during_commit@0", "whole number from 1"},
         {"epoch.during_commit@", "whole number from 1"},
         {"epoch.during_commit@x", "whole number from 1"},
         {"epoch.during_commit@-1", "whole number from 1"},
         {"epoch.during_commit@2++", "whole number from 1"},
         {"send.chunk:boom", "unknown action 'boom'"},
         {"send.chunk:", "unknown action ''"},
         {"send.chunk:fail:crash", "unknown action 'fail:crash'"},
         {"send.chunk,,send.batch", "empty item"},
         {"send.chunk,", "empty item"},
         {"@3", "unknown fault point ''"},
         {"preprocess.record~@1", "the text after ~ is empty"},
         {"send.batch~x", "~TEXT applies to the record points only"},
       }) {
    INFO(c.text);
    auto p = plan::parse(c.text);
    REQUIRE_FALSE(p);
    CHECK(p.error().code() == static_cast<uint8_t>(weir::errc::bad_config));
    auto text = weir::render(p.error());
    CHECK_THAT(text, Catch::Contains("WEIR_FAULT") && Catch::Contains(c.says));
  }
  // The unknown-point message lists the known ones.
  auto p = plan::parse("nope");
  REQUIRE_FALSE(p);
  CHECK_THAT(weir::render(p.error()), Catch::Contains("send.contribution"));
}

TEST_CASE("hits are counted per point; a rule fires at its nth hit, or from it on with +") {
  auto p = parse_ok("send.batch@3:fail,epoch.before_commit@2+:fail");
  std::vector<bool> batch;
  for (int i = 0; i < 5; ++i) {
    CHECK_FALSE(p.reach("send.chunk")); // other points count on their own
    batch.push_back(p.hit("send.batch"));
  }
  CHECK(batch == std::vector<bool>{false, false, true, false, false});
  CHECK(p.hits("send.batch") == 5);
  CHECK(p.hits("send.chunk") == 5);
  CHECK(p.hits("epoch.before_commit") == 0);
  std::vector<bool> epoch;
  for (int i = 0; i < 4; ++i)
    epoch.push_back(p.hit("epoch.before_commit"));
  CHECK(epoch == std::vector<bool>{false, true, true, true});
  CHECK(weir::render(weir::fault::injected("send.batch")) == "injected fault at send.batch");
}

TEST_CASE("a ~TEXT rule counts and fires only on hits whose subject contains TEXT") {
  auto p = parse_ok("preprocess.record~BAD@2:fail,aggregator.record~k1@1+:fail");
  // Reference: the nth matching subject fires, whatever else is hit in between.
  std::vector<std::string> lines{"a,1", "BAD,2", "b,3", "c,BAD", "BADBAD", "d"};
  std::vector<bool> fired;
  for (auto& l : lines)
    fired.push_back(p.hit("preprocess.record", l));
  CHECK(fired == std::vector<bool>{false, false, false, true, false, false});
  CHECK(p.hits("preprocess.record") == 6);
  std::vector<bool> keys;
  for (auto k : {"k0", "k1", "k2", "xk1", "k1"})
    keys.push_back(p.hit("aggregator.record", k));
  CHECK(keys == std::vector<bool>{false, true, false, true, true});
  weir::fault::injected_failure e{"preprocess.record"};
  CHECK(std::string(e.what()) == "injected fault at preprocess.record");
}

TEST_CASE("hits from many threads are counted exactly once each") {
  auto p = parse_ok("aggregator.mid_batch@1000:fail");
  std::vector<std::thread> ts;
  std::atomic<int> fired{0};
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 500; ++i)
        if (p.hit("aggregator.mid_batch"))
          ++fired;
    });
  for (auto& t : ts)
    t.join();
  CHECK(p.hits("aggregator.mid_batch") == 2000);
  CHECK(fired == 1);
}

TEST_CASE("crash kills the process with SIGKILL at the nth hit; fail returns true") {
  auto crash = in_child([] {
    auto p = plan::parse("lake.during_commit@2");
    if (!p || p->hit("lake.during_commit"))
      return 10; // the first hit must pass
    p->hit("lake.during_commit");
    return 11; // not reached
  });
  CHECK(killed_by_sigkill(crash));
  auto fail = in_child([] {
    auto p = plan::parse("lake.during_commit@2:fail");
    if (!p || p->hit("lake.during_commit"))
      return 10;
    return p->hit("lake.during_commit") ? 0 : 11;
  });
  REQUIRE(WIFEXITED(fail));
  CHECK(WEXITSTATUS(fail) == 0);
}

TEST_CASE("the process-wide plan is read from WEIR_FAULT once") {
  // Forked children: the plan of this process must stay unread for the other cases.
  auto crash = in_child([] {
    ::setenv("WEIR_FAULT", "send.chunk@2", 1);
    if (weir::fault::check_env() || !weir::fault::armed() || weir::fault::hit("send.chunk"))
      return 10;
    ::setenv("WEIR_FAULT", "", 1); // read once: changing it now changes nothing
    weir::fault::hit("send.chunk");
    return 11;
  });
  CHECK(killed_by_sigkill(crash));
  auto off = in_child([] {
    ::unsetenv("WEIR_FAULT");
    if (weir::fault::check_env() || weir::fault::armed())
      return 10;
    for (auto point : weir::fault::points())
      if (weir::fault::hit(point))
        return 11;
    return 0;
  });
  REQUIRE(WIFEXITED(off));
  CHECK(WEXITSTATUS(off) == 0);
  auto bad = in_child([] {
    ::setenv("WEIR_FAULT", "epoch.during_commit@zero", 1);
    auto err = weir::fault::check_env();
    if (!err || weir::render(err).find("epoch.during_commit@zero") == std::string::npos)
      return 10;
    // A bad plan disables every point (weir run refuses to start before it gets here).
    return weir::fault::armed() || weir::fault::hit("epoch.during_commit") ? 11 : 0;
  });
  REQUIRE(WIFEXITED(bad));
  CHECK(WEXITSTATUS(bad) == 0);
}

// -- through the weir binary ----------------------------------------------------------------------

namespace {

const std::string weir_bin = WEIR_BINARY;

weir::test::command_result run(const std::string& cmd) {
  return weir::test::sh("timeout -s KILL 120 " + cmd);
}

/// An input of transactions with out-of-order, late, duplicate and malformed records.
std::string make_input() {
  std::mt19937_64 rng(2024);
  std::ostringstream csv;
  csv << "id,ts,k,amount\n";
  const int64_t base = 1717200000;
  for (int i = 0; i < 40000; ++i) {
    int64_t t = base + i * 2;
    auto r = rng() % 100;
    if (r < 5)
      t -= static_cast<int64_t>(rng() % 50); // out of order
    else if (r < 6)
      t -= static_cast<int64_t>(rng() % 3000); // late
    std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char ts[32];
    std::strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    std::string line = "e" + std::to_string(i) + "," + ts + ",k" + std::to_string(rng() % 23) +
                       "," + std::to_string(rng() % 100000 / 100.0) + "\n";
    csv << line;
    if (i % 997 == 0)
      csv << line; // a duplicate
    if (i % 1999 == 0)
      csv << "bad" << i << ",yesterday,k1,1\n"; // a dead letter
  }
  return csv.str();
}

std::string config(const std::string& input, uint32_t restart_budget) {
  std::ostringstream c;
  c << "commit_interval = \"20ms\"\ncommit_events = 3000\nbatch_bytes = 16384\n"
    << "restart_budget = " << restart_budget << "\nrestart_backoff = \"10ms\"\n\n"
    << "[[pipeline]]\nname = \"p\"\npartitions = 3\n\n"
    << "  [[pipeline.source]]\n  name = \"in\"\n  path = \"" << input << "\"\n\n"
    << "  [pipeline.fields]\n  event_id = \"id\"\n  time = \"ts\"\n  key = [\"k\"]\n"
    << "  measures = [\"amount\"]\n\n"
    << "  [pipeline.preprocess]\n  dedupe = true\n  dedupe_horizon = \"1h\"\n\n"
    << "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"10m\"\n"
    << "  out_of_orderness = \"30s\"\n\n"
    << "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"min\"\n  field = \"amount\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"max\"\n  field = \"amount\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"avg\"\n  field = \"amount\"\n";
  return c.str();
}

/// What a store holds as text: the query csv, the dead letters, the committed offsets.
struct store_text {
  std::string results, dead, offsets;
};

store_text read_store(const std::string& store) {
  store_text s;
  auto q = run(weir_bin + " query --store " + store + " --pipeline p --format csv 2>/dev/null");
  REQUIRE(q.rc == 0);
  s.results = q.out;
  auto d = run(weir_bin + " dead-letters --store " + store + " --format csv 2>/dev/null");
  REQUIRE(d.rc == 0);
  s.dead = d.out;
  auto i = run(weir_bin + " inspect --store " + store + " | grep 'committed offset'");
  REQUIRE(i.rc == 0);
  s.offsets = i.out;
  return s;
}

/// A directory with the input, configs for restart budgets 0 and 3, and a reference store.
/// The summary lines of `weir run` that count records and windows (exact across restarts).
std::string counts_of(const std::string& out) {
  std::string keep;
  std::istringstream in(out);
  std::string line;
  for (const char* what : {"events read", "accepted", "rejected", "duplicates",
                           "late (dead letter)", "windows committed"}) {
    in.clear();
    in.seekg(0);
    while (std::getline(in, line))
      if (line.rfind(std::string("  ") + what, 0) == 0)
        keep += line + "\n";
  }
  return keep;
}

struct fixture {
  temp_dir dir{"weir_fault_test_"};
  store_text reference;
  std::string reference_counts;
  fixture() {
    write_file(dir.path / "in.csv", make_input());
    write_file(dir.path / "budget0.toml", config("in.csv", 0));
    write_file(dir.path / "budget3.toml", config("in.csv", 3));
    auto r = run("env -u WEIR_FAULT " + weir_bin + " run " + cfg(0) + " --store " + store("ref"));
    INFO(r.out);
    REQUIRE(r.rc == 0);
    reference = read_store(store("ref"));
    reference_counts = counts_of(r.out);
    REQUIRE(reference_counts.find("events read") != std::string::npos);
    REQUIRE(reference.results.size() > 1000);
    REQUIRE(reference.dead.find("bad time") != std::string::npos);
  }
  std::string cfg(uint32_t budget) const {
    return (dir.path / ("budget" + std::to_string(budget) + ".toml")).string();
  }
  std::string store(const std::string& name) const { return (dir.path / name).string(); }

  /// A run with WEIR_FAULT=spec on a fresh store, which must crash (SIGKILL) or fail (exit 1,
  /// the message on stderr); then plain runs complete it and it equals the reference.
  void crash_or_fail_then_recover(const std::string& spec, const std::string& point, bool crash) {
    INFO("WEIR_FAULT=" << spec);
    auto s = store("s_" + std::to_string(++n_));
    auto r = run("env WEIR_FAULT=" + spec + " " + weir_bin + " run " + cfg(0) + " --store " + s);
    INFO(r.out);
    if (crash) {
      CHECK(r.rc == 128 + SIGKILL);
      CHECK_THAT(r.out, Catch::Contains("injected fault at " + point + " (crash)"));
    } else {
      CHECK(r.rc == 1);
      CHECK_THAT(r.out, Catch::Contains("injected fault at " + point));
    }
    auto again = run("env -u WEIR_FAULT " + weir_bin + " run " + cfg(0) + " --store " + s);
    INFO(again.out);
    REQUIRE(again.rc == 0);
    check_equal(s);
  }

  /// A `fail` with a restart budget: the supervisor restarts the pipeline from the last commit
  /// and the run completes by itself with the reference results.
  void fail_is_recovered(const std::string& spec) {
    INFO("WEIR_FAULT=" << spec);
    auto s = store("s_" + std::to_string(++n_));
    auto r = run("env WEIR_FAULT=" + spec + " " + weir_bin + " run " + cfg(3) + " --store " + s);
    INFO(r.out);
    REQUIRE(r.rc == 0);
    CHECK_THAT(r.out, Catch::Contains("restart 1 of 3"));
    // The summary counts what was committed: records redone after a restart count once.
    CHECK(counts_of(r.out) == reference_counts);
    check_equal(s);
  }

  void check_equal(const std::string& s) {
    auto got = read_store(s);
    CHECK(got.results == reference.results);
    CHECK(got.dead == reference.dead);
    CHECK(got.offsets == reference.offsets);
  }

private:
  int n_ = 0;
};

} // namespace

TEST_CASE("e2e: lake commit faults") {
  fixture f;
  f.crash_or_fail_then_recover("lake.before_commit@2", "lake.before_commit", true);
  f.crash_or_fail_then_recover("lake.during_commit@5", "lake.during_commit", true);
  f.crash_or_fail_then_recover("lake.after_commit@3", "lake.after_commit", true);
  f.crash_or_fail_then_recover("lake.during_commit@4:fail", "lake.during_commit", false);
  f.fail_is_recovered("lake.after_commit@6:fail");
}

TEST_CASE("e2e: epoch commit faults") {
  fixture f;
  f.crash_or_fail_then_recover("epoch.before_commit@2", "epoch.before_commit", true);
  f.crash_or_fail_then_recover("epoch.during_commit@3", "epoch.during_commit", true);
  f.crash_or_fail_then_recover("epoch.after_commit@2", "epoch.after_commit", true);
  f.crash_or_fail_then_recover("epoch.during_commit@2:fail", "epoch.during_commit", false);
  f.fail_is_recovered("epoch.after_commit@3:fail");
}

TEST_CASE("e2e: aggregator mid-batch faults") {
  fixture f;
  f.crash_or_fail_then_recover("aggregator.mid_batch@7", "aggregator.mid_batch", true);
  f.crash_or_fail_then_recover("aggregator.mid_batch@3:fail", "aggregator.mid_batch", false);
  f.fail_is_recovered("aggregator.mid_batch@10:fail");
}

TEST_CASE("e2e: send faults") {
  fixture f;
  f.crash_or_fail_then_recover("send.chunk@4", "send.chunk", true);
  f.crash_or_fail_then_recover("send.batch@6", "send.batch", true);
  f.crash_or_fail_then_recover("send.contribution@3", "send.contribution", true);
  f.crash_or_fail_then_recover("send.chunk@2:fail", "send.chunk", false);
  f.crash_or_fail_then_recover("send.batch@5:fail", "send.batch", false);
  f.crash_or_fail_then_recover("send.contribution@2:fail", "send.contribution", false);
  f.fail_is_recovered("send.batch@8:fail,send.contribution@9:fail");
}

TEST_CASE("e2e: weir run refuses a bad WEIR_FAULT") {
  temp_dir dir{"weir_fault_test_"};
  write_file(dir.path / "in.csv", "id,ts,k,amount\ne1,2024-06-01T00:00:00Z,a,1\n");
  write_file(dir.path / "p.toml", config("in.csv", 0));
  auto r = run("env WEIR_FAULT=epoch.commit " + weir_bin + " run " +
               (dir.path / "p.toml").string() + " --store " + (dir.path / "store").string());
  INFO(r.out);
  CHECK(r.rc == 2);
  CHECK_THAT(r.out, Catch::Contains("unknown fault point 'epoch.commit'"));
  auto ok = run("env WEIR_FAULT=epoch.after_commit@1000 " + weir_bin + " run " +
                (dir.path / "p.toml").string() + " --store " + (dir.path / "store").string());
  INFO(ok.out);
  CHECK(ok.rc == 0);
}

// -- poison records ---------------------------------------------------------------------------

namespace {

/// Dead letters as "reason|raw" lines (no offsets or source paths: the reference reads another
/// file), and the offsets of the letters whose reason says "poison record".
struct letters {
  std::multiset<std::string> reason_raw;
  std::vector<uint64_t> poison_offsets;
};

letters read_letters(const std::string& store) {
  auto d = run(weir_bin + " dead-letters --store " + store + " --format csv 2>/dev/null");
  REQUIRE(d.rc == 0);
  letters out;
  std::istringstream in(d.out);
  std::string line;
  std::getline(in, line); // header
  while (std::getline(in, line)) {
    // pipeline,source,offset,reason,raw: the first three hold no commas.
    size_t a = line.find(',');
    size_t b = line.find(',', a + 1);
    size_t c = line.find(',', b + 1);
    REQUIRE(c != std::string::npos);
    auto rest = line.substr(c + 1);
    if (rest.find("poison record") != std::string::npos)
      out.poison_offsets.push_back(std::stoull(line.substr(b + 1, c - b - 1)));
    else
      out.reason_raw.insert(rest);
  }
  std::sort(out.poison_offsets.begin(), out.poison_offsets.end());
  return out;
}

/// The input of make_input with `marked` records changed so that a fault rule can find them:
/// the record ids (preprocess.record~POISON) or the keys (aggregator.record~kPOISON) of lines
/// 5000, 17000 and 31000. Returns the input and the byte offsets of the changed lines.
std::pair<std::string, std::vector<uint64_t>> poisoned_input(bool by_key) {
  auto text = make_input();
  std::vector<uint64_t> offsets;
  std::string out;
  size_t pos = 0;
  int n = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    auto line = text.substr(pos, nl - pos + 1);
    pos = nl + 1;
    if (n == 5000 || n == 17000 || n == 31000) {
      offsets.push_back(out.size());
      if (by_key) {
        auto k = line.find(",k");
        auto end = line.find(',', k + 1);
        line = line.substr(0, k) + ",kPOISON" + line.substr(end);
      } else {
        line = line.substr(0, line.find(',')) + "POISON" + line.substr(line.find(','));
      }
    }
    out += line;
    ++n;
  }
  return {out, offsets};
}

/// Drops the lines that start at `offsets`.
std::string without_lines(const std::string& text, const std::vector<uint64_t>& offsets) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    if (std::find(offsets.begin(), offsets.end(), pos) == offsets.end())
      out += text.substr(pos, nl - pos + 1);
    pos = nl + 1;
  }
  return out;
}

/// Runs WEIR_FAULT=spec on the poisoned input with restart budget 0: attributed failures do not
/// spend the budget, so the run completes. Results must equal a failure-free run on the input
/// without the poison lines; every other dead letter must be the same; the poison lines must be
/// dead letters at their offsets.
void check_poison(const std::string& spec, bool by_key) {
  INFO("WEIR_FAULT=" << spec);
  temp_dir dir{"weir_poison_test_"};
  auto [input, offsets] = poisoned_input(by_key);
  write_file(dir.path / "in.csv", input);
  write_file(dir.path / "clean.csv", without_lines(input, offsets));
  write_file(dir.path / "p.toml", config("in.csv", 0));
  write_file(dir.path / "clean.toml", config("clean.csv", 0));
  auto ref = run("env -u WEIR_FAULT " + weir_bin + " run " + (dir.path / "clean.toml").string() +
                 " --store " + (dir.path / "ref").string());
  REQUIRE(ref.rc == 0);
  auto r = run("env WEIR_FAULT=" + spec + " " + weir_bin + " run " +
               (dir.path / "p.toml").string() + " --store " + (dir.path / "s").string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("goes to dead letters as a poison record"));
  CHECK_THAT(r.out, Catch::Matches("[\\s\\S]*poison +3\\n[\\s\\S]*"));
  auto q = [&](const std::string& store) {
    auto x = run(weir_bin + " query --store " + store + " --pipeline p --format csv 2>/dev/null");
    REQUIRE(x.rc == 0);
    return x.out;
  };
  CHECK(q((dir.path / "s").string()) == q((dir.path / "ref").string()));
  auto got = read_letters((dir.path / "s").string());
  auto want = read_letters((dir.path / "ref").string());
  CHECK(got.reason_raw == want.reason_raw);
  CHECK(got.poison_offsets == offsets);
  // A second run finds nothing new: the poison records were committed with their epochs.
  auto again = run("env WEIR_FAULT=" + spec + " " + weir_bin + " run " +
                   (dir.path / "p.toml").string() + " --store " + (dir.path / "s").string());
  INFO(again.out);
  CHECK(again.rc == 0);
  CHECK(read_letters((dir.path / "s").string()).poison_offsets == offsets);
}

} // namespace

TEST_CASE("e2e: a record that fails in preprocess on every retry goes to dead letters") {
  check_poison("preprocess.record~POISON@1+:fail", false);
}

TEST_CASE("e2e: a record that fails in an aggregator on every retry goes to dead letters") {
  check_poison("aggregator.record~kPOISON@1+:fail", true);
}

TEST_CASE("e2e: a failure that passes on retry poisons nothing") {
  temp_dir dir{"weir_poison_test_"};
  auto input = poisoned_input(false).first;
  write_file(dir.path / "in.csv", input);
  write_file(dir.path / "p.toml", config("in.csv", 0));
  auto ref = run("env -u WEIR_FAULT " + weir_bin + " run " + (dir.path / "p.toml").string() +
                 " --store " + (dir.path / "ref").string());
  REQUIRE(ref.rc == 0);
  // Fails at the second POISON line only once: the retry of its chunk succeeds.
  auto r = run("env WEIR_FAULT=preprocess.record~POISON@2:fail " + weir_bin + " run " +
               (dir.path / "p.toml").string() + " --store " + (dir.path / "s").string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("retrying them"));
  CHECK_THAT(r.out, !Catch::Contains("poison record"));
  auto a = read_store((dir.path / "s").string());
  auto b = read_store((dir.path / "ref").string());
  CHECK(a.results == b.results);
  CHECK(a.dead == b.dead);
  CHECK(a.offsets == b.offsets);
}

TEST_CASE("e2e: more poison records than max_poison_records fail the run") {
  temp_dir dir{"weir_poison_test_"};
  write_file(dir.path / "in.csv", poisoned_input(false).first);
  write_file(dir.path / "p.toml", "max_poison_records = 1\n" + config("in.csv", 0));
  auto r = run("env WEIR_FAULT=preprocess.record~POISON@1+:fail " + weir_bin + " run " +
               (dir.path / "p.toml").string() + " --store " + (dir.path / "s").string());
  INFO(r.out);
  CHECK(r.rc == 1);
  CHECK_THAT(r.out, Catch::Contains("more than 1 poison records (max_poison_records)"));
  CHECK_THAT(r.out, Catch::Contains("last good commits: p epoch"));
}
