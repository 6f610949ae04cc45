// `weir serve` end to end: the binary runs the pipelines and answers over HTTP on loopback; a
// real HTTP client reads results (page by page), dead letters, the pipelines and the metrics, and
// every figure is checked against a brute-force computation of the input.

#include <catch2/catch.hpp>

#include <httplib.h>

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
#include "test_support.hpp"

namespace fs = std::filesystem;

namespace {

using weir::test::background;
using weir::test::iso;
using weir::test::split;
using weir::test::temp_dir;
using weir::test::write_file;

const std::string weir_bin = WEIR_BINARY;
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

/// Waits for `weir serve` to say where it listens; the port, or 0.
int wait_for_port(const fs::path& log) {
  const std::regex listening{"listening on http://127\\.0\\.0\\.1:([0-9]+)"};
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

/// Waits until GET /v1/pipelines says the run is `outcome` (at most 60 s).
bool wait_for_run(httplib::Client& http, const std::string& outcome) {
  for (int i = 0; i < 3000; ++i) {
    auto r = http.Get("/v1/pipelines");
    if (r && r->status == 200 && r->body.find("\"run\": \"" + outcome + "\"") != std::string::npos)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
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

/// The value of the sample `name{labels}` in Prometheus text, or -1.
double sample(const std::string& text, const std::string& series) {
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (line.compare(0, series.size() + 1, series + " ") == 0)
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
  return -1;
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
  background srv({weir_bin, "serve", (dir.path / "p.toml").string(), "--listen", "127.0.0.1:0"},
                 dir.path / "serve.log");
  REQUIRE(srv.started());
  const int port = wait_for_port(dir.path / "serve.log");
  REQUIRE(port > 0);
  httplib::Client http{"127.0.0.1", port};
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

  srv.signal(SIGTERM);
  CHECK(srv.wait(30) == 0);
}

TEST_CASE("weir serve runs a followed source until stopped and serves what each epoch commits",
          "[e2e][serve]") {
  temp_dir dir;
  const std::string first = csv_rows(500, t0, 2, 3, 5);
  write_file(dir.path / "in.csv", "ts,k,amount\n" + first);
  write_file(dir.path / "p.toml", config("  follow = true\n  idle_timeout = \"100ms\"\n"));
  background srv({weir_bin, "serve", (dir.path / "p.toml").string(), "--listen", "127.0.0.1:0"},
                 dir.path / "serve.log");
  REQUIRE(srv.started());
  const int port = wait_for_port(dir.path / "serve.log");
  REQUIRE(port > 0);
  httplib::Client http{"127.0.0.1", port};
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
  srv.signal(SIGTERM);
  CHECK(srv.wait(30) == 0);
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
