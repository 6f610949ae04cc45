#pragma once

/// Window results travel from a window operator to the warehouse packed one after the other in
/// one buffer, like dead letters (dead_letters.hpp). A sliding window over a month fires
/// millions of windows an epoch: packed, a result costs no heap allocation of its own, crosses
/// each actor boundary as one copy of one buffer, and its stored value is written as it lies.
///
/// One result, little-endian (actors/core/codec.hpp):
///
///     start i64, end i64, key length u32, | version u32, count u32, count x f64, | key bytes
///
/// The part between the bars is exactly a value of the warehouse's results table for a key that
/// fits an LMDB key (store/warehouse.hpp), before its seal.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "actors/core/types.hpp"

namespace weir {

/// One result read in place from a pack; valid while the pack's bytes are.
struct result_view {
  std::string_view key;
  timestamp start = 0;
  timestamp end = 0;
  uint32_t version = 0;
  uint32_t count = 0;        ///< how many values
  std::string_view stored;   ///< version, count and the values: a results-table value

  /// Value i (< count).
  double value(size_t i) const;
  operator window_result() const;
};

class result_pack {
public:
  /// Bytes of a result before its values and key.
  static constexpr size_t head_size = 8 + 8 + 4;

  /// Appends one result.
  void add(std::string_view key, timestamp start, timestamp end, uint32_t version,
           const double* values, size_t count);
  void push_back(const window_result& r) {
    add(r.key, r.start, r.end, r.version, r.values.data(), r.values.size());
  }
  /// Appends result i of `from`, as it lies.
  void add(const result_pack& from, size_t i);
  /// Appends packed results (from a message); false, leaving the pack as it was, when they are
  /// not a sequence of whole results.
  bool append(std::string_view packed);
  /// Replaces the content with packed results; false (and empty) when they do not decode.
  bool assign(std::string_view packed);
  void clear();
  void reserve(size_t results, size_t bytes);

  size_t size() const { return starts_.size(); }
  bool empty() const { return starts_.empty(); }
  /// Every result, packed: what `assign` takes.
  std::string_view bytes() const { return buf_; }
  /// bytes(), followed in memory by zeros up to the next multiple of 8: what a Cap'n Proto
  /// message may reference in place (Orphanage::referenceExternalData) instead of copying.
  std::string_view padded_bytes();
  result_view operator[](size_t i) const;
  /// Overwrites the version and values of result i (same count) with those given.
  void update(size_t i, uint32_t version, const double* values, size_t count);

  class iterator {
  public:
    iterator(const result_pack* p, size_t i)
      : p_(p)
      , i_(i) {}
    result_view operator*() const { return (*p_)[i_]; }
    iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator!=(const iterator& o) const { return i_ != o.i_; }

  private:
    const result_pack* p_;
    size_t i_;
  };
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, size()}; }

private:
  std::string_view entry(size_t i) const;

  std::string buf_;
  std::vector<size_t> starts_; ///< where each result begins in buf_
};

} // namespace weir
