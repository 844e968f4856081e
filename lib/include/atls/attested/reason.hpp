// Why attestation on a connection failed, as one short word: the same word goes into the
// connection's log line, the metrics label and, as a number, the verdict frame that tells a
// post-handshake attester why it was refused. Intra-handshake, the word picks the TLS alert.
//
// The codes come from three modules (tls::errc, verify::verify_errc, attest::evidence_errc);
// reason_of() folds them into the list, so that operators read one vocabulary.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include <boost/system/error_category.hpp>

#include "atls/common/result.hpp"

namespace atls::attested {

// The numbers travel in verdict frames (PROTOCOL-NOTES.md): never renumber.
enum class reason : std::uint16_t {
  accepted = 0,
  attestation_required = 1,  // policy needs attestation, the peer negotiated none
  unsupported_schemes = 2,   // no attestation scheme in common
  no_evidence = 3,           // the attester sent no evidence, or refused the request
  malformed = 4,             // an extension, frame, authenticator, CMW or evidence that
                             // does not parse
  wrong_nonce = 5,           // the evidence is bound to another connection (binder mismatch)
  key_mismatch = 6,          // the attested key is not the key that signed on this connection
  verifier_refused = 7,      // the verifier appraised and refused (bad signature, unknown AK)
  verifier_unreachable = 8,  // no verifier answered
  status_below_policy = 9,   // ear.status or a trust claim below the policy's minimum
  ear_expired = 10,          // the result is too old, expired, or from the future
  not_pinned = 11,           // a genuine attester, but not one the policy pins
  bad_authenticator = 12,    // an authenticator that fails its signature, Finished or context
  internal = 13,             // our own failure (TPM, signing): nothing the peer did
};

// "attestation_required", "wrong_nonce", ...
[[nodiscard]] std::string_view to_string(reason r) noexcept;
// The reason a wire number names; nullopt for numbers we do not know.
[[nodiscard]] std::optional<reason> reason_from_wire(std::uint16_t value) noexcept;

// The reason for an error from the attestation path (tls::errc, verify::verify_errc,
// attest::evidence_errc, attested::errc, or anything else, which is `internal`).
[[nodiscard]] reason reason_of(const error_code& ec) noexcept;

// Errors of this module's own.
enum class errc {
  attester_not_pinned = 1,  // the attested key's SHA-256 is not among the pins
  refused_by_peer,          // the relying party's verdict refused our attestation
  no_passport,              // passport model, and no fresh attestation result to present
};

const boost::system::error_category& attested_category() noexcept;

inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), attested_category()};
}

}  // namespace atls::attested

template <>
struct boost::system::is_error_code_enum<atls::attested::errc> : std::true_type {};
