#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "actors/core/config.hpp"
#include "actors/core/error.hpp"

using namespace weir;

namespace {

const char* full_config = R"(store = "data/store"
commit_interval = "250ms"
commit_events = 5000
batch_bytes = 65536
max_inflight_batches = 8
lake_retention = "2h"
durable = false

[[pipeline]]
name = "merchant_hourly"
partitions = 3

  [[pipeline.source]]
  name = "transactions"
  path = "in/transactions.csv"
  format = "csv"
  follow = true
  header = true
  delimiter = ";"
  quote = "'"
  max_line_bytes = 4096

  [[pipeline.source]]
  path = "/abs/events.ndjson"

  [[pipeline.source]]
  path = "-"
  format = "csv"
  header = false
  columns = ["tx_id", "ts", "merchant", "amt", "currency", "price", "qty", "fee"]

  [pipeline.fields]
  event_id = "tx_id"
  time = "ts"
  time_format = "epoch_ms"
  key = ["merchant", "currency"]
  measures = ["amount", "price", "qty", "fee"]
  attributes = ["country", "status"]

  [pipeline.preprocess]
  required = ["merchant", "amount"]
  types = { amount = "float", qty = "int", status = "string", country = "string" }
  filters = [ { field = "amount", min = 0.0, max = 1e6 }, { field = "currency", eq = "EUR" },
              { field = "country", in = ["DE", "FR"] }, { field = "status", ne = "void" } ]
  rename = { amt = "amount" }
  derive = [ { name = "total", expr = "price * qty + fee" } ]
  dedupe = true
  dedupe_horizon = "30m"

  [pipeline.window]
  kind = "sliding"
  size = "1h"
  slide = "15m"
  offset = "5m"
  out_of_orderness = "5s"
  allowed_lateness = 2000
  late = "update"
  update_horizon = "2d"

  [[pipeline.aggregate]]
  fn = "sum"
  field = "amount"
  name = "total"

  [[pipeline.aggregate]]
  fn = "count"

  [[pipeline.aggregate]]
  fn = "quantile"
  field = "total"
  q = 0.99

  [[pipeline.aggregate]]
  fn = "distinct"
  field = "country"

[[pipeline]]
name = "sessions"
  [[pipeline.source]]
  path = "clicks.jsonl"
  [pipeline.fields]
  time = "t"
  key = "user"
  [pipeline.window]
  kind = "session"
  gap = "30m"
  [[pipeline.aggregate]]
  fn = "count"
  field = "user"
)";

/// A small valid pipeline; tests replace one part of it.
std::string base(const std::string& fields_extra = "", const std::string& window =
                                                         "kind = \"tumbling\"\nsize = \"1h\"\n",
                 const std::string& agg = "fn = \"sum\"\nfield = \"amount\"\n",
                 const std::string& source_extra = "", const std::string& pre = "") {
  return "[[pipeline]]\n"                       // 1
         "name = \"p\"\n"                       // 2
         "[[pipeline.source]]\n"                // 3
         "path = \"x.csv\"\n"                   // 4
         + source_extra                         //
         + "[pipeline.fields]\n"                // 5 (+ source_extra lines)
           "time = \"ts\"\n"
           "key = \"k\"\n"
           "measures = [\"amount\"]\n"
         + fields_extra + "[pipeline.window]\n" + window + "[[pipeline.aggregate]]\n" + agg
         + pre;
}

/// Parses `text` as "f.toml" and returns the error text ("" when it parses).
std::string error_of(const std::string& text) {
  auto r = parse_config(text, "f.toml");
  if (r)
    return "";
  CHECK(r.error().code() == static_cast<uint8_t>(errc::bad_config));
  return render(r.error());
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

#define CHECK_ERROR(text, prefix, part)                                                        \
  do {                                                                                         \
    auto err_ = error_of(text);                                                                \
    INFO(err_);                                                                                \
    CHECK(starts_with(err_, prefix));                                                          \
    CHECK(err_.find(part) != std::string::npos);                                               \
  } while (false)

} // namespace

TEST_CASE("a full config fills every field") {
  auto r = parse_config(full_config, "conf/weir.toml");
  if (!r)
    FAIL(render(r.error()));
  const auto& c = *r;
  CHECK(c.file == "conf/weir.toml");
  CHECK(c.runtime.store == "conf/data/store");
  CHECK(c.runtime.commit_interval == 250000);
  CHECK(c.runtime.commit_events == 5000);
  CHECK(c.runtime.batch_bytes == 65536);
  CHECK(c.runtime.max_inflight_batches == 8);
  CHECK(c.runtime.lake_retention == 7200LL * us_per_s);
  CHECK(c.runtime.durable == false);
  REQUIRE(c.pipelines.size() == 2);
  const auto& p = c.pipelines[0];
  CHECK(p.name == "merchant_hourly");
  CHECK(p.partitions == 3);
  REQUIRE(p.sources.size() == 3);
  CHECK(p.sources[0].name == "transactions");
  CHECK(p.sources[0].path == "conf/in/transactions.csv");
  CHECK(p.sources[0].format == source_format::csv);
  CHECK(p.sources[0].follow);
  CHECK(p.sources[0].header);
  CHECK(p.sources[0].delimiter == ';');
  CHECK(p.sources[0].quote == '\'');
  CHECK(p.sources[0].max_line_bytes == 4096);
  CHECK(p.sources[1].name == "source1");
  CHECK(p.sources[1].path == "/abs/events.ndjson");
  CHECK(p.sources[1].format == source_format::ndjson);
  CHECK(p.sources[1].max_line_bytes == 1u << 20);
  CHECK(p.sources[2].path == "-");
  CHECK(p.sources[2].format == source_format::csv);
  CHECK_FALSE(p.sources[2].header);
  CHECK(p.sources[2].columns.size() == 8);
  CHECK(p.sources[2].columns[3] == "amt");
  CHECK(p.fields.event_id == "tx_id");
  CHECK(p.fields.time == "ts");
  CHECK(p.fields.time_fmt == time_format::epoch_ms);
  CHECK(p.fields.key == std::vector<std::string>{"merchant", "currency"});
  CHECK(p.fields.measures == std::vector<std::string>{"amount", "price", "qty", "fee"});
  CHECK(p.fields.attributes == std::vector<std::string>{"country", "status"});
  const auto& pp = p.preprocess;
  CHECK(pp.required == std::vector<std::string>{"merchant", "amount"});
  REQUIRE(pp.types.size() == 4);
  CHECK(pp.types[0] == std::make_pair(std::string{"amount"}, value_type::float64));
  // toml++ keeps table keys sorted
  CHECK(pp.types[1] == std::make_pair(std::string{"country"}, value_type::string));
  CHECK(pp.types[2] == std::make_pair(std::string{"qty"}, value_type::int64));
  REQUIRE(pp.filters.size() == 4);
  CHECK(pp.filters[0].field == "amount");
  CHECK(*pp.filters[0].min == 0.0);
  CHECK(*pp.filters[0].max == 1e6);
  CHECK_FALSE(pp.filters[0].eq);
  CHECK(*pp.filters[1].eq == "EUR");
  CHECK(pp.filters[2].in == std::vector<std::string>{"DE", "FR"});
  CHECK(*pp.filters[3].ne == "void");
  REQUIRE(pp.rename.size() == 1);
  CHECK(pp.rename[0] == std::make_pair(std::string{"amt"}, std::string{"amount"}));
  REQUIRE(pp.derive.size() == 1);
  CHECK(pp.derive[0].name == "total");
  CHECK(pp.derive[0].expr == "price * qty + fee");
  CHECK(pp.dedupe);
  CHECK(pp.dedupe_horizon == 1800LL * us_per_s);
  const auto& w = p.window;
  CHECK(w.kind == window_kind::sliding);
  CHECK(w.size == 3600LL * us_per_s);
  CHECK(w.slide == 900LL * us_per_s);
  CHECK(w.offset == 300LL * us_per_s);
  CHECK(w.out_of_orderness == 5 * us_per_s);
  CHECK(w.allowed_lateness == 2 * us_per_s);
  CHECK(w.late == late_policy::update);
  CHECK(w.update_horizon == 2 * 86400LL * us_per_s);
  REQUIRE(p.aggregates.size() == 4);
  CHECK(p.aggregates[0].fn == agg_fn::sum);
  CHECK(p.aggregates[0].name == "total");
  CHECK(p.aggregates[1].fn == agg_fn::count);
  CHECK(p.aggregates[1].field.empty());
  CHECK(p.aggregates[1].name == "count");
  CHECK(p.aggregates[2].fn == agg_fn::quantile);
  CHECK(p.aggregates[2].q == 0.99);
  CHECK(p.aggregates[2].name == "quantile_total");
  CHECK(p.aggregates[3].name == "distinct_country");
  const auto& s = c.pipelines[1];
  CHECK(s.sources[0].format == source_format::ndjson);
  CHECK(s.sources[0].name == "source0");
  CHECK(s.fields.key == std::vector<std::string>{"user"});
  CHECK(s.fields.time_fmt == time_format::iso8601);
  CHECK(s.window.kind == window_kind::session);
  CHECK(s.window.gap == 1800LL * us_per_s);
  CHECK(s.window.late == late_policy::dead_letter);
  CHECK(s.partitions == 0);
  CHECK(s.aggregates[0].name == "count_user");
}

TEST_CASE("defaults") {
  auto r = parse_config(base(), "weir.toml");
  if (!r)
    FAIL(render(r.error()));
  CHECK(r->runtime.store == "store");
  CHECK(r->runtime.commit_interval == 100 * us_per_ms);
  CHECK(r->runtime.durable);
  const auto& p = r->pipelines[0];
  CHECK(p.sources[0].path == "x.csv");
  CHECK(p.sources[0].delimiter == ',');
  CHECK(p.sources[0].quote == '"');
  CHECK(p.window.slide == p.window.size);
  CHECK(p.window.update_horizon == 0);
  CHECK(p.aggregates[0].name == "sum_amount");
  CHECK_FALSE(p.preprocess.dedupe);
}

TEST_CASE("syntax errors name file and line") {
  CHECK_ERROR("store = \"a\"\n\nx = = 3\n", "f.toml:3: syntax: ", "");
  CHECK_ERROR("[[pipeline]]\nname = \"unterminated\n", "f.toml:2: syntax: ", "");
}

TEST_CASE("unknown keys list the allowed ones") {
  CHECK_ERROR("colour = 1\n" + base(), "f.toml:1: colour: unknown key; allowed: store, ",
              "pipeline");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\nsizee = 3\n"),
              "f.toml:12: pipeline[0].window.sizee: unknown key; allowed: kind, size,",
              "update_horizon");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"sum\"\nfeld = \"x\"\n"),
              "f.toml:14: pipeline[0].aggregate[0].feld: unknown key", "fn, field, name, q");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\nfilters = [ { field = \"k\", eqq = \"a\" } ]\n"),
              "f.toml:15: pipeline[0].preprocess.filters[0].eqq: unknown key", "min, max");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "pth = 1\n"),
              "f.toml:5: pipeline[0].source[0].pth: unknown key", "path");
}

TEST_CASE("wrong types") {
  CHECK_ERROR("durable = 1\n" + base(), "f.toml:1: durable: ", "true or false");
  CHECK_ERROR("commit_interval = \"fast\"\n" + base(), "f.toml:1: commit_interval: ",
              "duration");
  CHECK_ERROR("commit_interval = 1.5\n" + base(), "f.toml:1: commit_interval: ", "duration");
  CHECK_ERROR("batch_bytes = \"big\"\n" + base(), "f.toml:1: batch_bytes: ", "integer");
  CHECK_ERROR("commit_events = -1\n" + base(), "f.toml:1: commit_events: ", "between 0");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "follow = \"yes\"\n"),
              "f.toml:5: pipeline[0].source[0].follow: ", "true or false");
  CHECK_ERROR(base("attributes = \"a\"\n"), "f.toml:9: pipeline[0].fields.attributes: ",
              "array of strings");
  CHECK_ERROR(base("attributes = [\"a\", 3]\n"), "f.toml:9: pipeline[0].fields.attributes[1]: ",
              "expected a string");
  CHECK_ERROR("pipeline = 3\n", "f.toml:1: pipeline: ", "array of tables");
  CHECK_ERROR("[pipeline]\nname = \"p\"\n", "f.toml:1: pipeline: ", "array of tables");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\nfilters = [ { field = \"k\", min = \"a\" } ]\n"),
              "f.toml:15: pipeline[0].preprocess.filters[0].min: ", "expected a number");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\ntypes = { k = 3 }\n"),
              "f.toml:15: pipeline[0].preprocess.types.k: ", "string, int, float, time");
}

TEST_CASE("missing required keys") {
  CHECK_ERROR("store = \"s\"\n", "f.toml:1: pipeline: ", "at least one");
  CHECK_ERROR("[[pipeline]]\n[[pipeline.source]]\npath = \"a\"\n", "f.toml:1: pipeline[0].name: ",
              "missing required key");
  CHECK_ERROR("[[pipeline]]\nname = \"p\"\n", "f.toml:1: pipeline[0].source: ", "at least one");
  CHECK_ERROR("[[pipeline]]\nname = \"p\"\n[[pipeline.source]]\nformat = \"csv\"\n",
              "f.toml:3: pipeline[0].source[0].path: ", "missing required key");
  CHECK_ERROR("[[pipeline]]\nname = \"p\"\n[[pipeline.source]]\npath = \"a\"\n",
              "f.toml:1: pipeline[0].fields: ", "missing required key");
  std::string no_time = "[[pipeline]]\nname = \"p\"\n[[pipeline.source]]\npath = \"a\"\n"
                        "[pipeline.fields]\nkey = \"k\"\n";
  CHECK_ERROR(no_time, "f.toml:5: pipeline[0].fields.time: ", "missing required key");
  std::string no_window = "[[pipeline]]\nname = \"p\"\n[[pipeline.source]]\npath = \"a\"\n"
                          "[pipeline.fields]\nkey = \"k\"\ntime = \"t\"\n";
  CHECK_ERROR(no_window, "f.toml:1: pipeline[0].window: ", "missing required key");
  CHECK_ERROR(no_window + "[pipeline.window]\nsize = \"1h\"\n", "f.toml:1: pipeline[0].aggregate: ",
              "at least one");
  CHECK_ERROR(base("", "kind = \"tumbling\"\n"), "f.toml:9: pipeline[0].window.size: ",
              "missing required key for tumbling");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "field = \"amount\"\n"),
              "f.toml:12: pipeline[0].aggregate[0].fn: ", "missing required key");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"sum\"\n"),
              "f.toml:12: pipeline[0].aggregate[0].field: ", "missing required key for sum");
}

TEST_CASE("bad values") {
  CHECK_ERROR(base("time_format = \"unix\"\n"), "f.toml:9: pipeline[0].fields.time_format: ",
              "iso8601, epoch_s");
  CHECK_ERROR(base("", "kind = \"hopping\"\nsize = \"1h\"\n"),
              "f.toml:10: pipeline[0].window.kind: ", "tumbling, sliding, session");
  CHECK_ERROR(base("", "size = \"0s\"\n"), "f.toml:10: pipeline[0].window.size: ",
              "greater than zero");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"median\"\n"),
              "f.toml:13: pipeline[0].aggregate[0].fn: ",
              "\"median\" is not a registered aggregate");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n",
                   "fn = \"quantile\"\nfield = \"amount\"\nq = 1.5\n"),
              "f.toml:15: pipeline[0].aggregate[0].q: ", "between 0 and 1");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "delimiter = \";;\"\n"),
              "f.toml:5: pipeline[0].source[0].delimiter: ", "exactly one");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "delimiter = '\"'\n"),
              "f.toml:5: pipeline[0].source[0].quote: ", "differ");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "format = \"xml\"\n"),
              "f.toml:5: pipeline[0].source[0].format: ", "csv, ndjson");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "max_line_bytes = 0\n"),
              "f.toml:5: pipeline[0].source[0].max_line_bytes: ", "at least 1");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "name = \"a b\"\n"),
              "f.toml:5: pipeline[0].source[0].name: ", "[A-Za-z0-9_.-]+");
  CHECK_ERROR("[[pipeline]]\nname = \"a/b\"\n", "f.toml:2: pipeline[0].name: ", "[A-Za-z0-9_.-]+");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\nderive = [ { name = \"t\", expr = \"amount * \" } ]\n"),
              "f.toml:15: pipeline[0].preprocess.derive[0].expr: ", "end of expression");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\n"
                   "filters = [ { field = \"amount\", min = 5, max = 1 } ]\n"),
              "f.toml:15: pipeline[0].preprocess.filters[0].max: ", "below min");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\nfilters = [ { field = \"amount\" } ]\n"),
              "f.toml:15: pipeline[0].preprocess.filters[0]: ", "at least one of");
}

TEST_CASE("inconsistent settings") {
  // window settings of another kind
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\ngap = \"5m\"\n"),
              "f.toml:12: pipeline[0].window.gap: ", "not a setting of tumbling");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\nslide = \"5m\"\n"),
              "f.toml:12: pipeline[0].window.slide: ", "not a setting of tumbling");
  CHECK_ERROR(base("", "kind = \"session\"\ngap = \"1h\"\nsize = \"5m\"\n"),
              "f.toml:12: pipeline[0].window.size: ", "not a setting of session");
  CHECK_ERROR(base("", "kind = \"sliding\"\nsize = \"1h\"\nslide = \"2h\"\n"),
              "f.toml:12: pipeline[0].window.slide: ", "must not exceed size");
  CHECK_ERROR(base("", "kind = \"sliding\"\nsize = \"1h\"\n"),
              "f.toml:9: pipeline[0].window.slide: ", "missing required key for sliding");
  CHECK_ERROR(base("", "kind = \"session\"\n"), "f.toml:9: pipeline[0].window.gap: ",
              "missing required key for session");
  CHECK_ERROR(base("", "kind = \"session\"\ngap = \"1h\"\nlate = \"update\"\n"),
              "f.toml:12: pipeline[0].window.late: ", "not possible with session");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\nupdate_horizon = \"1h\"\n"),
              "f.toml:12: pipeline[0].window.update_horizon: ", "only with late");
  // sources
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "header = false\n"),
              "f.toml:5: pipeline[0].source[0].columns: ", "needs the column names");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "columns = [\"a\"]\n"),
              "f.toml:5: pipeline[0].source[0].columns: ", "only with header = false");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "header = false\ncolumns = [\"a\", \"a\"]\n"),
              "f.toml:6: pipeline[0].source[0].columns[1]: ", "duplicate column");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "format = \"ndjson\"\ndelimiter = \";\"\n"),
              "f.toml:6: pipeline[0].source[0].delimiter: ", "csv setting");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n",
                   "[[pipeline.source]]\npath = \"y.csv\"\nname = \"source0\"\n"),
              "f.toml:7: pipeline[0].source[1].name: ", "duplicate source name");
  // dedupe
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\ndedupe = true\n"),
              "f.toml:15: pipeline[0].preprocess.dedupe: ", "needs fields.event_id");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\ndedupe_horizon = \"1h\"\n"),
              "f.toml:15: pipeline[0].preprocess.dedupe_horizon: ", "only with dedupe");
  // duplicate names
  CHECK_ERROR(base() + "[[pipeline]]\nname = \"p\"\n", "f.toml:16: pipeline[1].name: ",
              "duplicate pipeline name");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n",
                   "fn = \"count\"\n[[pipeline.aggregate]]\nfn = \"count\"\n"),
              "f.toml:14: pipeline[0].aggregate[1].name: ", "duplicate aggregate name");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\nrename = { a = \"x\", b = \"x\" }\n"),
              "f.toml:15: pipeline[0].preprocess.rename.b: ", "two input fields");
}

TEST_CASE("field references must exist and have the right kind") {
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"sum\"\nfield = \"nope\"\n"),
              "f.toml:14: pipeline[0].aggregate[0].field: ", "unknown field \"nope\"");
  CHECK_ERROR(base("attributes = [\"country\"]\n", "kind = \"tumbling\"\nsize = \"1h\"\n",
                   "fn = \"avg\"\nfield = \"country\"\n"),
              "f.toml:15: pipeline[0].aggregate[0].field: ", "needs a numeric field");
  CHECK(error_of(base("attributes = [\"country\"]\n", "kind = \"tumbling\"\nsize = \"1h\"\n",
                      "fn = \"distinct\"\nfield = \"country\"\n"))
        == "");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\nrequired = [\"k\", \"zz\"]\n"),
              "f.toml:15: pipeline[0].preprocess.required[1]: ", "unknown field \"zz\"");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\nfilters = [ { field = \"zz\", eq = \"a\" } ]\n"),
              "f.toml:15: pipeline[0].preprocess.filters[0].field: ", "unknown field");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\ntypes = { zz = \"int\" }\n"),
              "f.toml:15: pipeline[0].preprocess.types.zz: ", "unknown field");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\n"
                   "derive = [ { name = \"t\", expr = \"amount * zz\" } ]\n"),
              "f.toml:15: pipeline[0].preprocess.derive[0].expr: ", "unknown field \"zz\"");
  CHECK_ERROR(base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "",
                   "[pipeline.preprocess]\nderive = [ { name = \"amount\", expr = \"1\" } ]\n"),
              "f.toml:15: pipeline[0].preprocess.derive[0].name: ", "already exists");
  // a derived field is numeric and can feed later derives and numeric aggregates
  CHECK(error_of(base("", "kind = \"tumbling\"\nsize = \"1h\"\n",
                      "fn = \"max\"\nfield = \"b\"\n", "",
                      "[pipeline.preprocess]\nderive = [ { name = \"a\", expr = \"amount * 2\" },"
                      " { name = \"b\", expr = \"a - (amount / 3)\" } ]\n"))
        == "");
}

TEST_CASE("files: missing file, relative paths") {
  auto r = load_config("no/such/dir/weir.toml");
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == static_cast<uint8_t>(errc::bad_input));
  CHECK(render(r.error()).find("no/such/dir/weir.toml") != std::string::npos);
  auto dir = std::filesystem::temp_directory_path() / "weir_core_config_test";
  std::filesystem::create_directories(dir);
  auto file = dir / "weir.toml";
  {
    std::ofstream out{file};
    out << base();
  }
  auto ok = load_config(file.string());
  if (!ok)
    FAIL(render(ok.error()));
  CHECK(ok->runtime.store == (dir / "store").string());
  CHECK(ok->pipelines[0].sources[0].path == (dir / "x.csv").string());
  {
    std::ofstream out{file};
    out << "store = 5\n";
  }
  auto bad = load_config(file.string());
  REQUIRE_FALSE(bad);
  CHECK(render(bad.error()) == file.string() + ":1: store: expected a string");
  std::filesystem::remove_all(dir);
}

TEST_CASE("redis sources and the results indexes") {
  // base() with its source's path replaced by `source` (lines 4.. of the file).
  auto with_source = [](const std::string& source, const std::string& pre = "") {
    auto text = base("", "kind = \"tumbling\"\nsize = \"1h\"\n", "fn = \"count\"\n", "", pre);
    return text.replace(text.find("path = \"x.csv\"\n"), 15, source);
  };
  auto ok = parse_config(with_source("redis = \"10.0.0.7\"\nstream = \"orders\"\n"), "f.toml");
  REQUIRE(ok);
  const auto& src = ok->pipelines[0].sources[0];
  CHECK(src.is_redis());
  CHECK(src.redis.host == "10.0.0.7");
  CHECK(src.redis.port == 6379);
  CHECK(src.redis.group == "weir");
  CHECK(src.redis.consumer == "weir");
  CHECK(src.redis.field == "data");
  CHECK(src.redis.start == "0");
  CHECK(src.follow);
  CHECK(src.format == source_format::ndjson);
  CHECK_FALSE(ok->pipelines[0].results.key_index);
  CHECK_FALSE(ok->pipelines[0].results.change_feed);
  auto full = parse_config(
    with_source("redis = \"127.0.0.1:7000\"\nstream = \"s\"\ngroup = \"g\"\nconsumer = \"c\"\n"
                "field = \"line\"\nstart = \"$\"\nformat = \"csv\"\nheader = false\n"
                "columns = [\"ts\", \"k\", \"amount\"]\n",
                "[pipeline.results]\nkey_index = true\nchange_feed = true\n"
                "change_retention = \"10m\"\n"),
    "f.toml");
  REQUIRE(full);
  CHECK(full->pipelines[0].sources[0].redis.port == 7000);
  CHECK(full->pipelines[0].sources[0].redis.start == "$");
  CHECK(full->pipelines[0].results.key_index);
  CHECK(full->pipelines[0].results.change_feed);
  CHECK(full->pipelines[0].results.change_retention == int64_t{600} * 1000000);

  // An IPv6 host is written in brackets, and given to the client without them.
  auto v6 = parse_config(with_source("redis = \"[::1]:7000\"\nstream = \"s\"\n"), "f.toml");
  REQUIRE(v6);
  CHECK(v6->pipelines[0].sources[0].redis.host == "::1");
  CHECK(v6->pipelines[0].sources[0].redis.port == 7000);
  auto v6_default =
    parse_config(with_source("redis = \"[fd00::7]\"\nstream = \"s\"\n"), "f.toml");
  REQUIRE(v6_default);
  CHECK(v6_default->pipelines[0].sources[0].redis.host == "fd00::7");
  CHECK(v6_default->pipelines[0].sources[0].redis.port == 6379);
  CHECK_ERROR(with_source("redis = \"::1\"\nstream = \"s\"\n"),
              "f.toml:4: pipeline[0].source[0].redis: ", "HOST:PORT");
  CHECK_ERROR(with_source("redis = \"h:99999\"\nstream = \"s\"\n"),
              "f.toml:4: pipeline[0].source[0].redis: ", "HOST:PORT");
  CHECK_ERROR(with_source("redis = \"h\"\n"), "f.toml:3: pipeline[0].source[0].stream: ",
              "missing");
  CHECK_ERROR(with_source("redis = \"h\"\nstream = \"s\"\nstart = \"later\"\n"),
              "f.toml:6: pipeline[0].source[0].start: ", "entry id");
  CHECK_ERROR(with_source("redis = \"h\"\nstream = \"s\"\npath = \"x.csv\"\n"),
              "f.toml:6: pipeline[0].source[0].path: ", "not from a path");
  CHECK_ERROR(with_source("redis = \"h\"\nstream = \"s\"\nformat = \"csv\"\n"),
              "f.toml:3: pipeline[0].source[0].columns: ", "needs the column names");
  CHECK_ERROR(with_source("path = \"x.csv\"\nstream = \"s\"\n"),
              "f.toml:5: pipeline[0].source[0].stream: ", "setting of a Redis source");
  CHECK_ERROR(with_source("redis = \"h\"\nstream = \"s\"\nhttp = true\n"),
              "f.toml:4: pipeline[0].source[0].redis: ", "either http or redis");
  CHECK_ERROR(with_source("path = \"x.csv\"\n", "[pipeline.results]\nchange_retention = \"1h\"\n"),
              "f.toml:", "only with change_feed = true");
  CHECK_ERROR(with_source("path = \"x.csv\"\n", "[pipeline.results]\nindex = true\n"),
              "f.toml:", "key_index");
}
