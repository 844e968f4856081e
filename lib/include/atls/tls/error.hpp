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

  // Attestation on the connection (draft-fossati-seat-early-attestation, RFC 9261 with
  // draft-fossati-seat-expat). Appraisal failures keep the verify and attest modules' codes.
  malformed_attestation_extension,  // remoteAttestation or cmw_attestation that does not parse,
                                    // or sits where the draft forbids it
  malformed_cmw,                    // a CMW record that is neither valid CBOR nor JSON CMW
  no_common_attestation_scheme,     // nothing the peer offers is something we accept
  attestation_required,             // policy needs attestation and the peer negotiated none
  no_evidence,                      // the attester sent no CMW, or refused (empty authenticator)
  malformed_authenticator,          // an authenticator request or authenticator that does not
                                    // parse (RFC 9261 §4, §5)
  authenticator_context_mismatch,   // the authenticator answers another request
  authenticator_context_reused,     // a certificate_request_context seen before on the connection
  bad_authenticator_signature,      // CertificateVerify does not verify with the leaf key
  bad_authenticator_finished,       // Finished does not match: another connection, or tampering
  unrequested_extension,            // an extension the request did not ask for (RFC 9261 §5.2.2)
  malformed_frame,                  // a post-handshake attestation frame that breaks the framing
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
