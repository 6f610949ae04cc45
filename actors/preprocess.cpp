#include "actors/preprocess.hpp"

#include <chrono>
#include <cstring>
#include <limits>

#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include "actors/aggregator.hpp"
#include "actors/core/codec.hpp"
#include "actors/core/fault.hpp"
#include "actors/frame.hpp"
#include "schema/batch.capnp.h"

namespace weir {

namespace {

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0)))
    --q;
  return q;
}

/// Sends what the preprocessor made of the records of `origin` to the partitions (one batch per
/// partition that got events, counted in `sent`) and keeps its dead letters for the epoch.
/// False when an injected fault made the actor quit.
bool ship(preprocess_actor::stateful_pointer<preprocess_state> self, uint64_t seq,
          const record_span& origin, const aggregate_layout& layout, size_t& sent) {
  auto& st = self->state;
  st.epoch_dead_letters.append(st.pre->dead_letters());
  for (size_t p = 0; p < st.partitions.size(); ++p) {
    auto& cols = st.pre->partition(p);
    if (cols.size() == 0)
      continue;
    for (auto t : cols.time)
      st.max_time = std::max(st.max_time, t);
    if (fault::hit("send.batch")) { // fault injection
      self->quit(fault::injected("send.batch"));
      return false;
    }
    self->send(
      st.partitions[p], batch_atom::value, seq,
      encode_event_batch(static_cast<uint32_t>(p), st.pre->watermark(), cols, layout, origin));
    ++sent;
  }
  st.pre->clear_outputs();
  return true;
}

/// Processes a suspect chunk one line at a time, each shipped on its own, so that a failure
/// names its line; poison lines go to dead letters unprocessed (actors/core/poison.hpp).
caf::error take_lines(preprocess_actor::stateful_pointer<preprocess_state> self, uint64_t seq,
                      const raw_chunk& c, const aggregate_layout& layout, size_t& sent,
                      bool& quit) {
  auto& st = self->state;
  const auto data = c.data;
  size_t pos = 0;
  while (pos < data.size()) {
    auto nl = static_cast<const char*>(std::memchr(data.data() + pos, '\n', data.size() - pos));
    size_t end = nl == nullptr ? data.size() : static_cast<size_t>(nl - data.data()) + 1;
    auto line = data.substr(pos, end - pos);
    const record_span at{st.pipeline, c.source, c.offset + pos, c.offset + end, true};
    pos = end;
    if (const auto* q = st.quarantined.poisoned(c.source, at.begin)) {
      spdlog::warn("pipeline {}: poison record at source {} offset {} goes to dead letters: {}",
                   st.cfg.name, c.source, at.begin, q->what);
      st.pre->reject_poison(c.source, at.begin, line,
                            "poison record: processing failed on every retry: " + q->what);
    } else {
      try {
        st.pre->process(c.source, at.begin, line);
      } catch (const std::exception& e) {
        return make_record_error(at, "processing a record failed: " + std::string(e.what()));
      }
    }
    if (!ship(self, seq, at, layout, sent)) {
      quit = true;
      return caf::none;
    }
  }
  return caf::none;
}

/// Processes the lines of a chunk decoded by decode_chunk and ships what they give. `quit`:
/// an injected fault made the actor quit.
caf::error take_chunk(preprocess_actor::stateful_pointer<preprocess_state> self, uint64_t seq,
                      raw_chunk c, const aggregate_layout& layout, size_t& sent, bool& quit) {
  auto& st = self->state;
  // A source seen first now (one that appeared while running, or every source when ingest runs
  // on another node) is bound before its header is read: the header is read by its binding.
  if (c.config_index > 0 && st.bound.insert(c.source).second)
    st.pre->bind_source(c.source, c.config_index - 1);
  if (c.header && st.headers_seen.insert(c.source).second)
    st.pre->set_header(c.source, *c.header);
  if (c.header_len > 0) {
    // A csv stream on stdin starts with its own header line.
    auto line = c.data.substr(0, c.header_len);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
      line.remove_suffix(1);
    st.pre->set_header(c.source, line);
    st.headers_seen.insert(c.source);
    c.data.remove_prefix(c.header_len);
    c.offset += c.header_len;
  }
  if (c.long_span > 0) {
    // One over-long line that ingest streamed past: a dead letter, nothing to process.
    st.pre->reject_long_line(c.source, c.offset, c.long_span, c.long_length, c.data);
    quit = !ship(self, seq, {st.pipeline, c.source, c.offset, c.offset + c.long_span, false},
                 layout, sent);
    return caf::none;
  }
  const record_span whole{st.pipeline, c.source, c.offset, c.offset + c.data.size(), false};
  if (st.quarantined.touches(c.source, whole.begin, whole.end))
    return take_lines(self, seq, c, layout, sent, quit);
  try {
    st.pre->process(c.source, c.offset, c.data);
  } catch (const std::exception& e) {
    return make_record_error(whole, "processing records failed: " + std::string(e.what()));
  }
  quit = !ship(self, seq, whole, layout, sent);
  return caf::none;
}

} // namespace

caf::error decode_chunk(const frame& f, size_t sources, raw_chunk& out) {
  return decode_frame<schema::RawChunk>(f, [&](schema::RawChunk::Reader c) {
    out = raw_chunk{};
    out.source = c.getSource();
    out.offset = c.getOffset();
    out.data = as_view(c.getData());
    if (c.hasHeader()) {
      auto h = c.getHeader();
      out.header = std::string_view{h.cStr(), h.size()};
    }
    out.header_len = c.getHeaderLen();
    out.long_span = c.getLongSpan();
    out.long_length = c.getLongLength();
    out.config_index = c.getConfigIndex();
    if (out.config_index > sources)
      refuse_frame("source " + std::to_string(out.source) + " bound to configured source " +
                   std::to_string(out.config_index) + " of " + std::to_string(sources));
    if (out.header_len > out.data.size())
      refuse_frame("a header line of " + std::to_string(out.header_len) + " bytes in " +
                   std::to_string(out.data.size()) + " bytes of data");
    const uint64_t span = out.long_span > 0 ? out.long_span : out.data.size();
    if (out.long_span > 0 && out.data.size() > out.long_span)
      refuse_frame("a long line's head longer than the line");
    if (out.offset > std::numeric_limits<uint64_t>::max() - span)
      refuse_frame("bytes past the largest offset");
  });
}

caf::error preprocess_state::check_rejects() const {
  const auto& k = pre->counters();
  const auto rejected = total_rejected(k.rejected);
  auto err = guard->check(k.read, rejected, false);
  if (!err || epoch_dead_letters.empty())
    return err;
  // Only a run that stops pays for the example in its message.
  const auto d = epoch_dead_letters.back();
  return guard->check(k.read, rejected, false,
                      "offset " + std::to_string(d.offset) + ": " + std::string{d.reason});
}

std::string wrap_state(timestamp max_time, const std::string& inner) {
  std::string out;
  codec::writer w{out};
  w.u8(preprocess_state_version);
  w.i64(max_time);
  w.raw(inner);
  return out;
}

caf::error unwrap_state(std::string_view blob, timestamp& max_time, std::string_view& inner) {
  codec::reader r{blob};
  const auto version = r.u8();
  max_time = r.i64();
  if (!r.ok() || version != preprocess_state_version)
    return make_error(errc::store_corrupt, "preprocess state of an unknown format");
  inner = blob.substr(9);
  return caf::none;
}

caf::expected<preprocess_counters> unwrap_counters(std::string_view blob, timestamp* max_time) {
  auto s = unwrap_summary(blob, max_time);
  if (!s)
    return s.error();
  return std::move(s->counters);
}

caf::expected<preprocess_summary> unwrap_summary(std::string_view blob, timestamp* max_time) {
  if (blob.empty())
    return preprocess_summary{};
  timestamp t = min_timestamp;
  std::string_view inner;
  if (auto err = unwrap_state(blob, t, inner))
    return err;
  if (max_time)
    *max_time = t;
  return preprocessor::summary_of(inner);
}

timestamp final_watermark(const window_config& w, timestamp max_time) {
  if (max_time == min_timestamp)
    return min_timestamp;
  switch (w.kind) {
    case window_kind::session:
      return max_time + w.gap + w.allowed_lateness;
    case window_kind::tumbling:
    case window_kind::sliding: {
      int64_t slide = w.kind == window_kind::tumbling ? w.size : w.slide;
      int64_t last_start = w.offset + floor_div(max_time - w.offset, slide) * slide;
      return last_start + w.size + w.allowed_lateness;
    }
  }
  return max_time;
}

preprocess_actor::behavior_type
preprocess(preprocess_actor::stateful_pointer<preprocess_state> self, uint32_t pipeline,
           pipeline_config cfg, preprocess_restore restore, updater_actor updater,
           coordinator_actor coordinator, std::shared_ptr<state_meter> meter) {
  auto& st = self->state;
  st.pipeline = pipeline;
  st.cfg = cfg;
  st.meter = std::move(meter);
  size_t n = restore.partition_snapshots.size();
  try {
    st.pre = std::make_unique<preprocessor>(cfg, n);
  } catch (const std::exception& e) {
    // A stage's factory that took its options when the config was read refused now.
    auto err = make_error(errc::bad_config, "pipeline " + cfg.name + ": " + e.what());
    spdlog::error("{}", render(err));
    self->quit(err);
    auto bare = cfg;
    bare.stages.clear();
    st.pre = std::make_unique<preprocessor>(bare, n);
  }
  st.quarantined = std::move(restore.quarantined);
  if (!restore.snapshot.empty()) {
    std::string_view inner;
    auto err = unwrap_state(restore.snapshot, st.max_time, inner);
    if (!err)
      err = st.pre->restore_snapshot(inner);
    if (err) {
      spdlog::error("pipeline {}: cannot restore preprocess state: {}", cfg.name, render(err));
      self->quit(err);
    }
  }
  st.guard.emplace(cfg.name, cfg.preprocess.max_reject_ratio);
  st.guard->start(st.pre->counters().read, total_rejected(st.pre->counters().rejected));
  for (auto [source, index] : restore.bindings) {
    st.pre->bind_source(source, index);
    st.bound.insert(source);
  }
  if (!restore.dedupe.empty())
    st.pre->restore(st.pre->watermark(), restore.dedupe);
  for (size_t p = 0; p < n; ++p) {
    // Linked either way: a partition that fails takes its preprocess down, and the other way.
    auto a = p < restore.partitions.size()
               ? restore.partitions[p]
               : self->spawn(aggregator, pipeline, static_cast<uint32_t>(p), cfg,
                             std::move(restore.partition_snapshots[p]), preprocess_actor{self},
                             updater, st.meter);
    self->link_to(a);
    st.partitions.push_back(a);
  }
  auto layout = make_layout(cfg.aggregates);
  return {
    [self, layout](chunk_atom, uint64_t seq, const frame& f) {
      auto& st = self->state;
      if (st.meter)
        mailbox_depths::note(self, &st.meter->mailboxes.preprocess);
      size_t sent = 0;
      bool quit = false;
      const uint64_t read_before = st.pre->counters().read;
      raw_chunk c;
      auto err = decode_chunk(f, st.cfg.sources.size(), c);
      if (!err)
        err = take_chunk(self, seq, c, layout, sent, quit);
      if (st.meter && st.pre->counters().read > read_before)
        st.meter->records_read.fetch_add(st.pre->counters().read - read_before,
                                         std::memory_order_relaxed);
      if (!err && !quit)
        err = st.check_rejects();
      if (err) {
        spdlog::error("pipeline {}: {}", st.cfg.name, render(err));
        self->quit(err);
        return;
      }
      if (quit)
        return;
      auto sender = caf::actor_cast<ingest_actor>(self->current_sender());
      if (sent == 0) {
        self->send(sender, ack_atom::value, seq);
      } else {
        st.pending[seq] = sent;
        st.ack_to[seq] = sender;
      }
    },
    [self](ack_atom, uint32_t, uint64_t seq) {
      auto& st = self->state;
      auto i = st.pending.find(seq);
      if (i == st.pending.end())
        return;
      if (--i->second == 0) {
        st.pending.erase(i);
        auto j = st.ack_to.find(seq);
        self->send(j->second, ack_atom::value, seq);
        st.ack_to.erase(j);
      }
    },
    [self, updater, coordinator](marker_atom, const frame& f) {
      auto& st = self->state;
      if (st.meter)
        mailbox_depths::note(self, &st.meter->mailboxes.preprocess);
      epoch_marker m;
      if (auto err = decode_marker(f, m, max_marker_offsets)) {
        spdlog::error("pipeline {}: {}", st.cfg.name, render(err));
        self->quit(err);
        return;
      }
      // The offsets go to the updater in the contribution, not to the partitions.
      auto offsets = std::move(m.offsets);
      m.offsets.clear();
      // The actor clock (test_coordinator's under test) drives idle_timeout.
      st.pre->tick(std::chrono::duration_cast<std::chrono::microseconds>(
                     self->clock().now().time_since_epoch())
                     .count());
      if (m.kind == marker_kind::final) {
        // Every window open now fires; the watermark moves past all of them. It is computed
        // from the largest event time ever accepted (kept in the state), so that a re-run
        // with nothing new does not move it again.
        auto fw = final_watermark(st.cfg.window, st.max_time);
        if (fw > st.pre->watermark())
          st.pre->set_watermark(fw);
      }
      m.watermark = st.pre->watermark();
      // Encoded once per epoch: every partition, here or on another node, gets the same frame
      // (each message holds a copy of its few words).
      const auto marker = encode_marker(m);
      for (auto& p : st.partitions)
        self->send(p, marker_atom::value, marker);
      capnp::MallocMessageBuilder mb;
      auto c = mb.initRoot<schema::PreprocessEpoch>();
      c.setEpoch(m.epoch);
      c.setFinal(m.kind == marker_kind::final);
      c.setMarkerKind(to_wire(m.kind));
      auto offs = c.initOffsets(static_cast<unsigned>(offsets.size()));
      for (size_t i = 0; i < offsets.size(); ++i) {
        offs[static_cast<unsigned>(i)].setSource(offsets[i].first);
        offs[static_cast<unsigned>(i)].setOffset(offsets[i].second);
      }
      // Referenced in place, not copied (they may be many MiB): the pack stays as it is until
      // the message is serialized below.
      if (auto dls = st.epoch_dead_letters.padded_bytes(); !dls.empty())
        c.adoptDeadLetterPack(mb.getOrphanage().referenceExternalData(as_data(dls)));
      std::vector<std::pair<uint64_t, int64_t>> added;
      std::vector<uint64_t> expired;
      st.pre->take_dedupe_delta(added, expired);
      if (m.checkpoint) {
        auto da = c.initDedupeAdded(static_cast<unsigned>(added.size()));
        for (size_t i = 0; i < added.size(); ++i) {
          da[static_cast<unsigned>(i)].setId(added[i].first);
          da[static_cast<unsigned>(i)].setTime(added[i].second);
        }
        // Expiry goes by time: the store drops ids below watermark - horizon, as the engine
        // does.
        if (st.cfg.preprocess.dedupe && st.pre->watermark() != min_timestamp)
          c.setDedupeExpireBefore(st.pre->watermark() - st.cfg.preprocess.dedupe_horizon);
        auto snap = wrap_state(st.max_time, st.pre->snapshot());
        c.setState(as_data(snap));
      }
      if (fault::hit("send.contribution")) { // fault injection
        self->quit(fault::injected("send.contribution"));
        return;
      }
      self->send(updater, pre_epoch_atom::value, st.pipeline,
                 to_frame<schema::PreprocessEpoch>(mb));
      st.epoch_dead_letters.clear();
      const auto& k = st.pre->counters();
      run_stats s;
      s.pipeline = st.cfg.name;
      s.read = k.read;
      s.accepted = k.accepted;
      s.filtered = k.filtered;
      s.late = k.late;
      s.late_updates = k.late_updates;
      s.duplicates = k.duplicates;
      s.rejected = k.rejected;
      s.bytes_read = k.bytes;
      self->send(coordinator, stats_atom::value, st.pipeline, std::move(s));
      // After a last (final or stop) marker the actor stays until the supervisor ends the
      // generation: its partitions are linked to it, and one that fails while it fires its
      // last windows must still take the generation down instead of leaving the epoch open.
    },
  };
}

} // namespace weir
