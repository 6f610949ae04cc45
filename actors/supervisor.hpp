#pragma once

/// The supervisor: an event-based actor that runs generations of the pipeline actors. When one of
/// them fails, it takes them all down, waits until every one is gone (so no old actor writes to
/// the stores any more), and after a backoff that doubles with each restart starts the next
/// generation from the last committed epoch, until the restart budget is spent. Failures that
/// name their records go through the poison tracker instead of the budget.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/actors.hpp"
#include "actors/core/poison.hpp"
#include "actors/recovery.hpp"
#include "actors/runtime.hpp"
#include "actors/sink_driver.hpp"

namespace weir {

/// The actors of one attempt at running the pipelines.
struct generation {
  coordinator_actor coordinator;
  std::vector<caf::actor> members; ///< every actor the supervisor watches, the coordinator too
  /// Set when the generation could not be spawned whole (a node of the cluster could not be
  /// reached): the members spawned are taken down and the run restarts as after a failure.
  caf::error failed;
};

/// Spawns one generation from what `prepare` found; the coordinator reports to `waiter`.
using generation_spawner = std::function<generation(caf::actor_system& sys, run_waiter_actor waiter,
                                                    std::vector<prepared> preps)>;

/// Reads where every pipeline stands, for the next generation.
using generation_preparer = std::function<caf::expected<std::vector<prepared>>()>;

/// What a supervisor works with. The spawner and the preparer are the real ones in a run
/// (spawn_generation, recovery's prepare); tests give their own.
struct supervisor_deps {
  weir_config cfg; ///< with the run's mode and final flush applied
  std::shared_ptr<lake> lk;
  std::shared_ptr<warehouse> wh;
  std::shared_ptr<state_meters> meters; ///< one per pipeline, in config order
  std::shared_ptr<run_probe> probe;     ///< may be null
  const std::atomic<bool>* stop = nullptr;
  std::vector<prepared> first; ///< what prepare found before the run
  std::vector<tally> tallies;  ///< the pipelines at the start of the run
  generation_spawner spawn;
  generation_preparer prepare;
  /// The lake sources of pipeline i (id -> key) when the lake is on another node (null: `lk`'s).
  std::function<std::vector<std::pair<uint32_t, std::string>>(uint32_t)> source_keys;
  /// The sinks of the run, by pipeline index: a driver each, spawned when the run starts and
  /// told of every commit of its pipeline. The run ends once each has every committed epoch.
  std::vector<std::pair<uint32_t, sink_driver_config>> sinks;
};

struct supervisor_state {
  static inline const char* name = "supervisor";
  /// delivering: the last generation is gone and the sinks get the last committed epochs.
  enum class phase { idle, running, draining, waiting, delivering, finished };

  supervisor_deps deps;
  phase now = phase::idle;
  caf::typed_response_promise<std::vector<run_stats>> answer;
  std::optional<poison_tracker> tracker;
  uint32_t restarts = 0;     ///< every restart
  uint32_t budget_spent = 0; ///< restarts after failures that name no records
  int64_t backoff = 0;       ///< the next budgeted wait, microseconds

  // The generation now running.
  generation gen;
  std::set<caf::actor_addr> alive; ///< members not seen down yet
  std::vector<run_stats> stats;    ///< what the coordinator reported at the end
  /// The sink drivers (pipeline index, driver), and how many have not answered (done) yet.
  std::vector<std::pair<uint32_t, sink_driver_actor>> sinks;
  size_t sinks_pending = 0;
  std::string failure; ///< empty while it goes well
  /// The first failure that a restart would only meet again (a damaged store, bad input, too
  /// many rejects), also when it comes while the generation is taken down: it ends the run.
  caf::error fatal;
  std::optional<record_span> span; ///< the records the failure happened on, if it names them
  std::string span_what;
  bool stop_sent = false;
  bool stop_asked = false; ///< (stop) came: the run ends as when the stop flag is set
  bool node_lost = false;  ///< the failure is a node of the cluster going away
  /// A node is back: the generation ends at its next commit (the reason, empty: none) ...
  std::string rebalance_wanted;
  bool rebalancing = false; ///< ... and it is ending for that: no failure, no budget, no wait

  bool stop_wanted() const { return stop_asked || (deps.stop && deps.stop->load()); }
  /// Epoch e of pipeline i is committed, `latency` us after its start (-1: not known).
  void on_commit(uint32_t i, uint64_t e, int64_t latency);
  /// Notes what a failing actor's exit reason says: fatal, or the records it names.
  void note_reason(const caf::error& reason);
  /// What each pipeline did over the run, once the last generation ended well.
  std::vector<run_stats> summary() const;
  /// After a failed generation is gone: the error that ends the run, or none to restart after
  /// `wait` microseconds.
  caf::error judge_failure(int64_t& wait);
};

/// The supervisor of one run. It starts on (run) and answers it when the run ends.
supervisor_actor::behavior_type
supervisor(supervisor_actor::stateful_pointer<supervisor_state> self, supervisor_deps deps);

/// The real generation: coordinator, updater, and per pipeline its preprocess (with its
/// window-aggregator partitions) and ingest, with the run's stores and meters. With `cluster`
/// set, the partitions run where the cluster places them.
generation spawn_generation(caf::actor_system& sys, run_waiter_actor waiter, const weir_config& cfg,
                            std::vector<prepared> preps, const std::shared_ptr<lake>& lk,
                            const std::shared_ptr<warehouse>& wh,
                            const std::shared_ptr<state_meters>& meters,
                            const std::shared_ptr<run_cluster>& cluster = nullptr);

} // namespace weir
