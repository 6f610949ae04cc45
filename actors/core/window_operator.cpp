#include "actors/core/window_operator.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <tuple>

#include "actors/core/error.hpp"

namespace weir {

namespace {

constexpr uint8_t meta_format = 2;
constexpr uint8_t snapshot_format = 2;
constexpr size_t initial_table = 64;
/// The row key of a key's fired windows (late = update): below every window start.
constexpr timestamp key_row_start = min_timestamp;

/// Window bounds near the ends of the time range must not wrap around.
timestamp sat_add(timestamp a, int64_t b) {
  timestamp r;
  if (__builtin_add_overflow(a, b, &r))
    return b > 0 ? max_timestamp : min_timestamp;
  return r;
}

using wide = __int128;

/// Floor division; b > 0. In 64 bits while a fits (every time the formats can express does),
/// in 128 bits otherwise, so that no configuration overflows.
wide floor_div(wide a, wide b) {
  constexpr wide lim = wide{1} << 62;
  if (a > -lim && a < lim && b < lim) {
    auto x = static_cast<int64_t>(a);
    auto y = static_cast<int64_t>(b);
    int64_t q = x / y;
    if ((x % y) != 0 && ((x < 0) != (y < 0)))
      --q;
    return q;
  }
  wide q = a / b;
  if ((a % b) != 0 && ((a < 0) != (b < 0)))
    --q;
  return q;
}

timestamp clamp(wide x) {
  if (x > max_timestamp)
    return max_timestamp;
  if (x < min_timestamp)
    return min_timestamp;
  return static_cast<timestamp>(x);
}

caf::error corrupt(const char* what) {
  return make_error(errc::store_corrupt, std::string{"window state: "} + what);
}

} // namespace

window_operator::window_operator(const pipeline_config& cfg)
  : win_(cfg.window)
  , agg_cfg_(cfg.aggregates) {
  fixed_ = win_.kind != window_kind::session;
  retain_ = fixed_ && win_.late == late_policy::update;
  if (fixed_) {
    step_ = win_.kind == window_kind::tumbling ? win_.size : win_.slide;
    slice_ = std::gcd(win_.size, step_);
  }
  binary::writer w{fingerprint_};
  w.u8(static_cast<uint8_t>(win_.kind));
  w.u8(static_cast<uint8_t>(win_.late));
  if (fixed_) {
    w.i64(win_.size);
    w.i64(step_);
    w.i64(win_.offset);
  } else {
    w.i64(win_.gap);
  }
  for (const auto& a : cfg.aggregates) {
    w.u8(static_cast<uint8_t>(a.fn));
    w.u8(a.fn == agg_fn::count && a.field.empty() ? 1 : 0);
    if (a.fn == agg_fn::custom) {
      w.bytes(a.custom_name);
      w.bytes(extension_options{a.options}.canonical());
    }
  }
  build_layout(cfg.aggregates);
  table_.resize(initial_table);
}

void window_operator::build_layout(const std::vector<aggregate_config>& aggs) {
  auto layout = make_layout(aggs);
  value_width_ = layout.value_width;
  hash_width_ = layout.hash_width;
  std::vector<std::string> fields; // the field of each cols_ entry
  auto alloc = [this](double init) {
    acc_init_.push_back(init);
    return static_cast<int32_t>(acc_width_++);
  };
  auto column = [&](size_t i) -> column_acc& {
    auto it = std::find(fields.begin(), fields.end(), aggs[i].field);
    if (it != fields.end())
      return cols_[static_cast<size_t>(it - fields.begin())];
    fields.push_back(aggs[i].field);
    cols_.push_back(column_acc{layout.value_col[i]});
    cols_.back().n = alloc(0.0);
    return cols_.back();
  };
  // The accumulator `member` of aggregate i's field (made once per field), with its count.
  auto shared = [&](size_t i, int32_t column_acc::*member, double init, agg_slot& s) {
    auto& c = column(i);
    if (c.*member < 0)
      c.*member = alloc(init);
    s.n = c.n;
    s.val = c.*member;
  };
  constexpr double inf = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < aggs.size(); ++i) {
    agg_slot s;
    s.fn = aggs[i].fn;
    s.q = aggs[i].q;
    s.value_col = layout.value_col[i];
    s.hash_col = layout.hash_col[i];
    switch (s.fn) {
      case agg_fn::count:
        if (aggs[i].field.empty()) {
          if (records_ < 0)
            records_ = alloc(0.0);
          s.n = records_;
        } else {
          s.n = column(i).n;
        }
        break;
      case agg_fn::sum:
      case agg_fn::avg:
        shared(i, &column_acc::sum, 0.0, s);
        break;
      case agg_fn::min:
        shared(i, &column_acc::min, inf, s);
        break;
      case agg_fn::max:
        shared(i, &column_acc::max, -inf, s);
        break;
      case agg_fn::distinct:
        s.sketch = static_cast<uint32_t>(distinct_width_++);
        break;
      case agg_fn::quantile:
        s.sketch = static_cast<uint32_t>(quantile_width_++);
        break;
      case agg_fn::custom:
        if (!aggs[i].custom || aggs[i].custom->state_size() == 0 ||
            aggs[i].custom->state_size() > max_aggregate_state)
          throw std::invalid_argument("window_operator: custom aggregate " + aggs[i].name +
                                      " without a function or with a state size out of range");
        s.sketch = static_cast<uint32_t>(customs_.size());
        customs_.push_back({aggs[i].custom.get(), custom_width_, s.value_col});
        custom_width_ += (aggs[i].custom->state_size() + sizeof(custom_block) - 1) /
                         sizeof(custom_block) * sizeof(custom_block);
        break;
    }
    aggs_.push_back(s);
  }
  combined_.resize(acc_width_);
  tmp_distinct_.resize(distinct_width_);
  tmp_quantiles_.resize(quantile_width_);
  tmp_custom_.resize(custom_width_ / sizeof(custom_block));
  swap_custom_.resize(max_aggregate_state / sizeof(custom_block) + 1);
}

void window_operator::init_custom(unsigned char* row) const {
  for (const auto& c : customs_)
    c.fn->init(row + c.offset);
}

// -- keys -----------------------------------------------------------------------------

size_t window_operator::home_of(uint64_t hash) const {
  // The hashes are meant to be well mixed, but a cheap multiply keeps probing short if not.
  uint64_t x = hash * 0x9e3779b97f4a7c15ull;
  return static_cast<size_t>(x ^ (x >> 32)) & (table_.size() - 1);
}

uint32_t window_operator::find_key(uint64_t hash, std::string_view bytes) const {
  const size_t mask = table_.size() - 1;
  const auto tag = static_cast<uint32_t>(hash >> 32);
  for (size_t i = home_of(hash);; i = (i + 1) & mask) {
    const auto& e = table_[i];
    if (e.slot == 0)
      return npos;
    if (e.tag == tag && keys_[e.slot - 1].hash == hash && key_bytes(e.slot - 1) == bytes)
      return e.slot - 1;
  }
}

uint32_t window_operator::intern_key(uint64_t hash, std::string_view bytes) {
  if (auto k = find_key(hash, bytes); k != npos)
    return k;
  uint32_t k;
  if (!free_keys_.empty()) {
    k = free_keys_.back();
    free_keys_.pop_back();
  } else {
    k = static_cast<uint32_t>(keys_.size());
    keys_.emplace_back();
  }
  auto& e = keys_[k];
  e.hash = hash;
  e.due = max_timestamp;
  e.off = static_cast<uint32_t>(arena_.size());
  e.len = static_cast<uint32_t>(bytes.size());
  e.head = npos;
  e.flags = k_live;
  e.fired = 0;
  arena_.append(bytes.data(), bytes.size());
  if ((table_used_ + 1) * 2 > table_.size())
    grow_table();
  const size_t mask = table_.size() - 1;
  size_t i = home_of(hash);
  while (table_[i].slot != 0)
    i = (i + 1) & mask;
  table_[i] = {static_cast<uint32_t>(hash >> 32), k + 1};
  ++table_used_;
  return k;
}

void window_operator::grow_table() {
  std::vector<table_entry> old(table_.size() * 2);
  old.swap(table_);
  const size_t mask = table_.size() - 1;
  for (const auto& e : old) {
    if (e.slot == 0)
      continue;
    size_t i = home_of(keys_[e.slot - 1].hash);
    while (table_[i].slot != 0)
      i = (i + 1) & mask;
    table_[i] = e;
  }
}

void window_operator::release_key(uint32_t k) {
  const size_t mask = table_.size() - 1;
  size_t i = home_of(keys_[k].hash);
  while (table_[i].slot != k + 1)
    i = (i + 1) & mask;
  // Backward-shift deletion: later entries of the probe run move up so that no lookup stops
  // early at the hole (no tombstones to accumulate).
  for (size_t j = i;;) {
    table_[i] = table_entry{};
    for (;;) {
      j = (j + 1) & mask;
      if (table_[j].slot == 0) {
        --table_used_;
        auto& e = keys_[k];
        arena_dead_ += e.len;
        e.len = 0;
        e.head = npos;
        e.due = max_timestamp;
        e.flags = 0;
        if (e.fired != 0) {
          fired_[e.fired - 1].clear();
          free_fired_.push_back(e.fired - 1);
          e.fired = 0;
        }
        free_keys_.push_back(k);
        if (arena_dead_ > (size_t{1} << 16) && arena_dead_ * 2 > arena_.size())
          compact_arena();
        return;
      }
      size_t home = home_of(keys_[table_[j].slot - 1].hash);
      // The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
      if (((j - home) & mask) >= ((j - i) & mask))
        break;
    }
    table_[i] = table_[j];
    i = j;
  }
}

/// Copies the live keys' bytes into a new arena, so that released keys give their memory back.
void window_operator::compact_arena() {
  std::string fresh;
  fresh.reserve(arena_.size() - arena_dead_);
  for (auto& e : keys_) {
    if (!(e.flags & k_live))
      continue;
    auto off = static_cast<uint32_t>(fresh.size());
    fresh.append(arena_, e.off, e.len);
    e.off = off;
  }
  arena_.swap(fresh);
  arena_.shrink_to_fit();
  arena_dead_ = 0;
}

/// Makes sure key k is looked at by the watermark `due` (keys have one live heap entry, the
/// earliest; later ones are found when it pops).
void window_operator::schedule(uint32_t k, timestamp due) {
  auto& e = keys_[k];
  if (due >= e.due)
    return;
  e.due = due;
  heap_.push_back({due, k});
  std::push_heap(heap_.begin(), heap_.end(),
                 [](const heap_entry& x, const heap_entry& y) { return x.due > y.due; });
}

void window_operator::mark_key(uint32_t k, uint32_t flag) {
  auto& e = keys_[k];
  if (e.flags & flag)
    return;
  e.flags |= flag;
  if (flag == k_changed)
    changed_keys_.push_back(k);
  else if (flag == k_dirty)
    dirty_keys_.push_back(k);
}

std::vector<window_operator::fired>& window_operator::fired_of(uint32_t k) {
  auto& e = keys_[k];
  if (e.fired == 0) {
    if (!free_fired_.empty()) {
      e.fired = free_fired_.back() + 1;
      free_fired_.pop_back();
    } else {
      fired_.emplace_back();
      e.fired = static_cast<uint32_t>(fired_.size());
    }
  }
  return fired_[e.fired - 1];
}

/// Releases key k once it holds nothing; its stored per-key row goes with it.
void window_operator::drop_key_if_empty(uint32_t k) {
  auto& e = keys_[k];
  if (e.head != npos || (e.fired != 0 && !fired_[e.fired - 1].empty()))
    return;
  if (e.flags & k_stored) {
    note_deleted(key_row_start, k);
    --rows_stored_;
  }
  release_key(k);
}

// -- windows -------------------------------------------------------------------------

uint32_t window_operator::new_window(uint32_t k, timestamp start) {
  uint32_t id;
  if (!free_windows_.empty()) {
    id = free_windows_.back();
    free_windows_.pop_back();
  } else {
    id = static_cast<uint32_t>(windows_.size());
    windows_.emplace_back();
    acc_.resize(acc_.size() + acc_width_);
    distinct_.resize(distinct_.size() + distinct_width_);
    quantiles_.resize(quantiles_.size() + quantile_width_);
    custom_.resize(custom_.size() + custom_width_ / sizeof(custom_block));
    if (!fixed_)
      ends_.push_back(0);
  }
  windows_[id] = window{start, k, npos, 0};
  std::copy(acc_init_.begin(), acc_init_.end(), acc_.begin() + id * acc_width_);
  init_custom(custom_row(id));
  ++live_windows_;
  touch(id);
  return id;
}

void window_operator::touch(uint32_t id) {
  auto& w = windows_[id];
  if (w.flags & w_changed)
    return;
  w.flags |= w_changed;
  changed_.push_back(id);
}

/// Frees a window its key no longer links to; a stored row of it is deleted.
void window_operator::free_window(uint32_t id) {
  auto& w = windows_[id];
  if (w.flags & w_stored) {
    note_deleted(w.start, w.key);
    --rows_stored_;
  }
  w.flags = 0;
  for (size_t i = 0; i < distinct_width_; ++i)
    distinct_[id * distinct_width_ + i].clear();
  for (size_t i = 0; i < quantile_width_; ++i)
    quantiles_[id * quantile_width_ + i].clear();
  free_windows_.push_back(id);
  --live_windows_;
}

/// The slice of key k that starts at `start`, opened when missing (the list is sorted by start,
/// newest first, so in-order input finds or opens it at the head).
uint32_t window_operator::find_or_open(uint32_t k, timestamp start) {
  uint32_t prev = npos;
  uint32_t cur = keys_[k].head;
  while (cur != npos && windows_[cur].start > start) {
    prev = cur;
    cur = windows_[cur].next;
  }
  if (cur != npos && windows_[cur].start == start)
    return cur;
  uint32_t id = new_window(k, start);
  windows_[id].next = cur;
  if (prev == npos)
    keys_[k].head = id;
  else
    windows_[prev].next = id;
  return id;
}

void window_operator::add_record(uint32_t id, const event_view& b, size_t r) {
  double* a = acc_.data() + id * acc_width_;
  if (records_ >= 0)
    a[records_] += 1;
  const double* v = value_width_ > 0 ? b.values + r * value_width_ : nullptr;
  for (const auto& c : cols_) {
    const double x = v[c.value_col];
    if (std::isnan(x))
      continue;
    a[c.n] += 1;
    if (c.sum >= 0)
      a[c.sum] += x;
    if (c.min >= 0 && x < a[c.min])
      a[c.min] = x;
    if (c.max >= 0 && x > a[c.max])
      a[c.max] = x;
  }
  if (!customs_.empty()) {
    unsigned char* row = custom_row(id);
    for (const auto& c : customs_)
      if (!std::isnan(v[c.value_col]))
        c.fn->add(row + c.offset, v[c.value_col], b.time[r]);
  }
  if (distinct_width_ + quantile_width_ == 0)
    return;
  for (const auto& s : aggs_) {
    if (s.fn == agg_fn::distinct)
      distinct_[id * distinct_width_ + s.sketch].add(b.hashes[r * hash_width_ + s.hash_col]);
    else if (s.fn == agg_fn::quantile)
      quantiles_[id * quantile_width_ + s.sketch].add(v[s.value_col]);
  }
}

void window_operator::merge_session_custom(uint32_t into, uint32_t from) {
  unsigned char* a = custom_row(into);
  const unsigned char* b = custom_row(from);
  const bool earlier = windows_[from].start < windows_[into].start;
  auto* tmp = reinterpret_cast<unsigned char*>(swap_custom_.data());
  for (const auto& c : customs_) {
    if (!earlier) {
      c.fn->merge(a + c.offset, b + c.offset);
      continue;
    }
    // `from` holds the earlier records: it is the one merged into, then takes into's place.
    const size_t n = c.fn->state_size();
    std::memcpy(tmp, b + c.offset, n);
    c.fn->merge(tmp, a + c.offset);
    std::memcpy(a + c.offset, tmp, n);
  }
}

void window_operator::merge_into(double* into, distinct_counter* d, quantile_sketch* q,
                                 unsigned char* c, uint32_t from) {
  const double* f = acc_.data() + from * acc_width_;
  if (records_ >= 0)
    into[records_] += f[records_];
  for (const auto& c : cols_) {
    into[c.n] += f[c.n];
    if (c.sum >= 0)
      into[c.sum] += f[c.sum];
    if (c.min >= 0)
      into[c.min] = std::min(into[c.min], f[c.min]);
    if (c.max >= 0)
      into[c.max] = std::max(into[c.max], f[c.max]);
  }
  for (size_t i = 0; i < distinct_width_; ++i)
    d[i].merge(distinct_[from * distinct_width_ + i]);
  for (size_t i = 0; i < quantile_width_; ++i)
    q[i].merge(quantiles_[from * quantile_width_ + i]);
  if (c != nullptr)
    for (const auto& x : customs_)
      x.fn->merge(c + x.offset, custom_row(from) + x.offset);
}

void window_operator::fill_window(uint32_t id) {
  fill_values(acc_.data() + id * acc_width_, distinct_.data() + id * distinct_width_,
              quantiles_.data() + id * quantile_width_, custom_row(id), combined_values_);
}

void window_operator::fill_values(const double* a, const distinct_counter* d,
                                  const quantile_sketch* q, const unsigned char* c,
                                  std::vector<double>& values) const {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  values.resize(aggs_.size());
  for (size_t i = 0; i < aggs_.size(); ++i) {
    const auto& s = aggs_[i];
    switch (s.fn) {
      case agg_fn::count:
        values[i] = a[s.n];
        break;
      case agg_fn::sum:
      case agg_fn::min:
      case agg_fn::max:
        values[i] = a[s.n] > 0 ? a[s.val] : nan;
        break;
      case agg_fn::avg:
        values[i] = a[s.n] > 0 ? a[s.val] / a[s.n] : nan;
        break;
      case agg_fn::distinct:
        values[i] = d[s.sketch].estimate();
        break;
      case agg_fn::quantile:
        values[i] = q[s.sketch].quantile(s.q);
        break;
      case agg_fn::custom:
        values[i] = customs_[s.sketch].fn->result(c + customs_[s.sketch].offset);
        break;
    }
  }
}

// -- the grid of tumbling and sliding windows ----------------------------------------

/// offset + floor((x - sub - offset) / step) * step + add, with `extra` steps more, in 64 bits
/// when nothing overflows (every time of an ordinary configuration), else false.
bool grid64(int64_t x, int64_t sub, int64_t offset, int64_t step, int64_t extra, int64_t add,
            int64_t& out) {
  int64_t a;
  if (__builtin_sub_overflow(x, sub, &a) || __builtin_sub_overflow(a, offset, &a))
    return false;
  int64_t q = a / step;
  if (a % step != 0 && a < 0)
    --q;
  int64_t r;
  if (__builtin_add_overflow(q, extra, &q) || __builtin_mul_overflow(q, step, &r) ||
      __builtin_add_overflow(r, offset, &r) || __builtin_add_overflow(r, add, &r))
    return false;
  out = r;
  return true;
}

timestamp window_operator::slice_of(timestamp t) const {
  if (int64_t r; grid64(t, 0, win_.offset, slice_, 0, 0, r))
    return r;
  return clamp(win_.offset + floor_div(wide{t} - win_.offset, slice_) * slice_);
}

// Note: the divisions above are 128-bit where 64 bits could overflow, so that no configuration
// can overflow them; process() calls them once per slice change, not per record.

/// The end of the first window that holds slice s.
timestamp window_operator::first_end(timestamp s) const {
  if (int64_t r; grid64(s, win_.size, win_.offset, step_, 1, win_.size, r))
    return r;
  wide k = floor_div(wide{s} - win_.size - win_.offset, step_) + 1;
  return clamp(win_.offset + k * step_ + win_.size);
}

/// The end of the last window that holds slice s.
timestamp window_operator::last_end(timestamp s) const {
  if (int64_t r; grid64(s, 0, win_.offset, step_, 0, win_.size, r))
    return r;
  wide k = floor_div(wide{s} - win_.offset, step_);
  return clamp(win_.offset + k * step_ + win_.size);
}

/// The largest window end e with e + allowed_lateness <= w (min_timestamp when none).
timestamp window_operator::grid_end_below(timestamp w) const {
  if (w == min_timestamp)
    return min_timestamp;
  wide k = floor_div(wide{w} - win_.allowed_lateness - win_.size - win_.offset, step_);
  return clamp(win_.offset + k * step_ + win_.size);
}

/// ids_ = the slices of key k, oldest first.
void window_operator::collect_slices(uint32_t k) {
  ids_.clear();
  for (uint32_t id = keys_[k].head; id != npos; id = windows_[id].next)
    ids_.push_back(id);
  if (fixed_)
    std::reverse(ids_.begin(), ids_.end());
}

// -- processing ---------------------------------------------------------------------

void window_operator::process(const event_view& b) {
  if (b.n == 0)
    return;
  if (b.value_width != value_width_ || b.hash_width != hash_width_)
    throw std::invalid_argument("window_operator: batch layout does not match the aggregates");
  if (fixed_)
    process_fixed(b);
  else
    process_session(b);
}

/// Moves the watermark to a record's wm_before, firing what that makes due first, so that the
/// record only reaches windows that are still open for it.
void window_operator::catch_up(timestamp wm_before) {
  if (wm_before > watermark_)
    move_to(wm_before);
}

void window_operator::move_to(timestamp w) {
  watermark_ = std::max(watermark_, w);
  if (!heap_.empty() && heap_.front().due <= watermark_)
    fire(watermark_);
  else if (fixed_ && watermark_ >= next_grid_)
    set_fired_through(std::max(fired_through_, grid_end_below(watermark_)));
}

/// fired_through_, and the watermark at which it moves next (saves a division per record).
void window_operator::set_fired_through(timestamp e) {
  fired_through_ = e;
  next_grid_ =
    e == min_timestamp ? min_timestamp : sat_add(sat_add(e, step_), win_.allowed_lateness);
}

void window_operator::process_fixed(const event_view& b) {
  const int64_t lateness = win_.allowed_lateness;
  // The slice of the previous record and its window ends: consecutive records mostly share it.
  timestamp s = 0;
  timestamp s_end = min_timestamp;
  timestamp first = 0;
  timestamp last = 0;
  for (size_t r = 0; r < b.n; ++r) {
    catch_up(b.wm_before[r]);
    const timestamp w = watermark_;
    const timestamp t = b.time[r];
    if (t < s || t >= s_end) {
      s = slice_of(t);
      s_end = sat_add(s, slice_);
      first = first_end(s);
      last = last_end(s);
    }
    if (w >= sat_add(last, lateness)) {
      // Late for every window of the slice: with late = update, within the horizon, the slice
      // takes it and the fired windows it belongs to are emitted again.
      if (!retain_ || w >= sat_add(sat_add(last, lateness), win_.update_horizon))
        continue;
    }
    const uint32_t k = intern_key(b.key_hash[r], b.key(r));
    const uint32_t id = find_or_open(k, s);
    add_record(id, b, r);
    touch(id);
    if (retain_ && first <= fired_through_)
      mark_fired_dirty(k, s);
    if (last > fired_through_) {
      timestamp next =
        fired_through_ == min_timestamp ? first : std::max(first, sat_add(fired_through_, step_));
      schedule(k, sat_add(next, lateness));
    } else {
      schedule(k, sat_add(sat_add(last, lateness), win_.update_horizon));
    }
  }
}

/// late = update: the windows of slice s that have fired (end <= fired_through_) and are still
/// within the horizon get the record that was just added to s: each is emitted again (or, if it
/// never was, for the first time) at the next advance().
void window_operator::mark_fired_dirty(uint32_t k, timestamp s) {
  const timestamp last = std::min(last_end(s), fired_through_);
  auto& list = fired_of(k);
  bool any = false;
  for (timestamp e = first_end(s); e <= last; e += step_) {
    // Gone windows (past the horizon) are skipped.
    if (watermark_ < sat_add(sat_add(e, win_.allowed_lateness), win_.update_horizon)) {
      auto it = std::lower_bound(list.begin(), list.end(), e,
                                 [](const fired& f, timestamp x) { return f.end < x; });
      if (it == list.end() || it->end != e)
        it = list.insert(it, fired{e, 0, false, 0, 0});
      it->dirty = true;
      any = true;
    }
    if (wide{last} - e < step_)
      break; // no overflow near the end of time
  }
  if (any) {
    mark_key(k, k_dirty);
    mark_key(k, k_changed);
  }
}

void window_operator::process_session(const event_view& b) {
  const int64_t gap = win_.gap;
  const int64_t lateness = win_.allowed_lateness;
  for (size_t r = 0; r < b.n; ++r) {
    catch_up(b.wm_before[r]);
    const timestamp w = watermark_;
    const timestamp t = b.time[r];
    const timestamp t_end = sat_add(t, gap);
    if (w >= sat_add(t_end, lateness))
      continue;
    const uint32_t k = intern_key(b.key_hash[r], b.key(r));
    // Sessions that fired by w are gone already (catch_up), so every session left is open.
    uint32_t target = npos;
    timestamp old_start = 0;
    uint32_t prev = npos;
    for (uint32_t id = keys_[k].head; id != npos;) {
      const uint32_t next = windows_[id].next;
      auto& s = windows_[id];
      if (s.start > t_end || t > ends_[id]) {
        prev = id;
        id = next;
        continue;
      }
      if (target == npos) {
        target = id;
        old_start = s.start;
        prev = id;
        id = next;
        continue;
      }
      merge_into(acc_.data() + target * acc_width_, distinct_.data() + target * distinct_width_,
                 quantiles_.data() + target * quantile_width_, nullptr, id);
      merge_session_custom(target, id);
      windows_[target].start = std::min(windows_[target].start, s.start);
      ends_[target] = std::max(ends_[target], ends_[id]);
      windows_[prev].next = next; // prev is never npos here: target came before
      free_window(id);
      id = next;
    }
    if (target == npos) {
      target = new_window(k, t);
      ends_[target] = t_end;
      windows_[target].next = keys_[k].head;
      keys_[k].head = target;
    } else {
      auto& s = windows_[target];
      s.start = std::min(s.start, t);
      ends_[target] = std::max(ends_[target], t_end);
      if (s.start != old_start && (s.flags & w_stored)) {
        // Rows are keyed by start: the old one goes.
        note_deleted(old_start, k);
        s.flags &= ~w_stored;
        --rows_stored_;
      }
    }
    add_record(target, b, r);
    touch(target);
    schedule(k, sat_add(ends_[target], lateness));
  }
}

// -- firing --------------------------------------------------------------------------

/// Looks at every key due by w: fires its windows, drops what expired, finds its next due time.
void window_operator::fire(timestamp w) {
  const timestamp lo = fired_through_;
  const timestamp hi = fixed_ ? std::max(lo, grid_end_below(w)) : min_timestamp;
  // Set first: the next due time of a key is reckoned from it.
  if (fixed_)
    set_fired_through(hi);
  auto later = [](const heap_entry& x, const heap_entry& y) { return x.due > y.due; };
  while (!heap_.empty() && heap_.front().due <= w) {
    std::pop_heap(heap_.begin(), heap_.end(), later);
    const heap_entry e = heap_.back();
    heap_.pop_back();
    auto& key = keys_[e.key];
    if (!(key.flags & k_live) || key.due != e.due)
      continue; // stale: the key was released, or has an earlier entry that was handled
    key.due = max_timestamp;
    if (fixed_)
      fire_fixed_key(e.key, lo, hi, w);
    else
      fire_session_key(e.key, w);
  }
}

/// Emits the windows of key k with end in (lo, hi] that hold a slice of it, then drops the
/// slices (and retained fired windows) that expired by w.
void window_operator::fire_fixed_key(uint32_t k, timestamp lo, timestamp hi, timestamp w) {
  // Dirty windows are emitted before anything of the key expires.
  if (keys_[k].flags & k_dirty)
    emit_dirty(k);
  collect_slices(k);
  const size_t n = ids_.size();
  auto start = [this](size_t i) { return windows_[ids_[i]].start; };
  if (n > 0 && hi != min_timestamp) {
    timestamp e = first_end(start(0));
    if (lo != min_timestamp)
      e = std::max(e, sat_add(lo, step_));
    size_t a = 0;
    size_t b = 0;
    while (e <= hi) {
      const timestamp ws = sat_add(e, -win_.size);
      while (a < n && start(a) < ws)
        ++a;
      if (a == n)
        break;
      if (start(a) >= e) {
        e = std::max(sat_add(e, step_), first_end(start(a)));
        continue;
      }
      b = std::max(b, a);
      while (b < n && start(b) < e)
        ++b;
      combine_slices(a, b);
      uint32_t at = emit_values(k, sat_add(e, -win_.size), e, 1);
      if (retain_) {
        fired_of(k).push_back(fired{e, 1, false, at, round_});
        mark_key(k, k_changed);
      }
      if (wide{hi} - e < step_)
        break; // the last end up to hi (and no overflow near the end of time)
      e += step_;
    }
  }
  // Drop the slices whose windows have all fired (and, retained, passed the horizon): the
  // oldest ones, a prefix of ids_ and the tail of the key's list.
  const int64_t keep = win_.allowed_lateness + (retain_ ? win_.update_horizon : 0);
  size_t dropped = 0;
  while (dropped < n && sat_add(last_end(start(dropped)), keep) <= w)
    ++dropped;
  if (dropped > 0) {
    if (dropped == n)
      keys_[k].head = npos;
    else
      windows_[ids_[dropped]].next = npos;
    for (size_t i = 0; i < dropped; ++i)
      free_window(ids_[i]);
  }
  if (retain_ && keys_[k].fired != 0) {
    auto& list = fired_[keys_[k].fired - 1];
    auto gone = std::find_if(list.begin(), list.end(), [&](const fired& f) {
      return sat_add(sat_add(f.end, win_.allowed_lateness), win_.update_horizon) > w;
    });
    if (gone != list.begin()) {
      list.erase(list.begin(), gone);
      mark_key(k, k_changed);
    }
  }
  auto next = next_due_fixed(k, ids_.data() + dropped, n - dropped);
  if (next == max_timestamp)
    drop_key_if_empty(k);
  else
    schedule(k, next);
}

/// When key k next needs a look, given fired_through_ (a fired window that will never be
/// emitted, a slice that will expire, a retained window that will pass the horizon).
timestamp window_operator::next_due_fixed(uint32_t k, const uint32_t* ids, size_t n) const {
  const int64_t lateness = win_.allowed_lateness;
  timestamp next = max_timestamp;
  // Window ends grow with the slice start: the oldest slice with a window left decides.
  for (size_t i = 0; i < n; ++i) {
    const timestamp s = windows_[ids[i]].start;
    const timestamp last = last_end(s);
    if (retain_ && i == 0)
      next = std::min(next, sat_add(sat_add(last, lateness), win_.update_horizon));
    if (last > fired_through_) {
      timestamp e = first_end(s);
      if (fired_through_ != min_timestamp)
        e = std::max(e, sat_add(fired_through_, step_));
      next = std::min(next, sat_add(e, lateness));
      break;
    }
  }
  if (retain_ && keys_[k].fired != 0 && !fired_[keys_[k].fired - 1].empty())
    next = std::min(next, sat_add(sat_add(fired_[keys_[k].fired - 1].front().end, lateness),
                                  win_.update_horizon));
  return next;
}

timestamp window_operator::next_due_session(uint32_t k) const {
  timestamp next = max_timestamp;
  for (uint32_t id = keys_[k].head; id != npos; id = windows_[id].next)
    next = std::min(next, sat_add(ends_[id], win_.allowed_lateness));
  return next;
}

void window_operator::fire_session_key(uint32_t k, timestamp w) {
  const int64_t lateness = win_.allowed_lateness;
  uint32_t prev = npos;
  for (uint32_t id = keys_[k].head; id != npos;) {
    const uint32_t next = windows_[id].next;
    if (sat_add(ends_[id], lateness) <= w) {
      fill_window(id);
      emit_values(k, windows_[id].start, ends_[id], 1);
      if (prev == npos)
        keys_[k].head = next;
      else
        windows_[prev].next = next;
      free_window(id);
    } else {
      prev = id;
    }
    id = next;
  }
  auto next = next_due_session(k);
  if (next == max_timestamp)
    drop_key_if_empty(k);
  else
    schedule(k, next);
}

void window_operator::combine_slices(size_t a, size_t b) {
  if (b - a == 1) {
    fill_window(ids_[a]);
    return;
  }
  std::copy(acc_init_.begin(), acc_init_.end(), combined_.begin());
  for (auto& d : tmp_distinct_)
    d.clear();
  for (auto& q : tmp_quantiles_)
    q.clear();
  auto* c = reinterpret_cast<unsigned char*>(tmp_custom_.data());
  init_custom(c);
  // Oldest slice first: ids_ is in start order.
  for (size_t i = a; i < b; ++i)
    merge_into(combined_.data(), tmp_distinct_.data(), tmp_quantiles_.data(), c, ids_[i]);
  fill_values(combined_.data(), tmp_distinct_.data(), tmp_quantiles_.data(), c, combined_values_);
}

uint32_t window_operator::emit_values(uint32_t k, timestamp start, timestamp end,
                                      uint32_t version) {
  pending_.add(key_bytes(k), start, end, version, combined_values_.data(), combined_values_.size());
  return static_cast<uint32_t>(pending_.size() - 1);
}

/// late = update: emits the dirty fired windows of key k again, from the slices it holds; a
/// window whose last emission has not been returned yet is updated in place instead.
void window_operator::emit_dirty(uint32_t k) {
  auto& key = keys_[k];
  key.flags &= ~k_dirty;
  if (key.fired == 0)
    return;
  collect_slices(k);
  auto start = [this](size_t i) { return windows_[ids_[i]].start; };
  for (auto& f : fired_[key.fired - 1]) {
    if (!f.dirty)
      continue;
    f.dirty = false;
    const timestamp ws = sat_add(f.end, -win_.size);
    size_t a = 0;
    while (a < ids_.size() && start(a) < ws)
      ++a;
    size_t b = a;
    while (b < ids_.size() && start(b) < f.end)
      ++b;
    if (a == b)
      continue; // nothing left of it (cannot happen within the horizon)
    combine_slices(a, b);
    if (f.version > 0 && f.round == round_) {
      pending_.update(f.pending, f.version, combined_values_.data(), combined_values_.size());
    } else {
      ++f.version;
      f.pending = emit_values(k, ws, f.end, f.version);
      f.round = round_;
    }
  }
  mark_key(k, k_changed);
}

void window_operator::sort_pending() {
  // Sorts small entries rather than the results: (start, end, the key's first 8 bytes) decide
  // without touching the key most of the time.
  order_.resize(pending_.size());
  for (size_t i = 0; i < pending_.size(); ++i) {
    const auto r = pending_[i];
    uint64_t prefix = 0;
    for (size_t j = 0; j < 8; ++j)
      prefix = (prefix << 8) | (j < r.key.size() ? static_cast<uint8_t>(r.key[j]) : 0);
    order_[i] = {r.start, r.end, prefix, static_cast<uint32_t>(i)};
  }
  auto by_key = [this](const sort_entry& x, const sort_entry& y) {
    if (x.prefix != y.prefix)
      return x.prefix < y.prefix;
    return pending_[x.index].key < pending_[y.index].key;
  };
  auto by_window = [](const sort_entry& x, const sort_entry& y) {
    return x.start != y.start ? x.start < y.start : x.end < y.end;
  };
  // Windows fire in due-time order, so the windows usually come in order already and only the
  // keys of each window need sorting: sort those groups alone (n log(keys) instead of n log n).
  if (std::is_sorted(order_.begin(), order_.end(), by_window)) {
    for (auto a = order_.begin(); a != order_.end();) {
      auto b = a + 1;
      while (b != order_.end() && b->start == a->start && b->end == a->end)
        ++b;
      std::sort(a, b, by_key);
      a = b;
    }
    return;
  }
  std::sort(order_.begin(), order_.end(), [&](const sort_entry& x, const sort_entry& y) {
    if (x.start != y.start || x.end != y.end)
      return by_window(x, y);
    return by_key(x, y);
  });
}

void window_operator::take_pending(result_pack& out) {
  sort_pending();
  out.reserve(out.size() + pending_.size(), out.bytes().size() + pending_.bytes().size());
  for (const auto& e : order_)
    out.add(pending_, e.index);
  pending_.clear();
  ++round_;
}

void window_operator::take_pending(std::vector<window_result>& out) {
  sort_pending();
  out.reserve(out.size() + pending_.size());
  for (const auto& e : order_)
    out.push_back(pending_[e.index]);
  pending_.clear();
  ++round_;
}

void window_operator::prepare(timestamp watermark) {
  move_to(watermark);
  for (uint32_t k : dirty_keys_)
    if ((keys_[k].flags & (k_live | k_dirty)) == (k_live | k_dirty))
      emit_dirty(k);
  dirty_keys_.clear();
}

void window_operator::advance(timestamp watermark, result_pack& out) {
  prepare(watermark);
  take_pending(out);
}

void window_operator::advance(timestamp watermark, std::vector<window_result>& out) {
  prepare(watermark);
  take_pending(out);
}

timestamp window_operator::flush_watermark() const {
  // The watermark that fires everything: the latest due time of a window not fired yet.
  timestamp all = watermark_;
  for (uint32_t k = 0; k < keys_.size(); ++k) {
    if (!(keys_[k].flags & k_live))
      continue;
    for (uint32_t id = keys_[k].head; id != npos; id = windows_[id].next) {
      timestamp end = fixed_ ? last_end(windows_[id].start) : ends_[id];
      if (!fixed_ || end > fired_through_)
        all = std::max(all, sat_add(end, win_.allowed_lateness));
    }
  }
  return all;
}

timestamp window_operator::flush(result_pack& out) {
  advance(flush_watermark(), out);
  return watermark_;
}

timestamp window_operator::flush(std::vector<window_result>& out) {
  advance(flush_watermark(), out);
  return watermark_;
}

// -- state rows ----------------------------------------------------------------------

void window_operator::write_row_key(std::string& out, timestamp start, uint32_t k) const {
  binary::writer w{out};
  const auto key = key_bytes(k);
  w.varint(8 + key.size());
  char b[8];
  codec::put_be64_signed(b, start);
  out.append(b, 8);
  out.append(key.data(), key.size());
}

void window_operator::note_deleted(timestamp start, uint32_t k) {
  write_row_key(deleted_, start, k);
  ++deleted_count_;
}

void window_operator::encode_window(std::string& out, uint32_t id) const {
  row_.clear();
  binary::writer w{row_};
  w.u64(keys_[windows_[id].key].hash);
  if (!fixed_)
    w.i64(ends_[id]);
  for (size_t i = 0; i < acc_width_; ++i)
    w.f64(acc_[id * acc_width_ + i]);
  for (size_t i = 0; i < distinct_width_; ++i)
    distinct_[id * distinct_width_ + i].serialize(row_);
  for (size_t i = 0; i < quantile_width_; ++i)
    quantiles_[id * quantile_width_ + i].serialize(row_);
  for (const auto& c : customs_) {
    custom_bytes_.clear();
    c.fn->serialize(custom_row(id) + c.offset, custom_bytes_);
    w.bytes(custom_bytes_);
  }
  binary::writer{out}.bytes(row_);
}

void window_operator::encode_key_row(std::string& out, uint32_t k) const {
  row_.clear();
  binary::writer w{row_};
  w.u64(keys_[k].hash);
  const auto& list = fired_[keys_[k].fired - 1];
  w.varint(list.size());
  for (const auto& f : list) {
    w.i64(f.end);
    w.varint(f.version);
    w.u8(f.dirty ? 1 : 0);
  }
  binary::writer{out}.bytes(row_);
}

std::string window_operator::encode_meta(uint64_t rows) const {
  std::string out;
  binary::writer w{out};
  w.u8(meta_format);
  w.bytes(fingerprint_);
  w.i64(watermark_);
  w.varint(rows);
  return out;
}

namespace {

/// Rewrites packed rows (state_rows.hpp; `with_value`: puts, else deletes) in row-key order, so
/// that the store writes them one page after the other.
void sort_rows(std::string& rows, bool with_value, std::string& scratch) {
  // Sorted as small entries: the first 16 bytes of the row key (the window start, then the
  // key's first 8 bytes) as two numbers decide without a memcmp most of the time. Zero padding
  // keeps their order that of the bytes; a tie compares the whole keys.
  struct entry {
    uint64_t p0, p1;
    std::string_view k, v;
  };
  auto prefix = [](std::string_view k, size_t at) {
    char b[8] = {};
    if (k.size() > at)
      std::memcpy(b, k.data() + at, std::min<size_t>(8, k.size() - at));
    return codec::get_be64(b);
  };
  std::vector<entry> entries;
  auto add = [&](std::string_view k, std::string_view v) {
    entries.push_back({prefix(k, 0), prefix(k, 8), k, v});
  };
  if (with_value)
    for_each_row(rows, add);
  else
    for_each_key(rows, [&](std::string_view k) { add(k, {}); });
  auto by_key = [](const entry& x, const entry& y) {
    if (x.p0 != y.p0)
      return x.p0 < y.p0;
    if (x.p1 != y.p1)
      return x.p1 < y.p1;
    return x.k < y.k;
  };
  if (std::is_sorted(entries.begin(), entries.end(), by_key))
    return;
  std::sort(entries.begin(), entries.end(), by_key);
  scratch.clear();
  scratch.reserve(rows.size());
  binary::writer w{scratch};
  for (const auto& e : entries) {
    w.bytes(e.k);
    if (with_value)
      w.bytes(e.v);
  }
  rows.swap(scratch);
}

} // namespace

void window_operator::checkpoint(state_delta& out) {
  out.clear();
  for (uint32_t id : changed_) {
    auto& w = windows_[id];
    if (!(w.flags & w_changed))
      continue; // freed since, or already written
    w.flags &= ~w_changed;
    if (!(w.flags & w_stored)) {
      w.flags |= w_stored;
      ++rows_stored_;
    }
    write_row_key(out.puts, w.start, w.key);
    encode_window(out.puts, id);
    ++out.put_count;
  }
  changed_.clear();
  for (uint32_t k : changed_keys_) {
    auto& key = keys_[k];
    if ((key.flags & (k_live | k_changed)) != (k_live | k_changed))
      continue;
    key.flags &= ~k_changed;
    const bool any = key.fired != 0 && !fired_[key.fired - 1].empty();
    if (any) {
      if (!(key.flags & k_stored)) {
        key.flags |= k_stored;
        ++rows_stored_;
      }
      write_row_key(out.puts, key_row_start, k);
      encode_key_row(out.puts, k);
      ++out.put_count;
    } else if (key.flags & k_stored) {
      key.flags &= ~k_stored;
      --rows_stored_;
      note_deleted(key_row_start, k);
    }
  }
  changed_keys_.clear();
  out.dels.swap(deleted_);
  deleted_.clear();
  out.del_count = deleted_count_;
  deleted_count_ = 0;
  sort_rows(out.puts, true, row_);
  sort_rows(out.dels, false, row_);
  out.meta = encode_meta(rows_stored_);
}

void window_operator::discard_changes() {
  for (uint32_t id : changed_)
    windows_[id].flags &= ~w_changed;
  changed_.clear();
  for (uint32_t k : changed_keys_)
    keys_[k].flags &= ~k_changed;
  changed_keys_.clear();
  deleted_.clear();
  deleted_count_ = 0;
}

std::string window_operator::snapshot() const {
  std::string rows;
  uint64_t n = 0;
  for (uint32_t k = 0; k < keys_.size(); ++k) {
    const auto& key = keys_[k];
    if (!(key.flags & k_live))
      continue;
    for (uint32_t id = key.head; id != npos; id = windows_[id].next) {
      write_row_key(rows, windows_[id].start, k);
      encode_window(rows, id);
      ++n;
    }
    if (key.fired != 0 && !fired_[key.fired - 1].empty()) {
      write_row_key(rows, key_row_start, k);
      encode_key_row(rows, k);
      ++n;
    }
  }
  std::string out;
  binary::writer w{out};
  w.u8(snapshot_format);
  w.bytes(encode_meta(n));
  out += rows;
  return out;
}

std::string window_operator::snapshot_of(std::string_view meta) {
  std::string out;
  binary::writer w{out};
  w.u8(snapshot_format);
  w.bytes(meta);
  return out;
}

void window_operator::append_row(std::string& snapshot, std::string_view row_key,
                                 std::string_view value) {
  binary::writer w{snapshot};
  w.bytes(row_key);
  w.bytes(value);
}

caf::error window_operator::restore(std::string_view bytes) {
  pipeline_config cfg;
  cfg.window = win_;
  cfg.aggregates = agg_cfg_;
  window_operator tmp{cfg};
  binary::reader in{bytes};
  if (in.u8() != snapshot_format)
    return corrupt("unknown snapshot format");
  auto meta = in.bytes();
  if (!in.ok())
    return corrupt("truncated");
  if (auto err = tmp.restore_begin(meta))
    return err;
  caf::error failed;
  bool well_formed = for_each_row(bytes.substr(bytes.size() - in.remaining()),
                                  [&](std::string_view k, std::string_view v) {
                                    if (!failed)
                                      failed = tmp.restore_row(k, v);
                                  });
  if (failed)
    return failed;
  if (!well_formed)
    return corrupt("truncated row");
  if (auto err = tmp.restore_end())
    return err;
  *this = std::move(tmp);
  return {};
}

caf::error window_operator::restore_begin(std::string_view meta) {
  binary::reader in{meta};
  if (in.u8() != meta_format)
    return corrupt("unknown format version");
  auto fp = in.bytes();
  if (!in.ok() || fp != fingerprint_)
    return corrupt("taken with another window or aggregate configuration");
  watermark_ = in.i64();
  rows_expected_ = in.varint();
  if (!in.ok() || in.remaining() != 0)
    return corrupt("bad meta value");
  if (fixed_)
    set_fired_through(grid_end_below(watermark_));
  return {};
}

caf::error window_operator::restore_row(std::string_view row_key, std::string_view value) {
  if (row_key.size() < 8)
    return corrupt("short row key");
  const timestamp start = codec::get_be64_signed(row_key.data());
  const std::string_view key = row_key.substr(8);
  binary::reader in{value};
  const uint64_t hash = in.u64();
  if (!in.ok())
    return corrupt("short row");
  if (start == key_row_start) {
    if (!retain_)
      return corrupt("fired windows without late = update");
    const uint32_t k = intern_key(hash, key);
    if (keys_[k].flags & k_stored)
      return corrupt("duplicate key row");
    auto& list = fired_of(k);
    uint64_t n = in.varint();
    if (!in.ok() || n == 0 || n > in.remaining() / 10)
      return corrupt("bad fired windows");
    for (uint64_t i = 0; i < n; ++i) {
      fired f;
      f.end = in.i64();
      uint64_t version = in.varint();
      uint8_t dirty = in.u8();
      if (!in.ok() || version > UINT32_MAX || dirty > 1 ||
          (!list.empty() && list.back().end >= f.end))
        return corrupt("bad fired window");
      f.version = static_cast<uint32_t>(version);
      f.dirty = dirty != 0;
      list.push_back(f);
    }
    keys_[k].flags |= k_stored;
    if (std::any_of(list.begin(), list.end(), [](const fired& f) { return f.dirty; }))
      mark_key(k, k_dirty);
  } else {
    timestamp end = 0;
    if (fixed_) {
      if (slice_of(start) != start)
        return corrupt("slice not aligned to the configuration");
    } else {
      end = in.i64();
      if (!in.ok() || end <= start || wide{end} - start < win_.gap)
        return corrupt("session shorter than the gap");
    }
    const uint32_t k = intern_key(hash, key);
    const size_t before = live_windows_;
    const uint32_t id = fixed_ ? find_or_open(k, start) : new_window(k, start);
    if (live_windows_ == before)
      return corrupt("duplicate slice");
    if (!fixed_) {
      // Appended, so that the key's sessions keep the order of the snapshot.
      ends_[id] = end;
      uint32_t* link = &keys_[k].head;
      while (*link != npos)
        link = &windows_[*link].next;
      *link = id;
    }
    for (size_t i = 0; i < acc_width_; ++i)
      acc_[id * acc_width_ + i] = in.f64();
    for (size_t i = 0; i < distinct_width_; ++i)
      if (!distinct_[id * distinct_width_ + i].read_from(in))
        return corrupt("bad distinct counter");
    for (size_t i = 0; i < quantile_width_; ++i)
      if (!quantiles_[id * quantile_width_ + i].read_from(in))
        return corrupt("bad quantile sketch");
    for (const auto& c : customs_) {
      auto bytes = in.bytes();
      if (!in.ok() || !c.fn->deserialize(bytes, custom_row(id) + c.offset))
        return corrupt("bad custom aggregate state");
    }
    windows_[id].flags = w_stored;
  }
  if (!in.ok() || in.remaining() != 0)
    return corrupt("bad row length");
  ++rows_restored_;
  return {};
}

caf::error window_operator::restore_end() {
  if (rows_restored_ != rows_expected_)
    return make_error(errc::store_corrupt, "window state: " + std::to_string(rows_restored_) +
                                             " rows where the meta value counts " +
                                             std::to_string(rows_expected_));
  changed_.clear();
  changed_keys_.clear();
  rows_stored_ = rows_restored_;
  for (uint32_t k = 0; k < keys_.size(); ++k) {
    if (!(keys_[k].flags & k_live))
      continue;
    keys_[k].flags &= ~k_changed;
    timestamp next;
    if (fixed_) {
      collect_slices(k);
      next = next_due_fixed(k, ids_.data(), ids_.size());
    } else {
      next = next_due_session(k);
    }
    if (next != max_timestamp)
      schedule(k, next);
  }
  return {};
}

// -- accounting ----------------------------------------------------------------------

size_t window_operator::open_windows() const {
  if (!fixed_)
    return live_windows_;
  size_t n = 0;
  std::vector<timestamp> starts;
  for (uint32_t k = 0; k < keys_.size(); ++k) {
    if (!(keys_[k].flags & k_live))
      continue;
    starts.clear();
    for (uint32_t id = keys_[k].head; id != npos; id = windows_[id].next)
      starts.push_back(windows_[id].start);
    std::sort(starts.begin(), starts.end());
    // The ends of the windows not fired yet that hold a slice: a union of grid ranges.
    timestamp covered = fired_through_; // every end up to here is counted (or fired)
    for (timestamp s : starts) {
      timestamp from = first_end(s);
      if (covered != min_timestamp)
        from = std::max(from, sat_add(covered, step_));
      timestamp to = last_end(s);
      if (to < from)
        continue;
      n += static_cast<size_t>((to - from) / step_ + 1);
      covered = to;
    }
  }
  return n;
}

size_t window_operator::memory_bytes() const {
  auto bytes = [](const auto& v) { return v.capacity() * sizeof(v[0]); };
  size_t n = bytes(keys_) + bytes(free_keys_) + bytes(table_) + arena_.capacity() + bytes(heap_) +
             bytes(windows_) + bytes(ends_) + bytes(free_windows_) + bytes(acc_) +
             bytes(distinct_) + bytes(quantiles_) + bytes(custom_) + bytes(fired_) +
             bytes(free_fired_) + bytes(changed_) + bytes(changed_keys_) + deleted_.capacity() +
             bytes(dirty_keys_);
  for (const auto& d : distinct_)
    n += d.heap_bytes();
  for (const auto& q : quantiles_)
    n += q.heap_bytes();
  for (const auto& f : fired_)
    n += bytes(f);
  return n;
}

} // namespace weir
