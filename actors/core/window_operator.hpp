#pragma once

/// The logic of one window-aggregator partition: event-time windows per key, their aggregates,
/// firing on the watermark, late records and snapshots. No actor code: the aggregator actor
/// feeds batches in, calls advance() with the watermark and ships the results.
///
/// Semantics
/// ---------
/// Windows (all half-open, [start, end)):
/// - tumbling(size, offset): the one window [s, s + size) with s = offset + k * size holding t.
/// - sliding(size, slide, offset): every window [s, s + size) with s = offset + k * slide that
///   holds t (about size / slide of them).
/// - session(gap), per key: a session is [first, last + gap). A record's interval [t, t + gap)
///   joins every open session of its key that it overlaps or touches (t <= end and
///   start <= t + gap); sessions it joins are merged into one.
///
/// Firing: a window [s, e) fires when the watermark W >= e + allowed_lateness. Its result is
/// emitted with version 1 and, unless late = update, its state is dropped.
///
/// Lateness is decided per record from W_r = max(wm_before[r], watermark()), the watermark that
/// held when the record was seen upstream (never below what this operator already acted on, so
/// that a window it already fired is never emitted a second time as version 1):
/// - tumbling/sliding: the record is not added to window w if W_r >= w.end + allowed_lateness
///   (w is "late" for it); it still goes to its other windows.
/// - session: the record is late if W_r >= t + gap + allowed_lateness (the session it would
///   start alone has already fired); late records are dropped. Sessions that have fired by W_r
///   (end + allowed_lateness <= W_r) no longer take records nor merge, even when advance() has
///   not yet emitted them.
/// Records late for all their windows are normally dead-lettered upstream; here they are skipped.
///
/// late = update (tumbling and sliding; sessions behave as dead_letter): a fired window is
/// retained until W >= e + allowed_lateness + update_horizon. A late record for a window with
/// W_r < e + allowed_lateness + update_horizon that this operator still holds is added to it;
/// if the window was already emitted it becomes dirty and is emitted again with version + 1 at
/// the next advance(). A late record for a window its key never had a record in opens that
/// window (nothing was committed for it, so it is emitted once as version 1 and then retained);
/// a late record for a window that is gone (past the horizon) is skipped.
///
/// Aggregates, one double each in config order (inputs laid out by make_layout()):
/// - count: records, or non-NaN values of `field` when it is set.
/// - sum, avg, min, max: over the non-NaN values; NaN when there is none.
/// - distinct: distinct hashes, exact up to 1024 per window, then HyperLogLog p = 14 (relative
///   standard error 0.81 %), see distinct_counter.
/// - quantile(q): DDSketch, within 1 % relative error of the value at rank floor(q * (n - 1))
///   of the sorted non-NaN values, see quantile_sketch.
///
/// Results of one advance() or flush() are ordered by (end, start, key bytes).
///
/// Cost: keys are interned once (open addressing on the key hash, key bytes compared on a hit);
/// window accumulators live in pooled flat arrays indexed by window id, so a record allocates
/// only when it opens a new (key, window) or grows a distinct/quantile structure.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>

#include "actors/core/sketches.hpp"
#include "actors/core/types.hpp"

namespace weir {

class window_operator {
public:
  /// Takes the window and aggregate parts of `cfg`, which is assumed valid (size, slide and
  /// gap > 0 where they apply).
  explicit window_operator(const pipeline_config& cfg);

  /// Adds the records of one batch. The batch's value and hash widths must be those of
  /// make_layout(cfg.aggregates); anything else is a bug upstream (std::invalid_argument).
  void process(const event_view& batch);

  /// Fires every window with end + allowed_lateness <= watermark (appends results to `out`,
  /// ordered by (end, start, key)), re-emits dirty retained windows, drops expired retained
  /// ones. A watermark below the current one changes nothing.
  void advance(timestamp watermark, std::vector<window_result>& out);

  /// End of a bounded input: fires every open window (and dirty retained ones). Returns the
  /// watermark that now holds: max over fired windows of end + allowed_lateness (or the current
  /// watermark if higher), so that later records for those windows count as late.
  timestamp flush(std::vector<window_result>& out);

  /// Full state (open and retained windows with their accumulators, keys, watermark) as bytes.
  std::string snapshot() const;

  /// Replaces the state with a snapshot of an operator built from the same config (the window
  /// kind, size, slide, offset, gap, late policy and aggregate functions must match; lateness
  /// and out-of-orderness may change). Bad bytes, or a snapshot of another configuration, give
  /// errc::store_corrupt and leave the state unchanged.
  caf::error restore(std::string_view bytes);

  /// Windows not fired yet (retained fired windows do not count).
  size_t open_windows() const { return open_; }

  timestamp watermark() const { return watermark_; }

private:
  /// A window of one key. Its accumulator is row `id` of the pooled arrays.
  struct window {
    timestamp start = 0;
    timestamp end = 0;
    uint32_t key = 0;
    uint32_t version = 0; ///< last emitted version; 0 while not fired
    bool dirty = false;   ///< fired, then updated by a late record
  };

  /// Per key, its windows: sorted by start for tumbling/sliding, in no order for sessions.
  struct window_ref {
    timestamp start;
    uint32_t id;
  };

  struct key_entry {
    uint64_t hash = 0;
    std::string bytes;
    std::vector<window_ref> windows;
  };

  /// Precomputed per aggregate: where its input and its accumulator are.
  struct agg_slot {
    agg_fn fn;
    bool count_records;
    int value_col;
    int hash_col;
    uint32_t acc;    ///< first double of its accumulator within a row
    uint32_t sketch; ///< index among the distinct or quantile sketches of a row
    double q;
  };

  /// One entry of the firing list of a scan.
  struct emission {
    timestamp end;
    timestamp start;
    uint32_t key;
    uint32_t id;
  };

  struct table_entry {
    uint64_t hash = 0;
    uint32_t slot = 0; ///< key slot + 1; 0 marks a free bucket
  };

  static constexpr uint32_t npos = UINT32_MAX;

  // keys
  size_t home_of(uint64_t hash) const;
  uint32_t find_key(uint64_t hash, std::string_view bytes) const;
  uint32_t intern_key(uint64_t hash, std::string_view bytes);
  void release_key(uint32_t k);
  void grow_table();

  // windows
  uint32_t new_window(uint32_t k, timestamp start, timestamp end);
  void free_window(uint32_t id);
  uint32_t find_window(const key_entry& k, timestamp start) const;
  uint32_t find_or_open(uint32_t k, timestamp start);
  void add_record(uint32_t id, const event_view& b, size_t r);
  void merge_into(uint32_t into, uint32_t from);
  void fill_values(uint32_t id, std::vector<double>& values) const;

  // per kind
  void process_fixed(const event_view& b);
  void process_session(const event_view& b);
  void late_update(uint64_t hash, std::string_view key, timestamp start, timestamp end,
                   timestamp w, const event_view& b, size_t r);

  void scan(bool fire_all, std::vector<window_result>& out, timestamp* fired_max);

  // config
  window_config win_;
  std::vector<aggregate_config> agg_cfg_; ///< to build the operator restore() fills
  std::vector<agg_slot> aggs_;
  size_t value_width_ = 0;
  size_t hash_width_ = 0;
  size_t acc_width_ = 0;
  size_t distinct_width_ = 0;
  size_t quantile_width_ = 0;
  std::vector<uint8_t> fingerprint_; ///< window kind and aggregate functions, for restore()

  // state
  timestamp watermark_ = min_timestamp;
  /// No window needs attention before this watermark (a lower bound, made exact by scans).
  timestamp next_due_ = max_timestamp;
  size_t open_ = 0;
  size_t dirty_ = 0;

  std::vector<key_entry> keys_;
  std::vector<uint32_t> free_keys_;
  std::vector<table_entry> table_;
  size_t table_used_ = 0;

  std::vector<window> windows_;
  std::vector<uint32_t> free_windows_;
  std::vector<double> acc_;
  std::vector<double> acc_init_;
  std::vector<distinct_counter> distinct_;
  std::vector<quantile_sketch> quantiles_;

  // scratch, reused between calls
  std::vector<emission> emit_;
  std::vector<uint32_t> merge_;
};

} // namespace weir
