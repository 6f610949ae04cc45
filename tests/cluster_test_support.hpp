#pragma once

/// Helpers of the cluster tests.

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "tests/test_support.hpp"

namespace weir::test {

/// The example pipeline with a fixed partition count, as a cluster needs.
inline std::string pipeline_toml() {
  std::ifstream in{WEIR_SOURCE_DIR "/examples/transactions/pipeline.toml"};
  std::ostringstream text;
  text << in.rdbuf();
  auto out = text.str();
  auto at = out.find("name = \"merchant_hourly\"\n");
  REQUIRE(at != std::string::npos);
  return out.insert(at, "partitions = 4\n");
}

/// The 1-based line of the first `needle` in `text`.
inline size_t line_in(const std::string& text, const std::string& needle) {
  auto at = text.find(needle);
  REQUIRE(at != std::string::npos);
  return 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + at, '\n'));
}

/// The fenced code block that follows the line "<!-- test: NAME -->" in docs/cluster.md: the
/// tests run the commands and read the config the guide shows.
inline std::string doc_block(const std::string& name) {
  std::ifstream in{WEIR_SOURCE_DIR "/docs/cluster.md"};
  std::ostringstream text;
  text << in.rdbuf();
  auto doc = text.str();
  auto marker = doc.find("<!-- test: " + name + " -->\n");
  REQUIRE(marker != std::string::npos);
  auto fence = doc.find("```", marker);
  auto begin = doc.find('\n', fence) + 1;
  auto end = doc.find("\n```", begin);
  REQUIRE(end != std::string::npos);
  return doc.substr(begin, end - begin + 1);
}

/// Runs the commands of `script` with sh in directory `dir`, after the assignments `env`.
inline command_result run_in(const std::filesystem::path& dir, const std::string& script,
                             const std::string& env = "") {
  auto file = dir / ".commands.sh";
  write_file(file, script);
  return sh("cd '" + dir.string() + "' && " + env + " timeout 120 sh -e '" + file.string() +
            "' && rm '" + file.string() + "'");
}

/// The guide's CA and node commands in `dir`/certs, for the nodes given as NAME=ADDRESS.
inline void make_certificates(const std::filesystem::path& dir,
                              std::initializer_list<std::pair<const char*, const char*>> nodes) {
  auto certs = dir / "certs";
  std::filesystem::create_directories(certs);
  auto ca = run_in(certs, doc_block("ca"));
  INFO(ca.out);
  REQUIRE(ca.rc == 0);
  for (auto [name, address] : nodes) {
    auto node = run_in(certs, doc_block("node"), "NODE=" + std::string{name} + " ADDR=" + address);
    INFO(node.out);
    REQUIRE(node.rc == 0);
  }
}

} // namespace weir::test
