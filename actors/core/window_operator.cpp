#include "actors/core/window_operator.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "actors/core/error.hpp"

namespace weir {

namespace {

constexpr uint8_t snapshot_format = 1;
constexpr size_t initial_table = 64;

/// Window bounds near the ends of the time range must not wrap around.
timestamp sat_add(timestamp a, int64_t b) {
  timestamp r;
  if (__builtin_add_overflow(a, b, &r))
    return b > 0 ? max_timestamp : min_timestamp;
  return r;
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b) != 0 && ((a < 0) != (b < 0)))
    --q;
  return q;
}

/// Accumulator doubles per aggregate: count keeps one, the others a value and a count.
uint32_t acc_size(agg_fn fn) {
  switch (fn) {
    case agg_fn::count: return 1;
    case agg_fn::sum:
    case agg_fn::avg:
    case agg_fn::min:
    case agg_fn::max: return 2;
    case agg_fn::distinct:
    case agg_fn::quantile: return 0;
  }
  return 0;
}

caf::error corrupt(const char* what) {
  return make_error(errc::store_corrupt, std::string{"window snapshot: "} + what);
}

} // namespace

window_operator::window_operator(const pipeline_config& cfg)
  : win_(cfg.window), agg_cfg_(cfg.aggregates) {
  auto layout = make_layout(cfg.aggregates);
  value_width_ = layout.value_width;
  hash_width_ = layout.hash_width;
  fingerprint_.push_back(static_cast<uint8_t>(win_.kind));
  fingerprint_.push_back(static_cast<uint8_t>(win_.late));
  {
    std::string fp;
    binary::writer w{fp};
    if (win_.kind == window_kind::session) {
      w.i64(win_.gap);
    } else {
      w.i64(win_.size);
      w.i64(win_.kind == window_kind::tumbling ? win_.size : win_.slide);
      w.i64(win_.offset);
    }
    fingerprint_.insert(fingerprint_.end(), fp.begin(), fp.end());
  }
  for (size_t i = 0; i < cfg.aggregates.size(); ++i) {
    const auto& a = cfg.aggregates[i];
    agg_slot s;
    s.fn = a.fn;
    s.count_records = a.fn == agg_fn::count && a.field.empty();
    s.value_col = layout.value_col[i];
    s.hash_col = layout.hash_col[i];
    s.acc = static_cast<uint32_t>(acc_width_);
    s.sketch = 0;
    s.q = a.q;
    if (a.fn == agg_fn::distinct)
      s.sketch = static_cast<uint32_t>(distinct_width_++);
    else if (a.fn == agg_fn::quantile)
      s.sketch = static_cast<uint32_t>(quantile_width_++);
    acc_width_ += acc_size(a.fn);
    switch (a.fn) {
      case agg_fn::count: acc_init_.push_back(0); break;
      case agg_fn::sum:
      case agg_fn::avg: acc_init_.insert(acc_init_.end(), {0.0, 0.0}); break;
      case agg_fn::min:
        acc_init_.insert(acc_init_.end(), {std::numeric_limits<double>::infinity(), 0.0});
        break;
      case agg_fn::max:
        acc_init_.insert(acc_init_.end(), {-std::numeric_limits<double>::infinity(), 0.0});
        break;
      case agg_fn::distinct:
      case agg_fn::quantile: break;
    }
    fingerprint_.push_back(static_cast<uint8_t>(a.fn));
    fingerprint_.push_back(s.count_records ? 1 : 0);
    aggs_.push_back(s);
  }
  table_.resize(initial_table);
}

// -- keys -----------------------------------------------------------------------------

size_t window_operator::home_of(uint64_t hash) const {
  // The hashes are meant to be well mixed, but a cheap multiply keeps probing short if not.
  uint64_t x = hash * 0x9e3779b97f4a7c15ull;
  return static_cast<size_t>(x ^ (x >> 32)) & (table_.size() - 1);
}

uint32_t window_operator::find_key(uint64_t hash, std::string_view bytes) const {
  size_t mask = table_.size() - 1;
  for (size_t i = home_of(hash);; i = (i + 1) & mask) {
    const auto& e = table_[i];
    if (e.slot == 0)
      return npos;
    if (e.hash == hash && keys_[e.slot - 1].bytes == bytes)
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
  keys_[k].hash = hash;
  keys_[k].bytes.assign(bytes.data(), bytes.size());
  if ((table_used_ + 1) * 2 > table_.size())
    grow_table();
  size_t mask = table_.size() - 1;
  size_t i = home_of(hash);
  while (table_[i].slot != 0)
    i = (i + 1) & mask;
  table_[i] = {hash, k + 1};
  ++table_used_;
  return k;
}

void window_operator::grow_table() {
  std::vector<table_entry> old(table_.size() * 2);
  old.swap(table_);
  size_t mask = table_.size() - 1;
  for (const auto& e : old) {
    if (e.slot == 0)
      continue;
    size_t i = home_of(e.hash);
    while (table_[i].slot != 0)
      i = (i + 1) & mask;
    table_[i] = e;
  }
}

void window_operator::release_key(uint32_t k) {
  size_t mask = table_.size() - 1;
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
        keys_[k].bytes.clear();
        keys_[k].windows.clear();
        free_keys_.push_back(k);
        return;
      }
      size_t home = home_of(table_[j].hash);
      // The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
      if (((j - home) & mask) >= ((j - i) & mask))
        break;
    }
    table_[i] = table_[j];
    i = j;
  }
}

// -- windows -------------------------------------------------------------------------

uint32_t window_operator::new_window(uint32_t k, timestamp start, timestamp end) {
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
  }
  windows_[id] = window{start, end, k, 0, false};
  std::copy(acc_init_.begin(), acc_init_.end(), acc_.begin() + id * acc_width_);
  ++open_;
  next_due_ = std::min(next_due_, sat_add(end, win_.allowed_lateness));
  return id;
}

void window_operator::free_window(uint32_t id) {
  auto& w = windows_[id];
  if (w.version == 0)
    --open_;
  if (w.dirty) {
    w.dirty = false;
    --dirty_;
  }
  for (size_t i = 0; i < distinct_width_; ++i)
    distinct_[id * distinct_width_ + i].clear();
  for (size_t i = 0; i < quantile_width_; ++i)
    quantiles_[id * quantile_width_ + i].clear();
  free_windows_.push_back(id);
}

uint32_t window_operator::find_window(const key_entry& k, timestamp start) const {
  auto it = std::lower_bound(k.windows.begin(), k.windows.end(), start,
                             [](const window_ref& w, timestamp s) { return w.start < s; });
  return it != k.windows.end() && it->start == start ? it->id : npos;
}

uint32_t window_operator::find_or_open(uint32_t k, timestamp start) {
  auto& ws = keys_[k].windows;
  // In-order input appends to the end, so that case skips the search.
  if (ws.empty() || ws.back().start < start) {
    uint32_t id = new_window(k, start, sat_add(start, win_.size));
    ws.push_back({start, id});
    return id;
  }
  if (ws.back().start == start)
    return ws.back().id;
  auto it = std::lower_bound(ws.begin(), ws.end(), start,
                             [](const window_ref& w, timestamp s) { return w.start < s; });
  if (it->start == start)
    return it->id;
  uint32_t id = new_window(k, start, sat_add(start, win_.size));
  ws.insert(it, {start, id});
  return id;
}

void window_operator::add_record(uint32_t id, const event_view& b, size_t r) {
  double* a = acc_.data() + id * acc_width_;
  const double* v = value_width_ > 0 ? b.values + r * value_width_ : nullptr;
  for (const auto& s : aggs_) {
    switch (s.fn) {
      case agg_fn::count:
        if (s.count_records || !std::isnan(v[s.value_col]))
          a[s.acc] += 1;
        break;
      case agg_fn::sum:
      case agg_fn::avg: {
        double x = v[s.value_col];
        if (!std::isnan(x)) {
          a[s.acc] += x;
          a[s.acc + 1] += 1;
        }
        break;
      }
      case agg_fn::min: {
        double x = v[s.value_col];
        if (!std::isnan(x)) {
          if (x < a[s.acc])
            a[s.acc] = x;
          a[s.acc + 1] += 1;
        }
        break;
      }
      case agg_fn::max: {
        double x = v[s.value_col];
        if (!std::isnan(x)) {
          if (x > a[s.acc])
            a[s.acc] = x;
          a[s.acc + 1] += 1;
        }
        break;
      }
      case agg_fn::distinct:
        distinct_[id * distinct_width_ + s.sketch].add(b.hashes[r * hash_width_ + s.hash_col]);
        break;
      case agg_fn::quantile:
        quantiles_[id * quantile_width_ + s.sketch].add(v[s.value_col]);
        break;
    }
  }
}

void window_operator::merge_into(uint32_t into, uint32_t from) {
  double* a = acc_.data() + into * acc_width_;
  const double* f = acc_.data() + from * acc_width_;
  for (const auto& s : aggs_) {
    switch (s.fn) {
      case agg_fn::count: a[s.acc] += f[s.acc]; break;
      case agg_fn::sum:
      case agg_fn::avg:
        a[s.acc] += f[s.acc];
        a[s.acc + 1] += f[s.acc + 1];
        break;
      case agg_fn::min:
        a[s.acc] = std::min(a[s.acc], f[s.acc]);
        a[s.acc + 1] += f[s.acc + 1];
        break;
      case agg_fn::max:
        a[s.acc] = std::max(a[s.acc], f[s.acc]);
        a[s.acc + 1] += f[s.acc + 1];
        break;
      case agg_fn::distinct:
        distinct_[into * distinct_width_ + s.sketch].merge(
          distinct_[from * distinct_width_ + s.sketch]);
        break;
      case agg_fn::quantile:
        quantiles_[into * quantile_width_ + s.sketch].merge(
          quantiles_[from * quantile_width_ + s.sketch]);
        break;
    }
  }
}

void window_operator::fill_values(uint32_t id, std::vector<double>& values) const {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  const double* a = acc_.data() + id * acc_width_;
  values.resize(aggs_.size());
  for (size_t i = 0; i < aggs_.size(); ++i) {
    const auto& s = aggs_[i];
    switch (s.fn) {
      case agg_fn::count: values[i] = a[s.acc]; break;
      case agg_fn::sum:
      case agg_fn::min:
      case agg_fn::max: values[i] = a[s.acc + 1] > 0 ? a[s.acc] : nan; break;
      case agg_fn::avg: values[i] = a[s.acc + 1] > 0 ? a[s.acc] / a[s.acc + 1] : nan; break;
      case agg_fn::distinct:
        values[i] = distinct_[id * distinct_width_ + s.sketch].estimate();
        break;
      case agg_fn::quantile:
        values[i] = quantiles_[id * quantile_width_ + s.sketch].quantile(s.q);
        break;
    }
  }
}

// -- processing ---------------------------------------------------------------------

void window_operator::process(const event_view& b) {
  if (b.n == 0)
    return;
  if (b.value_width != value_width_ || b.hash_width != hash_width_)
    throw std::invalid_argument("window_operator: batch layout does not match the aggregates");
  if (win_.kind == window_kind::session)
    process_session(b);
  else
    process_fixed(b);
}

void window_operator::process_fixed(const event_view& b) {
  const int64_t size = win_.size;
  const int64_t step = win_.kind == window_kind::tumbling ? win_.size : win_.slide;
  const int64_t lateness = win_.allowed_lateness;
  const bool update = win_.late == late_policy::update;
  for (size_t r = 0; r < b.n; ++r) {
    const timestamp t = b.time[r];
    const timestamp w = std::max(b.wm_before[r], watermark_);
    const timestamp first = t - size; // windows starting after this hold t
    uint32_t k = npos;
    for (timestamp s = win_.offset + floor_div(t - win_.offset, step) * step; s > first;
         s -= step) {
      const timestamp end = sat_add(s, size);
      if (w >= sat_add(end, lateness)) {
        if (update)
          late_update(b.key_hash[r], b.key(r), s, end, w, b, r);
        continue;
      }
      if (k == npos)
        k = intern_key(b.key_hash[r], b.key(r));
      add_record(find_or_open(k, s), b, r);
    }
  }
}

void window_operator::late_update(uint64_t hash, std::string_view key, timestamp start,
                                  timestamp end, timestamp w, const event_view& b, size_t r) {
  if (w >= sat_add(sat_add(end, win_.allowed_lateness), win_.update_horizon))
    return; // the window is gone, whether or not a scan has dropped it yet
  // A window this key never had a record in is opened now: it has no committed result yet,
  // so it fires (version 1) at the next advance and stays updatable until the horizon.
  uint32_t k = find_key(hash, key);
  if (k == npos)
    k = intern_key(hash, key);
  uint32_t id = find_or_open(k, start);
  add_record(id, b, r);
  auto& win = windows_[id];
  if (win.version > 0 && !win.dirty) {
    win.dirty = true;
    ++dirty_;
  }
}

void window_operator::process_session(const event_view& b) {
  const int64_t gap = win_.gap;
  const int64_t lateness = win_.allowed_lateness;
  for (size_t r = 0; r < b.n; ++r) {
    const timestamp t = b.time[r];
    const timestamp w = std::max(b.wm_before[r], watermark_);
    const timestamp t_end = sat_add(t, gap);
    if (w >= sat_add(t_end, lateness))
      continue;
    const uint32_t k = intern_key(b.key_hash[r], b.key(r));
    auto& ws = keys_[k].windows;
    uint32_t target = npos;
    size_t target_pos = 0;
    merge_.clear();
    for (size_t i = 0; i < ws.size(); ++i) {
      auto& s = windows_[ws[i].id];
      // Sessions fired by w (emitted or not) are closed for records and merges.
      if (s.version != 0 || w >= sat_add(s.end, lateness))
        continue;
      if (s.start > t_end || t > s.end)
        continue;
      if (target == npos) {
        target = ws[i].id;
        target_pos = i;
        continue;
      }
      merge_into(target, ws[i].id);
      auto& into = windows_[target];
      into.start = std::min(into.start, s.start);
      into.end = std::max(into.end, s.end);
      merge_.push_back(static_cast<uint32_t>(i));
    }
    if (target == npos) {
      uint32_t id = new_window(k, t, t_end);
      ws.push_back({t, id});
      add_record(id, b, r);
      continue;
    }
    auto& into = windows_[target];
    into.start = std::min(into.start, t);
    into.end = std::max(into.end, t_end);
    ws[target_pos].start = into.start;
    for (size_t j = merge_.size(); j-- > 0;) {
      free_window(ws[merge_[j]].id);
      ws.erase(ws.begin() + merge_[j]);
    }
    add_record(target, b, r);
  }
}

// -- firing --------------------------------------------------------------------------

void window_operator::advance(timestamp watermark, std::vector<window_result>& out) {
  watermark_ = std::max(watermark_, watermark);
  if (dirty_ == 0 && watermark_ < next_due_)
    return;
  scan(false, out, nullptr);
}

timestamp window_operator::flush(std::vector<window_result>& out) {
  timestamp fired_max = min_timestamp;
  scan(true, out, &fired_max);
  return watermark_;
}

void window_operator::scan(bool fire_all, std::vector<window_result>& out,
                           timestamp* fired_max) {
  const int64_t lateness = win_.allowed_lateness;
  const bool retain = win_.late == late_policy::update && win_.kind != window_kind::session;
  emit_.clear();
  for (uint32_t k = 0; k < keys_.size(); ++k) {
    for (const auto& ref : keys_[k].windows) {
      const auto& w = windows_[ref.id];
      if (w.version == 0 ? fire_all || sat_add(w.end, lateness) <= watermark_ : w.dirty)
        emit_.push_back({w.end, w.start, k, ref.id});
    }
  }
  std::sort(emit_.begin(), emit_.end(), [this](const emission& x, const emission& y) {
    if (x.end != y.end)
      return x.end < y.end;
    if (x.start != y.start)
      return x.start < y.start;
    return keys_[x.key].bytes < keys_[y.key].bytes;
  });
  for (const auto& e : emit_) {
    auto& w = windows_[e.id];
    window_result result;
    result.key = keys_[e.key].bytes;
    result.start = w.start;
    result.end = w.end;
    result.version = w.version + 1;
    fill_values(e.id, result.values);
    out.push_back(std::move(result));
    if (w.version == 0) {
      --open_;
      if (fired_max)
        *fired_max = std::max(*fired_max, sat_add(w.end, lateness));
    }
    if (w.dirty) {
      w.dirty = false;
      --dirty_;
    }
    ++w.version;
  }
  if (fired_max)
    watermark_ = std::max(watermark_, *fired_max);
  // Drop what fired (or, when retained, expired) and find when the next scan is due.
  timestamp next = max_timestamp;
  for (uint32_t k = 0; k < keys_.size(); ++k) {
    auto& ws = keys_[k].windows;
    if (ws.empty())
      continue;
    size_t kept = 0;
    for (const auto& ref : ws) {
      const auto& w = windows_[ref.id];
      timestamp due = sat_add(w.end, lateness);
      if (w.version > 0)
        due = retain ? sat_add(due, win_.update_horizon) : min_timestamp;
      if (due > watermark_) {
        next = std::min(next, due);
        ws[kept++] = ref;
      } else {
        free_window(ref.id);
      }
    }
    ws.resize(kept);
    if (ws.empty())
      release_key(k);
  }
  next_due_ = next;
}

// -- snapshots -----------------------------------------------------------------------

std::string window_operator::snapshot() const {
  std::string out;
  binary::writer w{out};
  w.u8(snapshot_format);
  w.bytes({reinterpret_cast<const char*>(fingerprint_.data()), fingerprint_.size()});
  w.i64(watermark_);
  size_t live = 0;
  for (const auto& k : keys_)
    live += k.windows.empty() ? 0 : 1;
  w.varint(live);
  for (const auto& k : keys_) {
    if (k.windows.empty())
      continue;
    w.u64(k.hash);
    w.bytes(k.bytes);
    w.varint(k.windows.size());
    for (const auto& ref : k.windows) {
      const auto& win = windows_[ref.id];
      w.i64(win.start);
      w.i64(win.end);
      w.varint(win.version);
      w.u8(win.dirty ? 1 : 0);
      for (size_t i = 0; i < acc_width_; ++i)
        w.f64(acc_[ref.id * acc_width_ + i]);
      for (size_t i = 0; i < distinct_width_; ++i)
        distinct_[ref.id * distinct_width_ + i].serialize(out);
      for (size_t i = 0; i < quantile_width_; ++i)
        quantiles_[ref.id * quantile_width_ + i].serialize(out);
    }
  }
  return out;
}

caf::error window_operator::restore(std::string_view bytes) {
  pipeline_config cfg;
  cfg.window = win_;
  cfg.aggregates = agg_cfg_;
  window_operator tmp{cfg};
  binary::reader in{bytes};
  if (in.u8() != snapshot_format)
    return corrupt("unknown format version");
  auto fp = in.bytes();
  if (!in.ok()
      || fp != std::string_view{reinterpret_cast<const char*>(fingerprint_.data()),
                                fingerprint_.size()})
    return corrupt("taken with another window or aggregate configuration");
  tmp.watermark_ = in.i64();
  uint64_t n_keys = in.varint();
  if (!in.ok() || n_keys > in.remaining())
    return corrupt("bad key count");
  const bool fixed = win_.kind != window_kind::session;
  const bool retain = win_.late == late_policy::update && fixed;
  const int64_t step = win_.kind == window_kind::tumbling ? win_.size : win_.slide;
  // The smallest encoding of one window: start, end, version, flags, accumulator doubles.
  const size_t min_window_bytes = 8 + 8 + 1 + 1 + 8 * acc_width_;
  for (uint64_t i = 0; i < n_keys; ++i) {
    uint64_t hash = in.u64();
    auto key = in.bytes();
    uint64_t n_windows = in.varint();
    if (!in.ok() || n_windows == 0 || n_windows > in.remaining() / min_window_bytes)
      return corrupt("bad key entry");
    if (tmp.find_key(hash, key) != npos)
      return corrupt("duplicate key");
    uint32_t k = tmp.intern_key(hash, key);
    for (uint64_t j = 0; j < n_windows; ++j) {
      timestamp start = in.i64();
      timestamp end = in.i64();
      uint64_t version = in.varint();
      uint8_t dirty = in.u8();
      if (!in.ok() || start >= end || version > UINT32_MAX || dirty > 1
          || (version > 0 && !retain) || (dirty && version == 0))
        return corrupt("bad window");
      if (fixed) {
        if (end != sat_add(start, win_.size) || (start - win_.offset) % step != 0)
          return corrupt("window not aligned to the configuration");
        const auto& ws = tmp.keys_[k].windows;
        if (!ws.empty() && ws.back().start >= start)
          return corrupt("windows out of order");
      } else if (end - start < win_.gap) {
        return corrupt("session shorter than the gap");
      }
      uint32_t id = tmp.new_window(k, start, end);
      auto& win = tmp.windows_[id];
      win.version = static_cast<uint32_t>(version);
      win.dirty = dirty != 0;
      if (version > 0)
        --tmp.open_;
      if (win.dirty)
        ++tmp.dirty_;
      tmp.keys_[k].windows.push_back({start, id});
      for (size_t a = 0; a < acc_width_; ++a)
        tmp.acc_[id * acc_width_ + a] = in.f64();
      for (size_t a = 0; a < distinct_width_; ++a)
        if (!tmp.distinct_[id * distinct_width_ + a].read_from(in))
          return corrupt("bad distinct counter");
      for (size_t a = 0; a < quantile_width_; ++a)
        if (!tmp.quantiles_[id * quantile_width_ + a].read_from(in))
          return corrupt("bad quantile sketch");
      if (!in.ok())
        return corrupt("truncated");
    }
  }
  if (!in.ok() || in.remaining() != 0)
    return corrupt("trailing bytes");
  // Let the next advance() find out exactly what is due.
  tmp.next_due_ = min_timestamp;
  *this = std::move(tmp);
  return {};
}

} // namespace weir
