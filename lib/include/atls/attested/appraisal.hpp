// The relying party's decision on one piece of attestation from the peer, whichever mode carried
// it: the checks that bind it to this connection and the policy's rules, in one place so that
// intra-handshake and post-handshake attestation cannot drift apart.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "atls/attested/settings.hpp"
#include "atls/common/result.hpp"
#include "atls/verify/attestation_result.hpp"

namespace atls::attested {

using bytes = std::vector<std::uint8_t>;

// Appraises `cmw` (a CMW record as received, tls/cmw.hpp) from a peer that proved, on this
// connection, possession of the key whose DER SPKI is `proven_key` (the handshake's or the
// authenticator's leaf), where `binder` is the challenge derived from this connection.
//
// Background-check: the CMW must carry evidence of a media type the verifier appraises, bound
// to `binder` (the verifier gets it as the nonce and checks it in the evidence). Passport: the
// CMW must carry an EAR signed by one of rp.passport_keys; its freshness is its own iat/exp
// against rp.accept (a passport is not bound to the connection: its binding is the key, proven
// by the handshake). Either way, the result must pass rp.accept (verify::check), name
// `proven_key` as the attested key (verify_errc::attested_key_mismatch) and, when the policy
// pins keys, name a pinned one (errc::attester_not_pinned), checked in that order.
//
// Fails with tls::errc::malformed_cmw, verify_errc or attest::evidence_errc; reason_of() names
// the failure. When the verifier (or the passport's signer) produced a result that these checks
// then refused, it is stored in `*refused` if given, so that the audit line can show the status
// and trust vector that fell short; `*refused` is left alone otherwise. Completes on the
// awaiting coroutine's executor.
[[nodiscard]] boost::asio::awaitable<result<verify::attestation_result>> appraise_peer(
    const relying_party& rp, std::span<const std::uint8_t> cmw, bytes binder, bytes proven_key,
    std::optional<verify::attestation_result>* refused = nullptr);

// The same checks for a result already obtained (what appraise_peer runs after the verifier):
// the policy at `now`, the key match, the pins.
[[nodiscard]] result<void> accept_result(const relying_party& rp,
                                         const verify::attestation_result& attestation,
                                         std::span<const std::uint8_t> proven_key,
                                         verify::clock::time_point now);

// The CMW this side sends: its evidence (background-check) wrapped as a CBOR record with the
// evidence indicator, or its EAR (passport) with the attestation-results indicator.
[[nodiscard]] result<bytes> wrap_evidence(const attest::evidence_bundle& evidence);
[[nodiscard]] result<bytes> wrap_passport(std::string_view ear);

// SHA-256 of a key's DER SPKI in hex: how logs and pins name an attested key.
[[nodiscard]] std::string key_fingerprint(std::span<const std::uint8_t> spki_der);

// The media type of an EAR in a CMW (draft-fv-rats-ear).
inline constexpr std::string_view ear_media_type =
    "application/eat+jwt; eat_profile=\"tag:github.com,2023:veraison/ear\"";

}  // namespace atls::attested
