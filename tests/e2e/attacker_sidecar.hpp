// The attacker's side of the attack suite (attacks_test.cpp): atlsd's own listeners
// (app::assemble, proxy::server) run inside the test process from a config the test writes, with
// parts swapped in that no atlsd config allows: an attester that presents another TPM's evidence,
// replays an earlier answer, quotes another nonce or tampers with what its TPM signed, or a TLS
// identity whose key the evidence does not vouch for. Everything else (the handshake, the framing,
// the binder, the authenticator) is atlsd's unchanged code, so the relying party, a real atlsd,
// meets a peer that differs from an honest one only in what the attack changes.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "atls/attest/attester.hpp"
#include "atls/attest/evidence.hpp"
#include "atls/net/event_loops.hpp"
#include "atls/proxy/server.hpp"

#include "support/temp_dir.hpp"

namespace atls::test {

// An attester that answers as an honest one would, except for what its options change. Its
// evidence() runs on the connection's loop (one per attacker_sidecar), its other members on
// any thread.
class rigged_attester final : public attest::attester {
 public:
  struct options {
    // Whose TPM quotes: another machine's attester (a relay). Null: the honest attester's.
    std::shared_ptr<attest::attester> evidence_from;
    // The nonce the TPM is really asked to quote, from the one the relying party's binder gives.
    // Empty: that one.
    std::function<attest::bytes(attest::bytes)> nonce;
    // Changes the Parsec TPM evidence after the TPM signed it. Empty: sent as signed.
    std::function<void(attest::parsec_tpm_evidence&)> tamper;
    // Every answer after the first is the first one again: connection 1's evidence replayed.
    bool replay_first = false;
    // A PEM private key that signs for TLS instead of the honest attester's TIK (the listener's
    // TLS context must hold the same key: see tls_identity()). Empty: the TIK.
    std::filesystem::path tls_key_file;
  };

  // `honest` is the attester atlsd built from the config. Throws when tls_key_file does not load.
  rigged_attester(std::shared_ptr<attest::attester> honest, options o);

  [[nodiscard]] boost::asio::awaitable<result<attest::evidence_bundle>> evidence(
      attest::bytes nonce) override;
  [[nodiscard]] std::shared_ptr<EVP_PKEY> tls_key() const override;
  [[nodiscard]] const attest::bytes& tls_public_key() const override;
  [[nodiscard]] boost::asio::awaitable<result<attest::bytes>> with_tls_key(
      std::function<result<attest::bytes>(EVP_PKEY*)> sign) override;

  // How many times a relying party asked for evidence.
  [[nodiscard]] int asked() const { return asked_; }

 private:
  std::shared_ptr<attest::attester> honest_;
  options options_;
  std::shared_ptr<EVP_PKEY> software_key_;  // set with tls_key_file
  attest::bytes software_spki_;
  std::atomic<int> asked_{0};
  std::mutex mutex_;
  std::optional<attest::evidence_bundle> first_;  // guarded by mutex_
};

// A TPM attester for the machine whose TPM answers at `tcti` (a provisioned swtpm), quoting
// sha256 PCRs 0-7 as atlsd's `self` blocks in these tests do. Fails the test when it cannot open.
[[nodiscard]] std::shared_ptr<attest::attester> tpm_attester_at(const std::string& tcti);

// Replaces the attester of `listener` (which must attest) with `attester`.
void swap_attester(proxy::listener_options& listener, std::shared_ptr<attest::attester> attester);

// Replaces the TLS identity of `listener` (an inbound one) with the certificate and software key
// in these PEM files, prepared for its attestation mode as assemble() prepares a TPM identity.
void swap_tls_identity(proxy::listener_options& listener, const std::filesystem::path& cert,
                       const std::filesystem::path& key);

class attacker_sidecar {
 public:
  // Changes one listener before it is bound; the executor is the one its listeners run on, for
  // background work a rigged part needs (a passport's refresh loop).
  using rig = std::function<void(proxy::listener_options&, const boost::asio::any_io_executor&)>;

  // Writes config_yaml to dir/<name>.yaml and assembles it as atlsd start-up would (a config
  // error fails the test), lets `change` rig each listener, then binds and serves them on a
  // thread of its own (listeners) and one connection loop. Its sessions log through spdlog's
  // default logger, to the test's stderr.
  attacker_sidecar(const temp_dir& dir, std::string_view name, std::string_view config_yaml,
                   const rig& change);
  // Drains (open connections get 1 s), destroys the listeners and what they hold (a rigged
  // passport's refresh loop ends with it), then joins its threads.
  ~attacker_sidecar();
  attacker_sidecar(const attacker_sidecar&) = delete;
  attacker_sidecar& operator=(const attacker_sidecar&) = delete;

 private:
  boost::asio::io_context io_{1};
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  net::event_loops loops_{1};
  std::shared_ptr<attest::tpm> tpm_;  // the TPM assemble() opened for a tpm:tik key, if any
  std::optional<proxy::server> server_;
  std::future<void> ran_out_;  // ready once io_.run() returned
  std::thread thread_;
};

}  // namespace atls::test
