// A Veraison verification service for tests, written from the published API
// (veraison/services verification/api; ../shared/design/PROTOCOL.md §4): discovery, the
// challenge-response session life cycle, media-type negotiation, problem+json errors, Parsec TPM
// appraisal against its own endorsements and reference values, and ES256-signed EARs. It runs on
// its own thread and io_context on 127.0.0.1, over HTTP or HTTPS, with switches for the faults a
// client must survive.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>

#include "atls/verify/local_verifier.hpp"

namespace atls::test {

struct veraison_server_options {
  // HTTPS with this certificate chain and key (PEM files) when set; HTTP otherwise.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Endorsements, as a Veraison operator provisions them: per instance id (base64 of the
  // evidence's kid, standard alphabet, padded), the AK's DER SPKI.
  std::map<std::string, verify::bytes> trust_anchors;
  // Reference values, shared by all instances.
  std::variant<verify::pcr_values, verify::pcr_digest> reference;
  // Veraison's parsec-tpm scheme does not compare extraData with the session nonce
  // (veraison/services#447). False reproduces that; true checks it like the local verifier.
  bool check_nonce = false;
  std::chrono::seconds session_lifetime{300};
  // When set, the challenge-response API wants "Authorization: Bearer <token>" (Veraison's
  // keycloak auth backend) and answers 401 problem+json without it; discovery stays open.
  std::string bearer_token;
};

// Fault switches, settable from any thread while the server runs. Counters are consumed one
// per request.
struct veraison_faults {
  std::atomic<int> delay_ms{0};           // wait this long before every answer
  std::atomic<int> fail_with_500{0};      // answer the next N requests with 500 problem+json
  std::atomic<int> drop_connection{0};    // close the next N connections without answering
  std::atomic<int> answer_processing{0};  // answer the next N evidence posts 202 "processing"
  std::atomic<bool> sign_with_wrong_key{false};  // EARs signed by a key not in discovery
  std::atomic<bool> expired_ear{false};          // EARs with iat an hour ago and exp in the past
  // newSession ignores the nonce it was given and mints one of its own: a verifier that would
  // appraise against a nonce the relying party did not choose.
  std::atomic<bool> mint_other_nonce{false};

  // --- Forged EARs, for the attack suite (tests/e2e/attacks_test.cpp). ---
  // EARs with the JOSE header {"alg":"none"} and an empty signature (RFC 7515 §A.5 unsecured
  // JWS), claims otherwise as a genuine one.
  std::atomic<bool> unsigned_ear{false};
  // EARs whose payload was changed after signing: ear.status affirming, every trust claim 2 and
  // another appraisal policy id, under the signature of the genuine claims.
  std::atomic<bool> tampered_ear{false};
  // Fault suite (tests/e2e/faults_test.cpp): a service that has gone wrong without going away.
  // While set, every request (discovery included) is answered 200 with a body that claims to be
  // JSON and is neither JSON nor an EAR: bytes a client must refuse rather than trust.
  std::atomic<bool> garbage_answers{false};
};

// Fault suite: the last line of a garbage answer, shaped like an atlsd audit line that accepts a
// peer, so that a test can show it never reaches the log as a line of its own.
inline constexpr std::string_view garbage_forged_line =
    "1970-01-01T00:00:00.000 info attestation listener=forged id=1 outcome=accepted";

class veraison_server {
 public:
  // Listens on 127.0.0.1 port 0. Throws on failure (tests only).
  explicit veraison_server(veraison_server_options options);
  ~veraison_server();
  veraison_server(const veraison_server&) = delete;
  veraison_server& operator=(const veraison_server&) = delete;
  veraison_server(veraison_server&&) = delete;
  veraison_server& operator=(veraison_server&&) = delete;

  // "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT".
  [[nodiscard]] std::string base_url() const;
  // The published EAR key (the JWK of discovery's ear-verification-key).
  [[nodiscard]] std::string ear_key_jwk() const;
  [[nodiscard]] veraison_faults& faults();

  // Fault suite (tests/e2e/faults_test.cpp): the service stopped and started again.
  // stop_listening() closes the listening port, so that connects are refused, and closes each open
  // connection when its next request arrives, without answering it; resume_listening() listens
  // again on the same port, with the same keys and sessions. Both return once the server's thread
  // has done it; call them from any thread but the server's. resume_listening() throws when the
  // port cannot be bound again.
  void stop_listening();
  void resume_listening();

  // What the server saw, for assertions.
  [[nodiscard]] std::size_t requests() const;       // HTTP requests read
  [[nodiscard]] std::size_t connections() const;    // TCP connections accepted
  [[nodiscard]] std::size_t open_sessions() const;  // created and neither deleted nor expired
  [[nodiscard]] std::size_t unauthorized() const;   // requests refused for their credentials
  // Clients delete their sessions after the appraisal has returned: these wait, at most
  // `timeout`, for the server to have read `count` requests, or for no session to be open.
  // True once it has.
  bool wait_for_requests(std::size_t count,
                         std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  bool wait_for_no_open_session(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

 private:
  class impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace atls::test
