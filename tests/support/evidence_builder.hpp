// Parsec TPM evidence for tests: the Veraison vector and its AK, and evidence crafted by hand
// with TPM structures marshalled here and signed by a software "AK", so that tests can reach the
// checks that the fixed vector cannot (other nonces, PCRs, keys, attributes, tampered parts).
//
// Failures (an OpenSSL call that should not fail, a vector file that cannot be read) throw
// std::runtime_error, which doctest reports as a failed test; this also works on a test server's
// own thread, where doctest assertions would not.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/types.h>

#include "atls/attest/evidence.hpp"

namespace atls::test {

using bytes = std::vector<std::uint8_t>;

struct pkey_deleter {
  void operator()(EVP_PKEY* p) const noexcept;
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;

// ---------------------------------------------------------------------------------------------
// The Veraison vector (../shared/vectors/README.md).

// ATLS_SOURCE_DIR "/../shared/vectors/", with the trailing slash.
[[nodiscard]] std::string vectors_dir();
[[nodiscard]] bytes read_binary_file(const std::string& path);
// parsec-tpm-evidence.cbor, read once.
[[nodiscard]] const bytes& vector_cbor();
[[nodiscard]] attest::parsec_tpm_evidence vector_evidence();
// ak-pub.pem as DER SubjectPublicKeyInfo.
[[nodiscard]] const bytes& vector_ak();
// The challenge in both extraData fields of the vector: DEADBEEFDEADBEEF.
inline const bytes vector_nonce{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef};

// ---------------------------------------------------------------------------------------------
// Small helpers.

// Lower- or upper-case hex, even length; throws otherwise.
[[nodiscard]] bytes from_hex(std::string_view hex);
[[nodiscard]] std::string to_hex(std::span<const std::uint8_t> data);
[[nodiscard]] bytes sha256(std::span<const std::uint8_t> data);
// A fresh EC key on the named curve ("P-256", "P-384").
[[nodiscard]] pkey_ptr generate_key(const char* curve = "P-256");
[[nodiscard]] bytes spki_of(EVP_PKEY* key);
// PEM "PUBLIC KEY" of a key, e.g. to write a policy file's trusted AK.
[[nodiscard]] std::string public_pem_of(EVP_PKEY* key);

// TPM marshalling: big-endian integers, TPM2B = u16 size || bytes.
struct tpm_out {
  bytes out;

  tpm_out& u8(std::uint8_t v);
  tpm_out& u16(std::uint16_t v);
  tpm_out& u32(std::uint32_t v);
  tpm_out& u64(std::uint64_t v);
  tpm_out& raw(std::span<const std::uint8_t> b);
  tpm_out& tpm2b(std::span<const std::uint8_t> b);
};

// ---------------------------------------------------------------------------------------------
// TPM structures (TPM 2.0 Part 2).

inline constexpr std::uint16_t tpm_alg_sha1 = 0x0004;
inline constexpr std::uint16_t tpm_alg_sha256 = 0x000b;
inline constexpr std::uint16_t tpm_alg_sha384 = 0x000c;
inline constexpr std::uint16_t tpm_st_attest_certify = 0x8017;
inline constexpr std::uint16_t tpm_st_attest_quote = 0x8018;
// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | sign, as the vector's TIK.
inline constexpr std::uint32_t tpm_key_attributes = 0x00040072;
inline constexpr std::uint32_t tpma_fixed_tpm = 0x00000002;
inline constexpr std::uint32_t tpma_sensitive_data_origin = 0x00000020;

struct pub_area_options {
  std::uint16_t name_alg = tpm_alg_sha256;
  std::uint32_t attributes = tpm_key_attributes;
  std::uint16_t scheme = 0x0018;  // ECDSA; 0x0010 (NULL) for none
  std::uint16_t curve = 0x0003;   // NIST P-256
};

// TPMT_PUBLIC of an ECC key (no TPM2B size prefix), with the key's point.
[[nodiscard]] bytes make_pub_area(EVP_PKEY* key, const pub_area_options& o = {});
// The TPM name of a TPMT_PUBLIC with nameAlg SHA-256: 0x000b || SHA-256(pub_area).
[[nodiscard]] bytes tpm_name_of(std::span<const std::uint8_t> pub_area);
// TPMS_ATTEST with a fixed qualifiedSigner and clock info; `attested` is the marshalled union
// member (certify_attested or quote_attested).
[[nodiscard]] bytes make_attest(std::uint16_t type, std::span<const std::uint8_t> extra_data,
                                std::span<const std::uint8_t> attested, std::uint8_t safe = 1);
// TPMS_CERTIFY_INFO: name and qualifiedName (both set to name).
[[nodiscard]] bytes certify_attested(std::span<const std::uint8_t> name);
// TPMS_QUOTE_INFO: a TPML_PCR_SELECTION (sizeofSelect 3, or more for PCRs above 23) and
// pcrDigest.
[[nodiscard]] bytes quote_attested(const std::vector<attest::pcr_selection>& selections,
                                   std::span<const std::uint8_t> pcr_digest);
// The vector's quote: sha256 PCRs 0, 1, 2, all zero.
[[nodiscard]] bytes quote_attested();

struct sign_options {
  std::uint16_t hash_alg = tpm_alg_sha256;  // written into the TPMT_SIGNATURE; signing is SHA-256
  bool strip_leading_zeros = false;         // as some TPM stacks marshal r and s
};

// TPMT_SIGNATURE (ECDSA) by key over SHA-256(data), r and s as 32-byte big-endian integers.
// had_leading_zero, if given, says whether r or s started with a zero octet.
[[nodiscard]] bytes sign_tpmt(EVP_PKEY* key, std::span<const std::uint8_t> data,
                              const sign_options& o = {}, bool* had_leading_zero = nullptr);

// The size of a PCR of bank `hash_alg` (20, 32, 48 or 64).
[[nodiscard]] std::size_t pcr_size(std::uint16_t hash_alg);

// ---------------------------------------------------------------------------------------------
// Evidence from a software AK and TIK, each part adjustable. Defaults give evidence shaped like
// the Veraison vector (nonce DEADBEEFDEADBEEF, sha256 PCRs 0, 1, 2 all zero) but with fresh
// keys, which attest::verify accepts with ak_spki() and vector_nonce.
struct evidence_builder {
  pkey_ptr ak = generate_key("P-256");
  pkey_ptr tik = generate_key("P-256");
  pub_area_options pub;
  bytes kid = default_kid();

  // extraData of the certify (kat) and of the quote (pat).
  bytes certify_nonce = vector_nonce;
  bytes quote_nonce = vector_nonce;

  // What the quote selects, and the PCR values it is over: pcrDigest is SHA-256 of the values
  // of the selected PCRs concatenated in selection order (TPM 2.0 Part 3 §18.4). A selected PCR
  // without a value here is all zeros of its bank's size.
  std::vector<attest::pcr_selection> selections{{.hash_alg = tpm_alg_sha256, .pcrs = {0, 1, 2}}};
  std::map<std::uint8_t, bytes> pcr_values;
  // Replaces the computed pcrDigest.
  std::optional<bytes> pcr_digest_override;

  // Replaces the name the certify vouches for (default: the name of the pubArea).
  std::optional<bytes> certified_name;
  // Puts the certify's signature in pat and the quote's in kat.
  bool swap_signatures = false;
  // Signs the quote with this key instead of the AK (mixed evidence).
  EVP_PKEY* quote_signer = nullptr;

  [[nodiscard]] attest::parsec_tpm_evidence build() const;
  // encode(build()).
  [[nodiscard]] bytes cbor() const;
  [[nodiscard]] bytes ak_spki() const;
  [[nodiscard]] bytes tik_spki() const;
  [[nodiscard]] bytes pub_area() const;
  [[nodiscard]] bytes pcr_digest() const;

  static bytes default_kid();
};

}  // namespace atls::test
