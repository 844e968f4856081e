// The local verifier's appraisal of Parsec TPM evidence: find the trusted AK that signed it,
// let attest::verify check the signatures and bindings, then compare the quote with the
// reference PCR values, with the rules and trust-vector values of Veraison's parsec-tpm scheme.
#include <algorithm>
#include <array>
#include <optional>
#include <utility>
#include <variant>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "atls/attest/evidence.hpp"
#include "atls/verify/error.hpp"
#include "atls/verify/local_verifier.hpp"

#include "detail/ecdsa_recover.hpp"

#ifndef ATLS_VERSION
#error "ATLS_VERSION must be defined by the build (lib/CMakeLists.txt)"
#endif

namespace atls::verify {

namespace {

using attest::evidence_errc;

// ear.verifier-id.build of every local result.
constexpr std::string_view verifier_build = "atls " ATLS_VERSION;

constexpr std::uint16_t tpm_alg_sha256 = 0x000b;
constexpr std::uint16_t tpm_st_attest_certify = 0x8017;
constexpr std::uint16_t tpm_st_attest_quote = 0x8018;

error_code out_of_memory() {
  return make_error_code(boost::system::errc::not_enough_memory);
}

result<sha256_digest> sha256(std::span<const std::uint8_t> data) {
  sha256_digest digest{};
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 ||
      size != digest.size()) {
    return out_of_memory();
  }
  return digest;
}

// Digests are compared without early exit, like the nonce in attest::verify: a reference digest
// is not secret, but there is no reason to leak how much of a forged one matched.
bool digest_equal(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// The parts of the evidence that do not depend on the AK.
struct parsed_parts {
  attest::ecdsa_signature kat_sig;
  attest::ecdsa_signature pat_sig;
};

// The checks of attest::verify that come before the AK, in its order, so that malformed evidence
// gets its own error however the AK is found (by SPKI or by recovery), and so that every later
// failure of attest::verify is about the AK or the bindings.
result<parsed_parts> parse_parts(const attest::parsec_tpm_evidence& evidence) {
  auto certify = attest::parse_attest(evidence.cert_info);
  if (!certify) {
    return certify.error();
  }
  if (certify->type != tpm_st_attest_certify) {
    return evidence_errc::wrong_attest_type;
  }
  auto quote = attest::parse_attest(evidence.attest_info);
  if (!quote) {
    return quote.error();
  }
  if (quote->type != tpm_st_attest_quote) {
    return evidence_errc::wrong_attest_type;
  }
  auto kat_sig = attest::parse_signature(evidence.kat_sig);
  if (!kat_sig) {
    return kat_sig.error();
  }
  auto pat_sig = attest::parse_signature(evidence.pat_sig);
  if (!pat_sig) {
    return pat_sig.error();
  }
  // The format signs with SHA-256 only (as attest::verify requires), and recovery needs the
  // same digest the TPM signed.
  if (kat_sig->hash_alg != tpm_alg_sha256 || pat_sig->hash_alg != tpm_alg_sha256) {
    return evidence_errc::unsupported_algorithm;
  }
  return parsed_parts{.kat_sig = std::move(*kat_sig), .pat_sig = std::move(*pat_sig)};
}

// The keys that could have made `signature` over `signed_bytes` (detail/ecdsa_recover.hpp).
result<std::vector<bytes>> signers_of(std::span<const std::uint8_t> signed_bytes,
                                      const attest::ecdsa_signature& signature) {
  auto digest = sha256(signed_bytes);
  if (!digest) {
    return digest.error();
  }
  return detail::recover_p256_public_keys(*digest, signature.r, signature.s);
}

bool pinned(const local_verifier_options& options, std::span<const std::uint8_t> spki) {
  const auto hash = sha256(spki);
  if (!hash) {
    return false;
  }
  return std::any_of(options.trusted_ak_hashes.begin(), options.trusted_ak_hashes.end(),
                     [&](const sha256_digest& pin) { return digest_equal(pin, *hash); });
}

bool trusted(const local_verifier_options& options, std::span<const std::uint8_t> spki) {
  return pinned(options, spki) ||
         std::any_of(options.trusted_aks.begin(), options.trusted_aks.end(),
                     [&](const bytes& ak) { return detail::same_public_key(ak, spki); });
}

// Finds the trusted AK that signed both parts and returns attest::verify's verdict with it.
//
// attest::verify fails with bad_signature for a key that did not sign, so that error means
// "try the next AK"; any other failure means a trusted AK signed the evidence and a binding is
// wrong (nonce_mismatch, name_mismatch, key_not_tpm_bound, ...), and that error is the answer.
// A key pinned by hash is recovered from the two signatures: only a key that is a candidate of
// both, and whose SPKI hashes to a pin, is tried.
result<attest::verified_evidence> verify_with_trusted_ak(
    const local_verifier_options& options, const attest::parsec_tpm_evidence& evidence,
    std::span<const std::uint8_t> expected_nonce) {
  auto parts = parse_parts(evidence);
  if (!parts) {
    return parts.error();
  }

  error_code finding;
  std::optional<attest::verified_evidence> found;
  const auto attempt = [&](std::span<const std::uint8_t> ak) -> bool {
    auto verified = attest::verify(evidence, ak, expected_nonce);
    if (verified) {
      found = std::move(*verified);
      return true;
    }
    if (verified.error() != evidence_errc::bad_signature && !finding) {
      finding = verified.error();
    }
    return false;
  };

  for (const auto& ak : options.trusted_aks) {
    // A key that is not P-256 cannot have signed; skipping it keeps its unsupported_algorithm
    // from being taken for a finding about the evidence (the config layer refuses such keys).
    if (!detail::is_p256_spki(ak)) {
      continue;
    }
    if (attempt(ak)) {
      return std::move(*found);
    }
  }

  // Recovery is only needed for pinned hashes, or to explain a failure below.
  std::optional<std::vector<bytes>> kat_signers;
  std::optional<std::vector<bytes>> pat_signers;
  if (!options.trusted_ak_hashes.empty() || !finding) {
    auto kat = signers_of(evidence.cert_info, parts->kat_sig);
    if (!kat) {
      return kat.error();
    }
    auto pat = signers_of(evidence.attest_info, parts->pat_sig);
    if (!pat) {
      return pat.error();
    }
    kat_signers = std::move(*kat);
    pat_signers = std::move(*pat);
  }

  if (!options.trusted_ak_hashes.empty()) {
    for (const auto& candidate : *kat_signers) {
      // Both lists come from the same encoder (named curve, uncompressed point), so equal keys
      // have equal bytes.
      if (std::find(pat_signers->begin(), pat_signers->end(), candidate) == pat_signers->end() ||
          !pinned(options, candidate)) {
        continue;
      }
      if (attempt(candidate)) {
        return std::move(*found);
      }
    }
  }

  if (finding) {
    return finding;
  }
  // No trusted AK signed both parts. If one signed either part, the AK is known and the
  // evidence was tampered with or mixed from two sources: that is a bad signature, not an
  // unknown key.
  const auto signed_part = [&](const std::vector<bytes>& signers) {
    return std::any_of(signers.begin(), signers.end(),
                       [&](const bytes& key) { return trusted(options, key); });
  };
  if (signed_part(*kat_signers) || signed_part(*pat_signers)) {
    return evidence_errc::bad_signature;
  }
  return verify_errc::unknown_attestation_key;
}

// TPM2_Quote's pcrDigest (TPM 2.0 Part 3 §18.4) is the digest, with the hash of the signing
// scheme, of the selected PCR values concatenated in the order of the TPML_PCR_SELECTION and,
// within a selection, by ascending index. attest::verify admits only SHA-256 signatures, so the
// digest is always SHA-256; the values are those of the reference bank (the config layer
// accepts only sha256, whose values are 32 bytes).
//
// Returns the executables claim: approved_runtime when the digest matches, unrecognized_runtime
// when it does not; verify_errc::no_reference_values when the quote covers PCRs the reference
// does not describe.
result<std::int8_t> appraise_pcrs(const pcr_values& reference, const attest::quote_info& quote) {
  bytes concatenated;
  bool any = false;
  for (const auto& selection : quote.selections) {
    // An empty bitmap selects nothing, whatever its bank.
    if (selection.pcrs.empty()) {
      continue;
    }
    if (selection.hash_alg != reference.bank) {
      return verify_errc::no_reference_values;
    }
    for (const auto pcr : selection.pcrs) {
      const auto it = reference.values.find(pcr);
      if (it == reference.values.end()) {
        return verify_errc::no_reference_values;
      }
      concatenated.insert(concatenated.end(), it->second.begin(), it->second.end());
      any = true;
    }
  }
  // A quote over no PCR says nothing about the software; Veraison would call the empty
  // selection matched, but there is nothing to match.
  if (!any) {
    return verify_errc::no_reference_values;
  }
  auto digest = sha256(concatenated);
  if (!digest) {
    return digest.error();
  }
  return digest_equal(*digest, quote.pcr_digest) ? approved_runtime : unrecognized_runtime;
}

// With only a digest as reference, the selection must be exactly the reference's: the same
// values in other PCRs, or in another bank, would give the same digest.
result<std::int8_t> appraise_pcrs(const pcr_digest& reference, const attest::quote_info& quote) {
  const attest::pcr_selection* only = nullptr;
  for (const auto& selection : quote.selections) {
    if (selection.pcrs.empty()) {
      continue;
    }
    if (only != nullptr) {
      return verify_errc::no_reference_values;
    }
    only = &selection;
  }
  if (only == nullptr || only->hash_alg != reference.bank || only->pcrs != reference.pcrs) {
    return verify_errc::no_reference_values;
  }
  return digest_equal(reference.digest, quote.pcr_digest) ? approved_runtime : unrecognized_runtime;
}

}  // namespace

result<attestation_result> appraise_parsec_tpm(const local_verifier_options& options,
                                               std::span<const std::uint8_t> evidence,
                                               std::string_view media_type,
                                               std::span<const std::uint8_t> expected_nonce,
                                               clock::time_point now) {
  if (media_type != attest::parsec_tpm_media_type) {
    return verify_errc::unsupported_media_type;
  }
  auto decoded = attest::decode(evidence);
  if (!decoded) {
    return decoded.error();
  }
  auto verified = verify_with_trusted_ak(options, *decoded, expected_nonce);
  if (!verified) {
    return verified.error();
  }
  const auto& quote = std::get<attest::quote_info>(verified->quote.attested);
  auto executables = std::visit(
      [&](const auto& reference) { return appraise_pcrs(reference, quote); }, options.reference);
  if (!executables) {
    return executables.error();
  }

  // Veraison's parsec-tpm scheme: the AK is endorsed and the signatures verify, so the instance
  // and the hardware are recognised; the PCRs decide executables and, with them, the status.
  trust_vector trust;
  trust.set(trust_claim::instance_identity, trustworthy_instance);
  trust.set(trust_claim::hardware, genuine_hardware);
  trust.set(trust_claim::executables, *executables);
  const ear_status status =
      *executables == approved_runtime ? ear_status::affirming : ear_status::warning;

  attestation_result out;
  out.status = status;
  out.trust = trust;
  out.attested_key = verified->attested_key_spki;
  out.verifier = {.developer = options.developer, .build = std::string(verifier_build)};
  out.issued_at = now;
  out.nonce = bytes(expected_nonce.begin(), expected_nonce.end());
  out.submodules.push_back({.name = options.submodule,
                            .status = status,
                            .trust = trust,
                            .attested_key = verified->attested_key_spki,
                            .policy_id = {}});
  return out;
}

}  // namespace atls::verify
