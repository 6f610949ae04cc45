#include "actors/frame.hpp"

#include <kj/io.h>

#include "schema/batch.capnp.h"

namespace weir {

frame to_frame(capnp::MessageBuilder& builder) {
  frame f;
  f.words.resize(capnp::computeSerializedSizeInWords(builder));
  kj::ArrayOutputStream out(
    kj::arrayPtr(reinterpret_cast<kj::byte*>(f.words.data()), f.words.size() * sizeof(uint64_t)));
  capnp::writeMessage(out, builder);
  return f;
}

namespace {

capnp::ReaderOptions options_of(decode_limits limits) {
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = limits.traversal_words;
  opts.nestingLimit = limits.nesting;
  return opts;
}

} // namespace

frame_reader::frame_reader(const frame& f, decode_limits limits)
  : reader_(kj::arrayPtr(reinterpret_cast<const capnp::word*>(f.words.data()), f.words.size()),
            options_of(limits)) {
  // nop
}

frame encode_event_batch(uint32_t partition, timestamp watermark, const event_columns& c,
                         const aggregate_layout& layout) {
  const size_t n = c.size();
  // One first segment big enough for the whole batch: no segment growth on the hot path.
  const size_t bytes = n * (8 * 3 + 4 + 8 * layout.value_width + 8 * layout.hash_width)
                       + c.key_bytes.size() + 1024;
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
  return to_frame(mb);
}

} // namespace weir
