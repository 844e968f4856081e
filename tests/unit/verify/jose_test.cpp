#include "atls/verify/jose.hpp"

#include <array>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <doctest/doctest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "atls/verify/error.hpp"

#include "support/jws_signer.hpp"

namespace atls::verify {
namespace {

namespace json = boost::json;
using test::generate_signing_key;
using test::public_jwk;
using test::sign_jws;
using test::sign_jwt;
using test::unique_pkey;

// ---------------------------------------------------------------------------------------------
// Fixtures: the Veraison vectors and freshly generated keys.

const std::string vectors_dir = ATLS_SOURCE_DIR "/../shared/vectors/";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string vector_jwk() {
  return read_text(vectors_dir + "ear-verification-key.jwk.json");
}

verification_key vector_key() {
  auto key = parse_jwk(vector_jwk());
  REQUIRE(key.has_value());
  return *key;
}

// A result's error, or the empty code, so that CHECK prints both sides ("atls.verify:5").
template <class T>
error_code error_of(const result<T>& r) {
  return r ? error_code{} : r.error();
}

error_code code(verify_errc e) {
  return make_error_code(e);
}

std::string text_of(const bytes& b) {
  return {b.begin(), b.end()};
}

std::string b64(std::string_view text) {
  return base64url_encode({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
}

struct parts {
  std::string header, payload, signature;
};

parts split(const std::string& token) {
  const auto first = token.find('.');
  const auto second = token.find('.', first + 1);
  REQUIRE(second != std::string::npos);
  return {token.substr(0, first), token.substr(first + 1, second - first - 1),
          token.substr(second + 1)};
}

std::string join(const parts& p) {
  return p.header + "." + p.payload + "." + p.signature;
}

struct signer {
  unique_pkey key;
  jws_algorithm alg;
  verification_key verifier;
};

signer make_signer(jws_algorithm alg) {
  auto key = generate_signing_key(alg);
  auto verifier = parse_jwk(public_jwk(key.get(), alg, true));
  REQUIRE(verifier.has_value());
  return {std::move(key), alg, *verifier};
}

constexpr std::array all_algorithms{
    jws_algorithm::es256, jws_algorithm::es384, jws_algorithm::es512, jws_algorithm::ps256,
    jws_algorithm::ps384, jws_algorithm::ps512, jws_algorithm::rs256, jws_algorithm::rs384,
    jws_algorithm::rs512, jws_algorithm::eddsa,
};

constexpr std::string_view payload = R"({"hello":"world"})";

// The JWK of `jwk_text` with `member` replaced (or removed when `value` is null).
std::string edit_jwk(const std::string& jwk_text, std::string_view member, json::value value) {
  auto doc = json::parse(jwk_text).as_object();
  if (value.is_null()) {
    doc.erase(member);
  } else {
    doc[member] = std::move(value);
  }
  return json::serialize(doc);
}

std::string b64(const bytes& data) {
  return base64url_encode(data);
}

bytes b64_decoded(std::string_view text) {
  auto decoded = base64url_decode(text);
  REQUIRE(decoded.has_value());
  return *decoded;
}

// ---------------------------------------------------------------------------------------------
// The Veraison vectors.

TEST_CASE("the Veraison EAR vector verifies with the published key and yields its claims") {
  const auto key = vector_key();
  CHECK(key.algorithm == jws_algorithm::es256);  // implied by the P-256 curve
  const auto token = read_text(vectors_dir + "ear-valid-0.jwt");
  const auto claims = verify_compact_jws(token, key);
  INFO(error_of(claims).message());
  REQUIRE(claims.has_value());
  CHECK(*claims == text_of(b64_decoded(split(token).payload)));
  const auto doc = json::parse(*claims);
  CHECK(doc.at("iat").as_int64() == 1666091373);
  CHECK(doc.at("eat_profile").as_string() == "tag:github.com,2023:veraison/ear");
}

TEST_CASE("the HS256 and alg-none vectors are refused as unsupported algorithms") {
  const auto key = vector_key();
  for (const char* name : {"ear-invalid-hs256.jwt", "ear-invalid-alg-none.jwt"}) {
    CAPTURE(name);
    const auto token = read_text(vectors_dir + name);
    CHECK(error_of(verify_compact_jws(token, key)) == code(verify_errc::unsupported_algorithm));
  }
}

TEST_CASE("the vector key also loads pinned to ES256, and refuses any other pin") {
  CHECK(parse_jwk(vector_jwk(), jws_algorithm::es256).has_value());
  for (const auto alg : all_algorithms) {
    if (alg == jws_algorithm::es256) {
      continue;
    }
    CAPTURE(to_string(alg));
    CHECK(error_of(parse_jwk(vector_jwk(), alg)) == code(verify_errc::unsupported_key));
  }
}

// ---------------------------------------------------------------------------------------------
// Algorithm confusion (RFC 8725 §2.1, §3.1).

TEST_CASE("a token signed ES384 is refused by an ES256 key before any signature check") {
  const auto es384 = make_signer(jws_algorithm::es384);
  const auto token = sign_jwt(es384.key.get(), jws_algorithm::es384, payload);
  CHECK(error_of(verify_compact_jws(token, vector_key())) == code(verify_errc::algorithm_mismatch));
  // Relabelled as ES256, its 96-byte signature cannot pass as a P-256 one.
  auto relabelled = split(token);
  relabelled.header = b64(R"({"alg":"ES256","typ":"JWT"})");
  CHECK(error_of(verify_compact_jws(join(relabelled), vector_key())) ==
        code(verify_errc::bad_signature));
}

TEST_CASE("an HS256 token MAC-ed with the EC key's JWK, DER or PEM bytes as secret is refused") {
  const auto key = vector_key();
  const std::string jwk = vector_jwk();
  const int der_size = i2d_PUBKEY(key.key.get(), nullptr);
  REQUIRE(der_size > 0);
  bytes der(static_cast<std::size_t>(der_size));
  unsigned char* cursor = der.data();
  REQUIRE(i2d_PUBKEY(key.key.get(), &cursor) == der_size);
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PUBKEY(bio, key.key.get()) == 1);
  char* pem_data = nullptr;
  const long pem_size = BIO_get_mem_data(bio, &pem_data);
  const std::string pem(pem_data, static_cast<std::size_t>(pem_size));
  BIO_free(bio);

  const std::string signing_input =
      b64(R"({"alg":"HS256","typ":"JWT"})") + "." + b64(R"({"eat_profile":"x"})");
  for (const auto& secret : {bytes(jwk.begin(), jwk.end()), der, bytes(pem.begin(), pem.end())}) {
    std::array<unsigned char, 32> mac{};
    std::size_t mac_size = 0;
    REQUIRE(EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, secret.data(), secret.size(),
                      reinterpret_cast<const unsigned char*>(signing_input.data()),
                      signing_input.size(), mac.data(), mac.size(), &mac_size) != nullptr);
    const auto token = signing_input + "." + b64(bytes(mac.begin(), mac.end()));
    CHECK(error_of(verify_compact_jws(token, key)) == code(verify_errc::unsupported_algorithm));
  }
  // No key can even be loaded as an HMAC secret.
  CHECK(error_of(parse_jwk(R"({"kty":"oct","k":"c2VjcmV0"})")) ==
        code(verify_errc::unsupported_key));
}

TEST_CASE("only the exact JOSE names of the supported algorithms parse") {
  for (const auto alg : all_algorithms) {
    CHECK(parse_jws_algorithm(to_string(alg)) == alg);
  }
  for (const char* name : {"none", "None", "NONE", "HS256", "HS384", "HS512", "es256", "ES256K",
                           "Ed25519", "", " ES256", "PS256 ", "ES256\n"}) {
    CAPTURE(name);
    CHECK_FALSE(parse_jws_algorithm(name).has_value());
  }
}

TEST_CASE("alg none and HMAC are refused whatever the signature part holds") {
  const auto key = vector_key();
  const auto valid = split(read_text(vectors_dir + "ear-valid-0.jwt"));
  for (const char* alg : {"none", "None", "HS256", "HS512", "ES256K"}) {
    CAPTURE(alg);
    const std::string header = std::string(R"({"alg":")") + alg + R"("})";
    // With the vector's genuine ES256 signature, and with none at all.
    for (const auto& sig : {valid.signature, std::string{}}) {
      const parts forged{b64(header), valid.payload, sig};
      CHECK(error_of(verify_compact_jws(join(forged), key)) ==
            code(verify_errc::unsupported_algorithm));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips and tampering, for every algorithm.

TEST_CASE("every supported algorithm verifies what jws_signer signs") {
  for (const auto alg : all_algorithms) {
    CAPTURE(to_string(alg));
    const auto s = make_signer(alg);
    const auto token = sign_jwt(s.key.get(), alg, payload);
    const auto verified = verify_compact_jws(token, s.verifier);
    INFO(error_of(verified).message());
    REQUIRE(verified.has_value());
    CHECK(*verified == payload);

    // The JWK without "alg": the curve implies it, except for RSA, which needs a pin.
    const auto bare = public_jwk(s.key.get(), alg, false);
    const bool rsa = json::parse(bare).at("kty").as_string() == "RSA";
    const auto implied = parse_jwk(bare);
    if (rsa) {
      CHECK(error_of(implied) == code(verify_errc::malformed_key));
    } else {
      REQUIRE(implied.has_value());
      CHECK(implied->algorithm == alg);
    }
    const auto pinned = parse_jwk(bare, alg);
    REQUIRE(pinned.has_value());
    CHECK(verify_compact_jws(token, *pinned).has_value());
  }
}

TEST_CASE("an RSA key verifies only the padding it is pinned to") {
  const auto key = generate_signing_key(jws_algorithm::ps256);
  const auto jwk = public_jwk(key.get(), jws_algorithm::ps256, false);
  const auto ps256 = parse_jwk(jwk, jws_algorithm::ps256);
  const auto rs256 = parse_jwk(jwk, jws_algorithm::rs256);
  REQUIRE(ps256.has_value());
  REQUIRE(rs256.has_value());
  const auto pss_token = sign_jwt(key.get(), jws_algorithm::ps256, payload);
  const auto pkcs1_token = sign_jwt(key.get(), jws_algorithm::rs256, payload);
  CHECK(verify_compact_jws(pss_token, *ps256).has_value());
  CHECK(verify_compact_jws(pkcs1_token, *rs256).has_value());
  CHECK(error_of(verify_compact_jws(pss_token, *rs256)) == code(verify_errc::algorithm_mismatch));
  // RFC 7518 §3.5: the salt is as long as the hash. A PSS signature with any other salt length
  // (here the longest the modulus allows) is refused.
  const std::string signing_input = split(pss_token).header + "." + split(pss_token).payload;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  REQUIRE(EVP_DigestSignInit_ex(ctx, &pctx, "SHA256", nullptr, nullptr, key.get(), nullptr) == 1);
  REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1);
  REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_MAX) == 1);
  bytes long_salt(256);
  std::size_t size = long_salt.size();
  REQUIRE(EVP_DigestSign(ctx, long_salt.data(), &size,
                         reinterpret_cast<const unsigned char*>(signing_input.data()),
                         signing_input.size()) == 1);
  EVP_MD_CTX_free(ctx);
  REQUIRE(size == 256);
  CHECK(error_of(verify_compact_jws(signing_input + "." + b64(long_salt), *ps256)) ==
        code(verify_errc::bad_signature));
  // A PKCS#1 v1.5 signature relabelled PS256 does not pass as PSS.
  auto relabelled = split(pkcs1_token);
  relabelled.header = split(pss_token).header;
  CHECK(error_of(verify_compact_jws(join(relabelled), *ps256)) == code(verify_errc::bad_signature));
}

TEST_CASE("a changed header, payload or signature fails the signature check") {
  for (const auto alg : all_algorithms) {
    CAPTURE(to_string(alg));
    const auto s = make_signer(alg);
    const auto token = split(sign_jwt(s.key.get(), alg, payload));
    REQUIRE(verify_compact_jws(join(token), s.verifier).has_value());

    auto header = token;
    header.header =
        b64(std::string(R"({"alg":")") + std::string(to_string(alg)) + R"(","typ":"JWS"})");
    CHECK(error_of(verify_compact_jws(join(header), s.verifier)) ==
          code(verify_errc::bad_signature));

    auto body = token;
    body.payload = b64(R"({"hello":"World"})");
    CHECK(error_of(verify_compact_jws(join(body), s.verifier)) == code(verify_errc::bad_signature));

    for (const std::size_t at : {std::size_t{0}, b64_decoded(token.signature).size() - 1}) {
      auto sig = token;
      auto raw = b64_decoded(sig.signature);
      raw[at] ^= 0x01U;
      sig.signature = b64(raw);
      CHECK(error_of(verify_compact_jws(join(sig), s.verifier)) ==
            code(verify_errc::bad_signature));
    }
  }
  // And the Veraison vector itself.
  const auto vector = split(read_text(vectors_dir + "ear-valid-0.jwt"));
  auto body = vector;
  auto claims = text_of(b64_decoded(body.payload));
  claims.replace(claims.find("affirming"), 9, "warning");
  body.payload = b64(claims);
  CHECK(error_of(verify_compact_jws(join(body), vector_key())) == code(verify_errc::bad_signature));
}

TEST_CASE("ECDSA signatures of any length but twice the curve size are refused") {
  for (const auto alg : {jws_algorithm::es256, jws_algorithm::es384, jws_algorithm::es512}) {
    CAPTURE(to_string(alg));
    const auto s = make_signer(alg);
    const auto token = split(sign_jwt(s.key.get(), alg, payload));
    const auto raw = b64_decoded(token.signature);
    const std::size_t half = raw.size() / 2;
    // r || s without the leading byte of r, with an extra zero byte before each component (the
    // unsigned-integer form a DER-minded signer might send), empty, and the DER form itself.
    bytes short_sig(raw.begin() + 1, raw.end());
    bytes long_sig;
    long_sig.push_back(0);
    long_sig.insert(long_sig.end(), raw.begin(), raw.begin() + static_cast<long>(half));
    long_sig.push_back(0);
    long_sig.insert(long_sig.end(), raw.begin() + static_cast<long>(half), raw.end());
    for (const auto& sig : {short_sig, long_sig, bytes{}, bytes(raw.begin(), raw.end() - 2)}) {
      CAPTURE(sig.size());
      auto forged = token;
      forged.signature = b64(sig);
      CHECK(error_of(verify_compact_jws(join(forged), s.verifier)) ==
            code(verify_errc::bad_signature));
    }
  }
}

TEST_CASE("an ECDSA signature in DER form instead of r||s is refused") {
  const auto key = generate_signing_key(jws_algorithm::es256);
  const auto verifier = parse_jwk(public_jwk(key.get(), jws_algorithm::es256));
  REQUIRE(verifier.has_value());
  const std::string signing_input = b64(R"({"alg":"ES256"})") + "." + b64(payload);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  REQUIRE(EVP_DigestSignInit_ex(ctx, nullptr, "SHA256", nullptr, nullptr, key.get(), nullptr) == 1);
  std::size_t size = 0;
  const auto* tbs = reinterpret_cast<const unsigned char*>(signing_input.data());
  REQUIRE(EVP_DigestSign(ctx, nullptr, &size, tbs, signing_input.size()) == 1);
  bytes der(size);
  REQUIRE(EVP_DigestSign(ctx, der.data(), &size, tbs, signing_input.size()) == 1);
  der.resize(size);
  EVP_MD_CTX_free(ctx);
  CHECK(error_of(verify_compact_jws(signing_input + "." + b64(der), *verifier)) ==
        code(verify_errc::bad_signature));
}

TEST_CASE("Ed25519 and RSA signatures of the wrong length are refused") {
  for (const auto alg : {jws_algorithm::eddsa, jws_algorithm::ps256, jws_algorithm::rs256}) {
    CAPTURE(to_string(alg));
    const auto s = make_signer(alg);
    const auto token = split(sign_jwt(s.key.get(), alg, payload));
    const auto raw = b64_decoded(token.signature);
    bytes longer = raw;
    longer.insert(longer.begin(), 0);
    for (const auto& sig : {bytes(raw.begin() + 1, raw.end()), longer}) {
      auto forged = token;
      forged.signature = b64(sig);
      CHECK(error_of(verify_compact_jws(join(forged), s.verifier)) ==
            code(verify_errc::bad_signature));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Token shape.

TEST_CASE("base64url decoding refuses padding, other alphabets, whitespace and stray bits") {
  CHECK(base64url_decode("").value().empty());
  CHECK(text_of(base64url_decode("YQ").value()) == "a");
  CHECK(text_of(base64url_decode("YWI").value()) == "ab");
  CHECK(text_of(base64url_decode("YWJj").value()) == "abc");
  CHECK(base64url_decode("-_-_").value() == bytes{0xfb, 0xff, 0xbf});
  for (const char* bad : {"YQ==", "YQ=", "YWI=", "++__", "//__", "YW Jj", "YWJj\n", " YWJj",
                          "YWJj\t", "YR", "YWJ", "YWK", "Y", "YWJjZ"}) {
    CAPTURE(bad);
    CHECK_FALSE(base64url_decode(bad).has_value());
  }
  // ("YR" and "YWK" would decode to the bytes of "YQ" and "YWI" if the unused bits were
  // ignored: two texts for one token.) A NUL inside the text is no terminator.
  CHECK_FALSE(base64url_decode(std::string_view("YQ\0", 3)).has_value());
}

TEST_CASE("base64url encoding matches RFC 4648's test vectors and round-trips") {
  const std::array<std::pair<std::string_view, std::string_view>, 7> vectors{{
      {"", ""},
      {"f", "Zg"},
      {"fo", "Zm8"},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg"},
      {"fooba", "Zm9vYmE"},
      {"foobar", "Zm9vYmFy"},
  }};
  for (const auto& [plain, encoded] : vectors) {
    CHECK(b64(plain) == encoded);
    CHECK(text_of(base64url_decode(encoded).value()) == plain);
  }
  bytes all(256);
  for (std::size_t i = 0; i < all.size(); ++i) {
    all[i] = static_cast<std::uint8_t>(i);
  }
  for (std::size_t n = 0; n <= all.size(); ++n) {
    const bytes prefix(all.begin(), all.begin() + static_cast<long>(n));
    CHECK(base64url_decode(base64url_encode(prefix)) == prefix);
  }
}

TEST_CASE("lenient base64 accepts either alphabet, padded or not, but not a mix") {
  CHECK(text_of(base64_decode_lenient("YWtwdWIK").value()) == "akpub\n");
  CHECK(text_of(base64_decode_lenient("YQ==").value()) == "a");
  CHECK(text_of(base64_decode_lenient("YQ").value()) == "a");
  CHECK(text_of(base64_decode_lenient("YWI=").value()) == "ab");
  CHECK(base64_decode_lenient("+/+/").value() == bytes{0xfb, 0xff, 0xbf});
  CHECK(base64_decode_lenient("-_-_").value() == bytes{0xfb, 0xff, 0xbf});
  for (const char* bad : {"+_-/", "YQ=", "YQ===", "Y===", "YWJj=", "YWJj====", "Y=Q=", "=",
                          "YR==", "YW Jj", "YWJj\n"}) {
    CAPTURE(bad);
    CHECK_FALSE(base64_decode_lenient(bad).has_value());
  }
}

TEST_CASE("a token with non-canonical base64url in any part is malformed") {
  const auto key = vector_key();
  const auto token = split(read_text(vectors_dir + "ear-valid-0.jwt"));
  REQUIRE(verify_compact_jws(join(token), key).has_value());
  // The standard alphabet's '+' and '/' in place of a character: what a base64 (not base64url)
  // encoder would send.
  const auto with_first = [&](char c) { return c + token.signature.substr(1); };
  // The signature is 64 bytes: 86 characters, the last of which carries 4 unused bits.
  auto stray_bits = token.signature;
  stray_bits.back() = stray_bits.back() == 'A' ? 'B' : 'A';
  REQUIRE(token.signature.back() == 'A');
  for (const auto& sig : {token.signature + "==", with_first('+'), with_first('/'),
                          token.signature + "\n", " " + token.signature, stray_bits}) {
    CAPTURE(sig);
    CHECK(error_of(verify_compact_jws(token.header + "." + token.payload + "." + sig, key)) ==
          code(verify_errc::malformed_token));
  }
  CHECK(error_of(verify_compact_jws(token.header + "=." + token.payload + "." + token.signature,
                                    key)) == code(verify_errc::malformed_token));
  CHECK(error_of(verify_compact_jws(token.header + "." + token.payload + "\r\n." + token.signature,
                                    key)) == code(verify_errc::malformed_token));
  CHECK(error_of(verify_compact_jws(join(token) + "\n", key)) ==
        code(verify_errc::malformed_token));
}

TEST_CASE("a token without exactly three parts is malformed") {
  const auto key = vector_key();
  const auto token = split(read_text(vectors_dir + "ear-valid-0.jwt"));
  for (const auto& bad :
       {std::string{}, std::string("."), std::string(".."), std::string("..."),
        token.header + "." + token.payload, join(token) + ".", join(token) + "." + token.signature,
        "." + token.payload + "." + token.signature}) {
    CHECK(error_of(verify_compact_jws(bad, key)) == code(verify_errc::malformed_token));
  }
}

TEST_CASE("a token over the size limit is refused even with a valid signature") {
  const auto s = make_signer(jws_algorithm::es256);
  const auto token_of_size = [&](std::size_t payload_bytes) {
    std::string claims = R"({"pad":")";
    claims.append(payload_bytes - claims.size() - 2, 'x');
    claims += R"("})";
    return sign_jwt(s.key.get(), jws_algorithm::es256, claims);
  };
  // 4/3 expansion: 190,000 payload bytes stay under 256 KiB, 200,000 do not.
  const auto fits = token_of_size(190'000);
  const auto too_big = token_of_size(200'000);
  REQUIRE(fits.size() <= max_token_size);
  REQUIRE(too_big.size() > max_token_size);
  CHECK(verify_compact_jws(fits, s.verifier).has_value());
  CHECK(error_of(verify_compact_jws(too_big, s.verifier)) == code(verify_errc::malformed_token));
  CHECK(error_of(verify_compact_jws(std::string(max_token_size + 1, 'A'), s.verifier)) ==
        code(verify_errc::malformed_token));
}

TEST_CASE("a header that is not a JSON object with a string alg is malformed") {
  const auto s = make_signer(jws_algorithm::es256);
  for (const char* header :
       {"", "[]", "\"ES256\"", "{}", R"({"alg":256})", R"({"alg":null})", R"({"alg":["ES256"]})",
        R"({"alg":"ES256",})", R"({"alg":"ES256"} x)", R"({"alg":"ES256"}{})", "{'alg':'ES256'}",
        R"({"alg":"ES256","alg":"ES256"})", R"({"alg":"ES256","typ":"JWT","typ":"x"})",
        "{\"alg\":\"ES256\",\"x\":\"\xff\"}", R"({"alg":"ES256"/*c*/})"}) {
    CAPTURE(header);
    const auto token = sign_jws(s.key.get(), jws_algorithm::es256, header, payload);
    CHECK(error_of(verify_compact_jws(token, s.verifier)) == code(verify_errc::malformed_token));
  }
}

TEST_CASE("a signed token with a crit or b64 header is refused as not understood") {
  const auto s = make_signer(jws_algorithm::es256);
  for (const char* header :
       {R"({"alg":"ES256","crit":["exp"],"exp":1})", R"({"alg":"ES256","crit":[]})",
        R"({"alg":"ES256","b64":false,"crit":["b64"]})", R"({"alg":"ES256","b64":true})"}) {
    CAPTURE(header);
    const auto token = sign_jws(s.key.get(), jws_algorithm::es256, header, payload);
    CHECK(error_of(verify_compact_jws(token, s.verifier)) == code(verify_errc::unsupported_header));
  }
  // The same token without them verifies: the refusal is for the header, not the signature.
  CHECK(verify_compact_jws(
            sign_jws(s.key.get(), jws_algorithm::es256, R"({"alg":"ES256"})", payload), s.verifier)
            .has_value());
}

TEST_CASE("keys embedded or referenced in the header are ignored") {
  const auto trusted = make_signer(jws_algorithm::es256);
  const auto attacker = make_signer(jws_algorithm::es256);
  const auto attacker_jwk = public_jwk(attacker.key.get(), jws_algorithm::es256);
  const std::string header =
      R"({"alg":"ES256","jwk":)" + attacker_jwk +
      R"(,"jku":"https://attacker.example/jwks","kid":"x","x5u":"https://a"})";
  const auto forged = sign_jws(attacker.key.get(), jws_algorithm::es256, header, payload);
  CHECK(error_of(verify_compact_jws(forged, trusted.verifier)) == code(verify_errc::bad_signature));
  const auto genuine = sign_jws(trusted.key.get(), jws_algorithm::es256, header, payload);
  CHECK(verify_compact_jws(genuine, trusted.verifier).has_value());
}

TEST_CASE("verification leaves the thread's OpenSSL error queue as it found it") {
  ERR_clear_error();
  ERR_raise(ERR_LIB_USER, 42);
  const unsigned long sentinel = ERR_peek_last_error();
  REQUIRE(sentinel != 0);

  // Paths on which OpenSSL itself fails and pushes errors.
  auto jwk = json::parse(vector_jwk()).as_object();
  auto y = b64_decoded(jwk.at("y").as_string());
  y.back() ^= 0x01U;
  jwk["y"] = b64(y);
  CHECK(error_of(parse_jwk(json::serialize(jwk))) == code(verify_errc::malformed_key));
  CHECK(error_of(
            parse_public_key_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")) ==
        code(verify_errc::malformed_key));
  auto token = split(read_text(vectors_dir + "ear-valid-0.jwt"));
  auto sig = b64_decoded(token.signature);
  sig[5] ^= 0x80U;
  token.signature = b64(sig);
  CHECK(error_of(verify_compact_jws(join(token), vector_key())) ==
        code(verify_errc::bad_signature));

  CHECK(ERR_get_error() == sentinel);
  CHECK(ERR_get_error() == 0);
}

// ---------------------------------------------------------------------------------------------
// JWK and PEM keys.

TEST_CASE("a JWK with private key members is refused") {
  const auto key = generate_signing_key(jws_algorithm::es256);
  const auto jwk = public_jwk(key.get(), jws_algorithm::es256);
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "d", "AAAA"))) == code(verify_errc::unsupported_key));
  const auto rsa = generate_signing_key(jws_algorithm::rs256);
  const auto rsa_jwk = public_jwk(rsa.get(), jws_algorithm::rs256, true);
  for (const char* member : {"d", "p", "q", "dp", "dq", "qi"}) {
    CHECK(error_of(parse_jwk(edit_jwk(rsa_jwk, member, "AQAB"))) ==
          code(verify_errc::unsupported_key));
  }
}

TEST_CASE("an EC JWK whose point is not on the curve is refused") {
  auto jwk = json::parse(vector_jwk()).as_object();
  auto y = b64_decoded(jwk.at("y").as_string());
  y.back() ^= 0x01U;
  jwk["y"] = b64(y);
  CHECK(error_of(parse_jwk(json::serialize(jwk))) == code(verify_errc::malformed_key));
  // The all-zero "point" (the encoding some libraries use for infinity).
  jwk["x"] = b64(bytes(32, 0));
  jwk["y"] = b64(bytes(32, 0));
  CHECK(error_of(parse_jwk(json::serialize(jwk))) == code(verify_errc::malformed_key));
  // A coordinate at or above the field prime p.
  jwk["x"] = b64(bytes(32, 0xff));
  CHECK(error_of(parse_jwk(json::serialize(jwk))) == code(verify_errc::malformed_key));
}

TEST_CASE("an EC JWK with coordinates not exactly the curve's size is refused") {
  const auto jwk = vector_jwk();
  const auto x = b64_decoded(json::parse(jwk).at("x").as_string());
  bytes padded{0};
  padded.insert(padded.end(), x.begin(), x.end());
  for (const auto& bad : {bytes(x.begin() + 1, x.end()), padded, bytes{}}) {
    CHECK(error_of(parse_jwk(edit_jwk(jwk, "x", json::value(b64(bad))))) ==
          code(verify_errc::malformed_key));
  }
  // P-521 coordinates are 66 bytes, even when the top bits are clear.
  const auto p521 = generate_signing_key(jws_algorithm::es512);
  const auto p521_jwk = public_jwk(p521.get(), jws_algorithm::es512);
  CHECK(b64_decoded(json::parse(p521_jwk).at("x").as_string()).size() == 66);
  CHECK(parse_jwk(p521_jwk).has_value());
}

TEST_CASE("a JWK whose alg does not fit its curve, or a pin that does not, is refused") {
  const auto p384 = generate_signing_key(jws_algorithm::es384);
  const auto jwk = public_jwk(p384.get(), jws_algorithm::es384);
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "alg", "ES256"))) == code(verify_errc::malformed_key));
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "alg", "PS384"))) == code(verify_errc::malformed_key));
  CHECK(error_of(parse_jwk(jwk, jws_algorithm::es256)) == code(verify_errc::unsupported_key));
  CHECK(error_of(parse_jwk(edit_jwk(vector_jwk(), "alg", "EdDSA"))) ==
        code(verify_errc::malformed_key));
  // A pin and an "alg" that disagree, though both fit the key.
  const auto rsa = generate_signing_key(jws_algorithm::ps256);
  const auto rsa_jwk = public_jwk(rsa.get(), jws_algorithm::ps256, true);
  CHECK(error_of(parse_jwk(rsa_jwk, jws_algorithm::rs256)) == code(verify_errc::unsupported_key));
  CHECK(parse_jwk(rsa_jwk, jws_algorithm::ps256).has_value());
  // Unknown or forbidden "alg" values.
  for (const char* alg : {"none", "HS256", "ES256K", "es256"}) {
    CHECK(error_of(parse_jwk(edit_jwk(vector_jwk(), "alg", alg))) ==
          code(verify_errc::unsupported_key));
  }
  CHECK(error_of(parse_jwk(edit_jwk(vector_jwk(), "alg", 7))) == code(verify_errc::malformed_key));
}

TEST_CASE("an RSA JWK needs an algorithm and at least 2048 bits") {
  const auto rsa = generate_signing_key(jws_algorithm::rs256);
  CHECK(error_of(parse_jwk(public_jwk(rsa.get(), jws_algorithm::rs256, false))) ==
        code(verify_errc::malformed_key));
  EVP_PKEY* small = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{1024});
  REQUIRE(small != nullptr);
  const unique_pkey small_key(small);
  CHECK(error_of(parse_jwk(public_jwk(small, jws_algorithm::rs256, true))) ==
        code(verify_errc::unsupported_key));
  // n with a leading zero octet is not the minimal encoding RFC 7518 §6.3.1.1 requires.
  const auto jwk = public_jwk(rsa.get(), jws_algorithm::rs256, true);
  auto n = b64_decoded(json::parse(jwk).at("n").as_string());
  n.insert(n.begin(), 0);
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "n", json::value(b64(n))))) ==
        code(verify_errc::malformed_key));
  // An even modulus or exponent is no RSA key.
  auto even = b64_decoded(json::parse(jwk).at("n").as_string());
  even.back() &= 0xfeU;
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "n", json::value(b64(even))))) ==
        code(verify_errc::malformed_key));
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "e", "AQAA"))) == code(verify_errc::malformed_key));
}

TEST_CASE("JWKs of unknown types, curves or uses are refused") {
  const auto jwk = vector_jwk();
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "kty", "oct"))) == code(verify_errc::unsupported_key));
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "kty", "ec"))) == code(verify_errc::unsupported_key));
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "kty", nullptr))) == code(verify_errc::malformed_key));
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "crv", "P-192"))) == code(verify_errc::unsupported_key));
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "crv", "secp256k1"))) ==
        code(verify_errc::unsupported_key));
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "crv", nullptr))) == code(verify_errc::malformed_key));
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "y", nullptr))) == code(verify_errc::malformed_key));
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "use", "enc"))) == code(verify_errc::unsupported_key));
  CHECK(parse_jwk(edit_jwk(jwk, "use", "sig")).has_value());
  CHECK(error_of(parse_jwk(edit_jwk(jwk, "key_ops", json::array{"encrypt"}))) ==
        code(verify_errc::unsupported_key));
  CHECK(parse_jwk(edit_jwk(jwk, "key_ops", json::array{"verify"})).has_value());
  const auto ed = generate_signing_key(jws_algorithm::eddsa);
  const auto ed_jwk = public_jwk(ed.get(), jws_algorithm::eddsa);
  CHECK(parse_jwk(ed_jwk).has_value());
  CHECK(error_of(parse_jwk(edit_jwk(ed_jwk, "crv", "Ed448"))) ==
        code(verify_errc::unsupported_key));
  CHECK(error_of(parse_jwk(edit_jwk(ed_jwk, "crv", "X25519"))) ==
        code(verify_errc::unsupported_key));
  CHECK(error_of(parse_jwk(edit_jwk(ed_jwk, "x", "AAAA"))) == code(verify_errc::malformed_key));
}

TEST_CASE("a JWK that is not one strict JSON object under 16 KiB is malformed") {
  const auto jwk = vector_jwk();
  std::string padded = jwk;
  padded.insert(1, max_jwk_size, ' ');
  for (const auto& bad : {std::string{}, std::string("[]"), std::string("null"), jwk + "{}",
                          jwk.substr(0, jwk.size() - 3), padded,
                          std::string(R"({"kty":"EC","kty":"EC","crv":"P-256","x":"","y":""})"),
                          edit_jwk(jwk, "x", "usWxHK2PmfnHKwXPS54m0kTcGJ90UiglWiGahtagnv8=")}) {
    CHECK(error_of(parse_jwk(bad)) == code(verify_errc::malformed_key));
  }
}

TEST_CASE("PEM public keys load with the same algorithm rules") {
  const auto ak = parse_public_key_pem(read_text(vectors_dir + "ak-pub.pem"));
  REQUIRE(ak.has_value());
  CHECK(ak->algorithm == jws_algorithm::es256);

  for (const auto alg : all_algorithms) {
    CAPTURE(to_string(alg));
    const auto key = generate_signing_key(alg);
    BIO* bio = BIO_new(BIO_s_mem());
    REQUIRE(PEM_write_bio_PUBKEY(bio, key.get()) == 1);
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio, &data);
    const std::string pem(data, static_cast<std::size_t>(size));
    BIO_free(bio);
    const auto pinned = parse_public_key_pem(pem, alg);
    REQUIRE(pinned.has_value());
    CHECK(verify_compact_jws(sign_jwt(key.get(), alg, payload), *pinned).has_value());
    const auto implied = parse_public_key_pem(pem);
    if (alg == jws_algorithm::es256 || alg == jws_algorithm::es384 || alg == jws_algorithm::es512 ||
        alg == jws_algorithm::eddsa) {
      CHECK(implied.has_value());
    } else {
      CHECK(error_of(implied) == code(verify_errc::malformed_key));
    }
  }

  // A private key file is not a public key.
  const auto key = generate_signing_key(jws_algorithm::es256);
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  const std::string pem(data, static_cast<std::size_t>(size));
  BIO_free(bio);
  CHECK(error_of(parse_public_key_pem(pem)) == code(verify_errc::malformed_key));
  CHECK(error_of(parse_public_key_pem(read_text(vectors_dir + "ak-pub.pem"),
                                      jws_algorithm::es384)) == code(verify_errc::unsupported_key));
}

}  // namespace
}  // namespace atls::verify
