#pragma once

#include <memory>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"
#include "store/warehouse.hpp"

namespace weir {

struct warehouse_state {
  static inline const char* name = "warehouse";
};

/// The warehouse actor: serves queries on the committed window results and the dead letters
/// of the store it is given. Reads run in one LMDB read transaction each, so an answer holds
/// whole epochs only; commits come from the updater through the same store object.
warehouse_actor::behavior_type
warehouse_service(warehouse_actor::stateful_pointer<warehouse_state> self,
                  std::shared_ptr<warehouse> store);

} // namespace weir
