#include "actors/coordinator.hpp"

#include <algorithm>
#include <chrono>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>
#include <spdlog/spdlog.h>

#include "actors/core/error.hpp"

namespace weir {

coordinator_actor::behavior_type
coordinator(coordinator_actor::stateful_pointer<coordinator_state> self,
            std::vector<uint64_t> first_epochs, runtime_config rt, run_waiter_actor waiter) {
  for (auto e : first_epochs) {
    coordinator_state::slot s;
    s.next_epoch = e;
    self->state.pipelines.push_back(std::move(s));
  }
  auto start_epoch = [self](uint32_t i) {
    auto& s = self->state.pipelines[i];
    if (s.finished || !s.ingest)
      return;
    if (s.in_flight >= max_epochs_in_flight) {
      s.wanted = true; // start it as soon as one in flight is committed
      return;
    }
    ++s.in_flight;
    s.wanted = false;
    s.started[s.next_epoch] = std::chrono::steady_clock::now();
    self->send(s.ingest, epoch_atom::value, s.next_epoch);
    ++s.next_epoch;
  };
  // A failed pipeline fails the run: the supervisor takes every actor of it down (it watches
  // them all) and restarts from the last commit.
  auto fail = [self, waiter](std::string why) {
    if (self->state.failed)
      return;
    self->state.failed = true;
    self->send(waiter, fail_atom::value, std::move(why));
  };
  const auto interval = std::chrono::microseconds(std::max<int64_t>(rt.commit_interval, 1000));
  self->delayed_send(self, interval, tick_atom::value);
  return {
    [self, start_epoch, interval](tick_atom) {
      for (uint32_t i = 0; i < self->state.pipelines.size(); ++i)
        start_epoch(i);
      self->delayed_send(self, interval, tick_atom::value);
    },
    [self](register_atom, uint32_t i, ingest_actor ingest) {
      if (i >= self->state.pipelines.size())
        return;
      self->state.pipelines[i].ingest = std::move(ingest);
      if (self->state.stopping)
        self->send(self->state.pipelines[i].ingest, stop_atom::value);
    },
    [self, start_epoch, waiter](committed_atom, uint32_t i, uint64_t e, marker_kind kind,
                                uint64_t windows) {
      if (i >= self->state.pipelines.size())
        return;
      auto& s = self->state.pipelines[i];
      if (s.in_flight > 0)
        --s.in_flight;
      int64_t latency = -1;
      if (auto t = s.started.find(e); t != s.started.end()) {
        latency = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - t->second)
                    .count();
        s.started.erase(s.started.begin(), std::next(t));
      }
      // Each commit is reported at once: the waiter's tally survives a generation that fails.
      self->send(waiter, committed_atom::value, i, e, windows, latency);
      s.stats.windows_committed += windows;
      s.stats.epochs_committed += 1;
      if (s.ingest)
        self->send(s.ingest, committed_atom::value, e);
      if (kind != marker_kind::normal)
        s.finished = true;
      else if (s.wanted)
        start_epoch(i);
      bool all = true;
      for (auto& p : self->state.pipelines)
        all = all && p.finished;
      if (all) {
        for (auto& p : self->state.pipelines)
          self->send(waiter, stats_atom::value, p.stats);
        self->send(waiter, done_atom::value);
        self->quit();
      }
    },
    [self](stats_atom, uint32_t i, run_stats& x) {
      if (i >= self->state.pipelines.size())
        return;
      auto& s = self->state.pipelines[i].stats;
      auto windows = s.windows_committed;
      auto epochs = s.epochs_committed;
      s = std::move(x);
      s.windows_committed = windows;
      s.epochs_committed = epochs;
    },
    [self](stop_atom) {
      self->state.stopping = true;
      for (auto& p : self->state.pipelines)
        if (p.ingest)
          self->send(p.ingest, stop_atom::value);
    },
    [fail](fail_atom, std::string& why) { fail(std::move(why)); },
    [self, start_epoch](done_atom, uint32_t i) {
      if (i < self->state.pipelines.size())
        start_epoch(i);
    },
    [self, start_epoch](epoch_atom, uint32_t i) {
      if (i < self->state.pipelines.size())
        start_epoch(i);
    },
  };
}

} // namespace weir
