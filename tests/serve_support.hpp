#pragma once

/// What the tests of `weir serve` share: starting it on a free loopback port as a child process,
/// waiting until it is ready, and reading figures out of its answers.

#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "background.hpp"
#include "test_support.hpp"

namespace weir::test {

inline const std::string weir_bin = WEIR_BINARY;

/// Waits for `weir serve` to say where it listens (`what`: "listening on http://" or "tcp
/// ingest on "); the port, or 0.
inline int wait_for_port(const std::filesystem::path& log,
                         const std::string& what = "listening on http://") {
  const std::regex listening{what + "127\\.0\\.0\\.1:([0-9]+)"};
  for (int i = 0; i < 500; ++i) {
    std::ifstream f{log};
    std::stringstream text;
    text << f.rdbuf();
    std::smatch m;
    const std::string s = text.str();
    if (std::regex_search(s, m, listening))
      return std::stoi(m[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return 0;
}

/// `weir serve` of DIR/p.toml on a free loopback port (plus `extra` arguments, and WEIR_FAULT
/// = `fault` when given), its output in DIR/LOG; `port` is 0 when it did not say where it
/// listens. Killed when it goes.
struct served {
  background proc;
  int port = 0;
  served(const temp_dir& dir, const std::string& log, const std::vector<std::string>& extra = {},
         const std::string& fault = "")
    : proc(args(dir, extra), dir.path / log, "/dev/null", fault)
    , port(wait_for_port(dir.path / log)) {}
  static std::vector<std::string> args(const temp_dir& dir, const std::vector<std::string>& extra) {
    std::vector<std::string> a{weir_bin, "serve", (dir.path / "p.toml").string(), "--listen",
                               "127.0.0.1:0"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
};

/// Waits until GET /v1/pipelines says the run is `outcome` (at most 60 s).
inline bool wait_for_run(httplib::Client& http, const std::string& outcome) {
  for (int i = 0; i < 3000; ++i) {
    auto r = http.Get("/v1/pipelines");
    if (r && r->status == 200 && r->body.find("\"run\": \"" + outcome + "\"") != std::string::npos)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

/// Waits until GET /ready answers 200 (at most 30 s).
inline bool wait_ready(httplib::Client& http) {
  for (int i = 0; i < 1500; ++i) {
    auto r = http.Get("/ready");
    if (r && r->status == 200)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

/// The value of the sample `name{labels}` in Prometheus text, or -1.
inline double sample(const std::string& text, const std::string& series) {
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (line.compare(0, series.size() + 1, series + " ") == 0)
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
  return -1;
}

/// The number after `"name": ` in a JSON text, or -1.
inline long long json_number(const std::string& body, const std::string& name) {
  auto at = body.find("\"" + name + "\": ");
  return at == std::string::npos ? -1 : std::stoll(body.substr(at + name.size() + 4));
}

/// One ndjson record {"ts": ISO(t), "k": k, "amount": amount} with its line end.
inline std::string event(int64_t t, const std::string& k, long amount) {
  return "{\"ts\": \"" + iso(t) + "\", \"k\": \"" + k +
         "\", \"amount\": " + std::to_string(amount) + "}\n";
}

} // namespace weir::test
