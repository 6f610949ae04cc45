// The status page of `weir serve` in a real browser (Debian's headless Chromium), its history
// endpoint and the metrics it plots: records are posted over HTTP, and what the page, GET
// /v1/history and GET /metrics show is checked against figures the test computes itself from
// what it posted.

#include <catch2/catch.hpp>

#include <httplib.h>
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "serve_support.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;

namespace {

using weir::test::event;
using weir::test::sample;
using weir::test::served;
using weir::test::temp_dir;
using weir::test::wait_ready;
using weir::test::write_file;

const char* chromium = "/usr/bin/chromium";

/// Pipeline `orders`: minute windows counting and summing `amount` per `k`, records from two
/// http sources (`web` and `app`), so that the watermark is the smaller of their event times
/// less 5 s. No source turns idle while the test runs.
std::string config(const std::string& commit_interval) {
  std::string sources;
  for (const char* name : {"web", "app"})
    sources += std::string{"  [[pipeline.source]]\n  name = \""} + name +
               "\"\n  http = true\n  format = \"ndjson\"\n  idle_timeout = \"1h\"\n\n";
  return "store = \"store\"\ncommit_interval = \"" + commit_interval +
         "\"\n\n[[pipeline]]\nname = \"orders\"\npartitions = 2\n\n" + sources +
         "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n  measures = [\"amount\"]\n\n"
         "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1m\"\n"
         "  out_of_orderness = \"5s\"\n\n"
         "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n";
}

constexpr int64_t out_of_orderness = 5;

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// What the test posted to one source, counted as it was sent.
struct posted {
  explicit posted(std::string source)
    : name(std::move(source)) {}
  std::string name;
  int64_t records = 0;
  uint64_t bytes = 0;
  int64_t max_time = 0;                                ///< the largest event time, seconds
  std::vector<std::pair<int64_t, std::string>> events; ///< (time, key)
};

/// Posts `n` events of `src`, one every `step` seconds from `from`, keys k0..k4, in bodies
/// of `per_body`; false when a body was refused.
bool post_events(httplib::Client& http, posted& src, int64_t from, int64_t step, int n,
                 int per_body) {
  for (int i = 0; i < n;) {
    std::string body;
    for (int j = 0; j < per_body && i < n; ++j, ++i) {
      const int64_t t = from + i * step;
      const std::string k = "k" + std::to_string((i * 7 + 3) % 5);
      body += event(t, k, i % 100);
      src.events.emplace_back(t, k);
      src.max_time = std::max(src.max_time, t);
      ++src.records;
    }
    auto r = http.Post(("/v1/pipelines/orders/events?source=" + src.name).c_str(), body,
                       "application/x-ndjson");
    if (!r || r->status != 200)
      return false;
    src.bytes += body.size();
  }
  return true;
}

/// Brute force: the watermark (seconds) and the minute windows (start, key) it has closed.
int64_t watermark_of(const std::vector<posted>& sources) {
  int64_t low = sources.front().max_time;
  for (const auto& s : sources)
    low = std::min(low, s.max_time);
  return low - out_of_orderness;
}

size_t closed_windows(const std::vector<posted>& sources, int64_t watermark) {
  std::set<std::pair<int64_t, std::string>> windows;
  for (const auto& s : sources)
    for (const auto& [t, k] : s.events) {
      const int64_t start = t - ((t % 60) + 60) % 60;
      if (start + 60 <= watermark)
        windows.emplace(start, k);
    }
  return windows.size();
}

/// Polls GET /metrics until `series` equals `want` (at most 30 s); the last text read.
std::string wait_for_sample(httplib::Client& http, const std::string& series, double want) {
  std::string text;
  for (int i = 0; i < 1500; ++i) {
    auto m = http.Get("/metrics");
    if (m && m->status == 200) {
      text = m->body;
      if (sample(text, series) == want)
        break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return text;
}

/// Waits until GET /v1/history?pipeline=orders has a newest sample whose `events_read` is
/// `want` and at least `at_least` samples with events (at most 30 s); the last body read goes
/// to `body`.
bool wait_for_history(httplib::Client& http, int64_t want, size_t at_least, std::string& body) {
  simdjson::dom::parser parser;
  for (int i = 0; i < 300; ++i) {
    auto r = http.Get("/v1/history?pipeline=orders");
    if (r && r->status == 200) {
      body = r->body;
      simdjson::dom::element doc;
      simdjson::dom::array samples;
      if (parser.parse(body).get(doc) == simdjson::SUCCESS &&
          doc["pipelines"].at(0)["samples"].get_array().get(samples) == simdjson::SUCCESS) {
        size_t with_events = 0;
        int64_t read = 0;
        for (auto x : samples)
          if (x["events_read"].get_int64().get(read) == simdjson::SUCCESS && read > 0)
            ++with_events;
        if (with_events >= at_least && read == want)
          return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string read_text(const fs::path& p) {
  std::ifstream f{p, std::ios::binary};
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

/// The text of the element with `data-field="FIELD"` in a page's DOM, separators removed.
std::string field_text(const std::string& dom, const std::string& field) {
  const std::regex re{"data-field=\"" + field + "\">([^<]*)<"};
  std::smatch m;
  if (!std::regex_search(dom, m, re))
    return "(no " + field + ")";
  std::string out = m[1];
  out.erase(std::remove(out.begin(), out.end(), ','), out.end());
  return out;
}

} // namespace

TEST_CASE("the status page shows the live pipelines, plots and tasks in a real browser",
          "[e2e][serve][status]") {
  if (!fs::exists(chromium))
    FAIL("this test needs Debian's chromium at /usr/bin/chromium: scripts/deps.sh --tests "
         "installs it");
  temp_dir dir;
  write_file(dir.path / "p.toml", config("20ms"));
  served srv{dir, "serve.log"};
  REQUIRE(srv.port > 0);
  httplib::Client http{"127.0.0.1", srv.port};
  REQUIRE(wait_ready(http));
  http.set_read_timeout(10, 0);

  // Events of the last quarter of an hour, sent over a few seconds so that the history has
  // samples while they arrive; one line that is not JSON (and would be markup if the page
  // inserted text as HTML) becomes a dead letter.
  const int64_t base = static_cast<int64_t>(wall_seconds()) - 900;
  std::vector<posted> sources{posted{"web"}, posted{"app"}};
  for (int round = 0; round < 4; ++round) {
    REQUIRE(post_events(http, sources[0], base + round * 150, 2, 75, 25));
    REQUIRE(post_events(http, sources[1], base + 1 + round * 150, 3, 50, 25));
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
  }
  const std::string hostile = "<img src=x onerror=alert(1)>";
  auto bad =
    http.Post("/v1/pipelines/orders/events?source=app", hostile + "\n", "application/x-ndjson");
  REQUIRE(bad);
  REQUIRE(bad->status == 200);
  const int64_t read = sources[0].records + sources[1].records + 1;
  REQUIRE(read == 501);
  const int64_t watermark = watermark_of(sources);
  const size_t windows = closed_windows(sources, watermark);
  REQUIRE(windows > 0);

  // Committed, and sampled a few times since.
  const auto text =
    wait_for_sample(http, "weir_events_read_total{pipeline=\"orders\"}", static_cast<double>(read));
  REQUIRE(sample(text, "weir_events_read_total{pipeline=\"orders\"}") == read);
  std::string history;
  REQUIRE(wait_for_history(http, read, 4, history));

  { // the page itself: self-contained, and told so to the browser
    auto page = http.Get("/");
    REQUIRE(page);
    REQUIRE(page->status == 200);
    CHECK(page->get_header_value("Content-Type") == "text/html; charset=utf-8");
    CHECK(page->get_header_value("Content-Security-Policy").find("default-src 'none'") !=
          std::string::npos);
    for (const char* external : {"src=", "href=", "url(", "@import", "https://"})
      CHECK(page->body.find(external) == std::string::npos);
    CHECK(page->body.find("innerHTML") == std::string::npos);
  }

  // Headless Chromium loads the page, lets it run five seconds of its own time, and prints
  // the DOM it built. Its profile and home are in the test's directory.
  const fs::path profile = dir.path / "chromium";
  const std::string cmd =
    "HOME=" + dir.str() + " XDG_CONFIG_HOME=" + dir.str() + " XDG_CACHE_HOME=" + dir.str() +
    " timeout -k 5 120 " + chromium +
    " --headless --no-sandbox --disable-gpu --no-first-run --disable-extensions"
    " --disable-background-networking --disable-component-update --disable-sync"
    " --disable-dev-shm-usage --virtual-time-budget=5000 --user-data-dir=" +
    profile.string() + " --dump-dom http://127.0.0.1:" + std::to_string(srv.port) + "/ 2>" +
    (dir.path / "chromium.log").string();
  auto browser = weir::test::sh(cmd);
  const std::string& dom = browser.out;
  INFO("chromium exit " << browser.rc << ", its log:\n" << read_text(dir.path / "chromium.log"));
  REQUIRE(browser.rc == 0);
  INFO("DOM:\n" << dom.substr(0, 20000));
  CHECK(dom.find("<span id=\"notice\" role=\"status\"></span>") != std::string::npos);

  // The pipeline and its figures as committed, counted here.
  CHECK(dom.find("<h2 data-pipeline=\"orders\">orders") != std::string::npos);
  CHECK(field_text(dom, "events_read") == std::to_string(read));
  CHECK(field_text(dom, "events_accepted") == std::to_string(read - 1));
  CHECK(field_text(dom, "events_rejected") == "1");
  CHECK(field_text(dom, "dead_letters") == "1");
  CHECK(field_text(dom, "windows_committed") == std::to_string(windows));
  CHECK(field_text(dom, "state") == "running");

  // Plots with points: every polyline has as many coordinate pairs as it says, inside the
  // drawing; the lag plot has one point per sample the server took since the events came.
  const std::regex line_re{
    "<polyline data-series=\"([a-z_]+)\" data-points=\"([0-9]+)\" points=\"([^\"]*)\""};
  std::map<std::string, int> points;
  for (std::sregex_iterator it{dom.begin(), dom.end(), line_re}, end; it != end; ++it) {
    const std::string coords = (*it)[3];
    const int n = std::stoi((*it)[2]);
    const std::regex pair_re{"(-?[0-9.]+),(-?[0-9.]+)"};
    int pairs = 0;
    for (std::sregex_iterator p{coords.begin(), coords.end(), pair_re}, e; p != e; ++p) {
      const double x = std::stod((*p)[1]);
      const double y = std::stod((*p)[2]);
      CHECK((x >= 0 && x <= 480 && y >= 0 && y <= 170));
      ++pairs;
    }
    CHECK(pairs == n);
    points[(*it)[1]] = n;
  }
  CHECK(points["throughput"] >= 3);
  CHECK(points["event_time_lag_s"] >= 3);
  CHECK(points["watermark_lag_s"] >= 3);

  // The tasks table has the committed epochs, the dead letters their reason, and the hostile
  // line is text, not an element.
  const std::regex task_row{"<tr data-epoch=\"[0-9]+\"><td>orders</td>"};
  CHECK(std::distance(std::sregex_iterator{dom.begin(), dom.end(), task_row},
                      std::sregex_iterator{}) >= 1);
  CHECK(dom.find("bad json") != std::string::npos);
  CHECK(dom.find("&lt;img src=x onerror=alert(1)&gt;") != std::string::npos);
  // (The raw text is also a cell's tooltip: an attribute value, which a serializer need not
  // escape '<' in.)
  const std::string elements = std::regex_replace(dom, std::regex{" title=\"[^\"]*\""}, "");
  CHECK(elements.find("<img") == std::string::npos);

  srv.proc.signal(SIGTERM);
  CHECK(srv.proc.wait(30) == 0);
}

TEST_CASE("GET /v1/history and the watermark, source and mailbox metrics",
          "[e2e][serve][status][metrics]") {
  temp_dir dir;
  // Epochs every second: what is posted is landed a while before it is committed.
  write_file(dir.path / "p.toml", config("1s"));
  served srv{dir, "serve.log"};
  REQUIRE(srv.port > 0);
  httplib::Client http{"127.0.0.1", srv.port};
  REQUIRE(wait_ready(http));
  http.set_read_timeout(10, 0);
  const int64_t base = static_cast<int64_t>(wall_seconds()) - 3600;
  std::vector<posted> sources{posted{"web"}, posted{"app"}};
  REQUIRE(post_events(http, sources[0], base, 1, 400, 100));
  REQUIRE(post_events(http, sources[1], base + 7, 2, 150, 50));
  const int64_t read = sources[0].records + sources[1].records;

  // Landed bytes are committed or pending, whatever the epochs did meanwhile.
  auto source_series = [](const char* name, const std::string& source) {
    return std::string{name} + "{pipeline=\"orders\",source=\"" + source + "\"}";
  };
  {
    auto m = http.Get("/metrics");
    REQUIRE(m);
    for (const auto& s : sources) {
      INFO(s.name);
      const double committed = sample(m->body, source_series("weir_source_offset_bytes", s.name));
      const double pending = sample(m->body, source_series("weir_source_pending_bytes", s.name));
      CHECK(committed >= 0);
      CHECK(pending >= 0);
      CHECK(committed + pending == static_cast<double>(s.bytes));
    }
  }

  const auto text =
    wait_for_sample(http, "weir_events_read_total{pipeline=\"orders\"}", static_cast<double>(read));
  REQUIRE(sample(text, "weir_events_read_total{pipeline=\"orders\"}") == read);

  { // the metrics: watermark, its lag, each source's event time and bytes, mailboxes
    const double before = wall_seconds();
    auto m = http.Get("/metrics");
    const double after = wall_seconds();
    REQUIRE(m);
    REQUIRE(m->status == 200);
    const auto& t = m->body;
    const int64_t watermark = watermark_of(sources);
    CHECK(sample(t, "weir_watermark_seconds{pipeline=\"orders\"}") ==
          static_cast<double>(watermark));
    const double lag = sample(t, "weir_watermark_lag_seconds{pipeline=\"orders\"}");
    CHECK(lag >= before - static_cast<double>(watermark) - 0.01);
    CHECK(lag <= after - static_cast<double>(watermark) + 0.01);
    for (const auto& s : sources) {
      INFO(s.name);
      CHECK(sample(t, source_series("weir_source_event_time_max_seconds", s.name)) ==
            static_cast<double>(s.max_time));
      CHECK(sample(t, source_series("weir_source_offset_bytes", s.name)) ==
            static_cast<double>(s.bytes));
      CHECK(sample(t, source_series("weir_source_pending_bytes", s.name)) == 0);
    }
    for (const char* actor :
         {"ingest", "preprocess", "window-aggregator-0", "window-aggregator-1", "updater"}) {
      INFO(actor);
      const double depth =
        sample(t, std::string{"weir_mailbox_depth{pipeline=\"orders\",actor=\""} + actor + "\"}");
      CHECK(depth >= 0);
      CHECK(depth == std::floor(depth));
    }
    CHECK(t.find("actor=\"window-aggregator-2\"") == std::string::npos); // two partitions
    write_file(dir.path / "metrics.txt", t);
    auto lint =
      weir::test::sh("timeout 30 promtool check metrics < " + (dir.path / "metrics.txt").string());
    INFO(t);
    INFO(lint.out);
    CHECK(lint.rc == 0);
    // GET /v1/pipelines says the same watermark.
    auto p = http.Get("/v1/pipelines");
    REQUIRE(p);
    CHECK(p->body.find("\"watermark\": \"" + weir::test::iso(watermark) + "\"") !=
          std::string::npos);
  }

  { // the history: a sample a second, in time order, up to the committed count
    std::string body;
    REQUIRE(wait_for_history(http, read, 3, body));
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    REQUIRE(parser.parse(body).get(doc) == simdjson::SUCCESS);
    CHECK(int64_t(doc["interval_s"]) == 1);
    CHECK(int64_t(doc["retention_s"]) == 900);
    simdjson::dom::array pipelines = doc["pipelines"];
    REQUIRE(pipelines.size() == 1);
    CHECK(std::string_view(pipelines.at(0)["name"]) == "orders");
    simdjson::dom::array samples = pipelines.at(0)["samples"];
    REQUIRE(samples.size() >= 3);
    double last_t = 0;
    int64_t last_read = 0;
    int64_t last_epoch = 0;
    for (auto s : samples) {
      const double t = s["t"];
      const int64_t n = s["events_read"];
      const int64_t e = s["last_epoch"];
      CHECK(t > last_t);
      CHECK(n >= last_read);
      CHECK(e >= last_epoch);
      last_t = t;
      last_read = n;
      last_epoch = e;
    }
    CHECK(last_read == read);
    CHECK(last_t <= wall_seconds());
    auto newest = samples.at(samples.size() - 1);
    CHECK(int64_t(newest["events_accepted"]) == read);
    CHECK(int64_t(newest["events_rejected"]) == 0);
    CHECK(int64_t(newest["windows_committed"]) ==
          static_cast<int64_t>(closed_windows(sources, watermark_of(sources))));
    // Lags are the sample's own time less the committed times.
    const double newest_t = newest["t"];
    CHECK(double(newest["watermark_lag_s"]) ==
          Approx(newest_t - static_cast<double>(watermark_of(sources))).margin(0.002));
    const int64_t max_time = std::max(sources[0].max_time, sources[1].max_time);
    CHECK(double(newest["event_time_lag_s"]) ==
          Approx(newest_t - static_cast<double>(max_time)).margin(0.002));
    // Some epoch since the history began had its latency measured.
    bool latency = false;
    for (auto s : samples)
      latency = latency || !s["epoch_latency_ms"].is_null();
    CHECK(latency);

    // `since`: only the samples after it.
    const double since = samples.at(1)["t"];
    char since_text[40];
    std::snprintf(since_text, sizeof since_text, "%.3f", since);
    auto later = http.Get((std::string{"/v1/history?since="} + since_text).c_str());
    REQUIRE(later);
    REQUIRE(later->status == 200);
    simdjson::dom::parser parser2;
    simdjson::dom::element doc2;
    REQUIRE(parser2.parse(later->body).get(doc2) == simdjson::SUCCESS);
    simdjson::dom::array after = doc2["pipelines"].at(0)["samples"];
    CHECK(after.size() >= samples.size() - 2);
    for (auto s : after)
      CHECK(double(s["t"]) > since);
  }

  { // bad requests
    auto unknown = http.Get("/v1/history?pipeline=nope");
    REQUIRE(unknown);
    CHECK(unknown->status == 404);
    for (const char* q : {"since=yesterday", "since=", "since=1e300", "since=nan"}) {
      INFO(q);
      auto r = http.Get((std::string{"/v1/history?"} + q).c_str());
      REQUIRE(r);
      CHECK(r->status == 400);
    }
  }
  srv.proc.signal(SIGTERM);
  CHECK(srv.proc.wait(30) == 0);
}
