#pragma once

/// Weir's error codes. Code outside message handlers returns `caf::expected<T>`; the context of
/// a `caf::error` made here is one human-readable string, which `render` returns.

#include <cstdint>
#include <optional>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/make_message.hpp>

namespace weir {

enum class errc : uint8_t {
  none = 0,
  bad_config,        ///< the pipeline config is wrong (file, line and key in the message)
  bad_input,         ///< an input file is missing or unreadable
  bad_record,        ///< a record could not be decoded
  store_io,          ///< an LMDB call failed
  store_format,      ///< a store of an unknown format version
  store_corrupt,     ///< a stored value does not decode
  decode,            ///< a Cap'n Proto message from elsewhere did not decode within limits
  epoch_aborted,     ///< an epoch could not complete and was abandoned
  stopped,           ///< the pipeline was told to stop
  internal,
  record_failed,     ///< processing records threw; the error says which (record_span_of)
  store_busy,        ///< another process writes to the store (store_lock)
  too_many_rejects,  ///< more records rejected than max_reject_ratio allows
  node_lost,         ///< a node of the cluster is down or cannot be reached
};

const char* to_string(errc x);

/// Makes an error with one string of context.
inline caf::error make_error(errc code, std::string text) {
  return caf::error{static_cast<uint8_t>(code), caf::atom("weir"),
                    caf::make_message(std::move(text))};
}

/// The records a failure happened on: bytes [begin, end) of lake source `source` of pipeline
/// `pipeline`. `line` is true when the span is one line (the preprocess actor was isolating the
/// lines of a suspect chunk), false for a whole chunk.
struct record_span {
  uint32_t pipeline = 0;
  uint32_t source = 0;
  uint64_t begin = 0;
  uint64_t end = 0;
  bool line = false;
};

/// errc::record_failed with `what` as its text and the span in its context, for the supervisor.
caf::error make_record_error(const record_span& at, std::string what);

/// The span of an error made by make_record_error; nullopt for any other error.
std::optional<record_span> record_span_of(const caf::error& err);

/// Returns the human-readable text of an error made by make_error (or CAF's own rendering).
std::string render(const caf::error& err);

} // namespace weir
