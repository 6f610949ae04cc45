#include "actors/supervisor.hpp"

#include <algorithm>
#include <chrono>

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/exit_reason.hpp>
#include <caf/system_messages.hpp>
#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"
#include "actors/core/error.hpp"
#include "actors/ingest.hpp"
#include "actors/preprocess.hpp"
#include "actors/updater.hpp"

namespace weir {

namespace {

/// How often the supervisor looks at the stop flag of the run (set by a signal handler).
constexpr auto stop_poll = std::chrono::milliseconds(50);

/// Warns about an epoch that took longer than slow_epoch from its start to its commit, with
/// what it held and which setting to turn (docs/serve.md, "Tasks").
void warn_slow(const std::string& pipeline, uint64_t e, int64_t latency_us,
               const runtime_config& rt, const std::optional<epoch_task>& t) {
  if (!t) {
    spdlog::warn("pipeline {} epoch {} took {:.1f} s from its start to its commit", pipeline, e,
                 latency_us / 1e6);
    return;
  }
  const double commit_s = t->commit_ms / 1e3;
  const double total_s = latency_us / 1e6;
  std::string why;
  if (commit_s > total_s / 2)
    why = "most of it was the commit of " + std::to_string(t->windows) + " results and " +
          std::to_string(t->state_bytes) +
          " bytes of state: windows that fire together (a large key space on one window end) "
          "commit together; a shorter commit_interval or max_epoch_bytes makes epochs smaller";
  else
    why = "most of it was processing " + std::to_string(t->events) +
          " records: the pipeline is behind its input; lower max_epoch_bytes (now " +
          std::to_string(rt.max_epoch_bytes) +
          ") or commit_interval for shorter epochs, or "
          "give it more partitions and threads";
  spdlog::warn("pipeline {} epoch {} took {:.2f} s (slow_epoch {:.2f} s): {} records, {} "
               "windows, {} dead letters, commit {:.1f} ms; {}",
               pipeline, e, total_s, rt.slow_epoch / 1e6, t->events, t->windows, t->dead_letters,
               t->commit_ms, why);
}
} // namespace

generation spawn_generation(caf::actor_system& sys, run_waiter_actor waiter, const weir_config& cfg,
                            std::vector<prepared> preps, const std::shared_ptr<lake>& lk,
                            const std::shared_ptr<warehouse>& wh,
                            const std::shared_ptr<state_meters>& meters,
                            const std::shared_ptr<run_cluster>& cluster) {
  generation g;
  std::vector<uint64_t> first_epochs;
  std::vector<std::pair<std::string, size_t>> slots;
  for (size_t i = 0; i < cfg.pipelines.size(); ++i) {
    first_epochs.push_back(preps[i].first_epoch);
    slots.emplace_back(cfg.pipelines[i].name, preps[i].restore.partition_snapshots.size());
  }
  g.coordinator = sys.spawn(coordinator, first_epochs, cfg.runtime, std::move(waiter));
  auto upd = sys.spawn<caf::detached>(updater, slots, wh, g.coordinator, cfg.runtime.mode, meters);
  g.members = {caf::actor_cast<caf::actor>(g.coordinator), caf::actor_cast<caf::actor>(upd)};
  for (size_t i = 0; i < cfg.pipelines.size(); ++i) {
    auto idx = static_cast<uint32_t>(i);
    // One pipeline's meter, sharing the ownership of them all.
    std::shared_ptr<state_meter> meter{meters, &(*meters)[i]};
    if (cluster) {
      auto parts =
        cluster->spawn_partitions(sys, idx, std::move(preps[i].restore.partition_snapshots), upd);
      if (!parts) {
        g.failed = std::move(parts.error());
        return g;
      }
      preps[i].restore.partition_snapshots.assign(parts->size(), std::string{});
      for (auto& a : *parts)
        g.members.push_back(caf::actor_cast<caf::actor>(a));
      preps[i].restore.partitions = std::move(*parts);
    }
    auto pre = sys.spawn(preprocess, idx, cfg.pipelines[i], std::move(preps[i].restore), upd,
                         g.coordinator, meter);
    g.members.push_back(caf::actor_cast<caf::actor>(pre));
    ingest_actor ing;
    if (cluster && cluster->remote_ingest()) {
      // Its lake is on its node: the node resolves the inputs from the committed offsets.
      auto remote = cluster->spawn_ingest(sys, idx, preps[i].inputs.committed,
                                          cfg.runtime.final_flush, pre, g.coordinator);
      if (!remote) {
        g.failed = std::move(remote.error());
        return g;
      }
      ing = std::move(*remote);
      // The store keeps the names of the lake's sources: its dead letters and offsets name
      // them as a store with its lake does (weir dead-letters, inspect, check).
      if (auto err = wh->record_lake_sources(cluster->source_keys(idx))) {
        g.members.push_back(caf::actor_cast<caf::actor>(ing));
        g.failed = std::move(err);
        return g;
      }
    } else {
      ing = sys.spawn<caf::detached>(ingest, idx, std::move(preps[i].inputs), cfg.runtime, lk, pre,
                                     g.coordinator, meter);
    }
    caf::anon_send(g.coordinator, register_atom::value, idx, ing);
    g.members.push_back(caf::actor_cast<caf::actor>(ing));
  }
  return g;
}

void supervisor_state::on_commit(uint32_t i, uint64_t e, int64_t latency) {
  // A generation that commits works: the next failure waits the first backoff again.
  backoff = std::max<int64_t>(deps.cfg.runtime.restart_backoff, 0);
  auto& meters = *deps.meters;
  if (i >= deps.tallies.size() || latency < 0)
    return;
  const auto& rt = deps.cfg.runtime;
  meters[i].tasks.set_latency(e, latency);
  if (latency > rt.slow_epoch)
    warn_slow(deps.cfg.pipelines[i].name, e, latency, rt, meters[i].tasks.find(e));
  // A service runs for months: the summary's percentiles keep the latest million epochs.
  auto& l = deps.tallies[i].latencies;
  if (l.size() >= (size_t{1} << 20))
    l.erase(l.begin(), l.begin() + static_cast<std::ptrdiff_t>(l.size() / 2));
  l.push_back(latency);
  meters[i].add_latency(latency);
}

void supervisor_state::note_reason(const caf::error& reason) {
  if (!fatal && reason && is_fatal(reason))
    fatal = reason;
  // A node going away (its connection lost, or silent past the cluster's failure timeout) is the
  // cluster's business: the next generation is placed on the nodes still there, outside the
  // restart budget.
  if (!reason)
    return;
  if (reason == caf::exit_reason::remote_link_unreachable ||
      (reason.category() == caf::atom("weir") &&
       reason.code() == static_cast<uint8_t>(errc::node_lost)))
    node_lost = true;
  if (span)
    return;
  span = record_span_of(reason);
  if (span)
    span_what = render(reason);
}

std::vector<run_stats> supervisor_state::summary() const {
  const auto& cfg = deps.cfg;
  auto& wh = *deps.wh;
  std::vector<run_stats> total;
  for (size_t i = 0; i < cfg.pipelines.size(); ++i) {
    const auto& p = cfg.pipelines[i];
    total.push_back(summarize(p.name, stats, deps.tallies[i], restarts, wh, cfg.runtime.mode));
    auto& t = total.back();
    t.windows_open = open_windows(p, wh);
    const auto& m = (*deps.meters)[i];
    t.state_bytes = m.bytes;
    t.state_epochs = m.epochs;
    t.state_memory = m.peak_memory;
    t.state_rows = m.rows_at_peak;
    std::vector<std::pair<uint32_t, std::string>> keys;
    if (deps.source_keys)
      keys = deps.source_keys(static_cast<uint32_t>(i));
    else if (auto ks = deps.lk ? deps.lk->sources() : caf::expected<decltype(keys)>{keys})
      keys = std::move(*ks);
    t.resume_offsets = resume_points(p.name, keys, wh);
  }
  return total;
}

caf::error supervisor_state::judge_failure(int64_t& wait) {
  const auto& cfg = deps.cfg;
  if (fatal)
    return fatal;
  const std::string where = last_commits(cfg, *deps.wh);
  if (rebalancing) {
    // Not a failure: the next generation starts at once (and stops at its first epoch when a
    // stop came meanwhile).
    spdlog::info("{}: the next generation is placed on every node there is ({})", failure, where);
    wait = 0;
    return caf::none;
  }
  if (stop_wanted())
    return make_error(errc::internal, failure + "; stopped; " + where);
  bool budgeted = !node_lost;
  if (span) {
    // A failure that names its records restarts outside the budget: each such restart
    // narrows the failure down (retry, isolate the chunk, dead-letter the line), and the
    // tracker bounds how many there can be.
    budgeted = false;
    const auto& name = cfg.pipelines[span->pipeline].name;
    switch (tracker->failed(*span, span_what)) {
      case poison_tracker::verdict::retry:
        spdlog::warn("pipeline {}: records at source {} bytes {}..{} failed; retrying them", name,
                     span->source, span->begin, span->end);
        break;
      case poison_tracker::verdict::isolate:
        spdlog::warn("pipeline {}: records at source {} bytes {}..{} failed on every retry; "
                     "processing them one line at a time",
                     name, span->source, span->begin, span->end);
        break;
      case poison_tracker::verdict::poison:
        spdlog::warn("pipeline {}: the record at source {} offset {} failed on every retry; "
                     "it goes to dead letters as a poison record",
                     name, span->source, span->begin);
        break;
      case poison_tracker::verdict::too_many:
        return make_error(errc::internal, failure + "; more than " +
                                            std::to_string(cfg.runtime.max_poison_records) +
                                            " poison records (max_poison_records): giving up; " +
                                            where);
    }
  }
  if (budgeted && budget_spent >= cfg.runtime.restart_budget)
    return make_error(errc::internal, failure + "; gave up after " + std::to_string(restarts) +
                                        " restart(s); " + where);
  ++restarts;
  if (deps.probe)
    deps.probe->restarts += 1;
  for (auto& m : *deps.meters)
    m.restarts += 1;
  wait = std::max<int64_t>(cfg.runtime.restart_backoff, 0);
  if (node_lost) {
    // Waiting for the cluster: the backoff grows as for other failures, the budget stays.
    wait = backoff;
    spdlog::warn("{}; the next generation is placed on the nodes there are, in {} ms ({})", failure,
                 wait / us_per_ms, where);
    backoff = std::min(backoff * 2, std::max(cfg.runtime.restart_backoff_max, backoff));
  } else if (budgeted) {
    ++budget_spent;
    wait = backoff;
    spdlog::warn("{}; restart {} of {} in {} ms from the last commit ({})", failure, budget_spent,
                 cfg.runtime.restart_budget, wait / us_per_ms, where);
    backoff = std::min(backoff * 2, std::max(cfg.runtime.restart_backoff_max, backoff));
  }
  return caf::none;
}

namespace {

using supervisor_ptr = supervisor_actor::stateful_pointer<supervisor_state>;

/// Ends the run with `result` (what each pipeline did, or why it failed).
template <class T>
void finish(supervisor_ptr self, T&& result) {
  auto& st = self->state;
  st.now = supervisor_state::phase::finished;
  for (auto& [i, driver] : st.sinks)
    self->send_exit(driver, caf::exit_reason::user_shutdown);
  st.answer.deliver(std::forward<T>(result));
  self->quit();
}

/// The run ended well: it ends once every sink has every committed epoch.
void finish_after_sinks(supervisor_ptr self) {
  auto& st = self->state;
  if (st.sinks.empty()) {
    finish(self, st.summary());
    return;
  }
  st.now = supervisor_state::phase::delivering;
  st.sinks_pending = st.sinks.size();
  auto one_done = [self] {
    if (--self->state.sinks_pending == 0)
      finish(self, self->state.summary());
  };
  for (auto& [i, driver] : st.sinks)
    self->request(driver, caf::infinite, done_atom::value)
      .then([one_done](uint64_t) { one_done(); },
            [one_done](caf::error& err) {
              spdlog::error("a sink driver ended before it delivered every epoch: {}", render(err));
              one_done();
            });
}

void end_generation(supervisor_ptr self);

/// Spawns and watches the next generation from `preps`.
void start_generation(supervisor_ptr self, std::vector<prepared> preps) {
  auto& st = self->state;
  for (size_t i = 0; i < preps.size(); ++i)
    preps[i].restore.quarantined = st.tracker->of(static_cast<uint32_t>(i));
  st.gen = st.deps.spawn(self->system(), self, std::move(preps));
  st.alive.clear();
  for (auto& m : st.gen.members) {
    self->monitor(m);
    st.alive.insert(m.address());
  }
  st.stats.clear();
  st.failure.clear();
  st.fatal = caf::error{};
  st.span.reset();
  st.span_what.clear();
  st.stop_sent = false;
  st.node_lost = false;
  st.rebalance_wanted.clear();
  st.rebalancing = false;
  st.now = supervisor_state::phase::running;
  if (st.gen.failed) {
    st.note_reason(st.gen.failed);
    st.failure = render(st.gen.failed);
    end_generation(self);
    return;
  }
  if (st.stop_wanted()) {
    st.stop_sent = true;
    self->send(st.gen.coordinator, stop_atom::value);
  }
}

/// A failed generation is gone: restart after the backoff, or end the run.
void after_failure(supervisor_ptr self) {
  auto& st = self->state;
  int64_t wait = 0;
  if (auto err = st.judge_failure(wait)) {
    finish(self, std::move(err));
    return;
  }
  st.now = supervisor_state::phase::waiting;
  self->delayed_send(self, std::chrono::microseconds(wait), restart_atom::value, st.restarts);
}

/// Every actor of the generation is gone: nothing of it writes to the stores any more.
void generation_gone(supervisor_ptr self) {
  auto& st = self->state;
  if (st.failure.empty())
    finish_after_sinks(self);
  else
    after_failure(self);
}

/// The generation ends (done or failed): every actor of it goes before anything else happens.
void end_generation(supervisor_ptr self) {
  auto& st = self->state;
  if (st.now != supervisor_state::phase::running)
    return;
  st.now = supervisor_state::phase::draining;
  for (auto& m : st.gen.members)
    self->send_exit(m, caf::exit_reason::user_shutdown);
  if (st.alive.empty())
    generation_gone(self);
}

/// Reads where the pipelines stand and starts the next generation.
void restart(supervisor_ptr self) {
  auto& st = self->state;
  auto preps = st.deps.prepare();
  if (!preps) {
    finish(self, preps.error());
    return;
  }
  for (size_t i = 0; i < preps->size(); ++i)
    meter_inputs((*preps)[i].inputs, (*st.deps.meters)[i]); // it reads on from its commits
  start_generation(self, std::move(*preps));
}

/// A stop was asked for: the coordinator ends the run with a last epoch; a run waiting out a
/// backoff restarts at once (and stops at its first epoch).
void on_stop(supervisor_ptr self) {
  auto& st = self->state;
  if (st.now == supervisor_state::phase::running && !st.stop_sent) {
    st.stop_sent = true;
    self->send(st.gen.coordinator, stop_atom::value);
  } else if (st.now == supervisor_state::phase::waiting) {
    restart(self);
  }
}

} // namespace

supervisor_actor::behavior_type supervisor(supervisor_ptr self, supervisor_deps deps) {
  auto& st = self->state;
  st.deps = std::move(deps);
  const auto& rt = st.deps.cfg.runtime;
  st.tracker.emplace(rt.record_retries, rt.max_poison_records);
  st.backoff = std::max<int64_t>(rt.restart_backoff, 0);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.alive.erase(dm.source) == 0)
      return; // not of this generation
    spdlog::debug("supervisor: {} is down: {}", caf::to_string(dm.source), render(dm.reason));
    st.note_reason(dm.reason);
    if (st.now == supervisor_state::phase::running && dm.reason &&
        dm.reason != caf::exit_reason::user_shutdown) {
      st.failure = "a pipeline actor failed: " + render(dm.reason);
      end_generation(self);
    } else if (st.now == supervisor_state::phase::draining && st.alive.empty()) {
      generation_gone(self);
    }
  });
  return {
    [self](run_atom) {
      auto& st = self->state;
      st.answer = self->make_response_promise<std::vector<run_stats>>();
      if (st.now == supervisor_state::phase::idle) {
        for (auto& [i, cfg] : st.deps.sinks)
          st.sinks.emplace_back(i,
                                self->system().spawn<caf::detached>(sink_driver, std::move(cfg)));
        start_generation(self, std::move(st.deps.first));
        self->send(self, tick_atom::value);
      }
      return st.answer;
    },
    [self](committed_atom, uint32_t i, uint64_t e, uint64_t, int64_t latency) {
      auto& st = self->state;
      st.on_commit(i, e, latency);
      for (auto& [p, driver] : st.sinks)
        if (p == i)
          self->send(driver, committed_atom::value, e);
      // Right after a commit, ending the generation costs the least replay.
      if (!st.rebalance_wanted.empty() && st.now == supervisor_state::phase::running &&
          !st.stop_wanted()) {
        st.failure = "moving partitions: " + st.rebalance_wanted;
        st.rebalancing = true;
        end_generation(self);
      }
    },
    [self](register_atom, uint32_t i, sink_driver_actor driver) {
      auto& st = self->state;
      if (st.now == supervisor_state::phase::finished)
        return;
      st.sinks.emplace_back(i, driver);
      if (st.now == supervisor_state::phase::delivering) {
        // The run is ending: this one is asked too.
        ++st.sinks_pending;
        self->request(driver, caf::infinite, done_atom::value)
          .then(
            [self](uint64_t) {
              if (--self->state.sinks_pending == 0)
                finish(self, self->state.summary());
            },
            [self](caf::error&) {
              if (--self->state.sinks_pending == 0)
                finish(self, self->state.summary());
            });
      }
    },
    [self](rebalance_atom, std::string& why) {
      auto& st = self->state;
      if (st.now == supervisor_state::phase::running && st.rebalance_wanted.empty())
        st.rebalance_wanted = std::move(why);
    },
    [self](stats_atom, run_stats& s) { self->state.stats.push_back(std::move(s)); },
    [self](done_atom) {
      if (self->state.now == supervisor_state::phase::running)
        end_generation(self);
    },
    [self](fail_atom, std::string& why) {
      auto& st = self->state;
      if (st.now != supervisor_state::phase::running)
        return;
      st.failure = std::move(why);
      end_generation(self);
    },
    [self](stop_atom) {
      self->state.stop_asked = true;
      on_stop(self);
    },
    [self](tick_atom) {
      if (self->state.stop_wanted())
        on_stop(self);
      self->delayed_send(self, stop_poll, tick_atom::value);
    },
    [self](restart_atom, uint32_t n) {
      auto& st = self->state;
      if (st.now == supervisor_state::phase::waiting && n == st.restarts)
        restart(self);
    },
  };
}

} // namespace weir
