// An inbound listener with `proxy_protocol: v2` tells its workload who called: the client's
// address, its TLS and what it proved by attestation, in a PROXY protocol v2 header before the
// first byte of the request. Checked with an upstream that decodes the header (every TLV), and
// with haproxy from Debian, a real PROXY-v2 receiver, which logs and echoes the client address.
#include "atls/proxy/proxy_protocol.hpp"

#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "atls/common/hex.hpp"

#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "e2e/veraison_fixture.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include "support/process.hpp"
#include <sys/socket.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;
namespace pp2 = proxy::pp2;

bool read_exactly(int fd, std::uint8_t* data, std::size_t size) {
  std::size_t got = 0;
  while (got < size) {
    const auto n = ::recv(fd, data + got, size - got, 0);
    if (n <= 0) {
      return false;
    }
    got += static_cast<std::size_t>(n);
  }
  return true;
}

// What the upstream received on one connection: the header as decoded, and the request that
// followed it.
struct received {
  std::optional<pp2::header> header;  // unset: the first bytes were not a valid header
  std::string request;
};

// An upstream that reads a PROXY v2 header, then one HTTP request, and answers 200.
class header_reader {
 public:
  header_reader() : server_([this](int fd) { serve(fd); }) {}

  [[nodiscard]] std::uint16_t port() const { return server_.port(); }

  [[nodiscard]] std::vector<received> connections() const {
    const std::lock_guard lock(mutex_);
    return seen_;
  }

 private:
  void serve(int fd) {
    received r;
    std::vector<std::uint8_t> bytes(pp2::fixed_size);
    if (read_exactly(fd, bytes.data(), bytes.size())) {
      if (const auto size = pp2::header_size(bytes)) {
        bytes.resize(*size);
        if (read_exactly(fd, bytes.data() + pp2::fixed_size, *size - pp2::fixed_size)) {
          if (auto decoded = pp2::decode(bytes)) {
            r.header = std::move(*decoded);
          }
        }
      }
    }
    std::array<char, 4096> buffer{};
    while (r.request.find("\r\n\r\n") == std::string::npos) {
      const auto n = ::recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0) {
        break;
      }
      r.request.append(buffer.data(), static_cast<std::size_t>(n));
    }
    {
      const std::lock_guard lock(mutex_);
      seen_.push_back(r);
    }
    const std::string body = "who called\n";
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\nConnection: close\r\n\r\n" + body);
    ::shutdown(fd, SHUT_WR);
    (void)receive_all(fd);
  }

  mutable std::mutex mutex_;
  std::vector<received> seen_;
  loopback_server server_;  // last: its threads stop before the members they use go away
};

// The client address atlsd logged for its one connection ("peer=127.0.0.2:40000"), once the
// connection has closed.
boost::asio::ip::tcp::endpoint logged_peer(const atlsd& daemon) {
  REQUIRE(daemon.wait_for_log("connection closed listener=in "));
  const auto log = daemon.log();
  std::smatch match;
  REQUIRE(std::regex_search(log, match, std::regex(R"(peer=([0-9.]+):([0-9]+) )")));
  return {boost::asio::ip::make_address(match[1].str()),
          static_cast<std::uint16_t>(std::stoi(match[2].str()))};
}

boost::asio::ip::tcp::endpoint loopback(std::uint16_t port) {
  return {boost::asio::ip::make_address("127.0.0.1"), port};
}

// curl straight to the inbound listener over TLS, from 127.0.0.2 so that the client address
// differs from the one atlsd itself connects to its upstream from. `more` adds arguments.
run_result curl_https(const pki& p, std::uint16_t port, std::vector<std::string> more = {}) {
  std::vector<std::string> argv = {
      "curl",        "-sS",
      "--max-time",  "10",
      "--interface", "127.0.0.2",
      "--cacert",    (p / "ca.crt").string(),
      "--resolve",   "server.test:" + std::to_string(port) + ":127.0.0.1"};
  argv.insert(argv.end(), more.begin(), more.end());
  argv.push_back("https://server.test:" + std::to_string(port) + "/");
  return run(argv, 15s);
}

std::string with_proxy_protocol() {
  return "    proxy_protocol: v2\n";
}

TEST_CASE("the workload learns a TLS client's address, SNI and TLS version before its request") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  header_reader workload;
  const auto in_port = free_port();
  atlsd in(dir, "in",
           header() + inbound("in", in_port, local(workload.port()), p, with_proxy_protocol()));

  const auto fetched = curl_https(p, in_port);
  INFO(fetched.err);
  INFO(in.log());
  CHECK(fetched.out == "who called\n");
  const auto peer = logged_peer(in);
  CHECK(peer.address().to_string() == "127.0.0.2");

  const auto seen = workload.connections();
  REQUIRE(seen.size() == 1);
  REQUIRE(seen[0].header.has_value());
  const auto& h = *seen[0].header;
  REQUIRE(h.endpoints.has_value());
  CHECK(h.endpoints->source == peer);
  CHECK(h.endpoints->destination == loopback(in_port));
  CHECK(h.authority == "server.test");
  CHECK(h.alpn.empty());  // a listener without `alpn` negotiates none, so there is none to report
  REQUIRE(h.tls.has_value());
  CHECK(h.tls->client == pp2::client_ssl);  // no client certificate
  CHECK(h.tls->verify != 0);
  CHECK(h.tls->version == "TLSv1.3");
  CHECK(contains(in.log(), "tls=\"TLSv1.3 " + h.tls->cipher + "\""));
  REQUIRE(h.attestation.has_value());
  CHECK(h.attestation->status == pp2::attestation_status::unattested);
  CHECK_FALSE(h.attestation->key_sha256.has_value());
  CHECK_FALSE(h.attestation->ear_sha256.has_value());
  // The request follows the header unchanged.
  CHECK(seen[0].request.starts_with("GET / HTTP/1.1\r\n"));
}

TEST_CASE("the workload learns the application protocol the listener negotiated") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  header_reader workload;
  const auto in_port = free_port();
  atlsd in(dir, "in",
           header() + inbound("in", in_port, local(workload.port()), p, with_proxy_protocol(),
                              "      alpn: [http/1.1]\n"));

  // curl offers h2 and http/1.1; the listener's list has only the second.
  const auto fetched = curl_https(p, in_port);
  INFO(fetched.err);
  CHECK(fetched.out == "who called\n");
  const auto seen = workload.connections();
  REQUIRE(seen.size() == 1);
  REQUIRE(seen[0].header.has_value());
  CHECK(seen[0].header->alpn == "http/1.1");
}

TEST_CASE("the workload learns that the client presented a verified certificate") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  header_reader workload;
  const auto in_port = free_port();
  atlsd in(dir, "in",
           header() + inbound("in", in_port, local(workload.port()), p, with_proxy_protocol(),
                              "      client_auth:\n        ca: " + (p / "ca.crt").string() + "\n"));

  const auto fetched = curl_https(
      p, in_port, {"--cert", (p / "client.crt").string(), "--key", (p / "client.key").string()});
  INFO(fetched.err);
  INFO(in.log());
  CHECK(fetched.out == "who called\n");
  const auto seen = workload.connections();
  REQUIRE(seen.size() == 1);
  REQUIRE(seen[0].header.has_value());
  REQUIRE(seen[0].header->tls.has_value());
  CHECK(seen[0].header->tls->client ==
        (pp2::client_ssl | pp2::client_cert_conn | pp2::client_cert_sess));
  CHECK(seen[0].header->tls->verify == 0);
}

TEST_CASE("without proxy_protocol the workload's first bytes are the request") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  header_reader workload;
  const auto in_port = free_port();
  atlsd in(dir, "in", header() + inbound("in", in_port, local(workload.port()), p));
  (void)curl_https(p, in_port);
  const auto seen = workload.connections();
  REQUIRE(seen.size() == 1);
  CHECK_FALSE(seen[0].header.has_value());
}

// The client's machine: its swtpm and TIK certificate, and a Veraison test service that endorses
// it and issues the EARs a passport presents.
struct attesting_client {
  attesting_client()
      : p(make_pki(server_dir)), tik(client_dir, p, "DNS:client.test", "clientAuth") {}

  // The outbound sidecar: it attests with its TIK, as `attestation` (mode and model lines) says.
  [[nodiscard]] std::string outbound_config(std::uint16_t port, std::uint16_t server,
                                            const std::string& attestation, bool passport) const {
    return header(tik.config()) + outbound("out", port, local(server), p, "server.test",
                                           "    attestation:\n" + attestation +
                                               self_block(passport ? veraison.block(8) : ""),
                                           tik_tls(tik));
  }

  // The inbound sidecar: the relying party, RA-only with the client's TIK pinned.
  [[nodiscard]] std::string inbound_config(std::uint16_t port, std::uint16_t upstream,
                                           const std::string& attestation, bool passport) const {
    const auto pin = "        pin: [" + tik.tik_pin() + "]\n";
    const auto peer = passport ? passport_peer_block({.ear_key = veraison.ear_key(), .more = pin})
                               : peer_block({.trusted_ak = trusted_pem(client_ak), .more = pin});
    return header() + inbound("in", port, local(upstream), p,
                              with_proxy_protocol() + "    attestation:\n" + attestation + peer);
  }

  const temp_dir server_dir;
  const temp_dir client_dir;
  const pki p;
  const tpm_identity tik;
  veraison_fixture veraison{client_dir, {&tik}, server_dir / "ear.pem"};
  const std::filesystem::path client_ak = write_ak(server_dir, tik, "client-ak.pem");
};

// Sends one request from the client sidecar and returns the header the workload received.
pp2::header attested_request(const attesting_client& client, const std::string& attestation,
                             bool passport) {
  header_reader workload;
  const auto in_port = free_port();
  const auto out_port = free_port();
  atlsd in(client.server_dir, "in",
           client.inbound_config(in_port, workload.port(), attestation, passport));
  atlsd out(client.client_dir, "out",
            client.outbound_config(out_port, in_port, attestation, passport));
  if (passport) {
    REQUIRE(out.wait_for_log("passport: new attestation result"));
  }
  const auto fetched = curl_http(out_port);
  INFO(fetched.err);
  INFO(out.log());
  INFO(in.log());
  CHECK(fetched.out == "who called\n");
  const auto peer = logged_peer(in);
  const auto seen = workload.connections();
  REQUIRE(seen.size() == 1);
  REQUIRE(seen[0].header.has_value());
  const auto& h = *seen[0].header;
  REQUIRE(h.endpoints.has_value());
  CHECK(h.endpoints->source == peer);
  CHECK(h.endpoints->destination == loopback(in_port));
  CHECK(h.authority == "server.test");
  REQUIRE(h.tls.has_value());
  CHECK(h.tls->version == "TLSv1.3");
  return h;
}

TEST_CASE("the workload learns the client's attested key and the SHA-256 of its EAR") {
  const attesting_client client;
  const auto h = attested_request(client, "      mode: post-handshake\n      model: passport\n",
                                  /*passport=*/true);
  REQUIRE(h.attestation.has_value());
  CHECK(h.attestation->status == pp2::attestation_status::affirming);
  REQUIRE(h.attestation->key_sha256.has_value());
  CHECK(to_hex(*h.attestation->key_sha256) == client.tik.tik_pin());
  // The EAR itself stays in the sidecars; that its digest is there is what can be checked here
  // (the unit tests check the digest's encoding).
  CHECK(h.attestation->ear_sha256.has_value());
}

TEST_CASE("the workload learns the attestation checked inside the TLS handshake") {
  const attesting_client client;
  const auto h =
      attested_request(client, "      mode: intra-handshake\n      model: background-check\n",
                       /*passport=*/false);
  REQUIRE(h.attestation.has_value());
  CHECK(h.attestation->status == pp2::attestation_status::affirming);
  REQUIRE(h.attestation->key_sha256.has_value());
  CHECK(to_hex(*h.attestation->key_sha256) == client.tik.tik_pin());
  // The local verifier signs no EAR.
  CHECK_FALSE(h.attestation->ear_sha256.has_value());
  // The client attests in its Certificate, so it presented one; with no client CA (RA-only, the
  // key pinned) no chain was checked, and <verify> must not claim that one was.
  REQUIRE(h.tls.has_value());
  CHECK(h.tls->client == (pp2::client_ssl | pp2::client_cert_conn | pp2::client_cert_sess));
  CHECK(h.tls->verify != 0);
}

TEST_CASE("haproxy behind an inbound sidecar sees the client's address and SNI, not atlsd's") {
  const std::filesystem::path haproxy_binary = "/usr/sbin/haproxy";
  INFO("deploy/setup.sh installs haproxy from Debian");
  REQUIRE(std::filesystem::exists(haproxy_binary));
  const temp_dir dir;
  const auto p = make_pki(dir);
  const auto haproxy_port = free_port();
  const auto config = dir / "haproxy.cfg";
  std::ofstream(config)
      << "global\n  log stdout format raw local0\n  maxconn 64\n\n"
      << "defaults\n  mode http\n  log global\n  timeout connect 5s\n  timeout client 10s\n"
      << "  timeout server 10s\n\n"
      << "frontend workload\n  bind 127.0.0.1:" << haproxy_port << " accept-proxy\n"
      << "  log-format \"haproxy client=%ci:%cp authority=%[fc_pp_authority] status=%ST\"\n"
      << "  http-request return status 200 content-type text/plain lf-string "
         "\"client=%[src]:%[src_port] authority=%[fc_pp_authority]\\n\"\n";
  const auto haproxy_log = dir / "haproxy.log";
  process haproxy({.argv = {haproxy_binary.string(), "-db", "-f", config.string()},
                   .stdout_file = haproxy_log,
                   .stderr_file = dir / "haproxy.err"});
  const auto started = std::chrono::steady_clock::now();
  while (!connect_loopback(haproxy_port, 1s)) {
    REQUIRE(std::chrono::steady_clock::now() - started < 10s);
    std::this_thread::sleep_for(50ms);
  }
  const auto in_port = free_port();
  atlsd in(dir, "in",
           header() + inbound("in", in_port, local(haproxy_port), p, with_proxy_protocol()));

  const auto fetched = curl_https(p, in_port);
  INFO(fetched.err);
  INFO(in.log());
  const auto peer = logged_peer(in);
  const auto client = "127.0.0.2:" + std::to_string(peer.port());
  CHECK(fetched.out == "client=" + client + " authority=server.test\n");
  std::string logged;
  for (int i = 0; i < 100 && !contains(logged, "status=200"); ++i) {
    std::this_thread::sleep_for(50ms);
    std::ifstream in_log(haproxy_log);
    logged.assign(std::istreambuf_iterator<char>(in_log), {});
  }
  INFO(logged);
  CHECK(contains(logged, "haproxy client=" + client + " authority=server.test status=200"));
  haproxy.signal(SIGTERM);
  CHECK(haproxy.wait_for(10s).has_value());
}

}  // namespace
}  // namespace atls::test
