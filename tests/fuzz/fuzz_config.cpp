// Fuzz target: the config reader. Any text gives a config or an error, never a crash; a config
// that is accepted is accepted again (parsing is deterministic).

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "actors/core/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  auto cfg = weir::parse_config(text, "/fuzz/weir.toml");
  if (!cfg)
    return 0;
  auto again = weir::parse_config(text, "/fuzz/weir.toml");
  if (!again || again->pipelines.size() != cfg->pipelines.size())
    std::abort();
  return 0;
}
