#include "actors/core/definition.hpp"

#include "actors/core/config.hpp"
#include "actors/core/extension.hpp"
#include "actors/core/timeparse.hpp"

#include <map>
#include <utility>

namespace weir {

namespace {

struct setting {
  std::string name;
  std::string value;
  bool fixed; ///< a change invalidates the stored results and state
};

std::string join(const std::vector<std::string>& xs) {
  std::string out;
  for (size_t i = 0; i < xs.size(); ++i)
    out += (i ? ", " : "") + xs[i];
  return out;
}

std::string describe(const aggregate_config& a) {
  auto out = a.name + " = " + to_string(a) + "(" + a.field + ")";
  if (a.fn == agg_fn::quantile) {
    auto q = std::to_string(a.q);
    while (q.size() > 1 && q.back() == '0')
      q.pop_back();
    out += " q " + q;
  }
  // A custom aggregate's options are part of what its state means (its decay, its scale).
  if (a.fn == agg_fn::custom)
    out += " options {" + extension_options{a.options}.canonical() + "}";
  return out;
}

/// "kind {options} -> outputs; ..." of the stages, in order.
std::string describe_stages(const std::vector<stage_config>& stages) {
  std::string out;
  for (const auto& s : stages) {
    out +=
      (out.empty() ? "" : "; ") + s.kind + " {" + extension_options{s.options}.canonical() + "}";
    if (!s.outputs.empty())
      out += " -> " + join(s.outputs);
  }
  return out;
}

std::vector<setting> settings_of(const pipeline_config& p) {
  static const char* kinds[] = {"tumbling", "sliding", "session"};
  static const char* times[] = {"iso8601", "epoch_s", "epoch_ms", "epoch_us"};
  const auto& w = p.window;
  std::vector<setting> out{
    {"fields.time", p.fields.time, true},
    {"fields.key", join(p.fields.key), true},
    {"window.kind", kinds[static_cast<size_t>(w.kind)], true},
  };
  if (w.kind != window_kind::session) {
    out.push_back({"window.size", format_duration(w.size), true});
    out.push_back({"window.slide", format_duration(w.slide), true});
    out.push_back({"window.offset", format_duration(w.offset), true});
  } else {
    out.push_back({"window.gap", format_duration(w.gap), true});
  }
  std::vector<std::string> aggs;
  for (const auto& a : p.aggregates)
    aggs.push_back(describe(a));
  out.push_back({"aggregates", join(aggs), true});
  out.push_back({"fields.time_format", times[static_cast<size_t>(p.fields.time_fmt)], false});
  out.push_back({"fields.event_id", p.fields.event_id, false});
  out.push_back({"window.out_of_orderness", format_duration(w.out_of_orderness), false});
  out.push_back({"window.allowed_lateness", format_duration(w.allowed_lateness), false});
  out.push_back({"window.late", w.late == late_policy::update ? "update" : "dead_letter", false});
  out.push_back({"window.update_horizon", format_duration(w.update_horizon), false});
  out.push_back({"preprocess.dedupe", p.preprocess.dedupe ? "true" : "false", false});
  out.push_back({"preprocess.dedupe_horizon", format_duration(p.preprocess.dedupe_horizon), false});
  // Stages change records from now on, like filters: recorded, and a change is accepted.
  if (!p.stages.empty())
    out.push_back({"stages", describe_stages(p.stages), false});
  return out;
}

/// Whether a stored setting that the config no longer has could go without harm: only those
/// that are never fixed (a window's size is gone when its kind changed, which is not).
bool compatible_name(const std::string& name) {
  if (name == "stages")
    return true;
  for (const auto& s : settings_of(pipeline_config{}))
    if (s.name == name)
      return !s.fixed;
  return false;
}

/// Newlines in a value would break the line format: they are stored as "\n".
std::string escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\\')
      out += "\\\\";
    else
      out += c;
  }
  return out;
}

} // namespace

std::string encode_definition(const pipeline_config& p) {
  std::string out;
  for (const auto& s : settings_of(p))
    out += s.name + " = " + escape(s.value) + "\n";
  return out;
}

std::vector<definition_change> compare_definition(const std::string& stored,
                                                  const pipeline_config& p) {
  std::map<std::string, std::string> old;
  std::vector<std::string> order;
  size_t pos = 0;
  while (pos < stored.size()) {
    auto nl = stored.find('\n', pos);
    auto line = stored.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? stored.size() : nl + 1;
    auto eq = line.find(" = ");
    if (eq == std::string::npos)
      continue;
    old[line.substr(0, eq)] = line.substr(eq + 3);
    order.push_back(line.substr(0, eq));
  }
  auto now = settings_of(p);
  std::vector<definition_change> out;
  for (const auto& s : now) {
    auto v = escape(s.value);
    auto i = old.find(s.name);
    if (i == old.end())
      out.push_back({s.name, "(none)", v, !s.fixed});
    else if (i->second != v)
      out.push_back({s.name, i->second, v, !s.fixed});
  }
  for (const auto& name : order) {
    bool present = false;
    for (const auto& s : now)
      present = present || s.name == name;
    if (!present)
      out.push_back({name, old[name], "(none)", compatible_name(name)});
  }
  return out;
}

} // namespace weir
