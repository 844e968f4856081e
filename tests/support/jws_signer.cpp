#include "support/jws_signer.hpp"

#include <array>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <boost/json.hpp>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

namespace atls::test {

namespace {

namespace json = boost::json;
using verify::jws_algorithm;
using bytes = std::vector<std::uint8_t>;

struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct bn_deleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct ecdsa_sig_deleter {
  void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); }
};

// Test support throws: a failure here is a broken test environment, not a verdict.
[[noreturn]] void fail(const std::string& what) {
  const unsigned long code = ERR_get_error();
  std::array<char, 256> reason{};
  ERR_error_string_n(code, reason.data(), reason.size());
  ERR_clear_error();
  throw std::runtime_error("jws_signer: " + what + ": " + reason.data());
}

enum class family { ec, rsa, ed25519 };

family family_of(jws_algorithm alg) {
  switch (alg) {
    case jws_algorithm::es256:
    case jws_algorithm::es384:
    case jws_algorithm::es512:
      return family::ec;
    case jws_algorithm::ps256:
    case jws_algorithm::ps384:
    case jws_algorithm::ps512:
    case jws_algorithm::rs256:
    case jws_algorithm::rs384:
    case jws_algorithm::rs512:
      return family::rsa;
    case jws_algorithm::eddsa:
      return family::ed25519;
  }
  throw std::invalid_argument("jws_signer: unknown algorithm");
}

const char* digest_name(jws_algorithm alg) {
  switch (alg) {
    case jws_algorithm::es256:
    case jws_algorithm::ps256:
    case jws_algorithm::rs256:
      return "SHA256";
    case jws_algorithm::es384:
    case jws_algorithm::ps384:
    case jws_algorithm::rs384:
      return "SHA384";
    case jws_algorithm::es512:
    case jws_algorithm::ps512:
    case jws_algorithm::rs512:
      return "SHA512";
    case jws_algorithm::eddsa:
      return nullptr;
  }
  return nullptr;
}

bool is_pss(jws_algorithm alg) {
  return alg == jws_algorithm::ps256 || alg == jws_algorithm::ps384 || alg == jws_algorithm::ps512;
}

bytes bn_bytes(const BIGNUM* bn, int size) {
  bytes out(static_cast<std::size_t>(size));
  if (BN_bn2binpad(bn, out.data(), size) != size) {
    fail("BN_bn2binpad");
  }
  return out;
}

bytes bn_param(EVP_PKEY* key, const char* name, int size) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1) {
    fail(std::string("EVP_PKEY_get_bn_param ") + name);
  }
  const std::unique_ptr<BIGNUM, bn_deleter> bn(raw);
  // size 0: the minimum number of octets (RFC 7518 §6.3.1: n and e).
  return bn_bytes(bn.get(), size == 0 ? BN_num_bytes(bn.get()) : size);
}

// The field size of a P-curve key: the length of each coordinate and of r and s.
int coordinate_size(EVP_PKEY* key) {
  return (EVP_PKEY_get_bits(key) + 7) / 8;
}

std::string curve_name(EVP_PKEY* key) {
  std::array<char, 64> name{};
  std::size_t length = 0;
  if (EVP_PKEY_get_group_name(key, name.data(), name.size(), &length) != 1) {
    fail("EVP_PKEY_get_group_name");
  }
  const std::string_view group(name.data(), length);
  if (group == "prime256v1") {
    return "P-256";
  }
  if (group == "secp384r1") {
    return "P-384";
  }
  if (group == "secp521r1") {
    return "P-521";
  }
  throw std::invalid_argument("jws_signer: unsupported curve " + std::string(group));
}

std::string b64(const bytes& data) {
  return verify::base64url_encode(data);
}

std::string b64(std::string_view text) {
  return verify::base64url_encode(
      {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
}

// JWS ECDSA signatures are r || s at the curve's size (RFC 7518 §3.4); OpenSSL makes DER.
bytes der_to_raw(const bytes& der, int size) {
  const unsigned char* cursor = der.data();
  const std::unique_ptr<ECDSA_SIG, ecdsa_sig_deleter> sig(
      d2i_ECDSA_SIG(nullptr, &cursor, static_cast<long>(der.size())));
  if (!sig) {
    fail("d2i_ECDSA_SIG");
  }
  bytes out = bn_bytes(ECDSA_SIG_get0_r(sig.get()), size);
  const bytes s = bn_bytes(ECDSA_SIG_get0_s(sig.get()), size);
  out.insert(out.end(), s.begin(), s.end());
  return out;
}

}  // namespace

unique_pkey generate_signing_key(jws_algorithm alg) {
  EVP_PKEY* key = nullptr;
  switch (alg) {
    case jws_algorithm::es256:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
      break;
    case jws_algorithm::es384:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
      break;
    case jws_algorithm::es512:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-521");
      break;
    case jws_algorithm::ps256:
    case jws_algorithm::ps384:
    case jws_algorithm::ps512:
    case jws_algorithm::rs256:
    case jws_algorithm::rs384:
    case jws_algorithm::rs512:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{2048});
      break;
    case jws_algorithm::eddsa:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
      break;
  }
  if (key == nullptr) {
    fail("EVP_PKEY_Q_keygen");
  }
  return unique_pkey(key);
}

std::string public_jwk(EVP_PKEY* key, jws_algorithm alg, bool with_alg) {
  json::object jwk;
  switch (family_of(alg)) {
    case family::ec: {
      const int size = coordinate_size(key);
      jwk["kty"] = "EC";
      jwk["crv"] = curve_name(key);
      jwk["x"] = b64(bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, size));
      jwk["y"] = b64(bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, size));
      break;
    }
    case family::rsa:
      jwk["kty"] = "RSA";
      jwk["n"] = b64(bn_param(key, OSSL_PKEY_PARAM_RSA_N, 0));
      jwk["e"] = b64(bn_param(key, OSSL_PKEY_PARAM_RSA_E, 0));
      break;
    case family::ed25519: {
      std::array<std::uint8_t, 32> raw{};
      std::size_t length = raw.size();
      if (EVP_PKEY_get_raw_public_key(key, raw.data(), &length) != 1 || length != raw.size()) {
        fail("EVP_PKEY_get_raw_public_key");
      }
      jwk["kty"] = "OKP";
      jwk["crv"] = "Ed25519";
      jwk["x"] = b64(bytes(raw.begin(), raw.end()));
      break;
    }
  }
  if (with_alg) {
    jwk["alg"] = verify::to_string(alg);
  }
  return json::serialize(jwk);
}

std::string sign_jws(EVP_PKEY* key, jws_algorithm alg, std::string_view header_json,
                     std::string_view payload_json) {
  const std::string signing_input = b64(header_json) + "." + b64(payload_json);
  const std::unique_ptr<EVP_MD_CTX, md_ctx_deleter> ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  const char* md = digest_name(alg);
  if (!ctx || EVP_DigestSignInit_ex(ctx.get(), &pctx, md, nullptr, nullptr, key, nullptr) != 1) {
    fail("EVP_DigestSignInit_ex");
  }
  if (family_of(alg) == family::rsa) {
    const bool ok = is_pss(alg)
                        ? EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                              EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
                              EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, md, nullptr) == 1
                        : EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    if (!ok) {
      fail("RSA padding");
    }
  }
  const auto* tbs = reinterpret_cast<const unsigned char*>(signing_input.data());
  std::size_t size = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &size, tbs, signing_input.size()) != 1) {
    fail("EVP_DigestSign (size)");
  }
  bytes signature(size);
  if (EVP_DigestSign(ctx.get(), signature.data(), &size, tbs, signing_input.size()) != 1) {
    fail("EVP_DigestSign");
  }
  signature.resize(size);
  if (family_of(alg) == family::ec) {
    signature = der_to_raw(signature, coordinate_size(key));
  }
  return signing_input + "." + b64(signature);
}

std::string sign_jwt(EVP_PKEY* key, jws_algorithm alg, std::string_view payload_json) {
  const std::string header =
      json::serialize(json::object{{"alg", verify::to_string(alg)}, {"typ", "JWT"}});
  return sign_jws(key, alg, header, payload_json);
}

}  // namespace atls::test
