// Attested TLS between two atlsd sidecars with a Veraison verification service in the loop: the
// test server of tests/support (Veraison's challenge-response API, its own endorsements and
// reference values, ES256-signed EARs) appraises the server's swtpm evidence, either for the
// client (background-check) or for the server itself, which then presents the EAR as a passport.
#include <chrono>
#include <optional>
#include <string>

#include <doctest/doctest.h>

#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "e2e/veraison_fixture.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

// The server's swtpm endorsed at a Veraison service that expects its PCRs 0-7 all zero (as
// swtpm starts), an attesting inbound sidecar in front of an HTTP origin, and a client sidecar
// that relies on it. The two sidecars start with run(); the attestation blocks say how they
// attest.
struct veraison_setup {
  veraison_setup() : p(make_pki(dir)), tik(dir, p, "DNS:server.test", "serverAuth") {}

  // Starts both sidecars: `server_attestation` and `client_attestation` are the lines inside
  // each listener's `attestation` block (indent 6).
  void run(const std::string& server_attestation, const std::string& client_attestation) {
    in.emplace(dir, "in",
               header(tik.config()) + attesting_inbound(in_port, origin.port(), tik,
                                                        {.attestation = server_attestation}));
    out.emplace(dir, "out",
                header() + outbound("out", out_port, local(in_port), p, "server.test",
                                    "    attestation:\n" + client_attestation));
  }

  const temp_dir dir;
  const pki p;
  const tpm_identity tik;
  veraison_fixture veraison{dir, {&tik}, dir / "veraison-ear.pem"};
  loopback_server origin{http_responder("appraised by veraison\n")};
  const std::uint16_t in_port = free_port();
  const std::uint16_t out_port = free_port();
  std::optional<atlsd> in;
  std::optional<atlsd> out;
};

std::string mode_line(bool intra) {
  return intra ? "      mode: intra-handshake\n" : "      mode: post-handshake\n";
}

// The client's `peer` mapping: background-check, with the server's evidence sent to Veraison.
std::string veraison_peer(const veraison_setup& setup) {
  return "      peer:\n        verifier: veraison\n" + setup.veraison.block(8) +
         "        accept: {minimum_status: affirming}\n";
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
  setup.run(mode_line(intra) + self_block(), mode_line(intra) + veraison_peer(setup));

  const auto fetched = curl_http(setup.out_port);
  INFO(fetched.err);
  INFO(setup.out->log());
  INFO(setup.in->log());
  CHECK(fetched.out == "appraised by veraison\n");
  REQUIRE(setup.out->wait_for_log("outcome=ok"));
  CHECK(contains(setup.out->log(), "attestation=\"peer=affirming key=sha256:"));
  // The relying party asked Veraison, and closed the session it opened.
  CHECK(setup.veraison.server().requests() > 0);
  CHECK(setup.veraison.server().wait_for_no_open_session());
}

TEST_CASE("a client sidecar refuses the server while Veraison fails, and accepts it once back") {
  veraison_setup setup;
  setup.run(self_block(), veraison_peer(setup));
  setup.veraison.server().faults().fail_with_500 = 1000;
  const auto refused = curl_http(setup.out_port);
  CHECK(refused.out.empty());
  INFO(setup.out->log());
  CHECK(setup.out->wait_for_log("outcome=rejected reason=\"attestation verifier_unreachable"));
  CHECK(setup.origin.accepted() == 0);

  setup.veraison.server().faults().fail_with_500 = 0;
  const auto served = curl_http(setup.out_port);
  CHECK(served.out == "appraised by veraison\n");
}

// The passport blocks: the server fetches its own EAR from Veraison, the client trusts
// Veraison's EAR key and calls nobody.
std::string passport_server(const veraison_setup& setup, bool intra) {
  return mode_line(intra) + "      model: passport\n" + self_block(setup.veraison.block(8));
}

std::string passport_client(const std::filesystem::path& key_file, bool intra) {
  return mode_line(intra) + "      model: passport\n" + passport_peer_block({.ear_key = key_file});
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
  setup.run(passport_server(setup, intra), passport_client(setup.veraison.ear_key(), intra));
  INFO(setup.in->log());
  REQUIRE(setup.in->wait_for_log("passport: new attestation result"));
  // The passport's session is deleted after its EAR came back.
  REQUIRE(setup.veraison.server().wait_for_no_open_session());
  const auto asked = setup.veraison.server().requests();

  for (int i = 0; i < 3; ++i) {
    const auto fetched = curl_http(setup.out_port);
    INFO(fetched.err);
    INFO(setup.out->log());
    CHECK(fetched.out == "appraised by veraison\n");
  }
  REQUIRE(setup.out->wait_for_log("outcome=ok"));
  CHECK(contains(setup.out->log(), "attestation=\"peer=affirming key=sha256:"));
  // Three connections, no verifier call: the passport was fetched once, before them.
  CHECK(setup.veraison.server().requests() == asked);
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
  setup.run(passport_server(setup, false), passport_client(stranger, false));
  REQUIRE(setup.in->wait_for_log("passport: new attestation result"));

  const auto fetched = curl_http(setup.out_port);
  CHECK(fetched.out.empty());
  INFO(setup.out->log());
  INFO(setup.in->log());
  CHECK(setup.out->wait_for_log("outcome=rejected reason=\"attestation verifier_refused"));
  CHECK(setup.in->wait_for_log("refused our attestation: its verdict said verifier_refused"));
  CHECK(setup.origin.accepted() == 0);
}

TEST_CASE(
    "a server sidecar without a passport yet is refused, and served once Veraison issues one") {
  veraison_setup setup;
  // Every EAR Veraison issues is expired: the attester checks it and keeps none.
  setup.veraison.server().faults().expired_ear = true;
  setup.run(passport_server(setup, false), passport_client(setup.veraison.ear_key(), false));
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

  setup.veraison.server().faults().expired_ear = false;
  REQUIRE(setup.in->wait_for_log("passport: new attestation result"));
  const auto served = curl_http(setup.out_port);
  CHECK(served.out == "appraised by veraison\n");
}

}  // namespace
}  // namespace atls::test
