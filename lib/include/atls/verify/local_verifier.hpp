// The embedded verifier: appraises Parsec TPM evidence against trusted attestation keys and
// reference PCR values from configuration, with the rules of Veraison's parsec-tpm scheme, and
// additionally checks the nonce (which that scheme does not, veraison/services#447).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "atls/common/result.hpp"
#include "atls/verify/attestation_result.hpp"
#include "atls/verify/verifier.hpp"

namespace atls::verify {

using sha256_digest = std::array<std::uint8_t, 32>;

// Expected values per PCR of one bank. Every PCR the quote selects must have a value here, and
// the quote's pcrDigest must equal the hash of the selected values concatenated in ascending PCR
// order (TPM 2.0 Part 3, TPM2_Quote), as Veraison's parsec-tpm scheme computes it.
struct pcr_values {
  std::uint16_t bank = 0x000B;           // TPM_ALG_SHA256
  std::map<std::uint8_t, bytes> values;  // PCR index -> digest of the bank's size
};

// An expected pcrDigest for an exact selection. The selection is part of the reference: the same
// digest over other PCRs with the same values would otherwise pass.
struct pcr_digest {
  std::uint16_t bank = 0x000B;
  std::vector<std::uint8_t> pcrs;  // ascending
  bytes digest;                    // SHA-256 of the selected PCR values
};

struct local_verifier_options {
  // Trusted attestation keys: DER SubjectPublicKeyInfo (P-256), and SHA-256 hashes of DER SPKIs.
  // A hash-only AK is recovered from the two ECDSA signatures (each yields at most two candidate
  // keys; the key must be a candidate of both) and then hashed; the evidence carries no AK.
  std::vector<bytes> trusted_aks;
  std::vector<sha256_digest> trusted_ak_hashes;
  std::variant<pcr_values, pcr_digest> reference;
  // ear.verifier-id of the results; the build is this library's version.
  std::string developer = "atlsd local verifier";
  std::string submodule = "PARSEC_TPM";  // the submodule name, as in Veraison
};

// Appraises synchronously, without I/O. Decode errors and failed checks are attest::evidence_errc
// (truncated, bad_signature, nonce_mismatch, name_mismatch, ...); media types other than
// Parsec TPM are verify_errc::unsupported_media_type; evidence from an untrusted AK is
// verify_errc::unknown_attestation_key. A quote whose PCRs lack reference values in the right
// bank is verify_errc::no_reference_values. A pcrDigest that differs from the reference is not an
// error: it is a result with executables = unrecognized_runtime and status warning, as Veraison
// reports it. Otherwise the result is affirming, with instance-identity, hardware and
// executables set as in attestation_result.hpp, the certified TLS key as attested_key, the
// checked nonce, issued_at = now and no expiry.
[[nodiscard]] result<attestation_result> appraise_parsec_tpm(
    const local_verifier_options& options, std::span<const std::uint8_t> evidence,
    std::string_view media_type, std::span<const std::uint8_t> expected_nonce,
    clock::time_point now);

class local_verifier final : public verifier {
 public:
  explicit local_verifier(local_verifier_options options);

  // appraise_parsec_tpm() on the calling executor: it is CPU-only and takes well under a
  // millisecond (two ECDSA verifications).
  [[nodiscard]] boost::asio::awaitable<result<attestation_result>> appraise(
      bytes evidence, std::string media_type, bytes expected_nonce) override;
  // Random bytes from OpenSSL's DRBG. Fails for a size outside 8..64
  // (std::errc::invalid_argument), or when the DRBG cannot produce them
  // (std::errc::resource_unavailable_try_again).
  [[nodiscard]] boost::asio::awaitable<result<bytes>> challenge(std::size_t size) override;
  // Appraisal here needs nothing outside this process.
  [[nodiscard]] boost::asio::awaitable<result<void>> probe() override { co_return result<void>{}; }
  [[nodiscard]] std::string_view name() const noexcept override { return "local"; }

 private:
  local_verifier_options options_;
};

}  // namespace atls::verify
