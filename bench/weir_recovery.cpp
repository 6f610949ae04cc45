// weir-recovery: time from restart to the first new commit on a large store.
//
// Builds a store of about --store-mib MiB (committed hourly results of many keys), appends new
// events to the input, then starts `weir run` again and measures the time from its start to its
// first commit (read from its info log), and the whole run. The store must be opened, the
// operator state of the last epoch restored and the new input processed before that commit.

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "generate.hpp"

namespace fs = std::filesystem;

namespace {

uint64_t dir_bytes(const fs::path& p) {
  uint64_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(p))
    if (e.is_regular_file())
      n += e.file_size();
  return n;
}

/// Runs a command line with its standard error discarded.
int run_shell(const std::string& cmd) {
  return std::system((cmd + " 2>/dev/null").c_str());
}

} // namespace

int main(int argc, char** argv) {
  std::string weir_bin = WEIR_BINARY;
  std::string dir;
  uint64_t events = 8'000'000;
  uint32_t keys = 2000;
  bool keep = false;
  CLI::App app{"weir-recovery: restart-to-first-commit time on a large store"};
  app.add_option("--events", events, "events in the store")->capture_default_str();
  app.add_option("--keys", keys, "keys (more keys: more result rows)")->capture_default_str();
  app.add_option("--weir", weir_bin, "the weir binary")->capture_default_str();
  app.add_option("--dir", dir, "work directory (default: a new temporary one)");
  app.add_flag("--keep", keep, "keep the work directory");
  CLI11_PARSE(app, argc, argv);
  if (dir.empty())
    dir = (fs::temp_directory_path() / ("weir-recovery-" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  weir::bench::workload w;
  w.events = events;
  w.keys = keys;
  w.span = 365LL * 86400;
  {
    std::FILE* f = std::fopen((dir + "/events.csv").c_str(), "w");
    weir::bench::generate(w, f);
    std::fclose(f);
  }
  {
    std::ofstream c(dir + "/r.toml");
    c << "store = \"store\"\n\n[[pipeline]]\nname = \"r\"\n\n"
         "  [[pipeline.source]]\n  name = \"events\"\n  path = \"events.csv\"\n  follow = true\n\n"
         "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"merchant\"]\n  measures = [\"amount\"]\n\n"
         "  [pipeline.window]\n  size = \"1h\"\n  out_of_orderness = \"2m\"\n\n"
         "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"avg\"\n  field = \"amount\"\n";
  }
  // Fill the store: a follow run stopped with SIGTERM once everything is committed.
  auto fill = [&](const char* what) {
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid = ::fork();
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, STDOUT_FILENO);
      ::dup2(null, STDERR_FILENO);
      ::execl(weir_bin.c_str(), weir_bin.c_str(), "run", (dir + "/r.toml").c_str(), nullptr);
      ::_exit(127);
    }
    // Wait until the committed offset reaches the end of the input, then stop it.
    const auto size = fs::file_size(dir + "/events.csv");
    for (int i = 0; i < 6000; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::string out = dir + "/inspect.txt";
      run_shell(weir_bin + " inspect --store " + dir + "/store > " + out);
      std::ifstream in(out);
      std::string line;
      bool done = false;
      while (std::getline(in, line)) {
        auto at = line.find("committed offset ");
        if (at != std::string::npos && std::stoull(line.substr(at + 17)) >= size)
          done = true;
      }
      if (done)
        break;
    }
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: %.1f s, store %.0f MiB\n", what, s, dir_bytes(dir + "/store") / 1048576.0);
  };
  fill("filled");
  // New input for the restarted run.
  weir::bench::workload more = w;
  more.events = 200'000;
  more.start = w.start + w.span;
  more.span = 86400;
  more.seed = 7;
  {
    std::string tmp = dir + "/more.csv";
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    weir::bench::generate(more, f);
    std::fclose(f);
    std::ifstream in(tmp);
    std::ofstream out(dir + "/events.csv", std::ios::app);
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line))
      out << line << "\n";
  }
  // Restart: time to the first commit line in the info log.
  int pipefd[2];
  if (::pipe(pipefd) != 0)
    return 1;
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipefd[1], STDERR_FILENO);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDOUT_FILENO);
    ::close(pipefd[0]);
    ::execl(weir_bin.c_str(), weir_bin.c_str(), "--log-level", "info", "run",
            (dir + "/r.toml").c_str(), nullptr);
    ::_exit(127);
  }
  ::close(pipefd[1]);
  std::string buf;
  char tmp[4096];
  double first_commit = -1;
  ssize_t n;
  while ((n = ::read(pipefd[0], tmp, sizeof(tmp))) > 0) {
    buf.append(tmp, static_cast<size_t>(n));
    if (buf.find(" committed: ") != std::string::npos) {
      first_commit =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      break;
    }
  }
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(pipefd[0]);
  std::printf("restart to first new commit: %.3f s (store %.0f MiB)\n", first_commit,
              dir_bytes(dir + "/store") / 1048576.0);
  if (!keep)
    fs::remove_all(dir);
  return first_commit < 0 ? 1 : 0;
}
