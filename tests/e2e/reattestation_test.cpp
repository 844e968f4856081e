// Re-attestation of open connections (reattest_every, reattest_on_reload): a peer that stops
// satisfying the policy while a connection is open loses that connection, and says why in the
// audit line and the metric.
#include <chrono>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "e2e/admin_client.hpp"
#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "e2e/veraison_fixture.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include <signal.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;

// An attesting inbound sidecar (the TIK in swtpm) and an echo origin behind it; each test starts
// the relying outbound side with the attestation lines it needs.
struct attesting_server {
  explicit attesting_server(const temp_dir& d)
      : dir(d),
        p(make_pki(dir)),
        tik(dir, p, "DNS:server.test", "serverAuth"),
        upstream(echo_responder()),
        in_port(free_port()),
        in(dir, "in", tik.config() + header() + attesting_inbound(in_port, upstream.port(), tik)),
        ak(write_ak(dir, tik, "server-ak.pem")) {}

  // The outbound listener "out" on `port`, judging the server by `attestation` (indent 6);
  // `top` goes at the top level (an admin block).
  [[nodiscard]] std::string relying_config(std::uint16_t port, const std::string& attestation,
                                           const std::string& top = "") const {
    return header(top) + relying_outbound("out", port, in_port, p, attestation);
  }

  // The local verifier's rules for this server, expecting `pcr_value` in PCRs 0-7.
  [[nodiscard]] std::string rules(const std::string& pcr_value = zero_pcr) const {
    return peer_block({.trusted_ak = trusted_pem(ak), .pcr_value = pcr_value});
  }

  const temp_dir& dir;
  pki p;
  tpm_identity tik;
  loopback_server upstream;
  std::uint16_t in_port;
  atlsd in;
  std::filesystem::path ak;
};

// Reference values that the server's PCRs (all zero in a fresh swtpm) do not match.
const std::string other_pcr(64, '1');

// Saves `config` as out's file and reloads it; the listener "out" is kept.
void reload(atlsd& out, const temp_dir& dir, const std::string& config) {
  dir.write("out.yaml", config);
  out.signal(SIGHUP);
  REQUIRE(out.wait_for_log("reloaded: added=- removed=- kept=out"));
}

// What atlsd_reattestation_closes_total says for listener "out" and `reason`.
double reattestation_closes(std::uint16_t admin_port, const std::string& reason) {
  return scrape(admin_port)
      .value_of("atlsd_reattestation_closes_total", {{"listener", "out"}, {"reason", reason}})
      .value_or(0);
}

TEST_CASE("re-attestation closes an open connection once the peer's PCRs change") {
  const temp_dir dir;
  attesting_server server(dir);
  const auto out_port = free_port();
  const auto admin_port = free_port();
  atlsd out(dir, "out",
            server.relying_config(out_port, "      reattest_every: 1s\n" + server.rules(),
                                  admin_block(admin_port)));

  const auto client = connect_loopback(out_port, 15s);
  REQUIRE(client);
  REQUIRE(echoed(client.get(), "before"));
  // A round on the open connection passes while nothing has changed.
  REQUIRE(out.wait_for_log("round=1 verifier=\"local\" outcome=accepted"));
  REQUIRE(echoed(client.get(), "still attested"));

  const auto extended = atlsctl({"tpm", "extend", "--tcti", server.tik.simulator.tcti(), "--pcr",
                                 "7", "--data", std::string(64, 'a')});
  INFO(extended.err);
  REQUIRE(extended.exit_code == 0);

  // The next round sees the changed PCR and the relying party closes the connection.
  CHECK(closed_by_peer(client.get()));
  CHECK(out.wait_for_log("outcome=status_below_policy"));
  CHECK(out.wait_for_log("connection closed listener=out "));
  CHECK(reattestation_closes(admin_port, "status_below_policy") == 1);
  CHECK(server.upstream.accepted() == 1);
}

TEST_CASE("with reattest_on_reload, a reload whose policy the peer fails closes its connection") {
  const temp_dir dir;
  attesting_server server(dir);
  const auto out_port = free_port();
  const auto admin_port = free_port();
  const auto policy = [&](const std::string& pcr_value) {
    return server.relying_config(out_port,
                                 "      reattest_on_reload: true\n" + server.rules(pcr_value),
                                 admin_block(admin_port));
  };
  atlsd out(dir, "out", policy(zero_pcr));
  const auto client = connect_loopback(out_port, 15s);
  REQUIRE(client);
  REQUIRE(echoed(client.get(), "attested under the first policy"));

  // The new policy expects other PCR values: the open connection's peer is asked again, on
  // this connection, and refused.
  reload(out, dir, policy(other_pcr));
  CHECK(closed_by_peer(client.get()));
  CHECK(out.wait_for_log("round=1 verifier=\"local\" outcome=status_below_policy"));
  CHECK(out.wait_for_log("connection closed listener=out "));
  CHECK(reattestation_closes(admin_port, "status_below_policy") == 1);
  CHECK(server.upstream.accepted() == 1);
}

TEST_CASE("with reattest_on_reload, a peer that passes the reloaded policy keeps its connection") {
  const temp_dir dir;
  attesting_server server(dir);
  const auto out_port = free_port();
  const auto config =
      server.relying_config(out_port, "      reattest_on_reload: true\n" + server.rules());
  atlsd out(dir, "out", config);
  const auto client = connect_loopback(out_port, 15s);
  REQUIRE(client);
  REQUIRE(echoed(client.get(), "before the reload"));

  reload(out, dir, config + "# saved again\n");
  // A fresh round, judged by the reloaded rules, passes and the relay goes on.
  REQUIRE(out.wait_for_log("round=1 verifier=\"local\" outcome=accepted"));
  CHECK(echoed(client.get(), "after the reload"));
}

TEST_CASE("with reattest_on_reload, a reload that requires attestation closes a plain connection") {
  const temp_dir dir;
  attesting_server server(dir);
  const auto out_port = free_port();
  atlsd out(
      dir, "out",
      header() + outbound("out", out_port, local(server.in_port), server.p, "server.test", ""));
  const auto client = connect_loopback(out_port, 15s);
  REQUIRE(client);
  REQUIRE(echoed(client.get(), "plain TLS, nobody attested"));

  // The peer cannot attest on a connection set up without attestation: it must connect again.
  reload(out, dir,
         server.relying_config(out_port, "      reattest_on_reload: true\n" + server.rules()));
  CHECK(closed_by_peer(client.get()));
  CHECK(out.wait_for_log("outcome=rejected reason=\"attestation attestation_required: "));
  CHECK(contains(out.log(), "the reloaded policy requires the peer to attest"));
  // A new connection is attested under the reloaded policy.
  const auto next = connect_loopback(out_port, 15s);
  REQUIRE(next);
  CHECK(echoed(next.get(), "attested"));
}

TEST_CASE("without reattest_on_reload, open connections keep the policy they started with") {
  const temp_dir dir;
  attesting_server server(dir);
  const auto out_port = free_port();
  atlsd out(dir, "out", server.relying_config(out_port, server.rules()));
  const auto client = connect_loopback(out_port, 15s);
  REQUIRE(client);
  REQUIRE(echoed(client.get(), "before the reload"));

  reload(out, dir, server.relying_config(out_port, server.rules(other_pcr)));
  CHECK(echoed(client.get(), "still open under the first policy"));
  // A new connection meets the new policy, and fails it.
  const auto refused = connect_loopback(out_port, 15s);
  REQUIRE(refused);
  CHECK(closed_by_peer(refused.get()));
  CHECK(out.wait_for_log("outcome=status_below_policy"));
  CHECK(echoed(client.get(), "and still"));
}

// The relying side's attestation lines: Veraison appraises the server's evidence every 500 ms,
// and a Veraison outage is waited out for 5 s after the last accepted round.
std::string veraison_rounds(const veraison_fixture& veraison) {
  return "      reattest_every: 500ms\n      peer:\n        verifier: veraison\n" +
         veraison.block(8) +
         "        accept: {minimum_status: affirming}\n        verifier_grace: 5s\n";
}

TEST_CASE("a verifier outage during re-attestation is waited out for verifier_grace, then closes") {
  const temp_dir dir;
  attesting_server server(dir);
  veraison_fixture veraison(dir, {&server.tik}, dir / "ear-key.pem");
  const auto out_port = free_port();
  const auto admin_port = free_port();
  atlsd out(dir, "out",
            server.relying_config(out_port, veraison_rounds(veraison), admin_block(admin_port)));
  const auto client = connect_loopback(out_port, 15s);
  REQUIRE(client);
  REQUIRE(echoed(client.get(), "before the outage"));
  REQUIRE(out.wait_for_log("round=1 verifier=\"veraison "));

  INFO(out.log());
  const auto outage = std::chrono::steady_clock::now();
  veraison.server().faults().fail_with_500 = 1'000'000;
  // Rounds that cannot reach the verifier are deferred, and the connection carries on.
  REQUIRE(out.wait_for_log("outcome=verifier_unreachable"));
  CHECK(out.wait_for_log("deferred: the connection keeps its last result for up to "));
  CHECK(echoed(client.get(), "during the outage"));
  // Past the grace, the next round closes it.
  CHECK(closed_by_peer(client.get()));
  CHECK(std::chrono::steady_clock::now() - outage >= 3s);
  CHECK(out.wait_for_log("connection closed listener=out "));
  CHECK(reattestation_closes(admin_port, "verifier_unreachable") == 1);
  CHECK(server.upstream.accepted() == 1);
}

TEST_CASE("a verifier that comes back within verifier_grace keeps the connection open") {
  const temp_dir dir;
  attesting_server server(dir);
  veraison_fixture veraison(dir, {&server.tik}, dir / "ear-key.pem");
  const auto out_port = free_port();
  atlsd out(dir, "out", server.relying_config(out_port, veraison_rounds(veraison)));
  const auto client = connect_loopback(out_port, 15s);
  REQUIRE(client);
  REQUIRE(echoed(client.get(), "before the outage"));
  REQUIRE(out.wait_for_log("round=1 verifier=\"veraison "));

  INFO(out.log());
  veraison.server().faults().fail_with_500 = 1'000'000;
  REQUIRE(out.wait_for_log("outcome=verifier_unreachable"));
  veraison.server().faults().fail_with_500 = 0;
  // A round accepted after the deferred one: the connection's trust is current again.
  const auto deferred_at = out.log().find("outcome=verifier_unreachable");
  bool accepted_again = false;
  for (int i = 0; i < 100 && !accepted_again; ++i) {
    accepted_again = out.log().find("outcome=accepted", deferred_at) != std::string::npos;
    std::this_thread::sleep_for(100ms);
  }
  CHECK(accepted_again);
  CHECK(echoed(client.get(), "after the outage"));
  CHECK(out.log().find("connection closed listener=out ") == std::string::npos);
}

TEST_CASE("a connection attested inside the handshake closes when its result reaches max_age") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  tpm_identity server_tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server upstream(echo_responder());
  const auto in_port = free_port();
  const auto out_port = free_port();
  atlsd in(dir, "in",
           server_tik.config() + header() +
               attesting_inbound(in_port, upstream.port(), server_tik,
                                 {.attestation = "      mode: intra-handshake\n" + self_block()}));
  const auto ak = write_ak(dir, server_tik, "server-ak.pem");
  atlsd out(dir, "out",
            header() + relying_outbound(
                           "out", out_port, in_port, p,
                           "      mode: intra-handshake\n" +
                               peer_block({.trusted_ak = trusted_pem(ak),
                                           .accept = "{minimum_status: affirming, max_age: 3s}"})));

  const auto client = connect_loopback(out_port, 15s);
  REQUIRE(client);
  const auto opened = std::chrono::steady_clock::now();
  REQUIRE(echoed(client.get(), "attested once"));
  CHECK(closed_by_peer(client.get()));
  const auto lived = std::chrono::steady_clock::now() - opened;
  CHECK(lived >= 1s);  // not closed at once: the result was fresh when the handshake took it
  CHECK(lived < 8s);
  CHECK(out.wait_for_log("outcome=ear_expired"));
  CHECK(contains(out.log(), "the connection outlived the peer's attestation result"));
}

}  // namespace
}  // namespace atls::test
