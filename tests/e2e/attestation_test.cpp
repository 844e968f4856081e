// Post-handshake attestation between two atlsd sidecars, end to end: real sockets, swtpm as the
// attesters' TPMs, the built-in local verifier on the relying party, curl as the workload.
#include <chrono>
#include <string>

#include <doctest/doctest.h>

#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

// The client's `peer` rules for the server's TPM: its AK trusted, the rest as `rules` says.
std::string server_peer(const temp_dir& dir, const tpm_identity& tik, local_peer rules = {}) {
  rules.trusted_ak = trusted_pem(write_ak(dir, tik, "ak.pem"));
  return peer_block(rules);
}

// A `pin` of a key that is not the server's TIK.
std::string another_pin() {
  return "        pin: [" + std::string(64, 'a') + "]\n";
}

TEST_CASE("a request crosses two sidecars once the server's TPM evidence satisfies the client") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("attested hello\n"));
  const auto in_port = free_port();
  const auto out_port = free_port();
  atlsd in(dir, "in", header(tik.config()) + attesting_inbound(in_port, origin.port(), tik));
  atlsd out(dir, "out",
            header() + relying_outbound("out", out_port, in_port, p, server_peer(dir, tik)));

  const auto fetched = curl_http(out_port);
  INFO(fetched.err);
  INFO(out.log());
  INFO(in.log());
  CHECK(fetched.exit_code == 0);
  CHECK(fetched.out == "attested hello\n");
  REQUIRE(out.wait_for_log("outcome=ok"));
  CHECK(contains(out.log(), "attestation=\"peer=affirming key=sha256:"));
  REQUIRE(in.wait_for_log("outcome=ok"));
  CHECK(contains(in.log(), "attestation=\"self=accepted\""));
  // The audit lines: the client judged the server's attestation, the server learnt the verdict.
  CHECK(contains(out.log(), "attestation listener=out id=1 peer=127.0.0.1:"));
  CHECK(contains(out.log(),
                 " mode=post-handshake model=background-check attester=peer round=0 "
                 "verifier=\"local\" outcome=accepted status=affirming "
                 "trust=\"instance-identity=2 executables=2 hardware=2\" key=sha256:"));
  CHECK(contains(in.log(), " attester=self round=0 verifier=\"-\" outcome=accepted"));
}

TEST_CASE("with log.audit json, each attestation decision is one JSON object on its line") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("audited\n"));
  const auto in_port = free_port();
  const auto out_port = free_port();
  atlsd in(dir, "in", header(tik.config()) + attesting_inbound(in_port, origin.port(), tik));
  atlsd out(
      dir, "out",
      json_audit_header() + relying_outbound("out", out_port, in_port, p, server_peer(dir, tik)));

  CHECK(curl_http(out_port).out == "audited\n");
  REQUIRE(out.wait_for_log("outcome=ok"));
  const auto doc = audit_json(out, "out");
  CHECK(doc.at("attester") == "peer");
  CHECK(doc.at("outcome") == "accepted");
  CHECK(doc.at("status") == "affirming");
  CHECK(doc.at("trust").at("hardware").at("tier") == "affirming");
  CHECK(doc.at("key_sha256").as_string().size() == 64);
}

TEST_CASE("a request crosses two sidecars that attest the server inside the TLS handshake") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("attested early\n"));
  const auto in_port = free_port();
  const auto out_port = free_port();
  const std::string mode = "      mode: intra-handshake\n";
  atlsd in(dir, "in",
           header(tik.config()) + attesting_inbound(in_port, origin.port(), tik,
                                                    {.attestation = mode + self_block()}));
  atlsd out(dir, "out",
            header() + relying_outbound("out", out_port, in_port, p, mode + server_peer(dir, tik)));

  const auto fetched = curl_http(out_port);
  INFO(fetched.err);
  INFO(out.log());
  INFO(in.log());
  CHECK(fetched.out == "attested early\n");
  REQUIRE(out.wait_for_log("outcome=ok"));
  CHECK(contains(out.log(), "attestation=\"peer=affirming key=sha256:"));
  REQUIRE(in.wait_for_log("outcome=ok"));
  CHECK(contains(in.log(), "attestation=\"self=sent\""));
}

TEST_CASE("a client sidecar refuses a server whose PCRs differ from its reference values") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("must not be seen\n"));
  const auto in_port = free_port();
  const auto out_port = free_port();
  atlsd in(dir, "in", header(tik.config()) + attesting_inbound(in_port, origin.port(), tik));
  atlsd out(
      dir, "out",
      header() + relying_outbound("out", out_port, in_port, p,
                                  server_peer(dir, tik, {.pcr_value = std::string(64, 'f')})));

  const auto fetched = curl_http(out_port);
  CHECK(fetched.out.empty());
  INFO(out.log());
  INFO(in.log());
  // The quote's PCR digest matches no reference: the local verifier says "warning", which
  // the policy's minimum_status refuses; the attester learns why from the verdict.
  CHECK(out.wait_for_log("outcome=rejected reason=\"attestation status_below_policy"));
  CHECK(contains(out.log(),
                 " attester=peer round=0 verifier=\"local\" outcome=status_below_policy "
                 "status=warning trust=\"instance-identity=2 executables=33 hardware=2\" key="));
  CHECK(in.wait_for_log("attestation verifier_refused"));
  CHECK(in.wait_for_log("refused our attestation: its verdict said status_below_policy"));
  CHECK(origin.accepted() == 0);
}

TEST_CASE("a client sidecar refuses a server pinned to another attested key") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("must not be seen\n"));
  const auto in_port = free_port();
  const auto out_port = free_port();
  atlsd in(dir, "in", header(tik.config()) + attesting_inbound(in_port, origin.port(), tik));
  atlsd out(dir, "out",
            header() + relying_outbound("out", out_port, in_port, p,
                                        server_peer(dir, tik, {.more = another_pin()})));
  const auto fetched = curl_http(out_port);
  CHECK(fetched.out.empty());
  INFO(out.log());
  CHECK(out.wait_for_log("outcome=rejected reason=\"attestation not_pinned"));
  // The audit line names the rule that refused: the result passed `accept`, the key is not pinned.
  CHECK(contains(out.log(),
                 " attester=peer round=0 verifier=\"local\" outcome=not_pinned "
                 "status=affirming "));
  CHECK(contains(out.log(), " key=sha256:" + tik.tik_pin() +
                                " reason=\"the attested key is not among the policy's pinned "
                                "keys\""));
  CHECK(origin.accepted() == 0);
}

TEST_CASE("a client sidecar that requires attestation refuses a server that does not attest") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("must not be seen\n"));
  const auto in_port = free_port();
  const auto out_port = free_port();
  atlsd in(dir, "in", header() + inbound("in", in_port, local(origin.port()), p));
  atlsd out(dir, "out",
            header() + relying_outbound("out", out_port, in_port, p, server_peer(dir, tik)));
  const auto fetched = curl_http(out_port);
  CHECK(fetched.out.empty());
  INFO(out.log());
  // The plain server connects its upstream after its handshake, but the client sends nothing.
  CHECK(out.wait_for_log("outcome=rejected reason=\"attestation attestation_required"));
}

TEST_CASE(
    "an inbound sidecar that requires client attestation refuses openssl s_client with "
    "the attestation_required alert") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("must not be seen\n"));
  const auto in_port = free_port();
  atlsd in(
      dir, "in",
      header() + inbound("in", in_port, local(origin.port()), p,
                         "    attestation:\n" + server_peer(dir, tik, {.more = another_pin()})));
  const auto hello = run({"openssl", "s_client", "-connect", local(in_port), "-tls1_3",
                          "-servername", "server.test", "-CAfile", (p / "ca.crt").string()},
                         15s);
  INFO(hello.out);
  INFO(hello.err);
  CHECK(hello.exit_code != 0);
  CHECK(contains(hello.err, "alert number 225"));
  INFO(in.log());
  CHECK(in.wait_for_log("outcome=rejected reason=\"attestation attestation_required"));
}

TEST_CASE("two sidecars attest to each other with their own TPMs before a request crosses") {
  const temp_dir dir;
  const temp_dir client_dir;
  const auto p = make_pki(dir);
  const tpm_identity server_tik(dir, p, "DNS:server.test", "serverAuth");
  const tpm_identity client_tik(client_dir, p, "DNS:client.test", "clientAuth");
  loopback_server origin(http_responder("mutually attested\n"));
  const auto in_port = free_port();
  const auto out_port = free_port();
  // RA + PKI both ways: the client's TIK certificate is checked against the CA in the handshake.
  const auto client_ak = trusted_pem(write_ak(dir, client_tik, "client-ak.pem"));
  atlsd in(
      dir, "in",
      header(server_tik.config()) +
          attesting_inbound(
              in_port, origin.port(), server_tik,
              {.attestation = self_block() + peer_block({.trusted_ak = client_ak}),
               .tls_more = "      client_auth:\n        ca: " + (p / "ca.crt").string() + "\n"}));
  atlsd out(client_dir, "out",
            header(client_tik.config()) +
                outbound("out", out_port, local(in_port), p, "server.test",
                         "    attestation:\n" + self_block() + server_peer(dir, server_tik),
                         tik_tls(client_tik)));

  const auto fetched = curl_http(out_port);
  INFO(fetched.err);
  INFO(out.log());
  INFO(in.log());
  CHECK(fetched.out == "mutually attested\n");
  REQUIRE(out.wait_for_log("outcome=ok"));
  CHECK(contains(out.log(), "attestation=\"peer=affirming key=sha256:"));
  CHECK(contains(out.log(), " self=accepted\""));
  REQUIRE(in.wait_for_log("outcome=ok"));
  CHECK(contains(in.log(), "attestation=\"peer=affirming key=sha256:"));
}

}  // namespace
}  // namespace atls::test
