#pragma once

/// Checks a node's TLS files the way TLS will use them, before the node starts: a certificate
/// that does not belong to its key, or that the cluster's CA did not sign, would otherwise only
/// show as connections that fail during the handshake.

#include <cstdint>
#include <optional>
#include <string>

#include "cluster/config.hpp"

namespace weir::cluster {

/// What is wrong with a node's TLS files: which of them, and why.
struct tls_problem {
  enum class file : uint8_t { certificate, key, ca } which;
  std::string message;
};

/// Loads the certificate, the private key (PEM, not encrypted) and the CA certificate of `f`,
/// and checks that the key is the certificate's and that the CA signed the certificate (and it
/// has not expired). nullopt when all is well.
std::optional<tls_problem> check_tls_files(const tls_files& f);

} // namespace weir::cluster
