// Each acceptance rule of a relying party, end to end between atlsd sidecars with swtpm TPMs:
// the rule lets through what meets it and refuses what does not, the refused request never
// reaches the upstream, and the relying party's audit line names the rule's outcome word and
// says why. Each test runs the passing and the refused case side by side, on listeners of one
// daemon that differ only in the rule, so that the refusal is the rule's doing.
//
// Covered elsewhere: minimum_status (attestation_test.cpp, PCRs that differ), pin
// (attestation_test.cpp, a server pinned to another attested key), an untrusted passport key and
// an expired EAR (veraison_attestation_test.cpp).
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

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

// The connection-close line of `listener`, once `daemon` has written it.
std::string closed_line(const atlsd& daemon, std::string_view listener) {
  const auto tag = "connection closed listener=" + std::string(listener) + " ";
  REQUIRE_MESSAGE(daemon.wait_for_log(tag), "no connection closed on " << listener);
  const auto log = daemon.log();
  const auto start = log.find(tag);
  return log.substr(start, log.find('\n', start) - start);
}

// The server's machine: its swtpm, an attesting inbound sidecar in front of an HTTP origin, and
// the client sidecar's ports, one per listener.
struct attesting_server {
  attesting_server() : p(make_pki(dir)), tik(dir, p, "DNS:server.test", "serverAuth") {}

  // Starts the server sidecar, which attests post-handshake with `attestation` (indent 6).
  void start(const std::string& attestation = self_block()) {
    in.emplace(dir, "in",
               header(tik.config()) +
                   attesting_inbound(in_port, origin.port(), tik, {.attestation = attestation}));
  }

  const temp_dir dir;
  const pki p;
  const tpm_identity tik;
  loopback_server origin{http_responder("attested\n")};
  const std::uint16_t in_port = free_port();
  std::optional<atlsd> in;
};

TEST_CASE(
    "a client sidecar refuses a server whose executables claim is below the tier its policy "
    "requires, and audits it as status_below_policy") {
  attesting_server server;
  server.start();
  const auto ak = trusted_pem(write_ak(server.dir, server.tik, "ak.pem"));
  const std::string other_pcr(64, 'f');
  // With PCRs that match no reference, the local verifier says executables = 33 (warning tier)
  // and status warning: every listener below accepts that status, so that only the tier rule
  // can refuse.
  const std::string tier_rule =
      "{minimum_status: warning, minimum_tiers: {executables: affirming}}";
  const std::uint16_t met = free_port();
  const std::uint16_t unmet = free_port();
  const std::uint16_t status_only = free_port();
  const std::uint16_t submodule = free_port();
  atlsd out(
      server.dir, "out",
      header() +
          relying_outbound("tiers-met", met, server.in_port, server.p,
                           peer_block({.trusted_ak = ak, .accept = tier_rule})) +
          relying_outbound(
              "tiers-unmet", unmet, server.in_port, server.p,
              peer_block({.trusted_ak = ak, .pcr_value = other_pcr, .accept = tier_rule})) +
          relying_outbound("status-only", status_only, server.in_port, server.p,
                           peer_block({.trusted_ak = ak,
                                       .pcr_value = other_pcr,
                                       .accept = "{minimum_status: warning}"})) +
          relying_outbound("submodule-missing", submodule, server.in_port, server.p,
                           peer_block({.trusted_ak = ak,
                                       .accept = "{minimum_status: warning, required_submodules: "
                                                 "[PARSEC_TPM, OTHER_SUBMODULE]}"})));
  INFO(out.log());
  INFO(server.in->log());

  CHECK(curl_http(met).out == "attested\n");
  const auto accepted = audit_line(out, "tiers-met");
  CHECK(contains(accepted,
                 " outcome=accepted status=affirming trust=\"instance-identity=2 "
                 "executables=2 hardware=2\""));

  // Status warning passes a policy without a tier rule...
  CHECK(curl_http(status_only).out == "attested\n");
  CHECK(contains(audit_line(out, "status-only"),
                 " outcome=accepted status=warning trust=\"instance-identity=2 executables=33 "
                 "hardware=2\""));

  // ...and the tier rule refuses the same result.
  const auto refused = curl_http(unmet);
  CHECK(refused.out.empty());
  const auto line = audit_line(out, "tiers-unmet");
  // The line shows what the verifier said, which the policy found short of its minimum.
  CHECK(contains(line,
                 " mode=post-handshake model=background-check attester=peer round=0 "
                 "verifier=\"local\" outcome=status_below_policy status=warning "
                 "trust=\"instance-identity=2 executables=33 hardware=2\""));
  CHECK(contains(line, " key=sha256:" + server.tik.tik_pin() +
                           " reason=\"trustworthiness claim is below the policy's minimum tier, "
                           "or absent"));
  CHECK(contains(closed_line(out, "tiers-unmet"),
                 "outcome=rejected reason=\"attestation status_below_policy: trustworthiness "
                 "claim is below the policy's minimum tier"));

  // A required submodule the result lacks falls under the same outcome word, told apart by its
  // reason.
  CHECK(curl_http(submodule).out.empty());
  const auto missing = audit_line(out, "submodule-missing");
  CHECK(contains(missing, " outcome=status_below_policy status=affirming "));
  CHECK(contains(missing, " reason=\"attestation result lacks a submodule the policy requires"));

  // The server learnt the verdict of each refusal; the origin saw only the accepted requests.
  CHECK(server.in->wait_for_log("refused our attestation: its verdict said status_below_policy"));
  CHECK(server.origin.accepted() == 2);
}

TEST_CASE(
    "a client sidecar refuses evidence whose AK is not the one its spki_sha256 trusted_aks entry "
    "names, and audits it as verifier_refused in JSON") {
  attesting_server server;
  server.start();
  const std::uint16_t right = free_port();
  const std::uint16_t wrong = free_port();
  // The wrong entry names a real P-256 key of the same TPM, its TIK, which signs no evidence.
  atlsd out(
      server.dir, "out",
      json_audit_header() +
          relying_outbound(
              "trusted-ak", right, server.in_port, server.p,
              peer_block({.trusted_ak = "spki_sha256: " + server.tik.ak_spki_sha256()})) +
          relying_outbound("other-ak", wrong, server.in_port, server.p,
                           peer_block({.trusted_ak = "spki_sha256: " + server.tik.tik_pin()})));
  INFO(out.log());
  INFO(server.in->log());

  // The AK named by its hash is recovered from the evidence's signatures and accepted.
  CHECK(curl_http(right).out == "attested\n");
  const auto accepted = audit_json(out, "trusted-ak");
  CHECK(accepted.at("outcome") == "accepted");
  CHECK(accepted.at("reason").is_null());
  CHECK(accepted.at("key_sha256").as_string() == server.tik.tik_pin());

  CHECK(curl_http(wrong).out.empty());
  const auto refused = audit_json(out, "other-ak");
  CHECK(refused.at("attester") == "peer");
  CHECK(refused.at("verifier") == "local");
  CHECK(refused.at("outcome") == "verifier_refused");
  // The verifier refused: there is no result to show.
  CHECK(refused.at("status").is_null());
  REQUIRE(refused.at("reason").is_string());
  CHECK(std::string_view(refused.at("reason").as_string())
            .starts_with("evidence is not signed by a trusted attestation key"));
  CHECK(server.origin.accepted() == 1);
}

TEST_CASE(
    "a client sidecar refuses a passport older than its max_age, and audits it as ear_expired") {
  attesting_server server;
  const veraison_fixture veraison(server.dir, {&server.tik}, server.dir / "veraison-ear.pem");
  const std::string passport = "      model: passport\n";
  server.start(passport + self_block(veraison.block(8)));
  REQUIRE(server.in->wait_for_log("passport: new attestation result"));
  const std::uint16_t lenient = free_port();
  const std::uint16_t strict = free_port();
  atlsd out(
      server.dir, "out",
      header() +
          relying_outbound("max-age-5m", lenient, server.in_port, server.p,
                           passport + passport_peer_block({.ear_key = veraison.ear_key()})) +
          relying_outbound("max-age-1s", strict, server.in_port, server.p,
                           passport + passport_peer_block({.ear_key = veraison.ear_key(),
                                                           .accept = "{minimum_status: affirming, "
                                                                     "max_age: 1s}"})));
  INFO(out.log());
  INFO(server.in->log());
  // The server keeps the EAR it fetched at start for a minute (refresh_every), so from here on
  // it presents one issued more than a second ago to both listeners.
  std::this_thread::sleep_for(2s);

  CHECK(curl_http(lenient).out == "attested\n");
  CHECK(contains(audit_line(out, "max-age-5m"), " model=passport attester=peer round=0 "));
  CHECK(contains(audit_line(out, "max-age-5m"), " outcome=accepted status=affirming "));

  CHECK(curl_http(strict).out.empty());
  const auto line = audit_line(out, "max-age-1s");
  CHECK(contains(line, " model=passport attester=peer round=0 "));
  CHECK(contains(line, " outcome=ear_expired status=affirming trust=\""));
  CHECK(contains(line, " reason=\"attestation result is older than the policy's maximum age"));
  CHECK(server.in->wait_for_log("refused our attestation: its verdict said ear_expired"));
  CHECK(server.origin.accepted() == 1);
}

TEST_CASE(
    "an inbound sidecar refuses an attesting client whose CA-issued certificate is not on "
    "allow_dns, in the TLS handshake before any attestation") {
  const temp_dir dir;
  const temp_dir client_dir;
  const auto p = make_pki(dir);
  const tpm_identity client_tik(client_dir, p, "DNS:client.test", "clientAuth");
  loopback_server origin(http_responder("attested client\n"));
  const auto ak = trusted_pem(write_ak(dir, client_tik, "client-ak.pem"));
  // RA + PKI: both listeners check the client's certificate against the CA and its attestation
  // against its AK; they differ only in the names they allow.
  const auto relying_inbound = [&](const std::string& name, std::uint16_t port,
                                   const std::string& allowed) {
    return inbound(name, port, local(origin.port()), p,
                   "    attestation:\n" + peer_block({.trusted_ak = ak}),
                   "      client_auth:\n        ca: " + (p / "ca.crt").string() +
                       "\n        allow_dns: [" + allowed + "]\n");
  };
  const auto allowed_port = free_port();
  const auto other_port = free_port();
  atlsd in(dir, "in",
           header() + relying_inbound("allows-client", allowed_port, "client.test") +
               relying_inbound("allows-other", other_port, "other.test"));
  const auto attesting_outbound = [&](const std::string& name, std::uint16_t port,
                                      std::uint16_t server) {
    return outbound(name, port, local(server), p, "server.test",
                    "    attestation:\n" + self_block(), tik_tls(client_tik));
  };
  const auto to_allowed = free_port();
  const auto to_other = free_port();
  atlsd out(client_dir, "out",
            header(client_tik.config()) +
                attesting_outbound("to-allowed", to_allowed, allowed_port) +
                attesting_outbound("to-other", to_other, other_port));
  INFO(in.log());
  INFO(out.log());

  CHECK(curl_http(to_allowed).out == "attested client\n");
  CHECK(contains(audit_line(in, "allows-client"),
                 " attester=peer round=0 verifier=\"local\" outcome=accepted status=affirming "));

  CHECK(curl_http(to_other).out.empty());
  CHECK(contains(closed_line(in, "allows-other"),
                 "outcome=rejected reason=\"tls handshake: peer certificate rejected: "
                 "certificate names not in allow_dns/allow_uris\""));
  // The handshake failed, so no attestation was exchanged and none was decided.
  CHECK_FALSE(contains(in.log(), "attestation listener=allows-other "));
  CHECK(origin.accepted() == 1);
}

}  // namespace
}  // namespace atls::test
