#pragma once

/// The cluster configuration (CLUSTER.toml, see docs/cluster.md): which nodes form the cluster,
/// where each listens, which roles it plays, the shared secret and the TLS files. Everything is
/// checked here, once, before a node starts anything, with the same discipline as the pipeline
/// config: every error names `FILE:LINE: KEY: message`, unknown keys list the allowed ones.
///
/// The pipeline config the cluster runs is loaded and checked here too, since a cluster puts
/// constraints on it (a fixed partition count, because partitions move between nodes).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "actors/core/types.hpp"

namespace weir::cluster {

/// The certificate and key a node presents over TLS and the CA that signs every node's
/// certificate: caf::openssl's `openssl.certificate`, `openssl.key` and `openssl.cafile`.
struct tls_files {
  std::string certificate;
  std::string key;
  std::string ca;
};

struct node_config {
  std::string name;
  std::string host; ///< what the node listens on (CAF BASP, caf::openssl when TLS is on)
  uint16_t port = 0;
  std::string store;        ///< the node's store directory (replaces the pipeline config's store)
  bool coordinator = false; ///< coordinator, updater and warehouse run here (exactly one node)
  bool ingest = false;      ///< the pipelines' ingest (with their lake) runs here
  bool aggregate = false;   ///< window-aggregator partitions may be placed here
  bool spare = false;       ///< aggregates only for a non-spare aggregate node that is down
  tls_files tls;            ///< the cluster's files with this node's overrides (empty: insecure)

  /// "host:port" as a peer dials it ("[v6]:port" for an IPv6 host).
  std::string address() const;
};

struct cluster_config {
  std::string file; ///< the CLUSTER.toml this came from
  std::string name; ///< peers of another cluster are refused
  std::string pipeline_file;
  weir_config pipeline; ///< the pipeline config every node runs
  /// The shared secret: the bytes of secret_file (or of the environment variable secret_env)
  /// without trailing white space. Never logged.
  std::string secret;
  int64_t heartbeat = 500 * us_per_ms;        ///< heartbeat interval (microseconds)
  int64_t failure_timeout = 2000 * us_per_ms; ///< silent this long: the node is down
  bool insecure = false;                      ///< no TLS (loopback addresses only)
  std::vector<node_config> nodes;             ///< in file order
  std::optional<size_t> self;                 ///< the node this process runs as, when named

  /// The index of the node named `name` in `nodes`.
  std::optional<size_t> find(std::string_view name) const;

  /// The index of the node with the coordinator role (validation ensures there is one;
  /// nodes.size() when there is none).
  size_t coordinator() const;

  /// The index of the node that runs the pipelines' ingest (validation ensures there is one;
  /// nodes.size() when there is none).
  size_t ingest() const;
};

/// Reads and checks the cluster config at `path` and the pipeline config it names. `self`, when
/// not empty, is the node this process runs as (`weir node --name`): it must be one of the
/// nodes, and the TLS files checked for existence are its own; with `self` empty the TLS files
/// are not looked at (a tool that only reads the layout). A file that cannot be read is
/// errc::bad_input; anything wrong inside it, a secret or TLS file that is missing, unsafe or
/// short, and a pipeline config the cluster cannot run, are errc::bad_config.
caf::expected<cluster_config> load_cluster_config(const std::string& path,
                                                  const std::string& self = {});

/// Checks cluster config text read from `path` (relative paths in it are resolved against its
/// directory); see load_cluster_config.
caf::expected<cluster_config> parse_cluster_config(std::string_view text, const std::string& path,
                                                   const std::string& self = {});

/// The shortest accepted secret, in bytes.
constexpr size_t min_secret_bytes = 32;

/// The longest cluster or node name, in bytes (the handshake carries it with a one-byte length).
constexpr size_t max_name_bytes = 255;

} // namespace weir::cluster
