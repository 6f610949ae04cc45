/// A sink plugin for the tests (tests/e2e_sink_test.cpp, the crash harness): sink kind "file"
/// keeps an output file exact under at-least-once delivery. The file's first line holds the
/// last epoch applied; each epoch's rows follow the earlier ones; an epoch at or below the one
/// recorded is skipped. Every delivery writes the whole file anew and renames it into place, so
/// a crash leaves the old file or the new one.
///
/// Options: path (the output file, required); fail_epoch (a test's: deliver throws the first
/// time it gets that epoch, to test the retry); fail_times (how many times in a row it throws
/// there, default 1).
///
/// Lines: "epoch N", then "pipeline start end key v1 v2 ..." per row (times in microseconds,
/// values with 17 digits).
///
/// Sink kind "discard" takes every epoch and keeps nothing (the cost of delivery alone, for
/// measurements).
///
/// Only inline code of extension.hpp is used: the plugin needs no symbol of the weir binary.

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "actors/core/extension.hpp"

namespace {

/// The value of option `key` ("" when missing).
std::string option(const weir::extension_options& o, const std::string& key) {
  for (const auto& [k, v] : o.values())
    if (k == key)
      return v;
  return {};
}

uint64_t whole_number(const weir::extension_options& o, const std::string& key) {
  const auto text = option(o, key);
  if (text.empty())
    return 0;
  size_t used = 0;
  uint64_t n = 0;
  try {
    n = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size())
    throw weir::extension_error("options." + key + ": must be a whole number, not " + text);
  return n;
}

class file_sink final : public weir::sink {
public:
  file_sink(std::string path, uint64_t fail_epoch, uint64_t fail_times)
    : path_(std::move(path))
    , fail_epoch_(fail_epoch)
    , fail_left_(fail_times) {}

  void deliver(const weir::committed_epoch& e) override {
    uint64_t applied = 0;
    std::string body;
    read(applied, body);
    if (e.epoch <= applied)
      return; // delivered again after a crash: applied already
    if (e.epoch == fail_epoch_ && fail_left_ > 0) {
      --fail_left_;
      throw std::runtime_error("planned failure at epoch " + std::to_string(e.epoch));
    }
    std::ostringstream out;
    out << "epoch " << e.epoch << "\n" << body;
    char num[64];
    for (const auto& r : e.rows) {
      out << e.pipeline << ' ' << r.start << ' ' << r.end << ' ' << r.key;
      for (double v : r.values) {
        std::snprintf(num, sizeof num, "%.17g", v);
        out << ' ' << num;
      }
      out << '\n';
    }
    const auto tmp = path_ + ".tmp";
    {
      std::ofstream f{tmp, std::ios::binary | std::ios::trunc};
      f << out.str();
      f.flush();
      if (!f)
        throw std::runtime_error("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), path_.c_str()) != 0)
      throw std::runtime_error("cannot rename " + tmp + " to " + path_);
  }

private:
  /// The epoch recorded in the file and the rows after it (0 and "" without a file).
  void read(uint64_t& applied, std::string& body) const {
    std::ifstream f{path_, std::ios::binary};
    std::string head;
    if (!f || !std::getline(f, head))
      return;
    if (head.rfind("epoch ", 0) != 0)
      throw std::runtime_error(path_ + " is not a file this sink wrote");
    applied = std::stoull(head.substr(6));
    std::ostringstream rest;
    rest << f.rdbuf();
    body = rest.str();
  }

  std::string path_;
  uint64_t fail_epoch_;
  uint64_t fail_left_;
};

class discard_sink final : public weir::sink {
public:
  void deliver(const weir::committed_epoch& e) override { rows_ += e.rows.size(); }

private:
  uint64_t rows_ = 0;
};

} // namespace

WEIR_PLUGIN(r) {
  r.add_sink("discard", [](const weir::extension_options&, const std::string&) {
    return std::unique_ptr<weir::sink>(std::make_unique<discard_sink>());
  });
  r.add_sink("file", [](const weir::extension_options& o, const std::string&) {
    for (const auto& [k, v] : o.values())
      if (k != "path" && k != "fail_epoch" && k != "fail_times")
        throw weir::extension_error("options." + k +
                                    ": unknown option (known: path, fail_epoch, fail_times)");
    auto path = option(o, "path");
    if (path.empty())
      throw weir::extension_error("options.path: the file sink needs the path of its file");
    const uint64_t times = option(o, "fail_times").empty() ? 1 : whole_number(o, "fail_times");
    return std::unique_ptr<weir::sink>(
      std::make_unique<file_sink>(path, whole_number(o, "fail_epoch"), times));
  });
}
