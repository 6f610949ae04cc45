#pragma once

#include <memory>
#include <string>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"
#include "actors/core/error.hpp"
#include "actors/core/types.hpp"
#include "actors/core/window_operator.hpp"

namespace weir {

struct aggregator_state {
  static inline const char* name = "window-aggregator";
  uint32_t pipeline = 0;
  uint32_t partition = 0;
  std::unique_ptr<window_operator> op;
  aggregate_layout layout;
  result_pack fired;                        ///< reused between epochs
  state_delta delta;                        ///< reused between epochs
  std::shared_ptr<state_meter> meter;       ///< the pipeline's live meter (null: none)
  std::atomic<uint64_t>* mailbox = nullptr; ///< where this partition's mailbox depth goes

  /// Aggregates the events of one batch; errc::record_failed naming `origin` when that throws.
  caf::error process(const event_view& v, const record_span& origin);
};

/// Reads an EventBatch frame meant for partition `partition` of pipeline `pipeline` (aggregates
/// as in `layout`) into a view over its columns, in place in the frame's words, and where its
/// records came from. errc::decode for bad bytes, a batch of another partition, widths not the
/// layout's, a column shorter than the count or key ends out of order or past the key bytes:
/// what it gives can be processed without reading out of bounds.
caf::error decode_batch(const frame& f, const aggregate_layout& layout, uint32_t pipeline,
                        uint32_t partition, event_view& v, record_span& origin);

/// One window-aggregator partition of pipeline `pipeline`. `snapshot` is the state restored from
/// the last committed epoch, as window_operator::snapshot() bytes (empty for a fresh start).
/// Batches are acked to `preprocess` (null: to the sender of each batch, for a partition spawned
/// on another node before its preprocess), contributions go to `updater`; the partition's mailbox
/// depth goes to `meter` (may be null).
aggregator_actor::behavior_type
aggregator(aggregator_actor::stateful_pointer<aggregator_state> self, uint32_t pipeline,
           uint32_t partition, pipeline_config cfg, std::string snapshot,
           preprocess_actor preprocess, updater_actor updater, std::shared_ptr<state_meter> meter);

} // namespace weir
