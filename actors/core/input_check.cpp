#include "actors/core/input_check.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "actors/core/preprocessor.hpp"

namespace weir {

namespace {

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

/// Levenshtein distance, case-insensitive.
size_t distance(const std::string& a_in, const std::string& b_in) {
  auto a = lower(a_in);
  auto b = lower(b_in);
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string quoted_list(const std::vector<std::string>& xs) {
  std::string out;
  for (size_t i = 0; i < xs.size(); ++i)
    out += (i ? ", " : "") + ("\"" + xs[i] + "\"");
  return out;
}

} // namespace

std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates) {
  for (const auto& c : candidates)
    if (lower(c) == lower(name))
      return c;
  std::string best;
  size_t best_d = name.size() < 4 ? 2 : 3; // one slip in a short name, two in a longer one
  for (const auto& c : candidates) {
    auto d = distance(name, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

caf::error check_columns(const std::vector<std::string>& inputs,
                         const std::vector<std::string>& columns, const std::string& where) {
  std::string problems;
  for (const auto& f : inputs) {
    if (std::find(columns.begin(), columns.end(), f) != columns.end())
      continue;
    problems += "\n  field \"" + f + "\" is not a column";
    auto close = did_you_mean(f, columns);
    if (!close.empty())
      problems += " (did you mean \"" + close + "\"?)";
  }
  if (problems.empty())
    return caf::none;
  return make_error(errc::bad_config, where + " does not have every field the pipeline reads:" +
                                        problems + "\n  its columns: " + quoted_list(columns));
}

caf::error check_csv_header(const pipeline_config& p, size_t source_index,
                            const std::string& file) {
  const auto& sc = p.sources.at(source_index);
  preprocessor pre{p, 1};
  if (sc.format != source_format::csv)
    return caf::none;
  if (!sc.header)
    return check_columns(pre.input_fields(), sc.columns,
                         "pipeline " + p.name + ", source " + sc.name + ": the configured columns");
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return make_error(errc::bad_input,
                      "source " + sc.name + ": cannot read " + file + ": " + std::strerror(errno));
  std::string line;
  char c = 0;
  bool complete = false;
  while (line.size() <= sc.max_line_bytes && in.get(c)) {
    if (c == '\n') {
      complete = true;
      break;
    }
    line += c;
  }
  if (in.bad())
    return make_error(errc::bad_input, "source " + sc.name + ": cannot read " + file);
  if (line.empty() || (!complete && sc.follow))
    return caf::none;
  if (!complete && line.size() > sc.max_line_bytes)
    return make_error(errc::bad_config, file + ": the csv header is longer than max_line_bytes (" +
                                          std::to_string(sc.max_line_bytes) + ")");
  auto cols = pre.header_columns(source_index, line);
  if (!cols)
    return make_error(errc::bad_config,
                      file + ": the csv header does not parse: " + render(cols.error()));
  return check_columns(pre.input_fields(), *cols, file + " (csv header)");
}

uint64_t total_rejected(const std::vector<std::pair<std::string, uint64_t>>& rejected) {
  uint64_t n = 0;
  for (const auto& [_, count] : rejected)
    n += count;
  return n;
}

void reject_guard::start(uint64_t read, uint64_t rejected) {
  read0_ = read;
  rejected0_ = rejected;
}

caf::error reject_guard::check(uint64_t read, uint64_t rejected, bool at_end,
                               const std::string& example) const {
  uint64_t n = read > read0_ ? read - read0_ : 0;
  uint64_t r = rejected > rejected0_ ? rejected - rejected0_ : 0;
  if (n == 0 || (!at_end && n < reject_sample))
    return caf::none;
  if (static_cast<double>(r) <= max_ratio_ * static_cast<double>(n))
    return caf::none;
  auto pct = static_cast<int>(100.0 * static_cast<double>(r) / static_cast<double>(n));
  auto ratio = std::to_string(max_ratio_);
  while (ratio.size() > 3 && ratio.back() == '0')
    ratio.pop_back();
  std::string text = "pipeline " + pipeline_ + ": " + std::to_string(r) + " of the " +
                     std::to_string(n) + " records read were rejected (" + std::to_string(pct) +
                     "%), more than preprocess.max_reject_ratio = " + ratio + " allows";
  if (!example.empty())
    text += "; for example: " + example;
  if (at_end)
    text += ". They are committed as dead letters (see `weir dead-letters`).";
  else
    text += ". The config probably does not fit the input: the run stopped before committing "
            "the epoch in flight, so a run with a corrected config processes its records (try "
            "one with `weir run --dry-run`); records of epochs committed before are dead "
            "letters.";
  return make_error(errc::too_many_rejects,
                    text + " Set preprocess.max_reject_ratio = 1 to accept such runs.");
}

} // namespace weir
