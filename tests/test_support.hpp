#pragma once

/// Helpers shared by the tests: a temporary directory removed at the end, running a command
/// line and capturing its output, writing a file.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "actors/core/error.hpp"

namespace weir::test {

/// True when `err` is a Weir error with `code`.
inline bool has_code(const caf::error& err, errc code) {
  return err && err.code() == static_cast<uint8_t>(code) && err.category() == caf::atom("weir");
}

/// "YYYY-MM-DDTHH:MM:SSZ" of epoch seconds, UTC.
inline std::string iso(int64_t s) {
  std::time_t t = static_cast<std::time_t>(s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// A fresh directory under the system's temporary directory, removed with everything in it
/// when the object goes.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(const std::string& prefix = "weir_test_") {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           (prefix + std::to_string(rd()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string str() const { return path.string(); }
};

struct command_result {
  int rc = -1;     ///< exit code, -1 when killed by a signal
  std::string out; ///< stdout and stderr together
};

/// Runs a shell command line as is (the caller bounds it with `timeout`), capturing stdout and
/// stderr together.
inline command_result sh(const std::string& cmd) {
  command_result r;
  std::string full = "(" + cmd + ") 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p)
    return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0)
    r.out.append(buf, n);
  int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
}

/// Splits a line at every `sep` (no quoting): n separators give n + 1 fields.
inline std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

/// A free loopback port (bound and released: another process could take it in between, which
/// a test then reports as a failure to start).
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof at);
  socklen_t len = sizeof at;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&at), &len);
  ::close(fd);
  return ntohs(at.sin_port);
}

/// The whole text of a file ("" when there is none).
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f{p};
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

} // namespace weir::test
