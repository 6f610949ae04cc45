#include "actors/recovery.hpp"

#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "actors/core/definition.hpp"
#include "actors/core/error.hpp"
#include "actors/core/window_operator.hpp"
#include "actors/runtime.hpp"

namespace weir {

namespace {

constexpr uint32_t preprocess_partition = warehouse::preprocess_partition;

/// The committed counters in a stored preprocess state (zero when there is none or it does not
/// decode: the preprocess actor then reports the error itself).
preprocess_counters committed_counters(const std::string& blob) {
  auto c = unwrap_counters(blob);
  return c ? std::move(*c) : preprocess_counters{};
}

} // namespace

bool is_fatal(const caf::error& err) {
  if (err.category() != caf::atom("weir"))
    return false;
  switch (static_cast<errc>(err.code())) {
    case errc::bad_config:
    case errc::bad_input:
    case errc::store_format:
    case errc::store_corrupt:
    case errc::store_busy:
    case errc::too_many_rejects:
      return true;
    default:
      return false;
  }
}

caf::error restore_pipeline(const pipeline_config& p, warehouse& wh, size_t partitions,
                            prepared& out) {
  auto info = wh.register_pipeline(p.name, aggregate_names(p), describe_window(p.window),
                                   encode_definition(p));
  if (!info)
    return info.error();
  result_indexes ix;
  ix.by_key = p.results.key_index;
  ix.change_keep_us = p.results.change_feed ? p.results.change_retention : 0;
  if (auto err = wh.set_indexes(p.name, ix))
    return err;
  auto last = wh.last_epoch(p.name);
  if (!last)
    return last.error();
  out.first_epoch = *last + 1;
  auto states = wh.states(p.name);
  if (!states)
    return states.error();
  size_t parts = partitions;
  std::vector<std::pair<uint32_t, std::string>> part_states;
  for (auto& [part, blob] : *states) {
    if (part == preprocess_partition)
      out.restore.snapshot = blob;
    else
      part_states.emplace_back(part, blob);
  }
  if (!part_states.empty() && part_states.size() != parts) {
    spdlog::warn("pipeline {}: the store holds state of {} partitions; using {} instead of {}",
                 p.name, part_states.size(), part_states.size(), parts);
    parts = part_states.size();
  }
  out.restore.partition_snapshots.assign(parts, std::string{});
  for (auto& [part, meta] : part_states) {
    if (part >= parts)
      continue;
    auto snap = partition_snapshot(wh, p.name, part, meta);
    if (!snap)
      return snap.error();
    out.restore.partition_snapshots[part] = std::move(*snap);
  }
  if (p.preprocess.dedupe) {
    auto ids = wh.dedupe(p.name);
    if (!ids)
      return ids.error();
    out.restore.dedupe = std::move(*ids);
  }
  return caf::none;
}

namespace {

/// The inputs of source `si` of pipeline `p`, with their committed offsets, into `out` (and
/// their lake ids' configured sources into `bindings`).
caf::error prepare_source(const weir_config& cfg, const pipeline_config& p, size_t si,
                          const offset_list& offsets, lake& lk, pipeline_sources& out,
                          std::vector<std::pair<uint32_t, size_t>>& bindings) {
  const auto& src = p.sources[si];
  if (src.http || src.is_redis()) {
    auto in = resolve_network_source(lk, offsets, p.name, src, static_cast<uint32_t>(si));
    if (!in)
      return in.error();
    bindings.emplace_back(in->id, si);
    out.inputs.push_back(std::move(*in));
    return caf::none;
  }
  auto files = expand_source(src);
  if (!files)
    return files.error();
  for (const auto& path : *files) {
    // The file's identity decides its generation: rotated or truncated files start anew
    // (actors/sources.hpp).
    auto ins = resolve_source(lk, offsets, p.name, src, static_cast<uint32_t>(si), path,
                              cfg.runtime.mode == commit_mode::exactly_once);
    if (!ins)
      return ins.error();
    for (auto& in : *ins) {
      bindings.emplace_back(in.id, si);
      out.inputs.push_back(std::move(in));
    }
  }
  return caf::none;
}

} // namespace

caf::error prepare_inputs(const weir_config& cfg, const pipeline_config& p,
                          const offset_list& committed, lake& lk, pipeline_sources& out,
                          std::vector<std::pair<uint32_t, size_t>>& bindings) {
  out.inputs.clear();
  for (size_t si = 0; si < p.sources.size(); ++si)
    if (auto err = prepare_source(cfg, p, si, committed, lk, out, bindings))
      return err;
  out.pipeline = p.name;
  out.sources = p.sources;
  out.committed = committed;
  out.persist = cfg.runtime.mode == commit_mode::exactly_once;
  return caf::none;
}

caf::expected<std::vector<prepared>> prepare(const weir_config& cfg, lake* lk, warehouse& wh,
                                             size_t cores) {
  std::vector<prepared> preps;
  for (const auto& p : cfg.pipelines) {
    prepared pr;
    if (auto err = restore_pipeline(p, wh, p.partitions ? p.partitions : cores, pr))
      return err;
    auto offsets = wh.offsets(p.name);
    if (!offsets)
      return offsets.error();
    pr.inputs.pipeline = p.name;
    pr.inputs.committed = *offsets;
    if (lk)
      if (auto err = prepare_inputs(cfg, p, *offsets, *lk, pr.inputs, pr.restore.bindings))
        return err;
    preps.push_back(std::move(pr));
  }
  return preps;
}

void meter_inputs(const pipeline_sources& p, state_meter& m) {
  uint64_t read = 0;
  uint64_t total = 0;
  bool bounded = true;
  for (const auto& in : p.inputs) {
    read += in.committed;
    uint64_t size = std::max(in.committed, in.lake_end);
    if (in.path == "-" || in.cfg.follow || in.cfg.http) {
      bounded = false;
    } else if (!in.path.empty()) {
      std::error_code ec;
      auto n = std::filesystem::file_size(in.path, ec);
      if (!ec)
        size = std::max<uint64_t>(size, n);
    }
    total += size;
  }
  m.bytes_total = total;
  m.bounded = bounded;
  m.bytes_read = read;
}

caf::expected<std::string> partition_snapshot(warehouse& wh, const std::string& pipeline,
                                              uint32_t part, std::string_view meta) {
  if (meta.empty())
    return std::string{};
  std::string snap = window_operator::snapshot_of(meta);
  auto err = wh.window_rows(pipeline, part, [&](std::string_view k, std::string_view v) {
    window_operator::append_row(snap, k, v);
  });
  if (err)
    return err;
  return snap;
}

uint64_t open_windows(const pipeline_config& p, warehouse& wh) {
  auto states = wh.states(p.name);
  if (!states)
    return 0;
  uint64_t n = 0;
  for (const auto& [part, meta] : *states) {
    if (part == preprocess_partition || meta.empty())
      continue;
    window_operator op{p};
    auto snap = partition_snapshot(wh, p.name, part, meta);
    if (snap && !op.restore(*snap))
      n += op.open_windows();
  }
  return n;
}

run_stats summarize(const std::string& name, const std::vector<run_stats>& last, const tally& t,
                    uint32_t restarts, warehouse& wh, commit_mode mode) {
  run_stats out;
  out.pipeline = name;
  const preprocess_counters& a = t.start;
  auto i = std::find_if(last.begin(), last.end(), [&](auto& s) { return s.pipeline == name; });
  if (i != last.end()) {
    auto less = [](uint64_t x, uint64_t y) { return x > y ? x - y : 0; };
    out.read = less(i->read, a.read);
    out.accepted = less(i->accepted, a.accepted);
    out.filtered = less(i->filtered, a.filtered);
    out.late = less(i->late, a.late);
    out.late_updates = less(i->late_updates, a.late_updates);
    out.duplicates = less(i->duplicates, a.duplicates);
    out.bytes_read = less(i->bytes_read, a.bytes);
    for (const auto& [why, n] : i->rejected) {
      uint64_t before = 0;
      for (const auto& [w, m] : a.rejected)
        if (w == why)
          before = m;
      if (n > before)
        out.rejected.emplace_back(why, n - before);
    }
  }
  // Epochs and windows come from the store: a commit whose report was lost with a failing actor
  // (after the commit, before the report) still counts.
  auto epoch = wh.last_epoch(name);
  auto windows = wh.windows_committed(name);
  out.epochs_committed = epoch && *epoch > t.start_epoch ? *epoch - t.start_epoch : 0;
  out.windows_committed = windows && *windows > t.start_windows ? *windows - t.start_windows : 0;
  if (mode != commit_mode::exactly_once && i != last.end()) {
    // No epochs in the store: what the last generation committed.
    out.epochs_committed = i->epochs_committed;
    out.windows_committed = i->windows_committed;
  }
  out.restarts = restarts;
  auto l = t.latencies;
  if (!l.empty()) {
    std::sort(l.begin(), l.end());
    out.epoch_p50_us = l[(l.size() - 1) / 2];
    out.epoch_p99_us = l[std::min(l.size() - 1, (l.size() * 99) / 100)];
    out.epoch_max_us = l.back();
  }
  return out;
}

std::vector<std::pair<std::string, uint64_t>>
resume_points(const std::string& name, const std::vector<std::pair<uint32_t, std::string>>& sources,
              warehouse& wh) {
  std::vector<std::pair<std::string, uint64_t>> out;
  auto offsets = wh.offsets(name);
  if (!offsets)
    return out;
  for (const auto& [id, off] : *offsets)
    for (const auto& [sid, key] : sources)
      if (sid == id)
        out.emplace_back(key, off);
  return out;
}

caf::expected<std::vector<tally>> start_tallies(const weir_config& cfg,
                                                const std::vector<prepared>& preps, warehouse& wh) {
  std::vector<tally> out(cfg.pipelines.size());
  for (size_t i = 0; i < out.size() && i < preps.size(); ++i) {
    out[i].start = committed_counters(preps[i].restore.snapshot);
    out[i].start_epoch = preps[i].first_epoch - 1;
    auto w = wh.windows_committed(cfg.pipelines[i].name);
    if (!w)
      return w.error();
    out[i].start_windows = *w;
  }
  return out;
}

std::string last_commits(const weir_config& cfg, warehouse& wh) {
  std::string where = "last good commits:";
  for (const auto& p : cfg.pipelines) {
    auto last = wh.last_epoch(p.name);
    where += " " + p.name + " epoch " + (last ? std::to_string(*last) : "?");
  }
  return where;
}

} // namespace weir
