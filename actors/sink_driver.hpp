#pragma once

/// The sink driver: one detached actor per sink of a pipeline (user code may block) that hands
/// the pipeline's committed epochs to the sink, in epoch order, reading them from the
/// warehouse's change feed.
///
/// After each delivery it records the epoch as the sink's cursor in the warehouse (its own small
/// write txn): after a crash, delivery resumes after the recorded epoch, so the epoch between a
/// delivery and its record comes again (at least once; committed_epoch::epoch deduplicates). A
/// delivery that throws is retried after a backoff that doubles from runtime restart_backoff to
/// restart_backoff_max; an epoch is never skipped. While a sink lags, the change feed keeps every
/// epoch it has not been delivered (warehouse::register_sinks), past change_retention if need be.

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/actors.hpp"
#include "actors/core/extension.hpp"
#include "store/warehouse.hpp"

namespace weir {

/// What one sink driver works with.
struct sink_driver_config {
  std::string pipeline;
  std::string name; ///< the sink's name (the key of its cursor), for messages
  std::shared_ptr<sink> out;
  std::shared_ptr<warehouse> wh;
  std::string window;                  ///< describe_window of the pipeline
  std::vector<std::string> aggregates; ///< its aggregate names
  uint64_t delivered = 0;              ///< the last epoch delivered before the driver starts
  /// Record each delivered epoch in the warehouse (a configured sink of an exactly-once run);
  /// false for a subscriber of the embedding API, which starts from its own `delivered`.
  bool record_cursor = true;
  int64_t backoff = 100 * us_per_ms;     ///< the first wait after a failed delivery
  int64_t backoff_max = 10 * us_per_s;   ///< the longest
  int64_t lag_warning = 3600 * us_per_s; ///< warn when the oldest epoch not delivered is older
};

struct sink_driver_state {
  static inline const char* name = "sink_driver";
  using clock = std::chrono::steady_clock;

  sink_driver_config cfg;
  uint64_t delivered = 0; ///< the last epoch delivered
  uint64_t committed = 0; ///< the last epoch known to be committed
  int64_t wait = 0;       ///< the next backoff, microseconds
  bool scheduled = false; ///< a (tick) is on its way, now or after a backoff
  bool lag_warned = false;
  /// Set when the epoch asked for is no longer in the change feed: the oldest one kept.
  uint64_t oldest_kept = 0;
  /// Epochs not delivered yet with when the driver learnt of their commit, oldest first.
  std::deque<std::pair<uint64_t, clock::time_point>> pending;
  /// (done) requests, answered once every committed epoch is delivered.
  std::vector<caf::typed_response_promise<uint64_t>> waiting;

  /// Epoch e of the pipeline as the change feed holds it; errc::internal when the feed no longer
  /// holds it.
  caf::expected<committed_epoch> read_epoch(uint64_t e);
  /// Reads, delivers and records epoch e.
  caf::error deliver(uint64_t e);
  /// Notes that epochs up to e are committed.
  void learn(uint64_t e);
  /// Warns once when the oldest epoch not delivered was committed longer ago than lag_warning.
  void check_lag();
};

/// The driver of one sink; starts delivering what is committed after cfg.delivered at once.
sink_driver_actor::behavior_type
sink_driver(sink_driver_actor::stateful_pointer<sink_driver_state> self, sink_driver_config cfg);

/// A key as users write it (the fields of a composite key joined with '|'), as `weir query`
/// prints it and sinks receive it.
std::string display_key(std::string key);

} // namespace weir
