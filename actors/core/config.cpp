#include "actors/core/config.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "actors/core/error.hpp"
#include "actors/core/expr.hpp"
#include "actors/core/extension.hpp"
#include "actors/core/stream_entry.hpp"
#include "actors/core/timeparse.hpp"
#include "actors/core/toml_reader.hpp"

namespace weir {

const char* to_string(agg_fn x) {
  switch (x) {
    case agg_fn::count:
      return "count";
    case agg_fn::sum:
      return "sum";
    case agg_fn::avg:
      return "avg";
    case agg_fn::min:
      return "min";
    case agg_fn::max:
      return "max";
    case agg_fn::distinct:
      return "distinct";
    case agg_fn::quantile:
      return "quantile";
    case agg_fn::custom:
      return "custom";
  }
  return "?";
}

std::string to_string(const aggregate_config& a) {
  return a.fn == agg_fn::custom ? a.custom_name : std::string{to_string(a.fn)};
}

const char* to_string(window_kind x) {
  switch (x) {
    case window_kind::tumbling:
      return "tumbling";
    case window_kind::sliding:
      return "sliding";
    case window_kind::session:
      return "session";
  }
  return "?";
}

const char* to_string(time_format x) {
  switch (x) {
    case time_format::iso8601:
      return "iso8601";
    case time_format::epoch_s:
      return "epoch_s";
    case time_format::epoch_ms:
      return "epoch_ms";
    case time_format::epoch_us:
      return "epoch_us";
  }
  return "?";
}

const char* to_string(value_type x) {
  switch (x) {
    case value_type::string:
      return "string";
    case value_type::int64:
      return "int";
    case value_type::float64:
      return "float";
    case value_type::time:
      return "time";
  }
  return "?";
}

const char* to_string(source_format x) {
  switch (x) {
    case source_format::csv:
      return "csv";
    case source_format::ndjson:
      return "ndjson";
  }
  return "?";
}

const char* to_string(late_policy x) {
  switch (x) {
    case late_policy::dead_letter:
      return "dead-letter";
    case late_policy::update:
      return "update";
  }
  return "?";
}

namespace {

using namespace toml_check;

/// The Redis settings of a source: redis = "HOST:PORT" (port 6379 when left out), stream,
/// and optionally group, consumer, field, start and password_env.
void read_redis(const table_reader& r, source_config& s) {
  auto& c = s.redis;
  auto addr = parse_host_port(r.get_string("redis", {}), 6379);
  if (!addr)
    fail(*r.get("redis"), r.key("redis"),
         "must be \"HOST:PORT\" or \"HOST\", e.g. \"127.0.0.1:6379\"");
  c.host = addr->host;
  c.port = addr->port;
  c.stream = r.req_string("stream");
  if (c.stream.empty())
    fail(*r.get("stream"), r.key("stream"), "must not be empty");
  c.group = r.get_string("group", "weir");
  c.consumer = r.get_string("consumer", "weir");
  c.field = r.get_string("field", "data");
  for (auto [k, v] : {std::pair<const char*, std::string*>{"group", &c.group},
                      {"consumer", &c.consumer},
                      {"field", &c.field}})
    if (v->empty() || v->find_first_of(" \r\n") != std::string::npos)
      fail(*r.get(k), r.key(k), "must not be empty or hold spaces or line breaks");
  c.start = r.get_string("start", "0");
  if (c.start != "$" && !valid_stream_id(c.start))
    fail(*r.get("start"), r.key("start"),
         "must be \"0\" (the whole stream), \"$\" (new entries only) or an entry id such as "
         "\"1700000000000-0\"");
  c.password_env = r.get_string("password_env", {});
}

source_config read_source(const toml::table& t, const std::string& key, size_t index,
                          const std::string& dir) {
  table_reader r{t,
                 key,
                 {"name", "path", "http", "redis", "stream", "group", "consumer", "field", "start",
                  "password_env", "format", "follow", "header", "delimiter", "quote", "columns",
                  "max_line_bytes", "idle_timeout"}};
  source_config s;
  s.name = r.get_string("name", "source" + std::to_string(index));
  if (!valid_name(s.name))
    fail(*r.get("name"), r.key("name"), "must match [A-Za-z0-9_.-]+");
  s.http = r.get_bool("http", false);
  if (r.has("redis"))
    read_redis(r, s);
  else
    for (auto k : {"stream", "group", "consumer", "field", "start", "password_env"})
      if (auto n = r.get(k))
        fail(*n, r.key(k), "is a setting of a Redis source (redis = \"HOST:PORT\")");
  const bool network = s.http || s.is_redis();
  size_t def_format = 1;
  if (s.http && s.is_redis())
    fail(*r.get("redis"), r.key("redis"), "a source is either http or redis, not both");
  if (network) {
    const char* what = s.http ? "an http source takes its records over HTTP (weir serve)"
                              : "a redis source takes its records from its stream";
    // Records come in the bodies of POST /v1/pipelines/NAME/events (weir serve).
    if (auto n = r.get("path"))
      fail(*n, r.key("path"), std::string{what} + ", not from a path");
    if (auto n = r.get("follow"))
      fail(*n, r.key("follow"),
           std::string{s.http ? "an http" : "a redis"} + " source always runs until stopped");
  } else {
    auto raw_path = r.req_string("path");
    if (raw_path.empty())
      fail(*r.get("path"), r.key("path"), "must not be empty");
    s.path = resolve(dir, raw_path);
    auto ext = std::filesystem::path{raw_path}.extension().string();
    def_format = ext == ".ndjson" || ext == ".jsonl" || ext == ".json" ? 1 : 0;
    // Nothing tells what stdin holds: guessing csv would reject every line of an ndjson stream.
    if (raw_path == "-" && !r.has("format"))
      fail(*r.get("path"), r.key("format"),
           "missing: a source reading stdin (path = \"-\") needs format = \"csv\" or \"ndjson\"");
  }
  s.format = static_cast<source_format>(r.get_choice("format", {"csv", "ndjson"}, def_format));
  s.follow = network || r.get_bool("follow", false);
  s.idle_timeout = r.get_duration("idle_timeout", s.follow ? 30 * us_per_s : 0);
  s.max_line_bytes =
    static_cast<size_t>(r.get_count("max_line_bytes", s.max_line_bytes, int64_t{1} << 30));
  if (s.max_line_bytes == 0)
    fail(*r.get("max_line_bytes"), r.key("max_line_bytes"), "must be at least 1");
  if (s.format == source_format::ndjson) {
    for (auto k : {"header", "delimiter", "quote", "columns"})
      if (auto n = r.get(k))
        fail(*n, r.key(k), "is a csv setting; this source is ndjson");
    s.header = false;
    return s;
  }
  s.header = r.get_bool("header", !network);
  if (network && s.header)
    fail(*r.get("header"), r.key("header"),
         std::string{s.http ? "an http body" : "a redis entry"} +
           " has no header line: give header = false and the columns");
  auto one_char = [&](const char* k, char def) {
    auto n = r.get(k);
    if (n == nullptr)
      return def;
    auto v = r.get_string(k, {});
    if (v.size() != 1 || v[0] == '\n' || v[0] == '\r' || static_cast<unsigned char>(v[0]) > 127)
      fail(*n, r.key(k), "must be exactly one ASCII character other than a line break");
    return v[0];
  };
  s.delimiter = one_char("delimiter", ',');
  s.quote = one_char("quote", '"');
  if (s.delimiter == s.quote)
    fail(r.get("quote") ? *r.get("quote") : *r.get("delimiter"), r.key("quote"),
         "must differ from the delimiter");
  s.columns = r.get_strings("columns");
  if (s.header && r.has("columns"))
    fail(*r.get("columns"), r.key("columns"), "only with header = false (the header names them)");
  if (!s.header && s.columns.empty())
    fail(r.get("header") ? *r.get("header") : t, r.key("columns"),
         "header = false needs the column names in columns");
  std::set<std::string> seen;
  for (size_t i = 0; i < s.columns.size(); ++i)
    if (!seen.insert(s.columns[i]).second)
      fail(*r.get("columns"), r.key("columns") + "[" + std::to_string(i) + "]",
           "duplicate column " + in_quotes(s.columns[i]));
  return s;
}

/// The names a pipeline can refer to, and what kind they are.
/// The `options = { ... }` table of an extension (key `k` of `r`): scalar values as text.
extension_options read_options(const table_reader& r, std::string_view k = "options") {
  const auto* t = r.get_table(k, false);
  std::vector<std::pair<std::string, std::string>> values;
  if (t == nullptr)
    return extension_options{};
  for (const auto& [name, node] : *t) {
    auto key = r.key(k) + "." + std::string{name.str()};
    std::string text;
    if (auto s = node.as_string())
      text = s->get();
    else if (auto i = node.as_integer())
      text = std::to_string(i->get());
    else if (auto f = node.as_floating_point()) {
      std::ostringstream os;
      os.precision(17);
      os << f->get();
      text = os.str();
    } else if (auto b = node.as_boolean())
      text = b->get() ? "true" : "false";
    else
      fail(node, key, "an option is a string, a number or a boolean");
    values.emplace_back(std::string{name.str()}, std::move(text));
  }
  return extension_options{std::move(values)};
}

/// Runs an extension factory: its extension_error fails the config at `n`, under key `key`
/// (the option it names, when it names one).
template <class F>
auto make_extension(const toml::node& n, const std::string& key, F&& f) {
  try {
    return f();
  } catch (const extension_error& e) {
    std::string what = e.what();
    if (what.rfind("options.", 0) == 0) {
      auto colon = what.find(": ");
      if (colon != std::string::npos)
        fail(n, key + "." + what.substr(0, colon), what.substr(colon + 2));
    }
    fail(n, key, what);
  } catch (const std::exception& e) {
    fail(n, key, std::string{"the extension refused its settings: "} + e.what());
  }
}

/// "NAME is not a registered WHAT (registered: ...)" for an unknown extension name.
std::string unknown_extension(const char* what, const std::string& name) {
  auto names = extension_registry::global().names(what);
  std::string list;
  for (const auto& n : names)
    list += (list.empty() ? "" : ", ") + n;
  return in_quotes(name) + " is not a registered " + what +
         (list.empty() ? std::string{" (none is registered: a plugin in `plugins` or a program "
                                     "on the weir library registers them)"}
                       : " (registered: " + list + ")");
}

struct field_names {
  std::set<std::string> inputs;   ///< key, time, event_id, measures, attributes
  std::set<std::string> measures; ///< numeric: measures
  std::set<std::string> derived;  ///< numeric: derived fields
  std::set<std::string> outputs;  ///< numeric: fields stages fill ([[pipeline.stage]] outputs)
  /// The outputs the stages name, known before they are read: filters may use them.
  std::set<std::string> stage_outputs;

  bool known(const std::string& n) const {
    return inputs.count(n) || derived.count(n) || outputs.count(n);
  }
  bool numeric(const std::string& n) const {
    return measures.count(n) || derived.count(n) || outputs.count(n);
  }
};

void check_known(const field_names& f, const toml::node& n, const std::string& key,
                 const std::string& name) {
  if (!f.known(name))
    fail(n, key,
         "unknown field " + in_quotes(name) +
           "; fields are declared in fields (time, event_id, key, measures, attributes) or "
           "preprocess.derive");
}

void read_fields(const table_reader& r, pipeline_config& p, field_names& names) {
  const auto& t = *r.get_table("fields", true);
  table_reader f{
    t, r.key("fields"), {"event_id", "time", "time_format", "key", "measures", "attributes"}};
  auto& m = p.fields;
  m.event_id = f.get_string("event_id", {});
  if (f.has("event_id") && m.event_id.empty())
    fail(*f.get("event_id"), f.key("event_id"), "must not be empty");
  m.time = f.req_string("time");
  if (m.time.empty())
    fail(*f.get("time"), f.key("time"), "must not be empty");
  m.time_fmt = static_cast<time_format>(
    f.get_choice("time_format", {"iso8601", "epoch_s", "epoch_ms", "epoch_us"}, 0));
  f.require("key");
  m.key = f.get_strings("key", true);
  if (m.key.empty())
    fail(*f.get("key"), f.key("key"), "needs at least one field");
  m.measures = f.get_strings("measures");
  m.attributes = f.get_strings("attributes");
  names.inputs.insert(m.time);
  if (!m.event_id.empty())
    names.inputs.insert(m.event_id);
  for (auto& k : m.key)
    names.inputs.insert(k);
  for (auto& x : m.measures) {
    names.inputs.insert(x);
    names.measures.insert(x);
  }
  for (auto& x : m.attributes)
    names.inputs.insert(x);
}

void read_preprocess(const table_reader& r, pipeline_config& p, field_names& names) {
  auto& pp = p.preprocess;
  const auto* t = r.get_table("preprocess", false);
  if (t == nullptr)
    return;
  table_reader x{*t,
                 r.key("preprocess"),
                 {"required", "types", "filters", "rename", "derive", "dedupe", "dedupe_horizon",
                  "max_reject_ratio"}};
  if (auto ratio = x.get_number("max_reject_ratio")) {
    if (!(*ratio >= 0.0 && *ratio <= 1.0))
      fail(*x.get("max_reject_ratio"), x.key("max_reject_ratio"), "must be between 0 and 1");
    pp.max_reject_ratio = *ratio;
  }
  // rename first: it decides nothing about the names used elsewhere, only about input columns.
  if (const auto* rt = x.get_table("rename", false)) {
    std::set<std::string> targets;
    for (auto&& [k, v] : *rt) {
      auto key = x.key("rename") + "." + std::string{k.str()};
      if (!v.is_string() || v.as_string()->get().empty())
        fail(v, key, "expected the new field name (a non-empty string)");
      const auto& to = v.as_string()->get();
      if (k.str().empty())
        fail(v, key, "the input field name must not be empty");
      if (!targets.insert(to).second)
        fail(v, key, "two input fields are renamed to " + in_quotes(to));
      pp.rename.emplace_back(std::string{k.str()}, to);
    }
  }
  // derive next: later settings may refer to derived fields.
  auto derives = x.get_tables("derive");
  for (size_t i = 0; i < derives.size(); ++i) {
    auto key = index_key(x.path(), "derive", i);
    table_reader d{*derives[i], key, {"name", "expr"}};
    derive_config dc;
    dc.name = d.req_string("name");
    dc.expr = d.req_string("expr");
    if (dc.name.empty())
      fail(*d.get("name"), d.key("name"), "must not be empty");
    if (names.known(dc.name))
      fail(*d.get("name"), d.key("name"), "field " + in_quotes(dc.name) + " already exists");
    auto prog = expr_program::compile(dc.expr);
    if (!prog)
      fail(*d.get("expr"), d.key("expr"), render(prog.error()));
    for (const auto& in : prog->inputs())
      if (!names.known(in))
        fail(*d.get("expr"), d.key("expr"),
             "unknown field " + in_quotes(in) +
               " (an input must be a declared field or an earlier derived field)");
    names.derived.insert(dc.name);
    pp.derive.push_back(std::move(dc));
  }
  pp.required = x.get_strings("required");
  for (size_t i = 0; i < pp.required.size(); ++i)
    check_known(names, *x.get("required"), x.key("required") + "[" + std::to_string(i) + "]",
                pp.required[i]);
  if (const auto* tt = x.get_table("types", false)) {
    for (auto&& [k, v] : *tt) {
      auto key = x.key("types") + "." + std::string{k.str()};
      std::string name{k.str()};
      check_known(names, v, key, name);
      if (names.derived.count(name))
        fail(v, key, "derived fields are always numbers");
      static const char* type_names[] = {"string", "int", "float", "time"};
      if (!v.is_string())
        fail(v, key, "expected one of: string, int, float, time");
      const auto& s = v.as_string()->get();
      auto it = std::find_if(std::begin(type_names), std::end(type_names),
                             [&](const char* n) { return s == n; });
      if (it == std::end(type_names))
        fail(v, key,
             "unknown type " + in_quotes(s) + "; expected one of: string, int, float, time");
      pp.types.emplace_back(name, static_cast<value_type>(it - std::begin(type_names)));
    }
  }
  auto filters = x.get_tables("filters");
  for (size_t i = 0; i < filters.size(); ++i) {
    auto key = index_key(x.path(), "filters", i);
    table_reader f{*filters[i], key, {"field", "min", "max", "eq", "ne", "in"}};
    filter_config fc;
    fc.field = f.req_string("field");
    // A filter on a stage's output applies after the stages (min and max only).
    const bool output = !names.known(fc.field) && names.stage_outputs.count(fc.field) != 0;
    if (!output)
      check_known(names, *f.get("field"), f.key("field"), fc.field);
    fc.min = f.get_number("min");
    fc.max = f.get_number("max");
    if (f.has("eq"))
      fc.eq = f.get_string("eq", {});
    if (f.has("ne"))
      fc.ne = f.get_string("ne", {});
    fc.in = f.get_strings("in");
    if (f.has("in") && fc.in.empty())
      fail(*f.get("in"), f.key("in"), "needs at least one value");
    if (!fc.min && !fc.max && !fc.eq && !fc.ne && fc.in.empty())
      fail(f.line(), key, "a filter needs at least one of min, max, eq, ne, in");
    if (fc.min && fc.max && *fc.min > *fc.max)
      fail(*f.get("max"), f.key("max"), "is below min: no record could pass");
    if (names.derived.count(fc.field) && (fc.eq || fc.ne || !fc.in.empty()))
      fail(f.line(), key, "a derived field is a number: filter it with min and max only");
    if (output && (fc.eq || fc.ne || !fc.in.empty()))
      fail(f.line(), key, "a stage's output is a number: filter it with min and max only");
    pp.filters.push_back(std::move(fc));
  }
  pp.dedupe = x.get_bool("dedupe", false);
  if (pp.dedupe && p.fields.event_id.empty())
    fail(*x.get("dedupe"), x.key("dedupe"), "needs fields.event_id");
  if (!pp.dedupe && x.has("dedupe_horizon"))
    fail(*x.get("dedupe_horizon"), x.key("dedupe_horizon"), "only with dedupe = true");
  pp.dedupe_horizon = x.get_duration("dedupe_horizon", 3600 * us_per_s);
  if (pp.dedupe && pp.dedupe_horizon <= 0)
    fail(*x.get("dedupe_horizon"), x.key("dedupe_horizon"), "must be greater than zero");
}

void read_window(const table_reader& r, pipeline_config& p) {
  const auto& t = *r.get_table("window", true);
  table_reader w{t,
                 r.key("window"),
                 {"kind", "size", "slide", "gap", "offset", "out_of_orderness", "allowed_lateness",
                  "late", "update_horizon"}};
  auto& wc = p.window;
  wc.kind = static_cast<window_kind>(w.get_choice("kind", {"tumbling", "sliding", "session"}, 0));
  auto not_for = [&](const char* k) {
    if (auto n = w.get(k))
      fail(*n, w.key(k), std::string{"is not a setting of "} + to_string(wc.kind) + " windows");
  };
  auto positive = [&](const char* k) {
    auto v = w.get_duration(k, 0);
    if (!w.has(k))
      fail(w.line(), w.key(k),
           std::string{"missing required key for "} + to_string(wc.kind) + " windows");
    if (v <= 0)
      fail(*w.get(k), w.key(k), "must be greater than zero");
    return v;
  };
  switch (wc.kind) {
    case window_kind::tumbling:
      not_for("slide");
      not_for("gap");
      wc.size = positive("size");
      wc.slide = wc.size;
      break;
    case window_kind::sliding:
      not_for("gap");
      wc.size = positive("size");
      wc.slide = positive("slide");
      if (wc.slide > wc.size)
        fail(*w.get("slide"), w.key("slide"), "must not exceed size");
      break;
    case window_kind::session:
      not_for("size");
      not_for("slide");
      not_for("offset");
      wc.gap = positive("gap");
      break;
  }
  wc.offset = w.get_duration("offset", 0);
  wc.out_of_orderness = w.get_duration("out_of_orderness", 0);
  wc.allowed_lateness = w.get_duration("allowed_lateness", 0);
  wc.late = static_cast<late_policy>(w.get_choice("late", {"dead-letter", "update"}, 0));
  if (wc.late == late_policy::update && wc.kind == window_kind::session)
    fail(*w.get("late"), w.key("late"), "update is not possible with session windows");
  if (wc.late != late_policy::update && w.has("update_horizon"))
    fail(*w.get("update_horizon"), w.key("update_horizon"), "only with late = \"update\"");
  wc.update_horizon =
    wc.late == late_policy::update ? w.get_duration("update_horizon", 86400 * us_per_s) : 0;
}

/// fn of aggregate `a`: a built-in one, else a registered aggregate_function made from its
/// options (its factory's refusal fails the config at the aggregate's key).
void read_fn(const table_reader& a, const toml::table& t, const std::string& key,
             aggregate_config& ac) {
  static const std::vector<std::string> builtin{"count", "sum",      "avg",     "min",
                                                "max",   "distinct", "quantile"};
  a.require("fn");
  auto name = a.get_string("fn", {});
  auto it = std::find(builtin.begin(), builtin.end(), name);
  if (it != builtin.end()) {
    ac.fn = static_cast<agg_fn>(it - builtin.begin());
    if (a.has("options"))
      fail(*a.get("options"), a.key("options"), "only for a registered (custom) aggregate");
    return;
  }
  const auto* factory = extension_registry::global().aggregate(name);
  if (factory == nullptr)
    fail(*a.get("fn"), a.key("fn"),
         unknown_extension("aggregate", name) + "; built in: count, sum, avg, min, max, " +
           "distinct, quantile");
  ac.fn = agg_fn::custom;
  ac.custom_name = name;
  auto options = read_options(a);
  ac.options = options.values();
  const toml::node& at = a.has("options") ? *a.get("options") : static_cast<const toml::node&>(t);
  ac.custom = make_extension(at, key, [&] { return (*factory)(options); });
  if (!ac.custom)
    fail(at, a.key("fn"), in_quotes(name) + ": its factory made no aggregate");
  const size_t size = ac.custom->state_size();
  if (size == 0 || size > max_aggregate_state)
    fail(*a.get("fn"), a.key("fn"),
         in_quotes(name) + ": its state_size() is " + std::to_string(size) +
           " bytes; it must be 1 to " + std::to_string(max_aggregate_state));
}

void read_aggregates(const table_reader& r, pipeline_config& p, const field_names& names) {
  auto aggs = r.get_tables("aggregate");
  if (aggs.empty())
    fail(r.line(), r.key("aggregate"), "a pipeline needs at least one [[pipeline.aggregate]]");
  std::set<std::string> seen;
  for (size_t i = 0; i < aggs.size(); ++i) {
    auto key = index_key(r.path(), "aggregate", i);
    table_reader a{*aggs[i], key, {"fn", "field", "name", "q", "options"}};
    aggregate_config ac;
    read_fn(a, *aggs[i], key, ac);
    ac.field = a.get_string("field", {});
    if (a.has("field") && ac.field.empty())
      fail(*a.get("field"), a.key("field"), "must not be empty");
    if (ac.field.empty() && ac.fn != agg_fn::count)
      fail(a.line(), a.key("field"), "missing required key for " + to_string(ac));
    if (!ac.field.empty()) {
      check_known(names, *a.get("field"), a.key("field"), ac.field);
      bool numeric_fn = ac.fn != agg_fn::count && ac.fn != agg_fn::distinct;
      if (numeric_fn && !names.numeric(ac.field))
        fail(*a.get("field"), a.key("field"),
             to_string(ac) + " needs a numeric field (a measure or a derived field); " +
               in_quotes(ac.field) + " is neither");
    }
    if (ac.fn == agg_fn::quantile) {
      ac.q = a.get_number("q").value_or(0.5);
      if (!(ac.q >= 0 && ac.q <= 1))
        fail(*a.get("q"), a.key("q"), "must be between 0 and 1");
    } else if (a.has("q")) {
      fail(*a.get("q"), a.key("q"), "only for quantile");
    }
    ac.name = a.get_string("name", ac.field.empty() ? std::string{"count"}
                                                    : to_string(ac) + "_" + ac.field);
    if (!valid_name(ac.name))
      fail(a.has("name") ? *a.get("name") : *aggs[i], a.key("name"), "must match [A-Za-z0-9_.-]+");
    if (!seen.insert(ac.name).second)
      fail(a.has("name") ? *a.get("name") : *aggs[i], a.key("name"),
           "duplicate aggregate name " + in_quotes(ac.name));
    p.aggregates.push_back(std::move(ac));
  }
}

/// [[pipeline.stage]]: kind, options, outputs. Each stage's factory is called here once with its
/// options and the fields it will see, so that options it refuses fail the config; `make` keeps
/// the factory and options to make the instances of a run.
void read_stages(const table_reader& r, pipeline_config& p, field_names& names) {
  auto stages = r.get_tables("stage");
  for (size_t i = 0; i < stages.size(); ++i) {
    auto key = index_key(r.path(), "stage", i);
    table_reader x{*stages[i], key, {"kind", "options", "outputs"}};
    stage_config sc;
    sc.kind = x.req_string("kind");
    const auto* factory = extension_registry::global().stage_kind(sc.kind);
    if (factory == nullptr)
      fail(*x.get("kind"), x.key("kind"), unknown_extension("stage", sc.kind));
    auto options = read_options(x);
    sc.outputs = x.get_strings("outputs");
    for (size_t k = 0; k < sc.outputs.size(); ++k) {
      const auto& o = sc.outputs[k];
      auto okey = x.key("outputs") + "[" + std::to_string(k) + "]";
      if (!valid_name(o))
        fail(*x.get("outputs"), okey, "must match [A-Za-z0-9_.-]+");
      if (names.known(o))
        fail(*x.get("outputs"), okey,
             "field " + in_quotes(o) + " already exists (a stage's outputs are new fields)");
      names.outputs.insert(o);
    }
    sc.options = options.values();
    p.stages.push_back(sc);
    stage_context ctx{p.name, stage_fields(p, i)};
    make_extension(x.has("options") ? *x.get("options") : *stages[i], key,
                   [&] { return (*factory)(options, ctx); });
    p.stages.back().make = [f = *factory, options](const stage_context& c) {
      return f(options, c);
    };
  }
}

/// [pipeline.results]: key_index, change_feed, change_retention. A pipeline with a sink keeps
/// the change feed whatever change_feed says: its sinks are delivered from it.
void read_results(const table_reader& r, pipeline_config& p) {
  const auto* t = r.get_table("results", false);
  p.results.change_feed = !p.sinks.empty();
  if (t == nullptr)
    return;
  table_reader x{*t, r.key("results"), {"key_index", "change_feed", "change_retention"}};
  auto& c = p.results;
  c.key_index = x.get_bool("key_index", false);
  c.change_feed = x.get_bool("change_feed", false) || !p.sinks.empty();
  c.change_retention = x.get_duration("change_retention", c.change_retention);
  if (x.has("change_retention") && !c.change_feed)
    fail(*x.get("change_retention"), x.key("change_retention"),
         "only with change_feed = true (or a [[pipeline.sink]])");
  if (c.change_retention <= 0)
    fail(*x.get("change_retention"), x.key("change_retention"), "must be greater than zero");
}

/// [[pipeline.sink]]: name, kind, options. Each sink is made once here so that options its
/// factory refuses fail the load at their line; the run makes its own (sink_config::make).
void read_sinks(const table_reader& r, pipeline_config& p) {
  auto sinks = r.get_tables("sink");
  std::set<std::string> seen;
  for (size_t i = 0; i < sinks.size(); ++i) {
    auto key = index_key(r.path(), "sink", i);
    table_reader x{*sinks[i], key, {"name", "kind", "options"}};
    sink_config s;
    s.name = x.req_string("name");
    if (!valid_name(s.name))
      fail(*x.get("name"), x.key("name"), "must match [A-Za-z0-9_.-]+");
    if (!seen.insert(s.name).second)
      fail(*x.get("name"), x.key("name"), "duplicate sink name " + in_quotes(s.name));
    s.kind = x.req_string("kind");
    const auto* found = extension_registry::global().sink_kind(s.kind);
    if (found == nullptr)
      fail(*x.get("kind"), x.key("kind"), unknown_extension("sink", s.kind));
    auto factory = *found;
    auto options = read_options(x);
    const toml::node& at = x.has("options") ? *x.get("options") : *sinks[i];
    auto made = make_extension(at, key, [&] { return factory(options, p.name); });
    if (!made)
      fail(at, key, "sink kind " + in_quotes(s.kind) + " made no sink");
    s.make = [factory, options](const std::string& pipeline) { return factory(options, pipeline); };
    p.sinks.push_back(std::move(s));
  }
}

pipeline_config read_pipeline(const toml::table& t, const std::string& key,
                              const std::string& dir) {
  table_reader r{t,
                 key,
                 {"name", "partitions", "source", "fields", "preprocess", "window", "aggregate",
                  "results", "stage", "sink"}};
  pipeline_config p;
  p.name = r.req_string("name");
  if (!valid_name(p.name))
    fail(*r.get("name"), r.key("name"), "must match [A-Za-z0-9_.-]+");
  p.partitions =
    static_cast<size_t>(r.get_count("partitions", 0, static_cast<int64_t>(max_partitions)));
  auto sources = r.get_tables("source");
  if (sources.empty())
    fail(r.line(), r.key("source"), "a pipeline needs at least one [[pipeline.source]]");
  std::set<std::string> source_names;
  for (size_t i = 0; i < sources.size(); ++i) {
    auto skey = index_key(key, "source", i);
    p.sources.push_back(read_source(*sources[i], skey, i, dir));
    if (!source_names.insert(p.sources.back().name).second)
      fail(sources[i]->get("name") ? *sources[i]->get("name") : *sources[i], skey + ".name",
           "duplicate source name " + in_quotes(p.sources.back().name));
  }
  field_names names;
  read_fields(r, p, names);
  // What the stages will fill, for the filters (read_stages checks the names).
  for (const auto* st : r.get_tables("stage"))
    if (const auto* outs = st->get_as<toml::array>("outputs"))
      for (const auto& o : *outs)
        if (o.is_string())
          names.stage_outputs.insert(o.as_string()->get());
  read_preprocess(r, p, names);
  read_stages(r, p, names);
  read_window(r, p);
  read_aggregates(r, p, names);
  read_sinks(r, p);
  read_results(r, p);
  return p;
}

weir_config read_root(const toml::table& root, const std::string& file) {
  table_reader r{root,
                 "",
                 {"store", "commit_interval", "commit_events", "max_epoch_bytes", "batch_bytes",
                  "max_inflight_batches", "lake_retention", "durable", "restart_budget",
                  "restart_backoff", "restart_backoff_max", "record_retries", "max_poison_records",
                  "task_retention", "slow_epoch", "log_level", "log_format", "plugins",
                  "pipeline"}};
  auto dir = std::filesystem::path{file}.parent_path().string();
  weir_config c;
  c.file = file;
  // Plugins first: the pipelines name what they register.
  c.plugins = r.get_strings("plugins");
  for (size_t i = 0; i < c.plugins.size(); ++i) {
    // Absolute: dlopen looks a name without a slash up in the library path, not here.
    std::error_code ec;
    auto abs = std::filesystem::absolute(resolve(dir, c.plugins[i]), ec);
    c.plugins[i] = ec ? resolve(dir, c.plugins[i]) : abs.lexically_normal().string();
    if (auto err = load_plugin(c.plugins[i]))
      fail(*r.get("plugins"), "plugins[" + std::to_string(i) + "]", render(err));
  }
  auto& rt = c.runtime;
  rt.store = resolve(dir, r.get_string("store", "store"));
  if (rt.store.empty() || rt.store == "-")
    fail(*r.get("store"), "store", "must name a directory");
  rt.commit_interval = r.get_duration("commit_interval", rt.commit_interval);
  if (rt.commit_interval <= 0)
    fail(*r.get("commit_interval"), "commit_interval", "must be greater than zero");
  rt.commit_events = static_cast<uint64_t>(r.get_count("commit_events", 0));
  rt.max_epoch_bytes = static_cast<uint64_t>(
    r.get_count("max_epoch_bytes", static_cast<long long>(rt.max_epoch_bytes)));
  rt.batch_bytes = static_cast<size_t>(r.get_count("batch_bytes", rt.batch_bytes, 1LL << 30));
  if (rt.batch_bytes == 0)
    fail(*r.get("batch_bytes"), "batch_bytes", "must be at least 1");
  rt.max_inflight_batches =
    static_cast<size_t>(r.get_count("max_inflight_batches", rt.max_inflight_batches, 1 << 20));
  if (rt.max_inflight_batches == 0)
    fail(*r.get("max_inflight_batches"), "max_inflight_batches", "must be at least 1");
  rt.lake_retention = r.get_duration("lake_retention", 0);
  rt.task_retention = r.get_duration("task_retention", rt.task_retention);
  if (rt.task_retention <= 0)
    fail(*r.get("task_retention"), "task_retention", "must be greater than zero");
  rt.slow_epoch = r.get_duration("slow_epoch", rt.slow_epoch);
  if (rt.slow_epoch <= 0)
    fail(*r.get("slow_epoch"), "slow_epoch", "must be greater than zero");
  rt.durable = r.get_bool("durable", true);
  if (r.has("log_level")) {
    static const char* levels[] = {"trace", "debug", "info", "warn", "error", "off"};
    rt.log_level =
      levels[r.get_choice("log_level", {"trace", "debug", "info", "warn", "error", "off"}, 3)];
  }
  if (r.has("log_format"))
    rt.log_format = r.get_choice("log_format", {"text", "json"}, 0) == 1 ? "json" : "text";
  rt.restart_budget = static_cast<uint32_t>(r.get_count("restart_budget", rt.restart_budget, 1000));
  rt.restart_backoff = r.get_duration("restart_backoff", rt.restart_backoff);
  rt.restart_backoff_max = r.get_duration("restart_backoff_max", rt.restart_backoff_max);
  if (rt.restart_backoff_max < rt.restart_backoff)
    fail(*r.get("restart_backoff_max"), "restart_backoff_max",
         "must not be shorter than restart_backoff");
  rt.record_retries = static_cast<uint32_t>(r.get_count("record_retries", rt.record_retries, 100));
  rt.max_poison_records = static_cast<uint64_t>(
    r.get_count("max_poison_records", static_cast<int64_t>(rt.max_poison_records), 1000000));
  auto pipelines = r.get_tables("pipeline");
  if (pipelines.empty())
    fail(1, "pipeline", "the config needs at least one [[pipeline]]");
  std::set<std::string> names;
  for (size_t i = 0; i < pipelines.size(); ++i) {
    auto key = "pipeline[" + std::to_string(i) + "]";
    // Checked first: a repeated pipeline is more likely a copy than an incomplete one.
    if (auto n = pipelines[i]->get("name"); n && n->is_string())
      if (!names.insert(n->as_string()->get()).second)
        fail(*n, key + ".name", "duplicate pipeline name " + in_quotes(n->as_string()->get()));
    c.pipelines.push_back(read_pipeline(*pipelines[i], key, dir));
  }
  return c;
}

} // namespace

caf::expected<weir_config> parse_config(std::string_view text, const std::string& path) {
  return toml_check::parse_checked<weir_config>(
    text, path, [&path](const toml::table& root) { return read_root(root, path); });
}

caf::expected<weir_config> load_config(const std::string& path) {
  auto text = toml_check::read_config_file(path);
  if (!text)
    return std::move(text.error());
  return parse_config(*text, path);
}

} // namespace weir
