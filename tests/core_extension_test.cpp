// The extension registry, extension options and plugin loading (actors/core/extension.hpp).

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "actors/core/config.hpp"
#include "actors/core/error.hpp"
#include "actors/core/extension.hpp"

using namespace weir;

namespace {

extension_options opts(std::vector<std::pair<std::string, std::string>> v) {
  return extension_options{std::move(v)};
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

} // namespace

TEST_CASE("extension options: typed values, defaults, refusals naming the option") {
  auto o = opts({{"alpha", "0.25"}, {"n", "12"}, {"every", "5m"}, {"ms", "250"}, {"on", "true"},
                 {"unit", "celsius"}, {"bad", "x1"}});
  CHECK(o.number("alpha", 0) == 0.25);
  CHECK(o.number("n", 0) == 12);
  CHECK(o.number("missing", 7.5) == 7.5);
  CHECK(o.duration("every", 0) == 5 * 60 * us_per_s);
  CHECK(o.duration("ms", 0) == 250 * us_per_ms);
  CHECK(o.duration("missing", 3) == 3);
  CHECK(o.flag("on", false));
  CHECK(o.text("unit") == "celsius");
  CHECK(o.text("missing", "k") == "k");
  CHECK(o.has("bad"));
  CHECK_FALSE(o.has("nope"));
  CHECK(message_of([&] { o.number("bad", 0); }) ==
        "options.bad: expected a number, got \"x1\"");
  CHECK(message_of([&] { o.duration("unit", 0); }).rfind("options.unit: expected a duration", 0) ==
        0);
  CHECK(message_of([&] { o.flag("n", false); }) == "options.n: expected true or false, got \"12\"");
  CHECK(message_of([&] { o.allow_only({"alpha", "n", "every", "ms", "on", "unit"}); }) ==
        "options.bad: unknown option (allowed: alpha, n, every, ms, on, unit)");
  CHECK(message_of([&] { opts({{"x", "1"}}).allow_only({}); }) ==
        "options.x: unknown option (it takes none)");
}

TEST_CASE("extension options: the canonical text does not depend on their order") {
  auto a = opts({{"b", "2"}, {"a", "1"}}), b = opts({{"a", "1"}, {"b", "2"}});
  CHECK(a.canonical() == b.canonical());
  CHECK(a.canonical() != opts({{"a", "1"}, {"b", "3"}}).canonical());
  // A value holding the separators cannot pass for two options.
  CHECK(opts({{"a", "1;b=2"}}).canonical() != opts({{"a", "1"}, {"b", "2"}}).canonical());
}

TEST_CASE("extension registry: names, built-in aggregates, replacement") {
  auto& r = extension_registry::global();
  auto make = [](const extension_options&) -> std::shared_ptr<const aggregate_function> {
    return nullptr;
  };
  CHECK_THROWS_AS(r.add_aggregate("sum", make), std::invalid_argument);
  CHECK_THROWS_AS(r.add_aggregate("bad name", make), std::invalid_argument);
  CHECK_THROWS_AS(r.add_aggregate("x", nullptr), std::invalid_argument);
  r.add_aggregate("test_twice", make);
  const auto* first = r.aggregate("test_twice");
  REQUIRE(first != nullptr);
  r.add_aggregate("test_twice", make);
  CHECK(r.aggregate("test_twice") != nullptr);
  CHECK(r.aggregate("test_none") == nullptr);
  auto names = r.names("aggregate");
  CHECK(std::count(names.begin(), names.end(), "test_twice") == 1);
  CHECK(std::is_sorted(names.begin(), names.end()));
}

TEST_CASE("aggregate_of: a typed aggregate through the byte interface") {
  struct mean {
    struct state {
      double sum, n;
    };
    state init() const { return {0, 0}; }
    void add(state& s, double v, timestamp) const { s.sum += v, s.n += 1; }
    void merge(state& a, const state& b) const { a.sum += b.sum, a.n += b.n; }
    double result(const state& s) const { return s.n > 0 ? s.sum / s.n : NAN; }
  };
  aggregate_of<mean> f;
  REQUIRE(f.state_size() == sizeof(mean::state));
  alignas(16) unsigned char a[sizeof(mean::state)], b[sizeof(mean::state)];
  f.init(a);
  f.init(b);
  CHECK(std::isnan(f.result(a)));
  for (double v : {1.0, 2.0, 3.0})
    f.add(a, v, 0);
  f.add(b, 10, 0);
  f.merge(a, b);
  CHECK(f.result(a) == Approx(4.0));
  std::string bytes;
  f.serialize(a, bytes);
  alignas(16) unsigned char c[sizeof(mean::state)];
  REQUIRE(f.deserialize(bytes, c));
  CHECK(f.result(c) == f.result(a));
  CHECK_FALSE(f.deserialize(bytes.substr(1), c)); // a damaged state is refused
}

TEST_CASE("plugins: loaded once, their extensions registered; bad files are errors") {
  auto& r = extension_registry::global();
  REQUIRE_FALSE(load_plugin(WEIR_PROBE_PLUGIN));
  CHECK(r.aggregate("probe_sum") != nullptr);
  CHECK(r.stage_kind("probe_stage") != nullptr);
  CHECK(r.sink_kind("probe_sink") != nullptr);
  CHECK_FALSE(load_plugin(WEIR_PROBE_PLUGIN)); // again: nothing happens
  auto missing = load_plugin("/nonexistent/libnothing.so");
  REQUIRE(missing);
  CHECK(missing.code() == static_cast<uint8_t>(errc::bad_input));
  CHECK(render(missing).find("/nonexistent/libnothing.so") != std::string::npos);
  auto no_entry = load_plugin(WEIR_NO_ENTRY_PLUGIN);
  REQUIRE(no_entry);
  CHECK(render(no_entry).find("defines no WEIR_PLUGIN") != std::string::npos);
}

TEST_CASE("config: plugins are loaded first; a missing one fails naming line and key") {
  std::string pipeline = R"(
[[pipeline]]
name = "p"
  [[pipeline.source]]
  name = "s"
  path = "in.csv"
  [pipeline.fields]
  time = "ts"
  key = ["k"]
  measures = ["v"]
  [pipeline.window]
  kind = "tumbling"
  size = "1m"
  [[pipeline.aggregate]]
  fn = "sum"
  field = "v"
)";
  auto ok = parse_config("plugins = [\"" + std::string{WEIR_PROBE_PLUGIN} + "\"]\n" + pipeline,
                         "/tmp/x/pipeline.toml");
  REQUIRE(ok);
  REQUIRE(ok->plugins.size() == 1);
  CHECK(ok->plugins[0] == WEIR_PROBE_PLUGIN);
  auto bad = parse_config("store = \"s\"\nplugins = [\"libmissing.so\"]\n" + pipeline,
                          "/tmp/x/pipeline.toml");
  REQUIRE_FALSE(bad);
  auto text = render(bad.error());
  INFO(text);
  CHECK(text.rfind("/tmp/x/pipeline.toml:2: plugins[0]: cannot load plugin /tmp/x/libmissing.so",
                   0) == 0);
  // A config named relative to the working directory: the plugin is looked for next to it, not
  // in the library path.
  auto here = parse_config("plugins = [\"libmissing.so\"]\n" + pipeline, "pipeline.toml");
  REQUIRE_FALSE(here);
  CHECK(render(here.error()).find("cannot load plugin " +
                                  (std::filesystem::current_path() / "libmissing.so").string()) !=
        std::string::npos);
}
