#include "actors/core/stage_runner.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <xxhash.h>

namespace weir {

namespace {

constexpr double nan = std::numeric_limits<double>::quiet_NaN();

/// The text a distinct hashes for a numeric field: the shortest that reads back as `v`
/// (fixed notation where it fits), as for derived fields; "" when absent.
uint64_t value_hash(double v) {
  if (std::isnan(v))
    return XXH3_64bits("", 0);
  std::array<char, 64> buf;
  auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::fixed);
  if (r.ec != std::errc{})
    r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  return XXH3_64bits(buf.data(), static_cast<size_t>(r.ptr - buf.data()));
}

} // namespace

/// The records [begin, end) of one partition as a stage sees them. Misuse (a record or a field
/// out of range) throws std::out_of_range, which fails the batch like any stage error.
class stage_runner::batch final : public stage_batch {
public:
  batch(event_columns& cols, double* fields, size_t stride, size_t width, size_t begin,
        uint8_t* drop)
    : cols_(cols)
    , fields_(fields)
    , stride_(stride)
    , width_(width)
    , begin_(begin)
    , n_(cols.size() - begin)
    , drop_(drop) {}

  size_t size() const override { return n_; }
  std::string_view key(size_t r) const override {
    auto i = begin_ + at(r);
    uint32_t b = i == 0 ? 0 : cols_.key_end[i - 1];
    return std::string_view{cols_.key_bytes}.substr(b, cols_.key_end[i] - b);
  }
  timestamp time(size_t r) const override { return cols_.time[begin_ + at(r)]; }
  double value(size_t r, int column) const override {
    return fields_[at(r) * stride_ + field(column)];
  }
  void set_value(size_t r, int column, double v) override {
    fields_[at(r) * stride_ + field(column)] = v;
  }
  void drop(size_t r) override { drop_[at(r)] = 1; }
  bool dropped(size_t r) const override { return drop_[at(r)] != 0; }

private:
  size_t at(size_t r) const {
    if (r >= n_)
      throw std::out_of_range("record " + std::to_string(r) + " of a batch of " +
                              std::to_string(n_));
    return r;
  }
  size_t field(int c) const {
    if (c < 0 || static_cast<size_t>(c) >= width_)
      throw std::out_of_range("field column " + std::to_string(c) + " of " +
                              std::to_string(width_) +
                              " (stage_context::column gives -1 for "
                              "a name it does not have)");
    return static_cast<size_t>(c);
  }

  event_columns& cols_;
  double* fields_;
  size_t stride_;
  size_t width_;
  size_t begin_;
  size_t n_;
  uint8_t* drop_;
};

stage_runner::stage_runner(const pipeline_config& cfg, size_t partitions,
                           std::vector<aggregate_fill> fills, size_t value_width, size_t hash_width)
  : fills_(std::move(fills))
  , width_(stage_fields(cfg).size())
  , value_width_(value_width)
  , hash_width_(hash_width) {
  instances_.resize(partitions);
  fields_.resize(partitions);
  used_.assign(partitions, 0);
  for (size_t i = 0; i < cfg.stages.size(); ++i) {
    const auto& sc = cfg.stages[i];
    kinds_.push_back(sc.kind);
    stage_context ctx{cfg.name, stage_fields(cfg, i)};
    widths_.push_back(ctx.fields.size());
    if (!sc.make)
      throw std::runtime_error("stage " + sc.kind + ": no factory to make it with");
    for (size_t p = 0; p < partitions; ++p) {
      try {
        instances_[p].push_back(sc.make(ctx));
      } catch (const std::exception& e) {
        throw std::runtime_error("stage " + sc.kind + ": " + e.what());
      }
      if (!instances_[p].back())
        throw std::runtime_error("stage " + sc.kind + ": its factory made nothing");
    }
  }
}

stage_runner::~stage_runner() = default;

void stage_runner::run_stages(size_t p, event_columns& cols, size_t begin) {
  const size_t n = cols.size() - begin;
  drop_.assign(n, 0);
  double* fields = fields_[p].data() + begin * width_;
  for (size_t i = 0; i < instances_[p].size(); ++i) {
    batch b{cols, fields, width_, widths_[i], begin, drop_.data()};
    try {
      instances_[p][i]->process(b);
    } catch (const std::exception& e) {
      throw std::runtime_error("stage " + kinds_[i] + ": " + e.what());
    } catch (...) {
      throw std::runtime_error("stage " + kinds_[i] + ": threw something not a std::exception");
    }
  }
  for (const auto& flt : filters_)
    for (size_t r = 0; r < n; ++r) {
      const double x = fields[r * width_ + static_cast<size_t>(flt.field)];
      if (std::isnan(x) || x < flt.min || x > flt.max)
        drop_[r] = 1;
    }
}

void stage_runner::finish(size_t p, event_columns& cols, size_t begin) {
  double* fields = fields_[p].data();
  size_t w = begin;
  uint32_t old_end = begin == 0 ? 0 : cols.key_end[begin - 1];
  for (size_t r = begin; r < cols.size(); ++r) {
    const uint32_t old_begin = old_end;
    old_end = cols.key_end[r];
    if (drop_[r - begin])
      continue;
    double* f = fields + r * width_;
    for (const auto& a : fills_) {
      const double v = f[a.field];
      if (a.hash)
        cols.hashes[r * hash_width_ + a.column] = value_hash(v);
      else if (a.presence)
        cols.values[r * value_width_ + a.column] = std::isnan(v) ? nan : 1.0;
      else
        cols.values[r * value_width_ + a.column] = v;
    }
    if (w != r) {
      cols.time[w] = cols.time[r];
      cols.wm_before[w] = cols.wm_before[r];
      cols.key_hash[w] = cols.key_hash[r];
      const uint32_t dst = w == 0 ? 0 : cols.key_end[w - 1];
      const uint32_t len = old_end - old_begin;
      std::memmove(cols.key_bytes.data() + dst, cols.key_bytes.data() + old_begin, len);
      cols.key_end[w] = dst + len;
      std::copy_n(cols.values.begin() + static_cast<ptrdiff_t>(r * value_width_), value_width_,
                  cols.values.begin() + static_cast<ptrdiff_t>(w * value_width_));
      std::copy_n(cols.hashes.begin() + static_cast<ptrdiff_t>(r * hash_width_), hash_width_,
                  cols.hashes.begin() + static_cast<ptrdiff_t>(w * hash_width_));
      std::copy_n(f, width_, fields_[p].data() + w * width_);
    }
    ++w;
  }
  if (w == cols.size())
    return;
  cols.time.resize(w);
  cols.wm_before.resize(w);
  cols.key_hash.resize(w);
  cols.key_end.resize(w);
  cols.key_bytes.resize(w == 0 ? 0 : cols.key_end[w - 1]);
  cols.values.resize(w * value_width_);
  cols.hashes.resize(w * hash_width_);
  used_[p] = w * width_;
}

void stage_runner::clear() {
  std::fill(used_.begin(), used_.end(), 0);
}

} // namespace weir
