// Stages in the preprocessor: each partition's accepted records go through the configured
// stages, in order, before they leave for the window aggregators. Expectations come from a
// brute-force reference over the generated lines, written here without the preprocessor.

#include <catch2/catch.hpp>

#include <array>
#include <charconv>
#include <cmath>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <xxhash.h>

#include "actors/core/config.hpp"
#include "actors/core/definition.hpp"
#include "actors/core/error.hpp"
#include "actors/core/extension.hpp"
#include "actors/core/preprocessor.hpp"

using namespace weir;

namespace {

constexpr size_t nparts = 4;
constexpr int64_t base_s = 1700000000;

/// field := field * factor
struct scale_stage : stage {
  int col;
  double factor;
  void process(stage_batch& b) override {
    for (size_t r = 0; r < b.size(); ++r)
      b.set_value(r, col, b.value(r, col) * factor);
  }
};

/// Drops records whose field is above a threshold.
struct drop_stage : stage {
  int col;
  double threshold;
  void process(stage_batch& b) override {
    for (size_t r = 0; r < b.size(); ++r)
      if (b.value(r, col) > threshold)
        b.drop(r);
  }
};

/// into := a * b
struct enrich_stage : stage {
  int a, b, into;
  void process(stage_batch& batch) override {
    for (size_t r = 0; r < batch.size(); ++r)
      batch.set_value(r, into, batch.value(r, a) * batch.value(r, b));
  }
};

/// Throws on a record whose field has this value.
struct throw_stage : stage {
  int col;
  double value;
  void process(stage_batch& b) override {
    for (size_t r = 0; r < b.size(); ++r)
      if (b.value(r, col) == value)
        throw std::runtime_error("refused it");
  }
};

/// Drops every record.
struct drop_all_stage : stage {
  void process(stage_batch& b) override {
    for (size_t r = 0; r < b.size(); ++r)
      b.drop(r);
  }
};

int must(const stage_context& c, const char* name) {
  int col = c.column(name);
  REQUIRE(col >= 0);
  return col;
}

/// csv ts (epoch s), k, v, w, a; measures v and w, attribute a, derived d = v * 10; aggregates
/// count, sum(v), sum(d), sum(out), count(out), min(w), distinct(a), distinct(v).
pipeline_config make_config() {
  pipeline_config p;
  p.name = "staged";
  source_config s;
  s.name = "csv";
  s.path = "x.csv";
  p.sources.push_back(s);
  p.fields.time = "ts";
  p.fields.time_fmt = time_format::epoch_s;
  p.fields.key = {"k"};
  p.fields.measures = {"v", "w"};
  p.fields.attributes = {"a"};
  p.preprocess.derive = {{"d", "v * 10"}};
  p.window.kind = window_kind::tumbling;
  p.window.size = 3600 * us_per_s;
  p.window.slide = p.window.size;
  p.window.out_of_orderness = 3600 * us_per_s;
  auto agg = [&p](agg_fn fn, std::string field) {
    aggregate_config a;
    a.fn = fn;
    a.field = std::move(field);
    p.aggregates.push_back(a);
  };
  agg(agg_fn::count, "");
  agg(agg_fn::sum, "v");
  agg(agg_fn::sum, "d");
  agg(agg_fn::sum, "out");
  agg(agg_fn::count, "out");
  agg(agg_fn::min, "w");
  agg(agg_fn::distinct, "a");
  agg(agg_fn::distinct, "v");
  return p;
}

/// The stages of the reference: v *= 2, drop w > 6, out = v * w.
void add_stages(pipeline_config& p, std::vector<stage_context>* seen = nullptr) {
  stage_config s1;
  s1.kind = "scale";
  s1.make = [seen](const stage_context& c) -> std::unique_ptr<stage> {
    if (seen)
      seen->push_back(c);
    auto s = std::make_unique<scale_stage>();
    s->col = must(c, "v");
    s->factor = 2;
    return s;
  };
  stage_config s2;
  s2.kind = "drop_above";
  s2.make = [seen](const stage_context& c) -> std::unique_ptr<stage> {
    if (seen)
      seen->push_back(c);
    auto s = std::make_unique<drop_stage>();
    s->col = must(c, "w");
    s->threshold = 6;
    return s;
  };
  stage_config s3;
  s3.kind = "enrich";
  s3.outputs = {"out"};
  s3.make = [seen](const stage_context& c) -> std::unique_ptr<stage> {
    if (seen)
      seen->push_back(c);
    auto s = std::make_unique<enrich_stage>();
    s->a = must(c, "v");
    s->b = must(c, "w");
    s->into = must(c, "out");
    return s;
  };
  p.stages = {s1, s2, s3};
}

struct line {
  int64_t ts;
  std::string k;
  std::string v; ///< as written
  std::string w; ///< may be empty
  std::string a;
};

std::vector<line> make_lines(size_t n) {
  std::vector<line> out;
  for (size_t i = 0; i < n; ++i) {
    line l;
    l.ts = base_s + static_cast<int64_t>(i);
    l.k = "k" + std::to_string(i * 7 % 5);
    l.v = std::to_string(i % 9) + (i % 4 == 0 ? ".50" : "");
    l.w = i % 13 == 0 ? "" : std::to_string(i * 3 % 11);
    l.a = "x" + std::to_string(i % 3);
    out.push_back(l);
  }
  return out;
}

std::string csv_of(const std::vector<line>& lines) {
  std::string text = "ts,k,v,w,a\n";
  for (const auto& l : lines)
    text += std::to_string(l.ts) + "," + l.k + "," + l.v + "," + l.w + "," + l.a + "\n";
  return text;
}

uint64_t text_hash(const std::string& s) {
  return XXH3_64bits(s.data(), s.size());
}

/// The text distinct hashes for a number after the stages: shortest round trip, fixed.
std::string number_text(double v) {
  std::array<char, 64> buf;
  auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::fixed);
  return std::string(buf.data(), r.ptr);
}

/// One emitted record: key, time, the 6 values and 2 hashes in aggregate column order.
struct row {
  std::string key;
  int64_t time;
  std::vector<double> values;
  std::vector<uint64_t> hashes;
};

bool same(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

/// The reference: per partition, the records after the stages, in input order.
std::map<size_t, std::vector<row>> reference(const std::vector<line>& lines, uint64_t& dropped,
                                             double max_out = INFINITY) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::map<size_t, std::vector<row>> out;
  dropped = 0;
  for (const auto& l : lines) {
    double v = std::stod(l.v);
    double w = l.w.empty() ? nan : std::stod(l.w);
    double d = v * 10; // derived before the stages
    v *= 2;
    if (w > 6) {
      ++dropped;
      continue;
    }
    double o = v * w;
    if (max_out != INFINITY && !(o <= max_out)) { // a filter on the output: NaN fails it
      ++dropped;
      continue;
    }
    row r{l.k,
          l.ts * us_per_s,
          {v, d, o, std::isnan(o) ? nan : 1.0, w},
          {text_hash(l.a), text_hash(number_text(v))}};
    out[text_hash(l.k) % nparts].push_back(r);
  }
  return out;
}

std::map<size_t, std::vector<row>> emitted(preprocessor& pre) {
  std::map<size_t, std::vector<row>> out;
  for (size_t p = 0; p < pre.partitions(); ++p) {
    const auto& c = pre.partition(p);
    REQUIRE(c.values.size() == c.size() * 5);
    REQUIRE(c.hashes.size() == c.size() * 2);
    REQUIRE(c.key_end.size() == c.size());
    REQUIRE(c.key_bytes.size() == (c.size() == 0 ? 0 : c.key_end.back()));
    for (size_t r = 0; r < c.size(); ++r) {
      uint32_t b = r == 0 ? 0 : c.key_end[r - 1];
      row x{c.key_bytes.substr(b, c.key_end[r] - b), c.time[r],
            std::vector<double>(c.values.begin() + static_cast<long>(r * 5),
                                c.values.begin() + static_cast<long>(r * 5 + 5)),
            std::vector<uint64_t>(c.hashes.begin() + static_cast<long>(r * 2),
                                  c.hashes.begin() + static_cast<long>(r * 2 + 2))};
      CHECK(c.key_hash[r] == text_hash(x.key));
      out[p].push_back(std::move(x));
    }
  }
  return out;
}

void check_rows(const std::map<size_t, std::vector<row>>& got,
                const std::map<size_t, std::vector<row>>& want) {
  for (size_t p = 0; p < nparts; ++p) {
    auto g = got.count(p) ? got.at(p) : std::vector<row>{};
    auto w = want.count(p) ? want.at(p) : std::vector<row>{};
    REQUIRE(g.size() == w.size());
    for (size_t i = 0; i < g.size(); ++i) {
      INFO("partition " << p << " row " << i << " key " << w[i].key);
      CHECK(g[i].key == w[i].key);
      CHECK(g[i].time == w[i].time);
      for (size_t k = 0; k < 5; ++k) {
        INFO("value " << k << ": " << g[i].values[k] << " vs " << w[i].values[k]);
        CHECK(same(g[i].values[k], w[i].values[k]));
      }
      CHECK(g[i].hashes == w[i].hashes);
    }
  }
}

/// Feeds `text` in chunks of about `chunk` bytes (whole lines).
void feed(preprocessor& pre, const std::string& text, size_t chunk) {
  size_t b = 0;
  while (b < text.size()) {
    size_t e = std::min(text.size(), b + chunk);
    e = text.find('\n', e == 0 ? 0 : e - 1);
    e = e == std::string::npos ? text.size() : e + 1;
    pre.process(0, b, std::string_view{text}.substr(b, e - b));
    b = e;
  }
}

} // namespace

TEST_CASE("stages: values rewritten, records dropped and outputs filled before the aggregates",
          "[stage]") {
  auto cfg = make_config();
  add_stages(cfg);
  auto lines = make_lines(2000);
  auto text = csv_of(lines);
  uint64_t dropped = 0;
  auto want = reference(lines, dropped);
  REQUIRE(dropped > 100);
  for (size_t chunk : {size_t{1}, size_t{700}, text.size()}) {
    INFO("chunks of " << chunk << " bytes");
    preprocessor pre{cfg, nparts};
    feed(pre, text, chunk);
    check_rows(emitted(pre), want);
    const auto& k = pre.counters();
    CHECK(k.read == lines.size());
    CHECK(k.filtered == dropped);
    CHECK(k.accepted == lines.size() - dropped);
    CHECK(k.late_updates == 0);
  }
}

TEST_CASE("stages: a filter on a stage's output applies after the stages", "[stage]") {
  auto cfg = make_config();
  add_stages(cfg);
  filter_config f;
  f.field = "out";
  f.max = 20;
  cfg.preprocess.filters.push_back(f);
  auto lines = make_lines(1500);
  uint64_t dropped = 0;
  auto want = reference(lines, dropped, 20);
  uint64_t by_stage = 0;
  reference(lines, by_stage);
  REQUIRE(dropped > by_stage + 100);
  preprocessor pre{cfg, nparts};
  feed(pre, csv_of(lines), 900);
  check_rows(emitted(pre), want);
  CHECK(pre.counters().filtered == dropped);
  CHECK(pre.counters().accepted == lines.size() - dropped);
}

TEST_CASE("stages: batches since clear_outputs are processed once", "[stage]") {
  auto cfg = make_config();
  add_stages(cfg);
  auto lines = make_lines(600);
  auto text = csv_of(lines);
  uint64_t dropped = 0;
  auto want = reference(lines, dropped);
  preprocessor pre{cfg, nparts};
  // The first half, shipped (cleared); the second half after it: each record scaled once.
  auto half = text.find('\n', text.size() / 2) + 1;
  pre.process(0, 0, std::string_view{text}.substr(0, half));
  auto first = emitted(pre);
  pre.clear_outputs();
  pre.process(0, half, std::string_view{text}.substr(half));
  auto second = emitted(pre);
  for (auto& [p, rows] : second)
    first[p].insert(first[p].end(), rows.begin(), rows.end());
  check_rows(first, want);
  CHECK(pre.counters().filtered == dropped);
}

TEST_CASE("stages: each stage is made per partition with the fields up to its own outputs",
          "[stage]") {
  auto cfg = make_config();
  std::vector<stage_context> seen;
  add_stages(cfg, &seen);
  preprocessor pre{cfg, nparts};
  REQUIRE(seen.size() == 3 * nparts);
  const std::vector<std::string> inputs{"v", "w", "d"};
  const std::vector<std::string> all{"v", "w", "d", "out"};
  for (size_t i = 0; i < seen.size(); ++i) {
    CHECK(seen[i].pipeline == "staged");
    // Each stage is made for every partition, in config order; the last has its output.
    CHECK(seen[i].fields == (i / nparts == 2 ? all : inputs));
  }
}

TEST_CASE("stages: a stage that throws fails the processing, naming the stage", "[stage]") {
  auto cfg = make_config();
  stage_config s;
  s.kind = "picky";
  s.make = [](const stage_context& c) -> std::unique_ptr<stage> {
    auto x = std::make_unique<throw_stage>();
    x->col = must(c, "w");
    x->value = 5;
    return x;
  };
  cfg.stages = {s};
  preprocessor pre{cfg, nparts};
  pre.process(0, 0, "ts,k,v,w,a\n1700000000,k1,1,4,x\n");
  CHECK(pre.counters().accepted == 1);
  try {
    pre.process(0, 100, "1700000001,k1,1,5,x\n");
    FAIL("no exception");
  } catch (const std::runtime_error& e) {
    CHECK(std::string{e.what()} == "stage picky: refused it");
  }
}

TEST_CASE("stages: a factory that throws fails the preprocessor, naming the stage", "[stage]") {
  auto cfg = make_config();
  stage_config s;
  s.kind = "grumpy";
  s.make = [](const stage_context&) -> std::unique_ptr<stage> {
    throw extension_error("options.x: not today");
  };
  cfg.stages = {s};
  try {
    preprocessor pre{cfg, nparts};
    FAIL("no exception");
  } catch (const std::runtime_error& e) {
    CHECK(std::string{e.what()} == "stage grumpy: options.x: not today");
  }
}

TEST_CASE("stages: a batch with every record dropped leaves empty columns, late updates that "
          "are dropped stop counting as updates",
          "[stage]") {
  auto cfg = make_config();
  cfg.window.out_of_orderness = 0;
  cfg.window.late = late_policy::update;
  cfg.window.update_horizon = 24 * 3600 * us_per_s;
  stage_config s;
  s.kind = "none";
  s.make = [](const stage_context&) -> std::unique_ptr<stage> {
    return std::make_unique<drop_all_stage>();
  };
  cfg.stages = {s};
  preprocessor pre{cfg, nparts};
  // The second line moves the watermark past the first's window; the third updates it.
  pre.process(0, 0,
              "ts,k,v,w,a\n1700000000,k1,1,4,x\n1700010000,k2,1,4,x\n"
              "1700000001,k3,1,4,x\n");
  for (size_t p = 0; p < nparts; ++p) {
    const auto& c = pre.partition(p);
    CHECK(c.size() == 0);
    CHECK(c.key_bytes.empty());
    CHECK(c.values.empty());
    CHECK(c.hashes.empty());
  }
  const auto& k = pre.counters();
  CHECK(k.read == 3);
  CHECK(k.accepted == 0);
  CHECK(k.filtered == 3);
  CHECK(k.late_updates == 0);
}

TEST_CASE("stages: a stage's misuse of its batch is an error of the stage", "[stage]") {
  struct bad : stage {
    void process(stage_batch& b) override { b.set_value(0, 7, 1.0); }
  };
  auto cfg = make_config();
  stage_config s;
  s.kind = "clumsy";
  s.make = [](const stage_context&) -> std::unique_ptr<stage> { return std::make_unique<bad>(); };
  cfg.stages = {s};
  preprocessor pre{cfg, 1};
  CHECK_THROWS_WITH(pre.process(0, 0, "ts,k,v,w,a\n1700000000,k1,1,4,x\n"),
                    Catch::Contains("stage clumsy: field column 7 of 3"));
}

// -- the config ----------------------------------------------------------------------------

namespace {

/// A config with one pipeline over ts,k,v and the stage tables `stages`; sum(out) when `out`.
std::string config_text(const std::string& stages, bool out = true) {
  return "[[pipeline]]\nname = \"p\"\n"
         "[[pipeline.source]]\nname = \"in\"\npath = \"in.csv\"\n"
         "[pipeline.fields]\ntime = \"ts\"\nkey = \"k\"\nmeasures = [\"v\"]\n"
         "[pipeline.window]\nsize = \"10s\"\n" +
         stages + "[[pipeline.aggregate]]\nfn = \"sum\"\nfield = \"v\"\n" +
         (out ? "[[pipeline.aggregate]]\nfn = \"sum\"\nfield = \"out\"\n" : "");
}

/// Registers "t_copy" (out := v * options.factor) once; records what its factory saw.
std::vector<stage_context>& register_test_stage() {
  static std::vector<stage_context> seen;
  static bool done = false;
  if (!done) {
    done = true;
    register_stage("t_copy", [](const extension_options& o, const stage_context& c) {
      seen.push_back(c);
      o.allow_only({"factor"});
      auto s = std::make_unique<enrich_stage>();
      s->a = c.column("v");
      s->b = c.column("v");
      s->into = c.column("out");
      if (s->into < 0)
        throw extension_error("needs an output named out");
      o.number("factor", 1);
      return s;
    });
  }
  return seen;
}

const std::string copy_stage =
  "[[pipeline.stage]]\nkind = \"t_copy\"\noptions = { factor = 2 }\noutputs = [\"out\"]\n";

} // namespace

TEST_CASE("stage config: kind, options and outputs are read, the factory checks them",
          "[stage][config]") {
  auto& seen = register_test_stage();
  seen.clear();
  auto cfg = parse_config(config_text(copy_stage), "/x/p.toml");
  REQUIRE(cfg);
  const auto& p = cfg->pipelines.at(0);
  REQUIRE(p.stages.size() == 1);
  CHECK(p.stages[0].kind == "t_copy");
  CHECK(p.stages[0].outputs == std::vector<std::string>{"out"});
  CHECK(p.stages[0].options == std::vector<std::pair<std::string, std::string>>{{"factor", "2"}});
  REQUIRE(seen.size() == 1); // at config load
  CHECK(seen[0].pipeline == "p");
  CHECK(seen[0].fields == std::vector<std::string>{"v", "out"});
  REQUIRE(p.stages[0].make);
  const stage_context ctx = seen[0]; // a copy: the factory appends to `seen`
  CHECK(p.stages[0].make(ctx) != nullptr);
}

TEST_CASE("stage config: errors name the line and the key", "[stage][config]") {
  register_test_stage();
  auto error_of = [](const std::string& text) {
    auto cfg = parse_config(text, "/x/p.toml");
    REQUIRE(!cfg);
    CHECK(cfg.error().code() == static_cast<uint8_t>(errc::bad_config));
    return render(cfg.error());
  };
  // Lines: the stage table starts on line 12.
  CHECK_THAT(error_of(config_text("[[pipeline.stage]]\nkind = \"nope\"\n", false)),
             Catch::Contains("/x/p.toml:13: pipeline[0].stage[0].kind: \"nope\" is not a "
                             "registered stage (registered: ") &&
               Catch::Contains("t_copy"));
  CHECK_THAT(error_of(config_text(
               "[[pipeline.stage]]\nkind = \"t_copy\"\noptions = { factor = 2 }\noutputs = "
               "[\"v\"]\n")),
             Catch::Contains("/x/p.toml:15: pipeline[0].stage[0].outputs[0]: field \"v\" already "
                             "exists"));
  CHECK_THAT(error_of(config_text("[[pipeline.stage]]\nkind = \"t_copy\"\noptions = { factor = "
                                  "\"x\" }\noutputs = [\"out\"]\n")),
             Catch::Contains("/x/p.toml:14: pipeline[0].stage[0].options.factor: expected a "
                             "number, got \"x\""));
  CHECK_THAT(error_of(config_text("[[pipeline.stage]]\nkind = \"t_copy\"\noptions = { f = 1 "
                                  "}\noutputs = [\"out\"]\n")),
             Catch::Contains("/x/p.toml:14: pipeline[0].stage[0].options.f: unknown option"));
  CHECK_THAT(error_of(config_text("[[pipeline.stage]]\nkind = \"t_copy\"\n")),
             Catch::Contains("pipeline[0].stage[0]: needs an output named out"));
  // Two stages may not fill one field.
  CHECK_THAT(error_of(config_text(copy_stage + copy_stage)),
             Catch::Contains("pipeline[0].stage[1].outputs[0]: field \"out\" already exists"));
  // Without the stage, out is no field.
  CHECK_THAT(error_of(config_text("")), Catch::Contains("unknown field \"out\""));
  // A filter on a stage's output: min and max only.
  auto filtered = [](const std::string& filter) {
    auto text = config_text(copy_stage);
    text.insert(text.find("[pipeline.window]"),
                "[pipeline.preprocess]\nfilters = [" + filter + "]\n");
    return text;
  };
  CHECK(parse_config(filtered("{ field = \"out\", min = 1 }"), "/x/p.toml"));
  CHECK_THAT(error_of(filtered("{ field = \"out\", eq = \"1\" }")),
             Catch::Contains("pipeline[0].preprocess.filters[0]: a stage's output is a number"));
}

TEST_CASE("stage config: the stages are part of the definition, a change is accepted",
          "[stage][config]") {
  register_test_stage();
  auto with = parse_config(config_text(copy_stage), "/x/p.toml");
  auto other =
    parse_config(config_text("[[pipeline.stage]]\nkind = \"t_copy\"\noptions = { factor = 3 }\n"
                             "outputs = [\"out\"]\n"),
                 "/x/p.toml");
  auto without = parse_config(config_text("", false), "/x/p.toml");
  REQUIRE((with && other && without));
  auto stored = encode_definition(with->pipelines[0]);
  CHECK_THAT(stored, Catch::Contains("\nstages = t_copy {factor=1:2;} -> out\n"));
  auto changes = compare_definition(stored, other->pipelines[0]);
  REQUIRE(changes.size() == 1);
  CHECK(changes[0].setting == "stages");
  CHECK(changes[0].configured == "t_copy {factor=1:3;} -> out");
  CHECK(changes[0].compatible);
  // Dropping the stages (and the aggregate over out) is refused for the aggregates only.
  for (const auto& c : compare_definition(stored, without->pipelines[0]))
    CHECK(c.compatible == (c.setting == "stages"));
  CHECK(
    compare_definition(encode_definition(without->pipelines[0]), without->pipelines[0]).empty());
}
