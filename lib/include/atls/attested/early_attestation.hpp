// Intra-handshake attestation (draft-fossati-seat-early-attestation-06): the remoteAttestation
// extension negotiated in ClientHello, EncryptedExtensions and CertificateRequest, and the CMW in
// the attester's first CertificateEntry, bound to the connection by the attestation binder
// (tls/early_binder.hpp). PROTOCOL-NOTES.md, "Intra-handshake engine", lists the schemes and the
// alert of every failure.
//
// How the handshake waits: OpenSSL callbacks are synchronous, but evidence needs the TPM and
// appraisal may need a remote verifier. The handshake therefore runs as an OpenSSL ASYNC job
// (tls::stream::use_async_handshake). The Certificate callbacks start the work as a coroutine on
// the connection's executor and pause the job; the coroutine's completion calls the job's
// wait-context callback, which wakes the stream's handshake loop, which resumes the job where it
// paused. No thread blocks, and the job resumes on the thread that started it.
//
// Who does what: the client offers (what it accepts from the server when settings.peer is set,
// what it can attest with when settings.self is set); the server chooses with choose_scheme in
// its own order of preference and answers. The server asks for a client certificate on the
// connections where the client attests.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "atls/attested/settings.hpp"
#include "atls/common/result.hpp"
#include "atls/tls/early_binder.hpp"
#include "atls/tls/remote_attestation.hpp"
#include "atls/tls/stream.hpp"
#include "atls/verify/attestation_result.hpp"

using SSL_CTX = struct ssl_ctx_st;

namespace atls::attested {

// Registers the remoteAttestation extension (points.remote_attestation_extension, TLS 1.3 only:
// ClientHello, EncryptedExtensions, CertificateRequest, Certificate), the server's client-hello
// callback and the key-log callback that lets a server frame the attestation_failed alert after
// its Finished (see early_attestation). Call once per context, before any connection is made
// from it. Takes the context's only client-hello callback and key-log callback, so it cannot be
// combined with install_post_handshake() on the same context. A connection without an
// early_attestation attached behaves as plain TLS: it neither offers nor answers. Fails with
// tls::errc::context_setup_failed.
[[nodiscard]] result<void> install_early_attestation(SSL_CTX* ctx,
                                                     const tls::attestation_code_points& points);

// The scheme atlsd names for a model, on both sides:
//  - background_check: evidence, media type attest::parsec_tpm_media_type;
//  - passport: result, with an empty verifier identity: "an EAR from a verifier the relying
//    party trusts", whose signer the relying party checks against its passport_keys rather
//    than by name.
[[nodiscard]] tls::attestation_scheme scheme_for(model m);

// The intra-handshake engine of one connection: construct before stream.handshake(), read the
// outcome after it. Borrows `stream` and `settings`, which must outlive this object, which in
// turn must outlive the handshake (the SSL refers to it until destruction). Evidence and
// appraisal run on the stream's executor, which must be single-threaded (tls::stream). The
// context of the stream must have had install_early_attestation() called.
class early_attestation {
 public:
  // Attaches to the stream's SSL (ex_data, message callback for the transcript, per-SSL verify
  // callback on clients) and switches the stream to an async handshake. Throws std::bad_alloc
  // or std::system_error (tls::errc::context_setup_failed) when OpenSSL refuses.
  early_attestation(tls::stream& stream, const settings& settings);
  ~early_attestation();
  early_attestation(const early_attestation&) = delete;
  early_attestation& operator=(const early_attestation&) = delete;
  early_attestation(early_attestation&&) = delete;
  early_attestation& operator=(early_attestation&&) = delete;

  // After handshake(), given its result: success when every attestation our policy asks for
  // was given and accepted (or none was asked for). Otherwise the first failure on our side:
  // the reason is reason_of(error), the detail says more. Also fails with
  // tls::errc::attestation_required when the handshake completed although our policy required
  // the peer's attestation and it was not given (defence in depth; the callbacks refuse such a
  // handshake first). A handshake that failed before any attestation was judged (a transcript
  // broken in transit, a peer that is not TLS) is not an attestation failure: success then, and
  // the handshake's own error stands.
  [[nodiscard]] result<void> outcome(const error_code& handshake) const;
  [[nodiscard]] const std::string& detail() const { return detail_; }

  // The peer's accepted attestation result, when we are its relying party and it attested.
  [[nodiscard]] const std::optional<verify::attestation_result>& peer_result() const {
    return peer_result_;
  }
  // The peer's result that the verifier gave and our policy refused (status, trust vector),
  // for the audit line of that refusal.
  [[nodiscard]] const std::optional<verify::attestation_result>& refused_result() const {
    return refused_result_;
  }
  // The schemes the server chose: for the server as attester (EncryptedExtensions) and for the
  // client as attester (CertificateRequest); nullopt when that direction is not attested.
  [[nodiscard]] const std::optional<tls::attestation_scheme>& server_scheme() const {
    return server_scheme_;
  }
  [[nodiscard]] const std::optional<tls::attestation_scheme>& client_scheme() const {
    return client_scheme_;
  }
  // Whether we sent our own CMW on this connection.
  [[nodiscard]] bool attested() const { return attested_; }

  // The OpenSSL callbacks' view; not for other callers.
  struct callbacks;

 private:
  [[nodiscard]] bool peer_attests() const;  // we are the relying party on this connection
  void fail(error_code ec, std::string detail);

  tls::stream& stream_;
  const settings& settings_;
  bool is_server_;
  tls::handshake_transcript transcript_;

  std::optional<tls::client_hello_attestation> offer_;  // sent (client) or received (server)
  std::optional<tls::attestation_scheme> server_scheme_;
  std::optional<tls::attestation_scheme> client_scheme_;
  bool peer_cmw_seen_ = false;
  bool attested_ = false;
  std::optional<verify::attestation_result> peer_result_;
  std::optional<verify::attestation_result> refused_result_;  // see refused_result()
  tls::bytes sent_;                       // the extension_data OpenSSL is writing
  std::vector<std::uint8_t> app_secret_;  // server: SERVER_TRAFFIC_SECRET_0, for our alert
  error_code error_;
  std::string detail_;
};

}  // namespace atls::attested
