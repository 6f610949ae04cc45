// weir-bench: the end-to-end benchmark. Generates N events as CSV (about 300 keys, six months of
// event time, some out of order), writes a pipeline config (hourly tumbling windows with count,
// sum, min, max, avg; durable commits), then times `weir run` as a separate process and reports
// events per second, its peak resident memory and the epoch commit latency it reports.
//
// --compare measures the cost of exactly-once: every round runs three modes, in rotating order:
//   exactly-once   `weir run` (input landed in the lake; per epoch, results, offsets and operator
//                  state in one durable transaction);
//   no-commits     `weir run --no-exactly-once` (the same results written, without lake,
//                  offsets, state or fsync: the job without its exactly-once commits);
//   dry-run        `weir run --dry-run` (nothing written at all).
// The cost of exactly-once is 1 - (exactly-once events/s) / (no-commits events/s) of the
// medians; the dry run shows what writing the results costs in the first place.
//
// --query then times `weir query` of every committed window (csv and json): seconds and peak
// RSS of a query that pages through the warehouse actor (its memory stays flat).
//
// --rate EPS streams instead: the source is in follow mode and the events are appended to it at
// EPS events per second (in bursts every 10 ms) while `weir run` is going; a second after the
// last one it gets SIGTERM. This is the steady state of a stream at the default commit interval
// and is where the epoch commit latency is measured.
//
// --matrix runs the benchmark matrix instead (matrix.hpp, bench/README.md): six workloads, one
// table of throughput, epoch latency, state written, peak RSS and a target per row.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "generate.hpp"
#include "matrix.hpp"

namespace fs = std::filesystem;

/// Times `weir query` of every window of the store in `dir` (left by the last run), csv and
/// json, as separate processes: seconds, peak RSS and rows. Non-zero when a query fails.
int time_queries(const std::string& weir_bin, const std::string& dir) {
  const std::string store = dir + "/store";
  const std::string out = dir + "/query.out";
  for (const char* format : {"csv", "json"}) {
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid = ::fork();
    if (pid == 0) {
      int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, STDOUT_FILENO);
      ::execl(weir_bin.c_str(), weir_bin.c_str(), "query", "--store", store.c_str(), "--pipeline",
              "bench", "--format", format, nullptr);
      std::perror("exec weir");
      ::_exit(127);
    }
    int status = 0;
    struct rusage ru {};
    ::wait4(pid, &status, 0, &ru);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "weir query failed (status %d)\n", status);
      return 1;
    }
    std::ifstream in(out, std::ios::binary);
    size_t lines = 0;
    std::string line;
    while (std::getline(in, line))
      ++lines;
    std::printf("query --format %s: %zu lines (%.1f MB) in %.3f s, peak RSS %.1f MiB\n", format,
                lines, fs::file_size(out) / 1e6, secs, ru.ru_maxrss / 1024.0);
  }
  return 0;
}

/// --matrix: runs the matrix in `dir` (or a new temporary directory, removed afterwards unless
/// `keep` or `perf`, whose reports live there).
int run_matrix_command(uint64_t events, int runs, std::string dir, bool keep, bool perf,
                       const std::string& weir_bin, const std::vector<std::string>& rows) {
  if (runs < 1) {
    std::fprintf(stderr, "--runs must be at least 1\n");
    return 2;
  }
  const bool temporary = dir.empty();
  if (temporary)
    dir = (fs::temp_directory_path() / ("weir-bench-" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  weir::bench::matrix_options opts{weir_bin, dir, rows, events, runs, perf, keep};
  const int rc = weir::bench::run_matrix(opts);
  if (temporary && !keep && !perf)
    fs::remove_all(dir);
  else
    std::printf("work directory: %s\n", dir.c_str());
  return rc;
}

int main(int argc, char** argv) {
  weir::bench::workload w;
  std::string weir_bin = WEIR_BINARY;
  std::string dir;
  int runs = 1;
  bool keep = false;
  CLI::App app{"weir-bench: end-to-end throughput and memory of `weir run`"};
  app.add_option("--events", w.events, "number of events")->capture_default_str();
  app.add_option("--keys", w.keys, "number of keys")->capture_default_str();
  double span_days = 182;
  app
    .add_option("--span-days", span_days,
                "days of event time the events spread over (fewer days: fewer windows fire)")
    ->capture_default_str();
  app.add_option("--weir", weir_bin, "the weir binary")->capture_default_str();
  app.add_option("--dir", dir, "work directory (default: a new temporary one)");
  app.add_option("--runs", runs, "timed runs (each on a fresh store)")->capture_default_str();
  app.add_flag("--keep", keep, "keep the work directory");
  double rate = 0;
  app.add_option("--rate", rate, "stream the events at this many per second (follow mode)");
  bool query = false;
  app.add_flag("--query", query,
               "after the runs, time `weir query` of every committed window (csv and json) "
               "and report its peak RSS");
  bool compare = false;
  app.add_flag("--compare", compare,
               "time each round in three modes (exactly-once, --no-exactly-once, --dry-run) and "
               "report the cost of exactly-once");
  bool matrix = false;
  app.add_flag("--matrix", matrix,
               "run the benchmark matrix (each row durable, exactly-once, --final) and print its "
               "table; --events, --runs, --dir and --keep apply, --keys and --span-days do not");
  std::vector<std::string> rows;
  std::string row_names;
  for (const auto& name : weir::bench::matrix_row_names())
    row_names += (row_names.empty() ? "" : ", ") + name;
  app.add_option("--row", rows, "matrix rows to run (repeatable or comma list): " + row_names)
    ->delimiter(',');
  std::string plugin;
  app.add_option("--plugin", plugin,
                 "a plugin the config loads (`plugins = [...]`), for a registered aggregate or "
                 "stage");
  std::string sum_fn = "sum";
  app
    .add_option("--sum-fn", sum_fn,
                "the fn of the pipeline's sum of amount (e.g. one the plugin registers)")
    ->capture_default_str();
  std::vector<std::string> stages;
  app.add_option("--stage", stages,
                 "a [[pipeline.stage]] of the pipeline, as KIND or KIND:OPTIONS with OPTIONS the "
                 "inside of its options table, e.g. 'scale:field = \"amount\", factor = 2' "
                 "(repeatable, in order)");
  bool perf = false;
  app.add_flag("--perf", perf,
               "matrix: one more run per row under `perf record -g`; its top 15 symbols (self "
               "time) go to DIR/perf-ROW.txt");
  CLI11_PARSE(app, argc, argv);
  if (matrix || !rows.empty())
    return run_matrix_command(w.events, runs, dir, keep, perf, weir_bin, rows);
  w.span = static_cast<int64_t>(span_days * 86400);
  if (w.span <= 0) {
    std::fprintf(stderr, "--span-days must be positive\n");
    return 2;
  }
  if (dir.empty())
    dir = (fs::temp_directory_path() / ("weir-bench-" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  const std::string input = dir + "/events.csv";
  const std::string generated = rate > 0 ? dir + "/all.csv" : input;
  {
    auto t0 = std::chrono::steady_clock::now();
    std::FILE* f = std::fopen(generated.c_str(), "w");
    if (!f) {
      std::perror(generated.c_str());
      return 3;
    }
    weir::bench::generate(w, f);
    std::fclose(f);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("generated %llu events (%.1f MB) in %.2f s\n",
                static_cast<unsigned long long>(w.events), fs::file_size(generated) / 1e6, s);
  }
  const std::string config = dir + "/bench.toml";
  {
    std::ofstream c(config);
    c << "store = \"store\"\n"
         "durable = true\n"
      << (plugin.empty() ? "" : "plugins = [\"" + fs::absolute(plugin).string() + "\"]\n")
      << "\n"
         "[[pipeline]]\nname = \"bench\"\n\n"
         "  [[pipeline.source]]\n  name = \"events\"\n  path = \"events.csv\"\n"
      << (rate > 0 ? "  follow = true\n" : "")
      << "\n"
         "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"merchant\"]\n"
         "  measures = [\"amount\"]\n\n"
         "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1h\"\n"
         "  out_of_orderness = \"2m\"\n\n";
    for (const auto& st : stages) {
      auto colon = st.find(':');
      c << "  [[pipeline.stage]]\n  kind = \"" << st.substr(0, colon) << "\"\n";
      if (colon != std::string::npos)
        c << "  options = { " << st.substr(colon + 1) << " }\n";
      c << "\n";
    }
    c << "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \""
      << sum_fn
      << "\"\n  field = \"amount\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"min\"\n  field = \"amount\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"max\"\n  field = \"amount\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"avg\"\n  field = \"amount\"\n";
  }
  // Streaming: appends the generated events to the followed input at `rate`, then stops weir.
  auto feed = [&](pid_t pid) {
    std::ifstream in(generated, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const double duration = w.events / rate;
    int fd = ::open(input.c_str(), O_WRONLY | O_APPEND);
    if (fd < 0) {
      std::perror(input.c_str());
      ::kill(pid, SIGKILL);
      return false;
    }
    size_t done = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (done < all.size()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      size_t target = std::min(all.size(), static_cast<size_t>(all.size() * (t / duration)));
      auto nl = all.rfind('\n', target == 0 ? 0 : target - 1);
      if (nl == std::string::npos || nl + 1 <= done)
        continue;
      size_t end = nl + 1;
      while (done < end) {
        auto n = ::write(fd, all.data() + done, end - done);
        if (n <= 0) {
          std::perror("append");
          ::close(fd);
          ::kill(pid, SIGKILL);
          return false;
        }
        done += static_cast<size_t>(n);
      }
    }
    ::close(fd);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    ::kill(pid, SIGTERM);
    return true;
  };
  struct result {
    double secs = 0;
    double rss_mib = 0;
    double user = 0;
    double sys = 0;
    std::string latency; ///< the "epoch latency" line of the summary
  };
  const std::string summary = dir + "/summary.txt";
  // Runs `weir run` on a fresh store as a separate process; false when it fails.
  enum mode_t { exactly_once = 0, no_commits = 1, dry_run = 2 };
  const char* mode_name[] = {"exactly-once", "no-commits  ", "dry-run     "};
  auto run_weir = [&](int mode, result& out) {
    fs::remove_all(dir + "/store");
    if (rate > 0)
      std::ofstream{input, std::ios::trunc}; // the stream starts empty
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid = ::fork();
    if (pid == 0) {
      int fd = ::open(summary.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, STDOUT_FILENO);
      if (mode == dry_run)
        ::execl(weir_bin.c_str(), weir_bin.c_str(), "run", config.c_str(), "--dry-run", nullptr);
      else if (mode == no_commits)
        ::execl(weir_bin.c_str(), weir_bin.c_str(), "run", config.c_str(), "--no-exactly-once",
                nullptr);
      else
        ::execl(weir_bin.c_str(), weir_bin.c_str(), "run", config.c_str(), nullptr);
      std::perror("exec weir");
      ::_exit(127);
    }
    if (rate > 0 && !feed(pid))
      return false;
    int status = 0;
    struct rusage ru {};
    ::wait4(pid, &status, 0, &ru);
    out.secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "weir run failed (status %d)\n", status);
      return false;
    }
    out.user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    out.sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    out.rss_mib = ru.ru_maxrss / 1024.0;
    std::ifstream in(summary);
    std::string line;
    while (std::getline(in, line))
      if (line.find("epoch latency") != std::string::npos)
        out.latency = line.substr(line.find("p50"));
    return true;
  };
  auto report = [&](const char* what, int r, const result& x) {
    std::printf("%s%srun %d: %.3f s, %.0f events/s, peak RSS %.1f MiB, cpu user %.2f s sys %.2f s; "
                "epoch latency %s\n",
                what, *what ? " " : "", r + 1, x.secs, w.events / x.secs, x.rss_mib, x.user, x.sys,
                x.latency.c_str());
    std::fflush(stdout);
  };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  int rc = 0;
  std::vector<double> rates[3];
  const int modes = compare ? 3 : 1;
  for (int r = 0; r < runs && rc == 0; ++r) {
    // Rotate the order so that no mode always runs first (or on a warmer page cache).
    for (int k = 0; k < modes; ++k) {
      const int mode = (r + k) % modes;
      result x;
      if (!run_weir(mode, x)) {
        rc = 1;
        break;
      }
      report(compare ? mode_name[mode] : "", r, x);
      rates[mode].push_back(w.events / x.secs);
    }
  }
  if (rc == 0 && compare) {
    double eo = median(rates[exactly_once]), off = median(rates[no_commits]),
           dry = median(rates[dry_run]);
    std::printf("median events/s: exactly-once %.0f, no-commits %.0f, dry-run %.0f\n", eo, off,
                dry);
    std::printf("exactly-once costs %.1f%% against no-commits (%.1f%% against the dry run)\n",
                100.0 * (1.0 - eo / off), 100.0 * (1.0 - eo / dry));
  }
  if (rc == 0 && query && !compare)
    rc = time_queries(weir_bin, dir);
  if (!keep)
    fs::remove_all(dir);
  return rc;
}
