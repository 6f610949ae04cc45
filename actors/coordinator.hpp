#pragma once

#include <string>
#include <vector>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"
#include "actors/core/types.hpp"

namespace weir {

struct coordinator_state {
  static inline const char* name = "coordinator";
  struct slot {
    ingest_actor ingest;
    uint64_t next_epoch = 1;
    bool in_flight = false;
    bool finished = false;
    bool wanted = false; ///< an epoch was asked for while one was in flight
    run_stats stats;
  };
  std::vector<slot> pipelines;
  std::vector<caf::actor> watched; ///< every registered actor: stopped when the run fails
  bool stopping = false;
  bool failed = false;
};

/// Drives epochs: every commit interval (or at once when an input is exhausted) it starts the
/// next epoch of each pipeline that has none in flight; one epoch per pipeline is in flight at a
/// time, which bounds what the updater holds. `first_epochs[i]` is the epoch pipeline i starts
/// with (last committed + 1). Reports (stats, run_stats) per pipeline and then (done) to
/// `waiter`, or (fail, text) when a pipeline actor fails.
coordinator_actor::behavior_type
coordinator(coordinator_actor::stateful_pointer<coordinator_state> self,
            std::vector<uint64_t> first_epochs, runtime_config rt, caf::actor waiter);

} // namespace weir
