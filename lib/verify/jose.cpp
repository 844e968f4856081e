#include "atls/verify/jose.hpp"

#include <array>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "atls/common/openssl_error_scope.hpp"
#include "atls/common/openssl_ptr.hpp"
#include "atls/verify/error.hpp"

#include "detail/strict_json.hpp"

namespace atls::verify {

namespace {

namespace json = boost::json;

// ---------------------------------------------------------------------------------------------
// Algorithms and key families (RFC 7518 §3.1, RFC 8037 §3.1).

enum class key_family : std::uint8_t { p256, p384, p521, ed25519, rsa };

constexpr std::array all_algorithms{
    jws_algorithm::es256, jws_algorithm::es384, jws_algorithm::es512, jws_algorithm::ps256,
    jws_algorithm::ps384, jws_algorithm::ps512, jws_algorithm::rs256, jws_algorithm::rs384,
    jws_algorithm::rs512, jws_algorithm::eddsa,
};

key_family family_of(jws_algorithm alg) noexcept {
  switch (alg) {
    case jws_algorithm::es256:
      return key_family::p256;
    case jws_algorithm::es384:
      return key_family::p384;
    case jws_algorithm::es512:
      return key_family::p521;
    case jws_algorithm::ps256:
    case jws_algorithm::ps384:
    case jws_algorithm::ps512:
    case jws_algorithm::rs256:
    case jws_algorithm::rs384:
    case jws_algorithm::rs512:
      return key_family::rsa;
    case jws_algorithm::eddsa:
      return key_family::ed25519;
  }
  return key_family::rsa;
}

// The digest of the signature scheme; nullptr for Ed25519, which hashes internally.
const char* digest_name(jws_algorithm alg) noexcept {
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

bool is_pss(jws_algorithm alg) noexcept {
  return alg == jws_algorithm::ps256 || alg == jws_algorithm::ps384 || alg == jws_algorithm::ps512;
}

// The algorithm a key of this family implies when neither the JWK nor the caller names one.
// RSA implies none: PS256 and RS256 both fit, and guessing would let a token choose.
std::optional<jws_algorithm> implied_algorithm(key_family family) noexcept {
  switch (family) {
    case key_family::p256:
      return jws_algorithm::es256;
    case key_family::p384:
      return jws_algorithm::es384;
    case key_family::p521:
      return jws_algorithm::es512;
    case key_family::ed25519:
      return jws_algorithm::eddsa;
    case key_family::rsa:
      return std::nullopt;
  }
  return std::nullopt;
}

// The coordinate length of the curve, which is also the length of r and s in a JWS ECDSA
// signature (RFC 7518 §3.4, §6.2.1.2).
std::size_t coordinate_size(key_family family) noexcept {
  switch (family) {
    case key_family::p256:
      return 32;
    case key_family::p384:
      return 48;
    case key_family::p521:
      return 66;
    case key_family::ed25519:
    case key_family::rsa:
      return 0;
  }
  return 0;
}

// OpenSSL's names for the curves (SN_X9_62_prime256v1, ...), as EVP_PKEY_get_group_name reports
// them.
const char* group_name(key_family family) noexcept {
  switch (family) {
    case key_family::p256:
      return "prime256v1";
    case key_family::p384:
      return "secp384r1";
    case key_family::p521:
      return "secp521r1";
    case key_family::ed25519:
    case key_family::rsa:
      return nullptr;
  }
  return nullptr;
}

constexpr std::size_t ed25519_key_size = 32;
constexpr std::size_t ed25519_signature_size = 64;
// RFC 7518 §3.3 and §3.5: 2048 bits or more. The upper bound keeps the cost of the key check
// (OpenSSL runs Miller-Rabin on n) and of every verification bounded.
constexpr int rsa_min_bits = 2048;
constexpr int rsa_max_bits = 8192;

struct loaded_key {
  pkey_ptr key;
  key_family family = key_family::p256;
};

// Pairs a parsed key with the one algorithm it may verify (jose.hpp, parse_jwk).
// `declared` is the JWK's own "alg", already known to fit the key.
result<verification_key> bind_algorithm(loaded_key loaded, std::optional<jws_algorithm> declared,
                                        std::optional<jws_algorithm> pinned) {
  if (pinned && family_of(*pinned) != loaded.family) {
    return verify_errc::unsupported_key;
  }
  if (pinned && declared && *pinned != *declared) {
    return verify_errc::unsupported_key;
  }
  std::optional<jws_algorithm> alg = pinned ? pinned : declared;
  if (!alg) {
    alg = implied_algorithm(loaded.family);
  }
  if (!alg) {
    return verify_errc::malformed_key;
  }
  return verification_key{
      .key = std::shared_ptr<EVP_PKEY>(loaded.key.release(), pkey_ptr::deleter_type{}),
      .algorithm = *alg};
}

// EVP_PKEY_public_check: the EC point is on the curve and not the identity, the RSA modulus and
// exponent are plausible (SP 800-56B §6.4.2.2).
bool public_key_valid(EVP_PKEY* key) {
  const pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
  return ctx && EVP_PKEY_public_check(ctx.get()) == 1;
}

result<loaded_key> from_params(const char* type, OSSL_PARAM_BLD* bld, key_family family) {
  const param_ptr params(OSSL_PARAM_BLD_to_param(bld));
  const pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return verify_errc::malformed_key;
  }
  pkey_ptr key(raw);
  if (!public_key_valid(key.get())) {
    return verify_errc::malformed_key;
  }
  return loaded_key{.key = std::move(key), .family = family};
}

// ---------------------------------------------------------------------------------------------
// JWK members.

const json::string* string_member(const json::object& object, std::string_view name) {
  const auto* v = object.if_contains(name);
  return v == nullptr ? nullptr : v->if_string();
}

// A required base64url member ("x", "n", ...): absent, not a string or not strict base64url is
// malformed_key.
result<bytes> b64_member(const json::object& object, std::string_view name) {
  const auto* text = string_member(object, name);
  if (text == nullptr) {
    return verify_errc::malformed_key;
  }
  auto decoded = base64url_decode(*text);
  if (!decoded) {
    return verify_errc::malformed_key;
  }
  return std::move(*decoded);
}

result<loaded_key> ec_from_jwk(const json::object& jwk) {
  const auto* crv = string_member(jwk, "crv");
  if (crv == nullptr) {
    return verify_errc::malformed_key;
  }
  key_family family{};
  if (*crv == "P-256") {
    family = key_family::p256;
  } else if (*crv == "P-384") {
    family = key_family::p384;
  } else if (*crv == "P-521") {
    family = key_family::p521;
  } else {
    return verify_errc::unsupported_key;
  }
  const auto x = b64_member(jwk, "x");
  const auto y = b64_member(jwk, "y");
  if (!x || !y) {
    return verify_errc::malformed_key;
  }
  // RFC 7518 §6.2.1.2-3: each coordinate is exactly the full length of the field, so one key
  // has one encoding.
  const auto size = coordinate_size(family);
  if (x->size() != size || y->size() != size) {
    return verify_errc::malformed_key;
  }
  bytes point;
  point.reserve(1 + 2 * size);
  point.push_back(POINT_CONVERSION_UNCOMPRESSED);
  point.insert(point.end(), x->begin(), x->end());
  point.insert(point.end(), y->begin(), y->end());

  const param_bld_ptr bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group_name(family),
                                      0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  return from_params("EC", bld.get(), family);
}

result<loaded_key> okp_from_jwk(const json::object& jwk) {
  const auto* crv = string_member(jwk, "crv");
  if (crv == nullptr) {
    return verify_errc::malformed_key;
  }
  // RFC 8037 also defines Ed448 and the X25519/X448 key-agreement curves; none signs EARs.
  if (*crv != "Ed25519") {
    return verify_errc::unsupported_key;
  }
  const auto x = b64_member(jwk, "x");
  if (!x || x->size() != ed25519_key_size) {
    return verify_errc::malformed_key;
  }
  const param_bld_ptr bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, x->data(),
                                               x->size()) != 1) {
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  return from_params("ED25519", bld.get(), key_family::ed25519);
}

int bit_length(const bytes& big_endian) {
  if (big_endian.empty()) {
    return 0;
  }
  int top = 0;
  for (unsigned b = big_endian.front(); b != 0; b >>= 1U) {
    ++top;
  }
  return static_cast<int>(8 * (big_endian.size() - 1)) + top;
}

result<loaded_key> rsa_from_jwk(const json::object& jwk) {
  const auto n = b64_member(jwk, "n");
  const auto e = b64_member(jwk, "e");
  if (!n || !e) {
    return verify_errc::malformed_key;
  }
  // RFC 7518 §6.3.1.1-2: unsigned big-endian in the minimum number of octets.
  if (n->empty() || n->front() == 0 || e->empty() || e->front() == 0) {
    return verify_errc::malformed_key;
  }
  const int bits = bit_length(*n);
  if (bits < rsa_min_bits || bits > rsa_max_bits) {
    return verify_errc::unsupported_key;
  }
  // The exponent check in EVP_PKEY_public_check bounds e below 2^256 anyway.
  if (e->size() > 32) {
    return verify_errc::malformed_key;
  }
  const bn_ptr n_bn(BN_bin2bn(n->data(), static_cast<int>(n->size()), nullptr));
  const bn_ptr e_bn(BN_bin2bn(e->data(), static_cast<int>(e->size()), nullptr));
  const param_bld_ptr bld(OSSL_PARAM_BLD_new());
  if (!n_bn || !e_bn || !bld ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n_bn.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e_bn.get()) != 1) {
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  return from_params("RSA", bld.get(), key_family::rsa);
}

// ---------------------------------------------------------------------------------------------
// base64 (RFC 4648).

enum class alphabet : std::uint8_t { url, standard };

int sextet(char c, alphabet a) noexcept {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (a == alphabet::url) {
    return c == '-' ? 62 : c == '_' ? 63 : -1;
  }
  return c == '+' ? 62 : c == '/' ? 63 : -1;
}

// Unpadded base64 in one alphabet. Refuses a length that leaves a lone sextet and set bits in
// the last character that encode no byte, so that every byte string has exactly one text.
std::optional<bytes> decode_unpadded(std::string_view text, alphabet a) {
  if (text.size() % 4 == 1) {
    return std::nullopt;
  }
  bytes out;
  out.reserve(text.size() / 4 * 3 + 2);
  std::uint32_t acc = 0;
  unsigned bits = 0;
  for (const char c : text) {
    const int v = sextet(c, a);
    if (v < 0) {
      return std::nullopt;
    }
    acc = (acc << 6U) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>(acc >> bits));
      acc &= (1U << bits) - 1;
    }
  }
  if (acc != 0) {
    return std::nullopt;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Signatures.

// RFC 7518 §3.4: a JWS ECDSA signature is r || s, each left-padded to the curve's size; OpenSSL
// verifies the DER ECDSA-Sig-Value of SEC 1 / RFC 3279.
std::optional<bytes> ecdsa_der(std::span<const std::uint8_t> sig, std::size_t component_size) {
  if (sig.size() != 2 * component_size) {
    return std::nullopt;
  }
  bn_ptr r(BN_bin2bn(sig.data(), static_cast<int>(component_size), nullptr));
  bn_ptr s(BN_bin2bn(sig.data() + component_size, static_cast<int>(component_size), nullptr));
  const ecdsa_sig_ptr ecdsa(ECDSA_SIG_new());
  if (!r || !s || !ecdsa || ECDSA_SIG_set0(ecdsa.get(), r.get(), s.get()) != 1) {
    return std::nullopt;
  }
  // ECDSA_SIG_set0 took both.
  (void)r.release();
  (void)s.release();
  const int size = i2d_ECDSA_SIG(ecdsa.get(), nullptr);
  if (size <= 0) {
    return std::nullopt;
  }
  bytes der(static_cast<std::size_t>(size));
  unsigned char* cursor = der.data();
  if (i2d_ECDSA_SIG(ecdsa.get(), &cursor) != size) {
    return std::nullopt;
  }
  return der;
}

// Whether the key is of the family the algorithm needs. parse_jwk and parse_public_key_pem
// guarantee it; a verification_key assembled by hand might not.
bool key_fits(EVP_PKEY* key, jws_algorithm alg) {
  const auto family = family_of(alg);
  switch (family) {
    case key_family::p256:
    case key_family::p384:
    case key_family::p521: {
      std::array<char, 64> name{};
      std::size_t length = 0;
      return EVP_PKEY_get_base_id(key) == EVP_PKEY_EC &&
             EVP_PKEY_get_group_name(key, name.data(), name.size(), &length) == 1 &&
             std::string_view(name.data(), length) == group_name(family);
    }
    case key_family::ed25519:
      return EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519;
    case key_family::rsa:
      return EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA;
  }
  return false;
}

result<void> check_signature(const verification_key& key, std::string_view signing_input,
                             std::span<const std::uint8_t> signature) {
  EVP_PKEY* pkey = key.key.get();
  if (pkey == nullptr || !key_fits(pkey, key.algorithm)) {
    return verify_errc::algorithm_mismatch;
  }
  const auto alg = key.algorithm;
  const auto family = family_of(alg);
  std::optional<bytes> der;
  std::span<const std::uint8_t> sig = signature;
  switch (family) {
    case key_family::p256:
    case key_family::p384:
    case key_family::p521:
      der = ecdsa_der(signature, coordinate_size(family));
      if (!der) {
        return verify_errc::bad_signature;
      }
      sig = *der;
      break;
    case key_family::ed25519:
      if (signature.size() != ed25519_signature_size) {
        return verify_errc::bad_signature;
      }
      break;
    case key_family::rsa:
      // RFC 8017 §8.1.2 and §8.2.2: the signature is exactly as long as the modulus. OpenSSL
      // would accept a shorter PSS signature (leading zeros stripped); one encoding only.
      if (signature.size() != static_cast<std::size_t>(EVP_PKEY_get_size(pkey))) {
        return verify_errc::bad_signature;
      }
      break;
  }

  const md_ctx_ptr ctx(EVP_MD_CTX_new());
  if (!ctx) {
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  const char* md = digest_name(alg);
  if (EVP_DigestVerifyInit_ex(ctx.get(), &pctx, md, nullptr, nullptr, pkey, nullptr) != 1) {
    return verify_errc::bad_signature;
  }
  if (family == key_family::rsa) {
    // RFC 7518 §3.5: PSS with MGF1 over the same hash and a salt as long as the hash; pinning
    // the salt length refuses signatures made with any other.
    const bool ok = is_pss(alg)
                        ? EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                              EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
                              EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, md, nullptr) == 1
                        : EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    if (!ok) {
      return verify_errc::bad_signature;
    }
  }
  const auto* tbs = reinterpret_cast<const unsigned char*>(signing_input.data());
  if (EVP_DigestVerify(ctx.get(), sig.data(), sig.size(), tbs, signing_input.size()) != 1) {
    return verify_errc::bad_signature;
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Strict JSON.

// A basic_parser handler that builds nothing and counts the members of every object as the text
// has them, duplicates included, to compare with what the parsed value kept.
struct member_counter {
  static constexpr std::size_t max_object_size = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_array_size = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_key_size = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_string_size = std::numeric_limits<std::size_t>::max();

  std::size_t members = 0;

  // NOLINTBEGIN(readability-convert-member-functions-to-static): basic_parser's handler concept
  bool on_document_begin(error_code& /*ec*/) { return true; }
  bool on_document_end(error_code& /*ec*/) { return true; }
  bool on_array_begin(error_code& /*ec*/) { return true; }
  bool on_array_end(std::size_t /*n*/, error_code& /*ec*/) { return true; }
  bool on_object_begin(error_code& /*ec*/) { return true; }
  bool on_object_end(std::size_t n, error_code& /*ec*/) {
    members += n;
    return true;
  }
  bool on_string_part(json::string_view /*s*/, std::size_t /*n*/, error_code& /*ec*/) {
    return true;
  }
  bool on_string(json::string_view /*s*/, std::size_t /*n*/, error_code& /*ec*/) { return true; }
  bool on_key_part(json::string_view /*s*/, std::size_t /*n*/, error_code& /*ec*/) { return true; }
  bool on_key(json::string_view /*s*/, std::size_t /*n*/, error_code& /*ec*/) { return true; }
  bool on_number_part(json::string_view /*s*/, error_code& /*ec*/) { return true; }
  bool on_int64(std::int64_t /*i*/, json::string_view /*s*/, error_code& /*ec*/) { return true; }
  bool on_uint64(std::uint64_t /*u*/, json::string_view /*s*/, error_code& /*ec*/) { return true; }
  bool on_double(double /*d*/, json::string_view /*s*/, error_code& /*ec*/) { return true; }
  bool on_bool(bool /*b*/, error_code& /*ec*/) { return true; }
  bool on_null(error_code& /*ec*/) { return true; }
  bool on_comment_part(json::string_view /*s*/, error_code& /*ec*/) { return true; }
  bool on_comment(json::string_view /*s*/, error_code& /*ec*/) { return true; }
  // NOLINTEND(readability-convert-member-functions-to-static)
};

std::size_t count_members(const json::value& v) {
  std::size_t total = 0;
  if (const auto* object = v.if_object(); object != nullptr) {
    total += object->size();
    for (const auto& member : *object) {
      total += count_members(member.value());
    }
  } else if (const auto* array = v.if_array(); array != nullptr) {
    for (const auto& element : *array) {
      total += count_members(element);
    }
  }
  return total;
}

}  // namespace

namespace detail {

std::optional<json::value> parse_json_strict(std::string_view text, std::size_t max_size) {
  if (text.size() > max_size) {
    return std::nullopt;
  }
  error_code ec;
  // The defaults are the strict ones: RFC 8259 only, depth 32.
  json::value value = json::parse(text, ec);
  if (ec) {
    return std::nullopt;
  }
  // Boost.JSON keeps the last of repeated members; a second pass counts them as written.
  json::basic_parser<member_counter> counter(json::parse_options{});
  const auto consumed = counter.write_some(false, text.data(), text.size(), ec);
  if (ec || consumed != text.size() || counter.handler().members != count_members(value)) {
    return std::nullopt;
  }
  return value;
}

}  // namespace detail

std::string_view to_string(jws_algorithm alg) noexcept {
  switch (alg) {
    case jws_algorithm::es256:
      return "ES256";
    case jws_algorithm::es384:
      return "ES384";
    case jws_algorithm::es512:
      return "ES512";
    case jws_algorithm::ps256:
      return "PS256";
    case jws_algorithm::ps384:
      return "PS384";
    case jws_algorithm::ps512:
      return "PS512";
    case jws_algorithm::rs256:
      return "RS256";
    case jws_algorithm::rs384:
      return "RS384";
    case jws_algorithm::rs512:
      return "RS512";
    case jws_algorithm::eddsa:
      return "EdDSA";
  }
  return "invalid";
}

std::optional<jws_algorithm> parse_jws_algorithm(std::string_view name) noexcept {
  // Exact, case-sensitive names (RFC 7518 §3.1): "none", "HS256" and friends are simply not in
  // the list, so no path can reach an unsigned or MAC-ed token.
  for (const auto alg : all_algorithms) {
    if (name == to_string(alg)) {
      return alg;
    }
  }
  return std::nullopt;
}

std::string base64url_encode(std::span<const std::uint8_t> data) {
  static constexpr std::string_view digits =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((data.size() * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16U) | (std::uint32_t{data[i + 1]} << 8U) |
                            std::uint32_t{data[i + 2]};
    out.push_back(digits[(v >> 18U) & 0x3fU]);
    out.push_back(digits[(v >> 12U) & 0x3fU]);
    out.push_back(digits[(v >> 6U) & 0x3fU]);
    out.push_back(digits[v & 0x3fU]);
  }
  const std::size_t rest = data.size() - i;
  if (rest == 1) {
    const std::uint32_t v = std::uint32_t{data[i]} << 16U;
    out.push_back(digits[(v >> 18U) & 0x3fU]);
    out.push_back(digits[(v >> 12U) & 0x3fU]);
  } else if (rest == 2) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16U) | (std::uint32_t{data[i + 1]} << 8U);
    out.push_back(digits[(v >> 18U) & 0x3fU]);
    out.push_back(digits[(v >> 12U) & 0x3fU]);
    out.push_back(digits[(v >> 6U) & 0x3fU]);
  }
  return out;
}

std::optional<bytes> base64url_decode(std::string_view text) {
  return decode_unpadded(text, alphabet::url);
}

std::optional<bytes> base64_decode_lenient(std::string_view text) {
  // Padding, when present, completes the last quantum: one '=' after three characters, two
  // after two, and nowhere else.
  if (text.ends_with('=')) {
    if (text.size() % 4 != 0) {
      return std::nullopt;
    }
    text.remove_suffix(text.ends_with("==") ? 2 : 1);
    if (text.size() % 4 == 0) {
      return std::nullopt;  // "====" or "xxxx=": padding where no quantum was short
    }
  }
  // One alphabet per text: a mix is neither encoder's output.
  const bool url = text.find_first_of("-_") != std::string_view::npos;
  const bool standard = text.find_first_of("+/") != std::string_view::npos;
  if (url && standard) {
    return std::nullopt;
  }
  return decode_unpadded(text, standard ? alphabet::standard : alphabet::url);
}

result<verification_key> parse_jwk(std::string_view text, std::optional<jws_algorithm> pinned) {
  const openssl_error_scope errors;
  const auto doc = detail::parse_json_strict(text, max_jwk_size);
  if (!doc || !doc->is_object()) {
    return verify_errc::malformed_key;
  }
  const auto& jwk = doc->get_object();
  // RFC 7518 §6.2.2, §6.3.2, RFC 8037 §2: the private members. A verifier holds public keys
  // only; a private key in its configuration is a mistake worth stopping for. "k" is the secret
  // of an "oct" key.
  for (const char* secret : {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}) {
    if (jwk.contains(secret)) {
      return verify_errc::unsupported_key;
    }
  }
  const auto* kty = string_member(jwk, "kty");
  if (kty == nullptr) {
    return verify_errc::malformed_key;
  }
  // RFC 7517 §4.2-4.3: a key published for another use must not verify signatures.
  if (const auto* use = jwk.if_contains("use"); use != nullptr) {
    if (!use->is_string()) {
      return verify_errc::malformed_key;
    }
    if (use->get_string() != "sig") {
      return verify_errc::unsupported_key;
    }
  }
  if (const auto* ops = jwk.if_contains("key_ops"); ops != nullptr) {
    if (!ops->is_array()) {
      return verify_errc::malformed_key;
    }
    bool verify = false;
    for (const auto& op : ops->get_array()) {
      if (!op.is_string()) {
        return verify_errc::malformed_key;
      }
      verify = verify || op.get_string() == "verify";
    }
    if (!verify) {
      return verify_errc::unsupported_key;
    }
  }
  std::optional<jws_algorithm> declared;
  if (const auto* alg = jwk.if_contains("alg"); alg != nullptr) {
    if (!alg->is_string()) {
      return verify_errc::malformed_key;
    }
    declared = parse_jws_algorithm(alg->get_string());
    if (!declared) {
      return verify_errc::unsupported_key;
    }
  }

  result<loaded_key> loaded = verify_errc::unsupported_key;
  if (*kty == "EC") {
    loaded = ec_from_jwk(jwk);
  } else if (*kty == "OKP") {
    loaded = okp_from_jwk(jwk);
  } else if (*kty == "RSA") {
    loaded = rsa_from_jwk(jwk);
  }
  if (!loaded) {
    return loaded.error();
  }
  // The JWK contradicting itself ("alg": "ES256" on a P-384 key) is a broken document; the
  // caller's pin contradicting the key is a configuration the key does not support.
  if (declared && family_of(*declared) != loaded->family) {
    return verify_errc::malformed_key;
  }
  return bind_algorithm(std::move(*loaded), declared, pinned);
}

result<verification_key> parse_public_key_pem(std::string_view pem,
                                              std::optional<jws_algorithm> pinned) {
  const openssl_error_scope errors;
  if (pem.size() > max_jwk_size) {
    return verify_errc::malformed_key;
  }
  const bio_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) {
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  // PEM_read_bio_PUBKEY takes only "PUBLIC KEY" blocks: a private key file does not load.
  pkey_ptr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return verify_errc::malformed_key;
  }
  key_family family{};
  switch (EVP_PKEY_get_base_id(key.get())) {
    case EVP_PKEY_EC: {
      std::array<char, 64> name{};
      std::size_t length = 0;
      if (EVP_PKEY_get_group_name(key.get(), name.data(), name.size(), &length) != 1) {
        return verify_errc::unsupported_key;  // explicit curve parameters
      }
      const std::string_view group(name.data(), length);
      if (group == group_name(key_family::p256)) {
        family = key_family::p256;
      } else if (group == group_name(key_family::p384)) {
        family = key_family::p384;
      } else if (group == group_name(key_family::p521)) {
        family = key_family::p521;
      } else {
        return verify_errc::unsupported_key;
      }
      break;
    }
    case EVP_PKEY_ED25519:
      family = key_family::ed25519;
      break;
    case EVP_PKEY_RSA: {
      const int bits = EVP_PKEY_get_bits(key.get());
      if (bits < rsa_min_bits || bits > rsa_max_bits) {
        return verify_errc::unsupported_key;
      }
      family = key_family::rsa;
      break;
    }
    default:
      return verify_errc::unsupported_key;
  }
  if (!public_key_valid(key.get())) {
    return verify_errc::malformed_key;
  }
  return bind_algorithm(loaded_key{.key = std::move(key), .family = family}, std::nullopt, pinned);
}

result<std::string> verify_compact_jws(std::string_view token, const verification_key& key) {
  const openssl_error_scope errors;
  if (token.size() > max_token_size) {
    return verify_errc::malformed_token;
  }
  // RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature).
  const auto first = token.find('.');
  if (first == std::string_view::npos) {
    return verify_errc::malformed_token;
  }
  const auto second = token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos) {
    return verify_errc::malformed_token;
  }
  const auto header = base64url_decode(token.substr(0, first));
  const auto payload = base64url_decode(token.substr(first + 1, second - first - 1));
  const auto signature = base64url_decode(token.substr(second + 1));
  if (!header || !payload || !signature) {
    return verify_errc::malformed_token;
  }

  const std::string_view header_text(reinterpret_cast<const char*>(header->data()), header->size());
  const auto header_json = detail::parse_json_strict(header_text, max_token_size);
  if (!header_json || !header_json->is_object()) {
    return verify_errc::malformed_token;
  }
  const auto& members = header_json->get_object();
  const auto* alg_name = string_member(members, "alg");
  if (alg_name == nullptr) {
    return verify_errc::malformed_token;
  }
  // The algorithm comes from the key, never from the token (RFC 8725 §3.1): the header may only
  // confirm it.
  const auto alg = parse_jws_algorithm(*alg_name);
  if (!alg) {
    return verify_errc::unsupported_algorithm;
  }
  if (*alg != key.algorithm) {
    return verify_errc::algorithm_mismatch;
  }
  // RFC 7515 §4.1.11: a recipient must refuse a token whose "crit" names an extension it does
  // not implement; atls implements none. "b64": false (RFC 7797) changes what is signed.
  if (members.contains("crit") || members.contains("b64")) {
    return verify_errc::unsupported_header;
  }

  if (auto r = check_signature(key, token.substr(0, second), *signature); !r) {
    return r.error();
  }
  return std::string(payload->begin(), payload->end());
}

}  // namespace atls::verify
