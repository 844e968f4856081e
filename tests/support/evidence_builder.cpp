#include "support/evidence_builder.hpp"

#include <charconv>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <utility>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace atls::test {

namespace {

void require(bool ok, const char* what) {
  if (!ok) {
    throw std::runtime_error(std::string("evidence_builder: ") + what);
  }
}

struct file_closer {
  void operator()(std::FILE* f) const noexcept { (void)std::fclose(f); }
};
struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct ecdsa_sig_deleter {
  void operator()(ECDSA_SIG* p) const noexcept { ECDSA_SIG_free(p); }
};
struct bio_deleter {
  void operator()(BIO* p) const noexcept { BIO_free(p); }
};

}  // namespace

void pkey_deleter::operator()(EVP_PKEY* p) const noexcept {
  EVP_PKEY_free(p);
}

// ---------------------------------------------------------------------------------------------
// The Veraison vector.

std::string vectors_dir() {
  return ATLS_SOURCE_DIR "/../shared/vectors/";
}

bytes read_binary_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(in.good(), ("cannot open " + path).c_str());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

const bytes& vector_cbor() {
  static const bytes v = read_binary_file(vectors_dir() + "parsec-tpm-evidence.cbor");
  return v;
}

attest::parsec_tpm_evidence vector_evidence() {
  auto decoded = attest::decode(vector_cbor());
  require(decoded.has_value(), "the vector does not decode");
  return *decoded;
}

const bytes& vector_ak() {
  static const bytes der = [] {
    const std::unique_ptr<std::FILE, file_closer> pem(
        std::fopen((vectors_dir() + "ak-pub.pem").c_str(), "r"));
    require(pem != nullptr, "cannot open ak-pub.pem");
    const pkey_ptr key(PEM_read_PUBKEY(pem.get(), nullptr, nullptr, nullptr));
    require(key != nullptr, "ak-pub.pem is not a PEM public key");
    return spki_of(key.get());
  }();
  return der;
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

bytes from_hex(std::string_view hex) {
  require(hex.size() % 2 == 0, "odd-length hex");
  bytes out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const char* first = hex.data() + 2 * i;
    const auto [end, ec] = std::from_chars(first, first + 2, out[i], 16);
    require(ec == std::errc() && end == first + 2, "not hex");
  }
  return out;
}

std::string to_hex(std::span<const std::uint8_t> data) {
  static constexpr std::string_view digits = "0123456789abcdef";
  std::string out;
  out.reserve(2 * data.size());
  for (const std::uint8_t b : data) {
    out.push_back(digits[b >> 4U]);
    out.push_back(digits[b & 0x0fU]);
  }
  return out;
}

bytes sha256(std::span<const std::uint8_t> data) {
  bytes digest(32);
  unsigned int size = 0;
  require(EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr) == 1,
          "SHA-256 failed");
  return digest;
}

pkey_ptr generate_key(const char* curve) {
  pkey_ptr key(EVP_EC_gen(curve));
  require(key != nullptr, "EVP_EC_gen failed");
  return key;
}

bytes spki_of(EVP_PKEY* key) {
  const int size = i2d_PUBKEY(key, nullptr);
  require(size > 0, "i2d_PUBKEY failed");
  bytes der(static_cast<std::size_t>(size));
  unsigned char* cursor = der.data();
  require(i2d_PUBKEY(key, &cursor) == size, "i2d_PUBKEY failed");
  return der;
}

std::string public_pem_of(EVP_PKEY* key) {
  const std::unique_ptr<BIO, bio_deleter> bio(BIO_new(BIO_s_mem()));
  require(bio != nullptr && PEM_write_bio_PUBKEY(bio.get(), key) == 1, "PEM_write_bio_PUBKEY");
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return {data, static_cast<std::size_t>(size)};
}

tpm_out& tpm_out::u8(std::uint8_t v) {
  out.push_back(v);
  return *this;
}

tpm_out& tpm_out::u16(std::uint16_t v) {
  out.insert(out.end(), {static_cast<std::uint8_t>(v >> 8U), static_cast<std::uint8_t>(v)});
  return *this;
}

tpm_out& tpm_out::u32(std::uint32_t v) {
  return u16(static_cast<std::uint16_t>(v >> 16U)).u16(static_cast<std::uint16_t>(v & 0xffffU));
}

tpm_out& tpm_out::u64(std::uint64_t v) {
  return u32(static_cast<std::uint32_t>(v >> 32U)).u32(static_cast<std::uint32_t>(v & 0xffffffffU));
}

tpm_out& tpm_out::raw(std::span<const std::uint8_t> b) {
  out.insert(out.end(), b.begin(), b.end());
  return *this;
}

tpm_out& tpm_out::tpm2b(std::span<const std::uint8_t> b) {
  return u16(static_cast<std::uint16_t>(b.size())).raw(b);
}

// ---------------------------------------------------------------------------------------------
// TPM structures.

bytes make_pub_area(EVP_PKEY* key, const pub_area_options& o) {
  std::array<std::uint8_t, 65> point{};
  std::size_t size = 0;
  require(EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size(),
                                          &size) == 1 &&
              size == point.size(),
          "not an uncompressed P-256 point");
  tpm_out t;
  t.u16(0x0023).u16(o.name_alg).u32(o.attributes).u16(0);  // ECC, empty authPolicy
  t.u16(0x0010);                                           // symmetric: NULL
  t.u16(o.scheme);
  if (o.scheme != 0x0010) {
    t.u16(tpm_alg_sha256);
  }
  t.u16(o.curve).u16(0x0010);  // kdf: NULL
  t.tpm2b(std::span(point).subspan(1, 32)).tpm2b(std::span(point).subspan(33, 32));
  return t.out;
}

bytes tpm_name_of(std::span<const std::uint8_t> pub_area) {
  return tpm_out{}.u16(tpm_alg_sha256).raw(sha256(pub_area)).out;
}

bytes make_attest(std::uint16_t type, std::span<const std::uint8_t> extra_data,
                  std::span<const std::uint8_t> attested, std::uint8_t safe) {
  tpm_out t;
  t.u32(0xff544347).u16(type).tpm2b(from_hex("000b" + std::string(64, '1'))).tpm2b(extra_data);
  t.u64(1000).u32(1).u32(2).u8(safe).u64(0x0102030405060708);
  t.raw(attested);
  return t.out;
}

bytes certify_attested(std::span<const std::uint8_t> name) {
  return tpm_out{}.tpm2b(name).tpm2b(name).out;
}

bytes quote_attested(const std::vector<attest::pcr_selection>& selections,
                     std::span<const std::uint8_t> pcr_digest) {
  tpm_out t;
  t.u32(static_cast<std::uint32_t>(selections.size()));
  for (const auto& selection : selections) {
    std::size_t octets = 3;
    for (const auto pcr : selection.pcrs) {
      octets = std::max<std::size_t>(octets, pcr / 8U + 1U);
    }
    bytes bitmap(octets, 0);
    for (const auto pcr : selection.pcrs) {
      bitmap[pcr / 8U] |= static_cast<std::uint8_t>(1U << (pcr % 8U));
    }
    t.u16(selection.hash_alg).u8(static_cast<std::uint8_t>(octets)).raw(bitmap);
  }
  t.tpm2b(pcr_digest);
  return t.out;
}

bytes quote_attested() {
  return quote_attested({{.hash_alg = tpm_alg_sha256, .pcrs = {0, 1, 2}}}, sha256(bytes(96, 0)));
}

bytes sign_tpmt(EVP_PKEY* key, std::span<const std::uint8_t> data, const sign_options& o,
                bool* had_leading_zero) {
  const std::unique_ptr<EVP_MD_CTX, md_ctx_deleter> ctx(EVP_MD_CTX_new());
  require(ctx != nullptr, "EVP_MD_CTX_new");
  require(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) == 1,
          "EVP_DigestSignInit");
  std::size_t size = 0;
  require(EVP_DigestSign(ctx.get(), nullptr, &size, data.data(), data.size()) == 1,
          "EVP_DigestSign");
  bytes der(size);
  require(EVP_DigestSign(ctx.get(), der.data(), &size, data.data(), data.size()) == 1,
          "EVP_DigestSign");
  const unsigned char* cursor = der.data();
  const std::unique_ptr<ECDSA_SIG, ecdsa_sig_deleter> sig(
      d2i_ECDSA_SIG(nullptr, &cursor, static_cast<long>(size)));
  require(sig != nullptr, "d2i_ECDSA_SIG");
  bytes r(32);
  bytes s(32);
  require(BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), r.data(), 32) == 32 &&
              BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), s.data(), 32) == 32,
          "BN_bn2binpad");
  if (had_leading_zero != nullptr) {
    *had_leading_zero = r[0] == 0 || s[0] == 0;
  }
  if (o.strip_leading_zeros) {
    while (!r.empty() && r[0] == 0) {
      r.erase(r.begin());
    }
    while (!s.empty() && s[0] == 0) {
      s.erase(s.begin());
    }
  }
  return tpm_out{}.u16(0x0018).u16(o.hash_alg).tpm2b(r).tpm2b(s).out;
}

std::size_t pcr_size(std::uint16_t hash_alg) {
  switch (hash_alg) {
    case tpm_alg_sha1:
      return 20;
    case tpm_alg_sha384:
      return 48;
    case 0x000d:  // SHA-512
      return 64;
    default:
      return 32;
  }
}

// ---------------------------------------------------------------------------------------------
// The builder.

bytes evidence_builder::default_kid() {
  bytes kid(33, 0x5a);
  kid[0] = 0x01;  // UEID type RAND
  return kid;
}

bytes evidence_builder::ak_spki() const {
  return spki_of(ak.get());
}

bytes evidence_builder::tik_spki() const {
  return spki_of(tik.get());
}

bytes evidence_builder::pub_area() const {
  return make_pub_area(tik.get(), pub);
}

bytes evidence_builder::pcr_digest() const {
  bytes concatenated;
  for (const auto& selection : selections) {
    for (const auto pcr : selection.pcrs) {
      const auto it = pcr_values.find(pcr);
      const bytes value =
          it != pcr_values.end() ? it->second : bytes(pcr_size(selection.hash_alg), 0);
      concatenated.insert(concatenated.end(), value.begin(), value.end());
    }
  }
  return sha256(concatenated);
}

attest::parsec_tpm_evidence evidence_builder::build() const {
  attest::parsec_tpm_evidence e;
  e.kid = kid;
  e.pub_area = pub_area();
  const bytes name = certified_name.value_or(tpm_name_of(e.pub_area));
  e.cert_info = make_attest(tpm_st_attest_certify, certify_nonce, certify_attested(name));
  e.attest_info =
      make_attest(tpm_st_attest_quote, quote_nonce,
                  quote_attested(selections, pcr_digest_override.value_or(pcr_digest())));
  e.kat_sig = sign_tpmt(ak.get(), e.cert_info);
  e.pat_sig = sign_tpmt(quote_signer != nullptr ? quote_signer : ak.get(), e.attest_info);
  if (swap_signatures) {
    std::swap(e.kat_sig, e.pat_sig);
  }
  return e;
}

bytes evidence_builder::cbor() const {
  return attest::encode(build());
}

}  // namespace atls::test
