#pragma once

/// The logic of one window-aggregator partition: event-time windows per key, their aggregates,
/// firing on the watermark, late records and keyed, incremental state. No actor code: the
/// aggregator actor feeds batches in, calls advance() with the watermark, ships the results and
/// the state that changed.
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
///   (end + allowed_lateness <= W_r) no longer take records nor merge.
/// Records late for all their windows are normally dead-lettered upstream; here they are skipped.
/// To decide this exactly, a record whose wm_before passes the due time of a window fires that
/// window first (the results wait for the next advance(), which returns them in order).
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
/// - custom (a registered aggregate_function, actors/core/extension.hpp): an accumulator of
///   state_size() bytes per slice or session, made by init() when the slice or session opens;
///   add(value, event time) per non-NaN value of its field; result() when the window fires (and
///   again for each late = update re-emission). A window of several slices is a fresh init()
///   into which the slices are merged oldest first; sessions that merge are merged so that
///   `into` is the one that starts earlier. Either way, every record behind `into` has an
///   earlier event time than every record behind `other`, so an aggregate whose merge needs
///   times (a decayed mean) can rely on that. Records added to a slice or session come in
///   arrival order, not time order.
///
/// Results of one advance() or flush() are ordered by (start, end, key bytes), the order of the
/// warehouse's results table, so that it merges the partitions' results without sorting them.
///
/// Slices
/// ------
/// Tumbling and sliding windows are kept as slices of gcd(size, slide): a record updates the one
/// slice that holds it, and a window's result combines its slices when it fires (a tumbling
/// window is one slice). Sums are added up slice by slice in start order, the same way every
/// time, so results do not depend on when the windows fire.
///
/// Memory and cost
/// ---------------
/// Aggregates over one field share their accumulator (sum and avg of `amount` keep one sum and
/// one count). Custom accumulators of a row sit in one pooled byte array, each at a 16-byte
/// aligned offset (they are moved by copying bytes, so they must not point into themselves).
/// Keys are interned once (open addressing on the key hash, key bytes in one arena);
/// a key's slices (or sessions) form a list sorted by start; a min-heap holds each key's next
/// due time, so firing costs what fires, not what is held. Nothing is allocated per record unless
/// it opens a new (key, slice) or grows a distinct/quantile structure.
///
/// State
/// -----
/// The state is a set of rows, one per slice or session (and, with late = update, one per key
/// that holds fired windows), plus a small meta value (watermark, configuration fingerprint,
/// row count). A row holds the key hash, a session's end, the numeric accumulators, then each
/// distinct and quantile sketch, then each custom aggregate's serialize() bytes (length
/// prefixed); bytes its deserialize() refuses make the row corrupt. The fingerprint in the meta
/// value holds each custom aggregate's name and canonical options, so that a store written by
/// another definition is refused. checkpoint() returns what changed since the previous checkpoint:
/// rows to put and rows to delete (what fired, expired or merged away); snapshot() returns all of
/// it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>

#include "actors/core/extension.hpp"
#include "actors/core/result_pack.hpp"
#include "actors/core/sketches.hpp"
#include "actors/core/state_rows.hpp"
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
  /// ordered by (start, end, key bytes), the order of the warehouse's results table, together
  /// with those fired while processing), re-emits dirty retained windows, drops expired
  /// retained ones. A watermark below the current one changes nothing but returns what is
  /// pending. The pack is the fast form; the vector is for tests and tools.
  void advance(timestamp watermark, result_pack& out);
  void advance(timestamp watermark, std::vector<window_result>& out);

  /// End of a bounded input: fires every open window (and dirty retained ones). Returns the
  /// watermark that now holds: max over fired windows of end + allowed_lateness (or the current
  /// watermark if higher), so that later records for those windows count as late.
  timestamp flush(result_pack& out);
  timestamp flush(std::vector<window_result>& out);

  /// The rows changed since the previous checkpoint (or since construction or restore), and the
  /// meta value; marks them as stored. Call it after advance(), when nothing is pending.
  void checkpoint(state_delta& out);

  /// Forgets what changed, for runs that store no state (a dry run, --no-exactly-once), so that
  /// the change log does not grow with the run.
  void discard_changes();

  /// The whole state as bytes: the meta value and every row. Not canonical across histories
  /// (rows come in key-slot order), but restore() of it behaves exactly like this operator.
  std::string snapshot() const;

  /// Replaces the state with a snapshot of an operator built from the same config (the window
  /// kind, size, slide, offset, gap, late policy and aggregate functions must match; lateness
  /// and out-of-orderness may change). Bad bytes, or a snapshot of another configuration, give
  /// errc::store_corrupt and leave the state unchanged.
  caf::error restore(std::string_view bytes);

  /// The beginning of snapshot bytes with this meta value; append_row() adds the rows.
  static std::string snapshot_of(std::string_view meta);
  static void append_row(std::string& snapshot, std::string_view row_key, std::string_view value);

  /// Restores from stored rows: restore_begin(meta), restore_row() per row in any order, then
  /// restore_end(), which checks the row count against the meta value. On an error the operator
  /// is left empty (construct a new one to try again).
  caf::error restore_begin(std::string_view meta);
  caf::error restore_row(std::string_view row_key, std::string_view value);
  caf::error restore_end();

  /// Windows not fired yet (retained fired windows do not count). Walks the state.
  size_t open_windows() const;
  /// Slices and sessions held (rows of state, not counting per-key rows).
  size_t slices() const { return live_windows_; }
  /// Bytes of memory the state holds (vector capacities, key arena, sketches).
  size_t memory_bytes() const;

  timestamp watermark() const { return watermark_; }

private:
  /// A slice (tumbling, sliding) or a session of one key. Its accumulator is row `id` of the
  /// pooled arrays; a session's end is in ends_[id].
  struct window {
    timestamp start = 0;
    uint32_t key = 0;
    uint32_t next = 0;  ///< next window of the key (by start for slices), npos at the end
    uint32_t flags = 0; ///< w_changed, w_stored
  };

  /// A fired window kept for late updates (late = update): its end and last emitted version
  /// (0: never emitted, opened by a late record).
  struct fired {
    timestamp end = 0;
    uint32_t version = 0;
    bool dirty = false;
    /// While its last emission is still in pending_ (round == round_): where it is there, so
    /// that a late record before the next advance() updates that result instead of adding a
    /// second version to the same output.
    uint32_t pending = 0;
    uint32_t round = 0;
  };

  struct key_entry {
    uint64_t hash = 0;
    timestamp due = 0; ///< the due time of its entry in the heap (max_timestamp: none)
    uint32_t off = 0;  ///< key bytes in arena_
    uint32_t len = 0;
    uint32_t head = 0;   ///< first window, npos when none; slices newest first
    uint32_t flags : 4;  ///< k_changed, k_stored, k_dirty (late = update), k_live
    uint32_t fired : 28; ///< index into fired_ + 1 (late = update), 0: none
    key_entry()
      : flags(0)
      , fired(0) {}
  };

  /// A key's look at `due`. An entry is stale once the key's due differs (it was handled, or an
  /// earlier one was pushed); a slot reused by another key with the same due is looked at when
  /// it is due anyway, so no generation count is needed. Packed: 12 bytes a key.
  struct __attribute__((packed)) heap_entry {
    timestamp due;
    uint32_t key;
  };

  /// Where an aggregate's accumulator is, within one row of acc_.
  struct agg_slot {
    agg_fn fn;
    int32_t n = -1;   ///< records, or non-NaN values of the field
    int32_t val = -1; ///< sum, min or max
    int value_col = -1;
    int hash_col = -1;
    uint32_t sketch = 0; ///< index among the distinct, quantile or custom accumulators of a row
    double q = 0.5;
  };

  /// The accumulators of one value column (shared by every aggregate over that field).
  struct column_acc {
    int value_col;
    int32_t n = -1;
    int32_t sum = -1;
    int32_t min = -1;
    int32_t max = -1;
  };

  /// A custom aggregate: its function and where its accumulator is within a row of custom_.
  struct custom_acc {
    const aggregate_function* fn = nullptr;
    size_t offset = 0;
    int value_col = -1;
  };

  /// The unit of the custom accumulator pool: keeps every accumulator aligned for any type.
  struct alignas(16) custom_block {
    unsigned char bytes[16];
  };

  struct table_entry {
    uint32_t tag = 0;  ///< high bits of the hash
    uint32_t slot = 0; ///< key slot + 1; 0 marks a free bucket
  };

  static constexpr uint32_t npos = UINT32_MAX;
  static constexpr uint32_t w_changed = 1;
  static constexpr uint32_t w_stored = 2;
  static constexpr uint32_t k_changed = 1;
  static constexpr uint32_t k_stored = 2;
  static constexpr uint32_t k_dirty = 4;
  static constexpr uint32_t k_live = 8;

  void build_layout(const std::vector<aggregate_config>& aggs);

  // keys
  std::string_view key_bytes(uint32_t k) const {
    return {arena_.data() + keys_[k].off, keys_[k].len};
  }
  size_t home_of(uint64_t hash) const;
  uint32_t find_key(uint64_t hash, std::string_view bytes) const;
  uint32_t intern_key(uint64_t hash, std::string_view bytes);
  void release_key(uint32_t k);
  void grow_table();
  void compact_arena();
  void schedule(uint32_t k, timestamp due);
  void mark_key(uint32_t k, uint32_t flag);

  // windows
  uint32_t new_window(uint32_t k, timestamp start);
  void free_window(uint32_t id);
  void touch(uint32_t id);
  uint32_t find_or_open(uint32_t k, timestamp start);
  void add_record(uint32_t id, const event_view& b, size_t r);
  /// Merges the accumulators of window `from` into the given ones (the custom ones too unless
  /// `c` is nullptr).
  void merge_into(double* into, distinct_counter* d, quantile_sketch* q, unsigned char* c,
                  uint32_t from);
  /// Merges the custom accumulators of session `from` into session `into`, the earlier one
  /// first (see the header comment).
  void merge_session_custom(uint32_t into, uint32_t from);
  void fill_values(const double* acc, const distinct_counter* d, const quantile_sketch* q,
                   const unsigned char* c, std::vector<double>& values) const;
  /// Window id's accumulators into combined_values_.
  void fill_window(uint32_t id);
  unsigned char* custom_row(uint32_t id) {
    return reinterpret_cast<unsigned char*>(custom_.data()) + id * custom_width_;
  }
  const unsigned char* custom_row(uint32_t id) const {
    return reinterpret_cast<const unsigned char*>(custom_.data()) + id * custom_width_;
  }
  void init_custom(unsigned char* row) const;
  void collect_slices(uint32_t k);

  // grid (tumbling, sliding)
  timestamp slice_of(timestamp t) const;
  timestamp first_end(timestamp slice) const;
  timestamp last_end(timestamp slice) const;
  timestamp grid_end_below(timestamp w) const;

  // records
  void catch_up(timestamp wm_before);
  void move_to(timestamp w);
  void set_fired_through(timestamp e);
  void process_fixed(const event_view& b);
  void process_session(const event_view& b);
  void mark_fired_dirty(uint32_t k, timestamp slice);
  /// `ids`: the key's slices, oldest first.
  timestamp next_due_fixed(uint32_t k, const uint32_t* ids, size_t n) const;
  timestamp next_due_session(uint32_t k) const;

  // firing
  void fire(timestamp w);
  void fire_fixed_key(uint32_t k, timestamp lo, timestamp hi, timestamp w);
  void fire_session_key(uint32_t k, timestamp w);
  void emit_dirty(uint32_t k);
  /// Puts the values of the window made of the slices ids_[a, b) into combined_values_.
  void combine_slices(size_t a, size_t b);
  /// Appends a result of key k with the values in combined_values_; returns its index in
  /// pending_.
  uint32_t emit_values(uint32_t k, timestamp start, timestamp end, uint32_t version);
  /// Brings what is due at `watermark` into pending_ (fires, re-emits dirty windows).
  void prepare(timestamp watermark);
  /// The watermark at which flush() fires everything.
  timestamp flush_watermark() const;
  /// Sorts pending_ into order_ (the order advance() promises).
  void sort_pending();
  void take_pending(result_pack& out);
  void take_pending(std::vector<window_result>& out);
  std::vector<fired>& fired_of(uint32_t k);
  void drop_key_if_empty(uint32_t k);

  // state rows
  void write_row_key(std::string& out, timestamp start, uint32_t k) const;
  void encode_window(std::string& out, uint32_t id) const;
  void encode_key_row(std::string& out, uint32_t k) const;
  void note_deleted(timestamp start, uint32_t k);
  std::string encode_meta(uint64_t rows) const;

  // config
  window_config win_;
  std::vector<aggregate_config> agg_cfg_; ///< to build the operator restore() fills
  std::vector<agg_slot> aggs_;
  std::vector<column_acc> cols_;
  int32_t records_ = -1;
  size_t value_width_ = 0;
  size_t hash_width_ = 0;
  size_t acc_width_ = 0;
  size_t distinct_width_ = 0;
  size_t quantile_width_ = 0;
  std::vector<custom_acc> customs_;
  size_t custom_width_ = 0; ///< bytes of custom accumulators per row, a multiple of 16
  std::vector<double> acc_init_;
  std::string fingerprint_; ///< window kind and aggregate functions, for restore()
  bool fixed_ = true;
  bool retain_ = false; ///< late = update on tumbling or sliding windows
  int64_t step_ = 0;    ///< slide (tumbling: size)
  int64_t slice_ = 0;   ///< gcd(size, step)

  // state
  timestamp watermark_ = min_timestamp;
  /// Tumbling/sliding: every window ending at or before this has been fired (largest grid end
  /// with end + lateness <= watermark_); min_timestamp while none.
  timestamp fired_through_ = min_timestamp;
  timestamp next_grid_ = min_timestamp; ///< the watermark that moves fired_through_ next
  size_t live_windows_ = 0;
  uint64_t rows_stored_ = 0;
  uint64_t rows_expected_ = 0; ///< restore: the row count of the meta value
  uint64_t rows_restored_ = 0;
  uint32_t round_ = 1; ///< counts advance() and flush() calls, see fired::round

  std::vector<key_entry> keys_;
  std::vector<uint32_t> free_keys_;
  std::vector<table_entry> table_;
  size_t table_used_ = 0;
  std::string arena_;
  size_t arena_dead_ = 0;
  std::vector<heap_entry> heap_;

  std::vector<window> windows_;
  std::vector<timestamp> ends_; ///< sessions only
  std::vector<uint32_t> free_windows_;
  std::vector<double> acc_;
  std::vector<distinct_counter> distinct_;
  std::vector<quantile_sketch> quantiles_;
  std::vector<custom_block> custom_;      ///< custom accumulators, custom_width_ bytes per row
  std::vector<std::vector<fired>> fired_; ///< late = update: fired windows per key
  std::vector<uint32_t> free_fired_;

  // changes since the last checkpoint
  std::vector<uint32_t> changed_;      ///< window ids (may repeat; w_changed tells)
  std::vector<uint32_t> changed_keys_; ///< key slots with k_changed
  std::string deleted_;                ///< row keys to delete
  size_t deleted_count_ = 0;
  std::vector<uint32_t> dirty_keys_; ///< keys with k_dirty

  // results fired but not yet returned by advance()
  result_pack pending_;

  // scratch, reused between calls
  struct sort_entry {
    timestamp start;
    timestamp end;
    uint64_t prefix;
    uint32_t index;
  };
  std::vector<sort_entry> order_;
  std::vector<uint32_t> ids_;
  std::vector<double> combined_;
  std::vector<double> combined_values_;
  std::vector<distinct_counter> tmp_distinct_;
  std::vector<quantile_sketch> tmp_quantiles_;
  std::vector<custom_block> tmp_custom_;  ///< one row: a window combined from slices
  std::vector<custom_block> swap_custom_; ///< one accumulator: sessions merged earlier first
  mutable std::string row_;
  mutable std::string custom_bytes_;
};

} // namespace weir
