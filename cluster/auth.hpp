#pragma once

/// The mutual challenge and response two nodes go through before either accepts a pipeline
/// message from the other: each proves it holds the cluster secret, without sending it.
///
/// On a new connection both sides send a hello at once (`handshake::hello`): their cluster
/// name, their node name and a fresh 32-byte nonce from RAND_bytes, the challenge. On the
/// peer's hello each side answers with
///
///     HMAC-SHA256(secret, "weir-cluster-v1" | cluster | challenger | responder
///                         | challenger nonce | responder nonce)
///
/// where the challenger is the peer (whose nonce is answered) and the responder this node; each
/// field is prefixed with its length, so that no two field lists give the same bytes. The peer's
/// answer is checked the same way with the roles swapped, in constant time (CRYPTO_memcmp).
/// Naming both nodes in their roles defeats reflection (sending a node its own challenge back),
/// and both nonces make every answer good for one connection only. A peer is accepted once its
/// answer is verified; anything else refuses it with a reason, and the connection is dropped.
///
/// The handshake is a plain state machine over bytes, with no I/O of its own: the node actor
/// carries its messages (as byte strings) and drives it.

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace weir::cluster {

struct cluster_config;

constexpr size_t nonce_bytes = 32;
constexpr size_t response_bytes = 32; ///< HMAC-SHA256
using nonce = std::array<uint8_t, nonce_bytes>;

/// Why a peer was refused.
enum class refusal : uint8_t {
  none = 0,
  malformed,      ///< a message that does not parse: truncated, oversized, wrong version
  wrong_cluster,  ///< the peer belongs to another cluster
  unknown_node,   ///< the peer's name is not a node of this cluster (or is this node's own)
  replayed_nonce, ///< the peer's nonce was seen before: a replayed hello
  bad_response,   ///< the peer's answer does not prove the secret
  out_of_order,   ///< a message the handshake does not expect now
};

const char* to_string(refusal x);

/// What a node knows to authenticate peers: its cluster, its own name, the secret and the
/// names of the other nodes.
struct identity {
  std::string cluster;
  std::string self;
  std::string secret;
  std::vector<std::string> nodes; ///< every node of the cluster (this one included)
};

/// The name a tool (`weir status --cluster`) goes by in the handshake. No node can have it ('@'
/// is not allowed in node names), and a node answers such a peer's status requests only.
inline constexpr const char* status_client = "@status";

/// The identity of node `self` of cluster `c` (or of a tool, with self = status_client). The
/// peers it accepts are the nodes of `c` and status_client.
identity identity_of(const cluster_config& c, const std::string& self);

/// The nonces a node has issued and received lately, shared by all its handshakes: a hello
/// whose nonce is among them is a replay (or a reflection of this node's own challenge).
class nonce_registry {
public:
  explicit nonce_registry(size_t capacity = 65536)
    : capacity_(capacity) {}

  /// Remembers `n`; false when it was remembered already.
  bool remember(const nonce& n);

private:
  size_t capacity_;
  std::set<nonce> seen_;
  std::deque<nonce> order_; ///< oldest first, for forgetting beyond capacity
};

/// One connection's handshake. Construct it when the connection opens, send hello(), feed
/// every message of the peer to `feed` until `accepted()` or `refused()`; pass pipeline
/// messages on only once accepted().
class handshake {
public:
  enum class state : uint8_t { awaiting_hello, awaiting_response, accepted, refused };

  /// What feeding a message gave: a reply to send to the peer (empty: none), or a refusal.
  struct outcome {
    refusal refused = refusal::none;
    std::string reply;
  };

  /// Draws this side's nonce (RAND_bytes) and remembers it in `seen`, which must outlive the
  /// handshake (it belongs to the node, a handshake to one connection).
  handshake(identity me, nonce_registry& seen);

  /// The hello to send first: version, cluster, node name, nonce.
  const std::string& hello() const { return hello_; }

  /// Takes the peer's next message: its hello (answered with the response to send) or its
  /// response (verified). A refusal is final.
  outcome feed(std::string_view message);

  state current() const { return state_; }
  bool accepted() const { return state_ == state::accepted; }
  bool refused() const { return state_ == state::refused; }

  /// The peer's node name once its hello was read.
  const std::string& peer() const { return peer_; }

  /// Why the peer was refused (refusal::none unless refused()), and a sentence for the log.
  refusal reason() const { return reason_; }
  const std::string& detail() const { return detail_; }

private:
  outcome on_hello(std::string_view message);
  outcome on_response(std::string_view message);
  outcome refuse(refusal why, std::string detail);

  identity me_;
  nonce_registry& seen_;
  nonce own_nonce_{};
  nonce peer_nonce_{};
  std::string hello_;
  std::string peer_;
  state state_ = state::awaiting_hello;
  refusal reason_ = refusal::none;
  std::string detail_;
};

/// The answer `responder` gives to `challenger`'s nonce (exposed for tests and tools).
std::array<uint8_t, response_bytes>
auth_response(const std::string& secret, const std::string& cluster, const std::string& challenger,
              const std::string& responder, const nonce& challenger_nonce,
              const nonce& responder_nonce);

/// A hello message with the given fields (exposed for tests and tools).
std::string encode_hello(const std::string& cluster, const std::string& node, const nonce& n);

} // namespace weir::cluster
