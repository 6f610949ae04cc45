#pragma once

/// A `weir` process in the background for end-to-end tests that signal or kill it.

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace weir::test {

/// A `weir` process in the background (fork/exec, output to a log file). Killed with SIGKILL
/// by the destructor if still running, so a failing test leaves nothing behind.
class background {
public:
  /// Runs args[0] (a path) with args; stdin from `in` (e.g. a fifo the test writes to);
  /// WEIR_FAULT set to `fault` when given (docs/faults.md).
  background(const std::vector<std::string>& args, const std::filesystem::path& log,
             const std::string& in_path = "/dev/null", const std::string& fault = "")
    : log_(log) {
    std::vector<std::string> a = args;
    std::vector<char*> argv;
    for (auto& s : a)
      argv.push_back(s.data());
    argv.push_back(nullptr);
    std::string log_s = log.string();
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_s.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int in = ::open(in_path.c_str(), O_RDONLY);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      if (in >= 0)
        ::dup2(in, 0);
      if (!fault.empty())
        ::setenv("WEIR_FAULT", fault.c_str(), 1);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  background(const background&) = delete;
  background& operator=(const background&) = delete;
  ~background() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
  }

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  void signal(int sig) {
    if (pid_ > 0)
      ::kill(pid_, sig);
  }

  /// The exit code (128 + signal when killed by one), or -1 when still running after `secs`.
  int wait(double secs) {
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(secs);
    while (pid_ > 0) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
      }
      if (std::chrono::steady_clock::now() > until)
        return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

  bool running() {
    if (pid_ <= 0)
      return false;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  std::string log() const {
    std::ifstream f(log_, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
  }

private:
  pid_t pid_ = -1;
  std::filesystem::path log_;
};

} // namespace weir::test
