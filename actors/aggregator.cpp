#include "actors/aggregator.hpp"

#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include "actors/core/fault.hpp"
#include "actors/core/timeparse.hpp"
#include "actors/frame.hpp"
#include "schema/batch.capnp.h"

namespace weir {

namespace {

/// Fault injection (docs/faults.md): processes a batch in two halves with the point
/// `aggregator.mid_batch` between them. Only taken when WEIR_FAULT is set; the result is the
/// same as one process() call since records are processed one after the other. False when a
/// `fail` is due (the first half is then processed, the second not).
bool process_in_halves(window_operator& op, const event_view& v) {
  const size_t h = v.n / 2;
  event_view first = v;
  first.n = h;
  op.process(first);
  if (fault::hit("aggregator.mid_batch"))
    return false;
  // key_end holds offsets from the start of key_bytes: the second half gets them rebased.
  const uint32_t base = h == 0 ? 0 : v.key_end[h - 1];
  std::vector<uint32_t> key_end(v.key_end + h, v.key_end + v.n);
  for (auto& e : key_end)
    e -= base;
  event_view second = v;
  second.n = v.n - h;
  second.time = v.time + h;
  second.wm_before = v.wm_before + h;
  second.key_hash = v.key_hash + h;
  second.key_end = key_end.data();
  second.key_bytes = v.key_bytes + base;
  second.values = v.values + h * v.value_width;
  second.hashes = v.hashes + h * v.hash_width;
  op.process(second);
  return true;
}

/// Fault injection: `aggregator.record~KEY` throws as a bug in processing that record would.
void check_record_faults(const event_view& v) {
  uint32_t prev = 0;
  for (size_t i = 0; i < v.n; ++i) {
    std::string_view key{v.key_bytes + prev, v.key_end[i] - prev};
    prev = v.key_end[i];
    if (fault::hit("aggregator.record", key))
      throw fault::injected_failure("aggregator.record");
  }
}

} // namespace

caf::error decode_batch(const frame& f, const aggregate_layout& layout, uint32_t pipeline,
                        uint32_t partition, event_view& v, record_span& origin) {
  return decode_frame<schema::EventBatch>(f, [&](schema::EventBatch::Reader b) {
    if (b.getPartition() != partition)
      refuse_frame("a batch of partition " + std::to_string(b.getPartition()) +
                   " sent to partition " + std::to_string(partition));
    // Widths first: they bound the sizes computed from them below.
    if (b.getValueWidth() != layout.value_width || b.getHashWidth() != layout.hash_width)
      refuse_frame("value and hash widths " + std::to_string(b.getValueWidth()) + " and " +
                   std::to_string(b.getHashWidth()) + " where the pipeline has " +
                   std::to_string(layout.value_width) + " and " +
                   std::to_string(layout.hash_width));
    v = event_view{};
    v.n = b.getCount();
    v.value_width = layout.value_width;
    v.hash_width = layout.hash_width;
    v.time = column<int64_t>(b.getTime(), v.n);
    v.wm_before = column<int64_t>(b.getWmBefore(), v.n);
    v.key_hash = column<uint64_t>(b.getKeyHash(), v.n);
    v.key_end = column<uint32_t>(b.getKeyEnd(), v.n);
    auto kb = b.getKeyBytes();
    v.key_bytes = reinterpret_cast<const char*>(kb.begin());
    v.values = column<double>(b.getValues(), v.n * v.value_width);
    v.hashes = column<uint64_t>(b.getHashes(), v.n * v.hash_width);
    if (v.n > 0 && (!v.time || !v.wm_before || !v.key_hash || !v.key_end || !v.values || !v.hashes))
      refuse_frame("a column shorter than the batch's " + std::to_string(v.n) + " events");
    // Key ends must be monotone and within the key bytes; event times within what a parser
    // gives (window arithmetic stays far from overflow).
    uint32_t prev = 0;
    for (size_t i = 0; i < v.n; ++i) {
      if (v.key_end[i] < prev || v.key_end[i] > kb.size())
        refuse_frame("key ends out of order or past the key bytes");
      prev = v.key_end[i];
      if (v.time[i] < min_parsed_time || v.time[i] > max_parsed_time)
        refuse_frame("an event time outside the years 0000 to 9999");
    }
    origin = {pipeline, b.getOriginSource(), b.getOriginBegin(), b.getOriginEnd(),
              b.getOriginLine()};
  });
}

caf::error aggregator_state::process(const event_view& v, const record_span& origin) {
  // A failure while processing the records names them (the batch's origin), so that the
  // supervisor can retry, isolate and finally dead-letter a poison record.
  try {
    if (!fault::armed()) {
      op->process(v);
      return caf::none;
    }
    // fault injection: aggregator.mid_batch, aggregator.record
    check_record_faults(v);
    if (!process_in_halves(*op, v))
      return fault::injected("aggregator.mid_batch");
    return caf::none;
  } catch (const std::exception& e) {
    return make_record_error(origin, "aggregating records failed: " + std::string(e.what()));
  }
}

aggregator_actor::behavior_type
aggregator(aggregator_actor::stateful_pointer<aggregator_state> self, uint32_t pipeline,
           uint32_t partition, pipeline_config cfg, std::string snapshot,
           preprocess_actor preprocess, updater_actor updater, std::shared_ptr<state_meter> meter) {
  auto& st = self->state;
  st.pipeline = pipeline;
  st.partition = partition;
  st.meter = std::move(meter);
  if (st.meter)
    st.mailbox = st.meter->mailboxes.partition(partition);
  st.layout = make_layout(cfg.aggregates);
  st.op = std::make_unique<window_operator>(cfg);
  if (!snapshot.empty()) {
    if (auto err = st.op->restore(snapshot)) {
      spdlog::error("pipeline {} partition {}: cannot restore state: {}", cfg.name, partition,
                    render(err));
      self->quit(err);
    }
  }
  return {
    [self, preprocess](batch_atom, uint64_t seq, const frame& f) {
      auto& st = self->state;
      mailbox_depths::note(self, st.mailbox);
      event_view v;
      record_span origin;
      auto err = decode_batch(f, st.layout, st.pipeline, st.partition, v, origin);
      if (!err)
        err = st.process(v, origin);
      if (err) {
        spdlog::error("partition {}: {}", st.partition, render(err));
        self->quit(err);
        return;
      }
      // A partition spawned on another node before its preprocess acks whoever sent the batch.
      auto to = preprocess ? preprocess : caf::actor_cast<preprocess_actor>(self->current_sender());
      self->send(to, ack_atom::value, st.partition, seq);
    },
    [self, updater](marker_atom, const frame& f) {
      auto& st = self->state;
      mailbox_depths::note(self, st.mailbox);
      epoch_marker m;
      if (auto err = decode_marker(f, m, 0)) { // preprocess sends partitions no offsets
        spdlog::error("partition {}: {}", st.partition, render(err));
        self->quit(err);
        return;
      }
      st.fired.clear();
      if (m.kind == marker_kind::final)
        st.op->flush(st.fired);
      else
        st.op->advance(m.watermark, st.fired);
      capnp::MallocMessageBuilder mb;
      auto c = mb.initRoot<schema::AggregatorEpoch>();
      c.setEpoch(m.epoch);
      c.setPartition(st.partition);
      if (auto rs = st.fired.padded_bytes(); !rs.empty())
        c.adoptResultPack(mb.getOrphanage().referenceExternalData(as_data(rs)));
      if (m.checkpoint) {
        // Only what changed since the last epoch: rows put and deleted, and the meta value.
        st.op->checkpoint(st.delta);
        c.setState(as_data(st.delta.meta));
        c.setStatePuts(as_data(st.delta.puts));
        c.setStateDels(as_data(st.delta.dels));
      } else {
        st.op->discard_changes(); // nothing is stored: the change log must not grow
      }
      c.setStateMemory(st.op->memory_bytes());
      c.setStateRows(st.op->slices());
      if (fault::hit("send.contribution")) { // fault injection
        self->quit(fault::injected("send.contribution"));
        return;
      }
      self->send(updater, agg_epoch_atom::value, st.pipeline,
                 to_frame<schema::AggregatorEpoch>(mb));
      if (m.kind != marker_kind::normal)
        self->quit();
    },
  };
}

} // namespace weir
