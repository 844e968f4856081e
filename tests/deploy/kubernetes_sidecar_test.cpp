// The atlsd config of the Kubernetes example (deploy/kubernetes/base/atlsd.yaml, the ConfigMap
// that the pod mounts as /etc/atlsd/atlsd.yaml) run by the built atlsd, next to the files the
// pod's projected volume puts beside it (tik.crt, clients-ca.crt) and a provisioned swtpm as the
// node's TPM. tests/deploy/kubernetes_check.py checks that the manifests mount this very file;
// this test checks that atlsd accepts it and serves what the manifests expect of it.
#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

const std::filesystem::path example_config =
    std::filesystem::path(ATLS_SOURCE_DIR) / "deploy" / "kubernetes" / "base" / "atlsd.yaml";

// `text` with its one occurrence of `from` replaced: a test that adapts the example to this
// machine (a TPM simulator instead of /dev/tpmrm0, free ports) fails when the example no longer
// says what the adaptation expects, rather than testing something else.
std::string replace_once(std::string text, std::string_view from, std::string_view to) {
  const auto at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, example_config << " no longer contains " << from);
  REQUIRE_MESSAGE(text.find(from, at + 1) == std::string::npos,
                  example_config << " contains " << from << " twice");
  return text.replace(at, from.size(), to);
}

// What the pod's projected volume holds next to the config: the node TIK's certificate (which
// tpm_identity writes as dir/tik.crt) and the clients' CA, in the config's directory, against
// which its relative paths resolve.
void mount_tls_files(const temp_dir& dir, const tpm_identity& tik, const pki& p) {
  REQUIRE(tik.cert == dir / "tik.crt");
  std::filesystem::copy_file(p / "ca.crt", dir / "clients-ca.crt");
}

// The example with the node's TPM replaced by this test's swtpm.
std::string with_simulator(const tpm_identity& tik) {
  return replace_once(read_file(example_config), "tcti: device:/dev/tpmrm0",
                      "tcti: \"" + tik.simulator.tcti() + "\"");
}

// GET http://127.0.0.1:port/path: the HTTP status, then the body.
std::pair<int, std::string> http_get(std::uint16_t port, const std::string& path) {
  const auto r = run({"curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}",
                      "http://127.0.0.1:" + std::to_string(port) + path},
                     10s);
  const auto split = r.out.rfind('\n');
  if (r.exit_code != 0 || split == std::string::npos) {
    return {0, r.err};
  }
  return {std::stoi(r.out.substr(split + 1)), r.out.substr(0, split)};
}

TEST_CASE(
    "kubernetes: the ConfigMap's atlsd config passes atlsd --check on a node with a "
    "provisioned TPM") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:web.default.svc", "serverAuth");
  mount_tls_files(dir, tik, p);
  const auto config = dir.write("atlsd.yaml", with_simulator(tik));

  const auto checked = run({ATLSD_BINARY, "--config", config.string(), "--check"}, 30s);
  INFO(checked.err);
  CHECK(checked.exit_code == 0);
  CHECK(checked.out == config.string() + ": OK (1 listener(s))\n");
}

TEST_CASE(
    "kubernetes: without the TPM device in the container, atlsd --check fails at the TIK "
    "and names the device") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:web.default.svc", "serverAuth");
  mount_tls_files(dir, tik, p);
  // The example's tcti, pointed at a device node this container does not have.
  const auto missing = (dir / "tpmrm0").string();
  const auto config =
      dir.write("atlsd.yaml", replace_once(read_file(example_config), "tcti: device:/dev/tpmrm0",
                                           "tcti: device:" + missing));

  const auto checked = run({ATLSD_BINARY, "--config", config.string(), "--check"}, 30s);
  CHECK(checked.exit_code == 1);
  CHECK(contains(checked.err,
                 "listeners[0].tls.key: tcti:IO failure: TPM key 0x81000101 via "
                 "device:" +
                     missing));
  CHECK(contains(checked.err, "Failed to open specified TCTI device file " + missing +
                                  ": No such file or directory"));
}

TEST_CASE(
    "kubernetes: with the ConfigMap's config, atlsd answers the pod's probes and relays "
    "attested TLS from a client sidecar to the workload") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  mount_tls_files(dir, tik, p);
  loopback_server workload(http_responder("hello from the workload\n"));
  const auto attested_port = free_port();
  const auto admin_port = free_port();
  // The pod's ports and the workload's port, moved to free ones on this machine.
  auto config = with_simulator(tik);
  config = replace_once(config, "listen: 0.0.0.0:8443",
                        "listen: 0.0.0.0:" + std::to_string(attested_port));
  config =
      replace_once(config, "listen: 0.0.0.0:9901", "listen: 0.0.0.0:" + std::to_string(admin_port));
  config = replace_once(config, "upstream: 127.0.0.1:8080", "upstream: " + local(workload.port()));
  atlsd sidecar(dir, "atlsd", config);

  // The kubelet's probes: liveness at once, readiness once the first TPM probe has answered.
  CHECK(http_get(admin_port, "/healthz") == std::pair<int, std::string>{200, "ok\n"});
  std::pair<int, std::string> ready;
  for (int i = 0; i < 150 && ready.first != 200; ++i) {
    ready = http_get(admin_port, "/readyz");
    if (ready.first != 200) {
      std::this_thread::sleep_for(100ms);
    }
  }
  INFO(ready.second);
  REQUIRE(ready.first == 200);
  const auto body = boost::json::parse(ready.second).as_object();
  CHECK(body.at("ready").as_bool());
  CHECK(contains(ready.second, "tpm " + tik.simulator.tcti()));

  // Another pod's sidecar: mTLS with a certificate of the clients' CA, and the local verifier
  // appraising this node's TPM quote.
  const temp_dir client_dir;
  const auto out_port = free_port();
  local_peer rules;
  rules.trusted_ak = trusted_pem(write_ak(client_dir, tik, "ak.pem"));
  atlsd client(client_dir, "client",
               header() + outbound("out", out_port, local(attested_port), p, "server.test",
                                   "    attestation:\n" + peer_block(rules),
                                   "      cert: " + (p / "client.crt").string() +
                                       "\n      key: " + (p / "client.key").string() + "\n"));
  const auto fetched = curl_http(out_port);
  INFO(fetched.err);
  INFO(client.log());
  INFO(sidecar.log());
  CHECK(fetched.out == "hello from the workload\n");
  REQUIRE(client.wait_for_log("outcome=ok"));
  CHECK(contains(client.log(), "attestation=\"peer=affirming key=sha256:"));
  // log.audit: json, as the example sets it for the cluster's log collector.
  REQUIRE(sidecar.wait_for_log("{\"event\":\"attestation\",\"listener\":\"web-in\","));
  CHECK(sidecar.stop() == 0);
}

}  // namespace
}  // namespace atls::test
