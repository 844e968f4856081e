// Certificates for a key whose private part may live elsewhere, such as the TPM's TLS identity
// key: a certificate signing request for a CA (the RA + PKI mode, where a CA gives the attested
// key a host name), or a self-signed certificate. The key signs through its own method.
#pragma once

#include <chrono>
#include <string>

#include "atls/common/result.hpp"

using EVP_PKEY = struct evp_pkey_st;

namespace atls::tls {

struct certificate_fields {
  std::string subject;  // "/CN=server.test/O=Example", the form openssl -subj takes
  // "DNS:server.test,URI:spiffe://example.org/app,IP:10.0.0.1", the form of openssl's
  // subjectAltName extension; empty for none.
  std::string subject_alt_names;
  std::chrono::days validity{365};  // self-signed certificates only
};

// PEM "CERTIFICATE REQUEST" signed by key (SHA-256). Fails with errc::bad_certificate_fields when
// the subject or the names do not parse, errc::signing_failed when the key cannot sign.
[[nodiscard]] detailed_result<std::string> certificate_request_pem(
    EVP_PKEY* key, const certificate_fields& fields);

// PEM "CERTIFICATE", issuer = subject, a random 128-bit serial, valid from now for
// fields.validity. Fails like certificate_request_pem.
[[nodiscard]] detailed_result<std::string> self_signed_certificate_pem(
    EVP_PKEY* key, const certificate_fields& fields);

}  // namespace atls::tls
