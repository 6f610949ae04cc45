#include <catch2/catch.hpp>

#include <string>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cluster/auth.hpp"

using namespace weir::cluster;

namespace {

const std::string secret = "0123456789abcdef0123456789abcdef-the-cluster-secret";

identity id(const std::string& self, const std::string& key = secret,
            const std::string& cluster = "prod") {
  return {cluster, self, key, {"a", "b", "c"}};
}

/// The nonce at the end of a hello (its last 32 bytes).
nonce nonce_of(const std::string& hello) {
  nonce n{};
  REQUIRE(hello.size() > nonce_bytes);
  std::copy(hello.end() - nonce_bytes, hello.end(), n.begin());
  return n;
}

/// HMAC-SHA256 as the header specifies it, the input laid out here from scratch:
/// tag, then cluster, challenger and responder each after a length byte, then both nonces.
std::string reference_response(const std::string& key, const std::string& cluster,
                               const std::string& challenger, const std::string& responder,
                               const nonce& cn, const nonce& rn) {
  std::string data = "weir-cluster-v1";
  for (const auto* s : {&cluster, &challenger, &responder}) {
    data.push_back(static_cast<char>(s->size()));
    data += *s;
  }
  data.append(cn.begin(), cn.end());
  data.append(rn.begin(), rn.end());
  unsigned char out[32];
  unsigned int size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &size);
  REQUIRE(size == 32);
  return std::string{reinterpret_cast<char*>(out), size};
}

/// Runs the exchange between two handshakes as the transport would: hellos cross, each side
/// answers the other's hello, then each verifies the other's answer.
void exchange(handshake& x, handshake& y) {
  auto rx = x.feed(y.hello());
  auto ry = y.feed(x.hello());
  if (!rx.reply.empty())
    y.feed(rx.reply);
  if (!ry.reply.empty())
    x.feed(ry.reply);
}

} // namespace

TEST_CASE("the right secret is accepted both ways") {
  auto ia = id("a");
  auto ib = id("b");
  nonce_registry ra, rb;
  handshake a{ia, ra}, b{ib, rb};
  CHECK(a.current() == handshake::state::awaiting_hello);
  // The hello holds version 1, the cluster and node names with their lengths, the nonce.
  CHECK(a.hello().substr(0, 8) == std::string{"\x01\x04prod\x01"
                                              "a",
                                              8});
  CHECK(a.hello().size() == 8 + nonce_bytes);
  CHECK(nonce_of(a.hello()) != nonce_of(b.hello()));
  auto from_a = a.feed(b.hello());
  CHECK(from_a.refused == refusal::none);
  CHECK(a.current() == handshake::state::awaiting_response);
  CHECK(a.peer() == "b");
  // a answers b's challenge: b challenged, a responds.
  CHECK(from_a.reply ==
        reference_response(secret, "prod", "b", "a", nonce_of(b.hello()), nonce_of(a.hello())));
  auto from_b = b.feed(a.hello());
  CHECK(from_b.refused == refusal::none);
  CHECK(b.feed(from_a.reply).refused == refusal::none);
  CHECK(a.feed(from_b.reply).refused == refusal::none);
  CHECK(a.accepted());
  CHECK(b.accepted());
  CHECK(a.reason() == refusal::none);
  // The same pair on a new connection: new nonces, accepted again.
  handshake a2{ia, ra}, b2{ib, rb};
  exchange(a2, b2);
  CHECK(a2.accepted());
  CHECK(b2.accepted());
  // A handshake message after acceptance is out of order.
  CHECK(a.feed(from_b.reply).refused == refusal::out_of_order);
}

TEST_CASE("a wrong secret is refused by both sides") {
  auto ia = id("a");
  auto ib = id("b", "another-secret-of-thirty-two-bytes-or-more");
  nonce_registry ra, rb;
  handshake a{ia, ra}, b{ib, rb};
  exchange(a, b);
  CHECK(a.refused());
  CHECK(a.reason() == refusal::bad_response);
  CHECK(a.detail() == "node \"b\" does not prove the cluster secret");
  CHECK(b.refused());
  CHECK(b.reason() == refusal::bad_response);
}

TEST_CASE("a peer of another cluster, or with an unknown name, is refused") {
  nonce_registry ra, rx;
  auto ia = id("a");
  auto other = id("b", secret, "staging");
  handshake a{ia, ra}, x{other, rx};
  auto r = a.feed(x.hello());
  CHECK(r.refused == refusal::wrong_cluster);
  CHECK(r.reply.empty());
  CHECK(a.detail() == "node \"b\" belongs to cluster \"staging\"");
  // A refusal is final.
  CHECK(a.feed(x.hello()).refused == refusal::wrong_cluster);

  auto stranger = id("z");
  handshake a2{ia, ra}, z{stranger, rx};
  CHECK(a2.feed(z.hello()).refused == refusal::unknown_node);
  CHECK(a2.detail() == "no node \"z\" in this cluster");
  // A peer that claims to be this node.
  auto twin = id("a");
  handshake a3{ia, ra}, t{twin, rx};
  CHECK(a3.feed(t.hello()).refused == refusal::unknown_node);
}

TEST_CASE("a replayed hello or response is refused") {
  auto ia = id("a");
  auto ib = id("b");
  nonce_registry ra, rb;
  handshake a1{ia, ra}, b1{ib, rb};
  // Recorded by an eavesdropper: b's hello and b's answer to a1's challenge.
  auto b_hello = b1.hello();
  a1.feed(b_hello);
  auto b_answer = b1.feed(a1.hello()).reply;
  CHECK(a1.feed(b_answer).refused == refusal::none);
  CHECK(a1.accepted());

  // The same hello again: its nonce was seen.
  handshake a2{ia, ra};
  CHECK(a2.feed(b_hello).refused == refusal::replayed_nonce);

  // The old answer against a new challenge, behind a hello with a fresh nonce.
  handshake a3{ia, ra};
  nonce fresh{};
  fresh.fill(7);
  CHECK(a3.feed(encode_hello("prod", "b", fresh)).refused == refusal::none);
  CHECK(a3.feed(b_answer).refused == refusal::bad_response);

  // A node that restarted forgot what it saw: the old hello passes, the old answer does not.
  nonce_registry restarted;
  handshake a4{ia, restarted};
  CHECK(a4.feed(b_hello).refused == refusal::none);
  CHECK(a4.feed(b_answer).refused == refusal::bad_response);

  // a's own challenge reflected back to it (as a hello of "b") is a replay.
  handshake a5{ia, ra};
  CHECK(a5.feed(encode_hello("prod", "b", nonce_of(a5.hello()))).refused ==
        refusal::replayed_nonce);
}

TEST_CASE("truncated, oversized and garbled messages are refused") {
  auto ia = id("a");
  auto ib = id("b");
  nonce_registry ra, rb;
  {
    handshake a{ia, ra}, b{ib, rb};
    a.feed(b.hello());
    auto answer = b.feed(a.hello()).reply;
    CHECK(a.feed(answer.substr(0, 31)).refused == refusal::malformed);
    CHECK(a.detail() == "a response of 31 bytes instead of 32");
  }
  {
    handshake a{ia, ra}, b{ib, rb};
    a.feed(b.hello());
    CHECK(a.feed(b.feed(a.hello()).reply + "x").refused == refusal::malformed);
  }
  for (size_t cut = 0; cut < 8 + nonce_bytes; ++cut) {
    handshake a{ia, ra}, b{ib, rb};
    INFO(cut);
    CHECK(a.feed(b.hello().substr(0, cut)).refused == refusal::malformed);
  }
  handshake a{ia, ra}, b{ib, rb};
  CHECK(a.feed(b.hello() + "extra").refused == refusal::malformed);
  auto bad_version = b.hello();
  bad_version[0] = 2;
  handshake a2{ia, ra};
  CHECK(a2.feed(bad_version).refused == refusal::malformed);
  auto zero_name = b.hello();
  zero_name[1] = 0;
  handshake a3{ia, ra};
  CHECK(a3.feed(zero_name).refused == refusal::malformed);
}

TEST_CASE("the nonce registry forgets the oldest beyond its capacity") {
  nonce_registry r{2};
  nonce n1{}, n2{}, n3{};
  n1.fill(1);
  n2.fill(2);
  n3.fill(3);
  CHECK(r.remember(n1));
  CHECK_FALSE(r.remember(n1));
  CHECK(r.remember(n2));
  CHECK(r.remember(n3)); // n1 forgotten
  CHECK(r.remember(n1));
  CHECK_FALSE(r.remember(n3));
}
