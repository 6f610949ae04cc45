// The benchmark matrix of weir-bench: rows, their configs, what their data must give, the runs
// (as child processes), the summary they print and the table. See bench/README.md.

#include "matrix.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "generate.hpp"

namespace fs = std::filesystem;

namespace weir::bench {
namespace {

enum class kind { tumbling, sliding, session };

/// The window of a row, in seconds (the generated times are whole seconds).
struct window_spec {
  kind k = kind::tumbling;
  int64_t size = 3600;
  int64_t slide = 3600; ///< tumbling: size
  int64_t gap = 0;      ///< session only
  int64_t out_of_orderness = 120;
};

/// What a row must reach. Every row also needs a peak RSS below 1 GiB.
struct target {
  double min_events_per_s = 0;
  double min_windows_per_s = 0;
  double max_p99_ms = 0; ///< 0: no bound
  std::string text;
};

struct row {
  std::string name;
  std::string what; ///< the workload in one line, printed when the row starts
  workload w;
  window_spec win;
  std::string aggregates; ///< the [[pipeline.aggregate]] tables
  bool cards = false;     ///< the card column is an attribute
  double min_late_share = 0;
  target goal;
};

constexpr int64_t minute = 60, hour = 3600, day = 86400;
constexpr double rss_limit_mib = 1024;

std::string agg(const char* fn, const char* field = nullptr, const char* extra = nullptr) {
  std::string s = "  [[pipeline.aggregate]]\n  fn = \"" + std::string(fn) + "\"\n";
  if (field)
    s += "  field = \"" + std::string(field) + "\"\n";
  if (extra)
    s += std::string("  ") + extra + "\n";
  return s;
}

row named(const char* name, const char* what) {
  row r;
  r.name = name;
  r.what = what;
  return r;
}

row tumbling_300() {
  row r = named("tumbling-300", "300 keys, 182 days, hourly tumbling, count/sum/min/max/avg");
  r.aggregates = agg("count") + agg("sum", "amount") + agg("min", "amount") + agg("max", "amount") +
                 agg("avg", "amount");
  r.goal = {3e6, 0, 0, ">= 3M ev/s"};
  return r;
}

row tumbling_1m() {
  row r =
    named("tumbling-1M", "1,000,000 keys, 3 days, daily tumbling, sum/avg (~1M windows open)");
  r.w.keys = 1'000'000;
  r.w.span = 3 * day;
  r.win.size = r.win.slide = day;
  r.aggregates = agg("sum", "amount") + agg("avg", "amount");
  r.goal = {1.5e6, 0, 200, ">= 1.5M ev/s, p99 <= 200ms"};
  return r;
}

row sliding_300() {
  row r = named("sliding-300", "300 keys, 30 days, sliding 1h every 1m, sum/count (~13M windows)");
  r.w.span = 30 * day;
  r.win = {kind::sliding, hour, minute, 0, 120};
  r.aggregates = agg("sum", "amount") + agg("count");
  r.goal = {0, 2e6, 0, ">= 2M windows/s"};
  return r;
}

row sketch_10k() {
  row r = named("sketch-10k",
                "10,000 keys, 6 hours, hourly tumbling, distinct card (1M values), quantile 0.99");
  r.w.keys = 10'000;
  r.w.span = 6 * hour; // about 50 events per window
  r.w.cards = 1'000'000;
  r.cards = true;
  r.aggregates = agg("distinct", "card") + agg("quantile", "amount", "q = 0.99");
  r.goal = {1.5e6, 0, 0, ">= 1.5M ev/s"};
  return r;
}

row session_100k() {
  row r = named("session-100k", "100,000 keys, 3 hours, sessions with a 5m gap, count/sum");
  r.w.keys = 100'000;
  r.w.span = 3 * hour; // a key's events are 6 minutes apart on average: some sessions merge
  r.win = {kind::session, 0, 0, 5 * minute, 120};
  r.aggregates = agg("count") + agg("sum", "amount");
  r.goal = {1.5e6, 0, 0, ">= 1.5M ev/s"};
  return r;
}

row late_90() {
  row r = named("late-90", "300 keys, 182 days, hourly tumbling, 90% of records 2 days late");
  r.w.late_share = 0.9;
  r.aggregates = agg("count") + agg("sum", "amount");
  r.min_late_share = 0.85;
  r.goal = {1.5e6, 0, 0, ">= 1.5M ev/s"};
  return r;
}

std::vector<row> all_rows() {
  return {tumbling_300(), tumbling_1m(), sliding_300(), sketch_10k(), session_100k(), late_90()};
}

std::string duration(int64_t secs) {
  return "\"" + std::to_string(secs) + "s\"";
}

/// The pipeline config of a row: durable, exactly-once, one csv source.
std::string config_text(const row& r) {
  std::ostringstream c;
  c << "store = \"store\"\ndurable = true\n\n[[pipeline]]\nname = \"bench\"\n\n"
    << "  [[pipeline.source]]\n  name = \"events\"\n  path = \"events.csv\"\n\n"
    << "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"merchant\"]\n"
    << "  measures = [\"amount\"]\n"
    << (r.cards ? "  attributes = [\"card\"]\n" : "") << "\n  [pipeline.window]\n";
  if (r.win.k == kind::session)
    c << "  kind = \"session\"\n  gap = " << duration(r.win.gap) << "\n";
  else if (r.win.k == kind::sliding)
    c << "  kind = \"sliding\"\n  size = " << duration(r.win.size)
      << "\n  slide = " << duration(r.win.slide) << "\n";
  else
    c << "  kind = \"tumbling\"\n  size = " << duration(r.win.size) << "\n";
  c << "  out_of_orderness = " << duration(r.win.out_of_orderness) << "\n\n" << r.aggregates;
  return c.str();
}

int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

/// What `weir run --final` must report for the generated events, computed here by brute force
/// from the docs' rules: the watermark is the largest accepted event time less the
/// out-of-orderness, a record is late when the watermark before it has reached the end of the
/// last window holding it, and every window (session) holding an accepted record fires once.
struct expectation {
  uint64_t late = 0;
  uint64_t windows = 0;
};

bool is_late(const window_spec& win, bool has_wm, int64_t wm, int64_t t) {
  if (!has_wm)
    return false;
  const int64_t end =
    win.k == kind::session ? t + win.gap : floor_div(t, win.slide) * win.slide + win.size;
  return wm >= end;
}

/// Windows (sessions) of the accepted events, sorted by key and time: per key the union of
/// the windows each event falls in (sliding: the slide indexes lo..hi), or the chains of events
/// less than a gap apart.
uint64_t count_windows(const window_spec& win, const std::vector<event>& sorted) {
  uint64_t n = 0;
  int64_t prev = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const bool first = i == 0 || sorted[i].key != sorted[i - 1].key;
    const int64_t t = sorted[i].time;
    if (win.k == kind::session) {
      n += first || t > prev + win.gap ? 1 : 0;
      prev = t;
      continue;
    }
    const int64_t lo = floor_div(t - win.size, win.slide) + 1, hi = floor_div(t, win.slide);
    if (first || lo > prev)
      n += static_cast<uint64_t>(hi - lo + 1);
    else if (hi > prev)
      n += static_cast<uint64_t>(hi - prev);
    prev = first ? hi : std::max(prev, hi);
  }
  return n;
}

expectation expect(const window_spec& win, const std::vector<event>& events) {
  expectation x;
  std::vector<event> accepted;
  accepted.reserve(events.size());
  bool has_wm = false;
  int64_t max_time = 0;
  for (const auto& e : events) {
    if (is_late(win, has_wm, max_time - win.out_of_orderness, e.time)) {
      ++x.late;
      continue;
    }
    accepted.push_back(e);
    max_time = has_wm ? std::max(max_time, e.time) : e.time;
    has_wm = true;
  }
  std::sort(accepted.begin(), accepted.end(), [](const event& a, const event& b) {
    return a.key != b.key ? a.key < b.key : a.time < b.time;
  });
  x.windows = count_windows(win, accepted);
  return x;
}

/// What a `weir run` summary says; a line that is absent stays empty.
struct summary {
  std::optional<uint64_t> read, late, windows, open, epochs, state_per_epoch;
  std::optional<double> p50_ms, p99_ms, state_per_window;
};

/// The text after `label` when `line` (less its indentation) starts with it.
const char* after(const std::string& line, const char* label) {
  size_t i = line.find_first_not_of(' ');
  if (i == std::string::npos || line.compare(i, std::strlen(label), label) != 0)
    return nullptr;
  return line.c_str() + i + std::strlen(label);
}

void parse_count(const std::string& line, const char* label, std::optional<uint64_t>& out) {
  unsigned long long v = 0;
  if (const char* rest = after(line, label); rest && std::sscanf(rest, "%llu", &v) == 1)
    out = v;
}

summary parse_summary(const std::string& path) {
  summary s;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    parse_count(line, "events read", s.read);
    parse_count(line, "late (dead letter)", s.late);
    parse_count(line, "windows committed", s.windows);
    parse_count(line, "windows open", s.open);
    parse_count(line, "epochs committed", s.epochs);
    double a = 0, b = 0;
    unsigned long long n = 0, m = 0;
    if (const char* rest = after(line, "epoch latency");
        rest && std::sscanf(rest, " p50 %lf ms, p99 %lf ms", &a, &b) == 2)
      s.p50_ms = a, s.p99_ms = b;
    if (const char* rest = after(line, "state written");
        rest && std::sscanf(rest, "%llu bytes (%llu per epoch", &n, &m) == 2)
      s.state_per_epoch = m;
    if (const char* rest = after(line, "state per window");
        rest && std::sscanf(rest, "%lf", &a) == 1)
      s.state_per_window = a;
  }
  return s;
}

/// One child process: its exit status, wall seconds and resource usage.
struct child_result {
  int status = 0;
  double secs = 0;
  struct rusage ru {};
  bool ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
};

/// Runs argv with stdout and stderr to the given files and waits for it.
child_result run_child(const std::vector<std::string>& argv, const std::string& out,
                       const std::string& err) {
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  child_result r;
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    int fo = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fo, STDOUT_FILENO);
    ::dup2(fe, STDERR_FILENO);
    ::execv(args[0], args.data());
    std::perror(args[0]);
    ::_exit(127);
  }
  ::wait4(pid, &r.status, 0, &r.ru);
  r.secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

/// How a child process ended, for an error message.
std::string how(int status) {
  if (WIFSIGNALED(status))
    return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "exit code " + std::to_string(WEXITSTATUS(status));
}

/// The last lines of a file, for an error message.
std::string tail(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  std::string line;
  while (std::getline(in, line))
    all.push_back(line);
  std::string s;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i)
    s += "    " + all[i] + "\n";
  return s;
}

/// One measured run of a row.
struct measurement {
  double secs = 0;
  double rss_mib = 0;
  summary sum;
};

/// Everything a row needs while it runs.
struct row_run {
  const row& r;
  const matrix_options& opts;
  std::string dir;     ///< DIR/ROW
  uint64_t events = 0; ///< generated
  expectation expected;
  std::string error; ///< why the row failed; empty when it did not

  row_run(const row& r, const matrix_options& opts)
    : r(r)
    , opts(opts)
    , dir(opts.dir + "/" + r.name) {}
};

/// Writes the row's input and config once and computes what the runs must report.
bool prepare(row_run& rr) {
  fs::create_directories(rr.dir);
  std::printf("%-13s %s\n", rr.r.name.c_str(), rr.r.what.c_str());
  workload w = rr.r.w;
  w.events = rr.opts.events;
  auto t0 = std::chrono::steady_clock::now();
  const std::string input = rr.dir + "/events.csv";
  std::FILE* f = std::fopen(input.c_str(), "w");
  if (!f) {
    rr.error = "cannot write " + input + ": " + std::strerror(errno);
    return false;
  }
  std::vector<event> events;
  events.reserve(w.events);
  generate(w, f, [&events](const event& e) { events.push_back(e); });
  std::fclose(f);
  std::ofstream(rr.dir + "/bench.toml") << config_text(rr.r);
  rr.events = w.events;
  rr.expected = expect(rr.r.win, events);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%-13s generated %llu events (%.0f MB) in %.2f s; expect %llu windows, %llu late\n",
              rr.r.name.c_str(), static_cast<unsigned long long>(w.events),
              fs::file_size(input) / 1e6, s, static_cast<unsigned long long>(rr.expected.windows),
              static_cast<unsigned long long>(rr.expected.late));
  std::fflush(stdout);
  return true;
}

std::vector<std::string> weir_args(const row_run& rr) {
  return {rr.opts.weir_bin, "run", rr.dir + "/bench.toml", "--final"};
}

/// Why a run's summary is implausible; empty when its counts are the expected ones.
std::string check(const row_run& rr, const summary& s) {
  auto n = [](uint64_t v) { return std::to_string(v); };
  if (!s.read || !s.windows || !s.late)
    return "the summary lacks events read, windows committed or late (dead letter)";
  if (*s.read != rr.events)
    return "events read " + n(*s.read) + ", generated " + n(rr.events);
  if (*s.late != rr.expected.late)
    return "late (dead letter) " + n(*s.late) + ", expected " + n(rr.expected.late);
  if (*s.late < rr.r.min_late_share * static_cast<double>(rr.events))
    return "late (dead letter) " + n(*s.late) + ", below the row's share of the events";
  if (*s.windows != rr.expected.windows)
    return "windows committed " + n(*s.windows) + ", expected " + n(rr.expected.windows);
  if (s.open && *s.open != 0)
    return n(*s.open) + " windows still open after --final";
  return {};
}

/// One timed `weir run --final` on a fresh store.
bool measure(row_run& rr, measurement& m) {
  fs::remove_all(rr.dir + "/store");
  const std::string out = rr.dir + "/summary.txt", err = rr.dir + "/stderr.txt";
  child_result c = run_child(weir_args(rr), out, err);
  if (!c.ok()) {
    rr.error = "weir run failed (" + how(c.status) + "), its stderr ends:\n" + tail(err, 8);
    return false;
  }
  m.secs = c.secs;
  m.rss_mib = c.ru.ru_maxrss / 1024.0;
  m.sum = parse_summary(out);
  rr.error = check(rr, m.sum);
  return rr.error.empty();
}

/// The first 15 symbol lines of a `perf report --stdio` output, into `path`.
void write_top_symbols(const std::string& report, const std::string& path,
                       const std::string& name) {
  std::ifstream in(report);
  std::ofstream top(path);
  top << "# " << name << ": top 15 of perf report --no-children (self time)\n";
  std::string line;
  for (int n = 0; n < 15 && std::getline(in, line);) {
    size_t i = line.find_first_not_of(' ');
    if (i != std::string::npos && std::isdigit(static_cast<unsigned char>(line[i])) &&
        line.find('%') != std::string::npos) {
      top << line.substr(0, 200) << "\n"; // long template names are cut
      ++n;
    }
  }
}

/// The top symbols of `perf report --no-children` for one more run of the row under
/// `perf record -g`, into DIR/perf-ROW.txt; says why when perf cannot run.
void profile(row_run& rr) {
  fs::remove_all(rr.dir + "/store");
  const std::string data = rr.dir + "/perf.data", err = rr.dir + "/perf-stderr.txt";
  std::vector<std::string> argv = {"/usr/bin/perf", "record", "-g", "-F", "999", "-o", data, "--"};
  for (auto& a : weir_args(rr))
    argv.push_back(a);
  child_result c = run_child(argv, rr.dir + "/perf-summary.txt", err);
  if (!c.ok()) {
    std::printf("%-13s perf record failed (%s; perf_event_paranoid and container "
                "seccomp rules can forbid it):\n%s",
                rr.r.name.c_str(), how(c.status).c_str(), tail(err, 6).c_str());
    return;
  }
  const std::string report = rr.dir + "/perf-report.txt";
  c = run_child({"/usr/bin/perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
                 "--sort", "dso,sym"},
                report, err);
  if (!c.ok()) {
    std::printf("%-13s perf report failed:\n%s", rr.r.name.c_str(), tail(err, 6).c_str());
    return;
  }
  const std::string path = rr.opts.dir + "/perf-" + rr.r.name + ".txt";
  write_top_symbols(report, path, rr.r.name);
  std::printf("%-13s perf: %s\n", rr.r.name.c_str(), path.c_str());
  fs::remove(data);
}

/// The rows' results, printed as the table.
struct table_row {
  std::string name;
  std::optional<measurement> m; ///< empty when the row failed
  const target* goal = nullptr;
  uint64_t events = 0;
};

std::string fmt(const char* f, double v) {
  char b[32];
  std::snprintf(b, sizeof(b), f, v);
  return b;
}

std::string verdict(const table_row& t) {
  if (!t.m)
    return "FAILED";
  const auto& m = *t.m;
  const auto windows = static_cast<double>(m.sum.windows.value_or(0));
  std::string missed;
  if (t.events / m.secs < t.goal->min_events_per_s)
    missed += " ev/s";
  if (windows / m.secs < t.goal->min_windows_per_s)
    missed += " windows/s";
  if (t.goal->max_p99_ms > 0 && (!m.sum.p99_ms || *m.sum.p99_ms > t.goal->max_p99_ms))
    missed += " p99";
  if (m.rss_mib >= rss_limit_mib)
    missed += " RSS";
  return missed.empty() ? "met" : "not met:" + missed;
}

void print_table(const std::vector<table_row>& rows) {
  std::printf("\n%-13s %10s %10s %8s %8s %12s %10s %8s %7s  %-27s %s\n", "row", "events/s",
              "windows/s", "p50 ms", "p99 ms", "state/epoch", "state/win", "RSS MiB", "wall s",
              "target (all: RSS < 1 GiB)", "verdict");
  for (const auto& t : rows) {
    if (!t.m) {
      std::printf("%-13s %10s %10s %8s %8s %12s %10s %8s %7s  %-27s %s\n", t.name.c_str(), "-", "-",
                  "-", "-", "-", "-", "-", "-", t.goal->text.c_str(), "FAILED");
      continue;
    }
    const auto& m = *t.m;
    const auto& s = m.sum;
    auto opt = [](const auto& v, const char* f) { return v ? fmt(f, double(*v)) : "-"; };
    std::printf("%-13s %10.0f %10.0f %8s %8s %12s %10s %8.0f %7.2f  %-27s %s\n", t.name.c_str(),
                t.events / m.secs, static_cast<double>(s.windows.value_or(0)) / m.secs,
                opt(s.p50_ms, "%.1f").c_str(), opt(s.p99_ms, "%.1f").c_str(),
                opt(s.state_per_epoch, "%.0f").c_str(), opt(s.state_per_window, "%.0f").c_str(),
                m.rss_mib, m.secs, t.goal->text.c_str(), verdict(t).c_str());
  }
}

/// Runs one row: generates its input, runs it opts.runs times (and once under perf), returns
/// the median run by wall time, or nothing when a run failed or gave implausible counts.
std::optional<measurement> run_row(row_run& rr) {
  if (!prepare(rr))
    return std::nullopt;
  std::vector<measurement> ms;
  for (int i = 0; i < rr.opts.runs; ++i) {
    measurement m;
    if (!measure(rr, m))
      return std::nullopt;
    std::printf("%-13s run %d: %.2f s, %.0f events/s, peak RSS %.0f MiB\n", rr.r.name.c_str(),
                i + 1, m.secs, rr.events / m.secs, m.rss_mib);
    std::fflush(stdout);
    ms.push_back(m);
  }
  if (rr.opts.perf)
    profile(rr);
  std::sort(ms.begin(), ms.end(),
            [](const measurement& a, const measurement& b) { return a.secs < b.secs; });
  return ms[ms.size() / 2];
}

} // namespace

std::vector<std::string> matrix_row_names() {
  std::vector<std::string> names;
  for (const auto& r : all_rows())
    names.push_back(r.name);
  return names;
}

int run_matrix(const matrix_options& opts) {
  std::vector<row> rows;
  for (auto& r : all_rows())
    if (opts.rows.empty() || std::count(opts.rows.begin(), opts.rows.end(), r.name) > 0)
      rows.push_back(r);
  for (const auto& name : opts.rows)
    if (std::none_of(rows.begin(), rows.end(), [&](const row& r) { return r.name == name; })) {
      std::fprintf(stderr, "unknown row %s\n", name.c_str());
      return 2;
    }
  int rc = 0;
  std::vector<table_row> table;
  for (const auto& r : rows) {
    row_run rr(r, opts);
    auto m = run_row(rr);
    if (!m) {
      std::fprintf(stderr, "%s: FAILED: %s\n", r.name.c_str(), rr.error.c_str());
      rc = 1;
    }
    table.push_back({r.name, m, &r.goal, rr.events});
    if (!opts.keep)
      fs::remove_all(rr.dir);
  }
  print_table(table);
  return rc;
}

} // namespace weir::bench
