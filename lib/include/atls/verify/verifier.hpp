// The verifier role of RFC 9334 as a relying party sees it: evidence in, attestation result out.
// Two implementations: local_verifier (embedded, no network) and veraison_client (Veraison's
// challenge-response REST API).
//
// A verifier only says what the evidence shows. Whether that is good enough is the appraisal
// policy's decision (appraisal_policy.hpp), and whether the evidence belongs to *this* TLS
// connection is the caller's: it derives the expected nonce from the connection and compares
// the result's attested_key with the key that signed the handshake.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>

#include "atls/common/result.hpp"
#include "atls/verify/attestation_result.hpp"

namespace atls::verify {

class verifier {
 public:
  virtual ~verifier() = default;

  // Appraises `evidence` of `media_type`, which must be bound to `expected_nonce` (8 to 64
  // bytes). A result comes back only when the evidence was genuinely appraised and carries that
  // nonce; its status may still be anything (warning for unknown PCR values, say). Fails with
  // verify_errc or attest::evidence_errc; never returns a result it could not check (fail
  // closed). Completes on the awaiting coroutine's executor; callable from any thread.
  [[nodiscard]] virtual boost::asio::awaitable<result<attestation_result>> appraise(
      bytes evidence, std::string media_type, bytes expected_nonce) = 0;

  // A fresh nonce of `size` bytes (8 to 64) for a background-check flow. From Veraison this opens
  // a session whose nonce is minted by the verifier; a later appraise() with that nonce uses the
  // same session. Fails with verify_errc.
  [[nodiscard]] virtual boost::asio::awaitable<result<bytes>> challenge(std::size_t size) = 0;

  // A hint: an appraise() with `expected_nonce` is coming (the peer is producing the evidence).
  // A verifier with sessions opens one for that nonce now, in the background, so that the
  // appraisal then costs one round trip instead of two; an appraise() that arrives while the
  // session is still opening waits for it. Never fails: when no session could be opened,
  // appraise() opens its own. Callable from any thread; returns at once.
  virtual void prepare(const bytes& expected_nonce) { (void)expected_nonce; }

  // Whether the verifier can appraise now, for readiness: the local verifier always can; a
  // remote one is asked whether it serves. Fails with verify_errc (verifier_unavailable when it
  // cannot be reached). Completes on the awaiting coroutine's executor.
  [[nodiscard]] virtual boost::asio::awaitable<result<void>> probe() = 0;

  // How logs and audit lines name this verifier, e.g. "local" or "veraison https://v.example".
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;

 protected:
  verifier() = default;
  verifier(const verifier&) = default;
  verifier& operator=(const verifier&) = default;
  verifier(verifier&&) = default;
  verifier& operator=(verifier&&) = default;
};

inline constexpr std::size_t min_nonce_size = 8;
inline constexpr std::size_t max_nonce_size = 64;

}  // namespace atls::verify
