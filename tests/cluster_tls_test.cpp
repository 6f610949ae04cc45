#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "actors/core/error.hpp"
#include "cluster/config.hpp"
#include "cluster_test_support.hpp"
#include "test_support.hpp"

using namespace weir;
using weir::cluster::load_cluster_config;

using test::make_certificates;
using test::run_in;

TEST_CASE("the certificates and the secret made as docs/cluster.md says pass the checks") {
  // Like the other tests that need a program (docs/testing.md), this one fails without it.
  INFO("the openssl command is needed (Debian's openssl package; scripts/deps.sh --tests)");
  REQUIRE(test::sh("command -v openssl").rc == 0);
  test::temp_dir dir{"weir_cluster_tls_"};
  const auto& d = dir.path;
  make_certificates(d, {{"a", "10.0.0.1"}, {"b", "10.0.0.2"}});
  REQUIRE(run_in(d, test::doc_block("secret")).rc == 0);
  test::write_file(d / "pipeline.toml", test::pipeline_toml());
  test::write_file(d / "CLUSTER.toml", test::doc_block("cluster-config"));
  auto cluster = (d / "CLUSTER.toml").string();

  // What openssl itself says of them: signed by the CA, the node's address as subjectAltName.
  auto verify = test::sh("cd '" + (d / "certs").string() +
                         "' && openssl verify -CAfile ca.pem "
                         "a.pem b.pem");
  CHECK(verify.rc == 0);
  auto san =
    test::sh("openssl x509 -in '" + (d / "certs/b.pem").string() + "' -noout -ext subjectAltName");
  CHECK(san.out.find("IP Address:10.0.0.2") != std::string::npos);

  for (auto self : {"a", "b"}) {
    auto c = load_cluster_config(cluster, self);
    INFO(self << ": " << (c ? "" : render(c.error())));
    REQUIRE(c);
    CHECK(c->secret.size() == 64); // openssl rand -hex 32, without its line break
    CHECK_FALSE(c->insecure);
    CHECK(c->nodes[*c->self].tls.certificate == (d / "certs" / (std::string{self} + ".pem")));
  }
  // Node c has no certificate yet.
  auto c = load_cluster_config(cluster, "c");
  REQUIRE_FALSE(c);
  CHECK(render(c.error()).find("node[2].certificate: file not found") != std::string::npos);

  // The checks below change one file each and put it back (one set of keys is slow to make);
  // the last one replaces a's certificate and key.
  {
    INFO("a missing key file is refused");
    std::filesystem::rename(d / "certs/a.key", d / "a.key.saved");
    auto r = load_cluster_config(cluster, "a");
    REQUIRE_FALSE(r);
    CHECK(test::has_code(r.error(), errc::bad_config));
    auto err = render(r.error());
    INFO(err);
    CHECK(err.find(cluster + ":17: node[0].key: private key not found: " +
                   (d / "certs/a.key").string()) == 0);
    // b does not need a's key.
    CHECK(load_cluster_config(cluster, "b"));
    std::filesystem::rename(d / "a.key.saved", d / "certs/a.key");
  }
  REQUIRE(load_cluster_config(cluster, "a"));
  {
    INFO("a secret readable by others is refused");
    std::filesystem::permissions(d / "secret", std::filesystem::perms::group_read,
                                 std::filesystem::perm_options::add);
    auto r = load_cluster_config(cluster, "a");
    REQUIRE_FALSE(r);
    CHECK(render(r.error()).find(cluster + ":4: cluster.secret_file: secret file") == 0);
    std::filesystem::permissions(d / "secret", std::filesystem::perms::group_read,
                                 std::filesystem::perm_options::remove);
  }
  REQUIRE(load_cluster_config(cluster, "a"));
  {
    INFO("a certificate of another CA is refused");
    test::temp_dir other{"weir_cluster_tls_other_"};
    make_certificates(other.path, {{"a", "10.0.0.1"}});
    for (auto f : {"a.pem", "a.key"})
      std::filesystem::copy_file(other.path / "certs" / f, d / "certs" / f,
                                 std::filesystem::copy_options::overwrite_existing);
    auto r = load_cluster_config(cluster, "a");
    REQUIRE_FALSE(r);
    auto err = render(r.error());
    INFO(err);
    CHECK(err.find(cluster + ":16: node[0].certificate: the CA " + (d / "certs/ca.pem").string() +
                   " does not vouch for") == 0);
  }
}
