#include "atls/attested/appraisal.hpp"

#include <algorithm>
#include <array>

#include <openssl/sha.h>

#include "atls/attested/reason.hpp"
#include "atls/common/hex.hpp"
#include "atls/tls/cmw.hpp"
#include "atls/tls/error.hpp"
#include "atls/verify/ear.hpp"
#include "atls/verify/error.hpp"

namespace atls::attested {

namespace {

std::array<std::uint8_t, SHA256_DIGEST_LENGTH> sha256(std::span<const std::uint8_t> data) {
  std::array<std::uint8_t, SHA256_DIGEST_LENGTH> digest{};
  SHA256(data.data(), data.size(), digest.data());
  return digest;
}

// A record that says what it is must say the right thing; one without `ind` is taken at its
// media type, which the verifier checks anyway.
bool indicates(const tls::cmw_record& record, std::uint8_t bit) {
  return !record.indicator || (*record.indicator & bit) != 0;
}

result<verify::attestation_result> check_passport(const relying_party& rp,
                                                  const tls::cmw_record& record) {
  const auto* type = std::get_if<std::string>(&record.type);
  if (type == nullptr || *type != ear_media_type ||
      !indicates(record, tls::cmw_indicator::attestation_results)) {
    return make_error_code(verify::verify_errc::unsupported_media_type);
  }
  const std::string_view token(reinterpret_cast<const char*>(record.value.data()),
                               record.value.size());
  // The first key that verifies the signature decides; a token that none verifies keeps the
  // most telling error (a malformed token says so with every key).
  error_code last = verify::verify_errc::no_verification_key;
  for (const auto& key : rp.passport_keys) {
    auto verified = verify::verify_ear(token, key);
    if (verified) {
      // A passport is fresh only by its own dates: one that bounds neither would be good forever.
      if (!verified->expires_at && !rp.accept.max_age) {
        return make_error_code(verify::verify_errc::result_too_old);
      }
      return verified;
    }
    last = verified.error();
    if (last != verify::verify_errc::bad_signature &&
        last != verify::verify_errc::algorithm_mismatch) {
      return last;
    }
  }
  return last;
}

}  // namespace

result<void> accept_result(const relying_party& rp, const verify::attestation_result& attestation,
                           std::span<const std::uint8_t> proven_key,
                           verify::clock::time_point now) {
  // The verifier's verdict first: a result it did not affirm may not name a key at all (Veraison
  // leaves out the key attestation when the PCRs do not match), and "below policy" is then the
  // reason that tells the operator what happened.
  if (auto accepted = verify::check(rp.accept, attestation, now); !accepted) {
    return accepted.error();
  }
  if (!attestation.attested_key || !std::ranges::equal(*attestation.attested_key, proven_key)) {
    return make_error_code(verify::verify_errc::attested_key_mismatch);
  }
  if (!rp.pinned_keys.empty()) {
    const auto digest = sha256(*attestation.attested_key);
    if (std::ranges::find(rp.pinned_keys, digest) == rp.pinned_keys.end()) {
      return make_error_code(errc::attester_not_pinned);
    }
  }
  return {};
}

boost::asio::awaitable<result<verify::attestation_result>> appraise_peer(
    const relying_party& rp, std::span<const std::uint8_t> cmw, bytes binder, bytes proven_key,
    std::optional<verify::attestation_result>* refused) {
  auto record = tls::decode_cmw(cmw);
  if (!record) {
    co_return record.error();
  }
  result<verify::attestation_result> appraised = make_error_code(tls::errc::no_evidence);
  if (rp.model == model::passport) {
    appraised = check_passport(rp, *record);
  } else {
    const auto* type = std::get_if<std::string>(&record->type);
    if (type == nullptr || !indicates(*record, tls::cmw_indicator::evidence) || !rp.verifier) {
      co_return make_error_code(verify::verify_errc::unsupported_media_type);
    }
    appraised = co_await rp.verifier->appraise(std::move(record->value), *type, std::move(binder));
  }
  if (!appraised) {
    co_return appraised.error();
  }
  if (auto accepted = accept_result(rp, *appraised, proven_key, verify::clock::now()); !accepted) {
    if (refused != nullptr) {
      *refused = std::move(*appraised);
    }
    co_return accepted.error();
  }
  co_return appraised;
}

std::string key_fingerprint(std::span<const std::uint8_t> spki_der) {
  return to_hex(sha256(spki_der));
}

result<bytes> wrap_evidence(const attest::evidence_bundle& evidence) {
  return tls::encode_cbor(tls::cmw_record{
      .type = evidence.media_type,
      .value = evidence.data,
      .indicator = tls::cmw_indicator::evidence,
  });
}

result<bytes> wrap_passport(std::string_view ear) {
  return tls::encode_cbor(tls::cmw_record{
      .type = std::string(ear_media_type),
      .value = bytes(ear.begin(), ear.end()),
      .indicator = tls::cmw_indicator::attestation_results,
  });
}

}  // namespace atls::attested
