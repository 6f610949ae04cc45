#include "cli/output.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

namespace weir::cli {

text_sink stdout_sink() {
  return [](std::string_view s) { std::fwrite(s.data(), 1, s.size(), stdout); };
}

std::string show_key(std::string k) {
  for (auto& c : k)
    if (c == weir::key_separator)
      c = '|';
  return k;
}

std::string internal_key(std::string k) {
  for (auto& c : k)
    if (c == '|')
      c = weir::key_separator;
  return k;
}

/// A number for people: integers as such, others with at most 4 decimals (or 6 significant
/// digits in exponent form when very large or small).
std::string fmt_number(double v) {
  if (std::isnan(v))
    return "";
  if (std::isinf(v))
    return v > 0 ? "inf" : "-inf";
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    return buf;
  }
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  std::string s = buf;
  if (s.find('e') == std::string::npos && std::fabs(v) >= 1e-4) {
    std::snprintf(buf, sizeof(buf), "%.4f", v);
    s = buf;
    while (!s.empty() && s.back() == '0')
      s.pop_back();
    if (!s.empty() && s.back() == '.')
      s.pop_back();
  }
  return s;
}

namespace {

/// The length of the valid UTF-8 sequence at s[i], or 0 when there is none.
size_t utf8_length(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2)
      return 0;
  // No overlong forms, surrogates or code points past U+10FFFF.
  auto c1 = n > 1 ? static_cast<unsigned char>(s[i + 1]) : 0;
  if ((n == 2 && c < 0xC2) || (n == 3 && c == 0xE0 && c1 < 0xA0) ||
      (n == 3 && c == 0xED && c1 >= 0xA0) || (n == 4 && c == 0xF0 && c1 < 0x90) ||
      (n == 4 && (c > 0xF4 || (c == 0xF4 && c1 >= 0x90))))
    return 0;
  return n;
}

} // namespace

/// A JSON string body: quotes, backslashes and control characters escaped, and any byte that
/// is not valid UTF-8 (a dead letter's raw text may hold such) replaced by U+FFFD.
std::string json_escape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = utf8_length(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s.data() + i, n);
      i += n;
      continue;
    }
    ++i;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

/// A source as users name it, from its store key "pipeline/source:path": "source (path)", or
/// "source (stdin)".
std::string source_label(const std::string& key) {
  auto slash = key.find('/');
  auto colon = key.find(':', slash == std::string::npos ? 0 : slash + 1);
  if (slash == std::string::npos || colon == std::string::npos)
    return key;
  auto name = key.substr(slash + 1, colon - slash - 1);
  auto path = key.substr(colon + 1);
  return name + " (" + (path == "-" ? std::string{"stdin"} : path) + ")";
}

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos)
    return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"')
      out += '"';
    out += c;
  }
  return out + "\"";
}

caf::expected<weir::timestamp> parse_when(const std::string& s) {
  weir::timestamp t = 0;
  if (weir::parse_time(s, weir::time_format::iso8601, t))
    return t;
  const char* why = nullptr;
  if (weir::parse_time(s, weir::time_format::epoch_s, t, why))
    return t;
  // A number that parses but is out of range says so; anything else gets the usage hint.
  const bool number = s.find_first_not_of("+-.0123456789") == std::string::npos;
  return weir::make_error(
    weir::errc::bad_config,
    "bad time '" + s +
      "': " + (number ? std::string{why} : "use ISO-8601 with a zone or epoch seconds"));
}
dead_letter_writer::dead_letter_writer(std::string format, text_sink sink,
                                       std::function<std::string(uint32_t)> source_name)
  : format_(std::move(format))
  , sink_(std::move(sink))
  , source_name_(std::move(source_name)) {
  if (format_ == "csv")
    sink_("pipeline,source,offset,reason,raw\n");
  else if (format_ == "table")
    table_.emplace(std::vector<std::string>{"pipeline", "source", "offset", "reason", "raw"},
                   std::vector<bool>{false, false, true, false, false}, sink_);
}

void dead_letter_writer::page(const std::vector<weir::dead_letter_row>& page) {
  rows_.clear();
  for (const auto& r : page) {
    std::vector<std::string> row{r.pipeline, source_name_(r.letter.source),
                                 std::to_string(r.letter.offset), r.letter.reason, r.letter.raw};
    line_.clear();
    if (format_ == "csv") {
      for (size_t i = 0; i < row.size(); ++i)
        line_ += (i ? "," : "") + csv_escape(row[i]);
      line_ += '\n';
    } else if (format_ == "json") {
      line_ = first_ ? "[\n  " : ",\n  ";
      line_ += "{\"pipeline\": \"" + json_escape(row[0]) + "\", \"source\": \"" +
               json_escape(row[1]) + "\", \"offset\": " + row[2] + ", \"reason\": \"" +
               json_escape(row[3]) + "\", \"raw\": \"" + json_escape(row[4]) + "\"}";
    } else {
      auto& raw = row[4];
      for (auto& c : raw)
        if (static_cast<unsigned char>(c) < 0x20)
          c = ' ';
      if (raw.size() > 80)
        raw = raw.substr(0, 77) + "...";
      rows_.push_back(std::move(row));
    }
    first_ = false;
    if (!line_.empty())
      sink_(line_);
  }
  if (table_)
    table_->add(rows_);
}

void dead_letter_writer::finish() {
  if (format_ == "json")
    sink_(first_ ? "[]\n" : "\n]\n");
  if (table_)
    table_->finish();
}

namespace {

/// %* in a log pattern: the message, JSON-escaped.
class json_message : public spdlog::custom_flag_formatter {
public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const auto text = json_escape(std::string_view{msg.payload.data(), msg.payload.size()});
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return spdlog::details::make_unique<json_message>();
  }
};

} // namespace

void use_json_logs() {
  auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  f->add_flag<json_message>('*').set_pattern(
    R"({"time": "%Y-%m-%dT%H:%M:%S.%fZ", "level": "%l", "msg": "%*"})");
  spdlog::set_formatter(std::move(f));
}

} // namespace weir::cli
