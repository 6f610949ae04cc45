#pragma once

/// Helpers of the end-to-end tests of sources (rotation, long lines): `weir` in the foreground
/// and in the background, a pipeline that counts and sums a line number per key and 10 s window,
/// and its brute-force reference.

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "tests/background.hpp"
#include "tests/test_support.hpp"

namespace weir::test {

namespace fs = std::filesystem;

inline const std::string weir_bin = WEIR_BINARY;

inline std::string quoted(const fs::path& p) {
  return "'" + p.string() + "'";
}

/// `weir ARGS` with a time bound.
inline command_result weir_cmd(const std::string& args) {
  return sh("timeout 120 " + weir_bin + " " + args);
}

inline void append_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::app);
  f << text;
}

inline void sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

/// `weir ARGS` in the background (tests/background.hpp), with WEIR_FAULT = `fault` if given.
class weir_process : public weir::test::background {
public:
  weir_process(const std::vector<std::string>& args, const fs::path& log,
               const std::string& fault = "")
    : background(with_binary(args), log, "/dev/null", fault) {}

private:
  static std::vector<std::string> with_binary(const std::vector<std::string>& args) {
    std::vector<std::string> a{weir_bin};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }
};

/// The config of one pipeline "p" over the csv source `path` (ts,k,v): count and sum of v per
/// key in tumbling 10 s windows, no out-of-orderness.
inline std::string counting_config(const std::string& path, const std::string& source_extra = "",
                                   const std::string& commit_interval = "20ms") {
  std::ostringstream c;
  c << "store = \"store\"\ncommit_interval = \"" << commit_interval << "\"\nbatch_bytes = 4096\n"
    << "\n[[pipeline]]\nname = \"p\"\npartitions = 2\n\n"
    << "  [[pipeline.source]]\n  name = \"in\"\n  path = \"" << path << "\"\n"
    << source_extra << "\n"
    << "  [pipeline.fields]\n  time = \"ts\"\n  key = \"k\"\n  measures = [\"v\"]\n\n"
    << "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"10s\"\n\n"
    << "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"v\"\n";
  return c.str();
}

constexpr int64_t event_base = 1717200000; // 2024-06-01T00:00:00Z

/// Line n of a generated input: event time base + n s, key k<n % 3>, value n.
inline std::string event_line(int64_t n) {
  return iso(event_base + n) + ",k" + std::to_string(n % 3) + "," + std::to_string(n) + "\n";
}

/// A line far ahead in event time: its watermark fires every window of the lines before it.
inline std::string flush_line() {
  return iso(event_base + 1000000) + ",zz,0\n";
}

/// (window start, key) -> "count,sum".
using window_table = std::map<std::pair<std::string, std::string>, std::string>;

/// The brute-force reference: every window of the event lines `ns`, each counted once.
inline window_table reference_windows(const std::vector<int64_t>& ns) {
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> acc;
  for (auto n : ns) {
    auto& a = acc[{iso(event_base + n - n % 10), "k" + std::to_string(n % 3)}];
    ++a.first;
    a.second += n;
  }
  window_table out;
  for (auto& [k, a] : acc)
    out[k] = std::to_string(a.first) + "," + std::to_string(a.second);
  return out;
}

/// The windows of `ns` that a bounded run without --final commits: all but the window of the
/// latest line, which the watermark (no out-of-orderness) has not passed yet.
inline window_table closed_windows(const std::vector<int64_t>& ns) {
  auto out = reference_windows(ns);
  if (ns.empty())
    return out;
  auto last = *std::max_element(ns.begin(), ns.end());
  auto open = iso(event_base + last - last % 10);
  for (auto i = out.begin(); i != out.end();)
    i = i->first.first == open ? out.erase(i) : std::next(i);
  return out;
}

/// What the store committed, as the reference has it (sums printed as integers), without the
/// window of the flush line.
inline window_table committed_windows(const fs::path& store) {
  auto r = weir_cmd("query --store " + quoted(store) + " --pipeline p --format csv");
  window_table out;
  std::istringstream in(r.out);
  std::string line;
  std::getline(in, line); // window_start,window_end,key,count,sum_v,version
  while (std::getline(in, line)) {
    auto f = split(line, ',');
    if (f.size() < 5 || f[2] == "zz")
      continue; // the flush line's window: fired at the end of a bounded run only
    auto sum = f[4];
    if (auto dot = sum.find('.'); dot != std::string::npos)
      sum = sum.substr(0, dot);
    out[{f[0], f[2]}] = f[3] + "," + sum;
  }
  return out;
}

/// "" when the tables are equal, else their first differences (for a readable failure).
inline std::string table_diff(const window_table& got, const window_table& want) {
  std::string out;
  int shown = 0;
  for (auto& [k, v] : want) {
    auto i = got.find(k);
    if ((i == got.end() || i->second != v) && shown++ < 5)
      out += k.first + " " + k.second + ": want " + v + " got " +
             (i == got.end() ? "nothing" : i->second) + "\n";
  }
  for (auto& [k, v] : got)
    if (!want.count(k) && shown++ < 10)
      out += k.first + " " + k.second + ": unexpected " + v + "\n";
  return out;
}

/// Rows of `weir dead-letters --format csv` (pipeline, source, offset, reason, raw), quotes
/// undone.
inline std::vector<std::vector<std::string>> dead_letter_rows(const fs::path& store) {
  auto r = weir_cmd("dead-letters --store " + quoted(store) + " --format csv");
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string cur;
  bool q = false;
  for (size_t i = 0; i < r.out.size(); ++i) {
    char c = r.out[i];
    if (q) {
      if (c == '"' && i + 1 < r.out.size() && r.out[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (c == '"') {
        q = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      q = true;
    } else if (c == ',') {
      row.push_back(cur);
      cur.clear();
    } else if (c == '\n') {
      row.push_back(cur);
      cur.clear();
      rows.push_back(row);
      row.clear();
    } else {
      cur += c;
    }
  }
  if (!rows.empty())
    rows.erase(rows.begin()); // header
  return rows;
}

/// Bytes of all files under `dir`.
inline uint64_t dir_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file())
      n += e.file_size();
  return n;
}

} // namespace weir::test
