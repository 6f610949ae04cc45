#include "actors/embed.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <spdlog/spdlog.h>

#include "actors/core/error.hpp"
#include "actors/run_setup.hpp"
#include "actors/sink_driver.hpp"
#include "actors/supervisor.hpp"

namespace weir {

namespace {

/// A subscribed actor as a sink: each epoch goes to it as a message (delivered when sent).
class actor_sink final : public sink {
public:
  explicit actor_sink(caf::actor a)
    : a_(std::move(a)) {}
  void deliver(const committed_epoch& e) override { caf::anon_send(a_, e); }

private:
  caf::actor a_;
};

using run_answer = caf::expected<std::vector<run_stats>>;

/// Asks the supervisor to run and passes its one answer on to `out`.
caf::behavior run_requester(caf::event_based_actor* self, supervisor_actor sup,
                            std::shared_ptr<std::promise<run_answer>> out) {
  self->request(sup, caf::infinite, run_atom::value)
    .then(
      [self, out](std::vector<run_stats>& s) {
        out->set_value(run_answer{std::move(s)});
        self->quit();
      },
      [self, out](caf::error& err) {
        out->set_value(run_answer{std::move(err)});
        self->quit();
      });
  return {[](tick_atom) {}}; // nothing comes but the answer
}

} // namespace

pipeline_run::pipeline_run(caf::actor_system& sys, std::unique_ptr<run_setup> setup)
  : sys_(sys)
  , setup_(std::move(setup))
  , cfg_(setup_->deps.cfg)
  , wh_(setup_->deps.wh)
  , meters_(setup_->deps.meters)
  , promise_(std::make_shared<std::promise<run_answer>>())
  , answer_(promise_->get_future()) {
  sup_ = sys_.spawn(supervisor, std::move(setup_->deps));
}

pipeline_run::~pipeline_run() {
  stop();
  wait();
}

void pipeline_run::stop() {
  caf::anon_send(sup_, stop_atom::value);
}

caf::expected<std::vector<run_stats>> pipeline_run::wait() {
  answer_.wait();
  if (setup_->cluster && !cluster_stopped_) {
    cluster_stopped_ = true;
    setup_->cluster->stop(sys_);
  }
  return answer_.get();
}

caf::expected<std::vector<pipeline_status>> pipeline_run::status() const {
  std::vector<pipeline_status> out;
  const auto& wh = wh_;
  const auto& meters = *meters_;
  for (size_t i = 0; i < cfg_.pipelines.size(); ++i) {
    pipeline_status s;
    s.pipeline = cfg_.pipelines[i].name;
    auto c = committed_status_of(*wh, s.pipeline);
    if (!c)
      return c.error();
    s.committed = std::move(*c);
    s.records_read = meters[i].records_read;
    s.bytes_read = meters[i].bytes_read;
    s.bytes_total = meters[i].bytes_total;
    s.bounded = meters[i].bounded;
    s.restarts = meters[i].restarts;
    out.push_back(std::move(s));
  }
  return out;
}

caf::error pipeline_run::subscribe(const std::string& pipeline, std::shared_ptr<sink> s,
                                   std::optional<uint64_t> after) {
  size_t i = 0;
  while (i < cfg_.pipelines.size() && cfg_.pipelines[i].name != pipeline)
    ++i;
  if (i == cfg_.pipelines.size())
    return make_error(errc::bad_input, "no pipeline '" + pipeline + "' in the run");
  const auto& p = cfg_.pipelines[i];
  if (!p.results.change_feed || cfg_.runtime.mode != commit_mode::exactly_once)
    return make_error(errc::bad_input,
                      "pipeline '" + pipeline +
                        "' keeps no change feed to deliver from: give it [pipeline.results] "
                        "change_feed = true (or a [[pipeline.sink]]) and run it exactly once");
  auto last = wh_->last_epoch(pipeline);
  if (!last)
    return last.error();
  sink_driver_config d;
  d.pipeline = pipeline;
  d.name = "(subscriber)";
  d.out = std::move(s);
  d.wh = wh_;
  d.window = describe_window(p.window);
  d.aggregates = aggregate_names(p);
  d.delivered = after ? *after : *last; // from now on, unless told where
  d.record_cursor = false;
  d.backoff = cfg_.runtime.restart_backoff;
  d.backoff_max = cfg_.runtime.restart_backoff_max;
  d.lag_warning = p.results.change_retention;
  auto driver = sys_.spawn<caf::detached>(sink_driver, std::move(d));
  caf::anon_send(sup_, register_atom::value, static_cast<uint32_t>(i), driver);
  return caf::none;
}

caf::error pipeline_run::subscribe(const std::string& pipeline, caf::actor a,
                                   std::optional<uint64_t> after) {
  return subscribe(pipeline, std::make_shared<actor_sink>(std::move(a)), after);
}

caf::expected<std::unique_ptr<pipeline_run>> start_prepared(caf::actor_system& sys,
                                                            std::unique_ptr<run_setup> setup) {
  auto cluster = setup->cluster;
  auto run = std::make_unique<pipeline_run>(sys, std::move(setup));
  if (cluster)
    if (auto err = cluster->start(sys, run->sup_)) {
      caf::anon_send_exit(run->sup_, caf::exit_reason::user_shutdown);
      run->cluster_stopped_ = true; // it never started
      run->promise_->set_value(run_answer{err});
      return err;
    }
  sys.spawn(run_requester, run->sup_, run->promise_);
  return run;
}

caf::expected<std::unique_ptr<pipeline_run>>
start_pipelines(caf::actor_system& sys, const weir_config& cfg, const run_options& opts) {
  auto setup = prepare_run(cfg, opts);
  if (!setup)
    return setup.error();
  return start_prepared(sys, std::move(*setup));
}

} // namespace weir
