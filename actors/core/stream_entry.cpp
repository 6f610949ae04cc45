#include "actors/core/stream_entry.hpp"

#include <charconv>

namespace weir {

namespace {

bool parse_u64(std::string_view s, uint64_t& v) {
  if (s.empty() || s.size() > 20)
    return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc{} && p == s.data() + s.size();
}

} // namespace

std::optional<stream_id> stream_id::parse(std::string_view text) {
  stream_id id;
  auto dash = text.find('-');
  if (!parse_u64(text.substr(0, dash), id.ms))
    return std::nullopt;
  if (dash != std::string_view::npos && !parse_u64(text.substr(dash + 1), id.seq))
    return std::nullopt;
  return id;
}

std::string stream_id::str() const { return std::to_string(ms) + "-" + std::to_string(seq); }

bool valid_stream_id(std::string_view text) { return stream_id::parse(text).has_value(); }

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20) {
      out += "\\u00";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  out += '"';
}

void append_one_line(std::string& out, std::string_view s) {
  const size_t at = out.size();
  out.append(s);
  for (size_t i = at; i < out.size(); ++i)
    if (out[i] == '\n' || out[i] == '\r')
      out[i] = ' ';
}

} // namespace weir
