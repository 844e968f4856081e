// The attester role of RFC 9334 as the handshake code sees it: evidence bound to a nonce, and the
// key that signs for the TLS connection, whose public part that evidence must vouch for.
//
// Binding evidence to one TLS connection is the caller's job: it derives the nonce from the
// connection (PROTOCOL-NOTES.md), and the relying party checks that the attested key is the key
// that signed the handshake. Evidence alone, bound only to a key or a nonce, can be relayed from
// another machine.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "atls/attest/evidence.hpp"
#include "atls/attest/tpm.hpp"
#include "atls/common/result.hpp"

using EVP_PKEY = struct evp_pkey_st;

namespace atls::attest {

struct evidence_bundle {
  bytes data;
  std::string media_type;  // e.g. parsec_tpm_media_type
};

class attester {
 public:
  virtual ~attester() = default;

  // Evidence over nonce. Completes on the awaiting coroutine's executor; hardware work never
  // blocks that executor's thread.
  [[nodiscard]] virtual boost::asio::awaitable<result<evidence_bundle>> evidence(bytes nonce) = 0;

  // The TLS private key; its signing may run in hardware (see tik_key.hpp).
  [[nodiscard]] virtual std::shared_ptr<EVP_PKEY> tls_key() const = 0;

  // DER SubjectPublicKeyInfo of tls_key(): the key the evidence vouches for.
  [[nodiscard]] virtual const bytes& tls_public_key() const = 0;

  // Runs `sign` with tls_key() where that key may sign synchronously without holding up an I/O
  // thread (for a TPM key, the TPM's worker), and completes on the awaiting coroutine's
  // executor. For signatures outside a TLS handshake, such as an exported authenticator's
  // CertificateVerify. The default runs `sign` inline: right for software keys.
  [[nodiscard]] virtual boost::asio::awaitable<result<bytes>> with_tls_key(
      std::function<result<bytes>(EVP_PKEY*)> sign);

 protected:
  attester() = default;
  attester(const attester&) = default;
  attester& operator=(const attester&) = default;
  attester(attester&&) = default;
  attester& operator=(attester&&) = default;
};

// The TPM attester: Parsec TPM evidence (the AK's certification of the TIK and its quote of the
// PCRs, both over the nonce), and the TIK as the TLS key.
class tpm_attester final : public attester {
 public:
  // Reads the keys from the TPM once. Fails like tpm::keys().
  [[nodiscard]] static result<std::unique_ptr<tpm_attester>> open(std::shared_ptr<tpm> device,
                                                                  pcr_selection pcrs);

  [[nodiscard]] boost::asio::awaitable<result<evidence_bundle>> evidence(bytes nonce) override;
  [[nodiscard]] std::shared_ptr<EVP_PKEY> tls_key() const override { return tls_key_; }
  [[nodiscard]] const bytes& tls_public_key() const override { return tls_public_key_; }
  [[nodiscard]] boost::asio::awaitable<result<bytes>> with_tls_key(
      std::function<result<bytes>(EVP_PKEY*)> sign) override;

 private:
  tpm_attester(std::shared_ptr<tpm> device, pcr_selection pcrs, std::shared_ptr<EVP_PKEY> key,
               bytes public_key);

  std::shared_ptr<tpm> device_;
  pcr_selection pcrs_;
  std::shared_ptr<EVP_PKEY> tls_key_;
  bytes tls_public_key_;
};

}  // namespace atls::attest
