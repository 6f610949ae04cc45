#pragma once

/// The warehouse: committed window results with everything needed to resume exactly where the
/// last epoch ended (source offsets, operator state, dedupe ids), plus dead letters. Lives in
/// DIR/warehouse. One `commit` is one LMDB write txn, so readers see whole epochs only.
///
/// Tables (keys big-endian, values little-endian; every value but meta's format_version and kind
/// ends in a seal of key and value, lmdb.hpp, verified whenever it is read):
/// - meta:         "format_version" (u32), "kind" = "warehouse", "store_id" (store.hpp),
///                 "lake_sources": the source keys of a lake on another node (the ingest node
///                 of a cluster), which the offsets and dead letters refer to by id: u32 count,
///                 then per source by increasing id: id u32, key (u32 length, bytes)
/// - pipelines:    name -> id u16, window text, aggregate names
/// - counters:     "next_pipeline_id" -> u64; "dead_letter_seq/<id>" -> next sequence (u64);
///                 "windows/<id>" -> result rows committed so far (u64)
/// - offsets:      (pipeline BE16, source BE32) -> committed offset u64
/// - epochs:       pipeline BE16 -> last committed epoch u64
/// - results:      (pipeline BE16, start sBE64, end sBE64, key) -> version u32, count u32,
///                 doubles, [the whole key when it was too long for an LMDB key]
/// - state:        (pipeline BE16, partition BE32) -> blob; partition 0xFFFFFFFF = preprocess
/// - dedupe:       (pipeline BE16, epoch BE64) -> newest time i64, then (id u64, time i64)...:
///                 the ids one epoch added; counters "dedupe_cutoff/<id>" holds the expiry
/// - dead_letters: (pipeline BE16, sequence BE64) -> source u32, offset u64, reason, raw
/// - windows:      (pipeline BE16, partition BE32, row key) -> u8 0, value; the keyed state of
///                 the window operators (a row per slice or session, see window_operator.hpp).
///                 A row key too long for LMDB is stored under its first bytes plus an XXH3-64
///                 of it, with u8 1, the whole row key (varint length first), value.
///                 The partition's entry in `state` is the operator's meta value.
/// - by_key:       (pipeline BE16, XXH3-64 of the key BE64, start sBE64, end sBE64) -> key (u32
///                 length, bytes), version u32, count u32, doubles: a copy of the results of
///                 a key, so that a lookup by key reads them in order (results.key_index)
/// - changes:      (pipeline BE16, epoch BE64, row BE32) -> row 0: commit time i64 (wall clock
///                 microseconds), for the retention; row i > 0: the i-th result row the epoch
///                 wrote, as its results key (u16 length, bytes) and value (results.change_feed)
/// The counters "key_index/<id>" (windows counter + 1 when the index was last complete) and
/// "change_keep/<id>" (the feed's retention in microseconds) say which are kept. The counters
/// "sink/<id>/<name>" hold the last epoch each configured sink of the pipeline was delivered
/// (actors/sink_driver.hpp); the feed keeps every epoch after the lowest of them, however old. A
/// commit that does not keep the index (an older build) leaves the first behind the windows
/// counter: the index is not used until it is built again.
///
/// Result keys longer than an LMDB key allows (over 492 bytes) are stored under their first
/// 485 bytes plus a 64-bit hash of the whole key; such keys sort by that prefix, then in an
/// arbitrary but stable order.
///
/// All member functions may be called from several threads at once on one object. Callbacks
/// run inside a read txn (one per call, so a query sees one epoch) and must not write to the
/// warehouse.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "actors/core/dead_letters.hpp"
#include "actors/core/error.hpp"
#include "actors/core/result_pack.hpp"
#include "actors/core/types.hpp"
#include "store/lmdb.hpp"

namespace weir {

struct pipeline_info {
  uint16_t id = 0;
  std::string name;
  std::vector<std::string> aggregates;
  std::string window;
  std::string definition; ///< the settings its results mean (actors/core/definition.hpp)
};

/// Everything one epoch of one pipeline changes, written in one txn.
struct epoch_commit {
  std::string pipeline; ///< must be registered
  uint64_t epoch = 0;
  /// Results and dead letters written outside the epoch sequence (commit_mode::results_only):
  /// `epoch` is ignored, last_epoch stays as it is.
  bool without_epoch = false;
  std::vector<std::pair<uint32_t, uint64_t>> offsets; ///< source id -> offset reached
  dead_letter_pack dead_letters; ///< in order: they take the next sequence numbers
  result_pack results;           ///< upserts: a row replaces the stored row only if its version is
                                 ///< >= the stored one
  std::vector<std::pair<uint32_t, std::string>> states; ///< partition -> blob (replaces)
  /// Per partition, the window-state rows an epoch changed: deletes first, then puts (packed as
  /// in state_delta: varint-length row keys, and values for puts).
  struct window_rows {
    uint32_t partition = 0;
    std::string puts;
    std::string dels;
  };
  std::vector<window_rows> windows;
  std::vector<std::pair<uint64_t, int64_t>> dedupe_added; ///< id -> event time (one segment)
  /// Ids with an event time below this are expired from now on (the cutoff only moves up).
  timestamp dedupe_expire_before = min_timestamp;
};

struct dead_letter_row {
  std::string pipeline;
  uint64_t seq = 0;
  dead_letter letter;
};

/// Which indexes of a pipeline's results a store keeps (config: [pipeline.results]).
struct result_indexes {
  bool by_key = false;        ///< the by_key table: lookups by key read only that key's rows
  int64_t change_keep_us = 0; ///< > 0: the change feed, kept this long (wall clock)
};

/// Where the change feed of a pipeline stands.
struct change_feed_state {
  bool enabled = false;
  uint64_t oldest = 0;     ///< the oldest epoch whose changes are kept (last_epoch + 1: none)
  uint64_t last_epoch = 0; ///< the last committed epoch
};

/// A result row of the change feed: the epoch that committed it and its place there.
struct change_row {
  uint64_t epoch = 0;
  uint32_t index = 0; ///< from 1, in the epoch's (start, end, key) order
  window_result row;
};

struct result_query {
  std::string pipeline;
  std::optional<std::string> key;
  std::optional<timestamp> from; ///< start >= from
  std::optional<timestamp> to;   ///< end <= to
  /// Only rows after this one in (start, end, key) order: where the previous page ended.
  std::optional<window_result> after;
};

class warehouse {
public:
  /// 2: values are sealed and the meta table records the store identity.
  /// 3: window-operator state is keyed rows in `windows`, written incrementally.
  static constexpr uint32_t format_version = 3;
  static constexpr size_t default_map_size = size_t{256} << 20;
  /// Dead-letter raw text is kept whole up to this many bytes, then cut with a marker.
  static constexpr size_t max_dead_letter_raw = dead_letter_pack::max_raw;
  /// The partition under which the preprocess stage keeps its state.
  static constexpr uint32_t preprocess_partition = 0xFFFFFFFF;

  /// Opens (creating when missing) the warehouse in `dir`/warehouse. See lake::open for
  /// `durable` and `map_size`.
  static caf::expected<warehouse> open(const std::string& dir, bool durable = true,
                                       size_t map_size = default_map_size);

  /// Registers a pipeline (idempotent) and returns it. A different aggregate list for an
  /// existing name is refused with errc::bad_config: the stored results and state would no
  /// longer match the pipeline. A changed window text or definition is recorded (the caller
  /// checks compatibility first: compare_definition).
  caf::expected<pipeline_info> register_pipeline(const std::string& name,
                                                 const std::vector<std::string>& aggregates,
                                                 const std::string& window,
                                                 const std::string& definition = {});
  caf::expected<std::optional<pipeline_info>> pipeline(const std::string& name);
  /// All pipelines, by id.
  caf::expected<std::vector<pipeline_info>> pipelines();

  /// Commits everything in ONE write transaction, with last_epoch = c.epoch. If c.epoch <= the
  /// last committed epoch of that pipeline it does nothing and returns false. Refuses a result
  /// whose end is before its start (errc::internal: windows are never like that).
  caf::expected<bool> commit(const epoch_commit& c);

  /// The last committed epoch; 0 = none (or no such pipeline).
  caf::expected<uint64_t> last_epoch(const std::string& pipeline);
  /// Result rows committed so far (0 = none or no such pipeline); a late update counts again.
  caf::expected<uint64_t> windows_committed(const std::string& pipeline);
  /// Dead letters committed so far, which is also the sequence number of the newest (0 = none
  /// or no such pipeline): a pipeline's dead letters are numbered from 1 and never removed.
  caf::expected<uint64_t> dead_letters_committed(const std::string& pipeline);
  /// Committed offsets by source id.
  caf::expected<std::vector<std::pair<uint32_t, uint64_t>>> offsets(const std::string& pipeline);
  /// Committed state blobs by partition.
  caf::expected<std::vector<std::pair<uint32_t, std::string>>> states(const std::string& pipeline);
  /// Calls fn(row key, value) for every window-state row of one partition, in row-key order
  /// (one read txn).
  caf::error window_rows(const std::string& pipeline, uint32_t partition,
                         const std::function<void(std::string_view, std::string_view)>& fn);
  /// Remembered event ids by id: per id the greatest event time committed for it, leaving out
  /// ids below the expiry cutoff.
  caf::expected<std::vector<std::pair<uint64_t, int64_t>>> dedupe(const std::string& pipeline);

  /// Results with start >= from and end <= to (when given), key equal (when given), ordered by
  /// (start, end, key). Calls fn per row; fn returns false to stop. The row passed is reused
  /// between calls. An unknown pipeline has no rows.
  caf::error query(const result_query& q, const std::function<bool(const window_result&)>& fn);

  /// Sets which indexes of `pipeline`'s results are kept from the next commit on: builds the
  /// key index from the results when it is turned on or behind (one write txn), drops what is
  /// turned off. The change feed starts with the next commit. A no-op for an unknown pipeline.
  caf::error set_indexes(const std::string& pipeline, const result_indexes& x);

  /// The change feed of `pipeline`: the result rows committed by epochs after `since_epoch`,
  /// in (epoch, row) order, after `after` (epoch, row) when given; fn returns false to stop.
  /// Rows are only passed when since_epoch + 1 >= the oldest kept epoch (else the caller says
  /// the feed has moved on); the state is read in the same txn.
  caf::expected<change_feed_state> changes(const std::string& pipeline, uint64_t since_epoch,
                                           std::optional<std::pair<uint64_t, uint32_t>> after,
                                           const std::function<bool(const change_row&)>& fn);

  /// Registers the sinks of `pipeline` by name (one write txn) and returns the last epoch each
  /// was delivered, in the order given: what a sink recorded with set_sink_cursor, or for a
  /// sink new to the store the epoch before the oldest one the change feed holds (0 for a
  /// pipeline with no epoch yet). The cursors of sinks not named are dropped, so that a sink
  /// removed from the config no longer holds the feed back. errc::bad_input for an unknown
  /// pipeline.
  caf::expected<std::vector<uint64_t>> register_sinks(const std::string& pipeline,
                                                      const std::vector<std::string>& names);
  /// Records that sink `name` of `pipeline` was delivered every epoch up to `epoch` (one
  /// write txn, durable like the commits).
  caf::error set_sink_cursor(const std::string& pipeline, const std::string& name, uint64_t epoch);

  /// Dead letters of one pipeline (or all, by pipeline id), in sequence order; of one
  /// pipeline, only those with a sequence number above `after_seq`.
  caf::error dead_letters(const std::optional<std::string>& pipeline,
                          const std::function<bool(const dead_letter_row&)>& fn,
                          uint64_t after_seq = 0);

  /// Remembers the source keys (id -> key, e.g. "p/in:/abs/in.csv") of a lake that lives on
  /// another node, so that this store alone can name the sources its offsets and dead letters
  /// refer to. Merges: new ids are added, known ones must come with the key they have (another
  /// key is errc::store_corrupt: that lake is not the one these offsets count). Writes only
  /// when something is new: the ingest node reports its sources at every start.
  caf::error record_lake_sources(const std::vector<std::pair<uint32_t, std::string>>& sources);
  /// The source keys recorded by record_lake_sources, by id (empty: none recorded).
  caf::expected<std::vector<std::pair<uint32_t, std::string>>> lake_sources();

  /// Table name -> entry count, plus "map_size", "map_used" (bytes) and "format_version",
  /// for `weir inspect`.
  caf::expected<std::vector<std::pair<std::string, uint64_t>>> table_counts();

  /// The store identity recorded in the warehouse (see store.hpp), if any.
  caf::expected<std::optional<std::string>> identity() { return lmdb::read_identity(env_, meta_); }
  caf::error record_identity(std::string_view id) { return lmdb::write_identity(env_, meta_, id); }

  /// The environment and its tables by name, for `weir check` (store/check.hpp).
  lmdb::env& environment() { return env_; }
  std::vector<std::pair<const char*, lmdb::dbi>> tables() const {
    return {{"meta", meta_},       {"pipelines", pipelines_}, {"counters", counters_},
            {"offsets", offsets_}, {"epochs", epochs_},       {"results", results_},
            {"state", state_},     {"dedupe", dedupe_},       {"dead_letters", dead_letters_},
            {"windows", windows_}, {"by_key", by_key_},       {"changes", changes_}};
  }

  const std::string& dir() const { return env_.dir(); }

private:
  // The steps of `commit`, one per table, in the order it runs them inside its one write txn.
  // A step writes its part of the epoch under pipeline id `pid`.

  /// Checks c.epoch against the last committed epoch and records it: false for a replay of a
  /// committed epoch (nothing else may then be written).
  caf::expected<bool> write_epoch(lmdb::txn& t, uint16_t pid, const epoch_commit& c);
  caf::error write_offsets(lmdb::txn& t, uint16_t pid,
                           const std::vector<std::pair<uint32_t, uint64_t>>& offsets);
  caf::error write_dead_letters(lmdb::txn& t, uint16_t pid, const dead_letter_pack& letters);
  /// Writes the results, and their key index entries and change rows when kept.
  caf::error write_results(lmdb::txn& t, uint16_t pid, const epoch_commit& c);
  /// Drops the changes of epochs committed longer ago than the feed keeps them, but none after
  /// the lowest sink cursor of the pipeline (a sink that lags holds the feed back).
  caf::error prune_changes(lmdb::txn& t, uint16_t pid, uint64_t epoch, int64_t keep_us);
  /// A query of one key through the key index.
  caf::error query_by_key(lmdb::txn& t, uint16_t pid, const result_query& q,
                          const std::function<bool(const window_result&)>& fn);
  caf::error write_states(lmdb::txn& t, uint16_t pid,
                          const std::vector<std::pair<uint32_t, std::string>>& states);
  /// The ids the epoch added, and the expiry of old ones.
  caf::error write_dedupe(lmdb::txn& t, uint16_t pid, const epoch_commit& c);

  /// Runs fn(key after the pipeline prefix, value) over the entries of `pipeline` in table d,
  /// in one read txn.
  template <class F>
  caf::error scan_pipeline(const std::string& pipeline, lmdb::dbi d, F&& fn);

  /// Reads one u64 of `pipeline` in one read txn: the value under key_of(pipeline id) in table
  /// d (`what` names it in errors); 0 when the pipeline or the value is not there.
  template <class KeyOf>
  caf::expected<uint64_t> pipeline_u64(const std::string& pipeline, lmdb::dbi d, KeyOf&& key_of,
                                       const char* what);

  lmdb::env env_;
  lmdb::dbi meta_ = 0;
  lmdb::dbi pipelines_ = 0;
  lmdb::dbi counters_ = 0;
  lmdb::dbi offsets_ = 0;
  lmdb::dbi epochs_ = 0;
  lmdb::dbi results_ = 0;
  lmdb::dbi state_ = 0;
  lmdb::dbi dedupe_ = 0;
  lmdb::dbi dead_letters_ = 0;
  lmdb::dbi windows_ = 0;
  lmdb::dbi by_key_ = 0;
  lmdb::dbi changes_ = 0;

  caf::error write_window_rows(lmdb::txn& t, uint16_t pid, const epoch_commit& c);
};

} // namespace weir
