#include "atls/verify/appraisal_policy.hpp"

#include <algorithm>

#include "atls/verify/error.hpp"

namespace atls::verify {

namespace {

// The submodules the status and tier rules apply to: the required ones, or all of them.
result<std::vector<const submodule_result*>> checked_submodules(
    const appraisal_policy& policy, const attestation_result& attestation) {
  std::vector<const submodule_result*> out;
  if (policy.required_submodules.empty()) {
    // A result without any appraisal says nothing about the attester: it must not pass a policy
    // that would only have looked at what is there.
    if (attestation.submodules.empty()) {
      return verify_errc::missing_submodule;
    }
    for (const auto& sub : attestation.submodules) {
      out.push_back(&sub);
    }
    return out;
  }
  for (const auto& name : policy.required_submodules) {
    const auto it = std::find_if(attestation.submodules.begin(), attestation.submodules.end(),
                                 [&name](const submodule_result& sub) { return sub.name == name; });
    if (it == attestation.submodules.end()) {
      return verify_errc::missing_submodule;
    }
    out.push_back(&*it);
  }
  return out;
}

bool claims_reach_minimum(const appraisal_policy& policy, const trust_vector& trust) {
  for (std::size_t i = 0; i < trust_claim_count; ++i) {
    const auto& minimum = policy.minimum_tiers[i];
    if (!minimum) {
      continue;
    }
    // A claim the verifier did not make cannot vouch for anything.
    const auto value = trust.claims[i];
    if (!value || !at_least(tier_of(*value), *minimum)) {
      return false;
    }
  }
  return true;
}

}  // namespace

result<void> check(const appraisal_policy& policy, const attestation_result& attestation,
                   clock::time_point now) {
  if (attestation.issued_at > now + policy.allowed_clock_skew) {
    return verify_errc::issued_in_future;
  }
  if (policy.max_age && now - attestation.issued_at > *policy.max_age) {
    return verify_errc::result_too_old;
  }
  // RFC 7519 §4.1.4: the result must not be accepted on or after its exp.
  if (attestation.expires_at && now >= *attestation.expires_at) {
    return verify_errc::result_expired;
  }
  const auto checked = checked_submodules(policy, attestation);
  if (!checked) {
    return checked.error();
  }
  for (const auto* sub : *checked) {
    if (!at_least(sub->status, policy.minimum_status)) {
      return verify_errc::status_not_acceptable;
    }
  }
  for (const auto* sub : *checked) {
    if (!claims_reach_minimum(policy, sub->trust)) {
      return verify_errc::claim_below_minimum;
    }
  }
  return {};
}

}  // namespace atls::verify
