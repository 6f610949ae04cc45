#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "actors/core/error.hpp"
#include "cluster/config.hpp"
#include "cluster_test_support.hpp"
#include "test_support.hpp"

using namespace weir;
using namespace weir::cluster;

namespace {

const std::string good_secret(64, 'f');

/// Keys and certificates made with OpenSSL's library: a CA, and nodes it signs.
struct pki {
  using key_ptr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
  using cert_ptr = std::unique_ptr<X509, decltype(&X509_free)>;

  key_ptr ca_key{EVP_EC_gen("P-256"), EVP_PKEY_free};
  cert_ptr ca{sign("weir test CA", ca_key.get(), true), X509_free};

  /// A certificate for `key`, signed by the CA (self-signed when it is the CA's).
  X509* sign(const std::string& cn, EVP_PKEY* key, bool is_ca) const {
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), is_ca ? 1 : 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(is_ca ? x : ca.get()));
    if (is_ca) {
      X509V3_CTX ctx;
      X509V3_set_ctx_nodb(&ctx);
      X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
      X509_EXTENSION* e =
        X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints, "critical,CA:TRUE");
      X509_add_ext(x, e, -1);
      X509_EXTENSION_free(e);
    }
    X509_sign(x, is_ca ? key : ca_key.get(), EVP_sha256());
    return x;
  }

  /// Writes the CA certificate to `ca_path`.
  void write_ca(const std::string& ca_path) const {
    FILE* f = std::fopen(ca_path.c_str(), "w");
    PEM_write_X509(f, ca.get());
    std::fclose(f);
  }

  /// Writes a new key (mode 600) and its certificate, signed by the CA, for node `name`.
  void write_node(const std::string& name, const std::string& cert_path,
                  const std::string& key_path) const {
    key_ptr key{EVP_EC_gen("P-256"), EVP_PKEY_free};
    cert_ptr cert{sign(name, key.get(), false), X509_free};
    FILE* c = std::fopen(cert_path.c_str(), "w");
    PEM_write_X509(c, cert.get());
    std::fclose(c);
    FILE* k = std::fopen(key_path.c_str(), "w");
    PEM_write_PrivateKey(k, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(k);
    ::chmod(key_path.c_str(), 0600);
  }
};

/// A directory with what a cluster config refers to: pipeline.toml, a private secret file, and
/// a CA (ca.pem) with a key and a certificate for every node (a.pem, a.key, ...).
struct cluster_dir {
  test::temp_dir dir{"weir_cluster_config_"};
  pki certs;

  cluster_dir() {
    write("pipeline.toml", test::pipeline_toml());
    write_private("secret", good_secret + "\n");
    certs.write_ca(path("ca.pem"));
    for (std::string n : {"a", "b", "c"})
      certs.write_node(n, path(n + ".pem"), path(n + ".key"));
  }

  std::string path(const std::string& name) const { return (dir.path / name).string(); }

  void write(const std::string& name, const std::string& text) const {
    test::write_file(dir.path / name, text);
    ::chmod(path(name).c_str(), 0644);
  }

  void write_private(const std::string& name, const std::string& text) const {
    test::write_file(dir.path / name, text);
    ::chmod(path(name).c_str(), 0600);
  }

  /// Parses `text` as CLUSTER.toml of this directory.
  caf::expected<cluster_config> parse(const std::string& text, const std::string& self = {}) {
    return parse_cluster_config(text, path("CLUSTER.toml"), self);
  }

  /// The error text of parsing `text` ("" when it parses); it must be a config error.
  std::string error_of(const std::string& text, const std::string& self = {},
                       errc code = errc::bad_config) {
    auto r = parse(text, self);
    if (r)
      return "";
    CHECK(test::has_code(r.error(), code));
    return render(r.error());
  }
};

/// The cluster of docs/cluster.md on three nodes, TLS on, each node with its own certificate.
std::string three_nodes(const std::string& cluster_extra = "", const std::string& c_extra = "") {
  return "[cluster]\n"                                            // 1
         "name = \"prod\"\n"                                      // 2
         "pipeline = \"pipeline.toml\"\n"                         // 3
         "secret_file = \"secret\"\n"                             // 4
         "heartbeat = \"250ms\"\n"                                // 5
         "failure_timeout = \"3s\"\n"                             // 6
         + cluster_extra +                                        //
         "[cluster.tls]\n"                                        // 7
         "ca = \"ca.pem\"\n"                                      // 8
         "[[node]]\n"                                             // 9
         "name = \"a\"\n"                                         // 10
         "address = \"10.0.0.1:7700\"\n"                          // 11
         "store = \"stores/a\"\n"                                 // 12
         "roles = [\"coordinator\", \"ingest\", \"aggregate\"]\n" // 13
         "certificate = \"a.pem\"\n"                              // 14
         "key = \"a.key\"\n"                                      // 15
         "[[node]]\n"                                             // 16
         "name = \"b\"\n"                                         // 17
         "address = \"10.0.0.2:7700\"\n"                          // 18
         "store = \"/var/lib/weir/b\"\n"                          // 19
         "roles = [\"aggregate\"]\n"                              // 20
         "certificate = \"b.pem\"\n"                              // 21
         "key = \"b.key\"\n"                                      // 22
         "[[node]]\n"                                             // 23
         "name = \"c\"\n"                                         // 24
         "address = \"[fd00::3]:7701\"\n"                         // 25
         "store = \"stores/c\"\n"                                 // 26
         "spare = true\n"                                         // 27
         "certificate = \"c.pem\"\n"                              // 28
         "key = \"c.key\"\n"                                      // 29
         + c_extra;
}

/// One node on loopback without TLS: the single-node case.
std::string one_node(const std::string& cluster_extra = "", const std::string& node_extra = "") {
  return "[cluster]\n"                                            // 1
         "name = \"dev\"\n"                                       // 2
         "pipeline = \"pipeline.toml\"\n"                         // 3
         "secret_file = \"secret\"\n"                             // 4
         + cluster_extra +                                        //
         "[cluster.tls]\n"                                        // 5
         "insecure = true\n"                                      // 6
         "[[node]]\n"                                             // 7
         "name = \"solo\"\n"                                      // 8
         "address = \"127.0.0.1:7700\"\n"                         // 9
         "store = \"store\"\n"                                    // 10
         "roles = [\"coordinator\", \"ingest\", \"aggregate\"]\n" // 11
         + node_extra;
}

/// `text` with the first occurrence of `from` replaced by `to`.
std::string replaced(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

/// An edit of a config text and the error it must give: the prefix after "FILE:" and a part.
struct bad_edit {
  std::string from, to, prefix, part;
};

void check_edits(cluster_dir& d, const std::string& text, const std::vector<bad_edit>& edits) {
  for (const auto& e : edits) {
    auto err = d.error_of(replaced(text, e.from, e.to));
    INFO(e.from << " -> " << e.to << ": " << err);
    CHECK(starts_with(err, d.path("CLUSTER.toml") + ":" + e.prefix));
    CHECK(err.find(e.part) != std::string::npos);
  }
}

#define CHECK_CLUSTER_ERROR(dir, text, prefix, part)                                               \
  do {                                                                                             \
    auto err_ = (dir).error_of(text);                                                              \
    INFO(err_);                                                                                    \
    CHECK(starts_with(err_, (dir).path("CLUSTER.toml") + ":" + prefix));                           \
    CHECK(err_.find(part) != std::string::npos);                                                   \
  } while (false)

} // namespace

TEST_CASE("a three-node config fills every field") {
  cluster_dir d;
  auto c = d.parse(three_nodes(), "b");
  INFO((c ? "" : render(c.error())));
  REQUIRE(c);
  CHECK(c->file == d.path("CLUSTER.toml"));
  CHECK(c->name == "prod");
  CHECK(c->pipeline_file == d.path("pipeline.toml"));
  REQUIRE(c->pipeline.pipelines.size() == 1);
  CHECK(c->pipeline.pipelines[0].partitions == 4);
  CHECK(c->secret == good_secret); // without the line break
  CHECK(c->heartbeat == 250'000);
  CHECK(c->failure_timeout == 3'000'000);
  CHECK_FALSE(c->insecure);
  REQUIRE(c->nodes.size() == 3);
  CHECK(c->self == std::optional<size_t>{1});
  const auto& a = c->nodes[0];
  CHECK(a.name == "a");
  CHECK(a.host == "10.0.0.1");
  CHECK(a.port == 7700);
  CHECK(a.address() == "10.0.0.1:7700");
  CHECK(a.store == d.path("stores/a"));
  CHECK((a.coordinator && a.ingest && a.aggregate && !a.spare));
  CHECK(a.tls.certificate == d.path("a.pem"));
  CHECK(a.tls.key == d.path("a.key"));
  CHECK(a.tls.ca == d.path("ca.pem"));
  const auto& b = c->nodes[1];
  CHECK(b.store == "/var/lib/weir/b");
  CHECK((!b.coordinator && !b.ingest && b.aggregate && !b.spare));
  const auto& sp = c->nodes[2];
  CHECK(sp.host == "fd00::3");
  CHECK(sp.port == 7701);
  CHECK(sp.address() == "[fd00::3]:7701");
  CHECK((sp.aggregate && sp.spare)); // roles default to ["aggregate"]
  CHECK(c->coordinator() == 0);
  CHECK(c->ingest() == 0);
  CHECK(c->find("c") == std::optional<size_t>{2});
  CHECK_FALSE(c->find("d"));
}

TEST_CASE("the single-node case on loopback, defaults") {
  cluster_dir d;
  auto c = d.parse(one_node(), "solo");
  INFO((c ? "" : render(c.error())));
  REQUIRE(c);
  CHECK(c->insecure);
  CHECK(c->heartbeat == 500'000);
  CHECK(c->failure_timeout == 2'000'000);
  CHECK(c->nodes[0].tls.certificate.empty());
  CHECK(c->self == std::optional<size_t>{0});
  // The cluster secret may come from the environment.
  ::setenv("WEIR_TEST_CLUSTER_SECRET", "0123456789abcdef0123456789abcdef\n", 1);
  auto env = d.parse(
    replaced(one_node(), "secret_file = \"secret\"", "secret_env = \"WEIR_TEST_CLUSTER_SECRET\""));
  REQUIRE(env);
  CHECK(env->secret == "0123456789abcdef0123456789abcdef");
}

TEST_CASE("a file that cannot be read") {
  cluster_dir d;
  auto r = load_cluster_config(d.path("nope.toml"));
  REQUIRE_FALSE(r);
  CHECK(test::has_code(r.error(), errc::bad_input));
  CHECK(render(r.error()).find("nope.toml") != std::string::npos);
  test::write_file(d.dir.path / "CLUSTER.toml", one_node());
  CHECK(load_cluster_config(d.path("CLUSTER.toml"), "solo"));
}

TEST_CASE("syntax errors and unknown keys") {
  cluster_dir d;
  CHECK_CLUSTER_ERROR(d, one_node("", "spare = = true\n"), "12: syntax: ", "");
  CHECK_CLUSTER_ERROR(d, one_node("seed = 3\n"), "5: cluster.seed: ",
                      "unknown key; allowed: name, pipeline, secret_file, secret_env, heartbeat, "
                      "failure_timeout, tls");
  CHECK_CLUSTER_ERROR(d, one_node("", "port = 3\n"), "12: node[0].port: ",
                      "allowed: name, address, store, roles, spare, certificate, key, ca");
  CHECK_CLUSTER_ERROR(d, replaced(one_node(), "insecure", "insecur"),
                      "6: cluster.tls.insecur: ", "allowed: certificate, key, ca, insecure");
  CHECK_CLUSTER_ERROR(d, "[[node]]\nname = \"a\"\n", "1: cluster: ", "missing required key");
  CHECK_CLUSTER_ERROR(d, replaced(one_node(), "name = \"dev\"\n", ""),
                      "1: cluster.name: ", "missing required key");
  CHECK_CLUSTER_ERROR(d, replaced(one_node(), "name = \"dev\"", "name = \"a b\""),
                      "2: cluster.name: ", "[A-Za-z0-9_.-]+");
  CHECK_CLUSTER_ERROR(
    d, replaced(one_node(), "name = \"solo\"", "name = \"" + std::string(256, 'n') + "\""),
    "8: node[0].name: ", "at most 255");
}

TEST_CASE("node names, addresses and roles") {
  cluster_dir d;
  CHECK_CLUSTER_ERROR(d,
                      three_nodes("", "[[node]]\nname = \"b\"\naddress = \"h:1\"\n"
                                      "store = \"s\"\ncertificate = \"a.pem\"\nkey = \"a.key\"\n"),
                      "31: node[3].name: ", "duplicate node name \"b\" (also node[1])");
  CHECK_CLUSTER_ERROR(d,
                      three_nodes("", "[[node]]\nname = \"d\"\naddress = \"10.0.0.2:7700\"\n"
                                      "store = \"s\"\ncertificate = \"a.pem\"\nkey = \"a.key\"\n"),
                      "32: node[3].address: ", "node \"b\" listens on 10.0.0.2:7700 already");
  for (auto bad : {"10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:77x", ":7700",
                   "fd00::1:7700", "a b:7700", ""}) {
    INFO(bad);
    CHECK_CLUSTER_ERROR(d, replaced(three_nodes(), "10.0.0.2:7700", bad),
                        "18: node[1].address: ", "\"HOST:PORT\" with a port from 1 to 65535");
  }
  CHECK(d.parse(replaced(three_nodes(), "10.0.0.2:7700", "b.example:65535")));
  CHECK_CLUSTER_ERROR(d, replaced(three_nodes(), "roles = [\"aggregate\"]", "roles = [\"ingest\"]"),
                      "16: node[1].roles: ", "a second ingest node (the first is \"a\")");
  CHECK_CLUSTER_ERROR(
    d,
    replaced(three_nodes(), "roles = [\"aggregate\"]", "roles = [\"aggregate\", \"coordinator\"]"),
    "16: node[1].roles: ", "a second coordinator node (the first is \"a\")");
  CHECK_CLUSTER_ERROR(d,
                      replaced(three_nodes(), "[\"coordinator\", \"ingest\", \"aggregate\"]",
                               "[\"ingest\", \"aggregate\"]"),
                      "9: node: ", "no node has the coordinator role");
  CHECK_CLUSTER_ERROR(d,
                      replaced(three_nodes(), "[\"coordinator\", \"ingest\", \"aggregate\"]",
                               "[\"coordinator\", \"aggregate\"]"),
                      "9: node: ", "no node has the ingest role");
  auto only_spare = replaced(three_nodes(), "[\"coordinator\", \"ingest\", \"aggregate\"]",
                             "[\"coordinator\", \"ingest\"]");
  only_spare = replaced(only_spare, "name = \"b\"", "name = \"b\"\nspare = true");
  CHECK_CLUSTER_ERROR(d, only_spare, "9: node: ", "no node has the aggregate role (spares aside)");
  CHECK_CLUSTER_ERROR(d, replaced(three_nodes(), "[\"aggregate\"]", "[\"aggregate\", \"x\"]"),
                      "20: node[1].roles[1]: ", "unknown role \"x\"");
  CHECK_CLUSTER_ERROR(d,
                      replaced(three_nodes(), "[\"aggregate\"]", "[\"aggregate\", \"aggregate\"]"),
                      "20: node[1].roles[1]: ", "given twice");
  CHECK_CLUSTER_ERROR(d, replaced(three_nodes(), "[\"aggregate\"]", "[]"),
                      "20: node[1].roles: ", "at least one");
  CHECK_CLUSTER_ERROR(d,
                      replaced(three_nodes(), "spare = true", "spare = true\nroles = [\"ingest\"]"),
                      "27: node[2].spare: ", "its roles must be [\"aggregate\"]");
  CHECK_CLUSTER_ERROR(d, replaced(three_nodes(), "store = \"stores/c\"\n", ""),
                      "23: node[2].store: ", "missing required key");
  CHECK_CLUSTER_ERROR(d,
                      "[cluster]\nname = \"x\"\npipeline = \"pipeline.toml\"\n"
                      "secret_file = \"secret\"\n",
                      "1: node: ", "at least one [[node]]");
  auto unknown_self = d.error_of(three_nodes(), "z");
  CHECK(unknown_self == d.path("CLUSTER.toml") + ": no node named \"z\"; the nodes are a, b, c");
}

TEST_CASE("durations") {
  cluster_dir d;
  check_edits(d, three_nodes(),
              {{"\"250ms\"", "\"0s\"", "5: cluster.heartbeat: ", "greater than zero"},
               {"\"3s\"", "\"250ms\"", "6: cluster.failure_timeout: ", "longer than heartbeat"},
               {"\"3s\"", "\"soon\"", "6: cluster.failure_timeout: ", "expected a duration"}});
  // Without failure_timeout, a heartbeat of at least its default (2s) is refused too.
  check_edits(d, replaced(three_nodes(), "failure_timeout = \"3s\"\n", ""),
              {{"\"250ms\"", "\"2s\"", "5: cluster.failure_timeout: ", "longer than heartbeat"}});
}

TEST_CASE("the cluster secret") {
  cluster_dir d;
  d.write_private("short", std::string(31, 'x') + "\n");
  d.write("shared", good_secret);
  ::chmod(d.path("shared").c_str(), 0640);
  ::unsetenv("WEIR_TEST_NO_SUCH_SECRET");
  check_edits(
    d, three_nodes(),
    {{"secret_file = \"secret\"\n", "", "1: cluster.secret_file: ", "missing: the cluster secret"},
     {"secret_file = \"secret\"\n", "secret_file = \"secret\"\nsecret_env = \"X\"\n",
      "5: cluster.secret_env: ", "not both"},
     {"\"secret\"", "\"nosecret\"",
      "4: cluster.secret_file: ", "secret file not found: " + d.path("nosecret")},
     {"\"secret\"", "\"short\"", "4: cluster.secret_file: ", "the secret is 31 bytes; at least 32"},
     {"\"secret\"", "\"shared\"",
      "4: cluster.secret_file: ", "is accessible by group or others (mode 0640): chmod 600"},
     {"secret_file = \"secret\"", "secret_env = \"WEIR_TEST_NO_SUCH_SECRET\"",
      "4: cluster.secret_env: ", "environment variable WEIR_TEST_NO_SUCH_SECRET is not set"}});
}

TEST_CASE("TLS settings and files") {
  cluster_dir d;
  // Every node needs a certificate, a key and a CA while TLS is on.
  CHECK_CLUSTER_ERROR(d, replaced(three_nodes(), "key = \"b.key\"\n", ""),
                      "16: node[1].key: ", "missing: TLS is on");
  CHECK_CLUSTER_ERROR(d, replaced(three_nodes(), "ca = \"ca.pem\"\n", ""),
                      "8: node[0].ca: ", "set cluster.tls.ca or node[0].ca");
  // Files are looked at for the node this process runs as only.
  std::filesystem::remove(d.dir.path / "b.key");
  CHECK(d.parse(three_nodes(), "a"));
  CHECK(d.parse(three_nodes()));
  auto missing_key = d.error_of(three_nodes(), "b");
  CHECK(starts_with(missing_key, d.path("CLUSTER.toml") + ":22: node[1].key: "));
  CHECK(missing_key.find("private key not found: " + d.path("b.key")) != std::string::npos);
  d.write("b.key", "key"); // 0644
  auto open_key = d.error_of(three_nodes(), "b");
  CHECK(starts_with(open_key, d.path("CLUSTER.toml") + ":22: node[1].key: "));
  CHECK(open_key.find("accessible by group or others (mode 0644)") != std::string::npos);
  std::filesystem::remove(d.dir.path / "ca.pem");
  auto no_ca = d.error_of(three_nodes(), "a");
  CHECK(starts_with(no_ca, d.path("CLUSTER.toml") + ":8: cluster.tls.ca: "));
  CHECK(no_ca.find("file not found: " + d.path("ca.pem")) != std::string::npos);
  // insecure = true only on loopback, and with no TLS file named.
  CHECK_CLUSTER_ERROR(
    d, replaced(one_node(), "127.0.0.1", "10.0.0.1"), "6: cluster.tls.insecure: ",
    "only for nodes on loopback addresses; node \"solo\" listens on 10.0.0.1:7700");
  CHECK(d.parse(replaced(one_node(), "127.0.0.1", "[::1]")));
  CHECK(d.parse(replaced(one_node(), "127.0.0.1", "localhost")));
  CHECK_CLUSTER_ERROR(d, one_node("", "certificate = \"a.pem\"\n"),
                      "12: node[0].certificate: ", "TLS is off (cluster.tls.insecure = true)");
}

TEST_CASE("the pipeline config the cluster runs") {
  cluster_dir d;
  d.write("auto.toml", replaced(test::pipeline_toml(), "partitions = 4\n", ""));
  CHECK_CLUSTER_ERROR(
    d, replaced(one_node(), "pipeline.toml", "auto.toml"), "3: cluster.pipeline: ",
    "pipeline[0] (\"merchant_hourly\") sets no partitions; a cluster needs a fixed count");
  // Errors of the pipeline config name the pipeline config.
  auto bad_text = replaced(test::pipeline_toml(), "size = \"1h\"", "size = \"0s\"");
  d.write("bad.toml", bad_text);
  auto bad = d.error_of(replaced(one_node(), "pipeline.toml", "bad.toml"));
  CHECK(starts_with(bad, d.path("bad.toml") + ":" +
                           std::to_string(test::line_in(bad_text, "size =")) +
                           ": pipeline[0].window.size: "));
  auto missing =
    d.error_of(replaced(one_node(), "pipeline.toml", "none.toml"), "", errc::bad_input);
  CHECK(missing.find(d.path("none.toml")) != std::string::npos);
}

TEST_CASE("TLS files that do not fit together") {
  cluster_dir d;
  auto config = three_nodes();
  REQUIRE(d.parse(config, "a"));
  // The error names the setting of the file at fault: a's certificate and key are on lines
  // 14 and 15, the CA on line 8.
  auto error_for_a = [&] { return d.error_of(config, "a"); };
  auto prefix = [&](int line, const char* key) {
    return d.path("CLUSTER.toml") + ":" + std::to_string(line) + ": " + key + ": ";
  };
  SECTION("the key of another node") {
    std::filesystem::copy_file(d.path("b.key"), d.path("a.key"),
                               std::filesystem::copy_options::overwrite_existing);
    auto err = error_for_a();
    CHECK(starts_with(err, prefix(15, "node[0].key")));
    CHECK(err.find(d.path("a.key") + " is not the key of certificate " + d.path("a.pem")) !=
          std::string::npos);
  }
  SECTION("a certificate another CA signed") {
    pki other; // a CA of the same name, but not the cluster's
    other.write_node("a", d.path("a.pem"), d.path("a.key"));
    auto err = error_for_a();
    INFO(err);
    CHECK(starts_with(err, prefix(14, "node[0].certificate")));
    CHECK(err.find("the CA " + d.path("ca.pem") + " does not vouch for " + d.path("a.pem") +
                   ": certificate signature failure") != std::string::npos);
  }
  SECTION("files that are not PEM") {
    d.write("a.pem", "not a certificate");
    CHECK(starts_with(error_for_a(), prefix(14, "node[0].certificate")));
    CHECK(error_for_a().find("not a PEM certificate: " + d.path("a.pem")) != std::string::npos);
    d.certs.write_node("a", d.path("a.pem"), d.path("a.key"));
    d.write_private("a.key", "not a key");
    CHECK(starts_with(error_for_a(), prefix(15, "node[0].key")));
    CHECK(error_for_a().find("not a PEM private key without passphrase") != std::string::npos);
    d.certs.write_node("a", d.path("a.pem"), d.path("a.key"));
    d.write("ca.pem", "not a CA");
    CHECK(starts_with(error_for_a(), prefix(8, "cluster.tls.ca")));
    CHECK(error_for_a().find("not a PEM CA certificate: " + d.path("ca.pem")) != std::string::npos);
  }
}
