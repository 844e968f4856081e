// Post-handshake attestation between two atlsd sidecars, end to end: real sockets, swtpm as the
// attesters' TPMs, the built-in local verifier on the relying party, curl as the workload.
#include <chrono>
#include <fstream>
#include <string>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

const std::string zero_pcr(64, '0');

// The relying party's `peer` block: the local verifier trusting `ak_pem`, with PCRs 0-7 expected
// at `pcr_value` (swtpm's PCRs are all zero after start-up).
std::string peer_block(const std::filesystem::path& ak_pem, const std::string& pcr_value,
                       const std::string& more = "") {
  std::string pcrs;
  for (int i = 0; i < 8; ++i) {
    pcrs += std::string(i == 0 ? "" : ", ") + std::to_string(i) + ": " + pcr_value;
  }
  return "        verifier: local\n        local:\n          trusted_aks: [{pem: " +
         ak_pem.string() + "}]\n          reference_values: {bank: sha256, pcrs: {" + pcrs +
         "}}\n        accept: {minimum_status: affirming}\n" + more;
}

// An inbound listener whose key is the TIK, attesting itself, with `extra` inside `attestation`.
std::string attesting_inbound(std::uint16_t port, std::uint16_t origin, const tpm_identity& tik,
                              const std::string& extra = "") {
  return "  - name: in\n    mode: inbound\n    listen: " + local(port) +
         "\n    upstream: " + local(origin) + "\n    tls:\n      cert: " + tik.cert.string() +
         "\n      key: tpm:tik\n    attestation:\n      self:\n        pcrs: [0, 1, 2, 3, 4, 5, "
         "6, 7]\n" +
         extra;
}

std::string ak_file(const temp_dir& dir, const tpm_identity& tik, const std::string& name) {
  const auto path = dir / name;
  std::ofstream(path) << tik.ak_public_pem;
  return path.string();
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
            header() + outbound("out", out_port, local(in_port), p, "server.test",
                                "    attestation:\n      peer:\n" +
                                    peer_block(ak_file(dir, tik, "ak.pem"), zero_pcr)));

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
  auto config = header() + outbound("out", out_port, local(in_port), p, "server.test",
                                    "    attestation:\n      peer:\n" +
                                        peer_block(ak_file(dir, tik, "ak.pem"), zero_pcr));
  config.replace(config.find("  level: debug\n"), 15, "  level: debug\n  audit: json\n");
  atlsd out(dir, "out", config);

  CHECK(curl_http(out_port).out == "audited\n");
  REQUIRE(out.wait_for_log("outcome=ok"));
  const auto log = out.log();
  const auto start = log.find("{\"event\":\"attestation\"");
  REQUIRE(start != std::string::npos);
  const auto doc = boost::json::parse(log.substr(start, log.find('\n', start) - start));
  CHECK(doc.at("listener") == "out");
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
  atlsd in(dir, "in", header(tik.config()) + attesting_inbound(in_port, origin.port(), tik, mode));
  atlsd out(dir, "out",
            header() + outbound("out", out_port, local(in_port), p, "server.test",
                                "    attestation:\n" + mode + "      peer:\n" +
                                    peer_block(ak_file(dir, tik, "ak.pem"), zero_pcr)));

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
  atlsd out(dir, "out",
            header() + outbound("out", out_port, local(in_port), p, "server.test",
                                "    attestation:\n      peer:\n" +
                                    peer_block(ak_file(dir, tik, "ak.pem"), std::string(64, 'f'))));

  const auto fetched = curl_http(out_port);
  CHECK(fetched.out.empty());
  INFO(out.log());
  INFO(in.log());
  // The quote's PCR digest matches no reference: the local verifier says "warning", which
  // the policy's minimum_status refuses; the attester learns why from the verdict.
  CHECK(out.wait_for_log("outcome=rejected reason=\"attestation status_below_policy"));
  CHECK(contains(out.log(),
                 " attester=peer round=0 verifier=\"local\" outcome=status_below_policy "
                 "reason=\""));
  CHECK(in.wait_for_log("attestation verifier_refused"));
  CHECK(in.wait_for_log("the peer refused our attestation: status_below_policy"));
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
            header() + outbound("out", out_port, local(in_port), p, "server.test",
                                "    attestation:\n      peer:\n" +
                                    peer_block(ak_file(dir, tik, "ak.pem"), zero_pcr,
                                               "        pin: [" + std::string(64, 'a') + "]\n")));
  const auto fetched = curl_http(out_port);
  CHECK(fetched.out.empty());
  INFO(out.log());
  CHECK(out.wait_for_log("outcome=rejected reason=\"attestation not_pinned"));
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
            header() + outbound("out", out_port, local(in_port), p, "server.test",
                                "    attestation:\n      peer:\n" +
                                    peer_block(ak_file(dir, tik, "ak.pem"), zero_pcr)));
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
  atlsd in(dir, "in",
           header() + inbound("in", in_port, local(origin.port()), p,
                              "    attestation:\n      peer:\n" +
                                  peer_block(ak_file(dir, tik, "ak.pem"), zero_pcr,
                                             "        pin: [" + std::string(64, 'a') + "]\n")));
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
  auto in_config =
      header(server_tik.config()) +
      attesting_inbound(
          in_port, origin.port(), server_tik,
          "      peer:\n" + peer_block(ak_file(dir, client_tik, "client-ak.pem"), zero_pcr));
  const auto tls_line = std::string("      key: tpm:tik\n");
  in_config.insert(in_config.find(tls_line) + tls_line.size(),
                   "      client_auth:\n        ca: " + (p / "ca.crt").string() + "\n");
  atlsd in(dir, "in", in_config);
  atlsd out(client_dir, "out",
            header(client_tik.config()) +
                outbound("out", out_port, local(in_port), p, "server.test",
                         "    attestation:\n      self:\n        pcrs: [0, 1, 2, 3, 4, 5, 6, 7]\n"
                         "      peer:\n" +
                             peer_block(ak_file(dir, server_tik, "server-ak.pem"), zero_pcr),
                         "      cert: " + client_tik.cert.string() + "\n      key: tpm:tik\n"));

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
