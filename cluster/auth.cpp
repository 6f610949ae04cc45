#include "cluster/auth.hpp"

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <utility>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "cluster/config.hpp"

namespace weir::cluster {

namespace {

constexpr uint8_t hello_version = 1;
constexpr std::string_view response_tag = "weir-cluster-v1";

/// Appends a name with its length in one byte (names are at most max_name_bytes).
void put_name(std::string& out, const std::string& name) {
  if (name.empty() || name.size() > max_name_bytes)
    throw std::invalid_argument("cluster or node name of " + std::to_string(name.size()) +
                                " bytes; 1 to 255 are allowed");
  out.push_back(static_cast<char>(name.size()));
  out += name;
}

void put_nonce(std::string& out, const nonce& n) {
  out.append(reinterpret_cast<const char*>(n.data()), n.size());
}

/// Reads what put_name wrote; false when the bytes end too soon.
bool take_name(std::string_view& in, std::string& name) {
  if (in.empty())
    return false;
  auto size = static_cast<uint8_t>(in[0]);
  if (size == 0 || in.size() < 1u + size)
    return false;
  name.assign(in.substr(1, size));
  in.remove_prefix(1u + size);
  return true;
}

struct hello_fields {
  std::string cluster;
  std::string node;
  nonce n{};
};

/// A hello is exactly: version, cluster, node, nonce; nothing more, nothing less.
bool decode_hello(std::string_view in, hello_fields& out) {
  if (in.empty() || static_cast<uint8_t>(in[0]) != hello_version)
    return false;
  in.remove_prefix(1);
  if (!take_name(in, out.cluster) || !take_name(in, out.node) || in.size() != nonce_bytes)
    return false;
  std::copy(in.begin(), in.end(), out.n.begin());
  return true;
}

nonce fresh_nonce() {
  nonce n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1)
    throw std::runtime_error("RAND_bytes failed: no randomness for a cluster handshake nonce");
  return n;
}

} // namespace

const char* to_string(refusal x) {
  static const char* names[] = {"none",           "malformed",    "wrong_cluster", "unknown_node",
                                "replayed_nonce", "bad_response", "out_of_order"};
  auto i = static_cast<size_t>(x);
  return i < std::size(names) ? names[i] : "?";
}

identity identity_of(const cluster_config& c, const std::string& self) {
  identity out{c.name, self, c.secret, {}};
  for (const auto& n : c.nodes)
    out.nodes.push_back(n.name);
  out.nodes.push_back(status_client);
  return out;
}

bool nonce_registry::remember(const nonce& n) {
  if (!seen_.insert(n).second)
    return false;
  order_.push_back(n);
  if (order_.size() > capacity_) {
    seen_.erase(order_.front());
    order_.pop_front();
  }
  return true;
}

std::array<uint8_t, response_bytes>
auth_response(const std::string& secret, const std::string& cluster, const std::string& challenger,
              const std::string& responder, const nonce& challenger_nonce,
              const nonce& responder_nonce) {
  std::string data{response_tag};
  put_name(data, cluster);
  put_name(data, challenger);
  put_name(data, responder);
  put_nonce(data, challenger_nonce);
  put_nonce(data, responder_nonce);
  std::array<uint8_t, response_bytes> out{};
  unsigned int size = 0;
  auto ok =
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &size);
  if (ok == nullptr || size != out.size())
    throw std::runtime_error("HMAC-SHA256 failed");
  return out;
}

std::string encode_hello(const std::string& cluster, const std::string& node, const nonce& n) {
  std::string out;
  out.push_back(static_cast<char>(hello_version));
  put_name(out, cluster);
  put_name(out, node);
  put_nonce(out, n);
  return out;
}

handshake::handshake(identity me, nonce_registry& seen)
  : me_(std::move(me))
  , seen_(seen)
  , own_nonce_(fresh_nonce()) {
  seen_.remember(own_nonce_);
  hello_ = encode_hello(me_.cluster, me_.self, own_nonce_);
}

handshake::outcome handshake::feed(std::string_view message) {
  switch (state_) {
    case state::awaiting_hello:
      return on_hello(message);
    case state::awaiting_response:
      return on_response(message);
    case state::accepted:
      return refuse(refusal::out_of_order, "a handshake message after the peer was accepted");
    case state::refused:
      break;
  }
  return {reason_, {}};
}

handshake::outcome handshake::on_hello(std::string_view message) {
  hello_fields h;
  if (!decode_hello(message, h))
    return refuse(refusal::malformed,
                  "a hello that does not parse (" + std::to_string(message.size()) + " bytes)");
  peer_ = h.node;
  if (h.cluster != me_.cluster)
    return refuse(refusal::wrong_cluster,
                  "node \"" + h.node + "\" belongs to cluster \"" + h.cluster + "\"");
  if (h.node == me_.self)
    return refuse(refusal::unknown_node, "the peer claims this node's own name");
  if (std::find(me_.nodes.begin(), me_.nodes.end(), h.node) == me_.nodes.end())
    return refuse(refusal::unknown_node, "no node \"" + h.node + "\" in this cluster");
  if (!seen_.remember(h.n))
    return refuse(refusal::replayed_nonce, "node \"" + h.node + "\" sent a nonce seen before");
  peer_nonce_ = h.n;
  auto answer = auth_response(me_.secret, me_.cluster, peer_, me_.self, peer_nonce_, own_nonce_);
  state_ = state::awaiting_response;
  return {refusal::none, std::string{answer.begin(), answer.end()}};
}

handshake::outcome handshake::on_response(std::string_view message) {
  if (message.size() != response_bytes)
    return refuse(refusal::malformed, "a response of " + std::to_string(message.size()) +
                                        " bytes instead of " + std::to_string(response_bytes));
  auto expected = auth_response(me_.secret, me_.cluster, me_.self, peer_, own_nonce_, peer_nonce_);
  if (CRYPTO_memcmp(expected.data(), message.data(), expected.size()) != 0)
    return refuse(refusal::bad_response,
                  "node \"" + peer_ + "\" does not prove the cluster secret");
  state_ = state::accepted;
  return {};
}

handshake::outcome handshake::refuse(refusal why, std::string detail) {
  state_ = state::refused;
  reason_ = why;
  detail_ = std::move(detail);
  return {why, {}};
}

} // namespace weir::cluster
