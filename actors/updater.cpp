#include "actors/updater.hpp"

#include <chrono>

#include <spdlog/spdlog.h>

#include "actors/frame.hpp"
#include "actors/preprocess.hpp"
#include "schema/batch.capnp.h"

namespace weir {

/// Partition id under which the preprocess state is stored.
constexpr uint32_t preprocess_partition = 0xFFFFFFFF;

caf::expected<uint64_t> decode_pre_epoch_head(const frame& f) {
  uint64_t e = 0;
  if (auto err = decode_frame<schema::PreprocessEpoch>(
        f, [&](schema::PreprocessEpoch::Reader p) { e = p.getEpoch(); }))
    return err;
  return e;
}

caf::expected<std::pair<uint64_t, uint32_t>> decode_agg_epoch_head(const frame& f,
                                                                   size_t partitions) {
  std::pair<uint64_t, uint32_t> out{0, 0};
  auto err = decode_frame<schema::AggregatorEpoch>(f, [&](schema::AggregatorEpoch::Reader a) {
    out = {a.getEpoch(), a.getPartition()};
    if (out.second >= partitions)
      refuse_frame("partition " + std::to_string(out.second) + " of a pipeline of " +
                   std::to_string(partitions));
  });
  if (err)
    return err;
  return out;
}

namespace {

/// The preprocess contribution of an epoch into `c`, and how the epoch ends into `kind`.
caf::error add_pre_epoch(const frame& pre, epoch_commit& c, marker_kind& kind) {
  return decode_frame<schema::PreprocessEpoch>(pre, [&](schema::PreprocessEpoch::Reader p) {
    c.epoch = p.getEpoch();
    auto k = from_wire(p.getMarkerKind());
    if (!k)
      refuse_frame("an epoch marker kind this build does not know");
    kind = *k;
    for (auto o : p.getOffsets())
      c.offsets.emplace_back(o.getSource(), o.getOffset());
    if (!c.dead_letters.assign(as_view(p.getDeadLetterPack())))
      refuse_frame("dead letters that do not decode");
    for (auto d : p.getDedupeAdded())
      c.dedupe_added.emplace_back(d.getId(), d.getTime());
    c.dedupe_expire_before = p.getDedupeExpireBefore();
    c.states.emplace_back(preprocess_partition, std::string(as_view(p.getState())));
  });
}

/// One partition's contribution of epoch c.epoch into `c`.
caf::error add_agg_epoch(const frame& f, epoch_commit& c) {
  return decode_frame<schema::AggregatorEpoch>(f, [&](schema::AggregatorEpoch::Reader a) {
    if (a.getEpoch() != c.epoch)
      refuse_frame("contribution of epoch " + std::to_string(a.getEpoch()) + " to epoch " +
                   std::to_string(c.epoch));
    if (!c.results.append(as_view(a.getResultPack())))
      refuse_frame("window results that do not decode");
    c.states.emplace_back(a.getPartition(), std::string(as_view(a.getState())));
    if (a.hasStatePuts() || a.hasStateDels())
      c.windows.push_back({a.getPartition(), std::string(as_view(a.getStatePuts())),
                           std::string(as_view(a.getStateDels()))});
  });
}

} // namespace

caf::expected<epoch_commit> assemble_commit(const std::string& pipeline, const frame& pre,
                                            const std::vector<frame>& aggs, marker_kind& kind) {
  epoch_commit c;
  c.pipeline = pipeline;
  if (auto err = add_pre_epoch(pre, c, kind))
    return err;
  for (const auto& f : aggs)
    if (auto err = add_agg_epoch(f, c))
      return err;
  return c;
}

namespace {

/// Adds one committed epoch to the pipeline's state meter: bytes of window state written, and the
/// operators' memory at the epoch's end (all partitions together).
void meter_epoch(state_meter& m, const epoch_commit& c, const std::vector<frame>& aggs) {
  uint64_t bytes = 0;
  for (const auto& w : c.windows)
    bytes += w.puts.size() + w.dels.size();
  for (const auto& [partition, blob] : c.states)
    bytes += blob.size();
  uint64_t memory = 0;
  uint64_t rows = 0;
  for (const auto& f : aggs) // decoded once already: assemble_commit
    decode_frame<schema::AggregatorEpoch>(f, [&](schema::AggregatorEpoch::Reader a) {
      memory += a.getStateMemory();
      rows += a.getStateRows();
    });
  m.bytes += bytes;
  m.epochs += 1;
  m.rows_now = rows;
  m.memory_now = memory;
  // Memory per window is judged where the most windows are held (vectors keep their capacity
  // after windows fire, so a later, emptier epoch would overstate it).
  if (rows > m.rows_at_peak) {
    m.rows_at_peak = rows;
    m.peak_memory = memory;
  }
}

/// Records committed epoch e as a task: what it read (from the cumulative counters in the
/// preprocess state it committed), wrote and how long its commit took.
void record_task(state_meter& m, const epoch_commit& c, uint64_t e, uint64_t windows,
                 double commit_ms, uint64_t state_bytes, int64_t keep_us) {
  epoch_task t;
  t.epoch = e;
  t.committed_at = std::chrono::duration_cast<std::chrono::microseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  t.windows = windows;
  t.dead_letters = c.dead_letters.size();
  t.state_bytes = state_bytes;
  t.commit_ms = commit_ms;
  t.restarts = m.restarts;
  preprocess_counters counts;
  for (const auto& [partition, blob] : c.states)
    if (partition == preprocess_partition)
      if (auto got = unwrap_counters(blob))
        counts = std::move(*got);
  m.add_epoch_size(m.tasks.add(t, counts.read, counts.accepted, keep_us));
}

} // namespace

updater_actor::behavior_type updater(updater_actor::stateful_pointer<updater_state> self,
                                     std::vector<std::pair<std::string, size_t>> pipelines,
                                     std::shared_ptr<warehouse> wh, coordinator_actor coordinator,
                                     commit_mode mode, std::shared_ptr<state_meters> meters) {
  for (auto& [name, parts] : pipelines) {
    updater_state::pipeline_slot s;
    s.name = name;
    s.partitions = parts;
    if (auto last = wh->last_epoch(name))
      s.next = *last + 1;
    self->state.pipelines.push_back(std::move(s));
  }
  // Commits epoch e of pipeline i (every contribution is there); false when the actor failed.
  auto commit_one = [self, wh, coordinator, mode, meters](uint32_t i, uint64_t e,
                                                          updater_state::pending_epoch& p) {
    auto& slot = self->state.pipelines[i];
    marker_kind kind = marker_kind::normal;
    auto c = assemble_commit(slot.name, *p.pre, p.aggs, kind);
    if (!c) {
      spdlog::error("pipeline {} epoch {}: {}", slot.name, e, render(c.error()));
      self->send(coordinator, fail_atom::value, render(c.error()));
      self->quit(c.error());
      return false;
    }
    auto windows = c->results.size();
    auto t0 = std::chrono::steady_clock::now();
    if (mode == commit_mode::results_only) {
      // Output without the means to resume: no offsets, no state, no epoch number.
      c->without_epoch = true;
      c->offsets.clear();
      c->states.clear();
      c->windows.clear();
      c->dedupe_added.clear();
      c->dedupe_expire_before = min_timestamp;
    }
    // A dry run writes nothing: the epoch ends here, as if committed.
    auto ok = mode == commit_mode::none ? caf::expected<bool>{true} : wh->commit(*c);
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0);
    if (!ok) {
      spdlog::error("pipeline {} epoch {}: commit failed: {}", slot.name, e, render(ok.error()));
      self->send(coordinator, fail_atom::value, render(ok.error()));
      self->quit(ok.error());
      return false;
    }
    if (*ok && mode == commit_mode::exactly_once && meters && i < meters->size()) {
      auto& m = (*meters)[i];
      const uint64_t state_before = m.bytes;
      meter_epoch(m, *c, p.aggs);
      record_task(m, *c, e, windows, ms.count(), m.bytes - state_before, m.task_keep_us);
    }
    spdlog::info("pipeline {} epoch {} committed: {} windows, {} dead letters, {:.1f} ms",
                 slot.name, e, windows, c->dead_letters.size(), ms.count());
    self->send(coordinator, committed_atom::value, i, e, kind,
               static_cast<uint64_t>(*ok ? windows : 0));
    return true;
  };
  // Commits the oldest pending epoch of pipeline i once every contribution is there, then the
  // next, never one past `next`: channels are ordered, so epochs complete in order anyway, and
  // this keeps it so even if they did not (a later epoch committed first would make the earlier
  // one a no-op and lose it).
  auto try_commit = [self, commit_one](uint32_t i) {
    auto& slot = self->state.pipelines[i];
    while (!slot.epochs.empty()) {
      auto it = slot.epochs.begin();
      if (it->first > slot.next || !it->second.pre ||
          it->second.partitions.size() < slot.partitions)
        return;
      if (!commit_one(i, it->first, it->second))
        return;
      slot.next = std::max(slot.next, it->first + 1);
      slot.epochs.erase(it);
    }
  };
  // A contribution that does not decode fails the generation, as a failed commit does.
  auto refuse = [self, coordinator](uint32_t i, const caf::error& err) {
    spdlog::error("pipeline {}: {}", self->state.pipelines[i].name, render(err));
    self->send(coordinator, fail_atom::value, render(err));
    self->quit(err);
  };
  return {
    [self, try_commit, meters, refuse](pre_epoch_atom, uint32_t i, frame& f) {
      if (i >= self->state.pipelines.size())
        return;
      if (meters && i < meters->size())
        mailbox_depths::note(self, &(*meters)[i].mailboxes.updater);
      auto e = decode_pre_epoch_head(f);
      if (!e)
        return refuse(i, e.error());
      self->state.pipelines[i].epochs[*e].pre = std::move(f);
      try_commit(i);
    },
    [self, try_commit, meters, refuse](agg_epoch_atom, uint32_t i, frame& f) {
      if (i >= self->state.pipelines.size())
        return;
      if (meters && i < meters->size())
        mailbox_depths::note(self, &(*meters)[i].mailboxes.updater);
      auto& slot = self->state.pipelines[i];
      auto head = decode_agg_epoch_head(f, slot.partitions);
      if (!head)
        return refuse(i, head.error());
      auto [e, part] = *head;
      auto& p = slot.epochs[e];
      if (!p.partitions.insert(part).second) {
        spdlog::warn("pipeline {} epoch {}: a second contribution of partition {} is ignored",
                     slot.name, e, part);
        return;
      }
      p.aggs.push_back(std::move(f));
      try_commit(i);
    },
  };
}

} // namespace weir
