// The results indexes of a pipeline through `weir serve`: the change feed (results?since_epoch)
// and lookups through the key index. Events go in over HTTP in rounds; what a snapshot of the
// results plus the feed since its epoch gives must equal the final results, and those a
// brute-force count of the events.

#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "serve_support.hpp"

namespace {

using weir::test::event;
using weir::test::iso;
using weir::test::served;
using weir::test::split;
using weir::test::temp_dir;
using weir::test::wait_ready;
using weir::test::weir_bin;
using weir::test::write_file;

const int64_t t0 = 1717200000; // 2024-06-01T00:00:00Z

/// Pipeline p: ndjson over HTTP, hourly count and sum per key, both indexes kept.
std::string config() {
  return "store = \"store\"\ncommit_interval = \"20ms\"\n\n[[pipeline]]\nname = \"p\"\n"
         "partitions = 2\n\n  [[pipeline.source]]\n  name = \"api\"\n  http = true\n\n"
         "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n  measures = [\"amount\"]\n\n"
         "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1h\"\n"
         "  late = \"update\"\n\n"
         "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n\n"
         "  [pipeline.results]\n  key_index = true\n  change_feed = true\n";
}

/// (window start, key) -> (count, sum).
using table = std::map<std::pair<std::string, std::string>, std::pair<long, double>>;

/// Brute force over ndjson lines made by `event`: the windows that end at or before `to`.
table hourly(const std::vector<std::tuple<int64_t, std::string, long>>& events, int64_t to) {
  table out;
  for (const auto& [t, k, amount] : events) {
    const int64_t start = t - t % 3600;
    if (start + 3600 > to)
      continue;
    auto& w = out[{iso(start), k}];
    w.first += 1;
    w.second += static_cast<double>(amount);
  }
  return out;
}

/// A csv answer of the results endpoint: rows keyed by (start, key); with the change feed, the
/// epoch of each row in `epochs` (in order).
table parse(const std::string& body, std::vector<uint64_t>* epochs = nullptr) {
  table out;
  std::istringstream in{body};
  for (std::string line; std::getline(in, line);) {
    auto f = split(line, ',');
    if (f[0] == "window_start")
      continue;
    REQUIRE(f.size() == (epochs ? 7u : 6u));
    out[{f[0], f[2]}] = {std::stol(f[3]), std::strtod(f[4].c_str(), nullptr)};
    if (epochs)
      epochs->push_back(std::stoull(f[6]));
  }
  return out;
}

/// GET a path; its body and Weir-Epoch (0 when none).
std::pair<std::string, uint64_t> get(httplib::Client& http, const std::string& path,
                                     int status = 200) {
  auto r = http.Get(path.c_str());
  REQUIRE(r);
  INFO(path << ": " << r->body);
  REQUIRE(r->status == status);
  uint64_t e = r->has_header("Weir-Epoch")
                 ? std::stoull(r->get_header_value("Weir-Epoch"))
                 : 0;
  return {r->body, e};
}

/// Waits (at most 60 s) until the committed results equal `want`; the last answer.
table wait_for(httplib::Client& http, const table& want) {
  table got;
  for (int i = 0; i < 3000; ++i) {
    got = parse(get(http, "/v1/pipelines/p/results?format=csv&limit=100000").first);
    if (got == want)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return got;
}

} // namespace

TEST_CASE("the change feed gives what later epochs committed; lookups by key use the index",
          "[e2e][serve][feed]") {
  temp_dir dir;
  write_file(dir.path / "p.toml", config());
  served srv{dir, "serve.log"};
  REQUIRE(srv.port > 0);
  httplib::Client http{"127.0.0.1", srv.port};
  REQUIRE(wait_ready(http));
  http.set_read_timeout(10, 0);
  std::mt19937_64 rng{17};
  std::vector<std::tuple<int64_t, std::string, long>> events;
  // Round r: events over hours [r, r + 2), a tenth of them an hour earlier: late ones for
  // windows already committed, which they update (late = "update").
  auto post_round = [&](int r) {
    std::string body;
    for (int i = 0; i < 300; ++i) {
      int64_t t = t0 + r * 3600 + static_cast<int64_t>(rng() % 7200);
      if (r > 0 && i % 10 == 0)
        t -= 3600; // late
      std::string k = "k" + std::to_string(rng() % 6);
      long amount = static_cast<long>(rng() % 100);
      events.emplace_back(t, k, amount);
      body += event(t, k, amount);
    }
    auto res = http.Post("/v1/pipelines/p/events", body, "application/x-ndjson");
    REQUIRE(res);
    REQUIRE(res->status == 200);
  };
  // The watermark trails the largest time by nothing (no out-of-orderness set): windows up to
  // the latest event's hour are closed.
  auto closed_to = [&events] {
    int64_t m = 0;
    for (const auto& e : events)
      m = std::max(m, std::get<0>(e));
    return m - m % 3600;
  };

  post_round(0);
  wait_for(http, hourly(events, closed_to()));
  auto [snapshot_body, snapshot_epoch] =
    get(http, "/v1/pipelines/p/results?format=csv&limit=100000&since_epoch=0");
  std::vector<uint64_t> first_epochs;
  const table from_start = parse(snapshot_body, &first_epochs);
  // Since epoch 0 the feed holds every row committed so far.
  CHECK(from_start == hourly(events, closed_to()));
  CHECK(snapshot_epoch > 0);
  for (auto e : first_epochs)
    CHECK((e >= 1 && e <= snapshot_epoch));

  for (int r = 1; r <= 3; ++r)
    post_round(r);
  const table final_want = hourly(events, closed_to());
  REQUIRE(wait_for(http, final_want) == final_want);

  // The snapshot plus every row of the feed since its epoch, applied in order, page by page:
  // the final results.
  table applied = from_start;
  std::string after;
  uint64_t last_epoch_seen = snapshot_epoch;
  size_t pages = 0;
  for (;;) {
    std::string path = "/v1/pipelines/p/results?format=csv&limit=7&since_epoch=" +
                       std::to_string(snapshot_epoch) + (after.empty() ? "" : "&after=" + after);
    auto r = http.Get(path.c_str());
    REQUIRE(r);
    REQUIRE(r->status == 200);
    ++pages;
    std::istringstream in{r->body};
    for (std::string line; std::getline(in, line);) {
      auto f = split(line, ',');
      if (f[0] == "window_start")
        continue;
      const uint64_t e = std::stoull(f[6]);
      CHECK(e > snapshot_epoch);
      CHECK(e >= last_epoch_seen); // in epoch order
      last_epoch_seen = e;
      applied[{f[0], f[2]}] = {std::stol(f[3]), std::strtod(f[4].c_str(), nullptr)};
    }
    if (!r->has_header("Weir-Next-Cursor"))
      break;
    after = r->get_header_value("Weir-Next-Cursor");
    REQUIRE(pages < 10000);
  }
  CHECK(pages > 1);
  CHECK(applied == final_want);
  size_t updated = 0; // windows of the snapshot that later epochs changed
  for (const auto& [w, v] : from_start)
    updated += final_want.at(w) != v ? 1 : 0;
  CHECK(updated > 0);

  // Lookups by key (through the index) equal the brute force, with a time range too.
  for (int k = 0; k < 6; ++k) {
    const std::string key = "k" + std::to_string(k);
    table want;
    for (const auto& [w, v] : final_want)
      if (w.second == key)
        want[w] = v;
    CHECK(parse(get(http, "/v1/pipelines/p/results?format=csv&key=" + key).first) == want);
    table ranged;
    for (const auto& [w, v] : want)
      if (w.first >= iso(t0 + 3600))
        ranged[w] = v;
    CHECK(parse(get(http, "/v1/pipelines/p/results?format=csv&key=" + key + "&from=" +
                            iso(t0 + 3600))
                  .first) == ranged);
  }

  // `weir query --server --since-epoch`: the same feed, and where to follow on.
  auto q = weir::test::sh(weir_bin + " query --server http://127.0.0.1:" +
                          std::to_string(srv.port) + " --pipeline p --format csv --since-epoch " +
                          std::to_string(snapshot_epoch) + " 2>" + (dir.path / "q.err").string());
  REQUIRE(q.rc == 0);
  table via_cli = from_start;
  std::vector<uint64_t> cli_epochs;
  for (const auto& [w, v] : parse(q.out, &cli_epochs))
    via_cli[w] = v;
  CHECK(via_cli == final_want);
  const std::string err = weir::test::read_text(dir.path / "q.err");
  CHECK(err.find("follow with --since-epoch") != std::string::npos);
  // A bad epoch is refused; without --server there is no feed.
  get(http, "/v1/pipelines/p/results?since_epoch=soon", 400);
  auto no_server = weir::test::sh(weir_bin + " query --store " + (dir.path / "store").string() +
                                  " --pipeline p --since-epoch 1");
  CHECK(no_server.rc == 2);
  CHECK(no_server.out.find("give --server") != std::string::npos);
  srv.proc.signal(SIGTERM);
  CHECK(srv.proc.wait(30) == 0);
}
