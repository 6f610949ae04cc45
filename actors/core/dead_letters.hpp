#pragma once

/// Dead letters travel from the preprocess engine to the warehouse packed one after the other in
/// one buffer, each in the exact layout of a value of the warehouse's dead_letters table (before
/// its seal): source u32, offset u64, reason (u32 length + bytes), raw (u32 length + bytes),
/// little-endian (actors/core/codec.hpp). A workload where most records are late makes millions
/// of them: packed, a dead letter costs no heap allocation of its own, crosses each actor
/// boundary as one copy of one buffer, and is written to the store without re-encoding.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "actors/core/types.hpp"

namespace weir {

/// One dead letter read in place from a pack or a stored value; valid while those bytes are.
struct dead_letter_view {
  uint32_t source = 0;
  uint64_t offset = 0;
  std::string_view reason;
  std::string_view raw;

  operator dead_letter() const {
    return dead_letter{source, offset, std::string{raw}, std::string{reason}};
  }
};

/// Reads one packed dead letter from the front of `in` and removes it from `in`; false (and
/// `in` unchanged) when the bytes do not hold a whole one.
bool read_dead_letter(std::string_view& in, dead_letter_view& out);

class dead_letter_pack {
public:
  /// Raw text is kept whole up to this many bytes, then cut and ended with a marker that says
  /// how long it was: " [weir: cut here, N bytes in all]".
  static constexpr size_t max_raw = size_t{64} << 10;

  /// Appends one dead letter (raw cut as max_raw says).
  void add(uint32_t source, uint64_t offset, std::string_view reason, std::string_view raw);
  void push_back(const dead_letter& d) { add(d.source, d.offset, d.reason, d.raw); }
  /// Appends every dead letter of `other`, in its order.
  void append(const dead_letter_pack& other);
  /// Replaces the content with packed bytes (from a message); false, leaving the pack empty,
  /// when they are not a sequence of whole dead letters.
  bool assign(std::string_view packed);
  void clear();

  size_t size() const { return starts_.size(); }
  bool empty() const { return starts_.empty(); }
  /// Every dead letter, packed: what `assign` takes.
  std::string_view bytes() const { return buf_; }
  /// bytes(), followed in memory by zeros up to the next multiple of 8: what a Cap'n Proto
  /// message may reference in place (Orphanage::referenceExternalData) instead of copying.
  std::string_view padded_bytes();
  /// The packed bytes of dead letter i: a dead_letters value without its seal.
  std::string_view entry(size_t i) const;
  dead_letter_view operator[](size_t i) const;
  dead_letter_view back() const { return (*this)[size() - 1]; }

  class iterator {
  public:
    iterator(const dead_letter_pack* p, size_t i)
      : p_(p)
      , i_(i) {}
    dead_letter_view operator*() const { return (*p_)[i_]; }
    iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator!=(const iterator& o) const { return i_ != o.i_; }

  private:
    const dead_letter_pack* p_;
    size_t i_;
  };
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, size()}; }

private:
  std::string buf_;
  std::vector<size_t> starts_; ///< where each dead letter begins in buf_
};

} // namespace weir
