// An attester that replays evidence collected elsewhere and signs TLS with a key of its own:
// the relay attacker of the diversion ("identity crisis") attack. Its evidence is genuine and
// verifies under the victim's AK; what gives it away is that the evidence vouches for the
// victim's TLS key, not for the key this attester signs with.
#pragma once

#include <memory>

#include "atls/attest/attester.hpp"

namespace atls::test {

class replay_attester final : public attest::attester {
 public:
  // Replays `evidence` for any nonce; signs with a fresh software P-256 key.
  explicit replay_attester(attest::evidence_bundle evidence);

  [[nodiscard]] boost::asio::awaitable<result<attest::evidence_bundle>> evidence(
      attest::bytes nonce) override;
  [[nodiscard]] std::shared_ptr<EVP_PKEY> tls_key() const override { return key_; }
  [[nodiscard]] const attest::bytes& tls_public_key() const override { return public_key_; }

 private:
  attest::evidence_bundle replayed_;
  std::shared_ptr<EVP_PKEY> key_;
  attest::bytes public_key_;
};

}  // namespace atls::test
