// A provisioned swtpm whose TIK holds a certificate of the test CA, for end-to-end tests.
#pragma once

#include <array>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "atls/attest/evidence.hpp"
#include "atls/common/hex.hpp"
#include "atls/common/openssl_ptr.hpp"
#include "atls/verify/endorsements.hpp"

#include "support/daemon.hpp"
#include "support/process.hpp"
#include "support/swtpm.hpp"
#include "support/temp_dir.hpp"

namespace atls::test {

// A provisioned swtpm whose TIK holds a certificate from the test CA: what an operator has after
// `atlsctl tpm provision`, `atlsctl tpm csr` and a round trip to their CA.
struct tpm_identity {
  // san: e.g. "DNS:server.test"; usage: serverAuth or clientAuth.
  tpm_identity(const temp_dir& dir, const pki& p, const std::string& san, const std::string& usage,
               const std::string& name = "tik")
      : simulator(dir), cert(dir / (name + ".crt")) {
    const auto tcti = simulator.tcti();
    REQUIRE(atlsctl({"tpm", "provision", "--tcti", tcti}).exit_code == 0);
    const auto csr = dir / (name + ".csr");
    const auto made =
        atlsctl({"tpm", "csr", "--tcti", tcti, "--subject", "/CN=tik", "--out", csr.string()});
    INFO(made.err);
    REQUIRE(made.exit_code == 0);
    const auto ext = dir / (name + ".ext");
    std::ofstream(ext) << "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n"
                       << "extendedKeyUsage=" << usage << "\nsubjectAltName=" << san << "\n";
    const auto issued =
        run({"openssl", "x509", "-req", "-in", csr.string(), "-CA", (p / "ca.crt").string(),
             "-CAkey", (p / "ca.key").string(), "-CAcreateserial", "-days", "2", "-extfile",
             ext.string(), "-out", cert.string()},
            std::chrono::seconds(15));
    INFO(issued.err);
    REQUIRE(issued.exit_code == 0);
    const auto shown = atlsctl({"tpm", "show", "--json", "--tcti", tcti});
    REQUIRE(shown.exit_code == 0);
    const auto doc = boost::json::parse(shown.out);
    tik_public_pem = std::string(doc.at("tik").at("public_key_pem").as_string());
    ak_public_pem = std::string(doc.at("ak").at("public_key_pem").as_string());
  }

  // The tpm section of the daemon's config.
  [[nodiscard]] std::string config() const {
    return "tpm:\n  tcti: \"" + simulator.tcti() + "\"\n";
  }

  // What a Veraison operator provisions for this TPM: the instance id (standard base64 of the
  // evidence's kid, which the test learns from one piece of evidence) and the AK's DER SPKI.
  struct endorsement {
    std::string instance_id;
    std::vector<std::uint8_t> ak_spki_der;
  };
  [[nodiscard]] endorsement veraison_endorsement(const temp_dir& dir) const {
    const auto file = (dir / "probe-evidence.cbor").string();
    const auto collected =
        atlsctl({"evidence", "collect", "--tcti", simulator.tcti(), "--nonce",
                 "000102030405060708090a0b0c0d0e0f", "--pcrs", "sha256:0", "--out", file});
    INFO(collected.err);
    REQUIRE(collected.exit_code == 0);
    std::ifstream in(file, std::ios::binary);
    const std::vector<std::uint8_t> evidence((std::istreambuf_iterator<char>(in)), {});
    const auto decoded = attest::decode(evidence);
    REQUIRE(decoded.has_value());
    return {.instance_id = verify::instance_id_of(decoded->kid),
            .ak_spki_der = spki_der(ak_public_pem)};
  }

  // How `peer.pin` names this TIK: SHA-256 of its DER SPKI, in hex.
  [[nodiscard]] std::string tik_pin() const { return spki_sha256(tik_public_pem); }
  // How a `trusted_aks` entry `spki_sha256:` names this AK.
  [[nodiscard]] std::string ak_spki_sha256() const { return spki_sha256(ak_public_pem); }

  static std::string spki_sha256(const std::string& pem_text) {
    const auto der = spki_der(pem_text);
    std::array<std::uint8_t, SHA256_DIGEST_LENGTH> digest{};
    SHA256(der.data(), der.size(), digest.data());
    return to_hex(digest);
  }

  static std::vector<std::uint8_t> spki_der(const std::string& pem_text) {
    const bio_ptr pem(BIO_new_mem_buf(pem_text.data(), static_cast<int>(pem_text.size())));
    const pkey_ptr key(PEM_read_bio_PUBKEY(pem.get(), nullptr, nullptr, nullptr));
    REQUIRE(key);
    unsigned char* der = nullptr;
    const int size = i2d_PUBKEY(key.get(), &der);
    REQUIRE(size > 0);
    std::vector<std::uint8_t> out(der, der + size);
    OPENSSL_free(der);
    return out;
  }

  swtpm simulator;
  std::filesystem::path cert;
  std::string tik_public_pem;
  std::string ak_public_pem;
};

}  // namespace atls::test
