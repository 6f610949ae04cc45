#pragma once

/// Shared by the csv and ndjson fuzz targets: pipeline configs that switch on every check of
/// the preprocess engine (types, filters, derive, dedupe, windows with lateness and updates),
/// chosen by the first byte of the input, and a driver that feeds the rest as chunks of whole
/// lines, as the ingest actor does.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "actors/core/config.hpp"
#include "actors/core/preprocessor.hpp"

namespace weir::fuzz {

/// The config text for `format` ("csv" or "ndjson"), variant `v` (0..3): time formats, window
/// kinds and csv header settings differ between variants.
inline std::string pipeline_text(std::string_view format, unsigned v) {
  static const char* time_formats[] = {"iso8601", "epoch_s", "epoch_ms", "epoch_us"};
  static const char* windows[] = {
    "kind = \"tumbling\"\n  size = \"1m\"\n  out_of_orderness = \"5s\"\n",
    ("kind = \"sliding\"\n  size = \"1m\"\n  slide = \"7s\"\n  offset = \"3s\"\n"
     "  late = \"update\"\n  update_horizon = \"1h\"\n"),
    "kind = \"session\"\n  gap = \"30s\"\n  allowed_lateness = \"10s\"\n",
    "kind = \"tumbling\"\n  size = \"36500d\"\n  late = \"update\"\n"};
  std::string t = "[[pipeline]]\nname = \"p\"\npartitions = 3\n\n  [[pipeline.source]]\n"
                  "  path = \"in\"\n  format = \"" +
                  std::string{format} + "\"\n";
  if (format == "csv" && v % 2 == 1)
    t += "  header = false\n  columns = [\"id\", \"ts\", \"k\", \"x\", \"y\", \"tag\"]\n";
  if (format == "csv" && v == 2)
    t += "  delimiter = \";\"\n  quote = \"'\"\n";
  t += "  max_line_bytes = 4096\n\n  [pipeline.fields]\n  event_id = \"id\"\n  time = \"ts\"\n"
       "  time_format = \"" +
       std::string{time_formats[v % 4]} +
       "\"\n"
       "  key = [\"k\", \"tag\"]\n  measures = [\"x\"]\n  attributes = [\"y\", \"tag\"]\n\n"
       "  [pipeline.preprocess]\n  dedupe = " +
       (v % 2 ? "true" : "false") +
       "\n"
       "  types = { y = \"int\", tag = \"string\" }\n"
       "  rename = { n = \"y\" }\n"
       "  derive = [ { name = \"z\", expr = \"x * 2 / (y - 1) + -x\" } ]\n"
       "  filters = [ { field = \"z\", min = -1e300 }, { field = \"tag\", ne = \"drop\" } ]\n\n"
       "  [pipeline.window]\n  " +
       windows[v % 4] +
       "\n"
       "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
       "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"z\"\n"
       "  [[pipeline.aggregate]]\n  fn = \"distinct\"\n  field = \"y\"\n";
  return t;
}

/// Parses the four variants of `format` once; aborts when one is refused (a bug in the target).
inline const std::vector<pipeline_config>& pipelines(std::string_view format) {
  static std::vector<pipeline_config> csv;
  static std::vector<pipeline_config> ndjson;
  auto& out = format == "csv" ? csv : ndjson;
  if (out.empty()) {
    for (unsigned v = 0; v < 4; ++v) {
      auto cfg = parse_config(pipeline_text(format, v), "fuzz.toml");
      if (!cfg)
        std::abort();
      out.push_back(cfg->pipelines.at(0));
    }
  }
  return out;
}

/// Byte 0 picks the variant, byte 1 where the input is cut into two chunks (at a line end, as
/// ingest cuts); the rest are lines of `format`. Then snapshot and restore must agree.
inline void run_pipeline(std::string_view format, const uint8_t* data, size_t size) {
  if (size < 2)
    return;
  const auto& cfg = pipelines(format)[data[0] % 4];
  std::string_view text{reinterpret_cast<const char*>(data + 2), size - 2};
  preprocessor pre{cfg, 3};
  size_t cut = text.size() * data[1] / 256;
  cut = text.find('\n', cut);
  cut = cut == std::string_view::npos ? text.size() : cut + 1;
  pre.process(0, 0, text.substr(0, cut));
  pre.process(0, cut, text.substr(cut));
  preprocessor again{cfg, 3};
  if (again.restore_snapshot(pre.snapshot()))
    std::abort();
  if (again.watermark() != pre.watermark())
    std::abort();
  auto c = preprocessor::counters_of(pre.snapshot());
  if (!c || c->read != pre.counters().read)
    std::abort();
}

} // namespace weir::fuzz
