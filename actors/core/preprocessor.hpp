#pragma once

/// The preprocess engine: raw lines in, validated events (as columns, per partition) and dead
/// letters out. It is the hot path of every pipeline, so the steady state allocates nothing per
/// record: field values are string_views into the chunk, and every scratch buffer is a member
/// that keeps its capacity. No actor code: the preprocess actor feeds chunks in and ships the
/// columns.
///
/// Per line (lines end at '\n'; a trailing '\r' is dropped; empty lines are skipped):
///  1. longer than max_line_bytes -> dead letter; invalid UTF-8 -> dead letter;
///  2. decode: CSV (RFC 4180 quoting, `""` escapes; a quoted field cannot hold a line break,
///     because chunks are split on line breaks before any quote is seen) or NDJSON (one object;
///     strings, numbers and booleans are values, null is absent, objects and arrays cannot be
///     used as fields);
///  3. rename, then in this order (the first failure decides the dead letter's reason):
///     required fields, types, the time field, key fields, event id (with dedupe), measures,
///     derived fields, filters (a failed filter counts as `filtered`, no dead letter), dedupe,
///     lateness, emission to partition key_hash % partitions.
/// A field is absent when it is missing or its text is empty (CSV cannot tell them apart).
/// An NDJSON number's text is its canonical form (1.50 reads as "1.5").
///
/// counters: read = accepted + filtered + duplicates + late + sum(rejected); late_updates
/// (records emitted to update a fired window) are part of accepted.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/error.hpp>

#include "actors/core/dead_letters.hpp"
#include "actors/core/types.hpp"

namespace weir {

/// Where one configured source stands for the watermark.
struct source_watermark {
  std::string name;
  timestamp max_time = min_timestamp; ///< largest accepted event time (min: none yet)
  bool idle = false;                  ///< nothing new for its idle_timeout: not counted
};

struct preprocess_counters {
  uint64_t read = 0;
  uint64_t accepted = 0;
  uint64_t filtered = 0;
  uint64_t late = 0;
  uint64_t late_updates = 0;
  uint64_t duplicates = 0;
  uint64_t bytes = 0; ///< bytes of lines processed
  std::vector<std::pair<std::string, uint64_t>> rejected; ///< reason class -> count
};

/// What a snapshot blob tells of a pipeline's progress (for a server's status and metrics).
struct preprocess_summary {
  timestamp watermark = min_timestamp; ///< min_timestamp: none yet
  preprocess_counters counters;
  /// Configured source name -> its largest accepted event time (min_timestamp: none yet);
  /// empty in snapshots written before sources had their own.
  std::vector<std::pair<std::string, timestamp>> sources;
};

class preprocessor {
public:
  /// `partitions` is the number of window-aggregator partitions (0 is taken as 1).
  preprocessor(const pipeline_config& cfg, size_t partitions);
  ~preprocessor();
  preprocessor(const preprocessor&) = delete;
  preprocessor& operator=(const preprocessor&) = delete;

  /// Tells which configured source (index into cfg.sources) the lake's source id `source` reads.
  /// A pipeline with one configured source needs no binding: every id uses it. With several,
  /// lines of an unbound id are dead-lettered, since guessing their format would be wrong.
  void bind_source(uint32_t source, size_t config_index);

  /// Sets the csv header of `source` (a resumed source whose header line is not in the chunk).
  void set_header(uint32_t source, std::string_view header_line);

  /// The input fields the pipeline reads (names as in the input, before rename), in order.
  const std::vector<std::string>& input_fields() const;

  /// The column names of a csv header line of configured source `config_index` (a leading
  /// byte-order mark and line end are dropped), or why the line does not split.
  caf::expected<std::vector<std::string>> header_columns(size_t config_index,
                                                         std::string_view line);

  /// Processes whole lines of one source. `offset` is the byte offset of chunk[0] in the source.
  /// For csv with header = true the line at offset 0 is the header (parsed, not emitted).
  void process(uint32_t source, uint64_t offset, std::string_view chunk);

  /// Rejects a line longer than max_line_bytes that ingest streamed past without holding it:
  /// `span` bytes of the source at `offset`, `length` of them the line without its line end,
  /// `head` its start. Counted as read and rejected ("line too long"), like a long line that
  /// process() sees whole.
  void reject_long_line(uint32_t source, uint64_t offset, uint64_t span, uint64_t length,
                        std::string_view head);

  /// Rejects a line without processing it: a poison record, whose processing failed on every
  /// retry (actors/core/poison.hpp). Counted as read and rejected ("poison").
  void reject_poison(uint32_t source, uint64_t offset, std::string_view line, std::string reason);

  /// Accepted events of partition p since clear_outputs().
  event_columns& partition(size_t p);
  size_t partitions() const;
  /// Rejected records since clear_outputs().
  const dead_letter_pack& dead_letters() const;
  void clear_outputs();

  /// The pipeline's watermark W (min_timestamp before any record). Each configured source
  /// (a glob's files are one stream) has the largest event time it has had accepted; W is the
  /// min of those over the sources that count, less out_of_orderness, and never goes down. A
  /// source counts unless it is idle; one without records yet holds W where it is. Records
  /// that update a fired window (late = update) do not move their source.
  timestamp watermark() const;

  /// The clock (any monotonic microseconds) for idle_timeout: a source whose lines have not
  /// moved between ticks for its idle_timeout becomes idle and stops holding W back; its next
  /// line makes it count again. The first tick starts every source's clock. Without a tick no
  /// source is ever idle, so W is a function of the input order alone.
  void tick(int64_t now_us);

  /// Per configured source, in config order.
  std::vector<source_watermark> source_watermarks() const;
  const preprocess_counters& counters() const;

  /// Dedupe changes since the last call: ids added (with their event time) and ids expired
  /// (older than watermark - dedupe_horizon). Apply `added` before `expired`.
  void take_dedupe_delta(std::vector<std::pair<uint64_t, int64_t>>& added,
                         std::vector<uint64_t>& expired);

  /// Restores after a restart: the watermark and the remembered event ids.
  void restore(timestamp watermark, const std::vector<std::pair<uint64_t, int64_t>>& ids);

  /// A small state blob (the watermark, the counters, each source's largest event time) for
  /// the store, and back. The counters are committed with each epoch, so that they count every
  /// record exactly once across restarts, like the results. Sources are matched by name on
  /// restore; idleness is not kept (a restored source counts until it is idle again).
  std::string snapshot() const;
  caf::error restore_snapshot(std::string_view blob);

  /// The counters held in a snapshot blob (all zero for an empty blob).
  static caf::expected<preprocess_counters> counters_of(std::string_view blob);
  /// The watermark, counters and sources' event times held in a snapshot blob (nothing yet for
  /// an empty blob).
  static caf::expected<preprocess_summary> summary_of(std::string_view blob);

  /// Raises the watermark (never lowers it), e.g. after a bounded input's final flush.
  void set_watermark(timestamp w);

  /// The event id hash used by dedupe (XXH3-64 of the id's text).
  static uint64_t id_hash(std::string_view id);

private:
  struct impl;
  std::unique_ptr<impl> d_;
};

} // namespace weir
