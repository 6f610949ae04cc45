#pragma once

/// The packed rows in which a window operator's state changes travel from the aggregator to the
/// warehouse (the `windows` table): see window_operator.hpp for what a row is.

#include <cstddef>
#include <string>
#include <string_view>

#include "actors/core/codec.hpp"

namespace weir {

/// What one partition's state changed by, since the previous checkpoint. Rows are (row key,
/// value) pairs; a row key is the window start (8 bytes, big-endian, sign-flipped) followed by
/// the key bytes, so rows sort by start, then key. `puts` holds (varint length, row key, varint
/// length, value) entries, `dels` holds (varint length, row key) entries.
struct state_delta {
  std::string meta;
  std::string puts;
  std::string dels;
  size_t put_count = 0;
  size_t del_count = 0;

  void clear() {
    meta.clear();
    puts.clear();
    dels.clear();
    put_count = 0;
    del_count = 0;
  }
};

/// Calls fn(row key, value) for each put of a delta (or of a snapshot's rows); false when the
/// buffer is malformed.
template <class F>
bool for_each_row(std::string_view rows, F&& fn) {
  codec::reader in{rows};
  while (in.ok() && in.remaining() > 0) {
    auto k = in.bytes();
    auto v = in.bytes();
    if (!in.ok())
      return false;
    fn(k, v);
  }
  return in.ok();
}

/// Calls fn(row key) for each delete of a delta; false when the buffer is malformed.
template <class F>
bool for_each_key(std::string_view keys, F&& fn) {
  codec::reader in{keys};
  while (in.ok() && in.remaining() > 0) {
    auto k = in.bytes();
    if (!in.ok())
      return false;
    fn(k);
  }
  return in.ok();
}

} // namespace weir
