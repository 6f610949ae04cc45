#pragma once

/// Turning Cap'n Proto messages into frames and back. Decoding applies explicit limits and turns
/// a kj::Exception from bad bytes into an error, in this one place.

#include <cstring>
#include <optional>
#include <string_view>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "actors/actors.hpp"
#include "actors/core/error.hpp"
#include "actors/core/types.hpp"
#include "schema/batch.capnp.h"

namespace weir {

/// Serializes a message into a frame (one copy of the segments).
frame to_frame(capnp::MessageBuilder& builder);

/// Encodes the accepted events of one partition as an EventBatch frame.
frame encode_event_batch(uint32_t partition, timestamp watermark, const event_columns& c,
                         const aggregate_layout& layout, const record_span& origin = {});

/// A window result or a dead letter into its schema struct and back.
void encode_result(schema::WindowResult::Builder b, const window_result& w);
window_result decode_result(schema::WindowResult::Reader r);
/// The same into `out`, reusing its key and values buffers.
void decode_result(schema::WindowResult::Reader r, window_result& out);
void encode_dead_letter(schema::DeadLetter::Builder b, const dead_letter& d);
dead_letter decode_dead_letter(schema::DeadLetter::Reader r);

/// How an epoch ends, on the wire (schema::MarkerKind) and back; a value this build does not
/// know gives nothing.
static_assert(static_cast<int>(schema::MarkerKind::NORMAL) ==
                static_cast<int>(marker_kind::normal) &&
              static_cast<int>(schema::MarkerKind::STOP) == static_cast<int>(marker_kind::stop) &&
              static_cast<int>(schema::MarkerKind::FINAL) == static_cast<int>(marker_kind::final));
inline schema::MarkerKind to_wire(marker_kind k) {
  return static_cast<schema::MarkerKind>(k);
}
inline std::optional<marker_kind> from_wire(schema::MarkerKind k) {
  switch (k) {
    case schema::MarkerKind::NORMAL:
      return marker_kind::normal;
    case schema::MarkerKind::STOP:
      return marker_kind::stop;
    case schema::MarkerKind::FINAL:
      return marker_kind::final;
  }
  return std::nullopt;
}

/// Limits for decoding a frame: bounded traversal and nesting.
struct decode_limits {
  uint64_t traversal_words = uint64_t{1} << 32;
  int nesting = 16;
};

/// A decoded frame; reader() is valid as long as this object and the frame live.
class frame_reader {
public:
  explicit frame_reader(const frame& f, decode_limits limits = {});
  template <class T>
  typename T::Reader root() {
    return reader_.getRoot<T>();
  }

private:
  capnp::FlatArrayMessageReader reader_;
};

/// Runs fn(reader) and converts a kj::Exception thrown by bad bytes into errc::decode.
template <class F>
caf::error decode_frame(const frame& f, F&& fn) {
  try {
    frame_reader r{f};
    fn(r);
    return caf::none;
  } catch (const kj::Exception& e) {
    return make_error(errc::decode, std::string("undecodable frame: ") + e.getDescription().cStr());
  }
}

/// A column stored as a Data blob of little-endian values.
template <class T>
void set_column(capnp::Data::Builder dst, const T* src, size_t n) {
  if (n > 0)
    std::memcpy(dst.begin(), src, n * sizeof(T));
}

/// Returns a typed pointer into a Data blob holding n values of T, or nullptr if it is too short.
template <class T>
const T* column(capnp::Data::Reader d, size_t n) {
  if (d.size() < n * sizeof(T))
    return nullptr;
  return reinterpret_cast<const T*>(d.begin());
}

inline std::string_view as_view(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

/// Bytes as a Cap'n Proto Data reader, to set a Data field (it copies them).
inline capnp::Data::Reader as_data(std::string_view s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

} // namespace weir
