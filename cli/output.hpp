#pragma once

/// What the `weir` command and `weir serve` print: keys, numbers, times, JSON and CSV text,
/// tables, and query results and dead letters a page at a time, written to a sink (stdout for the
/// command, a response body for the server).

#include <charconv>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "actors/core/timeparse.hpp"
#include "actors/core/types.hpp"
#include "actors/runtime.hpp"
#include "cli/format.hpp"

namespace weir::cli {

/// Where text goes.
using text_sink = std::function<void(std::string_view)>;

/// Writes to stdout.
text_sink stdout_sink();

/// A key as users write it: the fields of a composite key joined with '|'.
std::string show_key(std::string k);
/// The stored form of a key as users write it.
std::string internal_key(std::string k);
/// A number for people: integers as such, others with at most 4 decimals (or 6 significant
/// digits in exponent form when very large or small).
std::string fmt_number(double v);
/// A JSON string body: quotes, backslashes and control characters escaped, and any byte that
/// is not valid UTF-8 (a dead letter's raw text may hold such) replaced by U+FFFD.
std::string json_escape(std::string_view s);
/// A source as users name it, from its store key "pipeline/source:path": "source (path)", or
/// "source (stdin)".
std::string source_label(const std::string& key);
/// A CSV field, quoted when it must be.
std::string csv_escape(const std::string& s);
/// A time given as ISO-8601 with a zone or as epoch seconds.
caf::expected<weir::timestamp> parse_when(const std::string& s);

/// Prints a table a page of rows at a time: column widths come from the header and the first
/// page (a later, wider cell makes its row longer rather than holding every row in memory).
/// Text is left-aligned, numbers right-aligned.
class table_printer {
public:
  table_printer(std::vector<std::string> head, std::vector<bool> numeric, text_sink sink)
    : head_(std::move(head))
    , numeric_(std::move(numeric))
    , sink_(std::move(sink)) {}

  void add(const std::vector<std::vector<std::string>>& rows) {
    if (!started_) {
      started_ = true;
      width_.resize(head_.size());
      for (size_t i = 0; i < head_.size(); ++i)
        width_[i] = head_[i].size();
      for (const auto& r : rows)
        for (size_t i = 0; i < r.size() && i < width_.size(); ++i)
          width_[i] = std::max(width_[i], r[i].size());
      line(head_);
      std::vector<std::string> sep;
      for (auto w : width_)
        sep.emplace_back(w, '-');
      line(sep);
    }
    for (const auto& r : rows)
      line(r);
  }

  /// Prints the header of an empty table.
  void finish() {
    if (!started_)
      add({});
  }

private:
  void line(const std::vector<std::string>& r) {
    out_.clear();
    for (size_t i = 0; i < r.size(); ++i) {
      const auto& cell = r[i];
      size_t w = i < width_.size() ? width_[i] : 0;
      std::string pad(w > cell.size() ? w - cell.size() : 0, ' ');
      bool right = i < numeric_.size() && numeric_[i];
      out_ += right ? pad + cell : cell + pad;
      if (i + 1 < r.size())
        out_ += "  ";
    }
    while (!out_.empty() && out_.back() == ' ')
      out_.pop_back();
    out_ += '\n';
    sink_(out_);
  }

  std::vector<std::string> head_;
  std::vector<bool> numeric_;
  std::vector<size_t> width_;
  text_sink sink_;
  std::string out_;
  bool started_ = false;
};


/// Writes a query's rows as they come, a page at a time (table, csv or json). csv and json
/// rows are formatted straight into one buffer per page: no allocation per row.
class result_writer {
public:
  result_writer(std::string format, text_sink sink)
    : format_(std::move(format))
    , sink_(std::move(sink)) {}

  void page(const weir::query_answer& a) {
    if (!started_)
      start(a.aggregates, a.change_feed);
    if (table_) {
      table_rows(a);
      return;
    }
    buf_.clear();
    for (size_t i = 0; i < a.rows.size(); ++i)
      add(a.rows[i], a.aggregates, a.change_feed ? std::optional{a.epochs[i]} : std::nullopt);
    sink_(buf_);
    buf_.clear();
  }

  /// csv and json: starts the answer (the rows of the change feed carry their epoch).
  void begin(const std::vector<std::string>& aggregates, bool change_feed) {
    if (!started_)
      start(aggregates, change_feed);
  }

  /// csv and json, after begin(): one row as it comes from the store, without copying it;
  /// the text goes to the sink a megabyte at a time (and at finish()).
  void row(const weir::window_result& r, const std::vector<std::string>& aggregates,
           std::optional<uint64_t> epoch = std::nullopt) {
    add(r, aggregates, epoch);
    if (buf_.size() >= (size_t{1} << 20)) {
      sink_(buf_);
      buf_.clear();
    }
  }

  void finish() {
    if (!buf_.empty()) {
      sink_(buf_);
      buf_.clear();
    }
    if (format_ == "json")
      sink_(first_ ? "[]\n" : "\n]\n");
    else if (table_)
      table_->finish();
  }

private:
  void add(const weir::window_result& r, const std::vector<std::string>& aggs,
           std::optional<uint64_t> epoch) {
    if (format_ == "json")
      json_row(r, aggs);
    else
      csv_row(r);
    if (epoch) { // the change feed: the epoch ends the row
      buf_.pop_back();
      buf_ += format_ == "json" ? ", \"epoch\": " : ",";
      buf_ += std::to_string(*epoch);
      buf_ += format_ == "json" ? '}' : '\n';
    }
  }

  void start(const std::vector<std::string>& aggs, bool with_epoch) {
    started_ = true;
    std::vector<std::string> head{"window_start", "window_end", "key"};
    head.insert(head.end(), aggs.begin(), aggs.end());
    head.push_back("version");
    if (with_epoch)
      head.push_back("epoch");
    if (format_ == "csv") {
      std::string line;
      for (size_t i = 0; i < head.size(); ++i)
        line += (i ? "," : "") + csv_escape(head[i]);
      line += '\n';
      sink_(line);
    } else if (format_ == "table") {
      std::vector<bool> numeric(head.size(), true);
      numeric[0] = numeric[1] = numeric[2] = false;
      table_.emplace(head, numeric, sink_);
    }
    for (const auto& a : aggs)
      json_names_.push_back(", \"" + json_escape(a) + "\": ");
  }

  void table_rows(const weir::query_answer& a) {
    rows_.clear();
    for (size_t i = 0; i < a.rows.size(); ++i) {
      const auto& r = a.rows[i];
      std::vector<std::string> row{weir::format_time(r.start), weir::format_time(r.end),
                                   show_key(r.key)};
      for (auto v : r.values)
        row.push_back(fmt_number(v));
      row.push_back(std::to_string(r.version));
      if (a.change_feed)
        row.push_back(std::to_string(a.epochs[i]));
      rows_.push_back(std::move(row));
    }
    table_->add(rows_);
  }

  /// The text of a time; rows come in start order, so most repeat the one before.
  const std::string& time_text(weir::timestamp t, int which) {
    if (!time_valid_[which] || time_of_[which] != t) {
      time_of_[which] = t;
      time_text_[which] = weir::format_time(t);
      time_valid_[which] = true;
    }
    return time_text_[which];
  }

  void number(double v) {
    char tmp[32];
    auto r = std::to_chars(tmp, tmp + sizeof(tmp), v);
    buf_.append(tmp, r.ptr);
  }

  void csv_row(const weir::window_result& r) {
    buf_ += time_text(r.start, 0);
    buf_ += ',';
    buf_ += time_text(r.end, 1);
    buf_ += ',';
    bool plain = true;
    for (char c : r.key)
      plain = plain && c != ',' && c != '"' && c != '\n' && c != '\r';
    if (plain) {
      for (char c : r.key)
        buf_ += c == weir::key_separator ? '|' : c;
    } else {
      buf_ += csv_escape(show_key(r.key));
    }
    for (auto v : r.values) {
      buf_ += ',';
      if (!std::isnan(v))
        number(v);
    }
    buf_ += ',';
    buf_ += std::to_string(r.version);
    buf_ += '\n';
  }

  void json_row(const weir::window_result& r, const std::vector<std::string>& aggs) {
    buf_ += first_ ? "[\n  " : ",\n  ";
    first_ = false;
    buf_ += "{\"window_start\": \"";
    buf_ += time_text(r.start, 0);
    buf_ += "\", \"window_end\": \"";
    buf_ += time_text(r.end, 1);
    buf_ += "\", \"key\": \"";
    buf_ += json_escape(show_key(r.key));
    buf_ += '"';
    for (size_t i = 0; i < aggs.size() && i < r.values.size(); ++i) {
      buf_ += json_names_[i];
      if (std::isfinite(r.values[i]))
        number(r.values[i]);
      else
        buf_ += weir::json_number(r.values[i]); // null, or "inf" as a string
    }
    buf_ += ", \"version\": ";
    buf_ += std::to_string(r.version);
    buf_ += '}';
  }

  std::string format_;
  text_sink sink_;
  bool started_ = false;
  bool first_ = true;
  std::optional<table_printer> table_;
  std::vector<std::vector<std::string>> rows_;
  std::vector<std::string> json_names_;
  std::string buf_;
  weir::timestamp time_of_[2] = {0, 0};
  bool time_valid_[2] = {false, false};
  std::string time_text_[2];
};

/// Log lines as JSON objects, one a line: {"time": ISO-8601 UTC with microseconds, "level",
/// "msg"} (the message JSON-escaped), for `--log-format json`.
void use_json_logs();

/// Writes dead letters a page at a time as csv, json or a table.
class dead_letter_writer {
public:
  dead_letter_writer(std::string format, text_sink sink,
                     std::function<std::string(uint32_t)> source_name);
  void page(const std::vector<weir::dead_letter_row>& rows);
  void finish();

private:
  std::string format_;
  text_sink sink_;
  std::function<std::string(uint32_t)> source_name_;
  std::optional<table_printer> table_;
  bool first_ = true;
  std::string line_;
  std::vector<std::vector<std::string>> rows_;
};

} // namespace weir::cli
