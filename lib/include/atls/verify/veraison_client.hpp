// A client of Veraison's challenge-response verification API (veraison/services,
// verification/api): discovery, sessions, evidence, EAR. It is a verifier like the local one,
// with the network in between, and it fails closed: no verified EAR, no result.
//
// What it checks beyond Veraison: the EAR's signature with a pinned key and algorithm, and the
// challenge inside the evidence itself, because Veraison's parsec-tpm scheme does not check the
// session nonce (veraison/services#447). It also requires the EAR's attested key to be the key
// the evidence certifies.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "atls/common/result.hpp"
#include "atls/verify/jose.hpp"
#include "atls/verify/verifier.hpp"

namespace atls::verify {

struct veraison_client_options {
  // Base URLs, tried in order with fail-over: "https://veraison.example:8443" or with a path
  // prefix ("http://10.0.0.5/veraison"). http and https only.
  std::vector<std::string> base_urls;
  // The key that signs EARs, pinned with its algorithm. Required unless
  // trust_discovered_key is set.
  std::optional<verification_key> ear_key;
  // Take the EAR key from /.well-known/veraison/verification. Every shipped Veraison signs with
  // the same published test key, so this is for tests and demos; create() logs a warning.
  bool trust_discovered_key = false;
  // PEM CA bundle for https; empty uses OpenSSL's default store. The server's name is checked
  // against the URL's host.
  std::string ca_file;
  // Sent as "Authorization: Bearer ..." when set. Never logged.
  std::optional<std::string> bearer_token;
  std::chrono::milliseconds connect_timeout{2000};
  // One HTTP request and its answer, each attempt.
  std::chrono::milliseconds request_timeout{5000};
  // Attempts per appraisal or challenge across all URLs (a whole session is one attempt: a
  // session lives on one server). Only network errors, timeouts and 5xx answers are retried.
  unsigned max_attempts = 3;
  std::chrono::milliseconds initial_backoff{100};  // doubles per round over all URLs
  std::chrono::milliseconds max_backoff{2000};
  // How long to wait between polls of a session in state "processing" (202), and for how long.
  std::chrono::milliseconds poll_interval{100};
  std::chrono::milliseconds max_processing_time{10000};
  // Idle keep-alive connections kept per base URL, and how long one may idle.
  std::size_t max_idle_connections = 4;
  std::chrono::seconds idle_timeout{30};
};

class veraison_client final : public verifier {
 public:
  // Validates the options (a URL that does not parse, an unknown scheme, no URL, no key without
  // trust_discovered_key, an unreadable CA file) and fails with std::errc::invalid_argument or
  // verify_errc::no_verification_key. All network I/O runs on a strand of `executor`; the
  // public calls may be awaited from any executor.
  [[nodiscard]] static result<std::shared_ptr<veraison_client>> create(
      const boost::asio::any_io_executor& executor, veraison_client_options options);

  ~veraison_client() override;
  veraison_client(const veraison_client&) = delete;
  veraison_client& operator=(const veraison_client&) = delete;
  veraison_client(veraison_client&&) = delete;
  veraison_client& operator=(veraison_client&&) = delete;

  // Opens a session with expected_nonce (or reuses the one challenge() or prepare() opened for
  // it), posts the evidence with its media type, reads the EAR (polling while the session is
  // processing), verifies the EAR, and checks the challenge and key in the evidence. The session
  // is deleted in the background, after the result is returned.
  // Fails with verify_errc: verifier_unavailable when every attempt failed on the network or with
  // 5xx; verifier_rejected for a 4xx; bad_response, session_failed; the EAR's own errors
  // (bad_signature, ...); nonce_mismatch or attested_key_mismatch when the evidence does not
  // carry the nonce or the EAR names another key; or attest::evidence_errc when the evidence
  // does not decode.
  [[nodiscard]] boost::asio::awaitable<result<attestation_result>> appraise(
      bytes evidence, std::string media_type, bytes expected_nonce) override;

  // Opens a session with a nonce of `size` bytes minted by Veraison (?nonceSize=) and keeps it
  // for the appraise() call that brings that nonce (for at most the session's expiry).
  [[nodiscard]] boost::asio::awaitable<result<bytes>> challenge(std::size_t size) override;
  // Opens a session with `expected_nonce` (?nonce=) in the background and keeps it, like
  // challenge(), for the appraise() that brings that nonce: the appraisal then posts the
  // evidence and nothing else on its way. A failure is logged at debug level only (appraise()
  // opens a session itself and reports what goes wrong then).
  void prepare(const bytes& expected_nonce) override;

  // Fetches the well-known document (discover()); a service whose state is not READY fails
  // with verify_errc::verifier_unavailable.
  [[nodiscard]] boost::asio::awaitable<result<void>> probe() override;

  [[nodiscard]] std::string_view name() const noexcept override;

  // Fetches the well-known document, for diagnostics and readiness: the service state and
  // media types, and whether its EAR key equals the pinned one. Fails like appraise().
  struct discovery {
    std::string service_state;
    std::vector<std::string> media_types;
    std::string version;
    std::string ear_key_jwk;  // as published
    bool ear_key_matches_pinned = false;
  };
  [[nodiscard]] boost::asio::awaitable<result<discovery>> discover();

 private:
  class impl;
  explicit veraison_client(std::shared_ptr<impl> impl);
  std::shared_ptr<impl> impl_;
};

}  // namespace atls::verify
