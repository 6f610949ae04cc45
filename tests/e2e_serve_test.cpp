// `weir serve` end to end: the binary runs the pipelines and answers over HTTP on loopback; a
// real HTTP client reads results (page by page), dead letters, the pipelines and the metrics, and
// every figure is checked against a brute-force computation of the input.

#include <catch2/catch.hpp>

#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "background.hpp"
#include "serve_support.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;

namespace {

using weir::test::background;
using weir::test::event;
using weir::test::free_port;
using weir::test::iso;
using weir::test::json_number;
using weir::test::sample;
using weir::test::served;
using weir::test::split;
using weir::test::temp_dir;
using weir::test::wait_for_port;
using weir::test::wait_for_run;
using weir::test::wait_ready;
using weir::test::weir_bin;
using weir::test::write_file;

const int64_t t0 = 1717200000; // 2024-06-01T00:00:00Z

/// A pipeline `p`: hourly count and sum of `amount` per `k`, one csv source.
std::string config(const std::string& source_extra = "") {
  return "store = \"store\"\ncommit_interval = \"20ms\"\n\n[[pipeline]]\nname = \"p\"\n"
         "partitions = 2\n\n  [[pipeline.source]]\n  name = \"in\"\n  path = \"in.csv\"\n" +
         source_extra +
         "\n  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n  measures = [\"amount\"]\n\n"
         "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1h\"\n\n"
         "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n";
}

/// csv rows "ts,k,amount": `n` events over `hours` hours and `keys` keys.
std::string csv_rows(size_t n, int64_t from, int hours, int keys, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    int64_t t = from + static_cast<int64_t>(i) * hours * 3600 / static_cast<int64_t>(n);
    out += iso(t) + ",k" + std::to_string(rng() % keys) + "," + std::to_string(rng() % 1000) +
           "\n";
  }
  return out;
}

struct window_sum {
  long count = 0;
  double sum = 0;
};

/// Brute force: count and sum per (hour start, key) of csv rows ts,k,amount.
std::map<std::pair<std::string, std::string>, window_sum> hourly(const std::string& rows) {
  std::map<std::pair<std::string, std::string>, window_sum> out;
  std::istringstream in{rows};
  for (std::string line; std::getline(in, line);) {
    auto f = split(line, ',');
    if (f.size() != 3 || f[0] == "ts")
      continue;
    auto& w = out[{f[0].substr(0, 13) + ":00:00Z", f[1]}];
    w.count += 1;
    w.sum += std::strtod(f[2].c_str(), nullptr);
  }
  return out;
}

/// Every result row of pipeline p as csv, read page by page through the cursor.
std::vector<std::vector<std::string>> all_results(httplib::Client& http, const std::string& extra,
                                                  size_t page, size_t& pages) {
  std::vector<std::vector<std::string>> rows;
  std::string after;
  pages = 0;
  for (;;) {
    std::string path = "/v1/pipelines/p/results?format=csv&limit=" + std::to_string(page) + extra;
    if (!after.empty())
      path += "&after=" + after;
    auto r = http.Get(path.c_str());
    REQUIRE(r);
    REQUIRE(r->status == 200);
    ++pages;
    std::istringstream in{r->body};
    size_t got = 0;
    for (std::string line; std::getline(in, line);) {
      auto f = split(line, ',');
      if (f[0] == "window_start")
        continue;
      REQUIRE(f.size() == 6);
      rows.push_back(f);
      ++got;
    }
    CHECK(got <= page);
    if (!r->has_header("Weir-Next-Cursor"))
      return rows;
    CHECK(got == page);
    after = r->get_header_value("Weir-Next-Cursor");
  }
}

} // namespace

TEST_CASE("weir serve answers results, dead letters, pipelines and metrics of what it committed",
          "[e2e][serve]") {
  temp_dir dir;
  const std::string rows = csv_rows(3000, t0, 6, 7, 11);
  const std::string bad = iso(t0 + 60) + ",k1,12.x5\n" + "not a time,k2,3\n" + iso(t0 + 90) +
                          ",k3\n";
  write_file(dir.path / "in.csv", "ts,k,amount\n" + rows + bad);
  write_file(dir.path / "p.toml", config());
  served srv{dir, "serve.log"};
  const int port = srv.port;
  REQUIRE(port > 0);
  httplib::Client http{"127.0.0.1", port};
  REQUIRE(wait_ready(http));
  http.set_read_timeout(10, 0);
  auto health = http.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  // A bounded input ends the run; the server goes on answering.
  REQUIRE(wait_for_run(http, "finished"));
  auto ready = http.Get("/ready");
  REQUIRE(ready);
  CHECK(ready->status == 200);

  // Without --final the last hour stays open (the watermark never passes it): every other
  // hour fires.
  auto want = hourly(rows);
  for (auto it = want.begin(); it != want.end();)
    it = it->first.first >= iso(t0 + 5 * 3600) ? want.erase(it) : std::next(it);
  REQUIRE(want.size() == 35);
  { // results, page by page, equal the brute force
    size_t pages = 0;
    auto got = all_results(http, "", 7, pages);
    CHECK(pages == (want.size() + 6) / 7);
    REQUIRE(got.size() == want.size());
    for (const auto& f : got) {
      auto it = want.find({f[0], f[2]});
      REQUIRE(it != want.end());
      CHECK(std::stol(f[3]) == it->second.count);
      CHECK(std::strtod(f[4].c_str(), nullptr) == Approx(it->second.sum));
    }
    // One key, one time range, and JSON.
    size_t key_rows = 0;
    for (const auto& [k, w] : want)
      key_rows += k.second == "k3" && k.first >= iso(t0 + 3600) ? 1 : 0;
    auto one = all_results(http, "&key=k3&from=" + iso(t0 + 3600), 1000, pages);
    CHECK(one.size() == key_rows);
    for (const auto& f : one)
      CHECK(f[2] == "k3");
    auto json = http.Get("/v1/pipelines/p/results?limit=2");
    REQUIRE(json);
    CHECK(json->get_header_value("Content-Type") == "application/json");
    CHECK(json->body.find("\"count\": ") != std::string::npos);
    CHECK(json->body.find("\"sum_amount\": ") != std::string::npos);
  }

  { // dead letters name each bad record and its reason
    auto r = http.Get("/v1/pipelines/p/dead-letters?format=json");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    CHECK(r->body.find("12.x5") != std::string::npos);
    CHECK(r->body.find("bad number") != std::string::npos);
    CHECK(r->body.find("not a time") != std::string::npos);
    CHECK(r->body.find("wrong column count") != std::string::npos);
    // Paging by sequence: one at a time, three in all.
    std::string after;
    int n = 0;
    for (;;) {
      auto p = http.Get(("/v1/pipelines/p/dead-letters?format=csv&limit=1" +
                         (after.empty() ? "" : "&after=" + after))
                          .c_str());
      REQUIRE(p);
      ++n;
      if (!p->has_header("Weir-Next-Cursor"))
        break;
      after = p->get_header_value("Weir-Next-Cursor");
      REQUIRE(n < 10);
    }
    CHECK(n == 3);
  }

  { // the pipelines and the metrics count what was committed
    auto p = http.Get("/v1/pipelines");
    REQUIRE(p);
    CHECK(p->body.find("\"name\": \"p\"") != std::string::npos);
    CHECK(p->body.find("\"windows_committed\": " + std::to_string(want.size())) !=
          std::string::npos);
    auto m = http.Get("/metrics");
    REQUIRE(m);
    REQUIRE(m->status == 200);
    const auto& text = m->body;
    CHECK(sample(text, "weir_up") == 1);
    CHECK(sample(text, "weir_events_read_total{pipeline=\"p\"}") == 3003);
    CHECK(sample(text, "weir_events_accepted_total{pipeline=\"p\"}") == 3000);
    CHECK(sample(text, "weir_windows_committed_total{pipeline=\"p\"}") ==
          static_cast<double>(want.size()));
    CHECK(sample(text, "weir_events_rejected_total{pipeline=\"p\",reason=\"bad number\"}") == 1);
    CHECK(sample(text, "weir_events_rejected_total{pipeline=\"p\",reason=\"bad time\"}") == 1);
    CHECK(sample(text,
                 "weir_events_rejected_total{pipeline=\"p\",reason=\"wrong column count\"}") == 1);
    const double epochs = sample(text, "weir_epoch_latency_seconds_count{pipeline=\"p\"}");
    CHECK(epochs >= 1);
    CHECK(sample(text, "weir_epoch_latency_seconds_bucket{pipeline=\"p\",le=\"+Inf\"}") ==
          epochs);
    // The exposition format: comments, or `name{labels} value` with a number.
    const std::regex line_re{"(# (HELP|TYPE) .*)|([a-z_]+(\\{[^}]*\\})? [-+0-9.eEInfNa]+)"};
    std::istringstream in{text};
    for (std::string line; std::getline(in, line);) {
      INFO(line);
      CHECK(std::regex_match(line, line_re));
    }
  }

  { // weir query --server prints what weir query --store prints
    for (const char* format : {"csv", "json", "table"}) {
      auto remote = weir::test::sh("timeout 60 " + weir_bin + " query --server http://127.0.0.1:" +
                                   std::to_string(port) + " --pipeline p --format " + format);
      auto local = weir::test::sh("timeout 60 " + weir_bin + " query --store " +
                                  (dir.path / "store").string() + " --pipeline p --format " +
                                  format);
      INFO(format);
      CHECK(remote.rc == 0);
      CHECK(local.rc == 0);
      CHECK(remote.out == local.out);
    }
    auto one = weir::test::sh("timeout 60 " + weir_bin + " query --server http://127.0.0.1:" +
                              std::to_string(port) + " --pipeline p --format csv --key k3");
    CHECK(one.rc == 0);
    CHECK(std::count(one.out.begin(), one.out.end(), '\n') ==
          1 + std::count_if(want.begin(), want.end(), [](auto& w) { return w.first.second == "k3"; }));
    auto missing = weir::test::sh("timeout 60 " + weir_bin + " query --server http://127.0.0.1:" +
                                  std::to_string(port) + " --pipeline nope");
    CHECK(missing.rc == 3);
    CHECK(missing.out.find("404 no pipeline named 'nope'") != std::string::npos);
  }

  { // bad requests get clear errors and the server goes on
    auto unknown = http.Get("/v1/pipelines/nope/results");
    REQUIRE(unknown);
    CHECK(unknown->status == 404);
    CHECK(unknown->body.find("no pipeline named 'nope'") != std::string::npos);
    for (const char* q : {"limit=0", "limit=100001", "limit=x", "from=yesterday", "format=xml",
                          "after=zz"}) {
      auto r = http.Get((std::string{"/v1/pipelines/p/results?"} + q).c_str());
      REQUIRE(r);
      INFO(q);
      CHECK(r->status == 400);
      CHECK(r->body.find("\"error\": ") != std::string::npos);
    }
    auto none = http.Get("/no/such/thing");
    REQUIRE(none);
    CHECK(none->status == 404);
    CHECK(http.Get("/health")->status == 200);
  }

  srv.proc.signal(SIGTERM);
  CHECK(srv.proc.wait(30) == 0);
}

TEST_CASE("weir serve runs a followed source until stopped and serves what each epoch commits",
          "[e2e][serve]") {
  temp_dir dir;
  const std::string first = csv_rows(500, t0, 2, 3, 5);
  write_file(dir.path / "in.csv", "ts,k,amount\n" + first);
  write_file(dir.path / "p.toml", config("  follow = true\n  idle_timeout = \"100ms\"\n"));
  served srv{dir, "serve.log"};
  const int port = srv.port;
  REQUIRE(port > 0);
  httplib::Client http{"127.0.0.1", port};
  REQUIRE(wait_ready(http));
  // Lines appended while it runs: the hours they close fire and are served.
  const std::string later = csv_rows(500, t0 + 2 * 3600, 2, 3, 6);
  {
    std::ofstream f{dir.path / "in.csv", std::ios::app};
    f << later;
  }
  // The watermark closes every hour but the last; those windows come out.
  auto want = hourly(first + later);
  size_t closed = 0;
  for (const auto& [k, w] : want)
    closed += k.first < iso(t0 + 3 * 3600) ? 1 : 0;
  size_t got = 0;
  for (int i = 0; i < 3000 && got < closed; ++i) {
    size_t pages = 0;
    got = all_results(http, "&to=" + iso(t0 + 3 * 3600), 100000, pages).size();
    if (got < closed)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(got == closed);
  CHECK(wait_for_run(http, "running"));
  srv.proc.signal(SIGTERM);
  CHECK(srv.proc.wait(30) == 0);
  std::ifstream log{dir.path / "serve.log"};
  std::stringstream text;
  text << log.rdbuf();
  CHECK(text.str().find("stopped (SIGTERM) after a last commit") != std::string::npos);
}

TEST_CASE("weir serve refuses a bad listen address before anything runs", "[e2e][serve]") {
  temp_dir dir;
  write_file(dir.path / "in.csv", "ts,k,amount\n" + csv_rows(10, t0, 1, 1, 1));
  write_file(dir.path / "p.toml", config());
  auto r = weir::test::sh("cd " + dir.str() + " && timeout 30 " + weir_bin +
                          " serve p.toml --listen nowhere");
  INFO(r.out);
  CHECK(r.rc == 2);
  CHECK(r.out.find("--listen 'nowhere': give HOST:PORT") != std::string::npos);
  CHECK(!fs::exists(dir.path / "store"));
}

namespace {

/// A pipeline `p` whose records come over HTTP as ndjson: hourly count and sum of `amount` per
/// `k`.
std::string http_config(const std::string& commit_interval = "20ms",
                        const std::string& extra_source = "") {
  return "store = \"store\"\ncommit_interval = \"" + commit_interval +
         "\"\n\n[[pipeline]]\nname = \"p\"\npartitions = 2\n\n"
         "  [[pipeline.source]]\n  name = \"api\"\n  http = true\n  format = \"ndjson\"\n"
         "  max_line_bytes = 200\n" +
         extra_source +
         "\n  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n  measures = [\"amount\"]\n\n"
         "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1h\"\n\n"
         "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n";
}

/// Rows of `all_results` as (window start, key) -> count.
std::map<std::pair<std::string, std::string>, long>
counts_of(const std::vector<std::vector<std::string>>& rows) {
  std::map<std::pair<std::string, std::string>, long> out;
  for (const auto& f : rows)
    out[{f[0], f[2]}] = std::stol(f[3]);
  return out;
}

/// Brute force: events per (hour start, key) of ndjson lines made by `event`.
std::map<std::pair<std::string, std::string>, long> hourly_counts(const std::string& lines) {
  std::map<std::pair<std::string, std::string>, long> out;
  std::istringstream in{lines};
  const std::regex ev{"\\{\"ts\": \"([^\"]+)\", \"k\": \"([^\"]+)\", \"amount\": ([0-9]+)\\}"};
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    REQUIRE(std::regex_match(line, m, ev));
    out[{m[1].str().substr(0, 13) + ":00:00Z", m[2]}] += 1;
  }
  return out;
}

/// The counts per (hour, key) of the windows ending at or before `to`, once they equal `want`
/// (or what they are after 30 s).
std::map<std::pair<std::string, std::string>, long>
wait_for_counts(httplib::Client& http, const std::string& to,
                const std::map<std::pair<std::string, std::string>, long>& want) {
  std::map<std::pair<std::string, std::string>, long> got;
  for (int i = 0; i < 1500 && got != want; ++i) {
    size_t pages = 0;
    got = counts_of(all_results(http, "&to=" + to, 1000, pages));
    if (got != want)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return got;
}

} // namespace

TEST_CASE("POST events lands them before answering, and they are aggregated like any source",
          "[e2e][serve][ingest]") {
  temp_dir dir;
  write_file(dir.path / "p.toml", http_config());
  // `weir run` has no server to take them.
  auto run = weir::test::sh("cd " + dir.str() + " && timeout 30 " + weir_bin + " run p.toml");
  CHECK(run.rc == 2);
  CHECK(run.out.find("an http source takes records through weir serve") != std::string::npos);
  served srv{dir, "serve.log", {"--max-body-bytes", "100000"}};
  const int port = srv.port;
  REQUIRE(port > 0);
  httplib::Client http{"127.0.0.1", port};
  REQUIRE(wait_ready(http));
  http.set_read_timeout(10, 0);
  // Bodies of random sizes with events in time order over the first three hours, then one
  // past them to close them.
  std::mt19937_64 rng{3};
  std::string all;
  uint64_t expect_offset = 0;
  int64_t t = t0;
  for (int b = 0; b < 20; ++b) {
    std::string body;
    const int n = 1 + static_cast<int>(rng() % 200);
    for (int i = 0; i < n; ++i, t += 5)
      body += event(t, "k" + std::to_string(rng() % 5), static_cast<long>(rng() % 100));
    if (b == 7)
      body.pop_back(); // a last line without its line end still counts
    auto r = http.Post("/v1/pipelines/p/events", body, "application/x-ndjson");
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 200);
    CHECK(json_number(r->body, "records") == n);
    // Offsets follow one another: the bodies are the source's bytes, in order.
    CHECK(json_number(r->body, "first_offset") == static_cast<long long>(expect_offset));
    expect_offset = static_cast<uint64_t>(json_number(r->body, "end_offset"));
    all += body + (b == 7 ? "\n" : "");
  }
  CHECK(expect_offset == all.size());
  REQUIRE(t < t0 + 3 * 3600);
  // A malformed line is a dead letter; the others of its body count.
  auto mixed = http.Post("/v1/pipelines/p/events",
                         "not json\n" + event(t0 + 3 * 3600 - 1, "k1", 1000) +
                           event(t0 + 10 * 3600, "z", 0),
                         "application/x-ndjson");
  REQUIRE(mixed);
  CHECK(mixed->status == 200);
  all += event(t0 + 3 * 3600 - 1, "k1", 1000);
  // Brute force over every accepted event: count per (hour, key), for the closed hours.
  const auto want = hourly_counts(all);
  CHECK(wait_for_counts(http, iso(t0 + 3 * 3600), want) == want);
  auto dead = http.Get("/v1/pipelines/p/dead-letters?format=csv");
  REQUIRE(dead);
  CHECK(dead->body.find("api (http)") != std::string::npos);
  CHECK(dead->body.find("bad json") != std::string::npos);

  // Refusals: nothing of a refused body is taken.
  auto too_long = http.Post("/v1/pipelines/p/events",
                            event(t0, "k", 1) + "{\"ts\": \"" + std::string(300, 'x') + "\"}\n",
                            "application/x-ndjson");
  REQUIRE(too_long);
  CHECK(too_long->status == 413);
  CHECK(too_long->body.find("line 2 is 310 bytes, over max_line_bytes 200") != std::string::npos);
  auto too_big = http.Post("/v1/pipelines/p/events", std::string(200000, '\n'), "text/plain");
  REQUIRE(too_big);
  CHECK(too_big->status == 413);
  CHECK(too_big->body.find("--max-body-bytes") != std::string::npos);
  auto empty = http.Post("/v1/pipelines/p/events", "", "application/x-ndjson");
  REQUIRE(empty);
  CHECK(empty->status == 400);
  auto unknown = http.Post("/v1/pipelines/q/events", "x\n", "text/plain");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  auto no_source = http.Post("/v1/pipelines/p/events?source=nope", "x\n", "text/plain");
  REQUIRE(no_source);
  CHECK(no_source->status == 404);
  // The end offset did not move for any of them.
  auto next = http.Post("/v1/pipelines/p/events", event(t0 + 10 * 3600, "z", 0), "text/plain");
  REQUIRE(next);
  CHECK(json_number(next->body, "first_offset") ==
        static_cast<long long>(expect_offset + mixed->body.size() * 0 +
                               std::string{"not json\n"}.size() +
                               event(t0 + 3 * 3600 - 1, "k1", 1000).size() +
                               event(t0 + 10 * 3600, "z", 0).size()));
  // Committed chunks leave the lake (lake_retention 0 here): offsets go on all the same.
  auto after_prune = http.Post("/v1/pipelines/p/events", event(t0 + 11 * 3600, "z", 0), "text/plain");
  REQUIRE(after_prune);
  CHECK(json_number(after_prune->body, "first_offset") == json_number(next->body, "end_offset"));
  srv.proc.signal(SIGTERM);
  CHECK(srv.proc.wait(30) == 0);
}

TEST_CASE("a source whose landed records are not committed yet slows its clients with 429",
          "[e2e][serve][ingest]") {
  temp_dir dir;
  // Epochs every 5 s: what is landed stays uncommitted while the test sends.
  write_file(dir.path / "p.toml", http_config("5s"));
  served srv{dir, "serve.log", {"--max-pending-bytes", "1000"}};
  const int port = srv.port;
  REQUIRE(port > 0);
  httplib::Client http{"127.0.0.1", port};
  REQUIRE(wait_ready(http));
  std::string body;
  for (int i = 0; i < 30; ++i)
    body += event(t0 + i, "k", i);
  REQUIRE(body.size() > 1000);
  // The first body is taken; the next is refused until an epoch commits it. (Should an epoch
  // commit between two bodies, the one after is taken too: send until one is refused.)
  size_t taken = 0;
  int refused = 0;
  std::string retry_after;
  std::string why;
  for (int i = 0; i < 5 && refused == 0; ++i) {
    auto r = http.Post("/v1/pipelines/p/events", body, "application/x-ndjson");
    REQUIRE(r);
    if (r->status == 200) {
      CHECK(json_number(r->body, "first_offset") == static_cast<long long>(taken * body.size()));
      ++taken;
    } else {
      refused = r->status;
      retry_after = r->get_header_value("Retry-After");
      why = r->body;
    }
  }
  CHECK(taken >= 1);
  CHECK(refused == 429);
  CHECK(retry_after == "1");
  CHECK(why.find("not yet committed") != std::string::npos);
  srv.proc.signal(SIGTERM);
  CHECK(srv.proc.wait(60) == 0);
  // What was taken is committed (by the stop, or by the next server's first epoch when a body
  // landed just before the stop, after ingest's last read): a new server takes bodies again,
  // right after it.
  served again{dir, "again.log", {"--max-pending-bytes", "1000"}};
  const int port2 = again.port;
  REQUIRE(port2 > 0);
  httplib::Client http2{"127.0.0.1", port2};
  REQUIRE(wait_ready(http2));
  auto third = http2.Post("/v1/pipelines/p/events", body, "application/x-ndjson");
  for (int i = 0; i < 30 && third && third->status == 429; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    third = http2.Post("/v1/pipelines/p/events", body, "application/x-ndjson");
  }
  REQUIRE(third);
  CHECK(third->status == 200);
  CHECK(json_number(third->body, "first_offset") ==
        static_cast<long long>(taken * body.size()));
  again.proc.signal(SIGTERM);
  CHECK(again.proc.wait(60) == 0);
}

TEST_CASE("kill -9 while a client sends: every acknowledged record counts exactly once",
          "[e2e][serve][ingest][crash]") {
  temp_dir dir;
  write_file(dir.path / "p.toml", http_config());
  // Batch b: 40 events of key "b<b>", amounts 1..40, all in the first hour.
  auto batch = [](int b) {
    std::string body;
    for (int i = 1; i <= 40; ++i)
      body += event(t0 + 60 + i, "b" + std::to_string(b), i);
    return body;
  };
  std::vector<int> acked;
  std::vector<int> unsure; // sent, no answer: landed or not, but whole if at all
  int sent = 0;
  for (int round = 0; round < 3; ++round) {
    served srv{dir, ("serve" + std::to_string(round) + ".log")};
    const int port = srv.port;
    REQUIRE(port > 0);
    std::atomic<bool> go{true};
    std::thread client{[&] {
      httplib::Client http{"127.0.0.1", port};
      http.set_read_timeout(5, 0);
      if (!wait_ready(http))
        return;
      while (go.load()) {
        const int b = sent++;
        auto r = http.Post("/v1/pipelines/p/events", batch(b), "application/x-ndjson");
        if (r && r->status == 200)
          acked.push_back(b);
        else
          unsure.push_back(b);
        if (!r)
          break; // the server is gone
      }
    }};
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + 200 * round));
    srv.proc.signal(SIGKILL);
    CHECK(srv.proc.wait(10) == 128 + SIGKILL);
    go = false;
    client.join();
  }
  REQUIRE(acked.size() > 10);
  // A last server: an event hours later closes the first hour.
  served last{dir, "last.log"};
  const int port = last.port;
  REQUIRE(port > 0);
  httplib::Client http{"127.0.0.1", port};
  REQUIRE(wait_ready(http));
  auto closer = http.Post("/v1/pipelines/p/events", event(t0 + 5 * 3600, "z", 0), "text/plain");
  REQUIRE(closer);
  REQUIRE(closer->status == 200);
  std::map<std::pair<std::string, std::string>, long> got;
  for (int i = 0; i < 1500; ++i) {
    size_t pages = 0;
    got = counts_of(all_results(http, "&to=" + iso(t0 + 3600), 100000, pages));
    bool all_there = true;
    for (int b : acked)
      all_there = all_there && got.count({iso(t0), "b" + std::to_string(b)});
    if (all_there)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int b : acked) {
    INFO("acknowledged batch " << b);
    CHECK(got[{iso(t0), "b" + std::to_string(b)}] == 40);
  }
  for (int b : unsure) {
    auto it = got.find({iso(t0), "b" + std::to_string(b)});
    INFO("unanswered batch " << b);
    CHECK((it == got.end() || it->second == 40));
  }
  // Nothing else: every window is a batch that was sent.
  CHECK(got.size() <= acked.size() + unsure.size());
  last.proc.signal(SIGTERM);
  CHECK(last.proc.wait(30) == 0);
  auto check = weir::test::sh("timeout 60 " + weir_bin + " check --store " +
                              (dir.path / "store").string());
  INFO(check.out);
  CHECK(check.rc == 0);
}

namespace {

/// A line-oriented TCP client of the plain ingest (loopback, 10 s timeouts).
class line_client {
public:
  explicit line_client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_port = htons(static_cast<uint16_t>(port));
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~line_client() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  bool connected() const { return fd_ >= 0; }
  void send(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      ssize_t n = ::send(fd_, s.data() + done, s.size() - done, MSG_NOSIGNAL);
      if (n <= 0)
        return;
      done += static_cast<size_t>(n);
    }
  }
  /// The next line the server sends, without its end ("" when the connection ends).
  std::string line() {
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        auto l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      char b[4096];
      ssize_t n = ::recv(fd_, b, sizeof b, 0);
      if (n <= 0)
        return "";
      buf_.append(b, static_cast<size_t>(n));
    }
  }

private:
  int fd_ = -1;
  std::string buf_;
};


} // namespace

TEST_CASE("the plain TCP ingest acknowledges each batch once it is landed", "[e2e][serve][tcp]") {
  temp_dir dir;
  write_file(dir.path / "p.toml", http_config());
  served srv{dir, "serve.log", {"--tcp", "127.0.0.1:0"}};
  REQUIRE(srv.port > 0);
  const int tcp = wait_for_port(dir.path / "serve.log", "tcp ingest on ");
  REQUIRE(tcp > 0);
  httplib::Client http{"127.0.0.1", srv.port};
  REQUIRE(wait_ready(http));
  {
    line_client bad{tcp};
    REQUIRE(bad.connected());
    bad.send("hello\n");
    CHECK(bad.line().rfind("error 400 begin with: weir-ingest 1 PIPELINE", 0) == 0);
    CHECK(bad.line().empty()); // and the connection ends
  }
  {
    line_client unknown{tcp};
    unknown.send("weir-ingest 1 nope\n");
    CHECK(unknown.line() == "error 404 no pipeline named 'nope'");
  }
  line_client c{tcp};
  REQUIRE(c.connected());
  c.send("weir-ingest 1 p\n");
  REQUIRE(c.line() == "ok weir-ingest 1");
  // Batches in time order over the first two hours, then one that closes them.
  std::string all;
  uint64_t offset = 0;
  int64_t t = t0;
  for (int b = 0; b < 10; ++b) {
    std::string batch;
    for (int i = 0; i < 100 + 37 * b; ++i, t += 2)
      batch += event(t, "k" + std::to_string((b + i) % 4), i);
    c.send(batch + "\n");
    const auto ack = c.line();
    INFO(ack);
    CHECK(ack == "ok " + std::to_string(100 + 37 * b) + " " + std::to_string(offset) + " " +
                   std::to_string(offset + batch.size()));
    offset += batch.size();
    all += batch;
  }
  REQUIRE(t < t0 + 2 * 3600);
  // A line over max_line_bytes refuses its batch; the connection goes on.
  c.send(event(t, "k", 1) + "{\"ts\": \"" + std::string(300, 'x') + "\"}\n\n");
  CHECK(c.line().rfind("error 413 line 2 is 310 bytes", 0) == 0);
  c.send(event(t0 + 5 * 3600, "z", 0) + "\n");
  CHECK(c.line() == "ok 1 " + std::to_string(offset) + " " +
                      std::to_string(offset + event(t0 + 5 * 3600, "z", 0).size()));
  // Brute force over every accepted event: count per (hour, key), for the closed hours.
  const auto want = hourly_counts(all);
  CHECK(wait_for_counts(http, iso(t0 + 2 * 3600), want) == want);

  // Every committed epoch is a task: their records add up to every record sent.
  const long sent = 2665 + 1;
  double read = 0;
  for (int i = 0; i < 1500 && read != sent; ++i) {
    auto m = http.Get("/metrics");
    REQUIRE(m);
    read = sample(m->body, "weir_events_read_total{pipeline=\"p\"}");
    if (read != sent)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(read == sent);
  auto tasks = http.Get("/v1/tasks?format=csv&limit=100000");
  REQUIRE(tasks);
  REQUIRE(tasks->status == 200);
  long events = 0;
  long task_rows = 0;
  uint64_t last_epoch = 0;
  std::istringstream in{tasks->body};
  for (std::string line; std::getline(in, line);) {
    auto f = split(line, ',');
    REQUIRE(f.size() == 11);
    if (f[0] == "pipeline")
      continue;
    ++task_rows;
    CHECK(std::stoull(f[1]) > last_epoch); // epochs in order, each once
    last_epoch = std::stoull(f[1]);
    events += std::stol(f[4]);
  }
  CHECK(task_rows >= 1);
  CHECK(events <= sent);
  // The epochs committed after the metrics were read hold nothing new.
  CHECK(events == sent);
  { // The batch-size histogram counts the same records, one observation per task or more.
    auto m = http.Get("/metrics");
    REQUIRE(m);
    CHECK(sample(m->body, "weir_epoch_records_sum{pipeline=\"p\"}") == sent);
    CHECK(sample(m->body, "weir_epoch_records_count{pipeline=\"p\"}") >= task_rows);
    CHECK(sample(m->body, "weir_epoch_records_bucket{pipeline=\"p\",le=\"+Inf\"}") ==
          sample(m->body, "weir_epoch_records_count{pipeline=\"p\"}"));
  }
  auto status = weir::test::sh("timeout 30 " + weir_bin + " status --server http://127.0.0.1:" +
                               std::to_string(srv.port) + " --limit 5");
  INFO(status.out);
  CHECK(status.rc == 0);
  CHECK(status.out.find("epoch") != std::string::npos);
  CHECK(status.out.find("latency_ms") != std::string::npos);
  // A header, a rule, then the newest epochs, at most 5 (more may have committed meanwhile).
  const auto lines = std::count(status.out.begin(), status.out.end(), '\n');
  CHECK(lines >= 2 + std::min(5L, task_rows));
  CHECK(lines <= 2 + 5);
  srv.proc.signal(SIGTERM);
  CHECK(srv.proc.wait(30) == 0);
}

TEST_CASE("an epoch slower than slow_epoch is warned about with what it held",
          "[e2e][serve][tasks]") {
  temp_dir dir;
  write_file(dir.path / "in.csv", "ts,k,amount\n" + csv_rows(2000, t0, 3, 4, 9));
  // Every epoch is slower than a microsecond.
  write_file(dir.path / "p.toml", "slow_epoch = \"1us\"\n" + config());
  auto r = weir::test::sh("cd " + dir.str() + " && timeout 60 " + weir_bin + " run p.toml");
  INFO(r.out);
  CHECK(r.rc == 0);
  CHECK(r.out.find("pipeline p epoch 1 took") != std::string::npos);
  CHECK(r.out.find("most of it was") != std::string::npos);
  // The warnings' records add up to every record read, whichever epochs held them.
  const std::regex warned{"pipeline p epoch [0-9]+ took [^:]*: ([0-9]+) records"};
  long records = 0;
  for (std::sregex_iterator it{r.out.begin(), r.out.end(), warned}, end; it != end; ++it)
    records += std::stol((*it)[1]);
  CHECK(records == 2000);
  // Retention and the threshold must be positive, and are named when they are not.
  write_file(dir.path / "q.toml", "task_retention = \"0s\"\n" + config());
  auto bad = weir::test::sh("cd " + dir.str() + " && timeout 60 " + weir_bin + " run q.toml");
  CHECK(bad.rc == 2);
  CHECK(bad.out.find("task_retention: must be greater than zero") != std::string::npos);
}


TEST_CASE("promtool accepts /metrics and a real Prometheus scrapes it", "[e2e][serve][metrics]") {
  temp_dir dir;
  write_file(dir.path / "p.toml", http_config());
  served srv{dir, "serve.log"};
  REQUIRE(srv.port > 0);
  httplib::Client http{"127.0.0.1", srv.port};
  REQUIRE(wait_ready(http));
  std::string body;
  for (int i = 0; i < 25; ++i)
    body += event(t0 + i, "k" + std::to_string(i % 3), i);
  body += "not json\n";
  auto posted = http.Post("/v1/pipelines/p/events", body, "application/x-ndjson");
  REQUIRE(posted);
  REQUIRE(posted->status == 200);
  // Until the metrics show the 26 records committed.
  std::string text;
  for (int i = 0; i < 1500; ++i) {
    auto m = http.Get("/metrics");
    REQUIRE(m);
    text = m->body;
    if (sample(text, "weir_events_read_total{pipeline=\"p\"}") == 26)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(sample(text, "weir_events_read_total{pipeline=\"p\"}") == 26);
  write_file(dir.path / "metrics.txt", text);
  auto lint = weir::test::sh("timeout 30 promtool check metrics < " +
                             (dir.path / "metrics.txt").string());
  INFO(lint.out);
  CHECK(lint.rc == 0);

  // A real Prometheus on loopback scrapes the server every second.
  const int prom_port = free_port();
  write_file(dir.path / "prometheus.yml",
             "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weir\n"
             "    static_configs:\n      - targets: ['127.0.0.1:" +
               std::to_string(srv.port) + "']\n");
  background prom({"/usr/bin/prometheus", "--config.file=" + (dir.path / "prometheus.yml").string(),
                   "--storage.tsdb.path=" + (dir.path / "tsdb").string(),
                   "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
                  dir.path / "prometheus.log");
  REQUIRE(prom.started());
  httplib::Client promql{"127.0.0.1", prom_port};
  promql.set_read_timeout(5, 0);
  std::string answer;
  bool scraped = false;
  for (int i = 0; i < 300 && !scraped; ++i) { // at most 60 s
    auto r = promql.Get("/api/v1/query?query=weir_events_read_total");
    if (r && r->status == 200) {
      answer = r->body;
      scraped = answer.find("\"pipeline\":\"p\"") != std::string::npos &&
                answer.find(",\"26\"]") != std::string::npos;
    }
    if (!scraped)
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  INFO(answer);
  CHECK(scraped);
  auto rejected = promql.Get(
    "/api/v1/query?query=weir_events_rejected_total%7Breason%3D%22bad%20json%22%7D");
  REQUIRE(rejected);
  CHECK(rejected->body.find(",\"1\"]") != std::string::npos);
  auto up = promql.Get("/api/v1/query?query=up%7Bjob%3D%22weir%22%7D");
  REQUIRE(up);
  CHECK(up->body.find(",\"1\"]") != std::string::npos);
  prom.signal(SIGTERM);
  CHECK(prom.wait(30) == 0);
  srv.proc.signal(SIGTERM);
  CHECK(srv.proc.wait(30) == 0);
}

TEST_CASE("log lines are JSON objects with --log-format json", "[e2e][logs]") {
  temp_dir dir;
  write_file(dir.path / "in.csv", "ts,k,amount\n" + csv_rows(500, t0, 3, 4, 2) + "x,y\n");
  // The config sets the format and a level the flag then overrides.
  write_file(dir.path / "p.toml",
             "slow_epoch = \"1us\"\nlog_format = \"json\"\nlog_level = \"off\"\n" + config());
  auto r = weir::test::sh("cd " + dir.str() + " && timeout 60 " + weir_bin +
                          " run p.toml --quiet --log-level info");
  INFO(r.out);
  CHECK(r.rc == 0);
  const std::regex object{R"re(\{"time": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", "level": )re"
                          R"re("(trace|debug|info|warning|error|critical)", "msg": "([^"\\]|\\.)*"\})re"};
  size_t lines = 0;
  size_t commits = 0;
  size_t warnings = 0;
  std::istringstream in{r.out};
  for (std::string line; std::getline(in, line);) {
    INFO(line);
    CHECK(std::regex_match(line, object));
    ++lines;
    commits += line.find("\"level\": \"info\"") != std::string::npos &&
               line.find(" committed: ") != std::string::npos;
    warnings += line.find("\"level\": \"warning\"") != std::string::npos;
  }
  CHECK(lines >= 2);
  CHECK(commits >= 1);
  CHECK(warnings >= 1); // the slow epochs
  auto bad = weir::test::sh("timeout 30 " + weir_bin + " run p.toml --log-format xml");
  CHECK(bad.rc == 2);
  // The flag wins over the config; a bad value in the config names its key.
  auto text = weir::test::sh("cd " + dir.str() + " && rm -rf store && timeout 60 " + weir_bin +
                             " run p.toml --quiet --log-level info --log-format text");
  CHECK(text.rc == 0);
  CHECK(text.out.find("[info]") != std::string::npos);
  CHECK(text.out.find("\"level\": ") == std::string::npos);
  write_file(dir.path / "p.toml", "log_format = \"yaml\"\n" + config());
  auto wrong = weir::test::sh("cd " + dir.str() + " && timeout 30 " + weir_bin + " run p.toml");
  CHECK(wrong.rc == 2);
  CHECK(wrong.out.find("p.toml:1: log_format: unknown value") != std::string::npos);
}
