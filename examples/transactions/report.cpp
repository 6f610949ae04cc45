// transactions_report: the founding example as a program on the weir library. It starts the
// pipeline of pipeline.toml (hourly count, total and average amount per merchant) inside its
// own CAF actor system, next to an actor of its own, `report_writer`, that receives every
// committed epoch and writes its hours as csv (merchant,hour,transactions,total,average) while
// the run goes on. It asks the run where it stands once, waits for its end and prints what each
// pipeline did.
//
//   transactions_report PIPELINE.toml STORE_DIR REPORT.csv

#include <cstdio>
#include <string>

#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <actors/core/config.hpp>
#include <actors/core/error.hpp>
#include <actors/embed.hpp>

#include "../common/timefmt.hpp"

namespace {

/// Writes the rows of each committed epoch it is sent; answers get_atom with the rows written.
caf::behavior report_writer(caf::event_based_actor* self, std::FILE* out) {
  auto rows = std::make_shared<size_t>(0);
  return {
    [out, rows](const weir::committed_epoch& e) {
      for (const auto& r : e.rows)
        std::fprintf(out, "%s,%s,%.0f,%.17g,%.17g\n", r.key.c_str(),
                     weir_examples::iso(r.start).c_str(), r.values[0], r.values[1], r.values[2]);
      *rows += e.rows.size();
      std::printf("epoch %llu of %s: %zu merchant-hours\n",
                  static_cast<unsigned long long>(e.epoch), e.pipeline.c_str(), e.rows.size());
    },
    [rows](caf::get_atom) { return *rows; },
  };
}

} // namespace

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
  // Subscribers are delivered from the change feed: keep it for this run's pipeline.
  const std::string pipeline = cfg->pipelines.at(0).name;
  cfg->pipelines.at(0).results.change_feed = true;
  std::FILE* out = std::fopen(argv[3], "w");
  if (out == nullptr) {
    std::perror(argv[3]);
    return 1;
  }
  std::fprintf(out, "merchant,hour,transactions,total,average\n");
  weir::actor_system_config sys_cfg; // CAF's config with Weir's message types
  caf::actor_system sys{sys_cfg};
  auto writer = sys.spawn(report_writer, out);
  weir::run_options opts;
  opts.store = argv[2];
  opts.final_flush = true; // the file is all the data: every hour fires at its end
  auto run = weir::start_pipelines(sys, *cfg, opts);
  if (!run) {
    std::fprintf(stderr, "%s\n", weir::render(run.error()).c_str());
    return 1;
  }
  if (auto err = (*run)->subscribe(pipeline, caf::actor_cast<caf::actor>(writer), 0)) {
    std::fprintf(stderr, "%s\n", weir::render(err).c_str());
    return 1;
  }
  if (auto st = (*run)->status())
    for (const auto& p : *st)
      std::printf("%s: running, %llu epochs committed so far\n", p.pipeline.c_str(),
                  static_cast<unsigned long long>(p.committed.epoch));
  auto stats = (*run)->wait();
  if (!stats) {
    std::fprintf(stderr, "%s\n", weir::render(stats.error()).c_str());
    return 1;
  }
  for (const auto& s : *stats)
    std::printf("%s: %llu events read, %llu accepted, %llu windows committed\n",
                s.pipeline.c_str(), static_cast<unsigned long long>(s.read),
                static_cast<unsigned long long>(s.accepted),
                static_cast<unsigned long long>(s.windows_committed));
  // Every epoch was sent to the writer before the run ended: ask it, after them, what it wrote.
  caf::scoped_actor self{sys};
  self->request(writer, caf::infinite, caf::get_atom::value)
    .receive([](size_t rows) { std::printf("report: %zu merchant-hours written\n", rows); },
             [](const caf::error&) {});
  self->send_exit(writer, caf::exit_reason::user_shutdown);
  std::fclose(out);
  return 0;
}
