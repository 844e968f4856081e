// One attesting machine for in-process attestation tests: a provisioned swtpm, its attester
// (which remembers the last evidence it gave, to replay it elsewhere) and a self-signed
// certificate for its TIK; and a local verifier that trusts it.
#pragma once

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <doctest/doctest.h>

#include "atls/attest/attester.hpp"
#include "atls/attest/tpm.hpp"
#include "atls/tls/certificate.hpp"
#include "atls/verify/local_verifier.hpp"

#include "support/swtpm.hpp"
#include "support/temp_dir.hpp"

namespace atls::attested {

inline const attest::pcr_selection pcrs_0_to_7{.hash_alg = 0x000B,
                                               .pcrs = {0, 1, 2, 3, 4, 5, 6, 7}};

// An attester that remembers the last evidence it gave: connection A's, to replay into B. With
// `replay` set it answers every request with that evidence, still signing with its own TPM key:
// the same machine, the same key, the same verifier, another connection. With
// `evidence_failure` set it gives no evidence and fails with that error, as a TPM that stopped
// answering would; its key still signs.
class recording_attester final : public attest::attester {
 public:
  explicit recording_attester(std::shared_ptr<attest::attester> inner) : inner_(std::move(inner)) {}
  boost::asio::awaitable<result<attest::evidence_bundle>> evidence(attest::bytes nonce) override {
    if (evidence_failure) {
      co_return evidence_failure;
    }
    if (replay && last) {
      co_return *last;
    }
    auto got = co_await inner_->evidence(std::move(nonce));
    if (got) {
      last = *got;
    }
    co_return got;
  }
  [[nodiscard]] std::shared_ptr<EVP_PKEY> tls_key() const override { return inner_->tls_key(); }
  [[nodiscard]] const attest::bytes& tls_public_key() const override {
    return inner_->tls_public_key();
  }
  boost::asio::awaitable<result<attest::bytes>> with_tls_key(
      std::function<result<attest::bytes>(EVP_PKEY*)> sign) override {
    co_return co_await inner_->with_tls_key(std::move(sign));
  }
  std::optional<attest::evidence_bundle> last;
  bool replay = false;
  error_code evidence_failure;

 private:
  std::shared_ptr<attest::attester> inner_;
};

// One machine: a provisioned swtpm, its attester, and a self-signed certificate for its TIK.
struct machine {
  explicit machine(const std::string& name) : simulator(work) {
    device = std::make_shared<attest::tpm>(attest::tpm_options{.tcti = simulator.tcti()});
    const auto provisioned = device->provision();
    REQUIRE(provisioned.has_value());
    ak_spki = provisioned->keys.ak.spki_der;
    auto opened = attest::tpm_attester::open(device, pcrs_0_to_7);
    REQUIRE(opened.has_value());
    attester = std::make_shared<recording_attester>(std::move(*opened));
    certificate = certify(*attester, name);
  }

  // A certificate for the attester's key, valid as its own trust anchor.
  std::filesystem::path certify(const attest::attester& a, const std::string& name) const {
    auto pem = tls::self_signed_certificate_pem(
        a.tls_key().get(), {.subject = "/CN=" + name, .subject_alt_names = "DNS:" + name});
    REQUIRE(pem.has_value());
    auto file = work.path() / (name + "-" + std::to_string(++counter) + ".crt");
    std::ofstream(file) << *pem;
    return file;
  }

  test::temp_dir work;  // this machine's own: swtpm keeps its state there
  test::swtpm simulator;
  std::shared_ptr<attest::tpm> device;
  attest::bytes ak_spki;
  std::shared_ptr<recording_attester> attester;
  std::filesystem::path certificate;
  mutable int counter = 0;
};

inline std::shared_ptr<verify::verifier> local_verifier_for(const machine& m,
                                                            std::uint8_t pcr_value = 0) {
  verify::pcr_values reference;
  for (std::uint8_t pcr = 0; pcr < 8; ++pcr) {
    reference.values.emplace(pcr, attest::bytes(32, pcr_value));
  }
  return std::make_shared<verify::local_verifier>(
      verify::local_verifier_options{.trusted_aks = {m.ak_spki}, .reference = reference});
}

}  // namespace atls::attested
