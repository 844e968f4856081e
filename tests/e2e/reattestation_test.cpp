// Re-attestation of open connections (reattest_every): a peer that stops satisfying the policy
// while a connection is open loses that connection, and says why in the audit line.
#include <chrono>

#include <doctest/doctest.h>

#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
namespace atls::test {
namespace {

using namespace std::chrono_literals;

TEST_CASE("re-attestation closes an open connection once the peer's PCRs change") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  tpm_identity server_tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server upstream(echo_responder());
  const auto in_port = free_port();
  const auto out_port = free_port();
  atlsd in(
      dir, "in",
      server_tik.config() + header() + attesting_inbound(in_port, upstream.port(), server_tik));
  const auto ak = write_ak(dir, server_tik, "server-ak.pem");
  atlsd out(dir, "out",
            header() + relying_outbound("out", out_port, in_port, p,
                                        "      reattest_every: 1s\n" +
                                            peer_block({.trusted_ak = trusted_pem(ak)})));

  const auto client = connect_loopback(out_port, 15s);
  REQUIRE(client);
  REQUIRE(echoed(client.get(), "before"));
  // A round on the open connection passes while nothing has changed.
  REQUIRE(out.wait_for_log("round=1 verifier=\"local\" outcome=accepted"));
  REQUIRE(echoed(client.get(), "still attested"));

  const auto extended = atlsctl({"tpm", "extend", "--tcti", server_tik.simulator.tcti(), "--pcr",
                                 "7", "--data", std::string(64, 'a')});
  INFO(extended.err);
  REQUIRE(extended.exit_code == 0);

  // The next round sees the changed PCR and the relying party closes the connection.
  CHECK(closed_by_peer(client.get()));
  CHECK(out.wait_for_log("outcome=status_below_policy"));
  CHECK(out.wait_for_log("connection closed listener=out "));
  CHECK(upstream.accepted() == 1);
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
