#include "cluster/tls.hpp"

#include <memory>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

namespace weir::cluster {

namespace {

template <class T, void (*Free)(T*)>
struct openssl_deleter {
  void operator()(T* x) const { Free(x); }
};

template <class T, void (*Free)(T*)>
using openssl_ptr = std::unique_ptr<T, openssl_deleter<T, Free>>;

using bio_ptr = openssl_ptr<BIO, BIO_free_all>;
using x509_ptr = openssl_ptr<X509, X509_free>;
using pkey_ptr = openssl_ptr<EVP_PKEY, EVP_PKEY_free>;
using store_ptr = openssl_ptr<X509_STORE, X509_STORE_free>;
using store_ctx_ptr = openssl_ptr<X509_STORE_CTX, X509_STORE_CTX_free>;

/// A key with a passphrase cannot be used: no one is there to type it.
int no_passphrase(char*, int, int, void*) {
  return -1;
}

x509_ptr read_certificate(const std::string& path) {
  bio_ptr in{BIO_new_file(path.c_str(), "r")};
  return x509_ptr{in ? PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr) : nullptr};
}

pkey_ptr read_key(const std::string& path) {
  bio_ptr in{BIO_new_file(path.c_str(), "r")};
  return pkey_ptr{in ? PEM_read_bio_PrivateKey(in.get(), nullptr, no_passphrase, nullptr)
                     : nullptr};
}

/// Why `ca` does not vouch for `cert` ("" when it does).
std::string verify(X509* cert, X509_STORE* ca) {
  store_ctx_ptr ctx{X509_STORE_CTX_new()};
  if (!ctx || X509_STORE_CTX_init(ctx.get(), ca, cert, nullptr) != 1)
    return "cannot set up the verification";
  if (X509_verify_cert(ctx.get()) == 1)
    return {};
  return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

std::optional<tls_problem> check(const tls_files& f) {
  using file = tls_problem::file;
  auto cert = read_certificate(f.certificate);
  if (!cert)
    return tls_problem{file::certificate, "not a PEM certificate: " + f.certificate};
  auto key = read_key(f.key);
  if (!key)
    return tls_problem{file::key, "not a PEM private key without passphrase: " + f.key};
  if (X509_check_private_key(cert.get(), key.get()) != 1)
    return tls_problem{file::key, f.key + " is not the key of certificate " + f.certificate};
  store_ptr ca{X509_STORE_new()};
  if (!ca || X509_STORE_load_file(ca.get(), f.ca.c_str()) != 1)
    return tls_problem{file::ca, "not a PEM CA certificate: " + f.ca};
  if (auto why = verify(cert.get(), ca.get()); !why.empty())
    return tls_problem{file::certificate,
                       "the CA " + f.ca + " does not vouch for " + f.certificate + ": " + why};
  return std::nullopt;
}

} // namespace

std::optional<tls_problem> check_tls_files(const tls_files& f) {
  auto out = check(f);
  ERR_clear_error(); // what failed is in the result; leave no errors behind for others
  return out;
}

} // namespace weir::cluster
