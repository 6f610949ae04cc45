#include "cluster/node.hpp"

#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <xxhash.h>

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/openssl/unpublish.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/system_messages.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/aggregator.hpp"
#include "actors/core/definition.hpp"
#include "actors/core/error.hpp"
#include "actors/frame.hpp"
#include "cluster/auth.hpp"
#include "cluster/placement.hpp"
#include "schema/cluster.capnp.h"

namespace weir::cluster {

namespace {

/// The nonces of a node's handshakes, shared by the node actor (peers that dial it) and the
/// coordinating run (the peers it dials): a nonce seen in either is a replay in both.
struct shared_nonces {
  std::mutex mu;
  nonce_registry seen;
};

/// A refusal, as the peer gets it (the log has the detail).
caf::error refused(const std::string& why) {
  return make_error(errc::bad_input, "refused by the cluster: " + why);
}

struct node_state {
  static inline const char* name = "node";
  cluster_config cfg;
  identity me;
  std::shared_ptr<shared_nonces> nonces;
  std::shared_ptr<run_probe> probe; ///< the run of the coordinating node (null elsewhere)
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::map<caf::node_id, std::unique_ptr<handshake>> pending; ///< hello read, response awaited
  std::map<caf::node_id, std::string> peers;                  ///< authenticated: their names
  /// Partitions running here: (pipeline, partition).
  std::map<caf::actor_addr, std::pair<uint32_t, uint32_t>> held;

  /// The node that sent the message being handled.
  template <class Self>
  static caf::node_id sender_node(Self* self) {
    auto& s = self->current_sender();
    return s ? s->node() : caf::node_id{};
  }
  /// The name of the authenticated peer on `from` ("" when it is not).
  std::string peer_name(const caf::node_id& from) const {
    auto i = peers.find(from);
    return i == peers.end() ? std::string{} : i->second;
  }
};

using node_ptr = node_actor::stateful_pointer<node_state>;

caf::result<std::string, std::string> on_hello(node_ptr self, const std::string& hello) {
  auto& st = self->state;
  auto from = node_state::sender_node(self);
  std::lock_guard<std::mutex> lock{st.nonces->mu};
  auto hs = std::make_unique<handshake>(st.me, st.nonces->seen);
  auto out = hs->feed(hello);
  if (out.refused != refusal::none) {
    spdlog::warn("node {}: refused peer {}: {}", st.me.self, caf::to_string(from), hs->detail());
    return refused(to_string(out.refused));
  }
  std::string mine = hs->hello();
  st.pending[from] = std::move(hs);
  return {std::move(mine), std::move(out.reply)};
}

caf::result<bool> on_auth(node_ptr self, const std::string& response) {
  auto& st = self->state;
  auto from = node_state::sender_node(self);
  auto i = st.pending.find(from);
  if (i == st.pending.end()) {
    spdlog::warn("node {}: refused peer {}: a response without a hello", st.me.self,
                 caf::to_string(from));
    return refused("out of order");
  }
  std::unique_ptr<handshake> hs = std::move(i->second);
  st.pending.erase(i);
  std::lock_guard<std::mutex> lock{st.nonces->mu};
  auto out = hs->feed(response);
  if (out.refused != refusal::none || !hs->accepted()) {
    spdlog::warn("node {}: refused peer {}: {}", st.me.self, hs->peer(), hs->detail());
    return refused(to_string(out.refused));
  }
  spdlog::info("node {}: peer {} authenticated", st.me.self, hs->peer());
  st.peers[from] = hs->peer();
  return true;
}

caf::result<aggregator_actor> on_place(node_ptr self, uint32_t pipeline, uint32_t part,
                                       uint64_t shape, std::string& snapshot,
                                       updater_actor updater) {
  auto& st = self->state;
  auto from = node_state::sender_node(self);
  // The coordinating node places its own partitions through its node actor too.
  auto peer = from == self->node() ? st.me.self : st.peer_name(from);
  if (peer.empty() || peer == status_client) {
    spdlog::warn("node {}: refused a partition from {} peer {}", st.me.self,
                 peer.empty() ? "unauthenticated" : "tool", caf::to_string(from));
    return refused("not authenticated as a node");
  }
  const auto& pipelines = st.cfg.pipeline.pipelines;
  if (pipeline >= pipelines.size() || part >= pipelines[pipeline].partitions || !updater ||
      shape != pipeline_shape_of(pipelines[pipeline])) {
    spdlog::warn("node {}: refused partition {} of pipeline {} from {}: this node's pipeline "
                 "config differs",
                 st.me.self, part, pipeline, peer);
    return make_error(errc::bad_input, "node " + st.me.self + " runs another pipeline config");
  }
  auto a =
    self->system().spawn(aggregator, pipeline, part, pipelines[pipeline], std::move(snapshot),
                         preprocess_actor{}, std::move(updater), std::shared_ptr<state_meter>{});
  self->monitor(a);
  st.held.emplace(a.address(), std::make_pair(pipeline, part));
  spdlog::info("node {}: runs partition {} of pipeline {} for {}", st.me.self, part,
               pipelines[pipeline].name, peer);
  return a;
}

/// The pipelines' progress as the coordinating node's run shows it, into `out`.
void progress_of(const run_probe& probe, capnp::List<schema::PipelineProgress>::Builder out,
                 const weir_config& cfg) {
  auto wh = probe.store();
  auto meters = probe.meters();
  for (unsigned i = 0; i < out.size(); ++i) {
    const auto& name = cfg.pipelines[i].name;
    auto b = out[i];
    b.setName(name);
    b.setWatermark(min_timestamp);
    b.setMaxTime(min_timestamp);
    if (meters && i < meters->size())
      b.setRestarts((*meters)[i].restarts.load());
    if (!wh)
      continue;
    auto st = committed_status_of(*wh, name);
    if (!st)
      continue;
    b.setLastEpoch(st->epoch);
    b.setWindows(st->windows);
    b.setWatermark(st->watermark);
    b.setMaxTime(st->max_time);
  }
}

caf::result<frame> on_status(node_ptr self) {
  auto& st = self->state;
  auto from = node_state::sender_node(self);
  if (from != self->node() && st.peer_name(from).empty())
    return refused("not authenticated");
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::NodeStatus>();
  b.setNode(st.me.self);
  b.setUptimeUs(std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - st.started)
                  .count());
  auto parts = b.initPartitions(static_cast<unsigned>(st.held.size()));
  unsigned k = 0;
  for (const auto& [addr, at] : st.held) {
    parts[k].setPipeline(st.cfg.pipeline.pipelines[at.first].name);
    parts[k++].setPartition(at.second);
  }
  if (st.probe)
    progress_of(*st.probe, b.initPipelines(static_cast<unsigned>(st.cfg.pipeline.pipelines.size())),
                st.cfg.pipeline);
  return to_frame<schema::NodeStatus>(mb);
}

/// The node actor of node `c.self`; `probe` shows the run of the coordinating node (may be null).
node_actor::behavior_type node(node_ptr self, cluster_config c,
                               std::shared_ptr<shared_nonces> nonces,
                               std::shared_ptr<run_probe> probe) {
  auto& st = self->state;
  st.me = identity_of(c, c.nodes[*c.self].name);
  st.cfg = std::move(c);
  st.nonces = std::move(nonces);
  st.probe = std::move(probe);
  self->set_down_handler([self](caf::down_msg& dm) { self->state.held.erase(dm.source); });
  return {
    [self](hello_atom, const std::string& hello) { return on_hello(self, hello); },
    [self](auth_atom, const std::string& response) { return on_auth(self, response); },
    [self](place_atom, uint32_t pipeline, uint32_t part, uint64_t shape, std::string& snapshot,
           updater_actor updater) {
      return on_place(self, pipeline, part, shape, snapshot, std::move(updater));
    },
    [self](status_atom) { return on_status(self); },
  };
}

/// The middleman actor that dials and publishes: caf::openssl's, or the plain one.
caf::io::middleman_actor dialer(caf::actor_system& sys, const cluster_config& c) {
  return c.insecure ? sys.middleman().actor_handle() : sys.openssl_manager().actor_handle();
}

/// Publishes `n` on node `self`'s address.
caf::error publish_node(caf::actor_system& sys, const cluster_config& c, size_t self,
                        const node_actor& n) {
  const auto& me = c.nodes[self];
  caf::expected<uint16_t> port = caf::error{};
  if (c.insecure)
    port = sys.middleman().publish(n, me.port, me.host.c_str(), true);
  else
    port = caf::openssl::publish(n, me.port, me.host.c_str(), true);
  if (!port)
    return make_error(errc::bad_config, c.file + ": node " + me.name + " cannot listen on " +
                                          me.address() + ": " + sys.render(port.error()));
  spdlog::info("node {} listens on {}{}", me.name, me.address(),
               c.insecure ? " (insecure: no TLS)" : " (TLS)");
  return caf::none;
}

/// What dialing a node takes: this side's identity and nonces, and how long to wait.
struct dialer_context {
  caf::actor_system& sys;
  const cluster_config& c;
  const identity& me;
  shared_nonces& nonces;
  std::chrono::milliseconds timeout;
};

/// The handshake with a dialed node: hello, its hello and response, our response.
caf::error authenticate(const dialer_context& d, caf::scoped_actor& self, const node_actor& peer,
                        const std::string& name) {
  std::unique_ptr<handshake> hs;
  {
    std::lock_guard<std::mutex> lock{d.nonces.mu};
    hs = std::make_unique<handshake>(d.me, d.nonces.seen);
  }
  caf::error err;    ///< the exchange failed
  caf::error denied; ///< the peer did not prove the secret
  std::string reply;
  self->request(peer, d.timeout, hello_atom::value, hs->hello())
    .receive(
      [&](std::string& their_hello, std::string& their_response) {
        std::lock_guard<std::mutex> lock{d.nonces.mu};
        auto a = hs->feed(their_hello);
        if (a.refused != refusal::none) {
          err =
            make_error(errc::node_lost, "node " + name + " failed the handshake: " + hs->detail());
          return;
        }
        reply = std::move(a.reply);
        auto b = hs->feed(their_response);
        if (b.refused != refusal::none || !hs->accepted())
          denied =
            make_error(errc::node_lost, "node " + name + " failed the handshake: " + hs->detail());
      },
      [&](caf::error& e) { err = make_error(errc::node_lost, render(e)); });
  if (err)
    return err;
  // Our response goes even when the peer's failed, so that both sides log the refusal.
  self->request(peer, d.timeout, auth_atom::value, std::move(reply))
    .receive([&](bool) {}, [&](caf::error& e) { err = make_error(errc::node_lost, render(e)); });
  if (denied)
    return denied;
  if (hs->peer() != name)
    return make_error(errc::node_lost, "the node at the address of " + name + " is " + hs->peer());
  return err;
}

/// Dials node `n` and runs the handshake both ways.
caf::expected<node_actor> dial(const dialer_context& d, size_t n) {
  const auto& to = d.c.nodes[n];
  caf::scoped_actor self{d.sys};
  caf::expected<node_actor> peer = caf::error{};
  self->request(dialer(d.sys, d.c), d.timeout, caf::connect_atom::value, to.host, to.port)
    .receive(
      [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
        if (ptr)
          peer = caf::actor_cast<node_actor>(std::move(ptr));
        else
          peer = make_error(errc::node_lost, "nothing published at " + to.address());
      },
      [&](caf::error& err) { peer = make_error(errc::node_lost, d.sys.render(err)); });
  if (!peer)
    return peer;
  if (auto err = authenticate(d, self, *peer, to.name))
    return err;
  return peer;
}

/// The coordinating node's side of the cluster: dials the aggregate nodes, proves the secret
/// and checks theirs, and spawns each generation's partitions where the placement puts them.
class coordinator_link : public run_cluster {
public:
  coordinator_link(cluster_config c, std::shared_ptr<run_probe> probe)
    : c_(std::move(c))
    , self_(*c_.self)
    , shapes_(shapes_of(c_))
    , nonces_(std::make_shared<shared_nonces>())
    , me_(identity_of(c_, c_.nodes[self_].name))
    , probe_(std::move(probe)) {}

  void configure(caf::actor_system_config& cfg) override { configure_system(cfg, c_, self_); }

  caf::error start(caf::actor_system& sys, supervisor_actor) override {
    local_ = sys.spawn(node, c_, nonces_, probe_);
    return publish_node(sys, c_, self_, local_);
  }

  caf::expected<std::vector<aggregator_actor>> spawn_partitions(caf::actor_system& sys,
                                                                uint32_t pipeline,
                                                                std::vector<std::string> snapshots,
                                                                updater_actor updater) override {
    std::vector<bool> alive(c_.nodes.size(), false);
    for (size_t i = 0; i < c_.nodes.size(); ++i)
      alive[i] = i == self_ || (c_.nodes[i].aggregate && connected(sys, i));
    auto where = place(c_, shapes_, alive);
    const auto& slots = where.pipelines.at(pipeline).partitions;
    const auto& p = c_.pipeline.pipelines.at(pipeline);
    std::vector<aggregator_actor> out;
    // Partitions of a generation that cannot be spawned whole go again: nothing links them yet.
    auto give_up = [&](caf::error err) {
      for (auto& a : out)
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
      return err;
    };
    for (uint32_t part = 0; part < snapshots.size(); ++part) {
      if (part >= slots.size() || !slots[part])
        return give_up(make_error(errc::node_lost, "pipeline " + p.name +
                                                     ": no node can hold partition " +
                                                     std::to_string(part) + " now"));
      auto a = spawn_one(sys, *slots[part], pipeline, part, std::move(snapshots[part]), updater);
      if (!a)
        return give_up(a.error());
      out.push_back(std::move(*a));
    }
    return out;
  }

  void stop(caf::actor_system& sys) override {
    if (!local_)
      return;
    caf::scoped_actor self{sys};
    self->send_exit(local_, caf::exit_reason::user_shutdown);
  }

private:
  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(std::max<int64_t>(c_.failure_timeout / us_per_ms, 100));
  }

  /// Partition `part` on node `n`: here, or through node n's actor.
  caf::expected<aggregator_actor> spawn_one(caf::actor_system& sys, size_t n, uint32_t pipeline,
                                            uint32_t part, std::string snapshot,
                                            updater_actor updater) {
    caf::scoped_actor self{sys};
    caf::expected<aggregator_actor> out = caf::error{};
    self
      ->request(n == self_ ? local_ : peers_[n], timeout(), place_atom::value, pipeline, part,
                pipeline_shape_of(c_.pipeline.pipelines[pipeline]), std::move(snapshot),
                std::move(updater))
      .receive([&](aggregator_actor& a) { out = std::move(a); },
               [&](caf::error& err) {
                 const auto why = "node " + c_.nodes[n].name + " did not take partition " +
                                  std::to_string(part) + ": " + render(err);
                 // A node that answers with a refusal will refuse again: the configs differ.
                 // Waiting for the cluster would not help; the run ends with it.
                 if (err.category() == caf::atom("weir"))
                   out = make_error(errc::bad_config,
                                    why + " (do all nodes run the same CLUSTER.toml and pipeline "
                                          "config?)");
                 else
                   out = make_error(errc::node_lost, why);
               });
    if (!out)
      peers_.erase(n);
    return out;
  }

  /// Whether node `n` is connected and authenticated (dialing it when it is not).
  bool connected(caf::actor_system& sys, size_t n) {
    auto i = peers_.find(n);
    if (i != peers_.end() && !i->second->getf(caf::abstract_actor::is_terminated_flag))
      return true;
    peers_.erase(n);
    auto peer = dial({sys, c_, me_, *nonces_, timeout()}, n);
    if (!peer) {
      spdlog::warn("node {}: node {} at {} is not available: {}", c_.nodes[self_].name,
                   c_.nodes[n].name, c_.nodes[n].address(), render(peer.error()));
      return false;
    }
    peers_[n] = std::move(*peer);
    return true;
  }

  cluster_config c_;
  size_t self_;
  std::vector<pipeline_shape> shapes_;
  std::shared_ptr<shared_nonces> nonces_;
  identity me_;
  std::shared_ptr<run_probe> probe_;
  node_actor local_;
  std::map<size_t, node_actor> peers_; ///< authenticated node actors of the other nodes
};

/// The actor system of a node that runs no pipeline, or of a tool.
struct node_system_config : caf::actor_system_config {
  explicit node_system_config(size_t threads) {
    add_message_types<caf::id_block::weir>();
    set("scheduler.max-threads", threads);
    set("logger.verbosity", caf::atom("quiet"));
  }
};

/// Decodes a NodeStatus frame into `r`.
caf::error decode_status(const frame& f, node_report& r) {
  return decode_frame<schema::NodeStatus>(f, [&](schema::NodeStatus::Reader s) {
    r.uptime_us = s.getUptimeUs();
    for (auto p : s.getPartitions())
      r.partitions.emplace_back(p.getPipeline().cStr(), p.getPartition());
    for (auto p : s.getPipelines()) {
      pipeline_progress x;
      x.name = p.getName().cStr();
      x.last_epoch = p.getLastEpoch();
      x.windows = p.getWindows();
      x.watermark = p.getWatermark();
      x.max_time = p.getMaxTime();
      x.restarts = p.getRestarts();
      r.pipelines.push_back(std::move(x));
    }
  });
}

/// "coordinator, ingest, aggregate" of node `n`.
std::string roles_of(const node_config& n) {
  std::string out;
  auto add = [&](bool on, const char* what) {
    if (on)
      out += (out.empty() ? "" : ", ") + std::string{what};
  };
  add(n.coordinator, "coordinator");
  add(n.ingest, "ingest");
  add(n.aggregate && !n.spare, "aggregate");
  add(n.spare, "spare");
  return out;
}

/// A node that only serves partitions: publishes its node actor until `stop` is set.
caf::error serve_node(const cluster_config& c, const run_options& opts) {
  node_system_config cfg{opts.threads ? opts.threads
                                      : std::max(1u, std::thread::hardware_concurrency())};
  configure_system(cfg, c, *c.self);
  caf::actor_system sys{cfg};
  auto n = sys.spawn(node, c, std::make_shared<shared_nonces>(), std::shared_ptr<run_probe>{});
  if (auto err = publish_node(sys, c, *c.self, n))
    return err;
  while (!(opts.stop && opts.stop->load()))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  spdlog::info("node {} stops", c.nodes[*c.self].name);
  caf::anon_send_exit(n, caf::exit_reason::user_shutdown);
  return caf::none;
}

} // namespace

uint64_t pipeline_shape_of(const pipeline_config& p) {
  auto text = encode_definition(p) + "\npartitions " + std::to_string(p.partitions);
  return XXH64(text.data(), text.size(), 0);
}

void configure_system(caf::actor_system_config& cfg, const cluster_config& c, size_t self) {
  cfg.load<caf::io::middleman>();
  cfg.set("middleman.heartbeat-interval", caf::timespan{c.heartbeat * 1000});
  cfg.set("middleman.connection-timeout", caf::timespan{c.failure_timeout * 1000});
  if (c.insecure)
    return;
  cfg.load<caf::openssl::manager>();
  const auto& tls = c.nodes[self].tls;
  cfg.openssl_certificate = tls.certificate;
  cfg.openssl_key = tls.key;
  cfg.openssl_cafile = tls.ca;
}

caf::expected<std::vector<run_stats>> run_node(const cluster_config& c, run_options opts) {
  if (!c.self)
    return make_error(errc::bad_config, c.file + ": no node to run as");
  const auto& me = c.nodes[*c.self];
  if (c.ingest() != c.coordinator())
    return make_error(errc::bad_config,
                      c.file + ": node " + c.nodes[c.ingest()].name +
                        " has the ingest role but not the coordinator role: this version runs "
                        "ingest (and its lake) on the coordinating node; give both roles to one "
                        "node");
  if (*c.self != c.coordinator()) {
    if (auto err = serve_node(c, opts))
      return err;
    return std::vector<run_stats>{};
  }
  opts.store = me.store;
  if (!opts.probe)
    opts.probe = std::make_shared<run_probe>(); // for the status of the run (weir status)
  opts.cluster = std::make_shared<coordinator_link>(c, opts.probe);
  return run_pipelines(c.pipeline, opts);
}

caf::expected<std::vector<node_report>> cluster_status(const cluster_config& c) {
  if (!c.insecure && !c.self)
    return make_error(errc::bad_config, c.file + ": the cluster uses TLS: give --name, the node "
                                                 "whose certificate this machine holds");
  node_system_config cfg{2};
  configure_system(cfg, c, c.self.value_or(0));
  caf::actor_system sys{cfg};
  shared_nonces nonces;
  const auto me = identity_of(c, status_client);
  const auto wait =
    std::chrono::milliseconds(std::max<int64_t>(c.failure_timeout / us_per_ms, 100));
  std::vector<node_report> out;
  for (size_t n = 0; n < c.nodes.size(); ++n) {
    node_report r;
    r.name = c.nodes[n].name;
    r.address = c.nodes[n].address();
    r.roles = roles_of(c.nodes[n]);
    auto peer = dial({sys, c, me, nonces, wait}, n);
    if (!peer) {
      r.error = render(peer.error());
      out.push_back(std::move(r));
      continue;
    }
    caf::scoped_actor self{sys};
    caf::error err;
    self->request(*peer, wait, status_atom::value)
      .receive([&](frame& f) { err = decode_status(f, r); },
               [&](caf::error& e) { err = std::move(e); });
    r.up = !err;
    if (err)
      r.error = render(err);
    out.push_back(std::move(r));
  }
  return out;
}

} // namespace weir::cluster
