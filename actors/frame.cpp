#include "actors/frame.hpp"

#include <cstdio>

#include <kj/io.h>

#include "schema/batch.capnp.h"

namespace weir {

namespace detail {

frame to_frame(capnp::MessageBuilder& builder, uint64_t type) {
  frame f;
  f.type = type;
  f.words.resize(capnp::computeSerializedSizeInWords(builder));
  kj::ArrayOutputStream out(
    kj::arrayPtr(reinterpret_cast<kj::byte*>(f.words.data()), f.words.size() * sizeof(uint64_t)));
  capnp::writeMessage(out, builder);
  return f;
}

} // namespace detail

void refuse_frame(std::string why) {
  throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                      kj::heapString(why.data(), why.size()));
}

namespace {

template <class... Ts>
std::string name_of(uint64_t type, type_list<Ts...>) {
  std::string out;
  ((type == capnp::typeId<Ts>() ? void(out = frame_type_name<Ts>()) : void()), ...);
  return out;
}

/// The words of `f` for the reader, after the checks that come before reading any of them.
kj::ArrayPtr<const capnp::word> checked_words(const frame& f, const decode_limits& limits) {
  if (f.words.empty())
    refuse_frame("empty frame");
  if (f.words.size() > limits.max_words)
    refuse_frame("a frame of " + std::to_string(f.words.size() * 8) +
                 " bytes is over the limit of " + std::to_string(limits.max_words * 8));
  return kj::arrayPtr(reinterpret_cast<const capnp::word*>(f.words.data()), f.words.size());
}

capnp::ReaderOptions options_of(const frame& f, const decode_limits& limits) {
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = limits.traversal_factor * f.words.size();
  opts.nestingLimit = limits.nesting;
  return opts;
}

} // namespace

std::string frame_type_name(uint64_t type) {
  if (type == 0)
    return "an untyped frame";
  auto name = name_of(type, frame_roots{});
  if (!name.empty())
    return name;
  char buf[32];
  std::snprintf(buf, sizeof(buf), "struct @0x%016llx", static_cast<unsigned long long>(type));
  return buf;
}

frame_reader::frame_reader(const frame& f, decode_limits limits)
  : type_(f.type)
  , reader_(checked_words(f, limits), options_of(f, limits)) {
  // Trailing words are not a message's: a frame is exactly one message.
  if (reader_.getEnd() != reinterpret_cast<const capnp::word*>(f.words.data() + f.words.size()))
    refuse_frame("the frame has words after its message");
}

caf::error decode_error(const std::string& type, const kj::Exception& e) {
  return make_error(errc::decode,
                    "undecodable " + type + " frame: " + std::string(e.getDescription().cStr()));
}

frame encode_event_batch(uint32_t partition, timestamp watermark, const event_columns& c,
                         const aggregate_layout& layout, const record_span& origin) {
  const size_t n = c.size();
  // One first segment big enough for the whole batch: no segment growth on the hot path.
  const size_t bytes =
    n * (8 * 3 + 4 + 8 * layout.value_width + 8 * layout.hash_width) + c.key_bytes.size() + 1024;
  capnp::MallocMessageBuilder mb(static_cast<unsigned>(bytes / 8 + 64));
  auto b = mb.initRoot<schema::EventBatch>();
  b.setPartition(partition);
  b.setCount(static_cast<uint32_t>(n));
  b.setWatermark(watermark);
  set_column(b.initTime(n * 8), c.time.data(), n);
  set_column(b.initWmBefore(n * 8), c.wm_before.data(), n);
  set_column(b.initKeyHash(n * 8), c.key_hash.data(), n);
  set_column(b.initKeyEnd(n * 4), c.key_end.data(), n);
  set_column(b.initKeyBytes(c.key_bytes.size()), c.key_bytes.data(), c.key_bytes.size());
  b.setValueWidth(static_cast<uint32_t>(layout.value_width));
  set_column(b.initValues(c.values.size() * 8), c.values.data(), c.values.size());
  b.setHashWidth(static_cast<uint32_t>(layout.hash_width));
  set_column(b.initHashes(c.hashes.size() * 8), c.hashes.data(), c.hashes.size());
  b.setOriginSource(origin.source);
  b.setOriginBegin(origin.begin);
  b.setOriginEnd(origin.end);
  b.setOriginLine(origin.line);
  return to_frame<schema::EventBatch>(mb);
}

frame encode_marker(const epoch_marker& m) {
  capnp::MallocMessageBuilder mb(16);
  auto b = mb.initRoot<schema::EpochMarker>();
  b.setEpoch(m.epoch);
  b.setKind(to_wire(m.kind));
  b.setWatermark(m.watermark);
  b.setCheckpoint(m.checkpoint);
  auto offs = b.initOffsets(static_cast<unsigned>(m.offsets.size()));
  for (size_t i = 0; i < m.offsets.size(); ++i) {
    offs[static_cast<unsigned>(i)].setSource(m.offsets[i].first);
    offs[static_cast<unsigned>(i)].setOffset(m.offsets[i].second);
  }
  return to_frame<schema::EpochMarker>(mb);
}

caf::error decode_marker(const frame& f, epoch_marker& out, size_t max_offsets) {
  return decode_frame<schema::EpochMarker>(f, [&](schema::EpochMarker::Reader m) {
    auto kind = from_wire(m.getKind());
    if (!kind)
      refuse_frame("a marker kind this build does not know (" +
                   std::to_string(static_cast<unsigned>(m.getKind())) + ")");
    auto offs = m.getOffsets();
    if (offs.size() > max_offsets)
      refuse_frame(std::to_string(offs.size()) + " offsets, more than the " +
                   std::to_string(max_offsets) + " allowed");
    out = epoch_marker{};
    out.epoch = m.getEpoch();
    out.kind = *kind;
    out.watermark = m.getWatermark();
    out.checkpoint = m.getCheckpoint();
    out.offsets.reserve(offs.size());
    for (auto o : offs)
      out.offsets.emplace_back(o.getSource(), o.getOffset());
  });
}

void encode_result(schema::WindowResult::Builder b, const window_result& w) {
  b.setKey(as_data(w.key));
  b.setStart(w.start);
  b.setEnd(w.end);
  b.setVersion(w.version);
  auto vs = b.initValues(static_cast<unsigned>(w.values.size()));
  for (size_t j = 0; j < w.values.size(); ++j)
    vs.set(static_cast<unsigned>(j), w.values[j]);
}

window_result decode_result(schema::WindowResult::Reader r) {
  window_result w;
  decode_result(r, w);
  return w;
}

void decode_result(schema::WindowResult::Reader r, window_result& out) {
  auto key = as_view(r.getKey());
  out.key.assign(key.data(), key.size());
  out.start = r.getStart();
  out.end = r.getEnd();
  out.version = r.getVersion();
  out.values.clear();
  for (auto v : r.getValues())
    out.values.push_back(v);
}

void encode_dead_letter(schema::DeadLetter::Builder b, const dead_letter& d) {
  b.setSource(d.source);
  b.setOffset(d.offset);
  b.setRaw(as_data(d.raw));
  b.setReason(capnp::Text::Reader(d.reason.data(), d.reason.size()));
}

dead_letter decode_dead_letter(schema::DeadLetter::Reader r) {
  dead_letter d;
  d.source = r.getSource();
  d.offset = r.getOffset();
  d.raw = std::string(as_view(r.getRaw()));
  auto reason = r.getReason();
  d.reason.assign(reason.cStr(), reason.size());
  return d;
}

} // namespace weir
