#pragma once

// What the deterministic actor tests share: an actor system config for CAF's test_coordinator
// (scheduler.policy = testing) that knows Weir's message types, and no meters for actors that
// take them.

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

/// For actors that count on meters when a test does not look at them.
inline const std::shared_ptr<state_meters> no_meters;

} // namespace weir::test
