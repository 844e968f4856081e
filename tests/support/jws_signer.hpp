// Signing JWS tokens for tests: the Veraison-API test server's EARs, and forged or malformed
// tokens for the verifier's negative tests. Production code only ever verifies.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <openssl/evp.h>

#include "atls/verify/jose.hpp"

namespace atls::test {

struct pkey_free {
  void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};
using unique_pkey = std::unique_ptr<EVP_PKEY, pkey_free>;

// A fresh key for `alg` (P-256/384/521, RSA 2048, Ed25519).
[[nodiscard]] unique_pkey generate_signing_key(verify::jws_algorithm alg);

// The public JWK of `key` as JSON text, with "alg" when `with_alg` is set.
[[nodiscard]] std::string public_jwk(EVP_PKEY* key, verify::jws_algorithm alg,
                                     bool with_alg = false);

// header_json.payload_json, base64url-encoded and signed with `key` as `alg` (ECDSA signatures in
// the JWS r||s form). The header is taken as given, so tests can forge any "alg".
[[nodiscard]] std::string sign_jws(EVP_PKEY* key, verify::jws_algorithm alg,
                                   std::string_view header_json, std::string_view payload_json);

// The same with the header {"alg":"<alg>","typ":"JWT"}.
[[nodiscard]] std::string sign_jwt(EVP_PKEY* key, verify::jws_algorithm alg,
                                   std::string_view payload_json);

}  // namespace atls::test
