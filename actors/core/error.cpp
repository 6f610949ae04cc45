#include "actors/core/error.hpp"

#include <caf/message.hpp>

namespace weir {

const char* to_string(errc x) {
  switch (x) {
    case errc::none: return "none";
    case errc::bad_config: return "bad_config";
    case errc::bad_input: return "bad_input";
    case errc::bad_record: return "bad_record";
    case errc::store_io: return "store_io";
    case errc::store_format: return "store_format";
    case errc::store_corrupt: return "store_corrupt";
    case errc::decode: return "decode";
    case errc::epoch_aborted: return "epoch_aborted";
    case errc::stopped: return "stopped";
    case errc::internal: return "internal";
  }
  return "unknown";
}

std::string render(const caf::error& err) {
  if (!err)
    return "no error";
  const auto& ctx = err.context();
  if (err.category() == caf::atom("weir") && ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return caf::to_string(err);
}

} // namespace weir
