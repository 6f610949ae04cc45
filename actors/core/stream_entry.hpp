#pragma once

/// Entries of a Redis stream as a source sees them: their ids and the line each one becomes.
/// Pure logic, no I/O (the client is actors/redis_stream.hpp).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace weir {

/// A stream entry id "MS-SEQ" (milliseconds, sequence). Ids grow strictly within a stream.
struct stream_id {
  uint64_t ms = 0;
  uint64_t seq = 0;

  /// "MS-SEQ" or "MS" (sequence 0); nothing for anything else.
  static std::optional<stream_id> parse(std::string_view text);
  std::string str() const;

  friend bool operator<(const stream_id& a, const stream_id& b) {
    return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq);
  }
  friend bool operator==(const stream_id& a, const stream_id& b) {
    return a.ms == b.ms && a.seq == b.seq;
  }
  friend bool operator<=(const stream_id& a, const stream_id& b) { return !(b < a); }
};

/// Whether `text` is an entry id a source can start at ("0", "MS" or "MS-SEQ").
bool valid_stream_id(std::string_view text);

/// Builds the line of one entry into `out` (appended, without the line end). The value of
/// `field` when the entry has it; otherwise the whole entry as a JSON object of its fields (so
/// that the record is dead-lettered with what it held rather than lost). Line breaks in a value
/// become spaces: a pretty-printed JSON object is one record. The entry has `n` fields; `get(i)`
/// returns the i-th as a pair of string views (name, value).
template <class Get>
void append_entry_line(std::string& out, size_t n, Get get, std::string_view field);

/// Appends `s` to `out` as a JSON string (quotes and escapes included).
void append_json_string(std::string& out, std::string_view s);

/// Appends `s`, with '\r' and '\n' as spaces.
void append_one_line(std::string& out, std::string_view s);

template <class Get>
void append_entry_line(std::string& out, size_t n, Get get, std::string_view field) {
  for (size_t i = 0; i < n; ++i) {
    auto [name, value] = get(i);
    if (name == field) {
      append_one_line(out, value);
      return;
    }
  }
  out += '{';
  for (size_t i = 0; i < n; ++i) {
    auto [name, value] = get(i);
    if (i > 0)
      out += ", ";
    append_json_string(out, name);
    out += ": ";
    append_json_string(out, value);
  }
  out += '}';
}

} // namespace weir
