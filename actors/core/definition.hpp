#pragma once

/// A pipeline's definition as stored with its results: what the stored results and operator
/// state mean. A config that changes what they mean (window, key, time field, aggregates) is
/// refused on an existing store; a change that only affects records from now on (lateness,
/// dedupe, filters, sources, partitions) is accepted and recorded.

#include <string>
#include <vector>

#include "actors/core/types.hpp"

namespace weir {

/// The stored text of a pipeline's definition: one "name = value" line per setting that
/// decides what results and state mean, in a fixed order.
std::string encode_definition(const pipeline_config& p);

struct definition_change {
  std::string setting;
  std::string stored;      ///< "(none)" when the store does not have it
  std::string configured;  ///< "(none)" when the config does not have it
  bool compatible = false; ///< true when the stored results and state stay valid
};

/// The differences between a stored definition (encode_definition) and a config, in setting
/// order.
std::vector<definition_change> compare_definition(const std::string& stored,
                                                  const pipeline_config& p);

} // namespace weir
