// weir-bench: the end-to-end benchmark. Generates N events as CSV (about 300 keys, six months of
// event time, some out of order), writes a pipeline config (hourly tumbling windows with count,
// sum, min, max, avg; durable commits), then times `weir run` as a separate process and reports
// events per second and its peak resident memory.

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "generate.hpp"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  weir::bench::workload w;
  std::string weir_bin = WEIR_BINARY;
  std::string dir;
  int runs = 1;
  bool keep = false;
  CLI::App app{"weir-bench: end-to-end throughput and memory of `weir run`"};
  app.add_option("--events", w.events, "number of events")->capture_default_str();
  app.add_option("--keys", w.keys, "number of keys")->capture_default_str();
  app.add_option("--weir", weir_bin, "the weir binary")->capture_default_str();
  app.add_option("--dir", dir, "work directory (default: a new temporary one)");
  app.add_option("--runs", runs, "timed runs (each on a fresh store)")->capture_default_str();
  app.add_flag("--keep", keep, "keep the work directory");
  CLI11_PARSE(app, argc, argv);
  if (dir.empty())
    dir = (fs::temp_directory_path() / ("weir-bench-" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  const std::string input = dir + "/events.csv";
  {
    auto t0 = std::chrono::steady_clock::now();
    std::FILE* f = std::fopen(input.c_str(), "w");
    if (!f) {
      std::perror(input.c_str());
      return 3;
    }
    weir::bench::generate(w, f);
    std::fclose(f);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("generated %llu events (%.1f MB) in %.2f s\n",
                static_cast<unsigned long long>(w.events), fs::file_size(input) / 1e6, s);
  }
  const std::string config = dir + "/bench.toml";
  {
    std::ofstream c(config);
    c << "store = \"store\"\n"
         "durable = true\n\n"
         "[[pipeline]]\nname = \"bench\"\n\n"
         "  [[pipeline.source]]\n  name = \"events\"\n  path = \"events.csv\"\n\n"
         "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"merchant\"]\n"
         "  measures = [\"amount\"]\n\n"
         "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1h\"\n"
         "  out_of_orderness = \"2m\"\n\n"
         "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"min\"\n  field = \"amount\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"max\"\n  field = \"amount\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"avg\"\n  field = \"amount\"\n";
  }
  int rc = 0;
  for (int r = 0; r < runs; ++r) {
    fs::remove_all(dir + "/store");
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid = ::fork();
    if (pid == 0) {
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, STDOUT_FILENO);
      ::execl(weir_bin.c_str(), weir_bin.c_str(), "run", config.c_str(), nullptr);
      std::perror("exec weir");
      ::_exit(127);
    }
    int status = 0;
    struct rusage ru {};
    ::wait4(pid, &status, 0, &ru);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "weir run failed (status %d)\n", status);
      rc = 1;
      break;
    }
    double user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    double sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    std::printf("run %d: %.3f s, %.0f events/s, peak RSS %.1f MiB, cpu user %.2f s sys %.2f s\n",
                r + 1, s, w.events / s, ru.ru_maxrss / 1024.0, user, sys);
  }
  if (!keep)
    fs::remove_all(dir);
  return rc;
}
