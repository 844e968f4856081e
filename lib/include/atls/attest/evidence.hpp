// Parsec TPM key-attestation evidence (media type below): the CBOR container, the TPM 2.0
// structures inside it, and their signature checks. Everything here parses untrusted bytes:
// pure functions, lengths checked before every read, trailing bytes rejected.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/system/error_category.hpp>

#include "atls/common/result.hpp"

namespace atls::attest {

inline constexpr std::string_view parsec_tpm_media_type =
    "application/vnd.parallaxsecond.key-attestation.tpm";

using bytes = std::vector<std::uint8_t>;

enum class evidence_errc {
  truncated = 1,          // input ends inside a structure
  trailing_bytes,         // bytes after the end of a structure
  malformed_cbor,         // not the CBOR shape of the format (types, keys, lengths, indefinite)
  oversized,              // a length beyond the format's bounds
  missing_field,          // a required map key is absent
  duplicate_field,        // a map key appears twice
  unexpected_field,       // a map key the format does not have
  bad_tpm_version,        // tpmVer is not "2.0"
  kid_mismatch,           // kat.kid != pat.kid, or kid is not 0x01 followed by 32 bytes
  bad_magic,              // TPMS_ATTEST.magic is not TPM_GENERATED_VALUE
  wrong_attest_type,      // certInfo is not TPM_ST_ATTEST_CERTIFY, or attestInfo not ..._QUOTE
  unsupported_algorithm,  // a signature or key algorithm other than ECDSA/ECC P-256 with SHA-256
  bad_signature,          // a signature does not verify with the attestation key
  nonce_mismatch,         // extraData differs from the expected challenge
  name_mismatch,          // the certified name is not the name of pubArea
  malformed_tpm,          // a TPM field outside its type's values (TPMI_YES_NO, an empty ECDSA
                          // component, a point not on the curve)
  key_not_tpm_bound,      // pubArea lacks fixedTPM or sensitiveDataOrigin: the key may exist
                          // outside the TPM, so certifying it proves nothing about where it lives
};

const boost::system::error_category& evidence_category() noexcept;

inline error_code make_error_code(evidence_errc e) noexcept {
  return {static_cast<int>(e), evidence_category()};
}

// The container, field for field. Encoding is canonical: the map keys in the order of the
// Veraison vector (kat: tpmVer, sig, kid, pubArea, certInfo; pat: tpmVer, sig, kid,
// attestInfo; note sig before kid, unlike the vectors README), definite lengths, shortest
// length encodings.
struct parsec_tpm_evidence {
  bytes kid;          // 33 bytes: 0x01 (UEID type RAND) || 32 bytes
  bytes kat_sig;      // TPMT_SIGNATURE by the AK over cert_info
  bytes pub_area;     // TPMT_PUBLIC of the attested key, no TPM2B size prefix
  bytes cert_info;    // TPMS_ATTEST from TPM2_Certify
  bytes pat_sig;      // TPMT_SIGNATURE by the AK over attest_info
  bytes attest_info;  // TPMS_ATTEST from TPM2_Quote

  bool operator==(const parsec_tpm_evidence&) const = default;
};

[[nodiscard]] bytes encode(const parsec_tpm_evidence& evidence);
// Fails with evidence_errc. Limits: the whole input at most 64 KiB, each byte string at most
// 4 KiB. Strict: definite lengths in shortest form only, no tags or floats, no duplicate or
// unknown keys; the keys of a map may come in any order. The kid must be 0x01 || 32 bytes and
// the same in kat and pat (kid_mismatch). The TPM structures inside are not parsed here.
[[nodiscard]] result<parsec_tpm_evidence> decode(std::span<const std::uint8_t> cbor);

// TPM 2.0 structures (TPM 2.0 Library Part 2), as far as this format uses them.
struct pcr_selection {
  std::uint16_t hash_alg = 0;      // TPM_ALG_ID, e.g. 0x000B SHA-256
  std::vector<std::uint8_t> pcrs;  // selected PCR indices, ascending

  bool operator==(const pcr_selection&) const = default;
};

struct certify_info {
  bytes name;  // TPM2B_NAME of the certified object (nameAlg || digest)
  bytes qualified_name;

  bool operator==(const certify_info&) const = default;
};

struct quote_info {
  std::vector<pcr_selection> selections;
  bytes pcr_digest;

  bool operator==(const quote_info&) const = default;
};

struct tpms_attest {
  std::uint16_t type = 0;  // TPM_ST_ATTEST_CERTIFY 0x8017 or TPM_ST_ATTEST_QUOTE 0x8018
  bytes qualified_signer;
  bytes extra_data;  // the challenge
  std::uint64_t clock = 0;
  std::uint32_t reset_count = 0;
  std::uint32_t restart_count = 0;
  bool safe = false;
  std::uint64_t firmware_version = 0;
  std::variant<certify_info, quote_info> attested;

  bool operator==(const tpms_attest&) const = default;
};

struct ecdsa_signature {
  std::uint16_t hash_alg = 0;
  bytes r;
  bytes s;

  bool operator==(const ecdsa_signature&) const = default;
};

struct ecc_public_key {
  std::uint16_t name_alg = 0;
  std::uint32_t object_attributes = 0;
  std::uint16_t curve = 0;  // TPM_ECC_NIST_P256 0x0003
  bytes x;
  bytes y;

  bool operator==(const ecc_public_key&) const = default;
};

// Each parser takes the whole structure: a short input is truncated, a longer one
// trailing_bytes, a TPM2B beyond the size of its union (e.g. a TPM2B_NAME over 66 bytes)
// oversized. parse_attest: bad_magic, wrong_attest_type for a type other than certify/quote,
// malformed_tpm for `safe` not 0/1. parse_signature: unsupported_algorithm for a signature
// other than ECDSA, malformed_tpm for an empty r or s. parse_ecc_public: unsupported_algorithm for
// a key other than ECC or an unknown scheme selector (its union could not be parsed).
[[nodiscard]] result<tpms_attest> parse_attest(std::span<const std::uint8_t> data);
[[nodiscard]] result<ecdsa_signature> parse_signature(std::span<const std::uint8_t> data);
[[nodiscard]] result<ecc_public_key> parse_ecc_public(std::span<const std::uint8_t> data);

// The TPM name of a TPMT_PUBLIC: nameAlg (big-endian) || Hash_nameAlg(pub_area). SHA-256 only.
[[nodiscard]] result<bytes> tpm_name(std::span<const std::uint8_t> pub_area);

// DER SubjectPublicKeyInfo of a P-256 key given as TPMT_PUBLIC (for the AK or the attested key).
// unsupported_algorithm for another curve, malformed_tpm for a point not on the curve. Both
// fail with the generic errc::not_enough_memory when OpenSSL cannot allocate.
[[nodiscard]] result<bytes> spki_der(std::span<const std::uint8_t> pub_area);

// What a verifier learns from evidence whose signatures and bindings all checked out.
struct verified_evidence {
  tpms_attest certify;
  tpms_attest quote;
  bytes attested_key_spki;  // DER SPKI of pub_area: the TLS key the evidence vouches for
};

// Checks the evidence against an attestation key (DER SPKI, P-256) and the expected challenge:
// both ECDSA signatures, both extraData values (constant-time compare), the certified name
// against pubArea, the attest types, the algorithms, and that the attested key was created in
// and cannot leave the TPM (fixedTPM, sensitiveDataOrigin). Fails with evidence_errc:
// unsupported_algorithm also for an AK that is not the DER SPKI of a named P-256 key, and
// nonce_mismatch for an empty expected_nonce (it would make any replayed evidence fresh); or
// with the generic errc::not_enough_memory. Leaves the calling thread's OpenSSL error queue as
// it found it.
[[nodiscard]] result<verified_evidence> verify(const parsec_tpm_evidence& evidence,
                                               std::span<const std::uint8_t> ak_spki_der,
                                               std::span<const std::uint8_t> expected_nonce);

// The decoded evidence as JSON text (kid, nonce, PCR selection and digest, clock info, the
// attested key's SPKI), for `atlsctl evidence dump`. Byte strings are lower-case hex. Checks
// nothing and never fails: a part that does not parse shows as {"error": "<message>"}.
[[nodiscard]] std::string to_json(const parsec_tpm_evidence& evidence);

}  // namespace atls::attest

template <>
struct boost::system::is_error_code_enum<atls::attest::evidence_errc> : std::true_type {};
