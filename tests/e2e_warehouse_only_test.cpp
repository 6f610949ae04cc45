// The read commands on a store that holds the warehouse alone, as the coordinating node of a
// cluster whose ingest runs on another node does (docs/cluster.md): `weir dead-letters`,
// `inspect`, `check` and `query` work from the warehouse and the lake sources it recorded, and
// none of them creates a lake.

#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "store/lake.hpp"
#include "store/warehouse.hpp"
#include "tests/test_support.hpp"

namespace fs = std::filesystem;

namespace {

using weir::test::temp_dir;
using weir::test::write_file;

const std::string weir_bin = WEIR_BINARY;

weir::test::command_result weir_cmd(const std::string& args) {
  return weir::test::sh("timeout 120 " + weir_bin + " " + args);
}

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}

/// A pipeline of two csv sources, summed per key and hour.
std::string config_text() {
  std::ostringstream c;
  c << "store = \"store\"\ncommit_interval = \"20ms\"\nbatch_bytes = 4096\n\n"
    << "[[pipeline]]\nname = \"p\"\npartitions = 2\n\n";
  for (const char* name : {"a", "b"})
    c << "  [[pipeline.source]]\n  name = \"" << name << "\"\n  path = \"" << name << ".csv\"\n\n";
  c << "  [pipeline.fields]\n  time = \"ts\"\n  key = [\"k\"]\n  measures = [\"amount\"]\n\n"
    << "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"1h\"\n\n"
    << "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"amount\"\n";
  return c.str();
}

/// A dead letter as `weir dead-letters --format csv` names it: source label, offset, raw line.
using letter = std::tuple<std::string, uint64_t, std::string>;

/// Writes a csv input of in-order events with a malformed line every 37 and returns, computed
/// here, the dead letters it must give: (source label, byte offset of the line, the line).
std::vector<letter> write_input(const fs::path& file, const std::string& name, int seed) {
  std::string text = "ts,k,amount\n";
  std::vector<letter> bad;
  const auto label = name + " (" + fs::absolute(file).string() + ")";
  for (int i = 0; i < 2000; ++i) {
    std::string line = weir::test::iso(1717200000 + i * 5) + ",k" + std::to_string(i % 7) + ",";
    if ((i + seed) % 37 == 0) {
      line += "bad" + std::to_string(i);
      bad.emplace_back(label, text.size(), line);
    } else {
      line += std::to_string(i % 100) + ".5";
    }
    text += line + "\n";
  }
  write_file(file, text);
  return bad;
}

/// The fields of one csv line (quoted fields with "" inside them).
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out{""};
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted && c == '"' && i + 1 < line.size() && line[i + 1] == '"')
      out.back() += line[++i];
    else if (c == '"')
      quoted = !quoted;
    else if (c == ',' && !quoted)
      out.emplace_back();
    else
      out.back() += c;
  }
  return out;
}

/// The dead letters of `weir dead-letters --format csv` output.
std::set<letter> parse_letters(const std::string& csv) {
  std::set<letter> out;
  std::istringstream in{csv};
  std::string line;
  std::getline(in, line); // the header
  while (std::getline(in, line)) {
    auto f = csv_fields(line);
    REQUIRE(f.size() == 5);
    out.emplace(f[1], std::stoull(f[2]), f[4]);
  }
  return out;
}

using source_list = std::vector<std::pair<uint32_t, std::string>>;

/// What the coordinating node does with the sources an ingest node reports: its lake's source
/// keys recorded in the warehouse, all but those whose key ends in `leave_out` when given.
/// Returns the sources the lake has.
source_list record_sources(const fs::path& lake_store, const fs::path& warehouse_store,
                           const std::string& leave_out = {}) {
  source_list all;
  {
    auto lk = weir::lake::open(lake_store.string());
    REQUIRE(lk);
    auto s = lk->sources();
    REQUIRE(s);
    all = *s;
  }
  source_list kept;
  for (const auto& [id, key] : all)
    if (leave_out.empty() || key.size() < leave_out.size() ||
        key.compare(key.size() - leave_out.size(), leave_out.size(), leave_out) != 0)
      kept.emplace_back(id, key);
  auto wh = weir::warehouse::open(warehouse_store.string());
  REQUIRE(wh);
  REQUIRE(!wh->record_lake_sources(kept));
  return all;
}

/// The id of the source whose key ends in `tail`.
uint32_t id_of(const source_list& sources, const std::string& tail) {
  for (const auto& [id, key] : sources)
    if (key.size() >= tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0)
      return id;
  FAIL("no source " << tail);
  return 0;
}

/// The lines of `text` that contain `what`.
std::string lines_with(const std::string& text, const std::string& what) {
  std::string out;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (line.find(what) != std::string::npos)
      out += line + "\n";
  return out;
}

} // namespace

TEST_CASE("the read commands work on a store whose lake is on another node") {
  temp_dir dir;
  auto expected = write_input(dir.path / "a.csv", "a", 0);
  auto more = write_input(dir.path / "b.csv", "b", 11);
  expected.insert(expected.end(), more.begin(), more.end());
  write_file(dir.path / "p.toml", config_text());
  auto r = weir_cmd("run --final " + q(dir.path / "p.toml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const auto store = dir.path / "store";

  // What the commands print with the lake beside the warehouse.
  const auto letters_csv = weir_cmd("dead-letters --store " + q(store) + " --format csv");
  REQUIRE(letters_csv.rc == 0);
  CHECK(parse_letters(letters_csv.out) == std::set<letter>(expected.begin(), expected.end()));
  const auto letters_table = weir_cmd("dead-letters --store " + q(store));
  const auto letters_json = weir_cmd("dead-letters --store " + q(store) + " --format json");
  const auto inspect = weir_cmd("inspect --store " + q(store));
  REQUIRE(inspect.rc == 0);
  const auto results = weir_cmd("query --store " + q(store) + " --pipeline p --format csv");
  REQUIRE(results.rc == 0);

  // A second warehouse that records every source but b.csv: its offset of b is named by nothing.
  const auto partial = dir.path / "partial";
  fs::create_directories(partial / "warehouse");
  fs::copy_file(store / "warehouse" / "data.mdb", partial / "warehouse" / "data.mdb");
  const auto sources = record_sources(store, partial, "/b.csv");
  const auto b_id = std::to_string(id_of(sources, "/b.csv"));
  record_sources(store, store);
  fs::rename(store / "lake", dir.path / "lake.elsewhere");

  // weir dead-letters names the sources as before, from the recorded keys.
  {
    auto csv = weir_cmd("dead-letters --store " + q(store) + " --format csv");
    CHECK(csv.rc == 0);
    CHECK(csv.out == letters_csv.out);
    auto table = weir_cmd("dead-letters --store " + q(store));
    CHECK(table.rc == 0);
    CHECK(table.out == letters_table.out);
    auto json = weir_cmd("dead-letters --store " + q(store) + " --format json");
    CHECK(json.rc == 0);
    CHECK(json.out == letters_json.out);
  }
  // weir inspect shows the warehouse, its offsets by source, and where the lake is.
  {
    auto now = weir_cmd("inspect --store " + q(store));
    INFO(now.out);
    CHECK(now.rc == 0);
    CHECK_THAT(now.out, Catch::Contains("lake: none here"));
    CHECK_THAT(now.out, Catch::Contains(std::to_string(sources.size()) + " recorded"));
    CHECK(lines_with(now.out, "committed offset") == lines_with(inspect.out, "committed offset"));
    CHECK(lines_with(now.out, "committed offset").find("source a (") != std::string::npos);
  }
  // weir check finds the warehouse sound and the missing lake no problem.
  {
    auto c = weir_cmd("check --store " + q(store));
    INFO(c.out);
    CHECK(c.rc == 0);
    CHECK_THAT(c.out, Catch::Contains("no problems"));
  }
  // weir query reads the warehouse alone.
  {
    auto now = weir_cmd("query --store " + q(store) + " --pipeline p --format csv");
    CHECK(now.rc == 0);
    CHECK(now.out == results.out);
  }
  // weir check reports an offset whose source id is not among the recorded ones.
  {
    auto c = weir_cmd("check --store " + q(partial));
    INFO(c.out);
    CHECK(c.rc == 4);
    CHECK_THAT(c.out, Catch::Contains("an offset of source id " + b_id + ","));
    auto d = weir_cmd("dead-letters --store " + q(partial) + " --format csv");
    CHECK(d.rc == 0);
    CHECK_THAT(d.out, Catch::Contains(",source #" + b_id + ","));
    CHECK_THAT(d.out, Catch::Contains(",a (" + fs::absolute(dir.path / "a.csv").string() + "),"));
    auto i = weir_cmd("inspect --store " + q(partial));
    CHECK(i.rc == 0);
    CHECK_THAT(i.out, Catch::Contains("\n  source #" + b_id + ": committed offset"));
    CHECK_FALSE(fs::exists(partial / "lake"));
  }
  CHECK_FALSE(fs::exists(store / "lake"));
}
