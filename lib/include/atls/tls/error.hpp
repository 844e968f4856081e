// Errors of the TLS module, and the bridge from OpenSSL's error queue.
#pragma once

#include <string>

#include <boost/system/error_category.hpp>

#include "atls/common/result.hpp"

namespace atls::tls {

enum class errc {
  certificate_unusable = 1,  // the certificate chain file could not be read or parsed
  private_key_unusable,      // the private key file could not be read or parsed
  key_does_not_match_certificate,
  ca_unusable,             // the CA bundle could not be read or parsed
  bad_server_name,         // not a DNS name or IP literal
  context_setup_failed,    // OpenSSL refused a setting (out of memory, broken build)
  handshake_failed,        // the handshake ended in an alert or a protocol error
  peer_rejected,           // the peer's certificate failed verification or the allow-lists
  handshake_eof,           // the peer closed the connection during the handshake
  truncated,               // the peer closed TCP without a close_notify (possible truncation)
  protocol_error,          // a fatal TLS error after the handshake
  peer_alert,              // the peer ended the connection with a fatal alert
  bad_certificate_fields,  // a subject or subjectAltName text that does not parse
  signing_failed,          // the private key could not sign (e.g. the TPM failed)
};

const boost::system::error_category& tls_category() noexcept;

inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), tls_category()};
}

// Empties the calling thread's OpenSSL error queue and returns its entries, oldest first,
// separated by "; " (empty when the queue was empty). Call right after the failing OpenSSL call
// so that the reasons belong to it.
std::string drain_openssl_errors();

}  // namespace atls::tls

template <>
struct boost::system::is_error_code_enum<atls::tls::errc> : std::true_type {};
