#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"
#include "actors/core/input_check.hpp"
#include "actors/core/poison.hpp"
#include "actors/core/preprocessor.hpp"
#include "actors/core/types.hpp"

namespace weir {

struct preprocess_state {
  static inline const char* name = "preprocess";
  uint32_t pipeline = 0;
  pipeline_config cfg;
  std::unique_ptr<preprocessor> pre;
  std::vector<aggregator_actor> partitions;
  std::set<uint32_t> headers_seen;         ///< sources whose header line is known
  std::set<uint32_t> bound;                ///< sources bound to their configured source
  std::map<uint64_t, size_t> pending;      ///< chunk seq -> partition acks outstanding
  std::map<uint64_t, ingest_actor> ack_to; ///< chunk seq -> who sent it
  dead_letter_pack epoch_dead_letters;
  timestamp max_time = min_timestamp; ///< largest accepted event time, ever
  quarantine quarantined;             ///< suspect chunks and poison lines (from the supervisor)
  std::optional<reject_guard> guard;  ///< stops a run whose records are mostly rejected
  std::shared_ptr<state_meter> meter; ///< the pipeline's live meter (null: none)

  /// The guard's verdict on the counters now, while the run goes on (the end of a run is
  /// judged on its summary: check_reject_ratio).
  caf::error check_rejects() const;
};

/// A RawChunk frame, read: views into the frame's words (valid while the frame lives).
struct raw_chunk {
  uint32_t source = 0;
  uint64_t offset = 0;
  std::string_view data;
  std::optional<std::string_view> header; ///< the source's csv header line, when sent
  uint32_t header_len = 0;                ///< data starts with a header line this long
  uint64_t long_span = 0;                 ///< > 0: one over-long line (see schema/batch.capnp)
  uint64_t long_length = 0;
  uint32_t config_index = 0; ///< 1 + the configured source it binds `source` to (0: none)
};

/// Reads a RawChunk frame for a pipeline of `sources` configured sources. errc::decode for bad
/// bytes, a configured source past `sources`, a header longer than the data, a long line's head
/// longer than the line or bytes past the largest offset.
caf::error decode_chunk(const frame& f, size_t sources, raw_chunk& out);

/// What the preprocess actor starts from: the restored state of the last committed epoch.
struct preprocess_restore {
  std::string snapshot;                              ///< preprocessor::snapshot(), or empty
  std::vector<std::pair<uint64_t, int64_t>> dedupe;  ///< remembered event ids
  std::vector<std::string> partition_snapshots;      ///< one per partition (empty: fresh)
  std::vector<std::pair<uint32_t, size_t>> bindings; ///< lake source id -> cfg.sources index
  quarantine quarantined; ///< what earlier failures of this run found (actors/core/poison.hpp)
  /// Partitions spawned elsewhere (on the nodes of a cluster), one per partition snapshot: used
  /// instead of spawning them here. Empty: preprocess spawns its partitions itself.
  std::vector<aggregator_actor> partitions;
};

/// Preprocess of pipeline `pipeline`: spawns its window-aggregator partitions (restored from
/// `restore`), turns RawChunks into per-partition EventBatches and dead letters, forwards epoch
/// markers, and contributes PreprocessEpoch to the updater. Mailbox depths (its own and its
/// partitions') go to `meter` (may be null).
preprocess_actor::behavior_type
preprocess(preprocess_actor::stateful_pointer<preprocess_state> self, uint32_t pipeline,
           pipeline_config cfg, preprocess_restore restore, updater_actor updater,
           coordinator_actor coordinator, std::shared_ptr<state_meter> meter);

/// The stored preprocess state: a version byte, the largest accepted event time (i64 LE),
/// then the preprocessor's own snapshot.
constexpr uint8_t preprocess_state_version = 1;
std::string wrap_state(timestamp max_time, const std::string& inner);
caf::error unwrap_state(std::string_view blob, timestamp& max_time, std::string_view& inner);
/// The counters a stored preprocess state holds (cumulative over the pipeline's life), and its
/// largest accepted event time into `max_time` when given; errc::store_corrupt when it does
/// not decode. An empty blob (nothing committed yet) holds zeros.
caf::expected<preprocess_counters> unwrap_counters(std::string_view blob,
                                                   timestamp* max_time = nullptr);
/// The same with the watermark and each source's largest accepted event time, for a server's
/// status and metrics.
caf::expected<preprocess_summary> unwrap_summary(std::string_view blob,
                                                 timestamp* max_time = nullptr);

/// The watermark that holds after a bounded input fired every window: no record at or before
/// the last event time seen can reopen a fired window. `max_time` is the largest event time.
timestamp final_watermark(const window_config& w, timestamp max_time);

} // namespace weir
