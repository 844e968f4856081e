#include "atls/attest/evidence.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <memory>
#include <utility>

#include <boost/json.hpp>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "atls/common/hex.hpp"
#include "atls/common/openssl_error_scope.hpp"
#include "atls/common/openssl_ptr.hpp"

#include "detail/cbor.hpp"

namespace atls::attest {

namespace {

namespace json = boost::json;

// ---------------------------------------------------------------------------------------------
// Constants of TPM 2.0 Library Part 2 (Structures), section numbers of revision 1.59.

// §6.2 TPM_GENERATED_VALUE: TPMS_ATTEST.magic, so that a signature over a TPMS_ATTEST cannot be
// confused with one over an external digest (TPM2_Sign refuses data starting with it).
constexpr std::uint32_t tpm_generated_value = 0xff544347;

// §6.9 TPM_ST
constexpr std::uint16_t tpm_st_attest_certify = 0x8017;
constexpr std::uint16_t tpm_st_attest_quote = 0x8018;

// §6.3 TPM_ALG_ID
namespace alg {
constexpr std::uint16_t tdes = 0x0003;
constexpr std::uint16_t sha1 = 0x0004;
constexpr std::uint16_t aes = 0x0006;
constexpr std::uint16_t mgf1 = 0x0007;
constexpr std::uint16_t sha256 = 0x000b;
constexpr std::uint16_t sha384 = 0x000c;
constexpr std::uint16_t sha512 = 0x000d;
constexpr std::uint16_t null = 0x0010;
constexpr std::uint16_t sm3_256 = 0x0012;
constexpr std::uint16_t sm4 = 0x0013;
constexpr std::uint16_t ecdsa = 0x0018;
constexpr std::uint16_t ecdh = 0x0019;
constexpr std::uint16_t ecdaa = 0x001a;
constexpr std::uint16_t sm2 = 0x001b;
constexpr std::uint16_t ecschnorr = 0x001c;
constexpr std::uint16_t ecmqv = 0x001d;
constexpr std::uint16_t kdf1_sp800_56a = 0x0020;
constexpr std::uint16_t kdf2 = 0x0021;
constexpr std::uint16_t kdf1_sp800_108 = 0x0022;
constexpr std::uint16_t ecc = 0x0023;
constexpr std::uint16_t camellia = 0x0026;
constexpr std::uint16_t sha3_256 = 0x0027;
constexpr std::uint16_t sha3_384 = 0x0028;
constexpr std::uint16_t sha3_512 = 0x0029;
}  // namespace alg

// §6.4 TPM_ECC_CURVE
constexpr std::uint16_t tpm_ecc_nist_p256 = 0x0003;

// §8.3 TPMA_OBJECT bits, in the order of the table.
struct attribute_bit {
  std::uint32_t mask;
  std::string_view name;
};
constexpr std::array<attribute_bit, 12> object_attribute_bits{{
    {0x00000002, "fixedTPM"},
    {0x00000004, "stClear"},
    {0x00000010, "fixedParent"},
    {0x00000020, "sensitiveDataOrigin"},
    {0x00000040, "userWithAuth"},
    {0x00000080, "adminWithPolicy"},
    {0x00000400, "noDA"},
    {0x00000800, "encryptedDuplication"},
    {0x00010000, "restricted"},
    {0x00020000, "decrypt"},
    {0x00040000, "sign"},
    {0x00080000, "x509sign"},
}};
constexpr std::uint32_t attr_fixed_tpm = 0x00000002;
constexpr std::uint32_t attr_sensitive_data_origin = 0x00000020;

// Upper bounds of the TPM2B buffers, from the sizes of the unions they hold. Digests are at most
// SHA-512 (TPMU_HA, 64 bytes); a TPMT_HA adds its 2-byte algorithm; a TPM2B_NAME holds a TPMT_HA
// or a 4-byte handle (§10.5.3); TPM2B_DATA is sized by TPMT_HA (§10.4.3). MAX_ECC_KEY_BYTES is
// implementation-defined: 66 covers P-521, the largest curve of the TCG algorithm registry.
constexpr std::size_t max_digest = 64;
constexpr std::size_t max_name = 2 + max_digest;
constexpr std::size_t max_data = 2 + max_digest;
constexpr std::size_t max_ecc_parameter = 66;
// HASH_COUNT and PCR_SELECT_MAX are implementation-defined too; these are the values of the TCG
// TSS headers (TPM2_NUM_PCR_BANKS, TPM2_PCR_SELECT_MAX for 32 PCRs), which no TPM exceeds.
constexpr std::size_t max_pcr_banks = 16;
constexpr std::size_t max_pcr_select = 4;

// A P-256 coordinate or ECDSA component.
constexpr std::size_t p256_size = 32;

// ---------------------------------------------------------------------------------------------
// Limits and keys of the CBOR container.

constexpr std::size_t max_evidence_size = std::size_t{64} * 1024;
constexpr std::size_t max_string_size = std::size_t{4} * 1024;
constexpr std::string_view tpm_version = "2.0";
// UEID type RAND (draft-ietf-rats-eat §4.2.1): 0x01 followed by the random bytes.
constexpr std::uint8_t ueid_type_rand = 0x01;
constexpr std::size_t kid_size = 33;

error_code out_of_memory() {
  return make_error_code(boost::system::errc::not_enough_memory);
}

// ---------------------------------------------------------------------------------------------
// TPM marshalling (Part 1 §18 and Part 2 §5: big-endian integers, TPM2B = u16 size || bytes).

// Reads fields from the front of a span in the style of BoringSSL's CBS: each read returns
// false on failure and records the first error, so a parse is a chain of reads joined with ||
// that stops at the first failure and never branches on a value it did not read.
class tpm_reader {
 public:
  explicit tpm_reader(std::span<const std::uint8_t> input) : rest_(input) {}

  bool u8(std::uint8_t& out) { return integer(out); }
  bool u16(std::uint16_t& out) { return integer(out); }
  bool u32(std::uint32_t& out) { return integer(out); }
  bool u64(std::uint64_t& out) { return integer(out); }

  // n raw bytes, borrowed from the input.
  bool take(std::size_t n, std::span<const std::uint8_t>& out) {
    if (rest_.size() < n) {
      return fail(evidence_errc::truncated);
    }
    out = rest_.first(n);
    rest_ = rest_.subspan(n);
    return true;
  }

  // A TPM2B whose buffer holds at most max_size bytes: oversized beyond, whatever the input.
  bool tpm2b(std::size_t max_size, bytes& out) {
    std::uint16_t size = 0;
    if (!u16(size)) {
      return false;
    }
    if (size > max_size) {
      return fail(evidence_errc::oversized);
    }
    std::span<const std::uint8_t> buffer;
    if (!take(size, buffer)) {
      return false;
    }
    out.assign(buffer.begin(), buffer.end());
    return true;
  }

  // Records e unless an error is already recorded; returns false for use in a chain.
  bool fail(evidence_errc e) {
    if (!error_) {
      error_ = e;
    }
    return false;
  }

  [[nodiscard]] bool at_end() const noexcept { return rest_.empty(); }
  [[nodiscard]] error_code error() const noexcept { return error_; }

 private:
  template <class Int>
  bool integer(Int& out) {
    if (rest_.size() < sizeof(Int)) {
      return fail(evidence_errc::truncated);
    }
    Int value = 0;
    for (std::size_t i = 0; i < sizeof(Int); ++i) {
      value = static_cast<Int>((static_cast<std::uint64_t>(value) << 8U) | rest_[i]);
    }
    rest_ = rest_.subspan(sizeof(Int));
    out = value;
    return true;
  }

  std::span<const std::uint8_t> rest_;
  error_code error_;
};

// TPMT_SYM_DEF_OBJECT (§11.1.7): algorithm, then keyBits and mode unless TPM_ALG_NULL.
// TPMI_ALG_SYM_OBJECT admits only block ciphers, so XOR (whose mode is empty) cannot appear.
bool skip_sym_def_object(tpm_reader& in) {
  std::uint16_t algorithm = 0;
  if (!in.u16(algorithm)) {
    return false;
  }
  if (algorithm == alg::null) {
    return true;
  }
  if (algorithm != alg::aes && algorithm != alg::sm4 && algorithm != alg::camellia &&
      algorithm != alg::tdes) {
    return in.fail(evidence_errc::unsupported_algorithm);
  }
  std::uint16_t key_bits = 0;
  std::uint16_t mode = 0;
  return in.u16(key_bits) && in.u16(mode);
}

// TPMT_ECC_SCHEME (§11.2.5.6): scheme, then the TPMU_ASYM_SCHEME member it selects. Every ECC
// scheme's details are a TPMS_SCHEME_HASH (hashAlg), except ECDAA's TPMS_SCHEME_ECDAA, which
// adds a u16 count (§11.2.3.2). An unknown selector leaves the length of its member unknown.
bool skip_ecc_scheme(tpm_reader& in) {
  std::uint16_t scheme = 0;
  if (!in.u16(scheme)) {
    return false;
  }
  if (scheme == alg::null) {
    return true;
  }
  std::uint16_t hash = 0;
  std::uint16_t count = 0;
  switch (scheme) {
    case alg::ecdsa:
    case alg::ecdh:
    case alg::sm2:
    case alg::ecschnorr:
    case alg::ecmqv:
      return in.u16(hash);
    case alg::ecdaa:
      return in.u16(hash) && in.u16(count);
    default:
      return in.fail(evidence_errc::unsupported_algorithm);
  }
}

// TPMT_KDF_SCHEME (§11.2.3.4): scheme, then hashAlg unless TPM_ALG_NULL.
bool skip_kdf_scheme(tpm_reader& in) {
  std::uint16_t scheme = 0;
  if (!in.u16(scheme)) {
    return false;
  }
  if (scheme == alg::null) {
    return true;
  }
  if (scheme != alg::mgf1 && scheme != alg::kdf1_sp800_56a && scheme != alg::kdf2 &&
      scheme != alg::kdf1_sp800_108) {
    return in.fail(evidence_errc::unsupported_algorithm);
  }
  std::uint16_t hash = 0;
  return in.u16(hash);
}

// TPML_PCR_SELECTION (§10.9.7) and TPMS_PCR_SELECTION (§10.6.2): bit j of pcrSelect[i] selects
// PCR 8*i + j.
result<std::vector<pcr_selection>> parse_pcr_selections(tpm_reader& in) {
  std::uint32_t count = 0;
  if (!in.u32(count)) {
    return in.error();
  }
  if (count > max_pcr_banks) {
    return evidence_errc::oversized;
  }
  std::vector<pcr_selection> out;
  out.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    pcr_selection selection;
    std::uint8_t size_of_select = 0;
    if (!in.u16(selection.hash_alg) || !in.u8(size_of_select)) {
      return in.error();
    }
    if (size_of_select > max_pcr_select) {
      return evidence_errc::oversized;
    }
    std::span<const std::uint8_t> bitmap;
    if (!in.take(size_of_select, bitmap)) {
      return in.error();
    }
    for (std::size_t octet = 0; octet < bitmap.size(); ++octet) {
      for (unsigned bit = 0; bit < 8; ++bit) {
        if (((bitmap[octet] >> bit) & 1U) != 0) {
          selection.pcrs.push_back(static_cast<std::uint8_t>(octet * 8 + bit));
        }
      }
    }
    out.push_back(std::move(selection));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Cryptography.

result<bytes> sha256(std::span<const std::uint8_t> data) {
  bytes digest(EVP_MAX_MD_SIZE);
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1) {
    return out_of_memory();
  }
  digest.resize(size);
  return digest;
}

// The attestation key: a DER SubjectPublicKeyInfo (RFC 5280 §4.1) of a named P-256 key. Explicit
// curve parameters are refused: they would let a crafted key pick its own group.
result<pkey_ptr> load_p256_spki(std::span<const std::uint8_t> der) {
  if (der.empty() || der.size() > max_string_size) {
    return evidence_errc::unsupported_algorithm;
  }
  const unsigned char* cursor = der.data();
  pkey_ptr key(d2i_PUBKEY(nullptr, &cursor, static_cast<long>(der.size())));
  if (!key || cursor != der.data() + der.size()) {
    return evidence_errc::unsupported_algorithm;
  }
  if (EVP_PKEY_is_a(key.get(), "EC") != 1) {
    return evidence_errc::unsupported_algorithm;
  }
  std::array<char, 64> group{};
  std::size_t group_size = 0;
  if (EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME, group.data(),
                                     group.size(), &group_size) != 1 ||
      std::string_view(group.data(), group_size) != SN_X9_62_prime256v1) {
    return evidence_errc::unsupported_algorithm;
  }
  return key;
}

// X.690 §8.3: a DER INTEGER is minimal two's complement, so leading zero octets go and a zero
// octet comes back when the top bit is set (r and s are positive).
void append_der_integer(bytes& out, std::span<const std::uint8_t> value) {
  while (!value.empty() && value.front() == 0) {
    value = value.subspan(1);
  }
  const bool pad = value.empty() || (value.front() & 0x80U) != 0;
  out.push_back(0x02);
  out.push_back(static_cast<std::uint8_t>(value.size() + (pad ? 1 : 0)));
  if (pad) {
    out.push_back(0x00);
  }
  out.insert(out.end(), value.begin(), value.end());
}

// The TPM gives r and s as big-endian integers (TPMS_SIGNATURE_ECDSA); OpenSSL wants the
// ECDSA-Sig-Value of RFC 3279 §2.2.3, SEQUENCE { r INTEGER, s INTEGER }, in DER. With r and s
// at most 32 bytes the content is at most 2 * 35 bytes, so every length is in short form.
bytes ecdsa_sig_value_der(std::span<const std::uint8_t> r, std::span<const std::uint8_t> s) {
  bytes integers;
  append_der_integer(integers, r);
  append_der_integer(integers, s);
  bytes out{0x30, static_cast<std::uint8_t>(integers.size())};
  out.insert(out.end(), integers.begin(), integers.end());
  return out;
}

// ECDSA P-256 with SHA-256 over the exact bytes of a TPMS_ATTEST (TPM2_Certify and TPM2_Quote
// sign the digest of the marshalled structure, Part 3 §18.2 and §18.4).
result<void> check_signature(EVP_PKEY* ak, std::span<const std::uint8_t> signed_bytes,
                             const ecdsa_signature& signature) {
  if (signature.hash_alg != alg::sha256) {
    return evidence_errc::unsupported_algorithm;
  }
  if (signature.r.size() > p256_size || signature.s.size() > p256_size) {
    return evidence_errc::bad_signature;
  }
  const bytes der = ecdsa_sig_value_der(signature.r, signature.s);
  const md_ctx_ptr ctx(EVP_MD_CTX_new());
  if (!ctx) {
    return out_of_memory();
  }
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, ak) != 1) {
    return evidence_errc::unsupported_algorithm;
  }
  if (EVP_DigestVerify(ctx.get(), der.data(), der.size(), signed_bytes.data(),
                       signed_bytes.size()) != 1) {
    return evidence_errc::bad_signature;
  }
  return {};
}

// The challenge is secret-dependent only in timing: compare without early exit (CRYPTO_memcmp)
// so that a peer probing with forged extraData learns nothing byte by byte.
bool nonce_equal(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool kid_well_formed(std::span<const std::uint8_t> kid) {
  return kid.size() == kid_size && kid[0] == ueid_type_rand;
}

// ---------------------------------------------------------------------------------------------
// The CBOR container.

// One map of the container, keyed by text. A field is either tpmVer (text, must be "2.0") or a
// byte string copied into `target`.
struct map_field {
  std::string_view key;
  bytes* target;  // nullptr: the tpmVer text field
};

result<void> decode_map(detail::cbor::reader& in, std::span<const map_field> fields) {
  auto pairs = in.map_head();
  if (!pairs) {
    return pairs.error();
  }
  std::uint32_t seen = 0;
  // The loop is bounded by the input: every pair consumes at least two bytes or fails.
  for (std::uint64_t i = 0; i < *pairs; ++i) {
    auto key = in.text_string(max_string_size);
    if (!key) {
      return key.error();
    }
    const auto field = std::ranges::find(fields, *key, &map_field::key);
    if (field == fields.end()) {
      return evidence_errc::unexpected_field;
    }
    const std::uint32_t bit = 1U << static_cast<unsigned>(field - fields.begin());
    if ((seen & bit) != 0) {
      return evidence_errc::duplicate_field;
    }
    seen |= bit;
    if (field->target == nullptr) {
      auto version = in.text_string(max_string_size);
      if (!version) {
        return version.error();
      }
      if (*version != tpm_version) {
        return evidence_errc::bad_tpm_version;
      }
      continue;
    }
    auto value = in.byte_string(max_string_size);
    if (!value) {
      return value.error();
    }
    field->target->assign(value->begin(), value->end());
  }
  if (seen != (1U << fields.size()) - 1) {
    return evidence_errc::missing_field;
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// JSON dump.

std::string hex_u64(std::uint64_t value) {
  const std::array<std::uint8_t, 8> be{
      static_cast<std::uint8_t>(value >> 56U), static_cast<std::uint8_t>(value >> 48U),
      static_cast<std::uint8_t>(value >> 40U), static_cast<std::uint8_t>(value >> 32U),
      static_cast<std::uint8_t>(value >> 24U), static_cast<std::uint8_t>(value >> 16U),
      static_cast<std::uint8_t>(value >> 8U),  static_cast<std::uint8_t>(value)};
  return "0x" + to_hex(be);
}

std::string hash_name(std::uint16_t id) {
  switch (id) {
    case alg::sha1:
      return "sha1";
    case alg::sha256:
      return "sha256";
    case alg::sha384:
      return "sha384";
    case alg::sha512:
      return "sha512";
    case alg::sm3_256:
      return "sm3_256";
    case alg::sha3_256:
      return "sha3_256";
    case alg::sha3_384:
      return "sha3_384";
    case alg::sha3_512:
      return "sha3_512";
    default:
      break;
  }
  const std::array<std::uint8_t, 2> be{static_cast<std::uint8_t>(id >> 8U),
                                       static_cast<std::uint8_t>(id)};
  return "0x" + to_hex(be);
}

json::object error_json(const error_code& ec) {
  return {{"error", ec.message()}};
}

json::value signature_json(std::span<const std::uint8_t> data) {
  auto signature = parse_signature(data);
  if (!signature) {
    return error_json(signature.error());
  }
  return json::object{{"alg", "ecdsa"}, {"hash", hash_name(signature->hash_alg)}};
}

json::value attest_json(const result<tpms_attest>& attest, std::span<const std::uint8_t> sig) {
  if (!attest) {
    return error_json(attest.error());
  }
  json::object out{
      {"type", attest->type == tpm_st_attest_certify ? "certify" : "quote"},
      {"qualified_signer", to_hex(attest->qualified_signer)},
      {"extra_data", to_hex(attest->extra_data)},
      {"clock_info",
       {{"clock", attest->clock},
        {"reset_count", attest->reset_count},
        {"restart_count", attest->restart_count},
        {"safe", attest->safe}}},
      // Obfuscated per signing key (Part 1 §36.8), so only equality between parts is meaningful.
      {"firmware_version", hex_u64(attest->firmware_version)},
  };
  if (const auto* certify = std::get_if<certify_info>(&attest->attested)) {
    out["name"] = to_hex(certify->name);
    out["qualified_name"] = to_hex(certify->qualified_name);
  }
  if (const auto* quote = std::get_if<quote_info>(&attest->attested)) {
    json::array selections;
    for (const auto& selection : quote->selections) {
      json::array pcrs;
      for (const auto pcr : selection.pcrs) {
        pcrs.emplace_back(pcr);
      }
      selections.emplace_back(
          json::object{{"hash", hash_name(selection.hash_alg)}, {"pcrs", std::move(pcrs)}});
    }
    out["pcr_selections"] = std::move(selections);
    out["pcr_digest"] = to_hex(quote->pcr_digest);
  }
  out["signature"] = signature_json(sig);
  return out;
}

json::value attested_key_json(std::span<const std::uint8_t> pub_area) {
  auto key = parse_ecc_public(pub_area);
  if (!key) {
    return error_json(key.error());
  }
  json::array attributes;
  for (const auto& bit : object_attribute_bits) {
    if ((key->object_attributes & bit.mask) != 0) {
      attributes.emplace_back(bit.name);
    }
  }
  json::object out{
      {"name_alg", hash_name(key->name_alg)},
      {"object_attributes", std::move(attributes)},
      {"curve",
       key->curve == tpm_ecc_nist_p256 ? json::value("nist_p256") : json::value(key->curve)},
  };
  auto name = tpm_name(pub_area);
  out["name"] = name ? json::value(to_hex(*name)) : json::value(error_json(name.error()));
  auto spki = spki_der(pub_area);
  out["spki_der"] = spki ? json::value(to_hex(*spki)) : json::value(error_json(spki.error()));
  return out;
}

// Two-space indentation; arrays of scalars stay on one line ("pcrs": [0, 1, 2]).
void pretty_print(std::string& out, const json::value& v, std::size_t indent) {
  const std::string inner(indent + 2, ' ');
  if (const auto* object = v.if_object(); object != nullptr && !object->empty()) {
    out += "{\n";
    bool first = true;
    for (const auto& member : *object) {
      out += first ? "" : ",\n";
      first = false;
      out += inner + json::serialize(member.key()) + ": ";
      pretty_print(out, member.value(), indent + 2);
    }
    out += "\n" + std::string(indent, ' ') + "}";
    return;
  }
  const auto* array = v.if_array();
  const bool nested =
      array != nullptr && std::any_of(array->begin(), array->end(),
                                      [](const json::value& e) { return e.is_structured(); });
  if (array != nullptr && !nested) {
    out += "[";
    for (std::size_t i = 0; i < array->size(); ++i) {
      out += (i == 0 ? "" : ", ") + json::serialize((*array)[i]);
    }
    out += "]";
    return;
  }
  if (!nested) {
    out += json::serialize(v);
    return;
  }
  out += "[\n";
  bool first = true;
  for (const auto& element : *array) {
    out += first ? "" : ",\n";
    first = false;
    out += inner;
    pretty_print(out, element, indent + 2);
  }
  out += "\n" + std::string(indent, ' ') + "]";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "atls.attest.evidence"; }
  std::string message(int value) const override {
    switch (static_cast<evidence_errc>(value)) {
      case evidence_errc::truncated:
        return "evidence ends inside a structure";
      case evidence_errc::trailing_bytes:
        return "bytes follow the end of a structure";
      case evidence_errc::malformed_cbor:
        return "evidence is not the CBOR shape of the Parsec TPM format";
      case evidence_errc::oversized:
        return "a length exceeds the format's bounds";
      case evidence_errc::missing_field:
        return "a required field is missing";
      case evidence_errc::duplicate_field:
        return "a field appears twice";
      case evidence_errc::unexpected_field:
        return "a field the format does not define";
      case evidence_errc::bad_tpm_version:
        return "tpmVer is not \"2.0\"";
      case evidence_errc::kid_mismatch:
        return "kid is not 0x01 followed by 32 bytes, or differs between kat and pat";
      case evidence_errc::bad_magic:
        return "TPMS_ATTEST magic is not TPM_GENERATED_VALUE";
      case evidence_errc::wrong_attest_type:
        return "TPMS_ATTEST is not the expected certify or quote structure";
      case evidence_errc::unsupported_algorithm:
        return "algorithm other than ECDSA P-256 with SHA-256";
      case evidence_errc::bad_signature:
        return "signature does not verify with the attestation key";
      case evidence_errc::nonce_mismatch:
        return "extraData differs from the expected challenge";
      case evidence_errc::name_mismatch:
        return "certified name is not the name of pubArea";
      case evidence_errc::malformed_tpm:
        return "TPM structure holds a value its type does not allow";
      case evidence_errc::key_not_tpm_bound:
        return "attested key is not fixedTPM with sensitiveDataOrigin";
    }
    return "unknown atls.attest.evidence error";
  }
};

}  // namespace

const boost::system::error_category& evidence_category() noexcept {
  static const category instance;
  return instance;
}

bytes encode(const parsec_tpm_evidence& evidence) {
  // The key order of the Veraison vector (and of the Go reference encoder that produced it):
  // tpmVer, sig, kid, then the payload fields. Keeping it makes encode(decode(v)) == v.
  detail::cbor::writer out;
  out.map_head(2);
  out.text_string("kat");
  out.map_head(5);
  out.text_string("tpmVer");
  out.text_string(tpm_version);
  out.text_string("sig");
  out.byte_string(evidence.kat_sig);
  out.text_string("kid");
  out.byte_string(evidence.kid);
  out.text_string("pubArea");
  out.byte_string(evidence.pub_area);
  out.text_string("certInfo");
  out.byte_string(evidence.cert_info);
  out.text_string("pat");
  out.map_head(4);
  out.text_string("tpmVer");
  out.text_string(tpm_version);
  out.text_string("sig");
  out.byte_string(evidence.pat_sig);
  out.text_string("kid");
  out.byte_string(evidence.kid);
  out.text_string("attestInfo");
  out.byte_string(evidence.attest_info);
  return out.take();
}

result<parsec_tpm_evidence> decode(std::span<const std::uint8_t> cbor) {
  if (cbor.size() > max_evidence_size) {
    return evidence_errc::oversized;
  }
  parsec_tpm_evidence out;
  bytes kat_kid;
  bytes pat_kid;
  const std::array<map_field, 5> kat_fields{{{"tpmVer", nullptr},
                                             {"kid", &kat_kid},
                                             {"sig", &out.kat_sig},
                                             {"pubArea", &out.pub_area},
                                             {"certInfo", &out.cert_info}}};
  const std::array<map_field, 4> pat_fields{{{"tpmVer", nullptr},
                                             {"kid", &pat_kid},
                                             {"sig", &out.pat_sig},
                                             {"attestInfo", &out.attest_info}}};

  detail::cbor::reader in(cbor);
  auto pairs = in.map_head();
  if (!pairs) {
    return pairs.error();
  }
  bool seen_kat = false;
  bool seen_pat = false;
  for (std::uint64_t i = 0; i < *pairs; ++i) {
    auto key = in.text_string(max_string_size);
    if (!key) {
      return key.error();
    }
    bool* seen = *key == "kat" ? &seen_kat : *key == "pat" ? &seen_pat : nullptr;
    if (seen == nullptr) {
      return evidence_errc::unexpected_field;
    }
    if (*seen) {
      return evidence_errc::duplicate_field;
    }
    *seen = true;
    const std::span<const map_field> fields =
        seen == &seen_kat ? std::span<const map_field>(kat_fields) : pat_fields;
    if (auto r = decode_map(in, fields); !r) {
      return r.error();
    }
  }
  if (!seen_kat || !seen_pat) {
    return evidence_errc::missing_field;
  }
  if (!in.at_end()) {
    return evidence_errc::trailing_bytes;
  }
  // Veraison takes base64(kid) as the instance id that selects the trust anchor, so both parts
  // must name the same AK (veraison/parsec tpm validateKatPat).
  if (!kid_well_formed(kat_kid) || kat_kid != pat_kid) {
    return evidence_errc::kid_mismatch;
  }
  out.kid = std::move(kat_kid);
  return out;
}

result<tpms_attest> parse_attest(std::span<const std::uint8_t> data) {
  // TPMS_ATTEST, Part 2 §10.12.12.
  tpm_reader in(data);
  std::uint32_t magic = 0;
  if (!in.u32(magic)) {
    return in.error();
  }
  if (magic != tpm_generated_value) {
    return evidence_errc::bad_magic;
  }
  tpms_attest out;
  if (!in.u16(out.type)) {
    return in.error();
  }
  // The union member is selected by type; only these two are part of the format.
  if (out.type != tpm_st_attest_certify && out.type != tpm_st_attest_quote) {
    return evidence_errc::wrong_attest_type;
  }
  std::uint8_t safe = 0;
  if (!in.tpm2b(max_name, out.qualified_signer) || !in.tpm2b(max_data, out.extra_data) ||
      !in.u64(out.clock) || !in.u32(out.reset_count) || !in.u32(out.restart_count) ||
      !in.u8(safe) || !in.u64(out.firmware_version)) {
    return in.error();
  }
  // TPMS_CLOCK_INFO.safe is a TPMI_YES_NO (§9.2): any value but 0 or 1 is TPM_RC_VALUE.
  if (safe > 1) {
    return evidence_errc::malformed_tpm;
  }
  out.safe = safe == 1;
  if (out.type == tpm_st_attest_certify) {
    // TPMS_CERTIFY_INFO, §10.12.3.
    certify_info certify;
    if (!in.tpm2b(max_name, certify.name) || !in.tpm2b(max_name, certify.qualified_name)) {
      return in.error();
    }
    out.attested = std::move(certify);
  } else {
    // TPMS_QUOTE_INFO, §10.12.4.
    quote_info quote;
    auto selections = parse_pcr_selections(in);
    if (!selections) {
      return selections.error();
    }
    quote.selections = std::move(*selections);
    if (!in.tpm2b(max_digest, quote.pcr_digest)) {
      return in.error();
    }
    out.attested = std::move(quote);
  }
  if (!in.at_end()) {
    return evidence_errc::trailing_bytes;
  }
  return out;
}

result<ecdsa_signature> parse_signature(std::span<const std::uint8_t> data) {
  // TPMT_SIGNATURE (§11.3.4) with the TPMS_SIGNATURE_ECDSA member (§11.3.2).
  tpm_reader in(data);
  std::uint16_t sig_alg = 0;
  if (!in.u16(sig_alg)) {
    return in.error();
  }
  if (sig_alg != alg::ecdsa) {
    return evidence_errc::unsupported_algorithm;
  }
  ecdsa_signature out;
  if (!in.u16(out.hash_alg) || !in.tpm2b(max_ecc_parameter, out.r) ||
      !in.tpm2b(max_ecc_parameter, out.s)) {
    return in.error();
  }
  if (!in.at_end()) {
    return evidence_errc::trailing_bytes;
  }
  // r and s lie in [1, n-1] (SEC 1 §4.1.4 step 1); an empty buffer is zero.
  if (out.r.empty() || out.s.empty()) {
    return evidence_errc::malformed_tpm;
  }
  return out;
}

result<ecc_public_key> parse_ecc_public(std::span<const std::uint8_t> data) {
  // TPMT_PUBLIC (§12.2.4) with TPMS_ECC_PARMS (§12.2.3.6) and TPMS_ECC_POINT (§11.2.5.2).
  tpm_reader in(data);
  std::uint16_t type = 0;
  if (!in.u16(type)) {
    return in.error();
  }
  if (type != alg::ecc) {
    return evidence_errc::unsupported_algorithm;
  }
  ecc_public_key out;
  bytes auth_policy;
  if (!in.u16(out.name_alg) || !in.u32(out.object_attributes) ||
      !in.tpm2b(max_digest, auth_policy) || !skip_sym_def_object(in) || !skip_ecc_scheme(in) ||
      !in.u16(out.curve) || !skip_kdf_scheme(in) || !in.tpm2b(max_ecc_parameter, out.x) ||
      !in.tpm2b(max_ecc_parameter, out.y)) {
    return in.error();
  }
  if (!in.at_end()) {
    return evidence_errc::trailing_bytes;
  }
  return out;
}

result<bytes> tpm_name(std::span<const std::uint8_t> pub_area) {
  // Part 1 §16: Name = nameAlg || H_nameAlg(TPMT_PUBLIC). The structure is parsed first so that
  // only a well-formed public area has a name.
  auto key = parse_ecc_public(pub_area);
  if (!key) {
    return key.error();
  }
  if (key->name_alg != alg::sha256) {
    return evidence_errc::unsupported_algorithm;
  }
  const openssl_error_scope errors;
  auto digest = sha256(pub_area);
  if (!digest) {
    return digest.error();
  }
  bytes name{static_cast<std::uint8_t>(alg::sha256 >> 8U),
             static_cast<std::uint8_t>(alg::sha256 & 0xffU)};
  name.insert(name.end(), digest->begin(), digest->end());
  return name;
}

result<bytes> spki_der(std::span<const std::uint8_t> pub_area) {
  auto key = parse_ecc_public(pub_area);
  if (!key) {
    return key.error();
  }
  if (key->curve != tpm_ecc_nist_p256) {
    return evidence_errc::unsupported_algorithm;
  }
  if (key->x.empty() || key->y.empty() || key->x.size() > p256_size || key->y.size() > p256_size) {
    return evidence_errc::malformed_tpm;
  }
  // SEC 1 §2.3.3 uncompressed point: 0x04 || X || Y, each coordinate left-padded to 32 bytes
  // (a TPM2B_ECC_PARAMETER may drop leading zero octets).
  std::array<std::uint8_t, 1 + 2 * p256_size> point{0x04};
  std::copy(key->x.begin(), key->x.end(),
            point.begin() + static_cast<std::ptrdiff_t>(1 + p256_size - key->x.size()));
  std::copy(key->y.begin(), key->y.end(), point.end() - static_cast<std::ptrdiff_t>(key->y.size()));

  const openssl_error_scope errors;
  const param_bld_ptr builder(OSSL_PARAM_BLD_new());
  if (!builder ||
      OSSL_PARAM_BLD_push_utf8_string(builder.get(), OSSL_PKEY_PARAM_GROUP_NAME,
                                      SN_X9_62_prime256v1, 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return out_of_memory();
  }
  const param_ptr params(OSSL_PARAM_BLD_to_param(builder.get()));
  const pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return out_of_memory();
  }
  EVP_PKEY* raw = nullptr;
  // The import decodes the point with EC_POINT_oct2point, which refuses a point that is not on
  // the curve: an invalid-curve point never reaches a peer or verifier.
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return evidence_errc::malformed_tpm;
  }
  const pkey_ptr pkey(raw);
  const int size = i2d_PUBKEY(pkey.get(), nullptr);
  if (size <= 0) {
    return out_of_memory();
  }
  bytes der(static_cast<std::size_t>(size));
  unsigned char* cursor = der.data();
  if (i2d_PUBKEY(pkey.get(), &cursor) != size) {
    return out_of_memory();
  }
  return der;
}

result<verified_evidence> verify(const parsec_tpm_evidence& evidence,
                                 std::span<const std::uint8_t> ak_spki_der,
                                 std::span<const std::uint8_t> expected_nonce) {
  const openssl_error_scope errors;
  if (!kid_well_formed(evidence.kid)) {
    return evidence_errc::kid_mismatch;
  }
  auto certify = parse_attest(evidence.cert_info);
  if (!certify) {
    return certify.error();
  }
  if (certify->type != tpm_st_attest_certify) {
    return evidence_errc::wrong_attest_type;
  }
  auto quote = parse_attest(evidence.attest_info);
  if (!quote) {
    return quote.error();
  }
  if (quote->type != tpm_st_attest_quote) {
    return evidence_errc::wrong_attest_type;
  }
  auto kat_sig = parse_signature(evidence.kat_sig);
  if (!kat_sig) {
    return kat_sig.error();
  }
  auto pat_sig = parse_signature(evidence.pat_sig);
  if (!pat_sig) {
    return pat_sig.error();
  }
  auto ak = load_p256_spki(ak_spki_der);
  if (!ak) {
    return ak.error();
  }
  if (auto r = check_signature(ak->get(), evidence.cert_info, *kat_sig); !r) {
    return r.error();
  }
  if (auto r = check_signature(ak->get(), evidence.attest_info, *pat_sig); !r) {
    return r.error();
  }

  // Freshness. Veraison's parsec-tpm scheme does not check extraData (veraison/services#447),
  // so this check is the only one; an empty challenge would accept any replay.
  if (expected_nonce.empty() || !nonce_equal(certify->extra_data, expected_nonce) ||
      !nonce_equal(quote->extra_data, expected_nonce)) {
    return evidence_errc::nonce_mismatch;
  }

  // The certify covers a name, not the key bytes: pubArea is bound only through its name.
  auto name = tpm_name(evidence.pub_area);
  if (!name) {
    return name.error();
  }
  if (std::get<certify_info>(certify->attested).name != *name) {
    return evidence_errc::name_mismatch;
  }
  // A key without fixedTPM may have been duplicated out of the TPM, and one without
  // sensitiveDataOrigin was imported: the certify would vouch for a key that others hold
  // (Part 1 §27.2; veraison/parsec tpm validateCertAndPub refuses both the same way).
  auto key = parse_ecc_public(evidence.pub_area);
  if (!key) {
    return key.error();
  }
  if ((key->object_attributes & attr_fixed_tpm) == 0 ||
      (key->object_attributes & attr_sensitive_data_origin) == 0) {
    return evidence_errc::key_not_tpm_bound;
  }
  auto spki = spki_der(evidence.pub_area);
  if (!spki) {
    return spki.error();
  }
  return verified_evidence{.certify = std::move(*certify),
                           .quote = std::move(*quote),
                           .attested_key_spki = std::move(*spki)};
}

std::string to_json(const parsec_tpm_evidence& evidence) {
  const openssl_error_scope errors;
  const auto certify = parse_attest(evidence.cert_info);
  const auto quote = parse_attest(evidence.attest_info);
  // The challenge, when both parts carry the same one.
  json::value nonce;
  if (!certify) {
    nonce = error_json(certify.error());
  } else if (!quote) {
    nonce = error_json(quote.error());
  } else if (certify->extra_data != quote->extra_data) {
    nonce = json::object{{"error", "certInfo and attestInfo carry different extraData"}};
  } else {
    nonce = to_hex(certify->extra_data);
  }
  const json::object root{
      {"media_type", parsec_tpm_media_type},
      {"kid", to_hex(evidence.kid)},
      {"nonce", std::move(nonce)},
      {"attested_key", attested_key_json(evidence.pub_area)},
      {"certify", attest_json(certify, evidence.kat_sig)},
      {"quote", attest_json(quote, evidence.pat_sig)},
  };
  std::string out;
  pretty_print(out, root, 0);
  out += '\n';
  return out;
}

}  // namespace atls::attest
