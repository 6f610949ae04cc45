// End to end through the `weir` binary, one test case per user-visible feature: follow mode
// with SIGTERM and resume, stdin, NDJSON, late = "update", several pipelines (sliding and
// session windows, every aggregate), preprocessing and dead letters, multi-field keys and the
// query filters, store format versions, exit codes. Every expectation is computed here from the
// raw events by a brute-force reference, never from weir's own output.

#include <catch2/catch.hpp>

#include "tests/background.hpp"
#include "tests/test_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "actors/core/codec.hpp"
#include "store/lmdb.hpp"
#include "store/warehouse.hpp"

namespace fs = std::filesystem;

namespace {

// -- running commands -------------------------------------------------------------------------

const std::string weir_bin = WEIR_BINARY;

using weir::test::command_result;
using weir::test::sh;

/// `weir ARGS` with a time bound.
command_result weir_cmd(const std::string& args) {
  return sh("timeout 60 " + weir_bin + " " + args);
}

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}

using weir::test::temp_dir;
using weir::test::write_file;

void append_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::app);
  f << text;
  f.flush();
}

using weir::test::background;

void sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// -- text -------------------------------------------------------------------------------------

const int64_t base = 1717200000; // 2024-06-01T00:00:00Z

using weir::test::iso;

/// Seconds since the epoch of "YYYY-MM-DDTHH:MM:SSZ"; INT64_MIN when it is not that.
int64_t from_iso(const std::string& s) {
  std::tm tm{};
  int y, mo, d, h, mi, se;
  char z = 0;
  if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d%c", &y, &mo, &d, &h, &mi, &se, &z) != 7 || z != 'Z')
    return INT64_MIN;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  return static_cast<int64_t>(timegm(&tm));
}

std::string num2(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", v);
  return buf;
}

/// RFC 4180 csv: quoted fields may hold the delimiter, doubled quotes and line breaks.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string cur;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          cur += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        cur += c;
      }
      continue;
    }
    if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      row.push_back(cur);
      cur.clear();
      any = true;
    } else if (c == '\n') {
      row.push_back(cur);
      rows.push_back(row);
      row.clear();
      cur.clear();
      any = false;
    } else {
      cur += c;
      any = true;
    }
  }
  if (any || !cur.empty()) {
    row.push_back(cur);
    rows.push_back(row);
  }
  return rows;
}

using weir::test::split;

/// The number after `label` (and spaces) in a `weir run` summary; -1 when absent.
long long summary_value(const std::string& out, const std::string& label) {
  auto p = out.find(label);
  if (p == std::string::npos)
    return -1;
  p += label.size();
  while (p < out.size() && out[p] == ' ')
    ++p;
  return std::atoll(out.c_str() + p);
}

// -- the brute-force reference ----------------------------------------------------------------

struct rec {
  int64_t t;       // seconds
  std::string key; // as shown by query (multi-field keys joined with '|')
  double v;
  std::string attr;
};

struct acc {
  double count = 0, sum = 0, min = INFINITY, max = -INFINITY;
  std::vector<double> vals;
  std::set<std::string> attrs;
  void add(double x, const std::string& a) {
    count += 1;
    sum += x;
    min = std::min(min, x);
    max = std::max(max, x);
    vals.push_back(x);
    attrs.insert(a);
  }
  void merge(const acc& o) {
    count += o.count;
    sum += o.sum;
    min = std::min(min, o.min);
    max = std::max(max, o.max);
    vals.insert(vals.end(), o.vals.begin(), o.vals.end());
    attrs.insert(o.attrs.begin(), o.attrs.end());
  }
};

using wkey = std::tuple<int64_t, int64_t, std::string>; // start, end, key (seconds)

int64_t floor_div(int64_t a, int64_t b) {
  int64_t d = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0)))
    --d;
  return d;
}

struct wspec {
  char kind = 't'; // 't'umbling, 's'liding, 'S'ession
  int64_t size = 0, slide = 0, gap = 0, ooo = 0, lateness = 0;
  bool update = false;
  int64_t horizon = 0;
};

enum class fate { accepted, late, too_late, updated };

/// Event-time windows as documented: W = max accepted (non-late) event time - ooo, the W before
/// a record decides its lateness; tumbling/sliding: late for [s,e) when W >= e + L, dead-lettered
/// when late for all; session: late when W >= t + gap + L, sessions closed by W take no records.
struct reference {
  wspec s;
  bool has_w = false;
  int64_t w = 0;
  int64_t max_t = INT64_MIN;
  std::map<wkey, acc> windows; // tumbling / sliding
  std::map<wkey, int> version; // late = update: committed version per window
  std::set<wkey> touched;      // updated since the last bounded run ended
  struct session {
    int64_t start, end;
    acc a;
  };
  std::map<std::string, std::vector<session>> open; // session windows not closed yet
  std::map<wkey, acc> closed_sessions;
  size_t late = 0, too_late = 0, updated = 0, accepted = 0;
  size_t beside_closed = 0; // session records touching a session the watermark has closed

  explicit reference(wspec spec)
    : s(spec) {}

  void advance(int64_t t) {
    max_t = std::max(max_t, t);
    w = max_t - s.ooo;
    has_w = true;
  }

  fate add(const rec& r) {
    if (s.kind == 'S')
      return add_session(r);
    const int64_t step = s.kind == 't' ? s.size : s.slide;
    const int64_t s0 = floor_div(r.t, step) * step;
    bool all_late = true;
    for (int64_t st = s0; st > r.t - s.size; st -= step)
      if (!(has_w && w >= st + s.size + s.lateness))
        all_late = false;
    if (all_late) {
      if (s.update && w < s0 + s.size + s.lateness + s.horizon) {
        for (int64_t st = s0; st > r.t - s.size; st -= step) {
          wkey k{st, st + s.size, r.key};
          auto it = windows.find(k);
          if (it != windows.end() && w < st + s.size + s.lateness + s.horizon) {
            it->second.add(r.v, r.attr);
            touched.insert(k);
          }
        }
        ++updated;
        return fate::updated;
      }
      if (s.update)
        ++too_late;
      else
        ++late;
      return s.update ? fate::too_late : fate::late;
    }
    for (int64_t st = s0; st > r.t - s.size; st -= step) {
      wkey k{st, st + s.size, r.key};
      if (has_w && w >= st + s.size + s.lateness) {
        auto it = windows.find(k);
        if (s.update && it != windows.end() && w < st + s.size + s.lateness + s.horizon) {
          it->second.add(r.v, r.attr);
          touched.insert(k);
        }
        continue;
      }
      windows[k].add(r.v, r.attr);
    }
    ++accepted;
    advance(r.t);
    return fate::accepted;
  }

  fate add_session(const rec& r) {
    if (has_w && w >= r.t + s.gap + s.lateness) {
      ++late;
      return fate::late;
    }
    auto& v = open[r.key];
    // Sessions the watermark has closed take no more records.
    std::vector<session> keep;
    for (auto& x : v) {
      if (has_w && w >= x.end + s.lateness)
        closed_sessions[{x.start, x.end, r.key}] = x.a;
      else
        keep.push_back(x);
    }
    for (auto& [k, a] : closed_sessions)
      if (std::get<2>(k) == r.key && std::get<0>(k) <= r.t + s.gap && r.t <= std::get<1>(k))
        ++beside_closed;
    session n{r.t, r.t + s.gap, {}};
    n.a.add(r.v, r.attr);
    std::vector<session> rest;
    for (auto& x : keep) {
      if (x.start <= r.t + s.gap && r.t <= x.end) {
        n.start = std::min(n.start, x.start);
        n.end = std::max(n.end, x.end);
        n.a.merge(x.a);
      } else {
        rest.push_back(x);
      }
    }
    rest.push_back(n);
    v = rest;
    ++accepted;
    advance(r.t);
    return fate::accepted;
  }

  /// Everything a bounded input commits: every window, fired at the end.
  std::map<wkey, acc> all() const {
    if (s.kind != 'S')
      return windows;
    auto out = closed_sessions;
    for (auto& [k, v] : open)
      for (auto& x : v)
        out[{x.start, x.end, k}] = x.a;
    return out;
  }

  /// What a stopped (follow mode) run commits: the windows the watermark has passed.
  std::map<wkey, acc> fired() const {
    std::map<wkey, acc> out;
    for (auto& [k, a] : all())
      if (has_w && w >= std::get<1>(k) + s.lateness)
        out[k] = a;
    return out;
  }

  /// The end of a bounded run (late = update bookkeeping): every window is committed, those
  /// updated again get one more version, and the watermark moves past them all.
  void end_bounded_run() {
    for (auto& [k, a] : windows) {
      auto& v = version[k];
      if (v == 0)
        v = 1;
      else if (touched.count(k))
        ++v;
    }
    touched.clear();
    if (has_w) {
      const int64_t step = s.kind == 't' ? s.size : s.slide;
      int64_t mt = std::max(max_t, w + s.ooo);
      w = std::max(w, floor_div(mt, step) * step + s.size + s.lateness);
    }
  }
};

// -- comparing query output with the reference ------------------------------------------------

struct agg_col {
  std::string name;
  std::string fn; // count sum min max avg distinct quantile
  double q = 0;
};

double expected_value(const acc& a, const agg_col& c) {
  if (c.fn == "count")
    return a.count;
  if (c.fn == "sum")
    return a.sum;
  if (c.fn == "min")
    return a.min;
  if (c.fn == "max")
    return a.max;
  if (c.fn == "avg")
    return a.sum / a.count;
  if (c.fn == "distinct")
    return static_cast<double>(a.attrs.size());
  auto v = a.vals;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::floor(c.q * static_cast<double>(v.size() - 1)));
  return v[rank];
}

bool close_enough(double got, double want, const agg_col& c) {
  if (c.fn == "quantile")
    return std::fabs(got - want) <= 0.01 * std::fabs(want) + 1e-4;
  return std::fabs(got - want) <= 1e-4 + 1e-6 * std::fabs(want);
}

/// `weir query` csv as rows by (start, end, key), each a map column -> text.
struct query_table {
  int rc = -1;
  std::string raw;
  std::vector<std::string> header;
  std::map<wkey, std::map<std::string, std::string>> rows;
  size_t row_count = 0;
};

query_table query(const fs::path& store, const std::string& pipeline,
                  const std::string& extra = "") {
  query_table t;
  auto r =
    weir_cmd("query --store " + q(store) + " --pipeline " + pipeline + " --format csv " + extra);
  t.rc = r.rc;
  t.raw = r.out;
  if (r.rc != 0)
    return t;
  auto rows = parse_csv(r.out);
  if (rows.empty())
    return t;
  t.header = rows[0];
  for (size_t i = 1; i < rows.size(); ++i) {
    std::map<std::string, std::string> m;
    for (size_t c = 0; c < rows[i].size() && c < t.header.size(); ++c)
      m[t.header[c]] = rows[i][c];
    t.rows[{from_iso(m["window_start"]), from_iso(m["window_end"]), m["key"]}] = m;
    ++t.row_count;
  }
  return t;
}

/// Differences between a query and the expected windows (empty: equal). `versions` (optional)
/// gives each window's expected version; 1 otherwise.
std::string compare(const query_table& got, const std::map<wkey, acc>& want,
                    const std::vector<agg_col>& cols, const std::map<wkey, int>* versions = nullptr,
                    bool any_version = false) {
  std::ostringstream diff;
  size_t shown = 0;
  auto note = [&](const std::string& s) {
    if (shown++ < 15)
      diff << s << "\n";
  };
  if (got.rc != 0)
    return "query failed (rc " + std::to_string(got.rc) + "): " + got.raw;
  if (got.row_count != got.rows.size())
    note("duplicate rows in the query output: " + std::to_string(got.row_count) + " rows, " +
         std::to_string(got.rows.size()) + " distinct windows");
  for (auto& [k, a] : want) {
    std::string name = iso(std::get<0>(k)) + " " + iso(std::get<1>(k)) + " " + std::get<2>(k);
    auto it = got.rows.find(k);
    if (it == got.rows.end()) {
      note("missing window " + name + " (count " + std::to_string(a.count) + ")");
      continue;
    }
    for (auto& c : cols) {
      auto f = it->second.find(c.name);
      double e = expected_value(a, c);
      if (f == it->second.end() || f->second.empty()) {
        note(name + ": no value for " + c.name);
        continue;
      }
      double g = std::strtod(f->second.c_str(), nullptr);
      if (!close_enough(g, e, c)) {
        std::ostringstream s;
        s.precision(10);
        s << name << ": " << c.name << " = " << f->second << ", expected " << e;
        note(s.str());
      }
    }
    int ver = 1;
    if (versions) {
      auto v = versions->find(k);
      if (v != versions->end())
        ver = v->second;
    }
    auto vf = it->second.find("version");
    if (any_version) {
      if (vf == it->second.end() || std::atoi(vf->second.c_str()) < 1)
        note(name + ": no version");
    } else if (vf == it->second.end() || vf->second != std::to_string(ver))
      note(name + ": version " + (vf == it->second.end() ? "?" : vf->second) + ", expected " +
           std::to_string(ver));
  }
  for (auto& [k, row] : got.rows)
    if (!want.count(k))
      note("unexpected window " + iso(std::get<0>(k)) + " " + iso(std::get<1>(k)) + " " +
           std::get<2>(k) + " (count " + (row.count("count") ? row.at("count") : "?") + ")");
  if (shown > 15)
    diff << "... " << (shown - 15) << " more\n";
  return diff.str();
}

/// Dead letters as rows pipeline, source, offset, reason, raw.
std::vector<std::vector<std::string>> dead_letters(const fs::path& store,
                                                   const std::string& extra = "") {
  auto r = weir_cmd("dead-letters --store " + q(store) + " --format csv " + extra);
  REQUIRE(r.rc == 0);
  auto rows = parse_csv(r.out);
  REQUIRE(!rows.empty());
  REQUIRE(rows[0] == std::vector<std::string>{"pipeline", "source", "offset", "reason", "raw"});
  rows.erase(rows.begin());
  return rows;
}

/// The reason class of a dead letter.
std::string reason_class(const std::string& reason) {
  static const char* prefixes[] = {"line too long", "invalid UTF-8", "wrong column count",
                                   "missing field", "bad integer",   "bad time",
                                   "bad number",    "derive",        "duplicate event id",
                                   "late:",         "too late:",     "bad json"};
  for (auto p : prefixes)
    if (reason.rfind(p, 0) == 0)
      return p;
  return "other: " + reason;
}

/// The committed offset `weir inspect` shows for the one source; -1 when there is none (yet).
long long committed_offset(const fs::path& store) {
  auto r = weir_cmd("inspect --store " + q(store));
  if (r.rc != 0)
    return -1;
  static const std::regex re{"committed offset ([0-9]+)"};
  std::smatch m;
  if (!std::regex_search(r.out, m, re))
    return -1;
  return std::stoll(m[1].str());
}

// -- data -------------------------------------------------------------------------------------

/// In-order events one to three seconds apart with a little disorder (within `ooo`) and a few
/// far behind (late for some windows at least).
std::vector<rec> gen_events(uint64_t seed, size_t n, int64_t start, int nkeys, int64_t ooo,
                            int late_per_mille, int64_t late_min, int64_t late_max) {
  std::mt19937_64 rng(seed);
  static const char* colors[] = {"red", "green", "blue", "cyan", "black"};
  std::vector<rec> out;
  int64_t clock = start;
  for (size_t i = 0; i < n; ++i) {
    clock += static_cast<int64_t>(rng() % 3);
    int64_t t = clock;
    auto r = rng() % 1000;
    if (r < static_cast<uint64_t>(late_per_mille))
      t -= late_min + static_cast<int64_t>(rng() % static_cast<uint64_t>(late_max - late_min + 1));
    else if (r < 100 && ooo > 0)
      t -= static_cast<int64_t>(rng() % static_cast<uint64_t>(ooo + 1));
    std::string key = "k" + std::to_string(rng() % static_cast<uint64_t>(nkeys));
    double v = 1.0 + static_cast<double>(rng() % 50000) / 100.0;
    out.push_back({t, key, v, colors[rng() % 5]});
  }
  return out;
}

std::string csv_of(const std::vector<rec>& evs, bool header = true) {
  std::string s = header ? "ts,k,v,color\n" : "";
  for (auto& e : evs)
    s += iso(e.t) + "," + e.key + "," + num2(e.v) + "," + e.attr + "\n";
  return s;
}

std::string ndjson_of(const std::vector<rec>& evs) {
  std::string s;
  size_t i = 0;
  for (auto& e : evs) {
    // Field order varies and an unused field is there: neither matters.
    if (i++ % 2 == 0)
      s += "{\"ts\": \"" + iso(e.t) + "\", \"k\": \"" + e.key + "\", \"v\": " + num2(e.v) +
           ", \"color\": \"" + e.attr + "\"}\n";
    else
      s += "{\"color\":\"" + e.attr + "\",\"extra\":[1,2],\"v\":" + num2(e.v) + ",\"k\":\"" +
           e.key + "\",\"ts\":\"" + iso(e.t) + "\"}\n";
  }
  return s;
}

/// Values as they read back from the text (two decimals).
void round_values(std::vector<rec>& evs) {
  for (auto& e : evs)
    e.v = std::stod(num2(e.v));
}

std::string source_block(const std::string& path, const std::string& extra = "") {
  return "  [[pipeline.source]]\n  name = \"in\"\n  path = \"" + path + "\"\n" + extra + "\n";
}

const char* fields_block =
  "  [pipeline.fields]\n  time = \"ts\"\n  key = \"k\"\n  measures = [\"v\"]\n"
  "  attributes = [\"color\"]\n\n";

const char* basic_aggs = "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
                         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"v\"\n"
                         "  [[pipeline.aggregate]]\n  fn = \"min\"\n  field = \"v\"\n"
                         "  [[pipeline.aggregate]]\n  fn = \"max\"\n  field = \"v\"\n"
                         "  [[pipeline.aggregate]]\n  fn = \"avg\"\n  field = \"v\"\n"
                         "  [[pipeline.aggregate]]\n  fn = \"distinct\"\n  field = \"color\"\n";

const std::vector<agg_col> basic_cols = {{"count", "count"}, {"sum_v", "sum"},
                                         {"min_v", "min"},   {"max_v", "max"},
                                         {"avg_v", "avg"},   {"distinct_color", "distinct"}};

std::string tumbling_config(const std::string& path, int64_t size, int64_t ooo, int64_t lateness,
                            const std::string& source_extra = "",
                            const std::string& window_extra = "") {
  std::ostringstream c;
  c << "store = \"store\"\ncommit_interval = \"20ms\"\nbatch_bytes = 4096\n\n"
    << "[[pipeline]]\nname = \"p\"\npartitions = 3\n\n"
    << source_block(path, source_extra) << fields_block
    << "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"" << size << "s\"\n"
    << "  out_of_orderness = \"" << ooo << "s\"\n  allowed_lateness = \"" << lateness << "s\"\n"
    << window_extra << "\n"
    << basic_aggs;
  return c.str();
}

} // namespace

// -- 1. follow mode ---------------------------------------------------------------------------

TEST_CASE("follow mode - SIGTERM commits what the watermark passed and a restart resumes",
          "[e2e][follow]") {
  temp_dir dir;
  const int64_t size = 10, ooo = 3, lateness = 2;
  auto evs = gen_events(101, 1400, base, 5, ooo, 20, 15, 40);
  round_values(evs);
  auto line = [&](size_t i) { return csv_of({evs[i]}, false); };
  const fs::path input = dir.path / "in.csv";
  const fs::path store = dir.path / "store";
  write_file(dir.path / "p.toml",
             tumbling_config("in.csv", size, ooo, lateness, "  follow = true\n"));
  // Before the first run: 300 lines.
  std::string text = "ts,k,v,color\n";
  size_t next = 0;
  for (; next < 300; ++next)
    text += line(next);
  write_file(input, text);

  auto run_following = [&](size_t upto, const char* log) {
    background proc({weir_bin, "run", (dir.path / "p.toml").string(), "--threads", "2"},
                    dir.path / log);
    REQUIRE(proc.started());
    // Lines arrive over a few hundred ms, one of them in two writes.
    while (next < upto) {
      sleep_ms(60);
      std::string burst;
      for (size_t k = 0; k < 100 && next < upto; ++k, ++next)
        burst += line(next);
      if (next == upto && burst.size() > 10) {
        append_file(input, burst.substr(0, burst.size() - 7));
        sleep_ms(80); // a partial last line must wait for its line end
        append_file(input, burst.substr(burst.size() - 7));
      } else {
        append_file(input, burst);
      }
    }
    const auto file_size = static_cast<long long>(fs::file_size(input));
    // Wait (bounded) until everything is committed, then stop.
    long long off = -1;
    for (int i = 0; i < 200 && off != file_size; ++i) {
      sleep_ms(50);
      REQUIRE(proc.running());
      off = committed_offset(store);
    }
    INFO(proc.log());
    REQUIRE(off == file_size);
    proc.signal(SIGTERM);
    int rc = proc.wait(20);
    INFO(proc.log());
    REQUIRE(rc == 0);
    CHECK(committed_offset(store) == file_size);
  };

  // First run: 300 lines there, 400 more while it runs.
  run_following(700, "run1.log");
  reference ref1({'t', size, size, 0, ooo, lateness});
  for (size_t i = 0; i < 700; ++i)
    ref1.add(evs[i]);
  REQUIRE(ref1.late > 0);
  auto want1 = ref1.fired();
  REQUIRE(want1.size() < ref1.windows.size()); // some windows are still open
  REQUIRE(want1.size() > 100);
  auto got1 = query(store, "p");
  INFO(got1.raw.substr(0, 2000));
  CHECK(compare(got1, want1, basic_cols) == "");
  CHECK(dead_letters(store).size() == ref1.late);

  // Stopped: 300 more lines. Second run: 400 more while it runs.
  std::string more;
  for (; next < 1000; ++next)
    more += line(next);
  append_file(input, more);
  run_following(evs.size(), "run2.log");
  reference ref2({'t', size, size, 0, ooo, lateness});
  for (auto& e : evs)
    ref2.add(e);
  auto got2 = query(store, "p");
  INFO(got2.raw.substr(0, 2000));
  CHECK(compare(got2, ref2.fired(), basic_cols) == "");
  auto dl = dead_letters(store);
  CHECK(dl.size() == ref2.late);
  for (auto& d : dl)
    CHECK(reason_class(d[3]) == "late:");
}

TEST_CASE("follow mode - SIGTERM while lines are still arriving commits a consistent prefix",
          "[e2e][follow]") {
  temp_dir dir;
  const int64_t size = 10, ooo = 3, lateness = 2;
  auto evs = gen_events(111, 1500, base, 4, ooo, 20, 15, 40);
  round_values(evs);
  const fs::path input = dir.path / "in.csv";
  const fs::path store = dir.path / "store";
  wspec spec{'t', size, size, 0, ooo, lateness};
  std::string window = "  kind = \"tumbling\"\n  size = \"10s\"\n";
  SECTION("tumbling") {}
  SECTION("sliding") {
    spec = {'s', size, 5, 0, ooo, lateness};
    window = "  kind = \"sliding\"\n  size = \"10s\"\n  slide = \"5s\"\n";
  }
  SECTION("session") {
    spec = {'S', 0, 0, 4, ooo, lateness};
    window = "  kind = \"session\"\n  gap = \"4s\"\n";
  }
  {
    std::ostringstream c;
    c << "store = \"store\"\ncommit_interval = \"20ms\"\nbatch_bytes = 4096\n\n"
      << "[[pipeline]]\nname = \"p\"\npartitions = 3\n\n"
      << source_block("in.csv", "  follow = true\n") << fields_block << "  [pipeline.window]\n"
      << window << "  out_of_orderness = \"" << ooo << "s\"\n  allowed_lateness = \"" << lateness
      << "s\"\n\n"
      << basic_aggs;
    write_file(dir.path / "p.toml", c.str());
  }
  std::string text = "ts,k,v,color\n";
  std::vector<size_t> line_end; // offset just past line i
  for (auto& e : evs) {
    text += csv_of({e}, false);
    line_end.push_back(text.size());
  }
  const size_t first = 200;
  write_file(input, text.substr(0, line_end[first - 1]));
  size_t written = line_end[first - 1];
  {
    background proc({weir_bin, "run", (dir.path / "p.toml").string(), "--threads", "2"},
                    dir.path / "run1.log");
    REQUIRE(proc.started());
    // Running (something committed) before the signal, so the handler is installed.
    for (int i = 0; i < 200 && committed_offset(store) <= 0; ++i)
      sleep_ms(25);
    REQUIRE(committed_offset(store) > 0);
    // Chunks of 397 bytes, every 10 ms: cut anywhere, also inside lines. SIGTERM midway.
    size_t target = line_end[999];
    bool signalled = false;
    while (written < target) {
      size_t n = std::min<size_t>(397, target - written);
      append_file(input, text.substr(written, n));
      written += n;
      sleep_ms(10);
      if (!signalled && written > line_end[600]) {
        proc.signal(SIGTERM);
        signalled = true;
      }
    }
    int rc = proc.wait(20);
    INFO(proc.log());
    REQUIRE(rc == 0);
  }
  // The committed offset is a line boundary; the results are those of exactly that prefix.
  auto off = committed_offset(store);
  INFO("committed offset " << off);
  auto it = std::find(line_end.begin(), line_end.end(), static_cast<size_t>(off));
  REQUIRE(it != line_end.end());
  size_t lines_done = static_cast<size_t>(it - line_end.begin()) + 1;
  CHECK(lines_done >= first);
  UNSCOPED_INFO("stopped after line " << lines_done);
  reference ref1(spec);
  for (size_t i = 0; i < lines_done; ++i)
    ref1.add(evs[i]);
  CHECK(compare(query(store, "p"), ref1.fired(), basic_cols) == "");
  CHECK(dead_letters(store).size() == ref1.late);

  // The rest of the file, then a second run resumes at the committed offset.
  append_file(input, text.substr(written));
  {
    background proc({weir_bin, "run", (dir.path / "p.toml").string()}, dir.path / "run2.log");
    REQUIRE(proc.started());
    long long o = -1;
    for (int i = 0; i < 200 && o != static_cast<long long>(text.size()); ++i) {
      sleep_ms(50);
      o = committed_offset(store);
    }
    REQUIRE(o == static_cast<long long>(text.size()));
    proc.signal(SIGTERM);
    int rc = proc.wait(20);
    INFO(proc.log());
    REQUIRE(rc == 0);
  }
  reference ref2(spec);
  for (auto& e : evs)
    ref2.add(e);
  CHECK(compare(query(store, "p"), ref2.fired(), basic_cols) == "");
  CHECK(dead_letters(store).size() == ref2.late);
}

// -- 2 and 5. stdin and NDJSON ------------------------------------------------------------------

TEST_CASE("stdin and NDJSON sources give the same results as the csv file source",
          "[e2e][stdin][ndjson]") {
  temp_dir dir;
  const int64_t size = 60, ooo = 5, lateness = 5;
  auto evs = gen_events(202, 4000, base, 6, ooo, 10, 40, 300);
  round_values(evs);
  reference ref({'t', size, size, 0, ooo, lateness});
  for (auto& e : evs)
    ref.add(e);
  REQUIRE(ref.late > 0);
  auto want = ref.all();
  // The last line has no line end (a bounded input counts it all the same); the NDJSON file
  // has CRLF line ends.
  std::string csv = csv_of(evs);
  csv.pop_back();
  write_file(dir.path / "in.csv", csv);
  std::string nd;
  for (char ch : ndjson_of(evs)) {
    if (ch == '\n')
      nd += '\r';
    nd += ch;
  }
  write_file(dir.path / "in.ndjson", nd);
  for (auto sub : {"file", "stdin", "ndjson", "ndjson-stdin"})
    fs::create_directories(dir.path / sub);
  write_file(dir.path / "file" / "p.toml", tumbling_config("../in.csv", size, ooo, lateness));
  write_file(dir.path / "stdin" / "p.toml",
             tumbling_config("-", size, ooo, lateness, "  format = \"csv\"\n"));
  write_file(dir.path / "ndjson" / "p.toml", tumbling_config("../in.ndjson", size, ooo, lateness));
  write_file(dir.path / "ndjson-stdin" / "p.toml",
             tumbling_config("-", size, ooo, lateness, "  format = \"ndjson\"\n"));

  auto rf = weir_cmd("run --final " + q(dir.path / "file" / "p.toml"));
  INFO(rf.out);
  REQUIRE(rf.rc == 0);
  auto got_file = query(dir.path / "file" / "store", "p");
  CHECK(compare(got_file, want, basic_cols) == "");
  CHECK(dead_letters(dir.path / "file" / "store").size() == ref.late);

  SECTION("stdin (a pipe, with a pause in the middle of a line)") {
    // The input arrives in two parts, cut in the middle of a line, 200 ms apart.
    size_t cut = csv.size() / 2 + 3;
    auto rs = sh("(head -c " + std::to_string(cut) + " " + q(dir.path / "in.csv")
                 + "; sleep 0.2; tail -c +" + std::to_string(cut + 1) + " "
                 + q(dir.path / "in.csv") + ") | timeout 60 " + weir_bin + " run --final "
                 + q(dir.path / "stdin" / "p.toml"));
    INFO(rs.out);
    REQUIRE(rs.rc == 0);
    CHECK(summary_value(rs.out, "events read") == static_cast<long long>(evs.size()));
    auto got = query(dir.path / "stdin" / "store", "p");
    CHECK(compare(got, want, basic_cols) == "");
    CHECK(got.raw == got_file.raw);
    CHECK(dead_letters(dir.path / "stdin" / "store").size() == ref.late);
    // The committed offset of stdin is the number of bytes read.
    CHECK(committed_offset(dir.path / "stdin" / "store") == static_cast<long long>(csv.size()));
  }
  SECTION("ndjson file") {
    auto rn = weir_cmd("run --final " + q(dir.path / "ndjson" / "p.toml"));
    INFO(rn.out);
    REQUIRE(rn.rc == 0);
    CHECK(summary_value(rn.out, "accepted") == static_cast<long long>(evs.size() - ref.late));
    auto got = query(dir.path / "ndjson" / "store", "p");
    CHECK(compare(got, want, basic_cols) == "");
    CHECK(got.raw == got_file.raw);
    CHECK(dead_letters(dir.path / "ndjson" / "store").size() == ref.late);
  }
  SECTION("ndjson on stdin") {
    auto rn = sh("cat " + q(dir.path / "in.ndjson") + " | timeout 60 " + weir_bin + " run --final "
                 + q(dir.path / "ndjson-stdin" / "p.toml"));
    INFO(rn.out);
    REQUIRE(rn.rc == 0);
    auto got = query(dir.path / "ndjson-stdin" / "store", "p");
    CHECK(compare(got, want, basic_cols) == "");
    CHECK(got.raw == got_file.raw);
  }
}

// -- 3. late = "update" -------------------------------------------------------------------------

TEST_CASE("late update - records within the update horizon re-commit their window",
          "[e2e][update]") {
  temp_dir dir;
  const int64_t size = 60, ooo = 5, lateness = 10;
  // Run 1: nothing late (disorder within out_of_orderness).
  auto evs = gen_events(303, 2000, base, 4, ooo, 0, 0, 0);
  round_values(evs);
  const fs::path input = dir.path / "in.csv";
  const fs::path store = dir.path / "store";
  write_file(input, csv_of(evs));
  write_file(dir.path / "p.toml",
             tumbling_config("in.csv", size, ooo, lateness, "",
                             "  late = \"update\"\n  update_horizon = \"1d\"\n"));
  wspec spec{'t', size, size, 0, ooo, lateness, true, 86400};
  reference ref(spec);
  for (auto& e : evs)
    REQUIRE(ref.add(e) == fate::accepted);
  ref.end_bounded_run();
  auto r1 = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r1.out);
  REQUIRE(r1.rc == 0);
  CHECK(compare(query(store, "p"), ref.windows, basic_cols, &ref.version) == "");

  // Late records for windows that exist (same key, earlier window), appended twice.
  std::mt19937_64 rng(33);
  const int64_t span = evs.back().t - base;
  auto late_batch = [&](size_t n) {
    std::vector<rec> out;
    while (out.size() < n) {
      const auto& src = evs[rng() % evs.size()];
      rec r = src;
      // Same key and time as a record committed before: its window exists.
      r.v = std::stod(num2(1000.0 + static_cast<double>(rng() % 1000)));
      r.attr = "magenta"; // new colors: distinct must grow as well
      out.push_back(r);
    }
    return out;
  };
  REQUIRE(span > 600);
  auto l1 = late_batch(40);
  // One record past the update horizon (two days before anything else).
  rec too_old{base - 2 * 86400, "k1", 5.0, "red"};
  l1.push_back(too_old);
  append_file(input, csv_of(l1, false));
  for (auto& e : l1)
    ref.add(e);
  CHECK(ref.updated == 40);
  CHECK(ref.too_late == 1);
  ref.end_bounded_run();
  auto r2 = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r2.out);
  REQUIRE(r2.rc == 0);
  CHECK(summary_value(r2.out, "late (updated)") == 40);
  CHECK(summary_value(r2.out, "late (dead letter)") == 1);
  auto got2 = query(store, "p");
  CHECK(compare(got2, ref.windows, basic_cols, &ref.version) == "");

  auto l2 = late_batch(25);
  append_file(input, csv_of(l2, false));
  for (auto& e : l2)
    ref.add(e);
  ref.end_bounded_run();
  auto r3 = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r3.out);
  REQUIRE(r3.rc == 0);
  auto got3 = query(store, "p");
  CHECK(compare(got3, ref.windows, basic_cols, &ref.version) == "");
  int max_version = 0;
  for (auto& [k, v] : ref.version)
    max_version = std::max(max_version, v);
  CHECK(max_version == 3);

  auto dl = dead_letters(store);
  REQUIRE(dl.size() == 1);
  CHECK(reason_class(dl[0][3]) == "too late:");
  auto too_old_line = csv_of({too_old}, false);
  too_old_line.pop_back();
  CHECK(dl[0][4] == too_old_line);
}

TEST_CASE("late update - in one run the final values include every late record", "[e2e][update]") {
  temp_dir dir;
  const int64_t size = 60, ooo = 5, lateness = 10;
  auto evs = gen_events(313, 3000, base, 4, ooo, 0, 0, 0);
  round_values(evs);
  // Every 30th record a copy of one 300 records before (same key and time: its window
  // exists), late by then, within the horizon.
  std::vector<rec> all;
  for (size_t i = 0; i < evs.size(); ++i) {
    all.push_back(evs[i]);
    if (i >= 300 && i % 30 == 0) {
      rec r = evs[i - 300];
      r.v = 999.0;
      r.attr = "magenta";
      all.push_back(r);
    }
  }
  reference ref({'t', size, size, 0, ooo, lateness, true, 86400});
  for (auto& e : all)
    ref.add(e);
  REQUIRE(ref.updated > 50);
  REQUIRE(ref.late + ref.too_late == 0);
  write_file(dir.path / "in.csv", csv_of(all));
  write_file(dir.path / "p.toml",
             tumbling_config("in.csv", size, ooo, lateness, "",
                             "  late = \"update\"\n  update_horizon = \"1d\"\n"));
  auto r = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(summary_value(r.out, "late (updated)") == static_cast<long long>(ref.updated));
  // Which version a window ends with depends on how the input fell into epochs; the values
  // do not.
  CHECK(compare(query(dir.path / "store", "p"), ref.windows, basic_cols, nullptr, true) == "");
  CHECK(dead_letters(dir.path / "store").empty());
}

// Regression: a late record of a key that had no record in its window must open that window
// (it was once counted as "late (updated)" and then dropped).
TEST_CASE("late update - a late record of a key without a result in its window is not lost",
          "[e2e][update]") {
  temp_dir dir;
  const int64_t size = 60, ooo = 5, lateness = 10;
  auto evs = gen_events(323, 600, base, 2, ooo, 0, 0, 0); // keys k0 and k1
  round_values(evs);
  const fs::path input = dir.path / "in.csv";
  const fs::path store = dir.path / "store";
  write_file(input, csv_of(evs));
  write_file(dir.path / "p.toml",
             tumbling_config("in.csv", size, ooo, lateness, "",
                             "  late = \"update\"\n  update_horizon = \"1d\"\n"));
  auto r1 = weir_cmd("run --final " + q(dir.path / "p.toml"));
  REQUIRE(r1.rc == 0);
  // Late, within the horizon, in a window that fired for k0 and k1 but never saw "knew".
  const uint64_t offset = fs::file_size(input);
  rec late{base + 130, "knew", 42.0, "red"};
  append_file(input, csv_of({late}, false));
  auto r2 = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r2.out);
  REQUIRE(r2.rc == 0);
  auto got = query(store, "p");
  bool in_results = got.rows.count(wkey{base + 120, base + 180, "knew"}) > 0;
  bool dead = false;
  for (auto& d : dead_letters(store))
    dead = dead || d[2] == std::to_string(offset);
  INFO("the record " << csv_of({late}, false) << "is accepted ("
                     << summary_value(r2.out, "accepted")
                     << "), but shows in no result and no dead letter");
  CHECK((in_results || dead));
  if (in_results)
    CHECK(got.rows[wkey{base + 120, base + 180, "knew"}]["count"] == "1");
}

// Regression: the final watermark of a bounded run comes from the largest event time accepted,
// so a run with nothing new must not move it (it once moved one window per run).
TEST_CASE("bounded re-run - a run with nothing new does not move the watermark", "[e2e][rerun]") {
  temp_dir dir;
  const fs::path input = dir.path / "in.csv";
  const fs::path store = dir.path / "store";
  std::vector<rec> first = {{base + 100, "k0", 1.0, "red"}, {base + 125, "k0", 2.0, "red"}};
  write_file(input, csv_of(first));
  write_file(dir.path / "p.toml", tumbling_config("in.csv", 60, 0, 0));
  REQUIRE(weir_cmd("run --final " + q(dir.path / "p.toml")).rc == 0);
  // The same input again: nothing to do.
  REQUIRE(weir_cmd("run --final " + q(dir.path / "p.toml")).rc == 0);
  // A record in the window after the last one committed: on time (the reference is the same
  // whether or not the empty run happened).
  rec next{base + 190, "k0", 4.0, "red"};
  append_file(input, csv_of({next}, false));
  auto r = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  reference ref({'t', 60, 60, 0, 0, 0});
  for (auto& e : first)
    ref.add(e);
  ref.end_bounded_run();
  CHECK(ref.add(next) == fate::accepted);
  CHECK(compare(query(store, "p"), ref.windows, basic_cols) == "");
  CHECK(dead_letters(store).empty());
}

// Regression: every run's csv stream on stdin starts with its own header line, wherever its
// offset in the source is (it was once recognised at offset 0 only).
TEST_CASE("stdin - a second run reads a new csv stream with its header", "[e2e][stdin]") {
  temp_dir dir;
  const fs::path store = dir.path / "store";
  auto evs = gen_events(909, 400, base, 3, 0, 0, 0, 0);
  round_values(evs);
  std::vector<rec> a(evs.begin(), evs.begin() + 200), b(evs.begin() + 200, evs.end());
  // b starts in a later window than a's last, so none of it is late after a's run.
  for (auto& e : b)
    e.t += 600;
  write_file(dir.path / "a.csv", csv_of(a));
  write_file(dir.path / "b.csv", csv_of(b));
  write_file(dir.path / "p.toml", tumbling_config("-", 60, 0, 0, "  format = \"csv\"\n"));
  auto r1 = sh("cat " + q(dir.path / "a.csv") + " | timeout 60 " + weir_bin + " run --final "
               + q(dir.path / "p.toml"));
  REQUIRE(r1.rc == 0);
  auto r2 = sh("cat " + q(dir.path / "b.csv") + " | timeout 60 " + weir_bin + " run --final "
               + q(dir.path / "p.toml"));
  INFO(r2.out);
  REQUIRE(r2.rc == 0);
  CHECK(summary_value(r2.out, "accepted") == static_cast<long long>(b.size()));
  reference ref({'t', 60, 60, 0, 0, 0});
  for (auto& e : a)
    ref.add(e);
  ref.end_bounded_run();
  for (auto& e : b)
    CHECK(ref.add(e) == fate::accepted);
  CHECK(compare(query(store, "p"), ref.windows, basic_cols) == "");
  auto dl = dead_letters(store);
  INFO((dl.empty() ? std::string{} : dl[0][3]));
  CHECK(dl.empty());
}

// -- 4. several pipelines: sliding and session windows ------------------------------------------

TEST_CASE("several pipelines - sliding windows with every aggregate and session windows",
          "[e2e][sliding][session]") {
  temp_dir dir;
  const int64_t size = 30, slide = 10, gap = 20, ooo = 5, lateness = 5;
  // Keys of very different frequency, pauses of a minute now and then: sessions of one event,
  // long sessions, sessions split by pauses. A few records far behind.
  std::mt19937_64 rng(404);
  static const char* colors[] = {"red", "green", "blue", "cyan", "black"};
  std::vector<rec> evs;
  int64_t clock = base;
  int64_t kz_time = 0;
  for (int i = 0; i < 3000; ++i) {
    clock += static_cast<int64_t>(rng() % 4);
    if (i % 250 == 249)
      clock += 60;
    int64_t t = clock;
    auto r = rng() % 1000;
    if (r < 15)
      t -= 10 + static_cast<int64_t>(rng() % 190);
    else if (r < 100)
      t -= static_cast<int64_t>(rng() % (ooo + 1));
    auto kr = rng() % 100;
    std::string key = kr < 40   ? "k0"
                      : kr < 65 ? "k1"
                      : kr < 80 ? "k2"
                      : kr < 90 ? "k3"
                      : kr < 97 ? "k4"
                                : "k5";
    double v = std::stod(num2(0.5 + static_cast<double>(rng() % 100000) / 100.0));
    evs.push_back({t, key, v, colors[rng() % 5]});
    // Now and then a key "kz" with one event, and 25 events later one more, 15 s after the
    // first: by then the watermark has closed the first session, so the second starts its own.
    if (i % 400 == 100)
      kz_time = clock;
    if (i % 400 == 125)
      evs.push_back({kz_time + 15, "kz", 1.0, "red"});
    if (i % 400 == 100)
      evs.push_back({kz_time, "kz", 2.0, "red"});
  }
  write_file(dir.path / "in.csv", csv_of(evs));
  std::ostringstream c;
  c << "store = \"store\"\ncommit_interval = \"20ms\"\nbatch_bytes = 8192\n\n"
    << "[[pipeline]]\nname = \"slide\"\npartitions = 2\n\n"
    << source_block("in.csv") << fields_block
    << "  [pipeline.window]\n  kind = \"sliding\"\n  size = \"" << size << "s\"\n  slide = \""
    << slide << "s\"\n  out_of_orderness = \"" << ooo << "s\"\n  allowed_lateness = \"" << lateness
    << "s\"\n\n"
    << basic_aggs << "  [[pipeline.aggregate]]\n  fn = \"quantile\"\n  field = \"v\"\n  q = 0.5\n"
    << "  name = \"median\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"quantile\"\n  field = \"v\"\n  q = 0.99\n"
    << "  name = \"p99\"\n\n"
    << "[[pipeline]]\nname = \"sess\"\npartitions = 3\n\n"
    << source_block("in.csv") << fields_block
    << "  [pipeline.window]\n  kind = \"session\"\n  gap = \"" << gap << "s\"\n"
    << "  out_of_orderness = \"" << ooo << "s\"\n  allowed_lateness = \"" << lateness << "s\"\n\n"
    << "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"v\"\n  name = \"total\"\n";
  write_file(dir.path / "multi.toml", c.str());

  reference sliding({'s', size, slide, 0, ooo, lateness});
  reference session({'S', 0, 0, gap, ooo, lateness});
  size_t partly_late = 0;
  for (auto& e : evs) {
    // Records late for some of their sliding windows but not all: only the others count them.
    if (sliding.has_w) {
      int64_t s0 = floor_div(e.t, slide) * slide;
      bool first_late = sliding.w >= s0 - slide * 2 + size + lateness;
      bool last_late = sliding.w >= s0 + size + lateness;
      if (first_late && !last_late)
        ++partly_late;
    }
    sliding.add(e);
    session.add(e);
  }
  REQUIRE(sliding.late > 0);
  REQUIRE(session.late > 0);
  REQUIRE(partly_late > 0);
  REQUIRE(session.beside_closed > 0);

  auto r = weir_cmd("run --final " + q(dir.path / "multi.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto sl_cols = basic_cols;
  sl_cols.push_back({"median", "quantile", 0.5});
  sl_cols.push_back({"p99", "quantile", 0.99});
  auto got_sl = query(dir.path / "store", "slide");
  CHECK(got_sl.header == std::vector<std::string>{"window_start", "window_end", "key", "count",
                                                  "sum_v", "min_v", "max_v", "avg_v",
                                                  "distinct_color", "median", "p99", "version"});
  CHECK(compare(got_sl, sliding.all(), sl_cols) == "");
  auto want_sess = session.all();
  size_t multi_event_sessions = 0, single = 0;
  for (auto& [k, a] : want_sess)
    (a.count > 1 ? multi_event_sessions : single) += 1;
  CHECK(multi_event_sessions > 10);
  CHECK(single > 5);
  auto got_ss = query(dir.path / "store", "sess");
  CHECK(compare(got_ss, want_sess, {{"count", "count"}, {"total", "sum"}}) == "");

  CHECK(dead_letters(dir.path / "store", "--pipeline slide").size() == sliding.late);
  CHECK(dead_letters(dir.path / "store", "--pipeline sess").size() == session.late);
  size_t late_rows = 0;
  for (auto& d : dead_letters(dir.path / "store"))
    late_rows += reason_class(d[3]) == "late:" ? 1 : 0;
  CHECK(late_rows == sliding.late + session.late);
}

// -- 6. preprocessing ---------------------------------------------------------------------------

namespace {

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size())
      return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2)
        return false;
    i += n;
  }
  return true;
}

bool full_double(const std::string& s, double& out) {
  if (s.empty())
    return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(out);
}

bool full_int(const std::string& s) {
  if (s.empty())
    return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size())
    return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9')
      return false;
  return true;
}

} // namespace

TEST_CASE("preprocess - filters, rename, derive, required, types, dedupe and dead letters",
          "[e2e][preprocess]") {
  temp_dir dir;
  const int64_t size = 60, ooo = 5;
  const size_t max_line = 200;
  std::mt19937_64 rng(606);
  struct row {
    std::string id, ts, usr, amount, qty, country, status;
    bool short_row = false;
  };
  std::vector<row> rows;
  static const char* countries[] = {"de", "fr", "us"};
  int64_t clock = base;
  for (int i = 0; i < 1500; ++i) {
    clock += 1 + static_cast<int64_t>(rng() % 2);
    row r;
    r.id = "e" + std::to_string(i);
    int64_t t = clock - (rng() % 10 == 0 ? static_cast<int64_t>(rng() % (ooo + 1)) : 0);
    r.ts = std::to_string(t);
    r.usr = "u" + std::to_string(rng() % 7);
    r.amount = num2(static_cast<double>(rng() % 40000) / 100.0);
    r.qty = std::to_string(1 + rng() % 9);
    r.country = countries[rng() % 3];
    r.status = "ok";
    switch (i % 50) {
      case 3:
        r.amount = "-5.00";
        break; // filtered: min
      case 5:
        r.amount = "700.50";
        break; // filtered: max
      case 7:
        r.country = "xx";
        break; // filtered: in
      case 9:
        r.status = "failed";
        break; // filtered: eq
      case 11:
        r.amount = "399.00";
        r.qty = "9";
        break; // filtered: derived total max
      case 13:
        r.amount = "12.x5";
        break; // bad number
      case 15:
        r.qty = "2.5";
        break; // bad integer (types)
      case 17:
        r.ts = "notatime";
        break; // bad time
      case 19:
        r.status = "";
        break; // missing required field
      case 21:
        r.usr = "";
        break; // missing key
      case 23:
        r.id = "";
        break; // missing event id
      case 25:
        r.short_row = true;
        break; // wrong column count
      case 27:
        r.country = "d\xC3(";
        break;                                              // invalid UTF-8
      case 29:                                              // line too long
        r.country = std::string(i == 29 ? 5000 : 300, 'a'); // once longer than a batch
        break;
      case 31:
        r.qty = "";
        break; // derive: missing input
      case 33:
        r.ts = std::to_string(clock - 200);
        break; // late
      case 35:
        r.amount = "";
        break; // derive: missing input
      default:
        break;
    }
    rows.push_back(r);
    if (i % 50 == 40) {
      row repeat = rows[rows.size() - 1 - rng() % 20]; // a repeat of a recent row
      rows.push_back(repeat);
    }
  }
  // Rejected rows sent again corrected: their ids were never accepted, so they pass.
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].amount == "12.x5" && i % 3 == 0) {
      row fixed = rows[i];
      fixed.amount = "12.50";
      fixed.ts = std::to_string(clock);
      rows.push_back(fixed);
    }
  // The text, and per line its offset.
  std::string text = "id,ts,usr,amount,qty,country,status\n";
  std::vector<uint64_t> offsets;
  std::vector<std::string> lines;
  for (auto& r : rows) {
    std::string l = r.id + "," + r.ts + "," + r.usr + "," + r.amount + "," + r.qty + "," +
                    r.country + (r.short_row ? "" : "," + r.status);
    offsets.push_back(text.size());
    lines.push_back(l);
    text += l + "\n";
  }
  // A blank line is no record.
  text += "\n";
  write_file(dir.path / "pp.csv", text);
  std::ostringstream c;
  c << "store = \"store\"\ncommit_interval = \"20ms\"\nbatch_bytes = 2048\n\n"
    << "[[pipeline]]\nname = \"pp\"\npartitions = 2\n\n"
    << "  [[pipeline.source]]\n  name = \"in\"\n  path = \"pp.csv\"\n  max_line_bytes = "
    << max_line << "\n\n"
    << "  [pipeline.fields]\n  event_id = \"id\"\n  time = \"ts\"\n"
    << "  time_format = \"epoch_s\"\n  key = [\"user\"]\n  measures = [\"amount\", \"qty\"]\n"
    << "  attributes = [\"country\", \"state\"]\n\n"
    << "  [pipeline.preprocess]\n  required = [\"state\"]\n  types = { qty = \"int\" }\n"
    << "  rename = { usr = \"user\", status = \"state\" }\n"
    << "  derive = [ { name = \"total\", expr = \"amount * qty + 1\" } ]\n"
    << "  filters = [\n    { field = \"amount\", min = 0, max = 500 },\n"
    << "    { field = \"country\", in = [\"de\", \"fr\", \"us\"] },\n"
    << "    { field = \"state\", eq = \"ok\" },\n    { field = \"total\", max = 3000 },\n  ]\n"
    << "  dedupe = true\n  dedupe_horizon = \"1h\"\n\n"
    << "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"" << size << "s\"\n"
    << "  out_of_orderness = \"" << ooo << "s\"\n\n"
    << "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"total\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"max\"\n  field = \"qty\"\n"
    << "  [[pipeline.aggregate]]\n  fn = \"distinct\"\n  field = \"country\"\n";
  write_file(dir.path / "pp.toml", c.str());

  // The reference, from the text of each line, in the documented order of the checks.
  reference win({'t', size, size, 0, ooo, 0});
  std::map<uint64_t, std::string> want_dl; // offset -> reason class
  std::map<wkey, acc> totals;              // per window: count, sum(total)
  std::map<wkey, acc> amounts;             // per window: sum(amount), max(qty) via vals
  std::map<wkey, double> max_qty;          // per window: max(qty)
  std::set<std::string> accepted_ids;
  size_t filtered = 0, duplicates = 0;
  auto classify = [&](size_t i) {
    const auto& l = lines[i];
    auto dead = [&](const char* why) { want_dl[offsets[i]] = why; };
    if (l.size() > max_line) {
      dead("line too long");
      return;
    }
    if (!valid_utf8(l)) {
      dead("invalid UTF-8");
      return;
    }
    auto f = split(l, ',');
    if (f.size() != 7) {
      dead("wrong column count");
      return;
    }
    const auto &id = f[0], &ts = f[1], &usr = f[2], &amount = f[3], &qty = f[4], &country = f[5],
               &status = f[6];
    if (status.empty()) {
      dead("missing field");
      return;
    }
    if (!qty.empty() && !full_int(qty)) {
      dead("bad integer");
      return;
    }
    if (!full_int(ts)) {
      dead("bad time");
      return;
    }
    if (usr.empty() || id.empty()) {
      dead("missing field");
      return;
    }
    double a = NAN, qn = NAN;
    if ((!amount.empty() && !full_double(amount, a)) || (!qty.empty() && !full_double(qty, qn))) {
      dead("bad number");
      return;
    }
    if (amount.empty() || qty.empty()) {
      dead("derive");
      return;
    }
    double total = a * qn + 1;
    if (a < 0 || a > 500 || (country != "de" && country != "fr" && country != "us") ||
        status != "ok" || total > 3000) {
      ++filtered;
      return;
    }
    if (accepted_ids.count(id)) {
      ++duplicates;
      dead("duplicate event id");
      return;
    }
    rec r{std::stoll(ts), usr, total, country};
    if (win.add(r) == fate::late) {
      dead("late:");
      return;
    }
    accepted_ids.insert(id);
    int64_t s = floor_div(r.t, size) * size;
    wkey k{s, s + size, usr};
    totals[k].add(total, country);
    amounts[k].add(a, country);
    max_qty[k] = std::max(max_qty[k], qn);
  };
  for (size_t i = 0; i < lines.size(); ++i)
    classify(i);
  std::map<std::string, size_t> per_class;
  for (auto& [o, why] : want_dl)
    ++per_class[why];
  REQUIRE(per_class.size() == 10);
  REQUIRE(duplicates > 0);

  auto r = weir_cmd("run --final " + q(dir.path / "pp.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(summary_value(r.out, "events read") == static_cast<long long>(lines.size()));
  CHECK(summary_value(r.out, "accepted") == static_cast<long long>(win.accepted));
  CHECK(summary_value(r.out, "filtered") == static_cast<long long>(filtered));
  CHECK(summary_value(r.out, "duplicates") == static_cast<long long>(duplicates));
  CHECK(summary_value(r.out, "late (dead letter)") == static_cast<long long>(win.late));
  CHECK(summary_value(r.out, "rejected") ==
        static_cast<long long>(want_dl.size() - duplicates - win.late));

  // Results: count and sum(total) per window and user; sum(amount); max(qty); distinct.
  auto got = query(dir.path / "store", "pp");
  CHECK(got.header == std::vector<std::string>{"window_start", "window_end", "key", "count",
                                               "sum_total", "sum_amount", "max_qty",
                                               "distinct_country", "version"});
  CHECK(compare(got, totals,
                {{"count", "count"}, {"sum_total", "sum"}, {"distinct_country", "distinct"}}) ==
        "");
  CHECK(compare(got, amounts, {{"sum_amount", "sum"}}) == "");
  std::string qty_diff;
  for (auto& [k, m] : max_qty) {
    auto it = got.rows.find(k);
    if (it == got.rows.end() || std::strtod(it->second["max_qty"].c_str(), nullptr) != m)
      qty_diff += iso(std::get<0>(k)) + " " + std::get<2>(k) + "; ";
  }
  CHECK(qty_diff == "");

  // Dead letters: offset and reason class of every one; the raw text of each.
  auto dl = dead_letters(dir.path / "store");
  std::map<uint64_t, std::string> got_dl;
  std::string raw_diff;
  for (auto& d : dl) {
    REQUIRE(d.size() == 5);
    CHECK(d[0] == "pp");
    uint64_t off = std::stoull(d[2]);
    got_dl[off] = reason_class(d[3]);
    auto pos = std::lower_bound(offsets.begin(), offsets.end(), off) - offsets.begin();
    if (static_cast<size_t>(pos) < lines.size() && offsets[static_cast<size_t>(pos)] == off) {
      const auto& l = lines[static_cast<size_t>(pos)];
      // Long lines are kept cut; the rest whole.
      if (!(d[4] == l || (l.size() > max_line && l.rfind(d[4], 0) == 0 && !d[4].empty())))
        raw_diff += "offset " + d[2] + " raw differs; ";
    } else {
      raw_diff += "offset " + d[2] + " is no line start; ";
    }
  }
  CHECK(raw_diff == "");
  std::map<std::string, size_t> got_class;
  for (auto& [o, why] : got_dl)
    ++got_class[why];
  CHECK(got_class == per_class);
  CHECK(got_dl == want_dl);
  CHECK(dl.size() == want_dl.size());

  // A second run on appended lines: repeats of ids accepted by the first run are duplicates
  // (the dedupe state is restored); new ids after the last window are accepted.
  const size_t before = lines.size();
  const size_t dup_before = duplicates, acc_before = win.accepted;
  std::string more;
  size_t repeats = 0;
  for (size_t i = 0; i < before && repeats < 20; i += 37) {
    if (want_dl.count(offsets[i]))
      continue;
    auto f = split(lines[i], ',');
    if (!accepted_ids.count(f[0]))
      continue;
    offsets.push_back(text.size() + more.size());
    lines.push_back(lines[i]);
    more += lines[i] + "\n";
    ++repeats;
  }
  const int64_t next_window = (floor_div(win.max_t, size) + 1) * size;
  for (int i = 0; i < 30; ++i) {
    std::string l = "n" + std::to_string(i) + "," + std::to_string(next_window + i * 5) + ",u" +
                    std::to_string(i % 3) + ",10.00,2,fr,ok";
    offsets.push_back(text.size() + more.size());
    lines.push_back(l);
    more += l + "\n";
  }
  append_file(dir.path / "pp.csv", more);
  for (size_t i = before; i < lines.size(); ++i)
    classify(i);
  REQUIRE(duplicates - dup_before == 20);
  REQUIRE(win.accepted - acc_before == 30);
  auto r2 = weir_cmd("run --final " + q(dir.path / "pp.toml"));
  INFO(r2.out);
  REQUIRE(r2.rc == 0);
  CHECK(summary_value(r2.out, "events read") == 50);
  CHECK(summary_value(r2.out, "duplicates") == 20);
  CHECK(summary_value(r2.out, "accepted") == 30);
  auto got2 = query(dir.path / "store", "pp");
  CHECK(compare(got2, totals,
                {{"count", "count"}, {"sum_total", "sum"}, {"distinct_country", "distinct"}}) ==
        "");
  std::map<uint64_t, std::string> got_dl2;
  for (auto& d : dead_letters(dir.path / "store"))
    got_dl2[std::stoull(d[2])] = reason_class(d[3]);
  CHECK(got_dl2 == want_dl);
}

// -- 7. multi-field keys and query filters ------------------------------------------------------

TEST_CASE("multi-field keys and the query filters --key, --from, --to, --format json",
          "[e2e][query]") {
  temp_dir dir;
  const int64_t size = 300;
  std::mt19937_64 rng(707);
  static const char* regions[] = {"eu", "us"};
  // One shop name holds the delimiter (quoted in the input, quoted again by query --format
  // csv); some times carry a zone offset.
  static const char* shops[] = {"s1", "s2", "s3", "s,4"};
  std::string csv = "ts,region,shop,v\n";
  reference ref({'t', size, size, 0, 0, 0});
  for (int i = 0; i < 900; ++i) {
    int64_t t = base + i * 4;
    std::string region = regions[rng() % 2], shop = shops[rng() % 4];
    double v = std::stod(num2(static_cast<double>(rng() % 10000) / 100.0));
    std::string ts = iso(t);
    if (i % 7 == 3) {
      ts = iso(t + 5400);
      ts.replace(ts.size() - 1, 1, "+01:30");
    }
    csv += ts + "," + region + "," + (shop == "s,4" ? "\"s,4\"" : shop) + "," + num2(v) + "\n";
    REQUIRE(ref.add({t, region + "|" + shop, v, ""}) == fate::accepted);
  }
  write_file(dir.path / "in.csv", csv);
  write_file(dir.path / "k.toml",
             "store = \"store\"\n[[pipeline]]\nname = \"shops\"\n"
             "  [[pipeline.source]]\n  path = \"in.csv\"\n"
             "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"region\", \"shop\"]\n"
             "  measures = [\"v\"]\n"
             "  [pipeline.window]\n  size = \"5m\"\n"
             "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
             "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"v\"\n");
  auto r = weir_cmd("run --final " + q(dir.path / "k.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const fs::path store = dir.path / "store";
  const std::vector<agg_col> cols = {{"count", "count"}, {"sum_v", "sum"}};
  auto all = ref.all();
  REQUIRE(all.size() > 12 * 7);
  CHECK(compare(query(store, "shops"), all, cols) == "");

  auto subset = [&](const std::string& key, int64_t from, int64_t to) {
    std::map<wkey, acc> out;
    for (auto& [k, a] : all)
      if ((key.empty() || std::get<2>(k) == key) && std::get<0>(k) >= from && std::get<1>(k) <= to)
        out[k] = a;
    return out;
  };
  CHECK(compare(query(store, "shops", "--key 'eu|s2'"), subset("eu|s2", INT64_MIN, INT64_MAX),
                cols) == "");
  // --from is inclusive of window starts, --to of window ends; ISO-8601 or epoch seconds.
  const int64_t from = base + 900, to = base + 2400;
  CHECK(compare(query(store, "shops", "--from " + iso(from) + " --to " + std::to_string(to)),
                subset("", from, to), cols) == "");
  CHECK(compare(query(store, "shops", "--from " + std::to_string(from + 1)),
                subset("", from + 1, INT64_MAX), cols) == "");
  CHECK(compare(query(store, "shops", "--key 'us|s3' --to " + iso(to - 1)),
                subset("us|s3", INT64_MIN, to - 1), cols) == "");
  CHECK(compare(query(store, "shops", "--key 'eu|s,4'"), subset("eu|s,4", INT64_MIN, INT64_MAX),
                cols) == "");
  auto none = query(store, "shops", "--key 'zz|s1'");
  CHECK(none.rc == 0);
  CHECK(none.row_count == 0);

  // JSON: one object per window.
  auto j = weir_cmd("query --store " + q(store) +
                    " --pipeline shops --format json --key 'us|s1' "
                    "--from " +
                    iso(from));
  REQUIRE(j.rc == 0);
  auto want = subset("us|s1", from, INT64_MAX);
  REQUIRE(!want.empty());
  std::string text = j.out;
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.pop_back();
  CHECK(text.front() == '[');
  CHECK(text.back() == ']');
  static const std::regex obj_re{"\\{[^{}]*\\}"};
  static const std::regex str_re{"\"([a-z_]+)\": \"([^\"]*)\""};
  static const std::regex num_re{"\"([a-z_]+)\": (-?[0-9.eE+-]+|null)"};
  std::map<wkey, std::map<std::string, std::string>> objs;
  size_t nobj = 0;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), obj_re);
       it != std::sregex_iterator(); ++it) {
    std::string o = it->str();
    std::map<std::string, std::string> m;
    for (auto f = std::sregex_iterator(o.begin(), o.end(), str_re); f != std::sregex_iterator();
         ++f)
      m[(*f)[1]] = (*f)[2];
    for (auto f = std::sregex_iterator(o.begin(), o.end(), num_re); f != std::sregex_iterator();
         ++f)
      m[(*f)[1]] = (*f)[2];
    objs[{from_iso(m["window_start"]), from_iso(m["window_end"]), m["key"]}] = m;
    ++nobj;
  }
  CHECK(nobj == want.size());
  query_table as_table;
  as_table.rc = 0;
  as_table.rows = objs;
  as_table.row_count = nobj;
  CHECK(compare(as_table, want, cols) == "");
  auto empty_json = weir_cmd("query --store " + q(store) +
                             " --pipeline shops --format json "
                             "--key 'zz|s1'");
  CHECK(empty_json.rc == 0);
  CHECK(empty_json.out.find('{') == std::string::npos);
}

// -- 8. store format version --------------------------------------------------------------------

namespace {

/// The directory of the LMDB environment under `dir` (the one holding data.mdb).
fs::path env_dir(const fs::path& dir) {
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename() == "data.mdb")
      return e.path().parent_path();
  return {};
}

/// Overwrites meta/format_version of the LMDB environment in `env_path` with the store's own
/// API.
void set_format_version(const fs::path& env_path, uint32_t version) {
  auto e = weir::lmdb::env::open(env_path.string(), 16, size_t{256} << 20);
  REQUIRE(static_cast<bool>(e));
  auto err = e->with_write([&](weir::lmdb::txn& t) -> caf::error {
    auto meta = t.open_dbi("meta", false);
    if (!meta)
      return std::move(meta.error());
    char buf[4];
    weir::codec::put_le32(buf, version);
    return t.put(*meta, "format_version", std::string_view{buf, 4});
  });
  REQUIRE_FALSE(static_cast<bool>(err));
}

} // namespace

TEST_CASE("a store of an unknown format version is refused with exit code 4", "[e2e][store]") {
  temp_dir dir;
  auto evs = gen_events(808, 200, base, 3, 0, 0, 0, 0);
  write_file(dir.path / "in.csv", csv_of(evs));
  write_file(dir.path / "p.toml", tumbling_config("in.csv", 60, 0, 0));
  const fs::path store = dir.path / "store";
  auto r = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto before = weir_cmd("query --store " + q(store) + " --pipeline p --format csv");
  REQUIRE(before.rc == 0);

  SECTION("warehouse") {
    auto wh = env_dir(store / "warehouse");
    REQUIRE(!wh.empty());
    set_format_version(wh, 999);
    for (std::string cmd :
         {"query --store " + q(store) + " --pipeline p", "inspect --store " + q(store),
          "dead-letters --store " + q(store), "run " + q(dir.path / "p.toml")}) {
      auto x = weir_cmd(cmd);
      INFO(cmd << "\n" << x.out);
      CHECK(x.rc == 4);
      CHECK(x.out.find("999") != std::string::npos);
      CHECK(x.out.find("format version") != std::string::npos);
    }
    // Refusing changed nothing: put the version back and everything is as before.
    set_format_version(wh, weir::warehouse::format_version);
    auto after = weir_cmd("query --store " + q(store) + " --pipeline p --format csv");
    CHECK(after.rc == 0);
    CHECK(after.out == before.out);
  }
  SECTION("lake") {
    auto lk = env_dir(store / "lake");
    REQUIRE(!lk.empty());
    set_format_version(lk, 7);
    for (std::string cmd : {"inspect --store " + q(store), "run " + q(dir.path / "p.toml")}) {
      auto x = weir_cmd(cmd);
      INFO(cmd << "\n" << x.out);
      CHECK(x.rc == 4);
      CHECK(x.out.find("format version 7") != std::string::npos);
    }
  }
}

// -- 9. exit codes ------------------------------------------------------------------------------

namespace {

/// 1-based number of the first line of `text` containing `needle`.
int line_of(const std::string& text, const std::string& needle) {
  auto p = text.find(needle);
  if (p == std::string::npos)
    return -1;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(p), '\n'));
}

} // namespace

TEST_CASE("exit codes - bad config 2 with file, line and key, missing input 3, usage 2",
          "[e2e][exit]") {
  temp_dir dir;
  write_file(dir.path / "in.csv", "ts,k,v,color\n");
  const std::string good = tumbling_config("in.csv", 60, 0, 0);

  struct bad_case {
    const char* what;
    std::string text;
    std::string needle; // the offending line
    std::string key;    // the key the message names
  };
  std::vector<bad_case> cases;
  {
    auto t = good;
    auto p = t.find("  out_of_orderness");
    t.insert(p, "  slide = \"5s\"\n");
    cases.push_back(
      {"slide on a tumbling window", t, "slide = \"5s\"", "pipeline[0].window.slide"});
  }
  {
    auto t = good;
    auto p = t.find("fn = \"min\"");
    t.replace(p, 10, "fn = \"median\"");
    cases.push_back({"unknown aggregate", t, "fn = \"median\"", "pipeline[0].aggregate[2].fn"});
  }
  {
    auto t = good;
    auto p = t.find("size = \"60s\"");
    t.replace(p, 12, "size = \"sixty\"");
    cases.push_back({"bad duration", t, "size = \"sixty\"", "pipeline[0].window.size"});
  }
  {
    auto t = good;
    auto p = t.find("field = \"color\"");
    t.replace(p, 15, "field = \"colour\"");
    cases.push_back({"unknown field", t, "field = \"colour\"", "pipeline[0].aggregate[5].field"});
  }
  {
    auto t = good;
    auto p = t.find("name = \"p\"");
    t.replace(p, 10, "name = \"p");
    cases.push_back({"toml syntax", t, "name = \"p\n", "syntax"});
  }
  for (auto& c : cases) {
    INFO(c.what);
    write_file(dir.path / "bad.toml", c.text);
    auto r = weir_cmd("run --final " + q(dir.path / "bad.toml"));
    INFO(r.out);
    CHECK(r.rc == 2);
    int line = line_of(c.text, c.needle);
    REQUIRE(line > 0);
    CHECK(r.out.find("bad.toml:" + std::to_string(line) + ":") != std::string::npos);
    CHECK(r.out.find(c.key) != std::string::npos);
    CHECK_FALSE(fs::exists(dir.path / "store"));
  }

  // Missing inputs: a file, a glob that matches nothing, the config itself.
  write_file(dir.path / "m.toml", tumbling_config("missing.csv", 60, 0, 0));
  auto m = weir_cmd("run --final " + q(dir.path / "m.toml"));
  CHECK(m.rc == 3);
  CHECK(m.out.find("missing.csv") != std::string::npos);
  write_file(dir.path / "g.toml", tumbling_config("nothing-*.csv", 60, 0, 0));
  auto g = weir_cmd("run --final " + q(dir.path / "g.toml"));
  CHECK(g.rc == 3);
  CHECK(g.out.find("nothing-*.csv") != std::string::npos);
  auto nc = weir_cmd("run --final " + q(dir.path / "no-such-config.toml"));
  CHECK(nc.rc == 3);
  CHECK(nc.out.find("no-such-config.toml") != std::string::npos);
  // A follow source that does not exist is a missing input too, not a wait forever.
  write_file(dir.path / "f.toml",
             tumbling_config("missing.csv", 60, 0, 0, "  follow = true\n"));
  auto f = weir_cmd("run --final " + q(dir.path / "f.toml"));
  CHECK(f.rc == 3);

  // Command line errors.
  CHECK(weir_cmd("run").rc == 2);
  CHECK(weir_cmd("query --store " + q(dir.path)).rc == 2); // --pipeline missing
  CHECK(weir_cmd("frobnicate").rc == 2);
  CHECK(weir_cmd("query --store " + q(dir.path) + " --pipeline p --format xml").rc == 2);
}

// -- watermarks per source, and the end of a run ----------------------------------------------

namespace {

/// Pipeline `p` over the sources (name, path) with the window lines `win` and basic_aggs.
std::string sources_config(const std::vector<std::pair<std::string, std::string>>& sources,
                           const std::string& win) {
  std::ostringstream c;
  c << "store = \"store\"\ncommit_interval = \"20ms\"\nbatch_bytes = 4096\n\n"
    << "[[pipeline]]\nname = \"p\"\npartitions = 3\n\n";
  for (const auto& [name, path] : sources)
    c << "  [[pipeline.source]]\n  name = \"" << name << "\"\n  path = \"" << path << "\"\n\n";
  c << fields_block << "  [pipeline.window]\n" << win << "\n" << basic_aggs;
  return c.str();
}

std::string window_lines(const wspec& w) {
  std::ostringstream c;
  if (w.kind == 'S')
    c << "  kind = \"session\"\n  gap = \"" << w.gap << "s\"\n";
  else if (w.kind == 's')
    c << "  kind = \"sliding\"\n  size = \"" << w.size << "s\"\n  slide = \"" << w.slide
      << "s\"\n";
  else
    c << "  kind = \"tumbling\"\n  size = \"" << w.size << "s\"\n";
  c << "  out_of_orderness = \"" << w.ooo << "s\"\n  allowed_lateness = \"" << w.lateness
    << "s\"\n";
  return c.str();
}

/// Dead letters without the source column (it names the file's path): offset, reason, raw.
std::vector<std::vector<std::string>> letters_of(const fs::path& store) {
  auto rows = dead_letters(store);
  for (auto& r : rows)
    r.erase(r.begin(), r.begin() + 2);
  std::sort(rows.begin(), rows.end());
  return rows;
}

} // namespace

TEST_CASE("watermark per source - two hosts' files of one hour give the merged file's results",
          "[e2e][watermark]") {
  temp_dir dir;
  const wspec w{'t', 60, 60, 0, 5, 0};
  auto a = gen_events(501, 1500, base, 4, w.ooo, 0, 0, 1);
  auto b = gen_events(502, 1500, base, 4, w.ooo, 0, 0, 1);
  round_values(a);
  round_values(b);
  write_file(dir.path / "a.csv", csv_of(a));
  write_file(dir.path / "b.csv", csv_of(b));
  write_file(dir.path / "p.toml",
             sources_config({{"host_a", "a.csv"}, {"host_b", "b.csv"}}, window_lines(w)));
  // The reference: one file of both hosts' records in time order.
  auto merged = a;
  merged.insert(merged.end(), b.begin(), b.end());
  std::stable_sort(merged.begin(), merged.end(),
                   [](const rec& x, const rec& y) { return x.t < y.t; });
  reference ref(w);
  for (auto& e : merged)
    ref.add(e);
  REQUIRE(ref.late == 0);
  auto r = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(summary_value(r.out, "late (dead letter)") == 0);
  CHECK(summary_value(r.out, "accepted") == static_cast<long long>(merged.size()));
  CHECK(compare(query(dir.path / "store", "p"), ref.all(), basic_cols) == "");
  CHECK(dead_letters(dir.path / "store").empty());
}

TEST_CASE("end of a run - append and run again gives the results of one run over the whole file",
          "[e2e][watermark]") {
  for (const wspec& w : {wspec{'t', 10, 10, 0, 3, 2}, wspec{'s', 20, 10, 0, 3, 2},
                         wspec{'S', 0, 0, 5, 3, 2}}) {
    INFO("window kind " << w.kind);
    temp_dir dir;
    auto evs = gen_events(600 + static_cast<uint64_t>(w.kind), 1200, base, 4, w.ooo, 20, 15, 40);
    round_values(evs);
    reference ref(w);
    for (auto& e : evs)
      ref.add(e);
    REQUIRE(ref.late > 0);
    for (auto sub : {"split", "whole"}) {
      fs::create_directories(dir.path / sub);
      write_file(dir.path / sub / "p.toml", sources_config({{"in", "in.csv"}}, window_lines(w)));
    }
    write_file(dir.path / "whole" / "in.csv", csv_of(evs));
    auto whole = weir_cmd("run --final " + q(dir.path / "whole" / "p.toml"));
    REQUIRE(whole.rc == 0);
    // The same records in three runs, cut at random lines; only the last says the data ends.
    std::mt19937_64 rng(w.kind);
    size_t c1 = 100 + rng() % 500, c2 = c1 + 1 + rng() % 500;
    auto part = [&](size_t from, size_t to) {
      return std::vector<rec>(evs.begin() + static_cast<long>(from),
                              evs.begin() + static_cast<long>(to));
    };
    const fs::path split_in = dir.path / "split" / "in.csv";
    write_file(split_in, csv_of(part(0, c1)));
    auto r1 = weir_cmd("run " + q(dir.path / "split" / "p.toml"));
    INFO(r1.out);
    REQUIRE(r1.rc == 0);
    CHECK(summary_value(r1.out, "windows open") > 0);
    CHECK(r1.out.find("weir run --final fires them") != std::string::npos);
    append_file(split_in, csv_of(part(c1, c2), false));
    REQUIRE(weir_cmd("run " + q(dir.path / "split" / "p.toml")).rc == 0);
    append_file(split_in, csv_of(part(c2, evs.size()), false));
    auto r3 = weir_cmd("run --final " + q(dir.path / "split" / "p.toml"));
    INFO(r3.out);
    REQUIRE(r3.rc == 0);
    CHECK(summary_value(r3.out, "windows open") == -1); // none left: the line is not printed
    auto got_split = query(dir.path / "split" / "store", "p");
    auto got_whole = query(dir.path / "whole" / "store", "p");
    CHECK(compare(got_whole, ref.all(), basic_cols) == "");
    REQUIRE(got_split.rc == 0);
    CHECK(got_split.header == got_whole.header);
    CHECK(got_split.row_count == got_whole.row_count);
    CHECK(got_split.rows == got_whole.rows); // row by row, every column as text
    auto dl_split = letters_of(dir.path / "split" / "store");
    CHECK(dl_split.size() == ref.late);
    CHECK(dl_split == letters_of(dir.path / "whole" / "store"));
  }
}

TEST_CASE("end of a run - after --final, records for the fired windows are late",
          "[e2e][watermark]") {
  temp_dir dir;
  const wspec w{'t', 10, 10, 0, 3, 2};
  auto first = gen_events(701, 400, base, 3, w.ooo, 0, 0, 1);
  round_values(first);
  int64_t max_t = INT64_MIN;
  for (auto& e : first)
    max_t = std::max(max_t, e.t);
  // One record in the last window of the first run, then later ones.
  std::vector<rec> second = {{max_t, "k0", 5.0, "red"}, {max_t - 30, "k1", 6.0, "red"}};
  for (int i = 1; i <= 50; ++i)
    second.push_back({max_t + 20 + i, "k" + std::to_string(i % 3), 1.0 * i, "blue"});
  const fs::path input = dir.path / "in.csv";
  write_file(input, csv_of(first));
  write_file(dir.path / "p.toml", sources_config({{"in", "in.csv"}}, window_lines(w)));
  REQUIRE(weir_cmd("run --final " + q(dir.path / "p.toml")).rc == 0);
  append_file(input, csv_of(second, false));
  auto r = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  reference ref(w);
  for (auto& e : first)
    ref.add(e);
  ref.end_bounded_run();
  CHECK(ref.add(second[0]) == fate::late);
  CHECK(ref.add(second[1]) == fate::late);
  for (size_t i = 2; i < second.size(); ++i)
    ref.add(second[i]);
  CHECK(summary_value(r.out, "late (dead letter)") == 2);
  CHECK(compare(query(dir.path / "store", "p"), ref.all(), basic_cols) == "");
  auto dl = dead_letters(dir.path / "store");
  REQUIRE(dl.size() == 2);
  for (auto& d : dl)
    CHECK(reason_class(d[3]) == "late:");
}

TEST_CASE("watermark per source - a restart resumes each source's event time",
          "[e2e][watermark]") {
  const wspec w{'t', 60, 60, 0, 5, 0};
  auto a = gen_events(801, 1500, base, 4, w.ooo, 0, 0, 1);
  auto b = gen_events(802, 1500, base, 4, w.ooo, 0, 0, 1);
  round_values(a);
  round_values(b);
  const size_t half = 700;
  int64_t max_a = INT64_MIN, max_b = INT64_MIN;
  for (auto& e : a)
    max_a = std::max(max_a, e.t);
  for (auto& e : b)
    max_b = std::max(max_b, e.t);
  // After both runs every record is in; W = min over the hosts of their max - ooo.
  auto merged = a;
  merged.insert(merged.end(), b.begin(), b.end());
  std::stable_sort(merged.begin(), merged.end(),
                   [](const rec& x, const rec& y) { return x.t < y.t; });
  reference ref(w);
  for (auto& e : merged)
    ref.add(e);
  const int64_t wm = std::min(max_a, max_b) - w.ooo;
  std::map<wkey, acc> closed;
  for (auto& [k, x] : ref.all())
    if (std::get<1>(k) + w.lateness <= wm)
      closed[k] = x;
  REQUIRE(closed.size() < ref.all().size());
  // The second run once without failures, once with an aggregator failing mid-batch: the
  // supervisor restarts it from the last commit.
  for (std::string fault : {"", "aggregator.mid_batch@3:fail"}) {
    INFO("fault " << fault);
    temp_dir dir;
    write_file(dir.path / "a.csv", csv_of(a));
    write_file(dir.path / "b.csv",
               csv_of(std::vector<rec>(b.begin(), b.begin() + static_cast<long>(half))));
    write_file(dir.path / "p.toml",
               sources_config({{"host_a", "a.csv"}, {"host_b", "b.csv"}}, window_lines(w)));
    REQUIRE(weir_cmd("run " + q(dir.path / "p.toml")).rc == 0);
    append_file(dir.path / "b.csv",
                csv_of(std::vector<rec>(b.begin() + static_cast<long>(half), b.end()), false));
    auto r = sh("env " + (fault.empty() ? std::string{"-u WEIR_FAULT"} : "WEIR_FAULT=" + fault)
                + " timeout 60 " + weir_bin + " run " + q(dir.path / "p.toml"));
    INFO(r.out);
    REQUIRE(r.rc == 0);
    if (!fault.empty())
      CHECK(summary_value(r.out, "restarts") >= 1);
    CHECK(compare(query(dir.path / "store", "p"), closed, basic_cols) == "");
    CHECK(dead_letters(dir.path / "store").empty());
  }
}

TEST_CASE("dead letters - thousands of late records of one epoch come out whole and in order",
          "[e2e][dead]") {
  // Most records are late (moved hours behind the newest accepted one); some late lines are
  // longer than the 64 KiB of raw text a dead letter keeps. Expected: a reference that walks
  // the input by hand (watermark = newest accepted time, hourly windows) and formats reasons
  // and cut raw text itself.
  temp_dir dir;
  std::mt19937_64 rng{11};
  const int64_t base = 1717200000;
  const size_t keep = 64 << 10;
  std::string csv = "id,ts,k,amount,note\n";
  struct letter {
    uint64_t offset;
    std::string reason, raw;
  };
  std::vector<letter> want;
  int64_t newest = std::numeric_limits<int64_t>::min();
  for (int i = 0; i < 20000; ++i) {
    int64_t t = base + i;
    const bool move_back = i > 0 && rng() % 10 != 0;
    if (move_back)
      t = newest - 3600 - static_cast<int64_t>(rng() % (3 * 86400));
    std::string note = move_back && i % 2000 == 1 ? std::string(keep + 100 + i, 'n') : "x";
    std::string line = "e" + std::to_string(i) + "," + iso(t) + ",k" + std::to_string(rng() % 7) +
                       "," + std::to_string(rng() % 1000) + "," + note;
    const int64_t start = t - ((t % 3600) + 3600) % 3600;
    const int64_t end = start + 3600;
    if (newest != std::numeric_limits<int64_t>::min() && newest >= end) {
      std::string raw = line.size() <= keep ? line
                                            : line.substr(0, keep) + " [weir: cut here, " +
                                                std::to_string(line.size()) + " bytes in all]";
      want.push_back(
        {csv.size(),
         "late: window [" + iso(start) + ", " + iso(end) + ") closed at watermark " + iso(newest),
         raw});
    } else {
      newest = std::max(newest, t);
    }
    csv += line + "\n";
  }
  REQUIRE(want.size() > 15000);
  write_file(dir.path / "in.csv", csv);
  write_file(dir.path / "p.toml",
             "commit_interval = \"10m\"\n\n[[pipeline]]\nname = \"p\"\n\n"
             "  [[pipeline.source]]\n  name = \"in\"\n  path = \"in.csv\"\n\n"
             "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n  measures = [\"amount\"]\n\n"
             "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1h\"\n\n"
             "  [[pipeline.aggregate]]\n  fn = \"count\"\n");
  auto r =
    weir_cmd("run " + q(dir.path / "p.toml") + " --store " + q(dir.path / "store") + " --final");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const auto late_at = r.out.find("late (dead letter)");
  REQUIRE(late_at != std::string::npos);
  CHECK(std::stoull(r.out.substr(late_at + 18)) == want.size());
  auto got = dead_letters(dir.path / "store");
  REQUIRE(got.size() == want.size());
  size_t cut = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("dead letter " << i);
    REQUIRE(got[i].size() == 5);
    CHECK(std::stoull(got[i][2]) == want[i].offset);
    CHECK(got[i][3] == want[i].reason);
    CHECK(got[i][4] == want[i].raw);
    cut += want[i].raw.size() > keep ? 1 : 0;
  }
  CHECK(cut >= 5);
}
