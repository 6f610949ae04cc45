#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"
#include "actors/core/types.hpp"
#include "actors/redis_stream.hpp"
#include "actors/sources.hpp"
#include "store/lake.hpp"

namespace weir {

struct ingest_state {
  static inline const char* name = "ingest";
  struct source_run {
    source_input in;
    int fd = -1;
    uint64_t pos = 0;       ///< next offset to send
    bool exhausted = false; ///< bounded input read to its end
    std::string header;     ///< csv header line, sent with the first chunk of this run
    bool header_sent = false;
    bool stdin_header = false; ///< csv on stdin: each stream's first line is a header
    bool header_known = false; ///< stdin_header: the header line has been read
    std::string buf;           ///< reused read buffer
    uint32_t long_id = 0;      ///< lake id of this source's long-line markers (see ingest.cpp)
    /// A line longer than max_line_bytes being streamed past: only its head is kept.
    struct long_line {
      bool active = false;
      uint64_t start = 0;   ///< its offset
      uint64_t scanned = 0; ///< bytes of it seen so far (no line end among them)
      char last = 0;        ///< its last byte before the line end, as far as seen
      bool ended = false;   ///< its line end was found
      std::string head;     ///< its first bytes, what its dead letter keeps
    } skip;
    std::string scratch;        ///< reused buffer for streaming past a long line
    bool idle = false;          ///< follow mode: the last read found nothing new
    bool had_long_line = false; ///< the lake may hold long-line markers of it (to prune)
    /// A Redis source: its stream, the lake id of the last-entry records landed with its
    /// chunks (source key + "#redis-ids") and the offset of the newest of them.
    std::unique_ptr<redis_stream> redis;
    redis_stream::batch entries;
    uint32_t ids_id = 0;
    uint64_t ids_newest = 0;
    int64_t redis_retry_us = 0; ///< after a Redis error: not before this time (wall clock)
  };
  uint32_t pipeline = 0;
  std::vector<source_run> sources;
  pipeline_sources catalog; ///< the configured sources, to add files that newly match a glob
  int64_t globbed_us = 0;   ///< when the followed globs were last expanded
  std::set<std::string> not_sources; ///< glob matches that are rotated files of other paths
  size_t current = 0;
  size_t inflight = 0;
  uint64_t seq = 0;
  bool timer_pending = false;
  bool done_sent = false;
  bool stopping = false;
  bool finished = false; ///< a stop or final marker went out
  bool follow = false;
  uint64_t lines_since_marker = 0; ///< for commit_events
  uint64_t bytes_since_marker = 0; ///< for max_epoch_bytes
  bool epoch_asked = false;
  std::map<uint64_t, std::vector<std::pair<uint32_t, uint64_t>>> epoch_offsets;
  std::shared_ptr<state_meter> meter; ///< the pipeline's live meter (null: none)
  ~ingest_state();
};

/// Ingest of pipeline `pipeline`: replays what the lake holds beyond the committed offsets,
/// then reads the sources in order, landing every chunk in the lake before sending it on. Its
/// mailbox depth goes to `meter` (may be null).
ingest_actor::behavior_type ingest(ingest_actor::stateful_pointer<ingest_state> self,
                                   uint32_t pipeline, pipeline_sources inputs, runtime_config rt,
                                   std::shared_ptr<lake> lk, preprocess_actor next,
                                   coordinator_actor coordinator,
                                   std::shared_ptr<state_meter> meter);

} // namespace weir
