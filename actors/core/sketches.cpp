#include "actors/core/sketches.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "actors/core/error.hpp"

namespace weir {

// -- distinct_counter ---------------------------------------------------------------

namespace {

constexpr uint8_t distinct_format = 1;
constexpr uint8_t quantile_format = 1;
constexpr int hll_q = 64 - distinct_counter::precision; ///< hash bits left for the rank
constexpr size_t min_exact_capacity = 16;

/// Ertl's sigma function (for the registers still at zero).
double hll_sigma(double x) {
  if (x == 1.0)
    return std::numeric_limits<double>::infinity();
  double y = 1.0;
  double z = x;
  double previous;
  do {
    x *= x;
    previous = z;
    z += x * y;
    y += y;
  } while (z != previous);
  return z;
}

/// Ertl's tau function (for the registers at the maximum rank).
double hll_tau(double x) {
  if (x == 0.0 || x == 1.0)
    return 0.0;
  double y = 1.0;
  double z = 1.0 - x;
  double previous;
  do {
    x = std::sqrt(x);
    previous = z;
    y *= 0.5;
    z -= (1.0 - x) * (1.0 - x) * y;
  } while (z != previous);
  return z / 3.0;
}

} // namespace

void distinct_counter::add(uint64_t hash) {
  if (!registers_.empty()) {
    add_register(hash);
    return;
  }
  if (hash == 0) {
    if (!has_zero_) {
      has_zero_ = true;
      ++exact_size_;
    }
  } else {
    insert_exact(hash);
  }
  if (exact_size_ > exact_limit)
    to_registers();
}

void distinct_counter::insert_exact(uint64_t hash) {
  if (table_.empty())
    table_.assign(min_exact_capacity, 0);
  size_t mask = table_.size() - 1;
  for (size_t i = static_cast<size_t>(hash) & mask;; i = (i + 1) & mask) {
    if (table_[i] == hash)
      return;
    if (table_[i] == 0) {
      table_[i] = hash;
      ++exact_size_;
      if (exact_size_ * 2 > table_.size() && exact_size_ <= exact_limit)
        grow_exact();
      return;
    }
  }
}

void distinct_counter::grow_exact() {
  std::vector<uint64_t> old(table_.size() * 2, 0);
  old.swap(table_);
  size_t mask = table_.size() - 1;
  for (uint64_t h : old) {
    if (h == 0)
      continue;
    size_t i = static_cast<size_t>(h) & mask;
    while (table_[i] != 0)
      i = (i + 1) & mask;
    table_[i] = h;
  }
}

void distinct_counter::add_register(uint64_t hash) {
  size_t index = static_cast<size_t>(hash >> hll_q);
  // A guard bit below the rank bits bounds the rank by q + 1 when all of them are zero.
  uint64_t rest = (hash << precision) | (uint64_t{1} << (precision - 1));
  auto rank = static_cast<uint8_t>(__builtin_clzll(rest) + 1);
  if (rank > registers_[index])
    registers_[index] = rank;
}

void distinct_counter::to_registers() {
  registers_.assign(register_count, 0);
  if (has_zero_)
    add_register(0);
  for (uint64_t h : table_)
    if (h != 0)
      add_register(h);
  table_.clear();
  table_.shrink_to_fit();
  exact_size_ = 0;
  has_zero_ = false;
}

void distinct_counter::merge(const distinct_counter& other) {
  if (other.registers_.empty()) {
    if (other.has_zero_)
      add(0);
    for (uint64_t h : other.table_)
      if (h != 0)
        add(h);
    return;
  }
  if (registers_.empty())
    to_registers();
  for (size_t i = 0; i < register_count; ++i)
    registers_[i] = std::max(registers_[i], other.registers_[i]);
}

double distinct_counter::estimate() const {
  if (registers_.empty())
    return static_cast<double>(exact_size_);
  uint32_t histogram[hll_q + 2] = {};
  for (uint8_t r : registers_)
    ++histogram[r];
  const double m = static_cast<double>(register_count);
  double z = m * hll_tau(1.0 - histogram[hll_q + 1] / m);
  for (int k = hll_q; k >= 1; --k)
    z = 0.5 * (z + histogram[k]);
  z += m * hll_sigma(histogram[0] / m);
  const double alpha_inf = 0.5 / std::log(2.0);
  return alpha_inf * m * m / z;
}

void distinct_counter::clear() {
  if (table_.size() > min_exact_capacity * 4) {
    table_.clear();
    table_.shrink_to_fit();
  } else {
    std::fill(table_.begin(), table_.end(), 0);
  }
  exact_size_ = 0;
  has_zero_ = false;
  registers_.clear();
  registers_.shrink_to_fit();
}

void distinct_counter::serialize(std::string& out) const {
  binary::writer w{out};
  w.u8(distinct_format);
  if (registers_.empty()) {
    w.u8(0);
    w.varint(exact_size_);
    // Sorted, so that equal sets encode equally whatever their insertion history.
    std::vector<uint64_t> sorted;
    sorted.reserve(exact_size_);
    if (has_zero_)
      sorted.push_back(0);
    for (uint64_t h : table_)
      if (h != 0)
        sorted.push_back(h);
    std::sort(sorted.begin(), sorted.end());
    for (uint64_t h : sorted)
      w.u64(h);
  } else {
    w.u8(1);
    out.append(reinterpret_cast<const char*>(registers_.data()), registers_.size());
  }
}

bool distinct_counter::read_from(binary::reader& in) {
  clear();
  if (in.u8() != distinct_format) {
    in.fail();
    return false;
  }
  uint8_t mode = in.u8();
  if (mode == 0) {
    uint64_t n = in.varint();
    if (!in.ok() || n > exact_limit || n * 8 > in.remaining()) {
      in.fail();
      return false;
    }
    for (uint64_t i = 0; i < n; ++i)
      add(in.u64());
    if (!in.ok() || exact_size_ != n) { // duplicates: not something serialize writes
      clear();
      in.fail();
      return false;
    }
    return true;
  }
  if (mode != 1 || in.remaining() < register_count) {
    in.fail();
    return false;
  }
  registers_.resize(register_count);
  for (size_t i = 0; i < register_count; ++i) {
    uint8_t r = in.u8();
    if (r > hll_q + 1) {
      clear();
      in.fail();
      return false;
    }
    registers_[i] = r;
  }
  return true;
}

caf::error distinct_counter::deserialize(std::string_view bytes) {
  binary::reader in{bytes};
  if (!read_from(in) || in.remaining() != 0) {
    clear();
    return make_error(errc::store_corrupt, "distinct counter: malformed encoding");
  }
  return {};
}

// -- quantile_sketch ------------------------------------------------------------------

namespace {

const double dd_gamma =
  (1.0 + quantile_sketch::relative_accuracy) / (1.0 - quantile_sketch::relative_accuracy);
const double dd_inv_log_gamma = 1.0 / std::log(dd_gamma);
const double dd_log_gamma = std::log(dd_gamma);
/// The bucket of the largest finite double plus one: infinities are counted there.
const int32_t dd_max_index =
  static_cast<int32_t>(std::ceil(std::log(std::numeric_limits<double>::max()) * dd_inv_log_gamma)) +
  1;
/// Generous sanity bounds for decoded stores (valid indexes lie within about +-35500).
constexpr int64_t dd_index_bound = 1 << 20;

} // namespace

int32_t quantile_sketch::index_of(double magnitude) {
  if (!(magnitude <= std::numeric_limits<double>::max()))
    return dd_max_index;
  return static_cast<int32_t>(std::ceil(std::log(magnitude) * dd_inv_log_gamma));
}

double quantile_sketch::value_of(int32_t index) {
  return 2.0 * std::exp(index * dd_log_gamma) / (dd_gamma + 1.0);
}

void quantile_sketch::store::add(int32_t index, uint64_t n) {
  if (counts.empty()) {
    offset = index;
    counts.assign(1, 0);
  } else if (index < offset) {
    // Grow downwards with some slack so that slowly falling inputs do not shift every time.
    size_t need = static_cast<size_t>(offset - index);
    size_t slack = std::min<size_t>(counts.size() / 2, 64);
    counts.insert(counts.begin(), need + slack, 0);
    offset = index - static_cast<int32_t>(slack);
  } else if (static_cast<size_t>(index - offset) >= counts.size()) {
    counts.resize(static_cast<size_t>(index - offset) + 1, 0);
  }
  counts[static_cast<size_t>(index - offset)] += n;
  total += n;
}

void quantile_sketch::store::merge(const store& other) {
  for (size_t i = 0; i < other.counts.size(); ++i)
    if (other.counts[i] != 0)
      add(other.offset + static_cast<int32_t>(i), other.counts[i]);
}

void quantile_sketch::store::clear() {
  offset = 0;
  counts.clear();
  total = 0;
}

void quantile_sketch::add(double x) {
  if (std::isnan(x))
    return;
  if (count_ == 0) {
    min_ = x;
    max_ = x;
  } else {
    min_ = std::min(min_, x);
    max_ = std::max(max_, x);
  }
  ++count_;
  double magnitude = std::fabs(x);
  if (magnitude < std::numeric_limits<double>::min())
    ++zero_;
  else if (x > 0)
    positive_.add(index_of(magnitude), 1);
  else
    negative_.add(index_of(magnitude), 1);
}

void quantile_sketch::merge(const quantile_sketch& other) {
  if (other.count_ == 0)
    return;
  if (count_ == 0) {
    min_ = other.min_;
    max_ = other.max_;
  } else {
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }
  count_ += other.count_;
  zero_ += other.zero_;
  positive_.merge(other.positive_);
  negative_.merge(other.negative_);
}

double quantile_sketch::quantile(double q) const {
  if (count_ == 0)
    return std::numeric_limits<double>::quiet_NaN();
  q = std::isnan(q) ? 0.0 : std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<uint64_t>(std::floor(q * static_cast<double>(count_ - 1)));
  if (rank == 0)
    return min_;
  if (rank >= count_ - 1)
    return max_;
  double result = 0.0;
  uint64_t seen = 0;
  bool found = false;
  // Most negative first: the negative store's highest index holds the largest magnitudes.
  for (size_t i = negative_.counts.size(); i-- > 0 && !found;) {
    seen += negative_.counts[i];
    if (seen > rank) {
      result = -value_of(negative_.offset + static_cast<int32_t>(i));
      found = true;
    }
  }
  if (!found) {
    seen += zero_;
    if (seen > rank) {
      result = 0.0;
      found = true;
    }
  }
  for (size_t i = 0; i < positive_.counts.size() && !found; ++i) {
    seen += positive_.counts[i];
    if (seen > rank) {
      result = value_of(positive_.offset + static_cast<int32_t>(i));
      found = true;
    }
  }
  return std::clamp(result, min_, max_);
}

void quantile_sketch::clear() {
  positive_.clear();
  negative_.clear();
  zero_ = 0;
  count_ = 0;
  min_ = 0;
  max_ = 0;
}

void quantile_sketch::serialize(std::string& out) const {
  binary::writer w{out};
  w.u8(quantile_format);
  w.varint(count_);
  w.varint(zero_);
  w.f64(min_);
  w.f64(max_);
  for (const store* s : {&positive_, &negative_}) {
    w.i64(s->offset);
    w.varint(s->counts.size());
    for (uint64_t c : s->counts)
      w.varint(c);
  }
}

bool quantile_sketch::read_from(binary::reader& in) {
  clear();
  auto bad = [&] {
    clear();
    in.fail();
    return false;
  };
  if (in.u8() != quantile_format)
    return bad();
  uint64_t count = in.varint();
  zero_ = in.varint();
  min_ = in.f64();
  max_ = in.f64();
  for (store* s : {&positive_, &negative_}) {
    int64_t offset = in.i64();
    uint64_t n = in.varint();
    // Each count takes at least one byte, which bounds the allocation by the input size.
    if (!in.ok() || n > in.remaining() || offset < -dd_index_bound || offset > dd_index_bound ||
        static_cast<int64_t>(n) > dd_index_bound)
      return bad();
    s->offset = static_cast<int32_t>(offset);
    s->counts.resize(n);
    for (uint64_t i = 0; i < n; ++i) {
      s->counts[i] = in.varint();
      s->total += s->counts[i];
      if (s->total < s->counts[i]) // overflow
        return bad();
    }
  }
  if (!in.ok() || positive_.total + negative_.total + zero_ != count || std::isnan(min_) ||
      std::isnan(max_) || (count > 0 && min_ > max_))
    return bad();
  count_ = count;
  return true;
}

caf::error quantile_sketch::deserialize(std::string_view bytes) {
  binary::reader in{bytes};
  if (!read_from(in) || in.remaining() != 0) {
    clear();
    return make_error(errc::store_corrupt, "quantile sketch: malformed encoding");
  }
  return {};
}

} // namespace weir
