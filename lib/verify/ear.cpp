#include "atls/verify/ear.hpp"

#include <cstdint>
#include <utility>

#include <boost/json.hpp>
#include <openssl/crypto.h>

#include "atls/verify/error.hpp"

#include "detail/strict_json.hpp"

namespace atls::verify {

namespace {

namespace json = boost::json;

// NumericDate (RFC 7519 §2) as atls accepts it: whole seconds from 0 to 2^33 - 1 (the year
// 2242), so that system_clock's 64-bit nanosecond count holds every value without overflow.
constexpr std::int64_t max_numeric_date = (std::int64_t{1} << 33) - 1;

// eat_nonce sizes (draft-ietf-rats-eat §4.1; Veraison's session nonces). The same bounds as
// verifier.hpp's, which is not included: it pulls in Asio's coroutine headers, and this library
// must build without them for the fuzzers.
constexpr std::size_t min_eat_nonce_size = 8;
constexpr std::size_t max_eat_nonce_size = 64;

// A JSON integer as an int64, whether Boost.JSON stored it signed or unsigned. 1.0 or 1e3 are
// doubles and not NumericDates of this profile.
std::optional<std::int64_t> integer_of(const json::value& v) {
  if (const auto* i = v.if_int64(); i != nullptr) {
    return *i;
  }
  if (const auto* u = v.if_uint64(); u != nullptr && *u <= static_cast<std::uint64_t>(INT64_MAX)) {
    return static_cast<std::int64_t>(*u);
  }
  return std::nullopt;
}

result<clock::time_point> numeric_date(const json::value& v) {
  const auto seconds = integer_of(v);
  if (!seconds || *seconds < 0 || *seconds > max_numeric_date) {
    return verify_errc::malformed_claims;
  }
  return clock::time_point{std::chrono::seconds{*seconds}};
}

// A required string member: absent is missing_claim, another type malformed_claims.
result<std::string> required_string(const json::object& object, std::string_view name) {
  const auto* v = object.if_contains(name);
  if (v == nullptr) {
    return verify_errc::missing_claim;
  }
  const auto* s = v->if_string();
  if (s == nullptr) {
    return verify_errc::malformed_claims;
  }
  return std::string(*s);
}

result<verifier_identity> decode_verifier_id(const json::object& claims) {
  const auto* v = claims.if_contains("ear.verifier-id");
  if (v == nullptr) {
    return verify_errc::missing_claim;
  }
  const auto* id = v->if_object();
  if (id == nullptr) {
    return verify_errc::malformed_claims;
  }
  auto build = required_string(*id, "build");
  if (!build) {
    return build.error();
  }
  auto developer = required_string(*id, "developer");
  if (!developer) {
    return developer.error();
  }
  return verifier_identity{.developer = std::move(*developer), .build = std::move(*build)};
}

result<trust_vector> decode_trust_vector(const json::value& v) {
  const auto* members = v.if_object();
  if (members == nullptr) {
    return verify_errc::malformed_claims;
  }
  trust_vector out;
  for (const auto& member : *members) {
    // An unknown claim name is a verifier speaking a vocabulary atls does not know: refusing it
    // is safer than appraising a vector with a claim silently dropped.
    const auto claim = parse_trust_claim(member.key());
    const auto value = integer_of(member.value());
    if (!claim || !value || *value < INT8_MIN || *value > INT8_MAX) {
      return verify_errc::malformed_claims;
    }
    out.set(*claim, static_cast<std::int8_t>(*value));
  }
  return out;
}

result<submodule_result> decode_submodule(std::string_view name, const json::value& v) {
  const auto* appraisal = v.if_object();
  if (appraisal == nullptr) {
    return verify_errc::malformed_claims;
  }
  submodule_result out;
  out.name = std::string(name);

  const auto status_text = required_string(*appraisal, "ear.status");
  if (!status_text) {
    return status_text.error();
  }
  const auto status = parse_ear_status(*status_text);
  if (!status) {
    return verify_errc::malformed_claims;
  }
  out.status = *status;

  if (const auto* tv = appraisal->if_contains("ear.trustworthiness-vector"); tv != nullptr) {
    auto trust = decode_trust_vector(*tv);
    if (!trust) {
      return trust.error();
    }
    out.trust = *trust;
  }
  if (const auto* policy = appraisal->if_contains("ear.appraisal-policy-id"); policy != nullptr) {
    const auto* text = policy->if_string();
    if (text == nullptr) {
      return verify_errc::malformed_claims;
    }
    out.policy_id = std::string(*text);
  }
  // Veraison's extension naming the key the evidence attested: {"akpub": base64url(DER SPKI)},
  // unpadded in Veraison's own output, so decoded leniently.
  if (const auto* ka = appraisal->if_contains("ear.veraison.key-attestation"); ka != nullptr) {
    const auto* members = ka->if_object();
    if (members == nullptr) {
      return verify_errc::malformed_claims;
    }
    const auto* akpub = members->if_contains("akpub");
    if (akpub == nullptr) {
      return verify_errc::missing_claim;
    }
    const auto* text = akpub->if_string();
    if (text == nullptr) {
      return verify_errc::malformed_claims;
    }
    auto key = base64_decode_lenient(*text);
    if (!key || key->empty()) {
      return verify_errc::malformed_claims;
    }
    out.attested_key = std::move(*key);
  }
  return out;
}

// The worse of two statuses in at_least()'s order.
ear_status worse(ear_status a, ear_status b) noexcept {
  return at_least(a, b) ? b : a;
}

bool nonce_equal(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  // The nonce binds the result to one connection; compare without an early exit so a peer
  // probing with forged results learns nothing from timing.
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

result<attestation_result> decode_ear_claims(std::string_view claims_json) {
  const auto doc = detail::parse_json_strict(claims_json, max_token_size);
  if (!doc || !doc->is_object()) {
    return verify_errc::malformed_claims;
  }
  const auto& claims = doc->get_object();
  attestation_result out;

  const auto profile = required_string(claims, "eat_profile");
  if (!profile) {
    return profile.error();
  }
  if (*profile != ear_profile) {
    return verify_errc::wrong_profile;
  }

  const auto* iat = claims.if_contains("iat");
  if (iat == nullptr) {
    return verify_errc::missing_claim;
  }
  const auto issued_at = numeric_date(*iat);
  if (!issued_at) {
    return issued_at.error();
  }
  out.issued_at = *issued_at;

  if (const auto* exp = claims.if_contains("exp"); exp != nullptr) {
    const auto expires_at = numeric_date(*exp);
    if (!expires_at) {
      return expires_at.error();
    }
    out.expires_at = *expires_at;
  }

  auto verifier = decode_verifier_id(claims);
  if (!verifier) {
    return verifier.error();
  }
  out.verifier = std::move(*verifier);

  if (const auto* nonce = claims.if_contains("eat_nonce"); nonce != nullptr) {
    const auto* text = nonce->if_string();
    if (text == nullptr) {
      return verify_errc::malformed_claims;
    }
    auto decoded = base64_decode_lenient(*text);
    if (!decoded || decoded->size() < min_eat_nonce_size || decoded->size() > max_eat_nonce_size) {
      return verify_errc::malformed_claims;
    }
    out.nonce = std::move(*decoded);
  }

  const auto* submods_value = claims.if_contains("submods");
  if (submods_value == nullptr) {
    return verify_errc::missing_claim;
  }
  const auto* submods = submods_value->if_object();
  if (submods == nullptr) {
    return verify_errc::malformed_claims;
  }
  // A result that appraised nothing carries no ear.status at all.
  if (submods->empty()) {
    return verify_errc::missing_claim;
  }
  out.status = ear_status::affirming;
  // Boost.JSON objects keep the order of the text, so "first" is the verifier's first.
  for (const auto& member : *submods) {
    auto sub = decode_submodule(member.key(), member.value());
    if (!sub) {
      return sub.error();
    }
    out.status = worse(out.status, sub->status);
    out.submodules.push_back(std::move(*sub));
  }
  out.trust = out.submodules.front().trust;
  out.attested_key = out.submodules.front().attested_key;
  return out;
}

result<attestation_result> verify_ear(std::string_view token, const verification_key& key,
                                      const ear_expectations& expected) {
  const auto payload = verify_compact_jws(token, key);
  if (!payload) {
    return payload.error();
  }
  auto decoded = decode_ear_claims(*payload);
  if (!decoded) {
    return decoded.error();
  }
  if (expected.nonce && (!decoded->nonce || !nonce_equal(*decoded->nonce, *expected.nonce))) {
    return verify_errc::nonce_mismatch;
  }
  decoded->raw_ear = std::string(token);
  return decoded;
}

}  // namespace atls::verify
