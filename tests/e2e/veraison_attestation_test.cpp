// Attested TLS between two atlsd sidecars with a Veraison verification service in the loop: the
// test server of tests/support (Veraison's challenge-response API, its own endorsements and
// reference values, ES256-signed EARs) appraises the server's swtpm evidence, either for the
// client (background-check) or for the server itself, which then presents the EAR as a passport.
#include <chrono>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/pem.h>

#include "atls/common/openssl_ptr.hpp"
#include "atls/verify/jose.hpp"

#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/evidence_builder.hpp"
#include "support/loopback.hpp"
#include "support/veraison_server.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// The server's swtpm endorsed at a Veraison service that expects its PCRs 0-7 all zero (as
// swtpm starts), an attesting inbound sidecar in front of an HTTP origin, and a client sidecar
// that relies on it. The two sidecars start with run(); the attestation blocks say how they
// attest.
struct veraison_setup {
  veraison_setup() : p(make_pki(dir)), tik(dir, p, "DNS:server.test", "serverAuth") {
    const auto endorsed = tik.veraison_endorsement(dir);
    verify::pcr_values zeros;
    for (std::uint8_t index = 0; index < 8; ++index) {
      zeros.values[index] = verify::bytes(32, 0);
    }
    verifier.emplace(veraison_server_options{
        .trust_anchors = {{endorsed.instance_id, endorsed.ak_spki_der}},
        .reference = zeros,
        .check_nonce = true,
    });
    const auto published = verify::parse_jwk(verifier->ear_key_jwk());
    REQUIRE(published.has_value());
    ear_key = dir / "veraison-ear.pem";
    std::ofstream(ear_key) << public_pem_of(published->key.get());
  }

  // A `veraison` mapping at `indent` spaces: this test's service and its pinned EAR key.
  [[nodiscard]] std::string veraison_block(int indent) const {
    const std::string pad(static_cast<std::size_t>(indent), ' ');
    return pad + "veraison:\n" + pad + "  urls: [" + verifier->base_url() + "]\n" + pad +
           "  ear_key: " + ear_key.string() + "\n";
  }

  // Starts both sidecars: `server_attestation` and `client_attestation` are the lines inside
  // each listener's `attestation` block (indent 6).
  void run(const std::string& server_attestation, const std::string& client_attestation) {
    in.emplace(dir, "in",
               header(tik.config()) + "  - name: in\n    mode: inbound\n    listen: " +
                   local(in_port) + "\n    upstream: " + local(origin.port()) +
                   "\n    tls:\n      cert: " + tik.cert.string() +
                   "\n      key: tpm:tik\n    attestation:\n" + server_attestation);
    out.emplace(dir, "out",
                header() + outbound("out", out_port, local(in_port), p, "server.test",
                                    "    attestation:\n" + client_attestation));
  }

  const temp_dir dir;
  const pki p;
  const tpm_identity tik;
  std::optional<veraison_server> verifier;
  std::filesystem::path ear_key;
  loopback_server origin{http_responder("appraised by veraison\n")};
  const std::uint16_t in_port = free_port();
  const std::uint16_t out_port = free_port();
  std::optional<atlsd> in;
  std::optional<atlsd> out;
};

const std::string server_attests = "      self:\n        pcrs: [0, 1, 2, 3, 4, 5, 6, 7]\n";

std::string mode_line(bool intra) {
  return intra ? "      mode: intra-handshake\n" : "      mode: post-handshake\n";
}

TEST_CASE("a client sidecar has the server's TPM evidence appraised by Veraison, in either mode") {
  veraison_setup setup;
  bool intra = false;
  SUBCASE("post-handshake") {
    intra = false;
  }
  SUBCASE("intra-handshake") {
    intra = true;
  }
  setup.run(mode_line(intra) + server_attests,
            mode_line(intra) + "      peer:\n        verifier: veraison\n" +
                setup.veraison_block(8) + "        accept: {minimum_status: affirming}\n");

  const auto fetched = curl_http(setup.out_port);
  INFO(fetched.err);
  INFO(setup.out->log());
  INFO(setup.in->log());
  CHECK(fetched.out == "appraised by veraison\n");
  REQUIRE(setup.out->wait_for_log("outcome=ok"));
  CHECK(contains(setup.out->log(), "attestation=\"peer=affirming key=sha256:"));
  // The relying party asked Veraison, and closed the session it opened.
  CHECK(setup.verifier->requests() > 0);
  CHECK(setup.verifier->open_sessions() == 0);
}

TEST_CASE("a client sidecar refuses the server while Veraison fails, and accepts it once back") {
  veraison_setup setup;
  setup.run(server_attests, "      peer:\n        verifier: veraison\n" + setup.veraison_block(8) +
                                "        accept: {minimum_status: affirming}\n");
  setup.verifier->faults().fail_with_500 = 1000;
  const auto refused = curl_http(setup.out_port);
  CHECK(refused.out.empty());
  INFO(setup.out->log());
  CHECK(setup.out->wait_for_log("outcome=rejected reason=\"attestation verifier_unreachable"));
  CHECK(setup.origin.accepted() == 0);

  setup.verifier->faults().fail_with_500 = 0;
  const auto served = curl_http(setup.out_port);
  CHECK(served.out == "appraised by veraison\n");
}

// The passport blocks: the server fetches its own EAR from Veraison, the client trusts
// Veraison's EAR key and calls nobody.
std::string passport_server(const veraison_setup& setup, bool intra) {
  return mode_line(intra) + "      model: passport\n" + server_attests + setup.veraison_block(8);
}

std::string passport_client(const std::string& key_file, bool intra) {
  return mode_line(intra) + "      model: passport\n      peer:\n        passport_keys: [" +
         key_file + "]\n        accept: {minimum_status: affirming, max_age: 5m}\n";
}

TEST_CASE("a server sidecar presents a Veraison passport that the client accepts offline") {
  veraison_setup setup;
  bool intra = false;
  SUBCASE("post-handshake") {
    intra = false;
  }
  SUBCASE("intra-handshake") {
    intra = true;
  }
  setup.run(passport_server(setup, intra), passport_client(setup.ear_key.string(), intra));
  INFO(setup.in->log());
  REQUIRE(setup.in->wait_for_log("passport: new attestation result"));
  const auto asked = setup.verifier->requests();

  for (int i = 0; i < 3; ++i) {
    const auto fetched = curl_http(setup.out_port);
    INFO(fetched.err);
    INFO(setup.out->log());
    CHECK(fetched.out == "appraised by veraison\n");
  }
  REQUIRE(setup.out->wait_for_log("outcome=ok"));
  CHECK(contains(setup.out->log(), "attestation=\"peer=affirming key=sha256:"));
  // Three connections, no verifier call: the passport was fetched once, before them.
  CHECK(setup.verifier->requests() == asked);
}

TEST_CASE("a client sidecar refuses a passport signed by a key it does not trust") {
  veraison_setup setup;
  const auto stranger = setup.dir / "stranger.pem";
  const auto made = run({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                         "ec_paramgen_curve:P-256", "-out", (setup.dir / "stranger.key").string()},
                        15s);
  REQUIRE(made.exit_code == 0);
  REQUIRE(run({"openssl", "pkey", "-in", (setup.dir / "stranger.key").string(), "-pubout", "-out",
               stranger.string()},
              15s)
              .exit_code == 0);
  setup.run(passport_server(setup, false), passport_client(stranger.string(), false));
  REQUIRE(setup.in->wait_for_log("passport: new attestation result"));

  const auto fetched = curl_http(setup.out_port);
  CHECK(fetched.out.empty());
  INFO(setup.out->log());
  INFO(setup.in->log());
  CHECK(setup.out->wait_for_log("outcome=rejected reason=\"attestation verifier_refused"));
  CHECK(setup.in->wait_for_log("the peer refused our attestation: verifier_refused"));
  CHECK(setup.origin.accepted() == 0);
}

TEST_CASE(
    "a server sidecar without a passport yet is refused, and served once Veraison issues one") {
  veraison_setup setup;
  // Every EAR Veraison issues is expired: the attester checks it and keeps none.
  setup.verifier->faults().expired_ear = true;
  setup.run(passport_server(setup, false), passport_client(setup.ear_key.string(), false));
  REQUIRE(setup.in->wait_for_log("passport: cannot obtain an attestation result"));

  const auto refused = curl_http(setup.out_port);
  CHECK(refused.out.empty());
  INFO(setup.in->log());
  INFO(setup.out->log());
  CHECK(setup.in->wait_for_log("no EAR from the verifier yet, or the last one expired"));
  // The attester declines the request, so the relying party knows at once why.
  CHECK(setup.out->wait_for_log("outcome=rejected reason=\"attestation no_evidence"));
  CHECK(contains(setup.out->log(), "the peer declined to attest"));
  CHECK(setup.origin.accepted() == 0);

  setup.verifier->faults().expired_ear = false;
  REQUIRE(setup.in->wait_for_log("passport: new attestation result"));
  const auto served = curl_http(setup.out_port);
  CHECK(served.out == "appraised by veraison\n");
}

}  // namespace
}  // namespace atls::test
