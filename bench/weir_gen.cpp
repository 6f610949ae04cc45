// weir-gen: writes generated transactions as CSV (see generate.hpp), e.g. for the example.

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "generate.hpp"

int main(int argc, char** argv) {
  weir::bench::workload w;
  std::string out = "-";
  double span_days = 182;
  CLI::App app{"weir-gen: generated transactions as CSV"};
  app.add_option("--events", w.events, "number of events")->capture_default_str();
  app.add_option("--keys", w.keys, "number of merchants")->capture_default_str();
  app.add_option("--start", w.start, "first event time, epoch seconds")->capture_default_str();
  app.add_option("--span-days", span_days, "days of event time")->capture_default_str();
  app.add_option("--disorder", w.disorder, "share of out-of-order events")->capture_default_str();
  app.add_option("--max-shift", w.max_shift, "max seconds an event is late")->capture_default_str();
  app.add_option("--seed", w.seed, "random seed")->capture_default_str();
  app.add_option("--late-share", w.late_share, "share of events moved far back (late)")
    ->capture_default_str();
  app.add_option("--late-shift", w.late_shift, "seconds a late event is moved back")
    ->capture_default_str();
  app.add_option("--cards", w.cards, "values of an extra card column (0: no column)")
    ->capture_default_str();
  app.add_option("--out", out, "output file (- for stdout)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  w.span = static_cast<int64_t>(span_days * 86400);
  std::FILE* f = out == "-" ? stdout : std::fopen(out.c_str(), "w");
  if (!f) {
    std::perror(out.c_str());
    return 3;
  }
  weir::bench::generate(w, f);
  if (f != stdout)
    std::fclose(f);
  return 0;
}
