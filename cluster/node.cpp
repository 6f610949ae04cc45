#include "cluster/node.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <xxhash.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
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
#include "actors/core/fault.hpp"
#include "actors/frame.hpp"
#include "actors/ingest.hpp"
#include "actors/recovery.hpp"
#include "cluster/auth.hpp"
#include "cluster/placement.hpp"
#include "schema/cluster.capnp.h"
#include "store/lock.hpp"
#include "store/store.hpp"

namespace weir::cluster {

namespace {

/// The nonces of a node's handshakes, shared by the node actor (peers that dial it) and the
/// coordinating run (the peers it dials): a nonce seen in either is a replay in both.
struct shared_nonces {
  std::mutex mu;
  nonce_registry seen;
};

/// How long a node that is told to stop may take to end what it runs.
constexpr std::chrono::seconds stop_limit{5};

/// Handshakes a node keeps in progress at most.
constexpr size_t max_pending_handshakes = 64;

/// A refusal, as the peer gets it (the log has the detail).
caf::error refused(const std::string& why) {
  return make_error(errc::bad_input, "refused by the cluster: " + why);
}

/// What an IngestRequest frame asks for.
struct ingest_request {
  uint32_t pipeline = 0;
  uint64_t shape = 0;
  std::string identity;
  bool holds_data = false;
  offset_list committed;
  bool final_flush = false;
};

struct node_state {
  static inline const char* name = "node";
  cluster_config cfg;
  identity me;
  std::shared_ptr<shared_nonces> nonces;
  std::shared_ptr<run_probe> probe; ///< the run of the coordinating node (null elsewhere)
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::map<caf::node_id, std::unique_ptr<handshake>> pending; ///< hello read, response awaited
  std::deque<caf::node_id> pending_order;                     ///< oldest hello first
  /// Partitions held per updater they contribute to (one updater per generation).
  std::map<caf::actor_addr, std::vector<caf::actor_addr>> by_updater;
  std::map<caf::node_id, std::string> peers; ///< authenticated: their names
  /// Partitions running here: (pipeline, partition).
  std::map<caf::actor_addr, std::pair<uint32_t, uint32_t>> held;

  // The ingest node only.
  std::shared_ptr<lake> lk;                 ///< the lake in this node's store
  std::map<uint32_t, ingest_actor> ingests; ///< pipeline -> its ingest running here
  std::map<caf::actor_addr, uint32_t> fed;  ///< the preprocess actor each ingest sends to
  /// A start that waits for the previous ingest of its pipeline to be gone.
  struct waiting_start {
    caf::typed_response_promise<ingest_actor, frame> rp;
    ingest_request request;
    preprocess_actor next;
    coordinator_actor coordinator;
  };
  std::map<uint32_t, waiting_start> waiting;

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
  // Handshakes in progress are few (a peer completes its own at once): a peer that sends only
  // hellos, from ever new node ids, pushes out the oldest instead of growing the table.
  if (st.pending.find(from) == st.pending.end())
    st.pending_order.push_back(from);
  st.pending[from] = std::move(hs);
  while (st.pending.size() > max_pending_handshakes && !st.pending_order.empty()) {
    st.pending.erase(st.pending_order.front());
    st.pending_order.pop_front();
  }
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
  st.pending_order.erase(std::find(st.pending_order.begin(), st.pending_order.end(), from));
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
                         preprocess_actor{}, updater, std::shared_ptr<state_meter>{});
  self->monitor(a);
  st.held.emplace(a.address(), std::make_pair(pipeline, part));
  // A partition ends with its generation: when the updater it contributes to is gone (the
  // generation ended, or the coordinating node with it), so is the partition, also when its
  // preprocess never linked to it.
  auto& same = st.by_updater[updater.address()];
  if (same.empty())
    self->monitor(updater);
  same.push_back(a.address());
  spdlog::info("node {}: runs partition {} of pipeline {} for {}", st.me.self, part,
               pipelines[pipeline].name, peer);
  return a;
}

/// Decodes an IngestRequest frame for a config of `pipelines` pipelines.
caf::error decode_ingest_request(const frame& f, size_t pipelines, ingest_request& out) {
  caf::error bad;
  auto err = decode_frame<schema::IngestRequest>(f, [&](schema::IngestRequest::Reader r) {
    out.pipeline = r.getPipeline();
    out.shape = r.getShape();
    auto id = r.getStoreIdentity();
    out.identity.assign(reinterpret_cast<const char*>(id.begin()), id.size());
    out.holds_data = r.getWarehouseHoldsData();
    for (auto o : r.getCommitted())
      out.committed.emplace_back(o.getSource(), o.getOffset());
    out.final_flush = r.getFinalFlush();
    if (out.pipeline >= pipelines)
      bad = make_error(errc::decode, "undecodable IngestRequest frame: pipeline " +
                                       std::to_string(out.pipeline) + " of " +
                                       std::to_string(pipelines));
    else if (out.identity.empty())
      bad = make_error(errc::decode, "undecodable IngestRequest frame: no store identity");
  });
  return err ? err : bad;
}

/// Starts the ingest `r` asks for (the previous one of its pipeline is gone): binds the lake to
/// the warehouse's store, resolves the inputs from the committed offsets and spawns the actor.
caf::expected<std::pair<ingest_actor, frame>> start_ingest(node_ptr self, const ingest_request& r,
                                                           preprocess_actor next,
                                                           coordinator_actor coordinator) {
  auto& st = self->state;
  const auto& coord = st.cfg.nodes[st.cfg.coordinator()];
  if (auto err = bind_lake(*st.lk, r.identity, r.holds_data,
                           "of node " + coord.name + " (" + coord.store + ")"))
    return err;
  weir_config run = st.cfg.pipeline;
  run.runtime.mode = commit_mode::exactly_once;
  run.runtime.final_flush = r.final_flush;
  const auto& p = run.pipelines[r.pipeline];
  pipeline_sources inputs;
  std::vector<std::pair<uint32_t, size_t>> bindings; // preprocess binds from the chunks
  if (auto err = prepare_inputs(run, p, r.committed, *st.lk, inputs, bindings))
    return err;
  auto sources = st.lk->sources();
  if (!sources)
    return sources.error();
  auto ing = self->system().spawn<caf::detached>(ingest, r.pipeline, std::move(inputs), run.runtime,
                                                 st.lk, next, std::move(coordinator),
                                                 std::shared_ptr<state_meter>{});
  self->monitor(ing);
  self->monitor(next);
  st.ingests[r.pipeline] = ing;
  st.fed[next.address()] = r.pipeline;
  capnp::MallocMessageBuilder mb;
  auto list =
    mb.initRoot<schema::IngestStarted>().initSources(static_cast<unsigned>(sources->size()));
  for (unsigned k = 0; k < list.size(); ++k) {
    list[k].setId((*sources)[k].first);
    list[k].setKey((*sources)[k].second);
  }
  spdlog::info("node {}: runs the ingest of pipeline {} from {} committed offset(s)", st.me.self,
               p.name, r.committed.size());
  return std::make_pair(std::move(ing), to_frame<schema::IngestStarted>(mb));
}

/// Answers the waiting start of pipeline `pipeline`, if any: its previous ingest is gone.
void start_waiting(node_ptr self, uint32_t pipeline) {
  auto& st = self->state;
  auto i = st.waiting.find(pipeline);
  if (i == st.waiting.end())
    return;
  auto w = std::move(i->second);
  st.waiting.erase(i);
  auto started = start_ingest(self, w.request, std::move(w.next), std::move(w.coordinator));
  if (!started) {
    spdlog::error("node {}: cannot start the ingest of pipeline {}: {}", st.me.self,
                  st.cfg.pipeline.pipelines[pipeline].name, render(started.error()));
    w.rp.deliver(started.error());
    return;
  }
  w.rp.deliver(std::move(started->first), std::move(started->second));
}

caf::typed_response_promise<ingest_actor, frame> on_ingest(node_ptr self, const frame& request,
                                                           preprocess_actor next,
                                                           coordinator_actor coordinator) {
  auto& st = self->state;
  auto from = node_state::sender_node(self); // before the promise takes the sender over
  auto rp = self->make_response_promise<ingest_actor, frame>();
  const auto& coord = st.cfg.nodes[st.cfg.coordinator()].name;
  if (st.peer_name(from) != coord) {
    spdlog::warn("node {}: refused an ingest from {}: only node {} starts ingest", st.me.self,
                 caf::to_string(from), coord);
    rp.deliver(refused("not the coordinating node"));
    return rp;
  }
  ingest_request r;
  if (auto err = decode_ingest_request(request, st.cfg.pipeline.pipelines.size(), r)) {
    spdlog::warn("node {}: refused an ingest request: {}", st.me.self, render(err));
    rp.deliver(err);
    return rp;
  }
  if (!st.lk || !next || !coordinator ||
      r.shape != pipeline_shape_of(st.cfg.pipeline.pipelines[r.pipeline])) {
    spdlog::warn("node {}: refused the ingest of pipeline {}: {}", st.me.self, r.pipeline,
                 st.lk ? "this node's pipeline config differs" : "this node has no ingest role");
    rp.deliver(make_error(errc::bad_config,
                          "node " + st.me.self +
                            (st.lk ? " runs another pipeline config" : " has no ingest role")));
    return rp;
  }
  // One ingest per pipeline writes the lake: the one of an earlier generation goes first, and
  // this start waits for its down message.
  auto& w = st.waiting[r.pipeline];
  if (w.rp.pending())
    w.rp.deliver(make_error(errc::node_lost, "superseded by a newer start"));
  w = node_state::waiting_start{rp, r, std::move(next), std::move(coordinator)};
  auto old = st.ingests.find(r.pipeline);
  if (old == st.ingests.end())
    start_waiting(self, r.pipeline);
  else
    self->send_exit(old->second, caf::exit_reason::user_shutdown);
  return rp;
}

/// A monitored actor is gone: a partition, an ingest, or the preprocess actor an ingest sends
/// to (then that ingest goes too: its generation is over).
void on_down(node_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  st.held.erase(dm.source);
  if (auto u = st.by_updater.find(dm.source); u != st.by_updater.end()) {
    for (const auto& part : u->second)
      if (st.held.count(part))
        self->send_exit(part, caf::exit_reason::user_shutdown);
    st.by_updater.erase(u);
  }
  if (auto f = st.fed.find(dm.source); f != st.fed.end()) {
    auto i = st.ingests.find(f->second);
    st.fed.erase(f);
    if (i != st.ingests.end()) {
      spdlog::info("node {}: the preprocess of pipeline {} is gone ({}); its ingest stops",
                   st.me.self, st.cfg.pipeline.pipelines[i->first].name, render(dm.reason));
      self->send_exit(i->second, caf::exit_reason::user_shutdown);
    }
  }
  for (auto i = st.ingests.begin(); i != st.ingests.end(); ++i)
    if (i->second.address() == dm.source) {
      auto pipeline = i->first;
      st.ingests.erase(i);
      start_waiting(self, pipeline);
      return;
    }
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
  auto ingests = b.initIngests(static_cast<unsigned>(st.ingests.size()));
  k = 0;
  for (const auto& [pipeline, ing] : st.ingests)
    ingests.set(k++, st.cfg.pipeline.pipelines[pipeline].name);
  if (st.probe)
    progress_of(*st.probe, b.initPipelines(static_cast<unsigned>(st.cfg.pipeline.pipelines.size())),
                st.cfg.pipeline);
  return to_frame<schema::NodeStatus>(mb);
}

/// The node actor of node `c.self`; `probe` shows the run of the coordinating node (may be null).
node_actor::behavior_type node(node_ptr self, cluster_config c,
                               std::shared_ptr<shared_nonces> nonces,
                               std::shared_ptr<run_probe> probe, std::shared_ptr<lake> lk) {
  auto& st = self->state;
  st.me = identity_of(c, c.nodes[*c.self].name);
  st.cfg = std::move(c);
  st.nonces = std::move(nonces);
  st.probe = std::move(probe);
  st.lk = std::move(lk);
  self->set_down_handler([self](caf::down_msg& dm) { on_down(self, dm); });
  // The node stops: what it runs for others stops with it (a detached ingest that follows its
  // files would otherwise keep the process alive).
  // They end as a lost node's do (errc::node_lost), so that the coordinating node waits for
  // this node outside its restart budget, as when the node dies.
  self->set_exit_handler([self](caf::exit_msg& em) {
    auto gone = make_error(errc::node_lost, "node " + self->state.me.self + " stops");
    for (auto& [pipeline, ing] : self->state.ingests)
      self->send_exit(ing, gone);
    for (auto& [addr, at] : self->state.held)
      self->send_exit(addr, gone);
    self->quit(em.reason);
  });
  return {
    [self](hello_atom, const std::string& hello) { return on_hello(self, hello); },
    [self](auth_atom, const std::string& response) { return on_auth(self, response); },
    [self](place_atom, uint32_t pipeline, uint32_t part, uint64_t shape, std::string& snapshot,
           updater_actor updater) {
      return on_place(self, pipeline, part, shape, snapshot, std::move(updater));
    },
    [self](ingest_atom, frame& request, preprocess_actor next, coordinator_actor coordinator) {
      return on_ingest(self, request, std::move(next), std::move(coordinator));
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

/// Whether something accepts TCP connections at host:port within `timeout`. CAF 0.17 connects
/// blocking: to a host whose packets vanish (a cut link), its connect waits out the kernel's SYN
/// retries (about two minutes), holding the middleman and the end of the process. This probe,
/// non-blocking, keeps a dial within the failure timeout.
bool answers(const std::string& host, uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0)
    return false;
  bool ok = false;
  for (auto* ai = found; ai != nullptr && !ok; ai = ai->ai_next) {
    int fd =
      ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
      continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      ok = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 &&
           ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

/// Dials node `n` and runs the handshake both ways.
caf::expected<node_actor> dial(const dialer_context& d, size_t n) {
  const auto& to = d.c.nodes[n];
  if (!answers(to.host, to.port, d.timeout))
    return make_error(errc::node_lost, "no answer at " + to.address() + " within " +
                                         std::to_string(d.timeout.count()) + " ms");
  caf::scoped_actor self{d.sys};
  caf::expected<node_actor> peer = caf::error{};
  // CAF 0.17.6 starts a dialed connection with its last-seen time at the clock's epoch, so a
  // BASP heartbeat tick that comes before the peer's server handshake drops the connection as
  // timed out (`connection_timeout`). The slower the handshake (TLS on a loaded machine), the
  // likelier; the dial tries again while its time lasts.
  const auto deadline = std::chrono::steady_clock::now() + d.timeout;
  for (bool again = true; again;) {
    again = false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    self->request(dialer(d.sys, d.c), std::max(left, std::chrono::milliseconds(1)),
                  caf::connect_atom::value, to.host, to.port)
      .receive(
        [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
          if (ptr)
            peer = caf::actor_cast<node_actor>(std::move(ptr));
          else
            peer = make_error(errc::node_lost, "nothing published at " + to.address());
        },
        [&](caf::error& err) {
          again = err == caf::sec::connection_timeout &&
                  std::chrono::steady_clock::now() + std::chrono::milliseconds(10) < deadline;
          peer = make_error(errc::node_lost, d.sys.render(err));
        });
  }
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

  caf::error start(caf::actor_system& sys, supervisor_actor sup) override {
    local_ = sys.spawn(node, c_, nonces_, probe_, std::shared_ptr<lake>{});
    if (auto err = publish_node(sys, c_, self_, local_))
      return err;
    // Every failure_timeout (at least a second), the nodes the running generation could not use
    // are dialed; one that answers is used again from the next commit on.
    const auto every = std::max(timeout(), std::chrono::milliseconds(1000));
    watcher_ =
      sys.spawn<caf::detached>([this, sup, every](caf::event_based_actor* self) -> caf::behavior {
        self->delayed_send(self, every, tick_atom::value);
        return {[this, self, sup, every](tick_atom) {
          if (auto name = returned(self->system()))
            self->send(sup, rebalance_atom::value, "node " + *name + " is back");
          self->delayed_send(self, every, tick_atom::value);
        }};
      });
    return caf::none;
  }

  caf::expected<std::vector<aggregator_actor>> spawn_partitions(caf::actor_system& sys,
                                                                uint32_t pipeline,
                                                                std::vector<std::string> snapshots,
                                                                updater_actor updater) override {
    std::vector<bool> alive(c_.nodes.size(), false);
    for (size_t i = 0; i < c_.nodes.size(); ++i)
      alive[i] = i == self_ || (c_.nodes[i].aggregate && connected(sys, i));
    {
      std::lock_guard<std::mutex> lock{missing_mu_};
      missing_.clear();
      for (size_t i = 0; i < c_.nodes.size(); ++i)
        if (c_.nodes[i].aggregate && !alive[i])
          missing_.insert(i);
    }
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
    if (fault::hit("cluster.placed")) // fault injection: placed, not linked by preprocess yet
      return give_up(fault::injected("cluster.placed"));
    return out;
  }

  bool remote_ingest() const override { return c_.ingest() != self_; }

  void bind_store(std::string identity, bool holds_data) override {
    store_identity_ = std::move(identity);
    holds_data_ = holds_data;
  }

  caf::expected<ingest_actor> spawn_ingest(caf::actor_system& sys, uint32_t pipeline,
                                           const offset_list& committed, bool final_flush,
                                           preprocess_actor next,
                                           coordinator_actor coordinator) override {
    const size_t n = c_.ingest();
    const auto& name = c_.nodes[n].name;
    if (!connected(sys, n))
      return make_error(errc::node_lost, "the ingest node " + name + " cannot be reached");
    capnp::MallocMessageBuilder mb;
    auto b = mb.initRoot<schema::IngestRequest>();
    b.setPipeline(pipeline);
    b.setShape(pipeline_shape_of(c_.pipeline.pipelines.at(pipeline)));
    b.setStoreIdentity(capnp::Data::Reader(
      reinterpret_cast<const capnp::byte*>(store_identity_.data()), store_identity_.size()));
    b.setWarehouseHoldsData(holds_data_);
    auto offs = b.initCommitted(static_cast<unsigned>(committed.size()));
    for (unsigned k = 0; k < offs.size(); ++k) {
      offs[k].setSource(committed[k].first);
      offs[k].setOffset(committed[k].second);
    }
    b.setFinalFlush(final_flush);
    caf::scoped_actor self{sys};
    caf::expected<ingest_actor> out = caf::error{};
    // Resolving the inputs reads the first bytes of every file: more than a round trip.
    const auto wait = std::max(10 * timeout(), std::chrono::milliseconds(10000));
    self
      ->request(peers_[n], wait, ingest_atom::value, to_frame<schema::IngestRequest>(mb),
                std::move(next), std::move(coordinator))
      .receive(
        [&](ingest_actor& a, frame& started) {
          std::vector<std::pair<uint32_t, std::string>> keys;
          auto err = decode_frame<schema::IngestStarted>(started, [&](auto r) {
            for (auto src : r.getSources())
              keys.emplace_back(src.getId(), src.getKey().cStr());
          });
          if (err) {
            caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
            out = make_error(errc::node_lost, "node " + name + ": " + render(err));
            return;
          }
          std::lock_guard<std::mutex> lock{keys_mu_};
          keys_[pipeline] = std::move(keys);
          out = std::move(a);
        },
        [&](caf::error& err) {
          // The node's own verdict (its store, its inputs, its config) keeps its code: a lake
          // of another store or a missing input ends the run as it would on one node.
          if (err.category() == caf::atom("weir") &&
              static_cast<errc>(err.code()) != errc::node_lost)
            out =
              make_error(static_cast<errc>(err.code()), "ingest node " + name + ": " + render(err));
          else
            out = make_error(errc::node_lost,
                             "the ingest node " + name + " did not start ingest: " + render(err));
        });
    if (!out && static_cast<errc>(out.error().code()) == errc::node_lost)
      peers_.erase(n);
    return out;
  }

  std::vector<std::pair<uint32_t, std::string>> source_keys(uint32_t pipeline) override {
    std::lock_guard<std::mutex> lock{keys_mu_};
    auto i = keys_.find(pipeline);
    return i == keys_.end() ? std::vector<std::pair<uint32_t, std::string>>{} : i->second;
  }

  void stop(caf::actor_system& sys) override {
    if (!local_)
      return;
    caf::scoped_actor self{sys};
    if (watcher_) {
      self->send_exit(watcher_, caf::exit_reason::user_shutdown);
      self->wait_for(watcher_); // it calls into this object
      // A detached actor's thread ends only once no handle refers to it: the system waits for
      // that thread when it shuts down.
      watcher_ = caf::actor{};
    }
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

  /// The name of a node the running generation could not use that answers now, if any.
  std::optional<std::string> returned(caf::actor_system& sys) {
    std::vector<size_t> candidates;
    {
      std::lock_guard<std::mutex> lock{missing_mu_};
      candidates.assign(missing_.begin(), missing_.end());
    }
    for (auto n : candidates)
      if (dial({sys, c_, me_, *nonces_, timeout()}, n)) {
        std::lock_guard<std::mutex> lock{missing_mu_};
        missing_.erase(n);
        spdlog::info("node {}: node {} is back", c_.nodes[self_].name, c_.nodes[n].name);
        return c_.nodes[n].name;
      }
    return std::nullopt;
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
  std::string store_identity_;         ///< of the warehouse, for the ingest node's lake
  bool holds_data_ = false;            ///< the warehouse holds committed epochs
  caf::actor watcher_;                 ///< dials the missing nodes (returned)
  std::mutex missing_mu_;
  std::set<size_t> missing_; ///< aggregate nodes the running generation could not use
  std::mutex keys_mu_;       ///< source_keys is asked from the supervisor's thread
  std::map<uint32_t, std::vector<std::pair<uint32_t, std::string>>> keys_;
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
    for (auto i : s.getIngests())
      r.ingests.emplace_back(i.cStr());
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
  // The ingest node: its inputs are checked and its lake opened before it listens, so that a
  // missing input or an unusable store ends it at once, naming the file.
  const auto& me = c.nodes[*c.self];
  std::optional<store_lock> lock;
  std::shared_ptr<lake> lk;
  if (me.ingest) {
    if (auto err = check_inputs(c.pipeline))
      return err;
    std::error_code ec;
    std::filesystem::create_directories(me.store, ec);
    if (ec)
      return make_error(errc::store_io,
                        "cannot create store directory " + me.store + ": " + ec.message());
    auto l = store_lock::acquire(me.store);
    if (!l)
      return l.error();
    lock.emplace(std::move(*l));
    auto opened = lake::open(me.store, c.pipeline.runtime.durable);
    if (!opened)
      return opened.error();
    lk = std::make_shared<lake>(std::move(*opened));
  }
  caf::actor_system sys{cfg};
  auto n = sys.spawn(node, c, std::make_shared<shared_nonces>(), std::shared_ptr<run_probe>{}, lk);
  if (auto err = publish_node(sys, c, *c.self, n))
    return err;
  while (!(opts.stop && opts.stop->load()))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  spdlog::info("node {} stops", c.nodes[*c.self].name);
  caf::anon_send_exit(n, caf::exit_reason::user_shutdown);
  // What it ran for the cluster ends with that; the actor system then shuts down. A stop must end
  // the process in bounded time even if something in it does not end: after stop_limit it exits
  // as by kill -9, which loses nothing (every store write is a committed transaction).
  const std::string name = c.nodes[*c.self].name;
  std::thread([name] {
    std::this_thread::sleep_for(stop_limit);
    spdlog::warn("node {}: not stopped after {} s; exiting now", name, stop_limit.count());
    spdlog::default_logger()->flush();
    std::_Exit(0);
  }).detach();
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
