// TLS with the private key inside the TPM (the TIK), end to end: atlsctl makes the CSR, the test
// CA issues the certificate, atlsd serves or presents it, and real OpenSSL peers check the
// TPM's signatures. swtpm plays the TPM.
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include "e2e/configs.hpp"
#include "e2e/s_server.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include "support/swtpm.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// An inbound listener whose certificate is the TIK's and whose key is tpm:tik.
std::string tik_inbound(std::uint16_t port, std::uint16_t origin, const tpm_identity& tik) {
  return "  - name: in\n    mode: inbound\n    listen: " + local(port) +
         "\n    upstream: " + local(origin) + "\n    tls:\n      cert: " + tik.cert.string() +
         "\n      key: tpm:tik\n";
}

run_result s_client(const pki& p, std::uint16_t port, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {"openssl",
                                   "s_client",
                                   "-connect",
                                   local(port),
                                   "-tls1_3",
                                   "-servername",
                                   "server.test",
                                   "-CAfile",
                                   (p / "ca.crt").string(),
                                   "-verify_return_error"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return run(argv, 15s);
}

// The public key of the first certificate in PEM text, as PEM.
std::string public_key_of_certificate(const temp_dir& dir, const std::string& pem_text) {
  const auto begin = pem_text.find("-----BEGIN CERTIFICATE-----");
  const std::string end_marker = "-----END CERTIFICATE-----";
  const auto end = pem_text.find(end_marker, begin);
  REQUIRE(begin != std::string::npos);
  REQUIRE(end != std::string::npos);
  const auto file = dir / "presented.crt";
  std::ofstream(file) << pem_text.substr(begin, end + end_marker.size() - begin) << "\n";
  const auto key = run({"openssl", "x509", "-in", file.string(), "-pubkey", "-noout"}, 15s);
  REQUIRE(key.exit_code == 0);
  return key.out;
}

TEST_CASE("openssl s_client completes TLS 1.3 with an inbound listener whose key is in the TPM") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("served with a TPM key\n"));
  const auto port = free_port();
  atlsd in(dir, "in", header(tik.config()) + tik_inbound(port, origin.port(), tik));

  // -verify_return_error: the handshake only completes if the CertificateVerify signature
  // checks out against the certificate, whose key is the TIK.
  const auto hello = s_client(p, port, {"-brief"});
  INFO(hello.err);
  CHECK(hello.exit_code == 0);
  CHECK(contains(hello.err, "Protocol version: TLSv1.3"));
  CHECK(contains(hello.err, "Signature type: ECDSA"));
  CHECK(contains(hello.err, "Verification: OK"));

  const auto full = s_client(p, port);
  REQUIRE(full.exit_code == 0);
  CHECK(public_key_of_certificate(dir, full.out) == tik.tik_public_pem);

  const auto fetched = run({"curl", "-sS", "--max-time", "10", "--cacert", (p / "ca.crt").string(),
                            "--resolve", "server.test:" + std::to_string(port) + ":127.0.0.1",
                            "https://server.test:" + std::to_string(port) + "/"},
                           15s);
  INFO(fetched.err);
  CHECK(fetched.out == "served with a TPM key\n");
}

TEST_CASE("an outbound listener authenticates to openssl s_server with a client key in the TPM") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:client.test", "clientAuth");
  // s_server refuses the handshake unless the client's certificate chains to the CA and its
  // CertificateVerify, made by the TPM, verifies.
  s_server server(
      dir, p,
      {"-tls1_3", "-Verify", "1", "-verify_return_error", "-CAfile", (p / "ca.crt").string()});
  const auto port = free_port();
  const std::string client_identity = "      cert: " + tik.cert.string() + "\n      key: tpm:tik\n";
  atlsd out(dir, "out",
            header(tik.config()) +
                outbound("out", port, local(server.port), p, "server.test", "", client_identity));

  const auto page = curl_http(port);
  INFO(page.err);
  CHECK(page.exit_code == 0);
  CHECK(contains(page.out, "Client certificate"));
  CHECK(contains(page.out, "DNS:client.test"));
  CHECK(contains(page.out, "Protocol  : TLSv1.3"));
}

TEST_CASE("with the TPM down a TPM-keyed listener refuses handshakes, and serves again once back") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("ok\n"));
  const auto port = free_port();
  atlsd in(dir, "in", header(tik.config()) + tik_inbound(port, origin.port(), tik));
  REQUIRE(s_client(p, port, {"-brief"}).exit_code == 0);
  REQUIRE(in.wait_for_log("outcome=ok"));
  const auto forwarded = origin.accepted();

  tik.simulator.kill();
  const auto refused = s_client(p, port, {"-brief"});
  CHECK(refused.exit_code != 0);
  CHECK(in.wait_for_log("outcome=error"));
  CHECK(contains(in.log(), "signing in the TPM failed"));
  CHECK(origin.accepted() == forwarded);

  tik.simulator.start();
  const auto back = s_client(p, port, {"-brief"});
  INFO(back.err);
  CHECK(back.exit_code == 0);
  CHECK(contains(back.err, "Verification: OK"));
}

TEST_CASE("a handshake waiting for the TPM does not hold up other connections on its thread") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  loopback_server origin(http_responder("not blocked\n"));
  const auto tpm_port = free_port();
  const auto file_port = free_port();
  // One connection thread: both listeners' connections share it.
  const std::string config = "log:\n  level: debug\nthreads: 1\n" + tik.config() + "listeners:\n" +
                             tik_inbound(tpm_port, origin.port(), tik) +
                             inbound("file", file_port, local(origin.port()), p);
  atlsd both(dir, "both", config);

  tik.simulator.freeze();
  process waiting({.argv = {"openssl", "s_client", "-connect", local(tpm_port), "-tls1_3",
                            "-servername", "server.test", "-CAfile", (p / "ca.crt").string(),
                            "-verify_return_error", "-brief"},
                   .stderr_file = dir / "waiting.err"});
  // The TPM-keyed handshake is now paused inside the TPM's signature (or about to be).
  std::this_thread::sleep_for(300ms);
  const auto other = run({"curl", "-sS", "--max-time", "5", "--cacert", (p / "ca.crt").string(),
                          "--resolve", "server.test:" + std::to_string(file_port) + ":127.0.0.1",
                          "https://server.test:" + std::to_string(file_port) + "/"},
                         10s);
  INFO(other.err);
  CHECK(other.out == "not blocked\n");
  CHECK(waiting.running());

  tik.simulator.thaw();
  CHECK(waiting.wait_for(10s) == 0);
}

TEST_CASE("atlsd --check points at tls.key when the TPM holding the key cannot be reached") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const auto dead_port = free_port();
  const auto config = dir / "in.yaml";
  std::ofstream(config) << "tpm:\n  tcti: \"swtpm:host=127.0.0.1,port=" << dead_port << "\"\n"
                        << "listeners:\n  - name: in\n    mode: inbound\n    listen: "
                        << local(free_port()) << "\n    upstream: 127.0.0.1:9\n    tls:\n"
                        << "      cert: " << (p / "server.crt").string() << "\n"
                        << "      key: tpm:tik\n";
  const auto checked = run({ATLSD_BINARY, "--config", config.string(), "--check"}, 30s);
  CHECK(checked.exit_code == 1);
  CHECK(contains(checked.err, config.string() + ":10:12: listeners[0].tls.key: "));
  CHECK(contains(checked.err, "TPM key 0x81000101 via swtpm:host=127.0.0.1,port="));
}

TEST_CASE("a certificate that is not the TIK's is refused for key tpm:tik") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  const auto config = dir / "in.yaml";
  // server.crt certifies a software key, not the TIK.
  std::ofstream(config) << tik.config() << "listeners:\n  - name: in\n    mode: inbound\n"
                        << "    listen: " << local(free_port()) << "\n    upstream: 127.0.0.1:9\n"
                        << "    tls:\n      cert: " << (p / "server.crt").string() << "\n"
                        << "      key: tpm:tik\n";
  const auto checked = run({ATLSD_BINARY, "--config", config.string(), "--check"}, 30s);
  CHECK(checked.exit_code == 1);
  CHECK(contains(checked.err, "listeners[0].tls.key: private key does not match the certificate"));
}

}  // namespace
}  // namespace atls::test
