// The remoteAttestation extension of draft-fossati-seat-early-attestation (-06, §"Remote
// Attestation Extension"): one extension whose extension_data depends on the handshake message
// that carries it. Codecs only, over bytes: which message may carry it, the alerts and the
// binder are the handshake engine's business (atls/tls/early_binder.hpp for the binder).
//
// Every decoder parses untrusted bytes: pure, every length checked before it is read, no
// trailing bytes, enum values outside the draft's refused, and the caps below enforced. Each
// fails with errc::malformed_attestation_extension and nothing else. The encoders refuse, with
// the same code, any value the decoders would refuse, so whatever encodes also decodes, to an
// equal value and from the same bytes (the encoding is canonical).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "atls/common/result.hpp"
#include "atls/tls/error.hpp"

namespace atls::tls {

using bytes = std::vector<std::uint8_t>;

// Caps of our own; the draft allows up to 2^16-1 bytes for each. A scheme list is a preference
// list for a handful of attestation technologies, and a media type is a short registered name
// (RFC 6838 §4.2 limits type and subtype names to 127 characters each).
inline constexpr std::size_t max_attestation_schemes = 64;       // per list in ClientHello
inline constexpr std::size_t max_scheme_media_type_size = 256;   // EvidenceType.media_type
inline constexpr std::size_t max_verifier_identity_size = 1024;  // VerifierIdentityType
// cmw_payload is opaque<1..2^24-1>, but it sits in extension_data, itself opaque<0..2^16-1>
// (RFC 8446 §4.2), so 2^16-1 minus the 3-byte length is the most it can ever carry.
inline constexpr std::size_t max_cmw_payload_size = 0xffff - 3;

// AttestationMechanism (one byte on the wire; the draft reserves up to 255).
enum class attestation_mechanism : std::uint8_t {
  evidence = 0,  // background-check model: the attester sends Evidence
  result = 1,    // passport model: the attester sends an Attestation Result
};

// EvidenceType.type_encoding (one byte on the wire: RFC 8446 §3.5, an enum takes the size of
// its largest value).
enum class type_encoding : std::uint8_t {
  content_format = 0,  // a CoAP Content-Format number (RFC 7252 §12.3)
  media_type = 1,      // a media type string (RFC 6838)
};

// `evidence` schemes name the Evidence type: a CoAP Content-Format or a media type.
struct evidence_scheme {
  std::variant<std::uint16_t, std::string> type;

  bool operator==(const evidence_scheme&) const = default;
};

// `result` schemes name the Verifier whose Attestation Results the attester relays; the draft
// suggests a subjectAltName. Compared byte for byte.
struct result_scheme {
  bytes verifier_identity;

  bool operator==(const result_scheme&) const = default;
};

// AttestationScheme. The variant makes the mechanism and its argument agree by construction.
struct attestation_scheme {
  std::variant<evidence_scheme, result_scheme> argument;

  [[nodiscard]] attestation_mechanism mechanism() const noexcept {
    return std::holds_alternative<evidence_scheme>(argument) ? attestation_mechanism::evidence
                                                             : attestation_mechanism::result;
  }

  [[nodiscard]] static attestation_scheme evidence_media_type(std::string media_type) {
    return {evidence_scheme{std::move(media_type)}};
  }
  [[nodiscard]] static attestation_scheme evidence_content_format(std::uint16_t content_format) {
    return {evidence_scheme{content_format}};
  }
  [[nodiscard]] static attestation_scheme result_from(bytes verifier_identity) {
    return {result_scheme{std::move(verifier_identity)}};
  }

  bool operator==(const attestation_scheme&) const = default;
};

// The ClientHello form: the schemes the client accepts from the server as attester, then the
// schemes the client can attest with, each in the client's order of preference. Either list may
// be empty on the wire; the draft requires the client to offer at least one scheme in all, and
// the server to refuse with unsupported_attestation_schemes when both are empty (the engine's
// check, not the codec's).
struct client_hello_attestation {
  std::vector<attestation_scheme> server_attester_schemes;
  std::vector<attestation_scheme> client_attester_schemes;

  bool operator==(const client_hello_attestation&) const = default;
};

// ClientHello: server_attester_schemes<0..2^16-1> then client_attester_schemes<0..2^16-1>.
// Fails when a list has more than max_attestation_schemes entries or a scheme breaks a cap.
[[nodiscard]] result<bytes> encode_client_hello(const client_hello_attestation& value);
[[nodiscard]] result<client_hello_attestation> decode_client_hello(
    std::span<const std::uint8_t> extension_data);

// EncryptedExtensions: chosen_server_scheme, a single AttestationScheme and nothing else.
[[nodiscard]] result<bytes> encode_encrypted_extensions(const attestation_scheme& chosen);
[[nodiscard]] result<attestation_scheme> decode_encrypted_extensions(
    std::span<const std::uint8_t> extension_data);

// CertificateRequest: chosen_client_scheme, a single AttestationScheme and nothing else.
[[nodiscard]] result<bytes> encode_certificate_request(const attestation_scheme& chosen);
[[nodiscard]] result<attestation_scheme> decode_certificate_request(
    std::span<const std::uint8_t> extension_data);

// The first CertificateEntry of Certificate: cmw_payload<1..2^24-1>, a 3-byte length and at
// least one byte. Fails for an empty payload or one above max_cmw_payload_size. The decoder
// returns a copy of the payload (the caller owns it; OpenSSL's buffer does not outlive the
// extension callback). The CMW itself is not parsed here (atls/tls/cmw.hpp).
[[nodiscard]] result<bytes> encode_certificate(std::span<const std::uint8_t> cmw_payload);
[[nodiscard]] result<bytes> decode_certificate(std::span<const std::uint8_t> extension_data);

// The scheme to choose: the first of `acceptable` (ours, in our order of preference) that the
// peer listed in `offered`; nullopt when there is none, which the caller turns into
// errc::no_common_attestation_scheme (and the unsupported_attestation_schemes alert). Our
// preference wins over the peer's order because we are the one that has to appraise (or
// produce) the result. Pure; compares schemes exactly (media types byte for byte).
[[nodiscard]] std::optional<attestation_scheme> choose_scheme(
    std::span<const attestation_scheme> offered, std::span<const attestation_scheme> acceptable);

}  // namespace atls::tls
