// End to end through the `weir` binary: the progress of `weir run` on stderr. Lines on a pipe
// (text and JSON), a bar redrawn in place on a real pseudo-terminal with a log line written
// through it, a run resumed from its committed offsets, a followed source (no total), no
// progress at all, and bad options. The expected byte counts are the input files' sizes, as the
// file system gives them; the expected record counts are the lines the test wrote.

#include <catch2/catch.hpp>

#include <poll.h>
#include <pty.h>
#include <termios.h>

#include <regex>

#include <simdjson.h>

#include "tests/e2e_source_support.hpp"

using namespace weir::test;

namespace {

/// Event lines [from, to) of the generated input, with the csv header when asked.
std::string lines(int64_t from, int64_t to, bool header) {
  std::string out = header ? "ts,k,v\n" : "";
  for (int64_t n = from; n < to; ++n)
    out += event_line(n);
  return out;
}

/// Lines enough for a run of a second or more with the small batches of counting_config.
constexpr int64_t file_lines = 150000;

/// Two input files (in-a.csv, in-b.csv) of `file_lines` records each, read through one glob.
struct two_files {
  fs::path dir;
  explicit two_files(const fs::path& d)
    : dir(d) {
    write_file(d / "in-a.csv", lines(0, file_lines, true));
    write_file(d / "in-b.csv", lines(file_lines, 2 * file_lines, true));
    write_file(d / "p.toml", counting_config("in-*.csv"));
  }
  /// The total size of the inputs now.
  uint64_t bytes() const {
    return fs::file_size(dir / "in-a.csv") + fs::file_size(dir / "in-b.csv");
  }
  std::string run_args(const std::string& extra) const {
    return "run " + quoted(dir / "p.toml") + " --store " + quoted(dir / "store") + " " + extra;
  }
};

/// `weir ARGS` with its stderr alone in `out` (a pipe: not a terminal), its stdout in a file.
command_result weir_stderr(const fs::path& dir, const std::string& args) {
  return sh("timeout 120 " + weir_bin + " " + args + " 2>&1 >" + quoted(dir / "stdout.txt"));
}

/// One line of `--progress lines` in text.
struct progress_line {
  bool bounded = false;
  double percent = 0;
  uint64_t bytes = 0;
  uint64_t total = 0;
  uint64_t records = 0;
  bool last = false; ///< the line at the end of the run ("took")
};

/// The progress lines of `text`; fails the test on a progress line that does not parse.
std::vector<progress_line> progress_lines(const std::string& text) {
  static const std::regex sized{
    R"(^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] \[weir\] \[progress\] ([0-9.]+)%, [0-9.]+ [KMG]?i?B of [0-9.]+ [KMG]?i?B \((\d+) of (\d+) bytes\), (\d+) records, \d+ events/s(, ETA [0-9:]+|, took [0-9:]+)?$)"};
  static const std::regex unsized{
    R"(^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] \[weir\] \[progress\] [0-9.]+ [KMG]?i?B read \((\d+) bytes\), (\d+) records, \d+ events/s(, took [0-9:]+)?$)"};
  std::vector<progress_line> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("[progress]") == std::string::npos)
      continue;
    std::smatch m;
    progress_line p;
    if (std::regex_match(line, m, sized)) {
      p.bounded = true;
      p.percent = std::stod(m[1]);
      p.bytes = std::stoull(m[2]);
      p.total = std::stoull(m[3]);
      p.records = std::stoull(m[4]);
      p.last = m[5].str().find("took") != std::string::npos;
    } else if (std::regex_match(line, m, unsized)) {
      p.bytes = std::stoull(m[1]);
      p.records = std::stoull(m[2]);
      p.last = m[3].str().find("took") != std::string::npos;
    } else {
      FAIL("a progress line that does not parse: " << line);
    }
    out.push_back(p);
  }
  return out;
}

/// "8.6 MiB": a size between 1 MiB and 1 GiB as people read it.
std::string mib(uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / (1024 * 1024));
  return buf;
}

bool has_escape_codes(const std::string& text) {
  return text.find('\x1b') != std::string::npos || text.find('\r') != std::string::npos;
}

/// What a child wrote to the terminal it ran on, and how it ended.
struct tty_result {
  int rc = -1;
  std::string out; ///< raw, as the terminal got it (its line ends are "\r\n")
};

/// Runs `weir ARGS` on a new pseudo-terminal of 100 columns (stdout and stderr both) and reads
/// everything it writes there; killed after 120 s.
tty_result weir_on_tty(const std::vector<std::string>& args) {
  std::vector<std::string> a{weir_bin};
  a.insert(a.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : a)
    argv.push_back(s.data());
  argv.push_back(nullptr);
  winsize ws{};
  ws.ws_row = 40;
  ws.ws_col = 100;
  int master = -1;
  tty_result r;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, &ws);
  if (pid < 0)
    return r;
  if (pid == 0) {
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool exited = false;
  int status = 0;
  for (;;) {
    pollfd p{master, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[4096];
      auto n = ::read(master, buf, sizeof buf);
      if (n > 0) {
        r.out.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (exited || n < 0) // EIO: the child and every holder of the terminal are gone
        break;
    }
    if (!exited && ::waitpid(pid, &status, WNOHANG) == pid)
      exited = true;
    else if (exited)
      break; // gone and nothing left to read
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      break;
    }
  }
  if (!exited)
    ::waitpid(pid, &status, 0);
  ::close(master);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

/// The pieces of terminal output between carriage returns and line ends.
std::vector<std::string> frames(const std::string& out) {
  std::vector<std::string> v;
  std::string cur;
  for (char c : out) {
    if (c == '\r' || c == '\n') {
      if (!cur.empty())
        v.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty())
    v.push_back(cur);
  return v;
}

/// Carriage returns that start a redraw (not those of a line end, which the terminal adds).
size_t redraws(const std::string& out) {
  size_t n = 0;
  for (size_t i = 0; i + 1 < out.size(); ++i)
    n += out[i] == '\r' && out[i + 1] != '\n' ? 1 : 0;
  return n;
}

} // namespace

TEST_CASE("progress - lines on a pipe reach the inputs' total", "[e2e][progress]") {
  temp_dir dir;
  two_files in(dir.path);
  auto r = weir_stderr(dir.path, in.run_args("--progress lines --progress-interval 50ms"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK_FALSE(has_escape_codes(r.out));
  auto ps = progress_lines(r.out);
  REQUIRE(ps.size() >= 3); // at least two intervals, and the last line
  for (size_t i = 0; i < ps.size(); ++i) {
    CHECK(ps[i].bounded);
    CHECK(ps[i].total == in.bytes());
    CHECK(ps[i].last == (i + 1 == ps.size()));
    if (i > 0) {
      CHECK(ps[i].bytes >= ps[i - 1].bytes);
      CHECK(ps[i].records >= ps[i - 1].records);
    }
  }
  CHECK(ps.back().bytes == in.bytes());
  CHECK(ps.back().percent == 100.0);
  CHECK(ps.back().records == 2 * file_lines);
  CHECK(ps.front().bytes < in.bytes()); // seen while it went, not only at the end
  // The summary still goes to stdout, alone.
  std::ifstream f(dir.path / "stdout.txt");
  std::string summary((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CHECK(summary.find("pipeline p") == 0);
  CHECK(summary.find("progress") == std::string::npos);
}

TEST_CASE("progress - a resumed run counts the committed bytes as read", "[e2e][progress]") {
  temp_dir dir;
  two_files in(dir.path);
  REQUIRE(weir_cmd(in.run_args("--progress off")).rc == 0);
  const uint64_t committed = in.bytes();
  append_file(dir.path / "in-b.csv", lines(2 * file_lines, 4 * file_lines, false));
  auto r = weir_stderr(dir.path, in.run_args("--progress lines --progress-interval 50ms"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto ps = progress_lines(r.out);
  REQUIRE(ps.size() >= 2);
  for (const auto& p : ps) {
    CHECK(p.bytes >= committed); // it starts where the last run committed
    CHECK(p.total == in.bytes());
  }
  CHECK(ps.back().last);
  CHECK(ps.back().bytes == in.bytes());
  CHECK(ps.back().records == 2 * file_lines); // only the new ones are read
}

TEST_CASE("progress - JSON logs get JSON progress lines only", "[e2e][progress]") {
  temp_dir dir;
  two_files in(dir.path);
  // auto on a pipe: lines; info logs in between.
  auto r = weir_stderr(dir.path, in.run_args("--progress-interval 50ms --log-format json "
                                             "--log-level info"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  simdjson::dom::parser parser;
  std::istringstream lines_in(r.out);
  std::string line;
  std::vector<std::pair<uint64_t, bool>> seen; // bytes_read, done
  size_t logs = 0;
  while (std::getline(lines_in, line)) {
    simdjson::dom::element doc;
    INFO(line);
    REQUIRE(parser.parse(line).get(doc) == simdjson::SUCCESS);
    REQUIRE(doc.is_object());
    std::string_view msg;
    REQUIRE(doc["msg"].get(msg) == simdjson::SUCCESS);
    REQUIRE(doc["time"].is_string());
    if (msg != "progress") {
      ++logs;
      continue;
    }
    uint64_t bytes = 0;
    uint64_t total = 0;
    bool done = false;
    REQUIRE(doc["bytes_read"].get(bytes) == simdjson::SUCCESS);
    REQUIRE(doc["bytes_total"].get(total) == simdjson::SUCCESS);
    REQUIRE(doc["done"].get(done) == simdjson::SUCCESS);
    CHECK(total == in.bytes());
    seen.emplace_back(bytes, done);
  }
  CHECK(logs > 0);
  REQUIRE(seen.size() >= 3);
  for (size_t i = 1; i < seen.size(); ++i)
    CHECK(seen[i].first >= seen[i - 1].first);
  CHECK(seen.back() == std::make_pair(in.bytes(), true));
}

TEST_CASE("progress - a bar on a terminal is redrawn in place and cleared for log lines",
          "[e2e][progress]") {
  temp_dir dir;
  // A line over max_line_bytes in the middle of the input: ingest warns about it while the bar
  // is drawn.
  std::string text = lines(0, file_lines, true);
  text += iso(event_base + file_lines) + ",k0," + std::string(8192, '7') + "\n";
  text += lines(file_lines + 1, 3 * file_lines, false);
  write_file(dir.path / "in.csv", text);
  write_file(dir.path / "p.toml", counting_config("in.csv", "  max_line_bytes = 4096\n"));
  auto r =
    weir_on_tty({"run", (dir.path / "p.toml").string(), "--store", (dir.path / "store").string()});
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(redraws(r.out) >= 3);
  // Every frame of the bar fits in the 100 columns without wrapping.
  static const std::regex bar_start{R"(^ *\d{1,3}% \[.*)"};
  std::vector<std::string> bars;
  for (auto& f : frames(r.out))
    if (std::regex_match(f, bar_start))
      bars.push_back(f);
  REQUIRE(bars.size() >= 3);
  for (auto& b : bars)
    CHECK(b.size() <= 99);
  // It reaches 100% with the total size and ends before the summary.
  REQUIRE(text.size() > (1u << 20));
  REQUIRE(text.size() < (1u << 30));
  const auto total = mib(text.size());
  CHECK(bars.back().find("100% [") == 0);
  CHECK(bars.back().find(total + " / " + total) != std::string::npos);
  CHECK(bars.back().find("took") != std::string::npos);
  auto last_bar = r.out.rfind("100% [");
  auto summary = r.out.find("pipeline p");
  REQUIRE(summary != std::string::npos);
  CHECK(last_bar < summary);
  CHECK(r.out.find("\r\n", last_bar) < summary); // the bar's line was ended
  // The warning is on a line of its own: the bar was cleared before it.
  auto warning = r.out.find("over max_line_bytes");
  REQUIRE(warning != std::string::npos);
  auto line_start = r.out.find_last_of("\r\n", warning);
  REQUIRE(line_start != std::string::npos);
  CHECK(r.out.substr(line_start + 1, warning - line_start - 1).find('%') == std::string::npos);
}

TEST_CASE("progress - a followed source shows bytes and rate and no total", "[e2e][progress]") {
  temp_dir dir;
  const auto in = dir.path / "in.csv";
  write_file(in, lines(0, file_lines, true));
  write_file(dir.path / "p.toml", counting_config("in.csv", "  follow = true\n"));
  weir_process run(
    {"run", (dir.path / "p.toml").string(), "--progress", "lines", "--progress-interval", "100ms"},
    dir.path / "run.log");
  const uint64_t size = fs::file_size(in);
  bool reached = false;
  for (int i = 0; i < 600 && !reached; ++i) {
    sleep_ms(100);
    auto log = run.log();
    log.resize(log.rfind('\n') + 1); // whole lines only: the last one may be being written
    for (auto& p : progress_lines(log))
      reached = reached || p.bytes == size;
  }
  CHECK(reached);
  run.signal(SIGINT);
  CHECK(run.wait(60) == 0);
  auto log = run.log();
  INFO(log);
  auto ps = progress_lines(log);
  REQUIRE(ps.size() >= 2);
  for (const auto& p : ps)
    CHECK_FALSE(p.bounded);
  CHECK(ps.back().last);
  CHECK(ps.back().bytes == size);
  CHECK(ps.back().records == file_lines);
  CHECK(log.find("ETA") == std::string::npos);
}

TEST_CASE("progress - off prints none on a pipe or a terminal", "[e2e][progress]") {
  temp_dir dir;
  two_files in(dir.path);
  auto r = weir_stderr(dir.path, in.run_args("--progress off --progress-interval 50ms"));
  REQUIRE(r.rc == 0);
  CHECK(r.out == "");
  auto t = weir_on_tty({"run", (dir.path / "p.toml").string(), "--store",
                        (dir.path / "store2").string(), "--progress", "off"});
  INFO(t.out);
  REQUIRE(t.rc == 0);
  CHECK(redraws(t.out) == 0);
  CHECK(t.out.find("took") == std::string::npos);
  CHECK(t.out.find("pipeline p") == 0);
}

TEST_CASE("progress - bad options exit 2 and say why", "[e2e][progress]") {
  temp_dir dir;
  two_files in(dir.path);
  auto bad_mode = weir_cmd(in.run_args("--progress sometimes"));
  CHECK(bad_mode.rc == 2);
  CHECK(bad_mode.out.find("--progress") != std::string::npos);
  CHECK(bad_mode.out.find("sometimes") != std::string::npos);
  auto bad_interval = weir_cmd(in.run_args("--progress-interval soon"));
  CHECK(bad_interval.rc == 2);
  CHECK(bad_interval.out.find("--progress-interval soon") != std::string::npos);
  CHECK(weir_cmd(in.run_args("--progress-interval 0s")).rc == 2);
  auto bar_json = weir_cmd(in.run_args("--progress bar --log-format json"));
  CHECK(bar_json.rc == 2);
  CHECK(bar_json.out.find("JSON") != std::string::npos);
  // Nothing ran: no store was made.
  CHECK_FALSE(fs::exists(dir.path / "store"));
}
