// Stages for the tests (a MODULE the `weir` command loads with plugins = ["..."]): they use the
// extension interfaces through inline code and virtual calls only, as a user's plugin would.
//
//   scale       field := field * factor                      options: field, factor
//   drop_above  drops records whose field > threshold        options: field, threshold
//   enrich      into := a * b (an output of the stage)       options: a, b, into
//   pass        nothing (for measuring the cost of a stage)
//   fail_on     throws on a record whose field == value      options: field, value

#include <cmath>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

#include "actors/core/extension.hpp"

namespace {

using weir::extension_error;
using weir::extension_options;
using weir::stage_batch;
using weir::stage_context;

/// Option `key` as text; extension_error naming it when it is missing.
std::string required(const extension_options& o, const std::string& key) {
  for (const auto& [k, v] : o.values())
    if (k == key)
      return v;
  throw extension_error("options." + key + ": required");
}

double number(const extension_options& o, const std::string& key) {
  auto text = required(o, key);
  char* end = nullptr;
  double x = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(x))
    throw extension_error("options." + key + ": expected a number, got \"" + text + "\"");
  return x;
}

/// Every option is one of `allowed`.
void allow(const extension_options& o, std::initializer_list<const char*> allowed) {
  for (const auto& [k, v] : o.values()) {
    bool ok = false;
    for (const char* a : allowed)
      ok = ok || k == a;
    if (!ok)
      throw extension_error("options." + k + ": unknown option");
  }
}

/// The column of the numeric field named by option `key`.
int column(const extension_options& o, const stage_context& c, const std::string& key) {
  auto name = required(o, key);
  int col = c.column(name);
  if (col < 0)
    throw extension_error("options." + key + ": \"" + name + "\" is not a numeric field of " +
                          "pipeline " + c.pipeline);
  return col;
}

class scale final : public weir::stage {
public:
  scale(const extension_options& o, const stage_context& c)
    : col_((allow(o, {"field", "factor"}), column(o, c, "field")))
    , factor_(number(o, "factor")) {}
  void process(stage_batch& b) override {
    for (size_t r = 0; r < b.size(); ++r)
      b.set_value(r, col_, b.value(r, col_) * factor_);
  }

private:
  int col_;
  double factor_;
};

class drop_above final : public weir::stage {
public:
  drop_above(const extension_options& o, const stage_context& c)
    : col_((allow(o, {"field", "threshold"}), column(o, c, "field")))
    , threshold_(number(o, "threshold")) {}
  void process(stage_batch& b) override {
    for (size_t r = 0; r < b.size(); ++r)
      if (!b.dropped(r) && b.value(r, col_) > threshold_)
        b.drop(r);
  }

private:
  int col_;
  double threshold_;
};

class enrich final : public weir::stage {
public:
  enrich(const extension_options& o, const stage_context& c)
    : a_((allow(o, {"a", "b", "into"}), column(o, c, "a")))
    , b_(column(o, c, "b"))
    , into_(column(o, c, "into")) {}
  void process(stage_batch& b) override {
    for (size_t r = 0; r < b.size(); ++r)
      b.set_value(r, into_, b.value(r, a_) * b.value(r, b_));
  }

private:
  int a_;
  int b_;
  int into_;
};

class pass final : public weir::stage {
public:
  explicit pass(const extension_options& o) { allow(o, {}); }
  void process(stage_batch&) override {}
};

class fail_on final : public weir::stage {
public:
  fail_on(const extension_options& o, const stage_context& c)
    : col_((allow(o, {"field", "value"}), column(o, c, "field")))
    , value_(number(o, "value")) {}
  void process(stage_batch& b) override {
    for (size_t r = 0; r < b.size(); ++r)
      if (b.value(r, col_) == value_)
        throw std::runtime_error("refused the value " + std::to_string(value_));
  }

private:
  int col_;
  double value_;
};

} // namespace

WEIR_PLUGIN(r) {
  r.add_stage("scale", [](const extension_options& o, const stage_context& c) {
    return std::make_unique<scale>(o, c);
  });
  r.add_stage("drop_above", [](const extension_options& o, const stage_context& c) {
    return std::make_unique<drop_above>(o, c);
  });
  r.add_stage("enrich", [](const extension_options& o, const stage_context& c) {
    return std::make_unique<enrich>(o, c);
  });
  r.add_stage("pass", [](const extension_options& o, const stage_context&) {
    return std::make_unique<pass>(o);
  });
  r.add_stage("fail_on", [](const extension_options& o, const stage_context& c) {
    return std::make_unique<fail_on>(o, c);
  });
}
