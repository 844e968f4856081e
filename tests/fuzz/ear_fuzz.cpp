// libFuzzer target for EAR and JOSE: verify_ear with the Veraison vector's key on the input as a
// token, decode_ear_claims on the input and on its payload part (so that mutated tokens reach the
// claims decoder without a valid signature), the base64 decoders and the JWK parser. Seed it
// with the three ../shared/vectors/*.jwt files (tests/fuzz/run.sh does).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <boost/json.hpp>

#include "atls/verify/appraisal_policy.hpp"
#include "atls/verify/ear.hpp"
#include "atls/verify/jose.hpp"

namespace atls::verify {
namespace {

// ../shared/vectors/ear-verification-key.jwk.json, so that ear-valid-0.jwt verifies.
constexpr std::string_view vector_jwk =
    R"({"kty":"EC","crv":"P-256","x":"usWxHK2PmfnHKwXPS54m0kTcGJ90UiglWiGahtagnv8",)"
    R"("y":"IBOL-C3BttVivg-lSreASjpkttcsz-1rb7btKLv8EX4"})";

const verification_key& vector_key() {
  static const verification_key key = [] {
    auto parsed = parse_jwk(vector_jwk);
    if (!parsed) {
      std::abort();
    }
    return *parsed;
  }();
  return key;
}

// Whatever decodes must be a coherent result: at least one submodule, the overall status the
// worst of theirs, a dump that is JSON, and a policy check that completes.
void check_result(const attestation_result& result) {
  if (result.submodules.empty()) {
    std::abort();
  }
  bool worst_seen = false;
  for (const auto& sub : result.submodules) {
    if (!at_least(sub.status, result.status)) {
      std::abort();
    }
    worst_seen = worst_seen || sub.status == result.status;
  }
  if (!worst_seen || result.trust != result.submodules.front().trust ||
      result.attested_key != result.submodules.front().attested_key) {
    std::abort();
  }
  boost::system::error_code ec;
  (void)boost::json::parse(to_json(result), ec);
  if (ec) {
    std::abort();
  }
  (void)check(appraisal_policy{.max_age = std::chrono::seconds(60)}, result, clock::now());
}

void run(std::string_view input) {
  const auto verified = verify_ear(input, vector_key());
  if (verified) {
    check_result(*verified);
    if (verified->raw_ear != input) {
      std::abort();
    }
  }

  if (const auto decoded = decode_ear_claims(input); decoded) {
    check_result(*decoded);
  }
  // The payload of anything shaped like a token, unsigned.
  const auto first = input.find('.');
  const auto second = first == std::string_view::npos ? first : input.find('.', first + 1);
  if (second != std::string_view::npos) {
    const auto payload = base64url_decode(input.substr(first + 1, second - first - 1));
    if (payload) {
      const std::string_view claims(reinterpret_cast<const char*>(payload->data()),
                                    payload->size());
      if (const auto decoded = decode_ear_claims(claims); decoded) {
        check_result(*decoded);
      }
    }
  }

  // Strict base64url is canonical: a text that decodes is the encoding of what it decodes to.
  if (const auto strict = base64url_decode(input); strict && base64url_encode(*strict) != input) {
    std::abort();
  }
  // The lenient form decodes to bytes the strict form round-trips.
  if (const auto lenient = base64_decode_lenient(input);
      lenient && base64url_decode(base64url_encode(*lenient)) != lenient) {
    std::abort();
  }

  (void)parse_jwk(input);
}

}  // namespace
}  // namespace atls::verify

// The entry point's name is libFuzzer's.
extern "C" int LLVMFuzzerTestOneInput(  // NOLINT(readability-identifier-naming)
    const std::uint8_t* data, std::size_t size) {
  atls::verify::run({reinterpret_cast<const char*>(data), size});
  return 0;
}
