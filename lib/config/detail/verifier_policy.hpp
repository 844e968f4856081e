// The two maps of a verifier policy, checkable on their own so that another document (a
// listener of the daemon config) can embed them: `verifier.local` and `accept`. Each records
// its problems on the checker and returns nothing when there was one.
#pragma once

#include <optional>

#include "atls/verify/appraisal_policy.hpp"
#include "atls/verify/local_verifier.hpp"

#include "checker.hpp"

namespace atls::config::detail {

// trusted_aks (PEM files, read here, or SPKI SHA-256 pins) and reference_values; or, instead of
// both, endorsements: the directory `atlsctl veraison endorsements` writes, whose two CoMIDs are
// read here (verify/endorsements.hpp) into the AK and the PCR values.
[[nodiscard]] std::optional<verify::local_verifier_options> check_local_verifier(
    checker_base& c, const value_ref& v);

// minimum_status, minimum_tiers, required_submodules, max_age.
[[nodiscard]] std::optional<verify::appraisal_policy> check_appraisal_policy(checker_base& c,
                                                                             const value_ref& v);

}  // namespace atls::config::detail
