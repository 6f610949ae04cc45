// A Redis Streams source end to end: a real redis-server on loopback, entries added with hiredis
// while `weir serve` reads them through a consumer group; the process is killed (SIGKILL, and
// at the point between landing and acknowledging), the group is destroyed behind its back, and
// every entry still counts exactly once: the results equal a brute-force count of what was
// added, and nothing stays pending in the group.

#include <catch2/catch.hpp>

#include <hiredis/hiredis.h>
#include <httplib.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "actors/core/stream_entry.hpp"
#include "serve_support.hpp"

namespace fs = std::filesystem;

namespace {

using weir::test::background;
using weir::test::free_port;
using weir::test::iso;
using weir::test::read_text;
using weir::test::sample;
using weir::test::served;
using weir::test::split;
using weir::test::temp_dir;
using weir::test::weir_bin;
using weir::test::write_file;
const int64_t t0 = 1717200000; // 2024-06-01T00:00:00Z

/// A redis-server of its own on a free loopback port, keeping nothing on disk; killed and its
/// directory removed at the end.
struct redis_server {
  temp_dir dir;
  int port = free_port();
  std::unique_ptr<background> proc;
  redis_server() {
    proc = std::make_unique<background>(
      std::vector<std::string>{"/usr/bin/redis-server", "--port", std::to_string(port), "--bind",
                               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                               dir.path.string()},
      dir.path / "redis.log");
  }
};

/// A hiredis connection for the test's own commands.
struct client {
  redisContext* c = nullptr;
  explicit client(int port) {
    for (int i = 0; i < 250 && c == nullptr; ++i) {
      c = redisConnect("127.0.0.1", port);
      if (c != nullptr && c->err != 0) {
        redisFree(c);
        c = nullptr;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  ~client() {
    if (c != nullptr)
      redisFree(c);
  }
  /// Runs a command; its reply as text (a string, status, error or integer), or the element
  /// count of an array.
  std::string run(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
    REQUIRE(r != nullptr);
    std::string out;
    if (r->type == REDIS_REPLY_INTEGER)
      out = std::to_string(r->integer);
    else if (r->type == REDIS_REPLY_ARRAY)
      out = std::to_string(r->elements);
    else if (r->str != nullptr)
      out.assign(r->str, r->len);
    freeReplyObject(r);
    return out;
  }
  /// Entries not yet acknowledged by the group (XPENDING's count).
  long pending(const std::string& stream, const std::string& group) {
    auto* r = static_cast<redisReply*>(
      redisCommand(c, "XPENDING %s %s", stream.c_str(), group.c_str()));
    REQUIRE(r != nullptr);
    long n = r->type == REDIS_REPLY_ARRAY && r->elements > 0 ? r->element[0]->integer : -1;
    freeReplyObject(r);
    return n;
  }
};

/// The committed `weir_events_read_total` of pipeline p, or -1.
long events_read(int port) {
  httplib::Client http{"127.0.0.1", port};
  auto r = http.Get("/metrics");
  if (!r || r->status != 200)
    return -1;
  return static_cast<long>(sample(r->body, "weir_events_read_total{pipeline=\"p\"}"));
}

/// Waits (at most 60 s) until pipeline p committed `n` records read.
bool wait_read(int port, long n) {
  for (int i = 0; i < 3000; ++i) {
    if (events_read(port) == n)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

/// Pipeline p: one redis source with csv entries "ts,k,amount" in field `data`; hourly count
/// and sum per key.
std::string config(int port) {
  return "store = \"store\"\ncommit_interval = \"20ms\"\n\n[[pipeline]]\nname = \"p\"\n"
         "partitions = 2\n\n  [[pipeline.source]]\n  name = \"orders\"\n  redis = \"127.0.0.1:" +
         std::to_string(port) +
         "\"\n  stream = \"orders\"\n  format = \"csv\"\n  header = false\n"
         "  columns = [\"ts\", \"k\", \"amount\"]\n  max_line_bytes = 200\n"
         "\n  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n  measures = [\"amount\"]\n\n"
         "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1h\"\n\n"
         "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n";
}

/// Entries i in [from, to): "ts,k,amount" over 6 hours, 7 keys.
std::vector<std::string> lines(size_t from, size_t to) {
  std::vector<std::string> out;
  for (size_t i = from; i < to; ++i) {
    std::mt19937_64 rng(i);
    out.push_back(iso(t0 + static_cast<int64_t>(i) * 6 * 3600 / 6000) + ",k" +
                  std::to_string(rng() % 7) + "," + std::to_string(rng() % 1000));
  }
  return out;
}

/// Adds the lines as entries (field data), a pipeline of XADDs per 100.
void add(client& r, const std::vector<std::string>& ls) {
  for (size_t i = 0; i < ls.size(); i += 100) {
    size_t n = std::min<size_t>(100, ls.size() - i);
    for (size_t j = 0; j < n; ++j)
      redisAppendCommand(r.c, "XADD orders * data %b", ls[i + j].data(), ls[i + j].size());
    for (size_t j = 0; j < n; ++j) {
      void* reply = nullptr;
      REQUIRE(redisGetReply(r.c, &reply) == REDIS_OK);
      freeReplyObject(reply);
    }
  }
}

/// Brute force: (hour start, key) -> (count, sum) of the lines.
std::map<std::pair<std::string, std::string>, std::pair<long, double>>
hourly(const std::vector<std::string>& ls) {
  std::map<std::pair<std::string, std::string>, std::pair<long, double>> out;
  for (const auto& l : ls) {
    auto f = split(l, ',');
    auto& w = out[{f[0].substr(0, 13) + ":00:00Z", f[1]}];
    w.first += 1;
    w.second += std::strtod(f[2].c_str(), nullptr);
  }
  return out;
}

} // namespace

TEST_CASE("entry ids parse, order and build lines", "[redis]") {
  using weir::stream_id;
  CHECK(stream_id::parse("1700000000000-5")->ms == 1700000000000);
  CHECK(stream_id::parse("1700000000000-5")->seq == 5);
  CHECK(stream_id::parse("0")->ms == 0);
  CHECK_FALSE(stream_id::parse(""));
  CHECK_FALSE(stream_id::parse("12-"));
  CHECK_FALSE(stream_id::parse("-1"));
  CHECK_FALSE(stream_id::parse("1-2-3"));
  CHECK_FALSE(stream_id::parse("99999999999999999999999"));
  CHECK(*stream_id::parse("5-10") < *stream_id::parse("6-0"));
  CHECK(*stream_id::parse("5-2") < *stream_id::parse("5-10")); // numbers, not text
  CHECK(stream_id::parse("5-10")->str() == "5-10");
  std::vector<std::pair<std::string, std::string>> fields{{"a", "x\"y"}, {"data", "1,\n2"}};
  auto get = [&fields](size_t i) {
    return std::pair<std::string_view, std::string_view>{fields[i].first, fields[i].second};
  };
  std::string out;
  weir::append_entry_line(out, 2, get, "data");
  CHECK(out == "1, 2");
  out.clear();
  weir::append_entry_line(out, 2, get, "other");
  CHECK(out == R"({"a": "x\"y", "data": "1,\n2"})");
}

TEST_CASE("a redis source lands every entry once through kills and a lost group",
          "[e2e][redis]") {
  redis_server redis;
  client r{redis.port};
  REQUIRE(r.c != nullptr);
  temp_dir dir;
  write_file(dir.path / "p.toml", config(redis.port));

  // Entries before weir starts, one without the field and one over max_line_bytes.
  auto all = lines(0, 2000);
  add(r, all);
  r.run({"XADD", "orders", "*", "other", "x"});
  r.run({"XADD", "orders", "*", "data", iso(t0) + ",k1," + std::string(300, '9')});
  const long bad = 2;

  { // A crash between landing and acknowledging the first batch.
    served s{dir, "serve1.log", {}, "redis.before_ack@1"};
    CHECK(s.proc.wait(60) == 128 + SIGKILL);
  }
  { // Read on; killed (SIGKILL) while entries are being added.
    served s{dir, "serve2.log"};
    REQUIRE(s.port > 0);
    auto more = lines(2000, 4000);
    add(r, more);
    all.insert(all.end(), more.begin(), more.end());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    s.proc.signal(SIGKILL);
    s.proc.wait(10);
  }
  // Redis loses the group (as after a restart without persistence): it is made again after
  // the last entry landed, not from the stream's start.
  CHECK(r.run({"XGROUP", "DESTROY", "orders", "weir"}) == "1");
  auto last = lines(4000, 6000);
  add(r, last);
  all.insert(all.end(), last.begin(), last.end());
  served s{dir, "serve3.log"};
  REQUIRE(s.port > 0);
  CHECK(wait_read(s.port, static_cast<long>(all.size()) + bad));
  CHECK(r.pending("orders", "weir") == 0);

  // Every entry counted once: results of the closed hours equal the brute force.
  auto want = hourly(all);
  for (auto it = want.begin(); it != want.end();)
    it = it->first.first >= iso(t0 + 5 * 3600) ? want.erase(it) : std::next(it);
  httplib::Client http{"127.0.0.1", s.port};
  auto res =
    http.Get(("/v1/pipelines/p/results?format=csv&limit=100000&to=" + iso(t0 + 5 * 3600)).c_str());
  REQUIRE(res);
  REQUIRE(res->status == 200);
  std::map<std::pair<std::string, std::string>, std::pair<long, double>> got;
  std::istringstream in{res->body};
  for (std::string line; std::getline(in, line);) {
    auto f = split(line, ',');
    if (f[0] == "window_start")
      continue;
    got[{f[0], f[2]}] = {std::stol(f[3]), std::strtod(f[4].c_str(), nullptr)};
  }
  REQUIRE(got.size() == want.size());
  for (const auto& [k, w] : want) {
    CHECK(got[k].first == w.first);
    CHECK(got[k].second == Approx(w.second));
  }
  // The two bad entries are dead letters with their reasons, each once.
  auto dl = http.Get("/v1/pipelines/p/dead-letters?format=csv");
  REQUIRE(dl);
  CHECK(dl->body.find("\"\"other\"\": \"\"x\"\"") != std::string::npos);
  CHECK(dl->body.find("max_line_bytes") != std::string::npos);
  size_t dl_rows = 0;
  for (char c : dl->body)
    dl_rows += c == '\n' ? 1 : 0;
  CHECK(dl_rows == 1 + bad);
  s.proc.signal(SIGTERM);
  CHECK(s.proc.wait(30) == 0);
}

TEST_CASE("a redis source's settings and server are checked before anything runs",
          "[e2e][redis]") {
  temp_dir dir;
  auto run = [&dir](const std::string& cfg) {
    write_file(dir.path / "p.toml", cfg);
    background b{{weir_bin, "run", (dir.path / "p.toml").string()}, dir.path / "run.log"};
    int code = b.wait(30);
    return std::pair{code, read_text(dir.path / "run.log")};
  };
  const int closed = free_port();
  auto base = config(closed);
  { // no stream
    auto [code, log] = run(std::regex_replace(base, std::regex{"  stream = \"orders\"\n"}, ""));
    CHECK(code == 2);
    CHECK(log.find("pipeline[0].source[0].stream") != std::string::npos);
  }
  { // a bad start id
    auto [code, log] = run(std::regex_replace(base, std::regex{"  stream = \"orders\"\n"},
                                              "  stream = \"orders\"\n  start = \"soon\"\n"));
    CHECK(code == 2);
    CHECK(log.find("start") != std::string::npos);
  }
  { // nobody listens
    auto [code, log] = run(base);
    CHECK(code != 0);
    CHECK(log.find("cannot connect") != std::string::npos);
    CHECK_FALSE(fs::exists(dir.path / "store" / "lake"));
  }
  redis_server redis;
  client r{redis.port};
  REQUIRE(r.c != nullptr);
  r.run({"SET", "orders", "not a stream"});
  { // the key holds something else
    auto [code, log] = run(config(redis.port));
    CHECK(code != 0);
    CHECK(log.find("holds a string") != std::string::npos);
  }
  { // a run without exactly-once would acknowledge what it never keeps
    write_file(dir.path / "p.toml", config(redis.port));
    background b{{weir_bin, "run", (dir.path / "p.toml").string(), "--dry-run"},
                 dir.path / "dry.log"};
    CHECK(b.wait(30) == 2);
    CHECK(read_text(dir.path / "dry.log").find("exactly-once") != std::string::npos);
  }
}
