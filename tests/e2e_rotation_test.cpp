// End to end through the `weir` binary: followed files that rotate. A file truncated in place
// (copytruncate) or renamed away and created anew (logrotate's default) while it is followed or
// between two runs, files that newly match a followed glob, and a kill -9 right after a
// rotation. Each test compares the committed windows with a brute-force reference over every
// line written: nothing missing, nothing counted twice.

#include <catch2/catch.hpp>

#include "tests/e2e_source_support.hpp"

using namespace weir::test;

namespace {

/// The header and event lines [from, to) of the generated input.
std::string lines(int64_t from, int64_t to, bool header = false) {
  std::string out = header ? "ts,k,v\n" : "";
  for (int64_t n = from; n < to; ++n)
    out += event_line(n);
  return out;
}

std::vector<int64_t> range(int64_t from, int64_t to) {
  std::vector<int64_t> out;
  for (int64_t n = from; n < to; ++n)
    out.push_back(n);
  return out;
}

/// Waits (at most 30 s) until the store holds exactly the windows of `want`; "" then, else
/// the difference.
std::string await_windows(const fs::path& store, const window_table& want) {
  std::string diff;
  for (int i = 0; i < 300; ++i) {
    diff = table_diff(committed_windows(store), want);
    if (diff.empty())
      return diff;
    sleep_ms(100);
  }
  return diff;
}

/// A following run in `dir` (config p.toml).
struct follower {
  fs::path dir;
  weir_process proc;
  explicit follower(const fs::path& d, const std::string& log = "run.log")
    : dir(d)
    , proc({"run", (d / "p.toml").string(), "--threads", "2"}, d / log) {}

  /// Waits for `want` to be committed, then stops the run with SIGTERM: exit code 0.
  void finish(const window_table& want) {
    auto diff = await_windows(dir / "store", want);
    INFO(proc.log());
    CHECK(diff == "");
    proc.signal(SIGTERM);
    CHECK(proc.wait(30) == 0);
  }
};

} // namespace

TEST_CASE("rotation - copytruncate while following", "[e2e][rotation]") {
  temp_dir dir;
  const auto in = dir.path / "in.csv";
  write_file(dir.path / "p.toml", counting_config("in.csv", "  follow = true\n"));
  write_file(in, lines(0, 200, true));
  follower run(dir.path);
  REQUIRE(await_windows(dir.path / "store", reference_windows(range(0, 190))) == "");
  // copytruncate: copy, then truncate in place; the writer goes on from the start.
  fs::copy_file(in, dir.path / "in.csv.1");
  fs::resize_file(in, 0);
  sleep_ms(300);
  append_file(in, lines(200, 400, true));
  sleep_ms(500);
  append_file(in, lines(400, 500) + flush_line());
  run.finish(reference_windows(range(0, 500)));
  CHECK(run.proc.log().find("the file was truncated") != std::string::npos);
}

TEST_CASE("rotation - rename and create while following drains the old file", "[e2e][rotation]") {
  temp_dir dir;
  const auto in = dir.path / "in.csv";
  write_file(dir.path / "p.toml", counting_config("in.csv", "  follow = true\n"));
  write_file(in, lines(0, 200, true));
  follower run(dir.path);
  REQUIRE(await_windows(dir.path / "store", reference_windows(range(0, 190))) == "");
  // Lines written just before the rename are read from the renamed file, after the rename.
  append_file(in, lines(200, 250));
  fs::rename(in, dir.path / "in.csv.1");
  write_file(in, lines(250, 400, true));
  sleep_ms(500);
  append_file(in, lines(400, 500) + flush_line());
  run.finish(reference_windows(range(0, 500)));
  CHECK(run.proc.log().find("the file was replaced") != std::string::npos);
}

TEST_CASE("rotation - between runs: renamed, truncated, replaced with the old file gone",
          "[e2e][rotation]") {
  temp_dir dir;
  const auto in = dir.path / "in.csv";
  const auto cfg = dir.path / "p.toml";
  write_file(cfg, counting_config("in.csv"));
  auto run = [&] {
    auto r = weir_cmd("run " + quoted(cfg));
    INFO(r.out);
    CHECK(r.rc == 0);
    return r.out;
  };
  write_file(in, lines(0, 200, true));
  run();
  CHECK(table_diff(committed_windows(dir.path / "store"), closed_windows(range(0, 200))) == "");
  // Renamed away with lines the last run did not see; a new file at the path.
  append_file(in, lines(200, 250));
  fs::rename(in, dir.path / "in.csv.1");
  write_file(in, lines(250, 400, true));
  auto out = run();
  CHECK(out.find("reading the rest of generation 0 from") != std::string::npos);
  CHECK(table_diff(committed_windows(dir.path / "store"), closed_windows(range(0, 400))) == "");
  // Truncated in place and written anew, shorter than what was committed.
  fs::resize_file(in, 0);
  append_file(in, lines(400, 450, true));
  out = run();
  CHECK(out.find("the file was truncated since the last run") != std::string::npos);
  CHECK(table_diff(committed_windows(dir.path / "store"), closed_windows(range(0, 450))) == "");
  // Replaced, and the old file is gone (its lines 450..460 were never read: lost, said so).
  append_file(in, lines(450, 460));
  fs::remove(dir.path / "in.csv.1");
  fs::rename(in, dir.path / "old");
  fs::remove(dir.path / "old");
  write_file(in, lines(460, 500, true));
  out = run();
  CHECK(out.find("is lost") != std::string::npos);
  auto want = range(0, 450);
  for (int64_t n = 460; n < 500; ++n)
    want.push_back(n);
  CHECK(table_diff(committed_windows(dir.path / "store"), closed_windows(want)) == "");
  // A run with nothing new commits nothing more and finds nothing to warn about.
  out = run();
  CHECK(out.find("warning") == std::string::npos);
  CHECK(table_diff(committed_windows(dir.path / "store"), closed_windows(want)) == "");
}

TEST_CASE("rotation - a file newly matching a followed glob is read", "[e2e][rotation]") {
  temp_dir dir;
  fs::create_directories(dir.path / "logs");
  write_file(dir.path / "p.toml", counting_config("logs/*.csv", "  follow = true\n"));
  write_file(dir.path / "logs" / "a.csv", lines(0, 100, true));
  follower run(dir.path);
  REQUIRE(await_windows(dir.path / "store", reference_windows(range(0, 90))) == "");
  write_file(dir.path / "logs" / "b.csv", lines(100, 200, true) + flush_line());
  run.finish(reference_windows(range(0, 200)));
}

TEST_CASE("rotation - kill -9 after a rotation, before any commit: replayed once",
          "[e2e][rotation]") {
  temp_dir dir;
  const auto in = dir.path / "in.csv";
  // First run: no epoch commits (1 h), so everything it read is only landed in the lake.
  write_file(dir.path / "p.toml", counting_config("in.csv", "  follow = true\n", "1h"));
  write_file(in, lines(0, 200, true));
  {
    follower run(dir.path, "run1.log");
    sleep_ms(800);
    fs::rename(in, dir.path / "in.csv.1");
    write_file(in, lines(200, 300, true));
    for (int i = 0; i < 100 && run.proc.log().find("the file was replaced") == std::string::npos;
         ++i)
      sleep_ms(50);
    sleep_ms(300);
    run.proc.signal(SIGKILL);
    CHECK(run.proc.wait(10) == 128 + SIGKILL);
    INFO(run.proc.log());
    REQUIRE(run.proc.log().find("the file was replaced") != std::string::npos);
  }
  CHECK(committed_windows(dir.path / "store").empty());
  write_file(dir.path / "p.toml", counting_config("in.csv", "  follow = true\n"));
  follower run(dir.path, "run2.log");
  sleep_ms(300);
  append_file(in, lines(300, 400) + flush_line());
  run.finish(reference_windows(range(0, 400)));
}

TEST_CASE("rotation - a glob that matches the renamed file too reads it once", "[e2e][rotation]") {
  temp_dir dir;
  fs::create_directories(dir.path / "logs");
  const auto in = dir.path / "logs" / "app.log";
  write_file(dir.path / "p.toml", counting_config("logs/app.log*", "  follow = true\n"));
  write_file(in, lines(0, 200, true));
  {
    follower run(dir.path, "run1.log");
    REQUIRE(await_windows(dir.path / "store", reference_windows(range(0, 190))) == "");
    append_file(in, lines(200, 250));
    fs::rename(in, dir.path / "logs" / "app.log.1");
    write_file(in, lines(250, 400, true));
    sleep_ms(1500); // the glob is expanded again meanwhile
    append_file(in, lines(400, 500) + flush_line());
    run.finish(reference_windows(range(0, 500)));
  }
  // A new run: app.log.1 matches the glob at the start, and is not read again either.
  follower run(dir.path, "run2.log");
  sleep_ms(1500);
  run.finish(reference_windows(range(0, 500)));
}

TEST_CASE("rotation - crashes before a commit, then a rotation: the lake's part is replayed once",
          "[e2e][rotation]") {
  temp_dir dir;
  const auto in = dir.path / "in.csv";
  const auto cfg = dir.path / "p.toml";
  write_file(cfg, counting_config("in.csv", "", "1h")); // one commit, at the end
  auto crash = [&] {
    weir_process run({"run", cfg.string()}, dir.path / "crash.log", "epoch.before_commit");
    int rc = run.wait(60);
    INFO(run.log());
    REQUIRE(rc == 128 + SIGKILL);
  };
  auto run = [&](const std::string& expect) {
    auto r = weir_cmd("run " + quoted(cfg));
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find(expect) != std::string::npos);
  };
  // Everything read is landed, nothing committed; then the file is renamed with more lines.
  write_file(in, lines(0, 200, true));
  crash();
  append_file(in, lines(200, 250));
  fs::rename(in, dir.path / "in.csv.1");
  write_file(in, lines(250, 300, true));
  run("reading the rest of generation 0 from");
  CHECK(table_diff(committed_windows(dir.path / "store"), closed_windows(range(0, 300))) == "");
  // Landed, not committed, then truncated: those lines come from the lake alone.
  append_file(in, lines(300, 350));
  crash();
  fs::resize_file(in, 0);
  append_file(in, lines(350, 400, true));
  run("the file was truncated since the last run");
  CHECK(table_diff(committed_windows(dir.path / "store"), closed_windows(range(0, 400))) == "");
  CHECK(dead_letter_rows(dir.path / "store").empty());
}
