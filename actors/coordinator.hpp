#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"
#include "actors/core/types.hpp"

namespace weir {

/// Epochs of one pipeline that may be in flight at once: while the updater commits epoch e,
/// the pipeline already works on e + 1, so commits overlap processing.
constexpr uint32_t max_epochs_in_flight = 2;

struct coordinator_state {
  static inline const char* name = "coordinator";
  struct slot {
    ingest_actor ingest;
    uint64_t next_epoch = 1;
    uint32_t in_flight = 0; ///< epochs started and not committed yet
    bool finished = false;
    bool wanted = false; ///< an epoch was asked for while one was in flight
    std::map<uint64_t, std::chrono::steady_clock::time_point> started; ///< epoch -> start
    run_stats stats;
  };
  std::vector<slot> pipelines;
  bool stopping = false;
  bool failed = false;
};

/// Drives epochs: every commit interval (or at once when an input is exhausted or commit_events
/// is reached) it starts the next epoch of each pipeline; at most max_epochs_in_flight per
/// pipeline are in flight, which bounds what the updater holds. An epoch wanted while that many
/// are in flight starts as soon as one is committed. `first_epochs[i]` is the epoch pipeline i
/// starts with (last committed + 1). Reports to `waiter` (committed, pipeline, windows, latency in
/// us or -1) at each commit, (stats, run_stats) per pipeline and then (done) at the end, or (fail,
/// text) when the updater cannot commit. It watches no actor: the supervisor does.
coordinator_actor::behavior_type
coordinator(coordinator_actor::stateful_pointer<coordinator_state> self,
            std::vector<uint64_t> first_epochs, runtime_config rt, run_waiter_actor waiter);

} // namespace weir
