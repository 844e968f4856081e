// Why an attestation result could not be obtained or was not accepted. One enum for the whole
// verify module (category "atls.verify"), so that a log line, a metric label and a TLS alert can
// all name the same reason. Evidence that does not decode or verify keeps its own codes
// (atls::attest::evidence_errc).
#pragma once

#include <boost/system/error_category.hpp>

#include "atls/common/result.hpp"

namespace atls::verify {

enum class verify_errc {
  // JOSE: the token and the key
  malformed_token = 1,    // not three base64url parts, bad base64url, header or payload not a
                          // JSON object, or over the size limit
  unsupported_algorithm,  // "none", an HMAC algorithm, or one atls does not implement
  algorithm_mismatch,     // the header's alg is not the algorithm pinned for the key
  unsupported_header,     // a "crit" header, or "b64": false (RFC 7797): never understood
  bad_signature,          // the signature does not verify with the key
  malformed_key,          // a JWK that is not valid JSON, lacks members, or has a bad point
  unsupported_key,        // a JWK type or curve atls does not implement, or a private key

  // EAR claims
  malformed_claims,       // a claim of the wrong JSON type or outside its range
  missing_claim,          // eat_profile, iat, ear.verifier-id, submods or ear.status absent
  wrong_profile,          // eat_profile is not tag:github.com,2023:veraison/ear
  nonce_mismatch,         // the result's nonce is not the nonce the relying party expects
  attested_key_mismatch,  // the key the verifier saw attested is not the key the evidence or
                          // the TLS connection presents

  // Appraisal policy
  status_not_acceptable,  // a submodule's ear.status is below the policy's minimum
  claim_below_minimum,    // a trustworthiness claim is below its minimum tier, or absent
  missing_submodule,      // a submodule the policy requires is not in the result
  result_too_old,         // iat is older than the policy's maximum age
  result_expired,         // the result's own expiry has passed
  issued_in_future,       // iat lies ahead of this host's clock by more than the allowed skew

  // Local verifier
  unknown_attestation_key,  // the evidence's signatures verify with no trusted AK
  no_reference_values,      // a quoted PCR has no reference value, or a bank differs
  unsupported_media_type,   // the verifier cannot appraise evidence of this media type

  // Veraison client
  verifier_unavailable,  // every base URL failed with network errors, timeouts or 5xx
  verifier_rejected,     // a 4xx answer (problem+json detail is logged)
  bad_response,          // an answer that breaks the API: wrong media type, bad JSON, no
                         // Location, a session in an unexpected state
  session_failed,        // the session ended in state "failed"
  no_verification_key,   // no EAR key configured, and discovery was not allowed to supply one
};

const boost::system::error_category& verify_category() noexcept;

inline error_code make_error_code(verify_errc e) noexcept {
  return {static_cast<int>(e), verify_category()};
}

}  // namespace atls::verify

template <>
struct boost::system::is_error_code_enum<atls::verify::verify_errc> : std::true_type {};
