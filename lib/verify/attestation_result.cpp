#include "atls/verify/attestation_result.hpp"

#include <array>
#include <cstddef>
#include <span>
#include <utility>

#include <boost/json.hpp>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "atls/common/hex.hpp"

namespace atls::verify {

namespace {

namespace json = boost::json;

// The names EAR uses for the trust vector's members (draft-fv-rats-ear §3.1, AR4SI §2.3), in
// the order of trust_claim.
constexpr std::array<std::string_view, trust_claim_count> claim_names{
    "instance-identity", "configuration",  "executables",    "file-system",
    "hardware",          "runtime-opaque", "storage-opaque", "sourced-data",
};

// at_least()'s order as a number: higher is better.
constexpr int rank(ear_status status) noexcept {
  switch (status) {
    case ear_status::contraindicated:
      return 0;
    case ear_status::none:
      return 1;
    case ear_status::warning:
      return 2;
    case ear_status::affirming:
      return 3;
  }
  // Only reachable through a cast of a value the enum does not name: rank it as the worst, so a
  // corrupted status never passes a policy.
  return -1;
}

// Zero-padded decimal, for the fixed-width fields of RFC 3339.
void append_padded(std::string& out, long long value, std::size_t width) {
  auto digits = std::to_string(value < 0 ? -value : value);
  if (value < 0) {
    out.push_back('-');
  }
  if (digits.size() < width) {
    out.append(width - digits.size(), '0');
  }
  out += digits;
}

std::int64_t unix_seconds(clock::time_point t) {
  return std::chrono::floor<std::chrono::seconds>(t).time_since_epoch().count();
}

// RFC 3339 §5.6 date-time in UTC ("2022-10-18T11:09:33Z"), to the second as NumericDate is.
std::string rfc3339(clock::time_point t) {
  using namespace std::chrono;  // NOLINT(google-build-using-namespace): calendar types
  const auto secs = floor<seconds>(t);
  const auto day = floor<days>(secs);
  const year_month_day ymd{day};
  const hh_mm_ss hms{secs - day};
  std::string out;
  append_padded(out, static_cast<int>(ymd.year()), 4);
  out.push_back('-');
  append_padded(out, static_cast<unsigned>(ymd.month()), 2);
  out.push_back('-');
  append_padded(out, static_cast<unsigned>(ymd.day()), 2);
  out.push_back('T');
  append_padded(out, hms.hours().count(), 2);
  out.push_back(':');
  append_padded(out, hms.minutes().count(), 2);
  out.push_back(':');
  append_padded(out, hms.seconds().count(), 2);
  out.push_back('Z');
  return out;
}

json::object trust_json(const trust_vector& trust) {
  json::object out;
  for (std::size_t i = 0; i < trust_claim_count; ++i) {
    const auto value = trust.claims[i];
    if (!value) {
      continue;
    }
    out[claim_names[i]] = json::object{{"value", *value}, {"tier", to_string(tier_of(*value))}};
  }
  return out;
}

json::value key_json(const std::optional<bytes>& key) {
  if (!key) {
    return nullptr;
  }
  // The digest is what an operator compares with a certificate's or a TPM's key fingerprint.
  std::array<std::uint8_t, SHA256_DIGEST_LENGTH> digest{};
  unsigned int size = 0;
  if (EVP_Digest(key->data(), key->size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 ||
      size != digest.size()) {
    return json::object{{"spki", to_hex(*key)}, {"sha256", nullptr}};
  }
  return json::object{{"spki", to_hex(*key)}, {"sha256", to_hex(digest)}};
}

}  // namespace

std::string_view to_string(ear_status status) noexcept {
  switch (status) {
    case ear_status::none:
      return "none";
    case ear_status::affirming:
      return "affirming";
    case ear_status::warning:
      return "warning";
    case ear_status::contraindicated:
      return "contraindicated";
  }
  return "invalid";
}

std::optional<ear_status> parse_ear_status(std::string_view text) noexcept {
  for (const auto status : {ear_status::none, ear_status::affirming, ear_status::warning,
                            ear_status::contraindicated}) {
    if (text == to_string(status)) {
      return status;
    }
  }
  return std::nullopt;
}

bool at_least(ear_status status, ear_status minimum) noexcept {
  return rank(status) >= rank(minimum);
}

std::string_view to_string(trust_claim claim) noexcept {
  const auto index = static_cast<std::size_t>(claim);
  return index < claim_names.size() ? claim_names[index] : std::string_view{"invalid"};
}

std::optional<trust_claim> parse_trust_claim(std::string_view text) noexcept {
  for (std::size_t i = 0; i < claim_names.size(); ++i) {
    if (text == claim_names[i]) {
      return static_cast<trust_claim>(i);
    }
  }
  return std::nullopt;
}

ear_status tier_of(std::int8_t value) noexcept {
  // AR4SI §2.3.2, range by range. Each negative tier is the positive one mirrored and extended
  // by one, so that the eight bits split evenly between the signs.
  if (value >= -1 && value <= 1) {
    return ear_status::none;
  }
  if ((value >= 2 && value <= 31) || (value <= -2 && value >= -32)) {
    return ear_status::affirming;
  }
  if ((value >= 32 && value <= 95) || (value <= -33 && value >= -96)) {
    return ear_status::warning;
  }
  return ear_status::contraindicated;
}

std::string to_json(const attestation_result& result) {
  json::object submods;
  for (const auto& sub : result.submodules) {
    submods[sub.name] = json::object{
        {"status", to_string(sub.status)},
        {"trust_vector", trust_json(sub.trust)},
        {"attested_key", key_json(sub.attested_key)},
        {"policy_id", sub.policy_id},
    };
  }
  json::object root{
      {"status", to_string(result.status)},
      {"trust_vector", trust_json(result.trust)},
      {"attested_key", key_json(result.attested_key)},
      {"verifier",
       json::object{{"developer", result.verifier.developer}, {"build", result.verifier.build}}},
      {"issued_at", rfc3339(result.issued_at)},
      {"iat", unix_seconds(result.issued_at)},
      {"expires_at", result.expires_at ? json::value(rfc3339(*result.expires_at)) : nullptr},
      {"exp", result.expires_at ? json::value(unix_seconds(*result.expires_at)) : nullptr},
      {"nonce", result.nonce ? json::value(to_hex(*result.nonce)) : nullptr},
      {"submods", std::move(submods)},
  };
  if (!result.raw_ear.empty()) {
    root["raw_ear"] = result.raw_ear;
  }
  return json::serialize(root);
}

}  // namespace atls::verify
