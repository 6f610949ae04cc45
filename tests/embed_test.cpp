// The embedding API (actors/embed.hpp): pipelines started in the test's own actor system, next
// to an actor of the test that subscribes to them; the epochs it receives must be the store's
// change feed epoch by epoch and, together, a brute-force reference of the windows that closed;
// stop() ends a run on an unbounded (followed) input after a last commit; status() shows it.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/core/config.hpp"
#include "actors/embed.hpp"
#include "actors/sink_driver.hpp"
#include "store/warehouse.hpp"
#include "tests/test_support.hpp"

namespace {

using weir::test::temp_dir;

/// What a subscriber got, in arrival order.
struct received {
  std::mutex mu;
  std::vector<weir::committed_epoch> epochs;
  void add(const weir::committed_epoch& e) {
    std::lock_guard<std::mutex> lock{mu};
    epochs.push_back(e);
  }
};

/// A sink object of the test (the other form of subscribe).
class vector_sink final : public weir::sink {
public:
  explicit vector_sink(std::shared_ptr<received> to)
    : to_(std::move(to)) {}
  void deliver(const weir::committed_epoch& e) override { to_->add(e); }

private:
  std::shared_ptr<received> to_;
};

using row = std::tuple<int64_t, int64_t, std::string, std::vector<double>>;

std::vector<row> rows_of(const std::vector<weir::committed_epoch>& es) {
  std::vector<row> out;
  for (const auto& e : es)
    for (const auto& r : e.rows)
      out.emplace_back(r.start, r.end, r.key, r.values);
  std::sort(out.begin(), out.end());
  return out;
}

/// A pipeline "p" that follows `input` (csv ts,k,amount) with minute windows and the change
/// feed, committing every 30 ms into `dir`/store, with `aggregates` ([[pipeline.aggregate]]
/// tables).
weir::weir_config follow_config(const std::filesystem::path& dir,
                                const std::filesystem::path& input,
                                const std::string& aggregates) {
  const auto text = "store = \"" + (dir / "store").string() +
                    "\"\ncommit_interval = \"30ms\"\n\n"
                    "[[pipeline]]\nname = \"p\"\npartitions = 2\n"
                    "  [[pipeline.source]]\n  name = \"in\"\n  path = \"" +
                    input.string() +
                    "\"\n  follow = true\n"
                    "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n"
                    "  measures = [\"amount\"]\n"
                    "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1m\"\n"
                    "  [pipeline.results]\n  change_feed = true\n" +
                    aggregates;
  auto cfg = weir::parse_config(text, (dir / "w.toml").string());
  REQUIRE(cfg);
  return *cfg;
}

} // namespace

TEST_CASE("pipelines in the test's own actor system deliver to its actor and stop cleanly") {
  temp_dir dir;
  const auto input = dir.path / "in.csv";
  weir::test::write_file(input, "ts,k,amount\n");
  auto cfg = follow_config(dir.path, input,
                           "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
                           "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n");

  weir::actor_system_config sys_cfg;
  caf::actor_system sys{sys_cfg};
  auto by_actor = std::make_shared<received>();
  auto user = sys.spawn([by_actor](caf::event_based_actor*) -> caf::behavior {
    return {[by_actor](const weir::committed_epoch& e) { by_actor->add(e); },
            [](caf::get_atom) { return true; }};
  });
  auto by_sink = std::make_shared<received>();

  auto run = weir::start_pipelines(sys, cfg);
  REQUIRE(run);
  REQUIRE(!(*run)->subscribe("p", user));
  REQUIRE(!(*run)->subscribe("p", std::make_shared<vector_sink>(by_sink)));
  CHECK((*run)->subscribe("nope", user));

  // The input grows while the run goes on; the reference: count and sum per (minute, key) of
  // the windows the watermark (the largest time, no out-of-orderness) closed.
  const int n = 3000;
  const int64_t base = 1717200000;
  std::map<std::tuple<int64_t, int64_t, std::string>, std::pair<double, double>> acc;
  {
    std::ofstream f{input, std::ios::app};
    for (int i = 0; i < n; ++i) {
      const int64_t t = base + i;
      const std::string k = "k" + std::to_string(i % 5);
      const double amount = i % 13;
      f << weir::test::iso(t) << ',' << k << ',' << int(amount) << '\n';
      const int64_t start = (t - t % 60) * 1000000;
      auto& a = acc[{start, start + 60000000, k}];
      a.first += 1;
      a.second += amount;
      if (i % 1000 == 999) {
        f.flush();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  const int64_t watermark = (base + n - 1) * int64_t{1000000};
  std::vector<row> reference;
  for (const auto& [w, a] : acc)
    if (std::get<1>(w) <= watermark)
      reference.emplace_back(std::get<0>(w), std::get<1>(w), std::get<2>(w),
                             std::vector<double>{a.first, a.second});

  // status(): the committed counters reach every record.
  uint64_t committed_read = 0;
  for (int i = 0; i < 400 && committed_read < uint64_t(n); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    auto st = (*run)->status();
    REQUIRE(st);
    REQUIRE(st->size() == 1);
    CHECK((*st)[0].pipeline == "p");
    CHECK_FALSE((*st)[0].bounded);
    committed_read = (*st)[0].committed.counters.read;
  }
  REQUIRE(committed_read == uint64_t(n));
  (*run)->stop();
  auto stats = (*run)->wait();
  REQUIRE(stats);
  REQUIRE(stats->size() == 1);
  CHECK((*stats)[0].read == uint64_t(n));
  auto st = (*run)->status();
  REQUIRE(st);
  const uint64_t last = (*st)[0].committed.epoch;
  run->reset(); // the store is free again
  // Every epoch was sent to the actor before the run ended; a request sent now is handled after
  // them.
  {
    caf::scoped_actor self{sys};
    self->request(user, caf::infinite, caf::get_atom::value)
      .receive([](bool) {}, [](caf::error& err) { FAIL(weir::render(err)); });
  }

  // Both subscribers got every epoch from the first one on, in order, each as the change feed
  // holds it, and together the reference.
  auto wh = weir::warehouse::open((dir.path / "store").string());
  REQUIRE(wh);
  for (auto* got : {by_actor.get(), by_sink.get()}) {
    std::lock_guard<std::mutex> lock{got->mu};
    REQUIRE(!got->epochs.empty());
    CHECK(got->epochs.back().epoch == last);
    for (size_t i = 0; i < got->epochs.size(); ++i) {
      const auto& e = got->epochs[i];
      CHECK(e.epoch == got->epochs[0].epoch + i);
      CHECK(e.pipeline == "p");
      CHECK(e.window == "tumbling 1m");
      CHECK(e.aggregates == std::vector<std::string>{"count", "sum_amount"});
      std::vector<weir::window_result> feed;
      REQUIRE(wh->changes("p", e.epoch - 1, std::nullopt, [&](const weir::change_row& r) {
        if (r.epoch != e.epoch)
          return false;
        feed.push_back(r.row);
        return true;
      }));
      REQUIRE(feed.size() == e.rows.size());
      for (size_t k = 0; k < feed.size(); ++k) {
        CHECK(e.rows[k].key == weir::display_key(feed[k].key));
        CHECK(e.rows[k].start == feed[k].start);
        CHECK(e.rows[k].values == feed[k].values);
      }
    }
    CHECK(rows_of(got->epochs) == reference);
  }
  caf::anon_send_exit(user, caf::exit_reason::user_shutdown);
}

TEST_CASE("a subscriber that asks for every epoch gets those committed before it subscribed") {
  temp_dir dir;
  const auto input = dir.path / "in.csv";
  weir::test::write_file(input, "ts,k,amount\n");
  auto cfg = follow_config(dir.path, input,
                           "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n");
  weir::actor_system_config sys_cfg;
  caf::actor_system sys{sys_cfg};
  auto run = weir::start_pipelines(sys, cfg);
  REQUIRE(run);
  // Half the input, committed before anyone subscribes; the reference: sum per (minute, key) of
  // the windows the last time closes.
  const int n = 2000;
  const int64_t base = 1717200000;
  std::map<std::tuple<int64_t, int64_t, std::string>, double> sums;
  auto append = [&](int from, int to) {
    std::ofstream f{input, std::ios::app};
    for (int i = from; i < to; ++i) {
      const int64_t t = base + i;
      const std::string k = "k" + std::to_string(i % 3);
      f << weir::test::iso(t) << ',' << k << ',' << i % 7 << '\n';
      const int64_t start = (t - t % 60) * 1000000;
      sums[{start, start + 60000000, k}] += i % 7;
    }
  };
  auto committed = [&](uint64_t read) {
    for (int i = 0; i < 400; ++i) {
      auto st = (*run)->status();
      REQUIRE(st);
      if ((*st)[0].committed.counters.read >= read && (*st)[0].committed.epoch > 0)
        return (*st)[0].committed.epoch;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    FAIL("the run did not commit " << read << " records");
    return uint64_t{0};
  };
  append(0, n / 2);
  const uint64_t before = committed(n / 2);
  auto all = std::make_shared<received>(), later = std::make_shared<received>();
  REQUIRE(!(*run)->subscribe("p", std::make_shared<vector_sink>(all), 0));
  REQUIRE(!(*run)->subscribe("p", std::make_shared<vector_sink>(later)));
  append(n / 2, n);
  committed(n);
  (*run)->stop();
  REQUIRE((*run)->wait());
  run->reset();
  const int64_t watermark = (base + n - 1) * int64_t{1000000};
  std::vector<row> reference;
  for (const auto& [w, s] : sums)
    if (std::get<1>(w) <= watermark)
      reference.emplace_back(std::get<0>(w), std::get<1>(w), std::get<2>(w),
                             std::vector<double>{s});
  std::lock_guard<std::mutex> lock{all->mu};
  REQUIRE(!all->epochs.empty());
  CHECK(all->epochs.front().epoch == 1);
  for (size_t i = 0; i < all->epochs.size(); ++i)
    CHECK(all->epochs[i].epoch == i + 1);
  CHECK(rows_of(all->epochs) == reference);
  std::lock_guard<std::mutex> lock2{later->mu};
  REQUIRE(!later->epochs.empty());
  CHECK(later->epochs.front().epoch > before); // from the moment it subscribed
  CHECK(later->epochs.back().epoch == all->epochs.back().epoch);
}
