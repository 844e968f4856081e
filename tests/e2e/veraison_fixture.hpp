// A Veraison verification service for end-to-end tests: the test server of tests/support,
// provisioned with the endorsements of the tests' swtpm identities, and the key that signs its
// EARs written where sidecars read it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "atls/verify/jose.hpp"

#include "e2e/tpm_identity.hpp"
#include "support/evidence_builder.hpp"
#include "support/temp_dir.hpp"
#include "support/veraison_server.hpp"

namespace atls::test {

// The service endorses each TPM of `endorsed` (its AK under its instance id) and expects PCRs 0-7
// all zero, as swtpm starts them; it checks nonces like the local verifier. Its published EAR key
// is written to `ear_key`, a PEM file for `ear_key:` and `passport_keys:`. Runs on its own thread
// until destroyed; the identities need not outlive it.
class veraison_fixture {
 public:
  veraison_fixture(const temp_dir& dir, const std::vector<const tpm_identity*>& endorsed,
                   std::filesystem::path ear_key_file)
      : server_(options_for(dir, endorsed)), ear_key_(std::move(ear_key_file)) {
    const auto published = verify::parse_jwk(server_.ear_key_jwk());
    REQUIRE(published.has_value());
    std::ofstream(ear_key_) << public_pem_of(published->key.get());
  }

  [[nodiscard]] veraison_server& server() { return server_; }
  [[nodiscard]] const veraison_server& server() const { return server_; }
  [[nodiscard]] const std::filesystem::path& ear_key() const { return ear_key_; }

  // A `veraison` mapping at `indent` spaces: this service and its pinned EAR key.
  [[nodiscard]] std::string block(int indent) const {
    const std::string pad(static_cast<std::size_t>(indent), ' ');
    return pad + "veraison:\n" + pad + "  urls: [" + server_.base_url() + "]\n" + pad +
           "  ear_key: " + ear_key_.string() + "\n";
  }

 private:
  static veraison_server_options options_for(const temp_dir& dir,
                                             const std::vector<const tpm_identity*>& endorsed) {
    veraison_server_options out{.check_nonce = true};
    for (const auto* tik : endorsed) {
      auto endorsement = tik->veraison_endorsement(dir);
      out.trust_anchors.emplace(std::move(endorsement.instance_id),
                                std::move(endorsement.ak_spki_der));
    }
    verify::pcr_values zeros;
    for (std::uint8_t index = 0; index < 8; ++index) {
      zeros.values[index] = verify::bytes(32, 0);
    }
    out.reference = std::move(zeros);
    return out;
  }

  veraison_server server_;
  std::filesystem::path ear_key_;
};

}  // namespace atls::test
