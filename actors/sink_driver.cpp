#include "actors/sink_driver.hpp"

#include <algorithm>
#include <exception>

#include <spdlog/spdlog.h>

#include "actors/core/error.hpp"
#include "actors/core/fault.hpp"

namespace weir {

std::string display_key(std::string key) {
  std::replace(key.begin(), key.end(), key_separator, '|');
  return key;
}

caf::expected<committed_epoch> sink_driver_state::read_epoch(uint64_t e) {
  committed_epoch out;
  out.pipeline = cfg.pipeline;
  out.epoch = e;
  out.window = cfg.window;
  out.aggregates = cfg.aggregates;
  auto st = cfg.wh->changes(cfg.pipeline, e - 1, std::nullopt, [&](const change_row& r) {
    if (r.epoch != e)
      return false;
    out.rows.push_back(r.row);
    out.rows.back().key = display_key(std::move(out.rows.back().key));
    return true;
  });
  if (!st)
    return st.error();
  if (!st->enabled || e < st->oldest) {
    oldest_kept = st->enabled ? st->oldest : 0;
    return make_error(errc::internal, "epoch " + std::to_string(e) +
                                        " is no longer in the change feed (the oldest kept is " +
                                        std::to_string(st->oldest) + ")");
  }
  return out;
}

caf::error sink_driver_state::deliver(uint64_t e) {
  auto epoch = read_epoch(e);
  if (!epoch)
    return epoch.error();
  try {
    cfg.out->deliver(*epoch);
  } catch (const std::exception& x) {
    return make_error(errc::internal, std::string{"deliver threw: "} + x.what());
  } catch (...) {
    return make_error(errc::internal, "deliver threw something that is not a std::exception");
  }
  if (fault::hit("sink.delivered"))
    return fault::injected("sink.delivered");
  if (cfg.record_cursor)
    if (auto err = cfg.wh->set_sink_cursor(cfg.pipeline, cfg.name, e))
      return err;
  return caf::none;
}

void sink_driver_state::learn(uint64_t e) {
  if (e <= committed)
    return;
  committed = e;
  pending.emplace_back(e, clock::now());
}

void sink_driver_state::check_lag() {
  while (!pending.empty() && pending.front().first <= delivered)
    pending.pop_front();
  if (pending.empty()) {
    lag_warned = false;
    return;
  }
  const auto behind =
    std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - pending.front().second)
      .count();
  if (lag_warned || behind <= cfg.lag_warning)
    return;
  lag_warned = true;
  spdlog::warn("sink {} of pipeline {} is {:.0f} s behind (epoch {} delivered, {} committed): "
               "the change feed keeps every epoch it has not had, past change_retention",
               cfg.name, cfg.pipeline, behind / 1e6, delivered, committed);
}

namespace {

using driver_ptr = sink_driver_actor::stateful_pointer<sink_driver_state>;

/// Makes sure a (tick) is on its way when there is something to deliver.
void schedule(driver_ptr self) {
  auto& st = self->state;
  if (st.scheduled || st.delivered >= st.committed)
    return;
  st.scheduled = true;
  self->send(self, tick_atom::value);
}

/// Every committed epoch is delivered: answers the (done) requests.
void answer_waiting(driver_ptr self) {
  auto& st = self->state;
  for (auto& p : st.waiting)
    p.deliver(st.delivered);
  st.waiting.clear();
}

/// Delivers the next epoch (one per message, so that the mailbox is read between epochs).
void deliver_next(driver_ptr self) {
  auto& st = self->state;
  st.scheduled = false;
  if (st.delivered >= st.committed) {
    answer_waiting(self);
    return;
  }
  const uint64_t e = st.delivered + 1;
  st.oldest_kept = 0;
  if (auto err = st.deliver(e)) {
    if (!st.cfg.record_cursor && st.oldest_kept > e) {
      // A subscriber without a cursor fell behind the feed's retention: what is gone is gone.
      spdlog::error("sink {} of pipeline {}: epochs {} to {} are no longer in the change feed "
                    "(change_retention) and are not delivered",
                    st.cfg.name, st.cfg.pipeline, e, st.oldest_kept - 1);
      st.delivered = st.oldest_kept - 1;
      schedule(self);
      return;
    }
    spdlog::warn("sink {} of pipeline {}: epoch {}: {}; retrying in {} ms", st.cfg.name,
                 st.cfg.pipeline, e, render(err), st.wait / us_per_ms);
    st.check_lag();
    st.scheduled = true;
    self->delayed_send(self, std::chrono::microseconds(st.wait), tick_atom::value);
    st.wait = std::min(st.wait * 2, std::max(st.cfg.backoff_max, st.wait));
    return;
  }
  st.delivered = e;
  st.wait = std::max<int64_t>(st.cfg.backoff, 1000);
  st.check_lag();
  if (st.delivered >= st.committed)
    answer_waiting(self);
  schedule(self);
}

} // namespace

sink_driver_actor::behavior_type sink_driver(driver_ptr self, sink_driver_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.delivered = st.cfg.delivered;
  st.committed = st.delivered;
  st.wait = std::max<int64_t>(st.cfg.backoff, 1000);
  if (auto last = st.cfg.wh->last_epoch(st.cfg.pipeline))
    st.learn(*last);
  schedule(self);
  return {
    [self](committed_atom, uint64_t e) {
      self->state.learn(e);
      schedule(self);
    },
    [self](tick_atom) { deliver_next(self); },
    [self](done_atom) -> caf::result<uint64_t> {
      auto& st = self->state;
      if (auto last = st.cfg.wh->last_epoch(st.cfg.pipeline))
        st.learn(*last);
      if (st.delivered >= st.committed)
        return st.delivered;
      st.waiting.push_back(self->make_response_promise<uint64_t>());
      schedule(self);
      return st.waiting.back();
    },
  };
}

} // namespace weir
