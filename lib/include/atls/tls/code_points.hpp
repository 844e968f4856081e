// Code points the attestation drafts leave "TBD". Every one is configurable, because an IANA
// assignment (or a peer built against another draft revision) must not need a rebuild; the
// defaults sit in the private-use ranges: ExtensionType 65280-65535 and AlertDescription
// 224-255 (RFC 8446 §11, the registries' "Reserved for Private Use"). PROTOCOL-NOTES.md lists
// them and why.
#pragma once

#include <cstdint>

namespace atls::tls {

struct attestation_code_points {
  // draft-fossati-seat-early-attestation: ClientHello, EncryptedExtensions, CertificateRequest
  // and the first CertificateEntry.
  std::uint16_t remote_attestation_extension = 0xFF3A;
  // draft-fossati-seat-expat: the authenticator request (empty) and the first CertificateEntry
  // of the authenticator.
  std::uint16_t cmw_attestation_extension = 0xFF3B;
  // atlsd's own: the offer of post-handshake attestation on a framed stream (ClientHello,
  // echoed in EncryptedExtensions; atls/tls/attestation_framing.hpp).
  std::uint16_t post_handshake_extension = 0xFF3C;
  // The early-attestation draft's alerts.
  std::uint8_t unsupported_attestation_schemes_alert = 224;
  std::uint8_t attestation_required_alert = 225;
  std::uint8_t attestation_failed_alert = 226;
};

// RFC 9261 §4: the ClientCertificateRequest handshake type (IANA TLS HandshakeType 17).
inline constexpr std::uint8_t client_certificate_request_type = 17;

}  // namespace atls::tls
