#pragma once

/// Approximate aggregates whose exact form would need memory proportional to the input:
/// `distinct_counter` (exact set, then HyperLogLog) and `quantile_sketch` (DDSketch). Both merge
/// (session windows merge their accumulators) and serialize into the operator snapshots
/// (actors/core/codec.hpp).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>

#include "actors/core/codec.hpp"

namespace weir {

/// The snapshot codec under the name the operators use (actors/core/codec.hpp).
namespace binary = codec;

/// Counts distinct 64-bit hashes. Up to `exact_limit` distinct hashes it keeps them all (an
/// open-addressing set) and is exact; past that it switches to HyperLogLog with precision 14
/// (16384 one-byte registers) and Ertl's improved estimator ("New cardinality estimation
/// algorithms for HyperLogLog sketches", 2017), which needs no empirical bias tables and is
/// unbiased from small to very large cardinalities. Relative standard error of the estimate in
/// HyperLogLog mode: 1.04 / sqrt(16384) ~= 0.81 %.
///
/// The hashes must be well mixed (64-bit xxh3 of the value): register index and rank are taken
/// straight from their bits, as there is no point in hashing a hash again.
class distinct_counter {
public:
  static constexpr size_t exact_limit = 1024;
  static constexpr int precision = 14;
  static constexpr size_t register_count = size_t{1} << precision;
  static constexpr double standard_error = 1.04 / 128.0;

  void add(uint64_t hash);
  /// Makes this counter count the union of both inputs.
  void merge(const distinct_counter& other);
  /// The exact count while `exact()`, the HyperLogLog estimate after.
  double estimate() const;
  bool exact() const { return registers_.empty(); }
  /// Heap memory held (the exact set or the registers).
  size_t heap_bytes() const { return table_.capacity() * 8 + registers_.capacity(); }
  /// Back to empty; keeps the exact set's memory for reuse, frees the registers.
  void clear();

  /// Appends a self-delimiting encoding to `out`.
  void serialize(std::string& out) const;
  /// Replaces the content with one decoded from `in`; errc::store_corrupt on bad bytes (the
  /// counter is then empty).
  caf::error deserialize(std::string_view bytes);
  /// Reads one encoding from `in`; returns false (and leaves the counter empty) on bad bytes.
  bool read_from(binary::reader& in);

private:
  void insert_exact(uint64_t hash);
  void grow_exact();
  void to_registers();
  void add_register(uint64_t hash);

  /// Exact mode: open addressing with linear probing, 0 marks a free bucket, so the hash 0
  /// itself is tracked by `has_zero_`.
  std::vector<uint64_t> table_;
  size_t exact_size_ = 0;
  bool has_zero_ = false;
  /// HyperLogLog mode when not empty.
  std::vector<uint8_t> registers_;
};

/// DDSketch (Masson, Rim, Lee, VLDB 2019) with relative accuracy 1 %: a value x > 0 falls in
/// bucket ceil(log_gamma(x)) with gamma = 1.01 / 0.99, and a bucket answers with the value whose
/// relative distance to every member is at most 1 %. Negative values use a mirrored store;
/// zero (and anything smaller in magnitude than the smallest normal double) is counted apart.
/// Stores are dense arrays that grow at either end and never collapse, so the guarantee holds
/// for every input. The exact minimum and maximum are kept, which makes q = 0 and q = 1 exact.
class quantile_sketch {
public:
  static constexpr double relative_accuracy = 0.01;

  /// NaN is ignored.
  void add(double x);
  void merge(const quantile_sketch& other);
  /// A value within 1 % relative error of the value at rank floor(q * (n - 1)) (0-based) of the
  /// sorted inputs; NaN when empty. q is clamped to [0, 1].
  double quantile(double q) const;
  uint64_t count() const { return count_; }
  void clear();
  /// Heap memory held by the bucket stores.
  size_t heap_bytes() const {
    return (positive_.counts.capacity() + negative_.counts.capacity()) * sizeof(uint64_t);
  }

  void serialize(std::string& out) const;
  caf::error deserialize(std::string_view bytes);
  bool read_from(binary::reader& in);

private:
  /// Counts for a contiguous index range [offset, offset + counts.size()).
  struct store {
    int32_t offset = 0;
    std::vector<uint64_t> counts;
    uint64_t total = 0;
    void add(int32_t index, uint64_t n);
    void merge(const store& other);
    void clear();
  };
  static int32_t index_of(double magnitude);
  static double value_of(int32_t index);

  store positive_;
  store negative_;
  uint64_t zero_ = 0;
  uint64_t count_ = 0;
  double min_ = 0;
  double max_ = 0;
};

} // namespace weir
