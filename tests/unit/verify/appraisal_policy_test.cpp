#include "atls/verify/appraisal_policy.hpp"

#include <doctest/doctest.h>

#include "atls/verify/error.hpp"

namespace atls::verify {
namespace {

using namespace std::chrono_literals;

error_code error_of(const result<void>& r) {
  return r ? error_code{} : r.error();
}

error_code code(verify_errc e) {
  return make_error_code(e);
}

// A fixed "now", so that every age below is exact.
const clock::time_point now = clock::time_point{1700000000s};

submodule_result parsec_tpm(ear_status status = ear_status::affirming) {
  submodule_result sub{.name = "PARSEC_TPM", .status = status};
  sub.trust.set(trust_claim::instance_identity, trustworthy_instance);
  sub.trust.set(trust_claim::hardware, genuine_hardware);
  sub.trust.set(trust_claim::executables, approved_runtime);
  return sub;
}

// What a parsec-tpm appraisal of good evidence looks like, issued ten seconds ago.
attestation_result good_result() {
  attestation_result r;
  r.submodules.push_back(parsec_tpm());
  r.status = ear_status::affirming;
  r.trust = r.submodules[0].trust;
  r.issued_at = now - 10s;
  return r;
}

appraisal_policy with_minimum(trust_claim claim, ear_status tier) {
  appraisal_policy p;
  p.minimum_tiers[static_cast<std::size_t>(claim)] = tier;
  return p;
}

TEST_CASE("a fresh affirming result passes the default policy") {
  CHECK(check(appraisal_policy{}, good_result(), now).has_value());
}

TEST_CASE("a result issued beyond the allowed clock skew in the future is refused") {
  auto r = good_result();
  r.issued_at = now + 60s;
  CHECK(check(appraisal_policy{}, r, now).has_value());  // default skew 60 s, inclusive
  r.issued_at = now + 61s;
  CHECK(error_of(check(appraisal_policy{}, r, now)) == code(verify_errc::issued_in_future));
  const appraisal_policy strict{.allowed_clock_skew = 0s};
  r.issued_at = now + 1s;
  CHECK(error_of(check(strict, r, now)) == code(verify_errc::issued_in_future));
  r.issued_at = now;
  CHECK(check(strict, r, now).has_value());
}

TEST_CASE("a result older than the maximum age is refused") {
  auto r = good_result();
  const appraisal_policy fresh{.max_age = 30s};
  r.issued_at = now - 30s;
  CHECK(check(fresh, r, now).has_value());
  r.issued_at = now - 31s;
  CHECK(error_of(check(fresh, r, now)) == code(verify_errc::result_too_old));
  // Without a maximum age, any age is fine.
  r.issued_at = now - std::chrono::hours(24 * 365);
  CHECK(check(appraisal_policy{}, r, now).has_value());
}

TEST_CASE("a result is refused from its exp on") {
  auto r = good_result();
  r.expires_at = now + 1s;
  CHECK(check(appraisal_policy{}, r, now).has_value());
  r.expires_at = now;
  CHECK(error_of(check(appraisal_policy{}, r, now)) == code(verify_errc::result_expired));
  r.expires_at = now - 1h;
  CHECK(error_of(check(appraisal_policy{}, r, now)) == code(verify_errc::result_expired));
}

TEST_CASE("the time rules are checked in order: future, too old, expired") {
  auto r = good_result();
  r.expires_at = now - 1s;
  r.issued_at = now + 2min;
  CHECK(error_of(check(appraisal_policy{.max_age = 30s}, r, now)) ==
        code(verify_errc::issued_in_future));
  r.issued_at = now - 1min;
  CHECK(error_of(check(appraisal_policy{.max_age = 30s}, r, now)) ==
        code(verify_errc::result_too_old));
  CHECK(error_of(check(appraisal_policy{}, r, now)) == code(verify_errc::result_expired));
  // Time before submodules: an expired result without any submodule is expired.
  r.submodules.clear();
  CHECK(error_of(check(appraisal_policy{}, r, now)) == code(verify_errc::result_expired));
}

TEST_CASE("a required submodule missing from the result is refused") {
  const appraisal_policy p{.required_submodules = {"PARSEC_TPM"}};
  CHECK(check(p, good_result(), now).has_value());
  auto r = good_result();
  r.submodules[0].name = "parsec_tpm";
  CHECK(error_of(check(p, r, now)) == code(verify_errc::missing_submodule));
  const appraisal_policy two{.required_submodules = {"PARSEC_TPM", "PSA_IOT"}};
  CHECK(error_of(check(two, good_result(), now)) == code(verify_errc::missing_submodule));
}

TEST_CASE("a result without any submodule is refused when none is required by name") {
  auto r = good_result();
  r.submodules.clear();
  CHECK(error_of(check(appraisal_policy{}, r, now)) == code(verify_errc::missing_submodule));
  // Even with the weakest status rule.
  CHECK(error_of(check(appraisal_policy{.minimum_status = ear_status::contraindicated}, r, now)) ==
        code(verify_errc::missing_submodule));
}

TEST_CASE("a submodule status below the minimum is refused") {
  struct row {
    ear_status status;
    ear_status minimum;
    bool accepted;
  };
  for (const auto& [status, minimum, accepted] : {
           row{ear_status::affirming, ear_status::affirming, true},
           row{ear_status::warning, ear_status::affirming, false},
           row{ear_status::warning, ear_status::warning, true},
           row{ear_status::affirming, ear_status::warning, true},
           // "none" is no claim at all: weaker than a warning.
           row{ear_status::none, ear_status::warning, false},
           row{ear_status::none, ear_status::affirming, false},
           row{ear_status::contraindicated, ear_status::warning, false},
           row{ear_status::contraindicated, ear_status::none, false},
       }) {
    CAPTURE(to_string(status));
    CAPTURE(to_string(minimum));
    auto r = good_result();
    r.submodules[0].status = status;
    r.status = status;
    const auto checked = check(appraisal_policy{.minimum_status = minimum}, r, now);
    if (accepted) {
      CHECK(checked.has_value());
    } else {
      CHECK(error_of(checked) == code(verify_errc::status_not_acceptable));
    }
  }
}

TEST_CASE("with required submodules only those are judged; without, every one is") {
  auto r = good_result();
  r.submodules.push_back({.name = "OTHER", .status = ear_status::contraindicated});
  r.status = ear_status::contraindicated;
  CHECK(check(appraisal_policy{.required_submodules = {"PARSEC_TPM"}}, r, now).has_value());
  CHECK(error_of(check(appraisal_policy{}, r, now)) == code(verify_errc::status_not_acceptable));
  CHECK(error_of(check(appraisal_policy{.required_submodules = {"PARSEC_TPM", "OTHER"}}, r, now)) ==
        code(verify_errc::status_not_acceptable));
}

TEST_CASE("a trust claim below its minimum tier, or absent, is refused") {
  const auto p = with_minimum(trust_claim::executables, ear_status::affirming);
  CHECK(check(p, good_result(), now).has_value());
  auto r = good_result();
  r.submodules[0].trust.set(trust_claim::executables, unrecognized_runtime);  // 33: warning
  CHECK(error_of(check(p, r, now)) == code(verify_errc::claim_below_minimum));
  CHECK(check(with_minimum(trust_claim::executables, ear_status::warning), r, now).has_value());

  // A minimum on a claim the verifier did not make.
  const auto config = with_minimum(trust_claim::configuration, ear_status::warning);
  CHECK(error_of(check(config, good_result(), now)) == code(verify_errc::claim_below_minimum));
}

TEST_CASE("negative claim values meet minimum tiers as their AR4SI mirror") {
  struct row {
    int value;
    ear_status minimum;
    bool accepted;
  };
  for (const auto& [value, minimum, accepted] : {
           row{-2, ear_status::affirming, true},
           row{-32, ear_status::affirming, true},
           row{-33, ear_status::affirming, false},
           row{-33, ear_status::warning, true},
           row{-96, ear_status::warning, true},
           row{-97, ear_status::warning, false},
           row{-128, ear_status::warning, false},
           row{-1, ear_status::warning, false},  // none
           row{-1, ear_status::none, true},
           row{-128, ear_status::none, false},
           row{0, ear_status::warning, false},
           row{1, ear_status::none, true},
       }) {
    CAPTURE(value);
    CAPTURE(to_string(minimum));
    auto r = good_result();
    r.submodules[0].trust.set(trust_claim::hardware, static_cast<std::int8_t>(value));
    const auto checked = check(with_minimum(trust_claim::hardware, minimum), r, now);
    if (accepted) {
      CHECK(checked.has_value());
    } else {
      CHECK(error_of(checked) == code(verify_errc::claim_below_minimum));
    }
  }
}

TEST_CASE("tiers are judged per submodule, not from the result's summary vector") {
  const auto p = with_minimum(trust_claim::executables, ear_status::affirming);
  auto r = good_result();
  r.submodules.push_back(parsec_tpm());
  r.submodules[1].name = "SECOND";
  r.submodules[1].trust.set(trust_claim::executables, 96);
  CHECK(error_of(check(p, r, now)) == code(verify_errc::claim_below_minimum));
  CHECK(check(appraisal_policy{.minimum_tiers = p.minimum_tiers,
                               .required_submodules = {"PARSEC_TPM"}},
              r, now)
            .has_value());
}

TEST_CASE("the status rule is checked before the tier rules") {
  auto r = good_result();
  r.submodules[0].status = ear_status::warning;
  r.submodules[0].trust.set(trust_claim::executables, 100);
  CHECK(error_of(check(with_minimum(trust_claim::executables, ear_status::affirming), r, now)) ==
        code(verify_errc::status_not_acceptable));
}

}  // namespace
}  // namespace atls::verify
