// top_keys: runs the pipelines of a config with the weir library, then asks the warehouse for
// the committed results of one pipeline and prints the keys with the largest total of one
// aggregate over all windows.
//
//   top_keys PIPELINE.toml STORE_DIR PIPELINE AGGREGATE [N]

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <actors/core/config.hpp>
#include <actors/core/error.hpp>
#include <actors/runtime.hpp>

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: top_keys PIPELINE.toml STORE_DIR PIPELINE AGGREGATE [N]\n");
    return 2;
  }
  auto cfg = weir::load_config(argv[1]);
  if (!cfg) {
    std::fprintf(stderr, "%s\n", weir::render(cfg.error()).c_str());
    return 2;
  }
  weir::run_options opts;
  opts.store = argv[2];
  opts.final_flush = true; // the input is all the data: fire every window at its end
  auto stats = weir::run_pipelines(*cfg, opts);
  if (!stats) {
    std::fprintf(stderr, "%s\n", weir::render(stats.error()).c_str());
    return 1;
  }
  for (const auto& s : *stats)
    std::printf("%s: %llu events, %llu windows committed\n", s.pipeline.c_str(),
                static_cast<unsigned long long>(s.read),
                static_cast<unsigned long long>(s.windows_committed));
  auto answer = weir::query_store(argv[2], argv[3], "", std::nullopt, std::nullopt);
  if (!answer) {
    std::fprintf(stderr, "%s\n", weir::render(answer.error()).c_str());
    return 1;
  }
  auto col = std::find(answer->aggregates.begin(), answer->aggregates.end(), argv[4]);
  if (col == answer->aggregates.end()) {
    std::fprintf(stderr, "no aggregate %s\n", argv[4]);
    return 2;
  }
  auto i = static_cast<size_t>(col - answer->aggregates.begin());
  std::map<std::string, double> totals;
  for (const auto& r : answer->rows)
    totals[r.key] += r.values[i];
  std::vector<std::pair<std::string, double>> ranked(totals.begin(), totals.end());
  std::sort(ranked.begin(), ranked.end(),
            [](const auto& a, const auto& b) { return a.second > b.second; });
  size_t n = argc > 5 ? std::stoul(argv[5]) : 5;
  for (size_t k = 0; k < ranked.size() && k < n; ++k)
    std::printf("%-12s %14.2f\n", ranked[k].first.c_str(), ranked[k].second);
  return 0;
}
