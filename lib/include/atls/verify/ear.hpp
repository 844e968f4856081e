// EAR (draft-fv-rats-ear, Veraison profile "tag:github.com,2023:veraison/ear"): a JWT whose
// claims are an attestation result. Decoding turns the claims into an attestation_result;
// acceptance is the appraisal policy's job (appraisal_policy.hpp).
#pragma once

#include <span>
#include <string_view>

#include "atls/common/result.hpp"
#include "atls/verify/attestation_result.hpp"
#include "atls/verify/jose.hpp"

namespace atls::verify {

inline constexpr std::string_view ear_profile = "tag:github.com,2023:veraison/ear";
// The media type of an EAR in a CMW or an HTTP body.
inline constexpr std::string_view ear_media_type =
    "application/eat+jwt; eat_profile=\"tag:github.com,2023:veraison/ear\"";

// Decodes EAR claims (JSON text). Requires eat_profile == ear_profile (wrong_profile), iat as an
// integer (missing_claim / malformed_claims), ear.verifier-id with string build and developer,
// and a non-empty submods object, each with a valid ear.status. Optional claims: exp,
// eat_nonce (base64url or base64 text, 8 to 64 bytes), and per submodule
// ear.trustworthiness-vector (integers -128..127 under known claim names; an unknown name is
// malformed_claims), ear.appraisal-policy-id, ear.veraison.key-attestation.akpub
// (DER SPKI in base64 or base64url, padded or not: Veraison sends it unpadded base64url).
// Other claims are ignored. Fails with verify_errc. raw_ear is left empty.
[[nodiscard]] result<attestation_result> decode_ear_claims(std::string_view claims_json);

struct ear_expectations {
  // When set, the EAR's eat_nonce must be present and equal (constant-time compare). Veraison's
  // parsec-tpm EARs carry no checked nonce (veraison/services#447), so the Veraison client
  // leaves this unset and checks the challenge in the evidence itself.
  std::optional<std::span<const std::uint8_t>> nonce;
};

// Verifies the token's signature with `key` (verify_compact_jws), decodes its claims and checks
// the expectations; raw_ear holds the token. Fails with verify_errc.
[[nodiscard]] result<attestation_result> verify_ear(std::string_view token,
                                                    const verification_key& key,
                                                    const ear_expectations& expected = {});

}  // namespace atls::verify
