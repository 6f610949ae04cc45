#pragma once

// The column of a committed epoch's aggregate, for the examples' sinks.

#include <actors/core/extension.hpp>

#include <algorithm>
#include <string>

namespace weir_examples {

/// The index of aggregate `name` in e.aggregates (and in each row's values). A pipeline
/// without it is a configuration mistake the sink cannot work around: it throws, and Weir
/// retries the epoch (with backoff) until the config is fixed.
inline size_t aggregate_column(const weir::committed_epoch& e, const std::string& name) {
  auto col = std::find(e.aggregates.begin(), e.aggregates.end(), name);
  if (col == e.aggregates.end())
    throw weir::extension_error("pipeline " + e.pipeline + " has no aggregate " + name);
  return static_cast<size_t>(col - e.aggregates.begin());
}

} // namespace weir_examples
