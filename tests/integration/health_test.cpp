// Readiness probes against real dependencies: a swtpm that is killed, frozen and restarted, and
// the Veraison-API test server answering 500s and then recovering.
#include "atls/app/health.hpp"

#include <chrono>
#include <functional>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <doctest/doctest.h>

#include "atls/attested/settings.hpp"
#include "atls/metrics/atlsd_metrics.hpp"
#include "atls/verify/jose.hpp"
#include "atls/verify/veraison_client.hpp"

#include "support/daemon.hpp"
#include "support/swtpm.hpp"
#include "support/temp_dir.hpp"
#include "support/veraison_server.hpp"

namespace atls::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// The daemon's control loop: probes run here, on their own thread, while the test watches.
struct control_loop {
  control_loop() : work(io.get_executor()), thread([this] { io.run(); }) {}
  // Stopped rather than run dry: a Veraison client keeps idle connections open for a while.
  ~control_loop() {
    work.reset();
    io.stop();
    thread.join();
  }
  control_loop(const control_loop&) = delete;
  control_loop& operator=(const control_loop&) = delete;
  control_loop(control_loop&&) = delete;
  control_loop& operator=(control_loop&&) = delete;

  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
};

constexpr app::health_options fast_probes{.probe_every = 100ms, .probe_timeout = 1s};

// The check whose name starts with `prefix`; fails the test when there is none.
app::readiness_check check_named(const app::health_monitor& health, std::string_view prefix) {
  for (auto& c : health.checks()) {
    if (c.name.starts_with(prefix)) {
      return c;
    }
  }
  FAIL("no check named " << prefix);
  return {};
}

// Polls until the named check's ok equals `ok`, for up to 15 s.
bool becomes(const app::health_monitor& health, std::string_view prefix, bool ok) {
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (check_named(health, prefix).ok == ok) {
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// A listener whose relying party asks `verifier`: what the monitor reads from the daemon's
// listeners. The TLS context is real but never serves.
proxy::listener_options relying_listener(const pki& p, std::shared_ptr<verify::verifier> verifier) {
  auto ctx = tls::context::make_server(
      {.cert_chain = p / "server.crt", .private_key = std::filesystem::path(p / "server.key")});
  REQUIRE(ctx.has_value());
  auto settings = std::make_shared<attested::settings>();
  settings->peer = attested::relying_party{.verifier = std::move(verifier)};
  return proxy::listener_options{.name = "in", .tls = std::move(*ctx), .attestation = settings};
}

TEST_CASE("readiness reports a TPM that crashed or hangs, and recovers once it answers again") {
  const temp_dir dir;
  swtpm tpm_process(dir);
  auto tpm = std::make_shared<attest::tpm>(attest::tpm_options{.tcti = tpm_process.tcti()});
  control_loop loop;
  const auto health = app::health_monitor::start(loop.io.get_executor(), tpm, {}, fast_probes);

  const auto first = check_named(*health, "tpm ");
  CHECK(first.name == "tpm " + tpm_process.tcti());
  REQUIRE(becomes(*health, "tpm ", true));

  tpm_process.kill();
  REQUIRE(becomes(*health, "tpm ", false));
  CHECK_FALSE(check_named(*health, "tpm ").detail.empty());
  tpm_process.start();
  CHECK(becomes(*health, "tpm ", true));

  // A frozen TPM never answers: the probe in flight times out rather than hiding the fault.
  tpm_process.freeze();
  REQUIRE(becomes(*health, "tpm ", false));
  CHECK(check_named(*health, "tpm ").detail.starts_with("no answer for "));
  tpm_process.thaw();
  CHECK(becomes(*health, "tpm ", true));
}

TEST_CASE("readiness reports a Veraison service that fails, and recovers once it serves again") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  veraison_server service({});
  control_loop loop;
  auto key = verify::parse_jwk(service.ear_key_jwk());
  REQUIRE(key.has_value());
  auto client = verify::veraison_client::create(
      loop.io.get_executor(),
      {.base_urls = {service.base_url()}, .ear_key = *key, .max_attempts = 1});
  REQUIRE(client.has_value());
  std::vector<proxy::listener_options> listeners;
  listeners.push_back(relying_listener(p, *client));
  const auto health =
      app::health_monitor::start(loop.io.get_executor(), nullptr, listeners, fast_probes);

  CHECK(health->checks().size() == 1);  // no TPM configured, so no TPM check
  REQUIRE(becomes(*health, "verifier veraison", true));
  service.faults().fail_with_500 = 1'000'000;
  REQUIRE(becomes(*health, "verifier veraison", false));
  service.faults().fail_with_500 = 0;
  CHECK(becomes(*health, "verifier veraison", true));
  // Each probe is a request to the service's discovery endpoint, counted by status.
  auto& requests = metrics::process().verifier_requests;
  const std::string name = service.base_url();
  CHECK(requests.with({name, "discovery", "500"}).value() >= 1);
  CHECK(requests.with({name, "discovery", "200"}).value() >= 2);
}

}  // namespace
}  // namespace atls::test
