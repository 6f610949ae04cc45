#include "cli/history.hpp"

#include <algorithm>
#include <chrono>

#include <spdlog/spdlog.h>

#include "actors/core/input_check.hpp"

namespace weir::cli {

namespace {

int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace

progress_history::progress_history(const weir_config& cfg, std::shared_ptr<run_probe> probe)
  : cfg_(cfg)
  , probe_(std::move(probe))
  , rings_(cfg.pipelines.size())
  , latency_epoch_(cfg.pipelines.size(), 0) {}

progress_history::~progress_history() {
  stop();
}

void progress_history::start() {
  thread_ = std::thread{[this] { run(); }};
}

void progress_history::stop() {
  {
    std::lock_guard<std::mutex> lock{mu_};
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

void progress_history::run() {
  auto next = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock{mu_};
  while (!stopping_) {
    lock.unlock();
    sample();
    lock.lock();
    // A steady beat: a slow sample does not push the later ones back.
    next += std::chrono::microseconds(interval_us);
    const auto now = std::chrono::steady_clock::now();
    if (next < now)
      next = now;
    wake_.wait_until(lock, next, [this] { return stopping_; });
  }
}

bool progress_history::sample() {
  auto wh = probe_->store();
  auto meters = probe_->meters();
  if (!wh)
    return false;
  // Milliseconds: a sample's time reads back exactly as the JSON writes it (`since`).
  const int64_t now = wall_us() / 1000 * 1000;
  std::vector<progress_sample> taken;
  for (const auto& p : cfg_.pipelines) {
    auto st = committed_status_of(*wh, p.name);
    if (!st) {
      spdlog::debug("history: pipeline {}: {}", p.name, render(st.error()));
      return false;
    }
    progress_sample s;
    s.at_us = now;
    s.read = st->counters.read;
    s.accepted = st->counters.accepted;
    s.rejected = total_rejected(st->counters.rejected);
    s.windows = st->windows;
    s.dead_letters = st->dead_letters;
    s.epoch = st->epoch;
    s.max_time = st->max_time;
    s.watermark = st->watermark;
    taken.push_back(s);
  }
  std::lock_guard<std::mutex> lock{mu_};
  for (size_t i = 0; i < taken.size(); ++i) {
    // The epochs committed since the last sample: their longest latency. An epoch's latency
    // comes a moment after its commit: one without it yet waits for the next sample, and so
    // do those after it.
    if (meters && i < meters->size())
      for (const auto& t : (*meters)[i].tasks.recent(256)) {
        if (t.epoch <= latency_epoch_[i])
          continue;
        if (t.latency_us < 0)
          break;
        taken[i].latency_us = std::max(taken[i].latency_us, t.latency_us);
        latency_epoch_[i] = t.epoch;
      }
    auto& ring = rings_[i];
    ring.push_back(taken[i]);
    while (ring.size() > keep)
      ring.pop_front();
  }
  return true;
}

std::vector<progress_sample> progress_history::samples(size_t index, int64_t after_us) const {
  std::lock_guard<std::mutex> lock{mu_};
  if (index >= rings_.size())
    return {};
  const auto& ring = rings_[index];
  auto from = std::upper_bound(ring.begin(), ring.end(), after_us,
                               [](int64_t t, const progress_sample& s) { return t < s.at_us; });
  return {from, ring.end()};
}

} // namespace weir::cli
