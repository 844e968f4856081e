// JWS (RFC 7515) compact-serialisation verification and JWK (RFC 7517/7518, RFC 8037) public
// keys, as far as EAR needs them. Parsers of untrusted text: pure functions, sizes bounded.
//
// Algorithm confusion is impossible by construction: a key is parsed together with the one
// algorithm it may verify, and a token whose header names another algorithm is refused before
// any cryptography. "none" and the HMAC algorithms are never implemented, so no key can be used
// as an HMAC secret.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "atls/common/result.hpp"
#include "atls/verify/attestation_result.hpp"

using EVP_PKEY = struct evp_pkey_st;

namespace atls::verify {

enum class jws_algorithm : std::uint8_t {
  es256,  // ECDSA P-256 SHA-256: EAR's default
  es384,
  es512,  // ECDSA P-521 SHA-512
  ps256,  // RSASSA-PSS, MGF1 with the same hash, salt length = hash length
  ps384,
  ps512,
  rs256,  // RSASSA-PKCS1-v1_5
  rs384,
  rs512,
  eddsa,  // Ed25519 (RFC 8037)
};

// "ES256", ...; parse_jws_algorithm returns nullopt for "none", "HS256" and anything unknown.
[[nodiscard]] std::string_view to_string(jws_algorithm alg) noexcept;
[[nodiscard]] std::optional<jws_algorithm> parse_jws_algorithm(std::string_view name) noexcept;

// Upper bound on a token, far above any EAR Veraison issues (a few KiB with raw evidence).
inline constexpr std::size_t max_token_size = std::size_t{256} * 1024;
inline constexpr std::size_t max_jwk_size = std::size_t{16} * 1024;

// A public verification key and the one algorithm it verifies.
struct verification_key {
  std::shared_ptr<EVP_PKEY> key;
  jws_algorithm algorithm = jws_algorithm::es256;
};

// Parses a public JWK: kty EC (crv P-256, P-384, P-521; the point is checked to be on the
// curve), OKP (crv Ed25519) or RSA (n of at least 2048 bits). The algorithm is, in order:
// `pinned`; else the JWK's "alg" member; else the only one the key type allows (EC by curve,
// Ed25519 EdDSA). `pinned` and "alg" must agree with each other and with the key type (ES256 with
// a P-384 key is refused), and an RSA key without either is refused, since PS256 and RS256 would
// both fit. Fails with verify_errc::malformed_key or unsupported_key (a private key, i.e. a "d"
// member, is unsupported_key: a verifier never needs one).
[[nodiscard]] result<verification_key> parse_jwk(
    std::string_view json, std::optional<jws_algorithm> pinned = std::nullopt);

// The same from a PEM SubjectPublicKeyInfo ("-----BEGIN PUBLIC KEY-----"); the algorithm
// follows the same rules, without an "alg" member.
[[nodiscard]] result<verification_key> parse_public_key_pem(
    std::string_view pem, std::optional<jws_algorithm> pinned = std::nullopt);

// Verifies a JWS in compact serialisation and returns its payload bytes (the JSON text of the
// claims, unparsed). Checks, in order: size (max_token_size), three dot-separated parts of
// strict unpadded base64url (RFC 7515 §2), the header is a JSON object whose "alg" is a
// supported algorithm (unsupported_algorithm) equal to key.algorithm (algorithm_mismatch), no
// "crit" and no "b64" member (unsupported_header), then the signature (bad_signature; an ECDSA
// signature must be exactly 2 × the curve's byte length, RFC 7518 §3.4). Header members that
// would fetch or embed keys (jku, jwk, x5u, x5c, kid) are ignored: the key is the caller's.
// Leaves the thread's OpenSSL error queue as it found it.
[[nodiscard]] result<std::string> verify_compact_jws(std::string_view token,
                                                     const verification_key& key);

// base64url without padding (RFC 4648 §5); decoding refuses padding, whitespace and non-zero
// trailing bits. The lenient form accepts standard or URL alphabet, padded or not, as Veraison
// releases differ in what they send for nonces and keys.
[[nodiscard]] std::string base64url_encode(std::span<const std::uint8_t> data);
[[nodiscard]] std::optional<bytes> base64url_decode(std::string_view text);
[[nodiscard]] std::optional<bytes> base64_decode_lenient(std::string_view text);

}  // namespace atls::verify
