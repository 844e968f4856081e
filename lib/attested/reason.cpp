#include "atls/attested/reason.hpp"

#include <array>
#include <string>

#include "atls/attest/evidence.hpp"
#include "atls/tls/error.hpp"
#include "atls/verify/error.hpp"

namespace atls::attested {

namespace {

constexpr std::array<std::string_view, 14> reason_names{
    "accepted",
    "attestation_required",
    "unsupported_schemes",
    "no_evidence",
    "malformed",
    "wrong_nonce",
    "key_mismatch",
    "verifier_refused",
    "verifier_unreachable",
    "status_below_policy",
    "ear_expired",
    "not_pinned",
    "bad_authenticator",
    "internal",
};

reason reason_of_tls(tls::errc e) noexcept {
  switch (e) {
    case tls::errc::attestation_required:
      return reason::attestation_required;
    case tls::errc::no_common_attestation_scheme:
      return reason::unsupported_schemes;
    case tls::errc::no_evidence:
      return reason::no_evidence;
    case tls::errc::malformed_attestation_extension:
    case tls::errc::malformed_cmw:
    case tls::errc::malformed_authenticator:
    case tls::errc::malformed_frame:
    case tls::errc::unrequested_extension:
      return reason::malformed;
    case tls::errc::authenticator_context_mismatch:
    case tls::errc::authenticator_context_reused:
    case tls::errc::bad_authenticator_signature:
    case tls::errc::bad_authenticator_finished:
      return reason::bad_authenticator;
    default:
      return reason::internal;
  }
}

reason reason_of_verify(verify::verify_errc e) noexcept {
  using verify::verify_errc;
  switch (e) {
    case verify_errc::nonce_mismatch:
      return reason::wrong_nonce;
    case verify_errc::attested_key_mismatch:
      return reason::key_mismatch;
    case verify_errc::status_not_acceptable:
    case verify_errc::claim_below_minimum:
    case verify_errc::missing_submodule:
      return reason::status_below_policy;
    case verify_errc::result_too_old:
    case verify_errc::result_expired:
    case verify_errc::issued_in_future:
      return reason::ear_expired;
    case verify_errc::verifier_unavailable:
    case verify_errc::no_verification_key:
      return reason::verifier_unreachable;
    case verify_errc::malformed_token:
    case verify_errc::malformed_claims:
    case verify_errc::missing_claim:
    case verify_errc::wrong_profile:
      return reason::malformed;
    default:
      // A bad signature, an unknown AK, a refusal or a failed session: the verifier looked and
      // said no.
      return reason::verifier_refused;
  }
}

reason reason_of_evidence(attest::evidence_errc e) noexcept {
  using attest::evidence_errc;
  switch (e) {
    case evidence_errc::nonce_mismatch:
      return reason::wrong_nonce;
    case evidence_errc::bad_signature:
    case evidence_errc::key_not_tpm_bound:
    case evidence_errc::name_mismatch:
      return reason::verifier_refused;
    default:
      return reason::malformed;
  }
}

}  // namespace

std::string_view to_string(reason r) noexcept {
  const auto index = static_cast<std::size_t>(r);
  return index < reason_names.size() ? reason_names[index] : std::string_view("unknown");
}

std::optional<reason> reason_from_wire(std::uint16_t value) noexcept {
  if (value >= reason_names.size()) {
    return std::nullopt;
  }
  return static_cast<reason>(value);
}

reason reason_of(const error_code& ec) noexcept {
  if (!ec) {
    return reason::accepted;
  }
  const auto& category = ec.category();
  if (category == tls::tls_category()) {
    return reason_of_tls(static_cast<tls::errc>(ec.value()));
  }
  if (category == verify::verify_category()) {
    return reason_of_verify(static_cast<verify::verify_errc>(ec.value()));
  }
  if (category == attest::evidence_category()) {
    return reason_of_evidence(static_cast<attest::evidence_errc>(ec.value()));
  }
  if (category == attested_category()) {
    switch (static_cast<errc>(ec.value())) {
      case errc::attester_not_pinned:
        return reason::not_pinned;
      case errc::refused_by_peer:
        return reason::verifier_refused;
      case errc::no_passport:
        return reason::no_evidence;
    }
  }
  return reason::internal;
}

namespace {

class category_impl final : public boost::system::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "atls.attested"; }
  [[nodiscard]] std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::attester_not_pinned:
        return "the attested key is not among the policy's pinned keys";
      case errc::refused_by_peer:
        return "the relying party refused our attestation";
      case errc::no_passport:
        return "no fresh attestation result to present";
    }
    return "unknown attestation error";
  }
};

}  // namespace

const boost::system::error_category& attested_category() noexcept {
  static const category_impl instance;
  return instance;
}

}  // namespace atls::attested
