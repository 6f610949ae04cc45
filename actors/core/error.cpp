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
    case errc::record_failed: return "record_failed";
    case errc::store_busy: return "store_busy";
    case errc::too_many_rejects: return "too_many_rejects";
    case errc::node_lost: return "node_lost";
  }
  return "unknown";
}

caf::error make_record_error(const record_span& at, std::string what) {
  return caf::error{static_cast<uint8_t>(errc::record_failed), caf::atom("weir"),
                    caf::make_message(std::move(what), at.pipeline, at.source, at.begin, at.end,
                                      at.line)};
}

std::optional<record_span> record_span_of(const caf::error& err) {
  if (!err || err.category() != caf::atom("weir")
      || err.code() != static_cast<uint8_t>(errc::record_failed))
    return std::nullopt;
  const auto& ctx = err.context();
  if (!ctx.match_elements<std::string, uint32_t, uint32_t, uint64_t, uint64_t, bool>())
    return std::nullopt;
  record_span s;
  s.pipeline = ctx.get_as<uint32_t>(1);
  s.source = ctx.get_as<uint32_t>(2);
  s.begin = ctx.get_as<uint64_t>(3);
  s.end = ctx.get_as<uint64_t>(4);
  s.line = ctx.get_as<bool>(5);
  return s;
}

std::string render(const caf::error& err) {
  if (!err)
    return "no error";
  const auto& ctx = err.context();
  if (err.category() == caf::atom("weir") && ctx.size() >= 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return caf::to_string(err);
}

} // namespace weir
