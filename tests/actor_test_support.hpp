#pragma once

// What the deterministic actor tests share: an actor system config for CAF's test_coordinator
// (scheduler.policy = testing) that knows Weir's message types, and the missing live meter of
// actors spawned without a server to show it.

#include <memory>

#include <caf/actor_system_config.hpp>

#include "actors/actors.hpp"

namespace weir::test {

struct deterministic_config : caf::actor_system_config {
  deterministic_config() {
    add_message_types<caf::id_block::weir>();
    set("scheduler.policy", caf::atom("testing"));
    set("logger.verbosity", caf::atom("quiet"));
  }
};

/// No live meter (what a pipeline actor is given outside `weir serve`'s runs).
inline const std::shared_ptr<state_meter> no_meter;

} // namespace weir::test
