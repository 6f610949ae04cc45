// End to end through the `weir` binary: a line longer than max_line_bytes is streamed past, not
// held: it becomes one dead letter (its length and head), the lines around it are processed,
// and the lake keeps a marker instead of its bytes, so that a replay after a crash gives the
// same dead letter once. Expectations come from a brute-force reference over the lines written.

#include <catch2/catch.hpp>

#include "tests/e2e_source_support.hpp"

using namespace weir::test;

namespace {

/// 20 MiB of one line between normal lines, in a source with max_line_bytes = 64 KiB.
struct long_line_input {
  std::vector<int64_t> events; ///< the normal lines
  std::string long_head;       ///< the long line's first bytes
  uint64_t long_offset = 0;
  uint64_t long_length = 0; ///< without its line end

  explicit long_line_input(const fs::path& path) {
    std::string text = "ts,k,v\n";
    for (int64_t n = 0; n < 300; ++n) {
      text += event_line(n);
      events.push_back(n);
    }
    long_offset = text.size();
    std::string line = iso(event_base + 300) + ",k0,";
    line.append(20u << 20, '7');
    long_length = line.size();
    long_head = line.substr(0, 1024);
    text += line + "\r\n";
    for (int64_t n = 301; n < 600; ++n) {
      text += event_line(n);
      events.push_back(n);
    }
    text += flush_line();
    write_file(path, text);
  }

  std::string reason() const {
    return "line too long (" + std::to_string(long_length) + " bytes, max_line_bytes 65536)";
  }
};

void check_store(const fs::path& store, const long_line_input& in) {
  CHECK(table_diff(committed_windows(store), reference_windows(in.events)) == "");
  auto dl = dead_letter_rows(store);
  REQUIRE(dl.size() == 1);
  REQUIRE(dl[0].size() == 5);
  CHECK(dl[0][2] == std::to_string(in.long_offset));
  CHECK(dl[0][3] == in.reason());
  CHECK(dl[0][4] == in.long_head);
  // The lake did not take the line's 20 MiB (nor did the warehouse).
  CHECK(dir_bytes(store) < (4u << 20));
}

} // namespace

TEST_CASE("long line - streamed past into one dead letter, neighbours processed", "[e2e][long]") {
  temp_dir dir;
  long_line_input in(dir.path / "in.csv");
  write_file(dir.path / "p.toml", counting_config("in.csv", "  max_line_bytes = 65536\n"));
  auto r = weir_cmd("run " + quoted(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("over max_line_bytes 65536") != std::string::npos);
  check_store(dir.path / "store", in);
}

TEST_CASE("long line - a crash before the commit replays its dead letter from the lake once",
          "[e2e][long]") {
  temp_dir dir;
  long_line_input in(dir.path / "in.csv");
  // No epoch commits before the end of the input: everything is landed, nothing committed.
  write_file(dir.path / "p.toml", counting_config("in.csv", "  max_line_bytes = 65536\n", "1h"));
  {
    weir_process run({"run", (dir.path / "p.toml").string()}, dir.path / "run1.log",
                     "epoch.before_commit");
    int rc = run.wait(60);
    INFO(run.log());
    REQUIRE(rc == 128 + SIGKILL);
  }
  // The long line's bytes change in the file: the replay must come from the lake's marker.
  {
    std::fstream f(dir.path / "in.csv", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(in.long_offset + 30));
    f << "CHANGED";
  }
  auto r = weir_cmd("run " + quoted(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  check_store(dir.path / "store", in);
}

TEST_CASE("long line - on stdin too", "[e2e][long]") {
  temp_dir dir;
  long_line_input in(dir.path / "in.csv");
  write_file(dir.path / "p.toml", counting_config("-", "  format = \"csv\"\n  max_line_bytes = 65536\n"));
  auto r = weir_cmd("run " + quoted(dir.path / "p.toml") + " < " + quoted(dir.path / "in.csv"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(table_diff(committed_windows(dir.path / "store"), reference_windows(in.events)) == "");
  auto dl = dead_letter_rows(dir.path / "store");
  REQUIRE(dl.size() == 1);
  CHECK(dl[0][3] == in.reason());
  CHECK(dl[0][4] == in.long_head);
}
