// The relying party's rules for accepting an attestation result: the part of RFC 9334's
// "appraisal policy for attestation results" that atls enforces itself, whichever verifier
// produced the result.
#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "atls/common/result.hpp"
#include "atls/verify/attestation_result.hpp"

namespace atls::verify {

struct appraisal_policy {
  // Every checked submodule's ear.status must be at least this (at_least()). Only affirming or
  // warning make sense; the config layer refuses the others.
  ear_status minimum_status = ear_status::affirming;
  // Per claim, the minimum tier its value must reach (at_least(tier_of(value), minimum)). A
  // claim with a minimum that the result does not carry fails.
  std::array<std::optional<ear_status>, trust_claim_count> minimum_tiers{};
  // Submodules that must be present. The status and tier rules apply to these; when the list is
  // empty they apply to every submodule, and a result without any submodule fails.
  std::vector<std::string> required_submodules;
  // How old iat may be; unset means any age (a passport's freshness is then only its `exp`).
  std::optional<std::chrono::seconds> max_age;
  // How far iat may lie in the future, for clock skew between verifier and relying party.
  std::chrono::seconds allowed_clock_skew{60};
};

// Whether `attestation` satisfies `policy` at time `now`. Fails with the first rule broken, in this
// order: verify_errc::issued_in_future, result_too_old, result_expired, missing_submodule,
// status_not_acceptable, claim_below_minimum.
[[nodiscard]] result<void> check(const appraisal_policy& policy,
                                 const attestation_result& attestation, clock::time_point now);

}  // namespace atls::verify
