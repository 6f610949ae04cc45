#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"
#include "store/warehouse.hpp"

namespace weir {

struct updater_state {
  static inline const char* name = "updater";
  struct pending_epoch {
    std::optional<frame> pre;
    std::vector<frame> aggs;
    std::set<uint32_t> partitions; ///< the partitions whose contribution is in `aggs`
  };
  struct pipeline_slot {
    std::string name;
    size_t partitions = 0;
    uint64_t next = 1; ///< the epoch that commits next (an older one is a replay, a no-op)
    std::map<uint64_t, pending_epoch> epochs;
  };
  std::vector<pipeline_slot> pipelines;
};

/// The updater: once it has the PreprocessEpoch and every AggregatorEpoch of an epoch, it
/// commits results, dead letters, offsets, dedupe changes and operator state in ONE LMDB write
/// transaction, then tells the coordinator. `pipelines` lists (name, partitions) by index. With
/// commit_mode::results_only it writes results and dead letters only; with commit_mode::none
/// nothing, and tells the coordinator all the same.
updater_actor::behavior_type updater(updater_actor::stateful_pointer<updater_state> self,
                                     std::vector<std::pair<std::string, size_t>> pipelines,
                                     std::shared_ptr<warehouse> wh, coordinator_actor coordinator,
                                     commit_mode mode, std::shared_ptr<state_meters> meters);

/// The epoch of a PreprocessEpoch frame; errc::decode for bad bytes.
caf::expected<uint64_t> decode_pre_epoch_head(const frame& f);
/// The epoch and partition of an AggregatorEpoch frame of a pipeline of `partitions`
/// partitions; errc::decode for bad bytes or a partition out of range (it would count for a
/// partition whose contribution is still missing).
caf::expected<std::pair<uint64_t, uint32_t>> decode_agg_epoch_head(const frame& f,
                                                                   size_t partitions);

/// Turns one epoch's contributions into the commit the warehouse applies; errc::decode for a
/// contribution that does not decode, holds another epoch or undecodable results.
caf::expected<epoch_commit> assemble_commit(const std::string& pipeline, const frame& pre,
                                            const std::vector<frame>& aggs, marker_kind& kind);

} // namespace weir
