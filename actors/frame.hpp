#pragma once

/// Turning Cap'n Proto messages into frames and back. Decoding applies explicit limits and turns
/// a kj::Exception from bad bytes into an error, in this one place.

#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>

#include "actors/actors.hpp"
#include "actors/core/error.hpp"
#include "actors/core/types.hpp"
#include "schema/batch.capnp.h"

namespace weir {

namespace detail {
frame to_frame(capnp::MessageBuilder& builder, uint64_t type);
} // namespace detail

/// Serializes a message whose root is a T into a frame that says so (one copy of the segments).
/// T is explicit: a frame names the struct it was built with, and a reader of another struct
/// refuses it.
template <class T>
frame to_frame(capnp::MessageBuilder& builder) {
  static_assert(capnp::kind<T>() == capnp::Kind::STRUCT, "a frame holds a schema struct");
  return detail::to_frame(builder, capnp::typeId<T>());
}

/// Encodes the accepted events of one partition as an EventBatch frame.
frame encode_event_batch(uint32_t partition, timestamp watermark, const event_columns& c,
                         const aggregate_layout& layout, const record_span& origin = {});

/// Encodes an epoch marker as an EpochMarker frame: epoch, kind, watermark, checkpoint flag and
/// offsets. Ingest sends it to preprocess with the offsets it reached; preprocess sends it on to
/// its partitions with none (they commit no offsets, and the frame goes to every partition).
frame encode_marker(const epoch_marker& m);

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

/// The limits every decode of a frame applies (frame_reader). A frame's bytes are not trusted:
/// they may come from another node, and even a local one is checked, so that a bug upstream is a
/// clear error instead of a misread. A frame outside them fails with errc::decode.
struct decode_limits {
  /// Larger frames are refused before a byte is read. Weir's frames stay far below: a chunk is
  /// at most batch_bytes, an epoch's contribution holds one epoch's results and state changes
  /// (tens of MiB for a million windows); a Cap'n Proto Data field holds at most 512 MiB.
  size_t max_words = size_t{1} << 27; // 1 GiB
  /// Words a decode may read, as a multiple of the frame's size (Cap'n Proto's traversal limit).
  /// Every struct and list read counts its words, so a frame whose pointers all lead to the same
  /// bytes cannot make a reader walk more than this many times its size. Our readers read each
  /// object of a frame once.
  uint64_t traversal_factor = 4;
  /// How deep pointers may lead: our deepest frame goes four levels (DeadLetters > letters >
  /// letter > raw).
  int nesting = 8;
};

/// Throws the kj::Exception that decode_frame turns into errc::decode: a frame that reads well
/// but says something impossible (a column shorter than its count, a partition out of range).
[[noreturn]] void refuse_frame(std::string why);

/// The display name of a frame's root struct ("EventBatch"), for messages; the hex type id for a
/// struct that is not one of the frame roots below.
std::string frame_type_name(uint64_t type);

template <class T>
std::string frame_type_name() {
  return capnp::Schema::from<T>().getShortDisplayName().cStr();
}

/// The structs frames hold at their root, one per kind of message between actors.
template <class... Ts>
struct type_list {};
using frame_roots =
  type_list<schema::RawChunk, schema::EventBatch, schema::EpochMarker, schema::PreprocessEpoch,
            schema::AggregatorEpoch, schema::QueryResult, schema::DeadLetters>;

/// A frame opened for reading in place (no copy of its words), within `limits`. The constructor
/// and root() throw kj::Exception for a frame that is empty, too large, truncated, has trailing
/// words or holds another struct; decode_frame turns that into an error.
class frame_reader {
public:
  explicit frame_reader(const frame& f, decode_limits limits = {});

  template <class T>
  typename T::Reader root() {
    if (type_ != capnp::typeId<T>())
      refuse_frame("it holds " + frame_type_name(type_) + ", not " + frame_type_name<T>());
    return reader_.getRoot<T>();
  }

private:
  uint64_t type_;
  capnp::FlatArrayMessageReader reader_;
};

/// Reads an EpochMarker frame into `out`. errc::decode for bad bytes, a frame of another struct,
/// a marker kind this build does not know or more than `max_offsets` offsets (preprocess allows
/// one per source generation ingest may report; a partition, which gets none, allows 0).
caf::error decode_marker(const frame& f, epoch_marker& out, size_t max_offsets);

/// The offsets preprocess accepts in a marker from ingest: one per source ingest reads, and a
/// pipeline may read many (every generation of a rotated file is a source of its own). 2^20 is
/// far beyond any real pipeline and keeps a marker below 17 MiB.
constexpr size_t max_marker_offsets = size_t{1} << 20;

/// errc::decode for a frame meant to hold `type` that failed with `e`.
caf::error decode_error(const std::string& type, const kj::Exception& e);

/// Runs fn(root) on the T at the root of `f` and turns a kj::Exception (bad bytes, limits, or
/// refuse_frame in fn) into errc::decode naming T. Readers must not outlive fn; what fn keeps
/// (string views of Data fields) points into f's words.
template <class T, class F>
caf::error decode_frame(const frame& f, F&& fn, decode_limits limits = {}) {
  try {
    frame_reader r{f, limits};
    fn(r.root<T>());
    return caf::none;
  } catch (const kj::Exception& e) {
    return decode_error(frame_type_name<T>(), e);
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
