// What a verifier says about evidence (RFC 9334 "attestation result"), in the vocabulary of EAR
// (draft-fv-rats-ear) and AR4SI trustworthiness claims. The local verifier and the Veraison
// client both produce it; the appraisal policy (appraisal_policy.hpp) decides whether it is good
// enough. Plain values: no I/O, no OpenSSL.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace atls::verify {

using bytes = std::vector<std::uint8_t>;
using clock = std::chrono::system_clock;

// ear.status, with the AR4SI tier values Veraison uses for them.
enum class ear_status : std::uint8_t {
  none = 0,
  affirming = 2,
  warning = 32,
  contraindicated = 96,
};

// "affirming", "warning", "contraindicated", "none".
[[nodiscard]] std::string_view to_string(ear_status status) noexcept;
[[nodiscard]] std::optional<ear_status> parse_ear_status(std::string_view text) noexcept;

// Whether `status` is at least as good as `minimum`. The order is affirming > warning > none >
// contraindicated: "none" means the verifier made no claim, which is weaker than a warning but
// not a finding against the attester.
[[nodiscard]] bool at_least(ear_status status, ear_status minimum) noexcept;

// The AR4SI trustworthiness claims, in the order of the EAR trust vector.
enum class trust_claim : std::uint8_t {
  instance_identity,
  configuration,
  executables,
  file_system,
  hardware,
  runtime_opaque,
  storage_opaque,
  sourced_data,
};
inline constexpr std::size_t trust_claim_count = 8;

// "instance-identity", "configuration", ... as EAR spells them.
[[nodiscard]] std::string_view to_string(trust_claim claim) noexcept;
[[nodiscard]] std::optional<trust_claim> parse_trust_claim(std::string_view text) noexcept;

// The tier of a claim value (AR4SI §2.3.2): -1..1 none, 2..31 and -2..-32 affirming, 32..95 and
// -33..-96 warning, 96..127 and -97..-128 contraindicated.
[[nodiscard]] ear_status tier_of(std::int8_t value) noexcept;

// Claim values by trust_claim; an absent claim is std::nullopt.
struct trust_vector {
  std::array<std::optional<std::int8_t>, trust_claim_count> claims{};

  [[nodiscard]] std::optional<std::int8_t> operator[](trust_claim c) const {
    return claims[static_cast<std::size_t>(c)];
  }
  void set(trust_claim c, std::int8_t value) { claims[static_cast<std::size_t>(c)] = value; }
  bool operator==(const trust_vector&) const = default;
};

// AR4SI values Veraison's parsec-tpm scheme sets.
inline constexpr std::int8_t trustworthy_instance = 2;   // instance-identity: recognised
inline constexpr std::int8_t genuine_hardware = 2;       // hardware: genuine
inline constexpr std::int8_t approved_runtime = 2;       // executables: approved, recognised
inline constexpr std::int8_t unrecognized_runtime = 33;  // executables: not in reference values

// One appraisal (an EAR "submods" entry), named as the verifier names it, e.g. "PARSEC_TPM".
struct submodule_result {
  std::string name;
  ear_status status = ear_status::none;
  trust_vector trust;
  std::optional<bytes> attested_key;  // ear.veraison.key-attestation.akpub: DER SPKI
  std::string policy_id;              // ear.appraisal-policy-id, may be empty
};

struct verifier_identity {
  std::string developer;
  std::string build;
  bool operator==(const verifier_identity&) const = default;
};

struct attestation_result {
  // The worst status among the submodules (none when there are none).
  ear_status status = ear_status::none;
  // The trust vector and attested key of the submodule that appraised the evidence (the first
  // submodule when there are several; all of them are in `submodules`).
  trust_vector trust;
  std::optional<bytes> attested_key;  // DER SPKI of the key the evidence vouches for
  verifier_identity verifier;
  clock::time_point issued_at{};
  std::optional<clock::time_point> expires_at;
  std::optional<bytes> nonce;  // eat_nonce, or the challenge the local verifier checked
  std::vector<submodule_result> submodules;
  std::string raw_ear;  // the EAR JWT as received; empty for the local verifier
};

// The result as a JSON object (status, trust vector by claim name with tiers, attested key as
// hex with its SHA-256, verifier, iat/exp as RFC 3339 and as seconds, submodules, nonce as hex,
// the raw EAR when there is one), for atlsctl and the audit log.
[[nodiscard]] std::string to_json(const attestation_result& result);

}  // namespace atls::verify
