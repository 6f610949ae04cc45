// transactions_report: the founding example as a program on the weir library. It runs the
// pipeline of pipeline.toml (hourly count, total and average amount per merchant) into a store,
// then pages through the committed results and writes them as csv:
// merchant,hour,transactions,total,average.
//
//   transactions_report PIPELINE.toml STORE_DIR REPORT.csv

#include <cstdio>
#include <string>

#include <actors/core/config.hpp>
#include <actors/core/error.hpp>
#include <actors/runtime.hpp>

#include "../common/timefmt.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: transactions_report PIPELINE.toml STORE_DIR REPORT.csv\n");
    return 2;
  }
  auto cfg = weir::load_config(argv[1]);
  if (!cfg) {
    std::fprintf(stderr, "%s\n", weir::render(cfg.error()).c_str());
    return 2;
  }
  weir::run_options opts;
  opts.store = argv[2];
  opts.final_flush = true; // the file is all the data: every hour fires at its end
  auto stats = weir::run_pipelines(*cfg, opts);
  if (!stats) {
    std::fprintf(stderr, "%s\n", weir::render(stats.error()).c_str());
    return 1;
  }
  for (const auto& s : *stats)
    std::printf("%s: %llu events read, %llu accepted, %llu windows committed\n",
                s.pipeline.c_str(), static_cast<unsigned long long>(s.read),
                static_cast<unsigned long long>(s.accepted),
                static_cast<unsigned long long>(s.windows_committed));
  std::FILE* out = std::fopen(argv[3], "w");
  if (out == nullptr) {
    std::perror(argv[3]);
    return 1;
  }
  std::fprintf(out, "merchant,hour,transactions,total,average\n");
  auto err = weir::query_store_pages(
    argv[2], cfg->pipelines.at(0).name, "", std::nullopt, std::nullopt,
    [out](const weir::query_answer& page) {
      for (const auto& r : page.rows)
        std::fprintf(out, "%s,%s,%.0f,%.17g,%.17g\n", r.key.c_str(),
                     weir_examples::iso(r.start).c_str(), r.values[0], r.values[1], r.values[2]);
      return true;
    });
  std::fclose(out);
  if (err) {
    std::fprintf(stderr, "%s\n", weir::render(err).c_str());
    return 1;
  }
  return 0;
}
