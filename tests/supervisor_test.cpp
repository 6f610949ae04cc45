// The supervisor under CAF's test_coordinator (scheduler.policy = testing): its generations are
// recording fakes, its timers are driven with advance_time. Expected restarts, waits and
// summaries are worked out here from the runtime settings, not taken from the supervisor.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/send.hpp>

#include "actors/core/error.hpp"
#include "actors/supervisor.hpp"
#include "store/store.hpp"
#include "tests/actor_test_support.hpp"

using namespace weir;
namespace fs = std::filesystem;

namespace {

/// What the fakes and the client saw.
struct log_t {
  std::vector<std::vector<prepared>> generations; ///< what each generation was spawned from
  std::vector<caf::actor> members;                ///< the members of the newest generation
  uint32_t prepares = 0;                          ///< calls of the preparer
  uint32_t stops = 0;                             ///< (stop) at a fake coordinator
  std::optional<std::vector<run_stats>> result;
  std::optional<caf::error> failure;
};

/// A coordinator that only counts stop requests.
coordinator_actor::behavior_type fake_coordinator(coordinator_actor::pointer, log_t* log) {
  return {
    [](tick_atom) {},
    [](register_atom, uint32_t, const ingest_actor&) {},
    [](committed_atom, uint32_t, uint64_t, marker_kind, uint64_t) {},
    [](stats_atom, uint32_t, const run_stats&) {},
    [log](stop_atom) { ++log->stops; },
    [](fail_atom, const std::string&) {},
    [](done_atom, uint32_t) {},
    [](epoch_atom, uint32_t) {},
  };
}

/// A pipeline actor that does nothing until it is told to exit, or to fail with a reason.
caf::behavior idle_member(caf::event_based_actor* self) {
  return {[self](fail_atom, caf::error& reason) { self->quit(std::move(reason)); }};
}

/// Asks the supervisor to run and keeps its answer.
caf::behavior client(caf::event_based_actor* self, supervisor_actor sup, log_t* log) {
  self->request(sup, caf::infinite, run_atom::value)
    .then([log](std::vector<run_stats>& s) { log->result = std::move(s); },
          [log](caf::error& e) { log->failure = std::move(e); });
  return {[](int) {}};
}

struct fixture {
  test::deterministic_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched =
    dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  fs::path dir;
  log_t log;
  std::atomic<bool> stop_flag{false};
  supervisor_actor sup;

  fixture() {
    std::random_device rd;
    dir = fs::temp_directory_path() / ("weir-supervisor-" + std::to_string(rd()));
    fs::create_directories(dir);
  }
  ~fixture() {
    for (auto& m : log.members)
      caf::anon_send_exit(m, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
    sched.run();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  /// Starts a supervisor of one pipeline "p" whose generations are a fake coordinator and two
  /// idle members; `rt` holds the restart settings.
  void start(runtime_config rt) {
    auto st = open_store(dir.string(), false);
    REQUIRE(st);
    supervisor_deps deps;
    deps.cfg.runtime = rt;
    pipeline_config p;
    p.name = "p";
    deps.cfg.pipelines.push_back(p);
    deps.lk = std::make_shared<lake>(std::move(st->lk));
    deps.wh = std::make_shared<warehouse>(std::move(st->wh));
    deps.meters = std::make_shared<state_meters>(1);
    deps.stop = &stop_flag;
    deps.first.resize(1);
    deps.tallies.resize(1);
    deps.spawn = [this](caf::actor_system& s, run_waiter_actor, std::vector<prepared> preps) {
      log.generations.push_back(std::move(preps));
      generation g;
      g.coordinator = s.spawn(fake_coordinator, &log);
      g.members = {caf::actor_cast<caf::actor>(g.coordinator), s.spawn(idle_member),
                   s.spawn(idle_member)};
      log.members = g.members;
      return g;
    };
    deps.prepare = [this]() -> caf::expected<std::vector<prepared>> {
      ++log.prepares;
      return std::vector<prepared>(1);
    };
    sup = sys.spawn(supervisor, std::move(deps));
    sys.spawn(client, sup, &log);
    sched.run();
  }

  /// Member 1 of the running generation fails with `reason`.
  void fail_member(caf::error reason) {
    caf::anon_send(log.members.at(1), fail_atom::value, std::move(reason));
    sched.run();
  }

  void advance(std::chrono::milliseconds ms) {
    sched.advance_time(ms);
    sched.run();
  }
};

caf::error transient() {
  return make_error(errc::internal, "lost the connection");
}

} // namespace

TEST_CASE_METHOD(fixture,
                 "supervisor: restarts after a doubling backoff until the budget is spent") {
  runtime_config rt;
  rt.restart_backoff = 100 * us_per_ms;
  rt.restart_backoff_max = 250 * us_per_ms;
  rt.restart_budget = 3;
  start(rt);
  REQUIRE(log.generations.size() == 1);
  // The waits a user configured: 100 ms, then doubled but capped at 250 ms.
  const std::vector<int> waits_ms{100, 200, 250};
  for (size_t k = 0; k < waits_ms.size(); ++k) {
    fail_member(transient());
    // Every member of the failed generation is gone before anything else happens.
    for (auto& m : log.members)
      CHECK(m->getf(caf::abstract_actor::is_terminated_flag));
    advance(std::chrono::milliseconds(waits_ms[k] - 1));
    CHECK(log.generations.size() == k + 1); // still waiting
    advance(std::chrono::milliseconds(1));
    CHECK(log.generations.size() == k + 2);
    CHECK(log.prepares == k + 1); // each restart reads where the pipelines stand anew
  }
  CHECK_FALSE(log.failure);
  fail_member(transient());
  REQUIRE(log.failure);
  CHECK(render(*log.failure).find("gave up after 3 restart(s)") != std::string::npos);
  CHECK(render(*log.failure).find("lost the connection") != std::string::npos);
  CHECK(log.generations.size() == 4);
}

TEST_CASE_METHOD(fixture, "supervisor: a failure a restart cannot cure ends the run at once") {
  runtime_config rt;
  rt.restart_budget = 5;
  start(rt);
  fail_member(make_error(errc::store_corrupt, "page 7 is damaged"));
  REQUIRE(log.failure);
  CHECK(log.failure->code() == static_cast<uint8_t>(errc::store_corrupt));
  CHECK(log.generations.size() == 1);
  advance(std::chrono::seconds(10));
  CHECK(log.generations.size() == 1);
}

TEST_CASE_METHOD(fixture, "supervisor: done ends the run with each pipeline's counters") {
  runtime_config rt;
  start(rt);
  run_stats s;
  s.pipeline = "p";
  s.read = 1234;
  s.accepted = 1200;
  s.rejected = {{"bad number", 34}};
  caf::anon_send(sup, committed_atom::value, uint32_t{0}, uint64_t{1}, uint64_t{5}, int64_t{900});
  caf::anon_send(sup, stats_atom::value, s);
  caf::anon_send(sup, done_atom::value);
  sched.run();
  REQUIRE(log.result);
  REQUIRE(log.result->size() == 1);
  const auto& out = log.result->front();
  CHECK(out.pipeline == "p");
  CHECK(out.read == 1234); // nothing was committed before the run
  CHECK(out.accepted == 1200);
  CHECK(out.rejected == std::vector<std::pair<std::string, uint64_t>>{{"bad number", 34}});
  CHECK(out.epoch_p50_us == 900);
  CHECK(out.restarts == 0);
  for (auto& m : log.members)
    CHECK(m->getf(caf::abstract_actor::is_terminated_flag));
}

TEST_CASE_METHOD(fixture, "supervisor: a stop is passed on, also to a run waiting to restart") {
  runtime_config rt;
  rt.restart_backoff = 10 * 1000 * us_per_ms;
  rt.restart_budget = 5;
  start(rt);
  advance(std::chrono::milliseconds(50));
  CHECK(log.stops == 0);
  fail_member(transient());
  CHECK(log.generations.size() == 1);
  // Stopped while waiting out a 10 s backoff: the next generation starts at once, and is asked
  // to stop at its first epoch.
  stop_flag = true;
  advance(std::chrono::milliseconds(50));
  REQUIRE(log.generations.size() == 2);
  CHECK(log.stops == 1);
  advance(std::chrono::milliseconds(200));
  CHECK(log.stops == 1); // asked once
  caf::anon_send(sup, done_atom::value);
  sched.run();
  REQUIRE(log.result);
  CHECK(log.result->front().restarts == 1);
}

TEST_CASE_METHOD(fixture, "supervisor: failing records are retried, isolated, then poisoned") {
  runtime_config rt;
  rt.restart_backoff = 10 * us_per_ms;
  rt.restart_budget = 0; // failures that name their records do not spend it
  rt.record_retries = 2;
  rt.max_poison_records = 10;
  start(rt);
  const record_span chunk{0, 3, 1000, 2000, false};
  // retries + 1 failures of the chunk: retried twice as it was, then its lines go one by one.
  for (uint32_t k = 0; k <= rt.record_retries; ++k) {
    fail_member(make_record_error(chunk, "bad arithmetic"));
    advance(std::chrono::milliseconds(10));
    REQUIRE(log.generations.size() == k + 2);
    const auto& q = log.generations.back().front().restore.quarantined;
    CHECK(q.touches(3, 1000, 2000) == (k == rt.record_retries));
  }
  // The line at 1500 fails as often: it is poison from then on.
  const record_span line{0, 3, 1500, 1600, true};
  for (uint32_t k = 0; k <= rt.record_retries; ++k) {
    fail_member(make_record_error(line, "bad arithmetic"));
    advance(std::chrono::milliseconds(10));
  }
  const auto& q = log.generations.back().front().restore.quarantined;
  REQUIRE(q.poisoned(3, 1500));
  CHECK(q.poisoned(3, 1500)->what.find("bad arithmetic") != std::string::npos);
  CHECK_FALSE(log.failure);
}
