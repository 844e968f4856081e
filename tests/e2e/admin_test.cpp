// The admin listener of a running atlsd: liveness, readiness that follows the TPM and the
// drain, and metrics that count what the test did, checked against the exposition format.
#include <chrono>
#include <string>
#include <thread>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include "e2e/admin_client.hpp"
#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "e2e/veraison_fixture.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include "support/prometheus_text.hpp"
#include <signal.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;

// Polls /readyz until its status is `status`, for up to 15 s; returns the last body.
std::string readyz_becomes(std::uint16_t port, int status) {
  std::string body;
  for (int i = 0; i < 150; ++i) {
    auto [got, text] = admin_get(port, "/readyz");
    body = text;
    if (got == status) {
      return body;
    }
    std::this_thread::sleep_for(100ms);
  }
  FAIL("/readyz never answered " << status << "; last body: " << body);
  return body;
}

TEST_CASE("the admin listener answers /healthz and /readyz, and /metrics counts connections") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("ok\n"));
  const auto in_port = free_port();
  const auto out_port = free_port();
  const auto admin_port = free_port();
  atlsd in(dir, "in", header() + inbound("in", in_port, local(origin.port()), p));
  atlsd out(dir, "out",
            admin_block(admin_port) + header() + outbound("out", out_port, local(in_port), p));
  REQUIRE(out.wait_for_log("admin listener on 127.0.0.1:" + std::to_string(admin_port)));

  CHECK(admin_get(admin_port, "/healthz") == std::pair<int, std::string>{200, "ok\n"});
  const auto ready = admin_get(admin_port, "/readyz");
  CHECK(ready.first == 200);
  const auto doc = boost::json::parse(ready.second).as_object();
  CHECK(doc.at("ready").as_bool());
  CHECK(doc.at("checks").as_array().at(0).at("name") == "listeners");

  for (int i = 0; i < 3; ++i) {
    CHECK(curl_http(out_port).out == "ok\n");
  }
  // Counted at close, which follows curl's exit by a moment.
  const label_set ok{{"listener", "out"}, {"outcome", "ok"}};
  for (int i = 0; i < 100 && scrape(admin_port).value_of("atlsd_connections_total", ok) != 3; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  const auto metrics = scrape(admin_port);
  CHECK(metrics.value_of("atlsd_connections_total", {{"listener", "out"}, {"outcome", "ok"}}) == 3);
  CHECK(metrics.value_of("atlsd_open_connections", {{"listener", "out"}}) == 0);
  CHECK(metrics.value_of("atlsd_handshake_duration_seconds_count", {{"listener", "out"}}) == 3);
  const auto to_client = metrics.value_of(
      "atlsd_relayed_bytes_total", {{"listener", "out"}, {"direction", "upstream_to_client"}});
  REQUIRE(to_client.has_value());
  CHECK(*to_client > 3 * 3);  // three responses with headers and "ok\n"
  CHECK(metrics.value_of("atlsd_ready") == 1);
  CHECK(metrics.family("atlsd_build_info") != nullptr);
  CHECK(metrics.value_of("atlsd_config_reloads_total", {{"result", "invalid"}}) == 0);

  // A reload with a broken file is counted as such, and the daemon stays ready.
  dir.write("out.yaml", admin_block(admin_port) + header() +
                            outbound("out", out_port, local(in_port), p) + "    bogus: 1\n");
  out.signal(SIGHUP);
  REQUIRE(out.wait_for_log("reload refused"));
  CHECK(scrape(admin_port).value_of("atlsd_config_reloads_total", {{"result", "invalid"}}) == 1);
  CHECK(admin_get(admin_port, "/readyz").first == 200);

  CHECK(admin_get(admin_port, "/nothing").first == 404);
}

TEST_CASE("/readyz turns 503 while the TPM is down, naming it, and 200 once it is back") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("ok\n"));
  const auto port = free_port();
  const auto admin_port = free_port();
  atlsd in(dir, "in",
           tik.config() + admin_block(admin_port, "  probe_every: 200ms\n") + header() +
               attesting_inbound(port, origin.port(), tik));

  readyz_becomes(admin_port, 200);
  tik.simulator.kill();
  const auto down = readyz_becomes(admin_port, 503);
  const auto doc = boost::json::parse(down).as_object();
  CHECK_FALSE(doc.at("ready").as_bool());
  bool tpm_named = false;
  for (const auto& check : doc.at("checks").as_array()) {
    if (check.at("name").as_string().starts_with("tpm ")) {
      tpm_named = true;
      CHECK_FALSE(check.at("ok").as_bool());
      CHECK_FALSE(check.at("detail").as_string().empty());
    }
  }
  CHECK(tpm_named);
  CHECK(scrape(admin_port).value_of("atlsd_ready") == 0);
  CHECK(in.wait_for_log("not ready: tpm "));

  tik.simulator.start();
  readyz_becomes(admin_port, 200);
  CHECK(in.wait_for_log("ready again: tpm "));
  // The probes are TPM operations like any other, counted by result.
  const auto metrics = scrape(admin_port);
  CHECK(metrics.value_of("atlsd_tpm_operations_total",
                         {{"operation", "get_random"}, {"result", "error"}}) >= 1);
  CHECK(metrics.value_of("atlsd_tpm_operations_total",
                         {{"operation", "get_random"}, {"result", "ok"}}) >= 2);
  CHECK(metrics.value_of("atlsd_tpm_operation_duration_seconds_count",
                         {{"operation", "get_random"}}) >= 3);
}

TEST_CASE("/readyz turns 503 while the Veraison service fails, naming it, and 200 once it serves") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  veraison_fixture veraison(dir, {}, dir / "ear-key.pem");
  const auto port = free_port();
  const auto admin_port = free_port();
  // A relying party that has servers' evidence appraised by Veraison; no server is needed for
  // its readiness.
  atlsd out(dir, "out",
            admin_block(admin_port, "  probe_every: 200ms\n") + header() +
                relying_outbound("out", port, free_port(), p,
                                 "      peer:\n        verifier: veraison\n" + veraison.block(8) +
                                     "        accept: {minimum_status: affirming}\n"));

  readyz_becomes(admin_port, 200);
  veraison.server().faults().fail_with_500 = 1'000'000;
  const auto down = readyz_becomes(admin_port, 503);
  CHECK(down.find("verifier veraison " + veraison.server().base_url()) != std::string::npos);
  veraison.server().faults().fail_with_500 = 0;
  readyz_becomes(admin_port, 200);
  const auto metrics = scrape(admin_port);
  CHECK(
      metrics.value_of("atlsd_verifier_requests_total", {{"verifier", veraison.server().base_url()},
                                                         {"endpoint", "discovery"},
                                                         {"status", "500"}}) >= 1);
}

TEST_CASE("/readyz says draining once SIGTERM arrives, while open connections finish") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server upstream(echo_responder());
  const auto in_port = free_port();
  const auto out_port = free_port();
  const auto admin_port = free_port();
  atlsd in(dir, "in", header() + inbound("in", in_port, local(upstream.port()), p));
  atlsd out(dir, "out",
            admin_block(admin_port) + header() + outbound("out", out_port, local(in_port), p));
  const auto open = connect_loopback(out_port);
  REQUIRE(open);
  REQUIRE(echoed(open.get(), "held open"));

  out.signal(SIGTERM);
  const auto body = readyz_becomes(admin_port, 503);
  CHECK(body.find("draining") != std::string::npos);
  CHECK(echoed(open.get(), "still served while draining"));
}

}  // namespace
}  // namespace atls::test
