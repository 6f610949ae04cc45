// weir-preprocess-bench CONFIG... --input CSV [--reps N]: the CPU time per record of the
// preprocess engine alone (parsing, checks, partitioning and the pipeline's stages) over a csv
// file, for each config's first pipeline, in chunks of 1 MiB shipped (cleared) one by one.
// It reports the best of N repetitions of thread CPU time, which a loaded machine disturbs far
// less than wall time: the way to see what a stage costs on the hot path.

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "actors/core/config.hpp"
#include "actors/core/error.hpp"
#include "actors/core/preprocessor.hpp"

namespace {

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

/// One pass over `text`; returns the CPU seconds and the records read.
double one_pass(const weir::pipeline_config& p, const std::string& text, uint64_t& records) {
  weir::preprocessor pre{p, 2};
  const double t0 = thread_cpu_seconds();
  size_t b = 0;
  while (b < text.size()) {
    size_t e = std::min(text.size(), b + (size_t{1} << 20));
    e = text.find('\n', e - 1);
    e = e == std::string::npos ? text.size() : e + 1;
    pre.process(0, b, std::string_view{text}.substr(b, e - b));
    pre.clear_outputs();
    b = e;
  }
  records = pre.counters().read;
  return thread_cpu_seconds() - t0;
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> configs;
  std::string input;
  int reps = 15;
  CLI::App app{"weir-preprocess-bench: CPU time per record of the preprocess engine"};
  app.add_option("configs", configs, "pipeline configs (the first pipeline of each)")->required();
  app.add_option("--input", input, "a csv file for the pipeline's source")->required();
  app.add_option("--reps", reps, "repetitions (the best counts)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::ifstream in(input, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  for (const auto& path : configs) {
    auto cfg = weir::load_config(path);
    if (!cfg) {
      std::fprintf(stderr, "%s\n", weir::render(cfg.error()).c_str());
      return 2;
    }
    double best = 1e300;
    uint64_t records = 0;
    for (int i = 0; i < reps; ++i)
      best = std::min(best, one_pass(cfg->pipelines.at(0), text, records));
    std::printf("%s: %llu records, best %.3f s CPU, %.1f ns/record\n", path.c_str(),
                static_cast<unsigned long long>(records), best,
                records == 0 ? 0.0 : best * 1e9 / static_cast<double>(records));
  }
  return 0;
}
