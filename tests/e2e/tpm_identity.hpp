// A provisioned swtpm whose TIK holds a certificate of the test CA, for end-to-end tests.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include <boost/json.hpp>
#include <doctest/doctest.h>

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

  swtpm simulator;
  std::filesystem::path cert;
  std::string tik_public_pem;
  std::string ak_public_pem;
};

}  // namespace atls::test
