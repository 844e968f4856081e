// The attester's half of the passport model (RFC 9334 §5.1): this sidecar has its own TPM
// evidence appraised by a verifier it does not run, keeps the signed attestation result (an EAR
// whose attested key is its TIK), and presents that EAR on its connections instead of fresh
// evidence. The relying party checks the EAR's signature and dates and calls nobody, so a
// connection costs no TPM quote and no verifier round trip.
//
// What binds a passport to a connection: not a nonce (the EAR is made once for many
// connections) but the key. The EAR names the TIK, and the handshake's CertificateVerify (or the
// exported authenticator's) proves possession of the TIK on this connection; the TIK cannot
// leave the TPM, so a relayed EAR is useless without the machine that holds it. Freshness is
// the EAR's own iat and exp against the relying party's max_age: refresh_every must stay below
// that max_age, with room for a failed attempt.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include "atls/attest/attester.hpp"
#include "atls/verify/attestation_result.hpp"
#include "atls/verify/verifier.hpp"

namespace atls::attested {

struct passport_options {
  // How often a new EAR is fetched; sooner when the current one would expire first (at half
  // its remaining life).
  std::chrono::milliseconds refresh_every{std::chrono::minutes(1)};
  // After a failed attempt the next comes after first_retry, doubling up to max_retry. The EAR
  // in hand stays in use meanwhile, until its own exp.
  std::chrono::milliseconds first_retry{std::chrono::seconds(1)};
  std::chrono::milliseconds max_retry{std::chrono::seconds(30)};
};

class passport {
 public:
  // Starts the refresh loop on `executor` at once: a nonce from `verifier`, evidence over it
  // from `attester`, the verifier's signed EAR, checked to name attester->tls_public_key(). The
  // loop runs until this object is destroyed. `verifier` must return the EAR as signed
  // (attestation_result::raw_ear): Veraison does, the local verifier signs nothing.
  [[nodiscard]] static std::shared_ptr<passport> start(const boost::asio::any_io_executor& executor,
                                                       std::shared_ptr<attest::attester> attester,
                                                       std::shared_ptr<verify::verifier> verifier,
                                                       passport_options options);

  ~passport();
  passport(const passport&) = delete;
  passport& operator=(const passport&) = delete;
  passport(passport&&) = delete;
  passport& operator=(passport&&) = delete;

  // The newest EAR (a compact JWS) that has not passed its own exp; nullopt before the first
  // one arrives and after the last one expired. Safe from any thread; never blocks on I/O.
  [[nodiscard]] std::optional<std::string> current() const;

  // What the loop last achieved, for logs and readiness.
  struct status {
    std::optional<verify::attestation_result> result;  // the EAR current() presents, decoded
    std::string last_error;  // of the latest attempt; empty when it succeeded
    unsigned fetched = 0;    // EARs obtained since start
  };
  [[nodiscard]] status state() const;

 private:
  class impl;
  explicit passport(std::shared_ptr<impl> state);
  std::shared_ptr<impl> impl_;
};

}  // namespace atls::attested
