#include "atls/verify/error.hpp"

#include <string>

namespace atls::verify {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "atls.verify"; }
  std::string message(int value) const override {
    switch (static_cast<verify_errc>(value)) {
      case verify_errc::malformed_token:
        return "token is not a well-formed JWS (compact form, base64url, JSON header, size)";
      case verify_errc::unsupported_algorithm:
        return "token algorithm is not supported (none and HMAC are never accepted)";
      case verify_errc::algorithm_mismatch:
        return "token algorithm is not the algorithm pinned for the key";
      case verify_errc::unsupported_header:
        return "token has a crit or b64 header that is not understood";
      case verify_errc::bad_signature:
        return "token signature does not verify with the key";
      case verify_errc::malformed_key:
        return "key is not a well-formed public JWK or PEM public key";
      case verify_errc::unsupported_key:
        return "key type, curve, size or algorithm is not supported, or it is a private key";
      case verify_errc::malformed_claims:
        return "attestation result claim has the wrong type or is out of range";
      case verify_errc::missing_claim:
        return "attestation result lacks a required claim";
      case verify_errc::wrong_profile:
        return "attestation result is not of the EAR profile";
      case verify_errc::nonce_mismatch:
        return "attestation result nonce is not the expected nonce";
      case verify_errc::attested_key_mismatch:
        return "attested key is not the key the peer presents";
      case verify_errc::status_not_acceptable:
        return "attestation status is below the policy's minimum";
      case verify_errc::claim_below_minimum:
        return "trustworthiness claim is below the policy's minimum tier, or absent";
      case verify_errc::missing_submodule:
        return "attestation result lacks a submodule the policy requires";
      case verify_errc::result_too_old:
        return "attestation result is older than the policy's maximum age";
      case verify_errc::result_expired:
        return "attestation result has expired";
      case verify_errc::issued_in_future:
        return "attestation result is issued in the future beyond the allowed clock skew";
      case verify_errc::unknown_attestation_key:
        return "evidence is not signed by a trusted attestation key";
      case verify_errc::no_reference_values:
        return "evidence quotes a PCR without a matching reference value";
      case verify_errc::unsupported_media_type:
        return "verifier cannot appraise evidence of this media type";
      case verify_errc::verifier_unavailable:
        return "verifier is unavailable";
      case verify_errc::verifier_rejected:
        return "verifier rejected the request";
      case verify_errc::bad_response:
        return "verifier answered outside its API";
      case verify_errc::session_failed:
        return "verifier session failed";
      case verify_errc::no_verification_key:
        return "no attestation result verification key is configured";
    }
    return "unknown atls.verify error";
  }
};

}  // namespace

const boost::system::error_category& verify_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace atls::verify
