// End to end through the `weir` binary: user aggregate functions from a plugin (tests/plugins/
// aggregates.cpp: "sum_sq" and "ewma") over sliding and session windows equal a brute-force
// computation over the input, also after a crash mid-run; config errors name their line and
// key. Every expectation is computed here from the raw events.

#include <catch2/catch.hpp>

#include "tests/background.hpp"
#include "tests/test_support.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace fs = std::filesystem;

namespace {

const std::string weir_bin = WEIR_BINARY;
const std::string plugin = WEIR_AGGREGATE_PLUGIN;
constexpr double alpha = 0.3;
constexpr int64_t base = 1717200000; // 2024-06-01T00:00:00Z

using weir::test::iso;
using weir::test::split;
using weir::test::temp_dir;
using weir::test::write_file;

weir::test::command_result run(const std::string& cmd) {
  return weir::test::sh("timeout 120 " + cmd);
}

struct event {
  int64_t t; // seconds
  std::string key;
  double amount;
};

/// The events: one every second over five keys, out of order by up to 20 s (less than the
/// out_of_orderness, so none is late), in 2 s bursts with pauses so that sessions form.
std::vector<event> make_events(size_t n) {
  std::mt19937_64 rng(77);
  std::vector<event> evs;
  for (size_t i = 0; i < n; ++i) {
    const auto at = static_cast<int64_t>(i);
    int64_t t = base + at + (at / 40) * 45 - static_cast<int64_t>(rng() % 21);
    auto key = "k" + std::to_string(rng() % 5);
    double amount = static_cast<double>(rng() % 20000) / 100.0 - 50;
    evs.push_back({t, key, amount});
  }
  return evs;
}

std::string csv_of(const std::vector<event>& evs) {
  std::string csv = "ts,k,amount\n";
  char buf[32];
  for (const auto& e : evs) {
    std::snprintf(buf, sizeof buf, "%.2f", e.amount);
    csv += iso(e.t) + "," + e.key + "," + buf + "\n";
  }
  return csv;
}

/// (start, end, key) as the query prints them.
using window_id = std::tuple<std::string, std::string, std::string>;

/// sum of squares, time-weighted mean (weight (1 - alpha)^(seconds before the window's newest
/// value)), plain sum.
std::vector<double> values_of(const std::vector<const event*>& es) {
  double sq = 0, sum = 0;
  int64_t newest = INT64_MIN;
  for (const auto* e : es) {
    sq += e->amount * e->amount;
    sum += e->amount;
    newest = std::max(newest, e->t);
  }
  double num = 0, den = 0;
  for (const auto* e : es) {
    double w = std::pow(1 - alpha, static_cast<double>(newest - e->t));
    num += e->amount * w;
    den += w;
  }
  return {sq, num / den, sum};
}

std::map<window_id, std::vector<double>> reference_sliding(const std::vector<event>& evs,
                                                           int64_t size, int64_t slide) {
  std::map<std::tuple<int64_t, std::string>, std::vector<const event*>> wins;
  for (const auto& e : evs)
    for (int64_t s = e.t - ((e.t % slide) + slide) % slide; s > e.t - size; s -= slide)
      wins[{s, e.key}].push_back(&e);
  std::map<window_id, std::vector<double>> out;
  for (const auto& [w, es] : wins)
    out[{iso(std::get<0>(w)), iso(std::get<0>(w) + size), std::get<1>(w)}] = values_of(es);
  return out;
}

std::map<window_id, std::vector<double>> reference_sessions(const std::vector<event>& evs,
                                                            int64_t gap) {
  std::map<std::string, std::vector<const event*>> by_key;
  for (const auto& e : evs)
    by_key[e.key].push_back(&e);
  std::map<window_id, std::vector<double>> out;
  for (auto& [key, es] : by_key) {
    std::stable_sort(es.begin(), es.end(), [](auto* a, auto* b) { return a->t < b->t; });
    for (size_t a = 0; a < es.size();) {
      size_t b = a + 1;
      int64_t end = es[a]->t + gap;
      for (; b < es.size() && es[b]->t <= end; ++b)
        end = std::max(end, es[b]->t + gap);
      out[{iso(es[a]->t), iso(end), key}] =
        values_of(std::vector<const event*>(es.begin() + a, es.begin() + b));
      a = b;
    }
  }
  return out;
}

std::string pipeline_text(const std::string& name, const std::string& window,
                          const std::string& ewma_options) {
  return "[[pipeline]]\nname = \"" + name +
         "\"\npartitions = 3\n"
         "  [[pipeline.source]]\n  name = \"in\"\n  path = \"in.csv\"\n"
         "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n  measures = [\"amount\"]\n"
         "  [pipeline.window]\n" +
         window +
         "  out_of_orderness = \"30s\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum_sq\"\n  field = \"amount\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"ewma\"\n  field = \"amount\"\n  name = \"trend\"\n"
         "  options = " +
         ewma_options +
         "\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n";
}

std::string config_text(const std::string& plugin_path, const std::string& ewma_options) {
  return "store = \"store\"\ncommit_interval = \"20ms\"\ncommit_events = 500\nbatch_bytes = 8192\n" +
         (plugin_path.empty() ? std::string{} : "plugins = [\"" + plugin_path + "\"]\n") + "\n" +
         pipeline_text("slide", "  kind = \"sliding\"\n  size = \"10m\"\n  slide = \"2m\"\n",
                       ewma_options) +
         pipeline_text("sess",
                       "  kind = \"session\"\n  gap = \"30s\"\n  allowed_lateness = \"1s\"\n",
                       ewma_options);
}

/// Compares `weir query` of a pipeline with the reference; "" when equal, else what differs.
std::string compare(const fs::path& store, const std::string& pipeline,
                    const std::map<window_id, std::vector<double>>& want) {
  auto q = run(weir_bin + " query --store '" + store.string() + "' --pipeline " + pipeline +
               " --format csv");
  if (q.rc != 0)
    return "query failed: " + q.out;
  std::istringstream in(q.out);
  std::string line;
  std::getline(in, line);
  if (line != "window_start,window_end,key,sum_sq_amount,trend,sum_amount,version")
    return "header " + line;
  size_t rows = 0;
  std::ostringstream diff;
  while (std::getline(in, line)) {
    auto f = split(line, ',');
    if (f.size() != 7)
      return "bad row " + line;
    ++rows;
    auto it = want.find({f[0], f[1], f[2]});
    if (it == want.end()) {
      diff << "unexpected " << line << "\n";
      continue;
    }
    for (size_t i = 0; i < 3; ++i) {
      double got = std::stod(f[3 + i]);
      double w = it->second[i];
      if (std::abs(got - w) > 1e-9 * std::max(1.0, std::abs(w)))
        diff << line << ": column " << i << " is " << got << ", want " << w << "\n";
    }
    if (f[6] != "1")
      diff << line << ": version " << f[6] << "\n";
  }
  if (rows != want.size())
    diff << rows << " rows, want " << want.size() << "\n";
  return diff.str();
}

/// The line of the config that starts with `prefix`, after line `after` (1-based).
size_t line_of(const std::string& text, const std::string& prefix, size_t after = 0) {
  std::istringstream in(text);
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n)
    if (n > after && line.rfind(prefix, 0) == 0)
      return n;
  return 0;
}

/// Waits until the file at `path` holds `needle`.
bool wait_for(const fs::path& path, const std::string& needle, double secs) {
  auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(secs);
  while (std::chrono::steady_clock::now() < until) {
    if (weir::test::read_text(path).find(needle) != std::string::npos)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

} // namespace

TEST_CASE("custom aggregates from a plugin equal a brute-force computation", "[e2e][extension]") {
  temp_dir dir;
  auto evs = make_events(4000);
  write_file(dir.path / "in.csv", csv_of(evs));
  write_file(dir.path / "p.toml", config_text(plugin, "{ alpha = 0.3 }"));
  auto r = run(weir_bin + " run --final '" + (dir.path / "p.toml").string() + "'");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto sliding = reference_sliding(evs, 600, 120);
  auto sessions = reference_sessions(evs, 30);
  REQUIRE(sessions.size() > 100);
  CHECK(compare(dir.path / "store", "slide", sliding) == "");
  CHECK(compare(dir.path / "store", "sess", sessions) == "");

  // Other options are another pipeline definition: the store refuses it.
  write_file(dir.path / "p.toml", config_text(plugin, "{ alpha = 0.4 }"));
  auto changed = run(weir_bin + " run --final '" + (dir.path / "p.toml").string() + "'");
  INFO(changed.out);
  CHECK(changed.rc != 0);
  CHECK(changed.out.find("trend = ewma(amount) options {alpha=") != std::string::npos);
}

TEST_CASE("custom aggregates are exact after a crash mid-run and a rerun", "[e2e][extension]") {
  auto evs = make_events(6000);
  // Each dies (SIGKILL) at a point of a later epoch, when earlier epochs have stored windows'
  // accumulators: inside a commit, right after one, and half-way into a partition's batch.
  for (const std::string fault :
       {"epoch.during_commit@6", "epoch.after_commit@4", "aggregator.mid_batch@30"}) {
    temp_dir dir;
    write_file(dir.path / "in.csv", csv_of(evs));
    write_file(dir.path / "p.toml", config_text(plugin, "{ alpha = 0.3 }"));
    const auto cfg = "'" + (dir.path / "p.toml").string() + "'";
    auto crashed = run("env WEIR_FAULT=" + fault + " " + weir_bin + " run --final " + cfg);
    INFO(fault << ": " << crashed.out);
    REQUIRE(crashed.out.find("injected fault") != std::string::npos);
    REQUIRE(crashed.rc != 0);
    auto r = run(weir_bin + " run --final " + cfg);
    INFO(r.out);
    REQUIRE(r.rc == 0);
    CHECK(compare(dir.path / "store", "slide", reference_sliding(evs, 600, 120)) == "");
    CHECK(compare(dir.path / "store", "sess", reference_sessions(evs, 30)) == "");
  }
}

TEST_CASE("custom aggregate config errors name the line and key", "[e2e][extension]") {
  temp_dir dir;
  write_file(dir.path / "in.csv", "ts,k,amount\n");
  const auto path = dir.path / "p.toml";
  auto run_config = [&](const std::string& text) {
    write_file(path, text);
    return run(weir_bin + " run '" + path.string() + "'");
  };
  const auto good = config_text(plugin, "{ alpha = 0.3 }");
  const size_t second_agg = line_of(good, "  fn = \"ewma\"");
  REQUIRE(second_agg > 0);

  SECTION("an option out of range") {
    auto text = config_text(plugin, "{ alpha = 1.5 }");
    auto r = run_config(text);
    INFO(r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.find("p.toml:" + std::to_string(line_of(text, "  options =")) +
                     ": pipeline[0].aggregate[1].options.alpha: must be between 0 and 1") !=
          std::string::npos);
  }
  SECTION("an option that is not a number") {
    auto r = run_config(config_text(plugin, "{ alpha = \"fast\" }"));
    INFO(r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.find("pipeline[0].aggregate[1].options.alpha: expected a number") !=
          std::string::npos);
  }
  SECTION("an unknown option") {
    auto r = run_config(config_text(plugin, "{ alpha = 0.3, beta = 1 }"));
    INFO(r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.find("pipeline[0].aggregate[1].options.beta: unknown option") != std::string::npos);
  }
  SECTION("an unknown function") {
    auto text = good;
    text.replace(text.find("fn = \"ewma\""), 11, "fn = \"ewmb\"");
    auto r = run_config(text);
    INFO(r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.find("p.toml:" + std::to_string(second_agg) +
                     ": pipeline[0].aggregate[1].fn: \"ewmb\" is not a registered aggregate "
                     "(registered: ewma, plain_sum, sum_sq)") != std::string::npos);
  }
  SECTION("without the plugin, the function is unknown") {
    auto text = config_text("", "{ alpha = 0.3 }");
    auto r = run_config(text);
    INFO(r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.find("pipeline[0].aggregate[0].fn: \"sum_sq\" is not a registered aggregate") !=
          std::string::npos);
  }
  SECTION("a plugin file that is not there") {
    auto missing = (dir.path / "nothere.so").string();
    auto r = run_config(config_text(missing, "{ alpha = 0.3 }"));
    INFO(r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.find("nothere.so") != std::string::npos);
    CHECK(r.out.find("plugins[0]") != std::string::npos);
  }
  SECTION("options on a built-in aggregate") {
    auto text = good;
    auto at = text.find("fn = \"sum\"\n");
    text.insert(at + 11, "  options = { x = 1 }\n");
    auto r = run_config(text);
    INFO(r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.find("pipeline[0].aggregate[2].options: only for a registered") !=
          std::string::npos);
  }
}

TEST_CASE("custom aggregates on a three-node cluster equal a brute-force computation",
          "[e2e][extension][cluster]") {
  temp_dir dir{"weir_cluster_"};
  auto evs = make_events(20000);
  write_file(dir.path / "in.csv", csv_of(evs));
  // Eight partitions per pipeline, so that placement gives each node some.
  auto text = config_text(plugin, "{ alpha = 0.3 }");
  for (auto at = text.find("partitions = 3"); at != std::string::npos;
       at = text.find("partitions = 3"))
    text.replace(at, 14, "partitions = 8");
  write_file(dir.path / "pipeline.toml", text);
  write_file(dir.path / "secret", "0123456789abcdef0123456789abcdef-test-secret\n");
  fs::permissions(dir.path / "secret", fs::perms::owner_read | fs::perms::owner_write);
  std::string cluster = "[cluster]\nname = \"test\"\npipeline = \"pipeline.toml\"\n"
                        "secret_file = \"secret\"\nheartbeat = \"200ms\"\n"
                        "failure_timeout = \"1s\"\n[cluster.tls]\ninsecure = true\n";
  for (const std::string n : {"a", "b", "c"})
    cluster += "[[node]]\nname = \"" + n +
               "\"\naddress = \"127.0.0.1:" + std::to_string(weir::test::free_port()) +
               "\"\nstore = \"" + n + "\"\nroles = " +
               (n == "a" ? "[\"coordinator\", \"ingest\", \"aggregate\"]" : "[\"aggregate\"]") +
               "\n";
  write_file(dir.path / "cluster.toml", cluster);
  auto node = [&](const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> args{
      weir_bin, "node", "--cluster",   (dir.path / "cluster.toml").string(),
      "--name", name,   "--log-level", "info"};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<weir::test::background>(args, dir.path / (name + ".log"));
  };
  auto b = node("b", {});
  auto c = node("c", {});
  REQUIRE(wait_for(dir.path / "b.log", "listens on", 10));
  REQUIRE(wait_for(dir.path / "c.log", "listens on", 10));
  auto a = node("a", {"--final"});
  const int rc = a->wait(120);
  INFO(weir::test::read_text(dir.path / "a.log"));
  INFO(weir::test::read_text(dir.path / "b.log"));
  REQUIRE(rc == 0);
  // The other nodes aggregated partitions with the plugin's functions, loaded from the config.
  CHECK(weir::test::read_text(dir.path / "b.log").find("runs partition") != std::string::npos);
  CHECK(weir::test::read_text(dir.path / "c.log").find("runs partition") != std::string::npos);
  CHECK(compare(dir.path / "a", "slide", reference_sliding(evs, 600, 120)) == "");
  CHECK(compare(dir.path / "a", "sess", reference_sessions(evs, 30)) == "");
  b->signal(SIGTERM);
  c->signal(SIGTERM);
  CHECK(b->wait(10) == 0);
  CHECK(c->wait(10) == 0);
}
