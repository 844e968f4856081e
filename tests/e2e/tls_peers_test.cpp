// Interoperability and refusal with real TLS peers: openssl s_client/s_server and curl.
#include <chrono>
#include <thread>

#include <doctest/doctest.h>

#include "e2e/configs.hpp"
#include "e2e/s_server.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

std::string client_auth(const pki& p, const std::string& lists = "") {
  return "      client_auth:\n        ca: " + (p / "ca.crt").string() + "\n" + lists;
}

// curl straight to an inbound listener, optionally with a client certificate.
run_result curl_https(const pki& p, std::uint16_t port, const std::string& identity = "") {
  std::vector<std::string> argv = {
      "curl",       "-sS",
      "--max-time", "10",
      "--cacert",   (p / "ca.crt").string(),
      "--resolve",  "server.test:" + std::to_string(port) + ":127.0.0.1"};
  if (!identity.empty()) {
    argv.insert(argv.end(), {"--cert", (p / (identity + ".crt")).string(), "--key",
                             (p / (identity + ".key")).string()});
  }
  argv.push_back("https://server.test:" + std::to_string(port) + "/");
  return run(argv, 15s);
}

TEST_CASE("openssl s_client -tls1_3 negotiates TLS 1.3 with an inbound listener") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("ok\n"));
  const auto port = free_port();
  atlsd in(dir, "in", header() + inbound("in", port, local(origin.port()), p));

  const auto result =
      run({"openssl", "s_client", "-connect", local(port), "-tls1_3", "-servername", "server.test",
           "-CAfile", (p / "ca.crt").string(), "-verify_return_error", "-brief"},
          15s);
  INFO(result.err);
  CHECK(result.exit_code == 0);
  CHECK(result.err.find("Protocol version: TLSv1.3") != std::string::npos);
  CHECK(result.err.find("Verification: OK") != std::string::npos);
}

TEST_CASE("openssl s_client -tls1_2 is refused by an inbound listener") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("ok\n"));
  const auto port = free_port();
  atlsd in(dir, "in", header() + inbound("in", port, local(origin.port()), p));

  const auto result = run({"openssl", "s_client", "-connect", local(port), "-tls1_2", "-servername",
                           "server.test", "-CAfile", (p / "ca.crt").string()},
                          15s);
  CHECK(result.exit_code != 0);
  CHECK(result.err.find("alert protocol version") != std::string::npos);
  CHECK(in.wait_for_log("outcome=error reason=\"tls handshake: TLS handshake failed"));
  CHECK(in.log().find("unsupported protocol") != std::string::npos);
  CHECK(origin.accepted() == 0);
}

TEST_CASE("with client_auth, an allowed client certificate is accepted") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("welcome, client\n"));
  const auto port = free_port();
  atlsd in(dir, "in",
           header() + inbound("in", port, local(origin.port()), p, "",
                              client_auth(p,
                                          "        allow_uris:\n          - "
                                          "spiffe://test.example/ns/default/*\n")));
  const auto result = curl_https(p, port, "client");
  INFO(result.err);
  CHECK(result.exit_code == 0);
  CHECK(result.out == "welcome, client\n");
}

TEST_CASE("with client_auth, a client without a certificate is refused") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("secret\n"));
  const auto port = free_port();
  atlsd in(dir, "in", header() + inbound("in", port, local(origin.port()), p, "", client_auth(p)));

  const auto result = curl_https(p, port);
  CHECK(result.exit_code != 0);
  CHECK(result.out.empty());
  CHECK(
      in.wait_for_log("outcome=rejected reason=\"tls handshake: peer certificate rejected: "
                      "no client certificate\""));
  CHECK(origin.accepted() == 0);
}

TEST_CASE("with client_auth, a client whose names are not allowed is refused") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("secret\n"));
  const auto port = free_port();
  atlsd in(dir, "in",
           header() +
               inbound("in", port, local(origin.port()), p, "",
                       client_auth(p,
                                   "        allow_dns: [client.test]\n"
                                   "        allow_uris: [spiffe://test.example/ns/default/*]\n")));

  const auto intruder = curl_https(p, port, "intruder");
  CHECK(intruder.exit_code != 0);
  CHECK(intruder.out.empty());
  CHECK(
      in.wait_for_log("outcome=rejected reason=\"tls handshake: peer certificate rejected: "
                      "certificate names not in allow_dns/allow_uris\""));

  // Same names, but issued by a CA we do not trust.
  const auto rogue = curl_https(p, port, "rogue-client");
  CHECK(rogue.exit_code != 0);
  CHECK(rogue.out.empty());
  CHECK(in.wait_for_log("unable to get local issuer certificate"));
  CHECK(origin.accepted() == 0);

  // The allowed client still gets through the same listener.
  const auto allowed = curl_https(p, port, "client");
  CHECK(allowed.exit_code == 0);
  CHECK(allowed.out == "secret\n");
}

TEST_CASE("an outbound listener talks TLS 1.3 to openssl s_server") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  s_server server(dir, p, {"-tls1_3"});
  const auto port = free_port();
  atlsd out(dir, "out", header() + outbound("out", port, local(server.port), p));

  const auto result = curl_http(port);
  INFO(result.err);
  CHECK(result.exit_code == 0);
  // s_server -www answers with a page describing the session it negotiated.
  CHECK(result.out.find("Protocol  : TLSv1.3") != std::string::npos);
}

TEST_CASE("an outbound listener refuses a TLS 1.2-only server") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  s_server server(dir, p, {"-tls1_2"});
  const auto port = free_port();
  atlsd out(dir, "out", header() + outbound("out", port, local(server.port), p));

  auto fd = connect_loopback(port, 5s);
  REQUIRE(fd);
  CHECK(send_all(fd.get(), "GET / HTTP/1.0\r\n\r\n"));
  CHECK(receive_all(fd.get()).empty());
  CHECK(out.wait_for_log("outcome=error reason=\"tls handshake: TLS handshake failed"));
}

TEST_CASE("an outbound listener refuses a server whose certificate does not name server_name") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  s_server server(dir, p, {"-tls1_3"});
  const auto port = free_port();
  atlsd out(dir, "out",
            header() + outbound("out", port, local(server.port), p, "somebody-else.test"));

  auto fd = connect_loopback(port, 5s);
  REQUIRE(fd);
  CHECK(send_all(fd.get(), "GET / HTTP/1.0\r\n\r\n"));
  CHECK(receive_all(fd.get()).empty());
  CHECK(
      out.wait_for_log("outcome=rejected reason=\"tls handshake: peer certificate rejected: "
                       "hostname mismatch\""));
}

// An inbound sidecar that requires client.test, behind an outbound sidecar that presents the
// test PKI's `identity` certificate.
struct mutual_tls_pair {
  mutual_tls_pair(const temp_dir& dir, const pki& p, const std::string& identity)
      : origin(http_responder("mutual\n")),
        in_port(free_port()),
        out_port(free_port()),
        in(dir, "in",
           header() + inbound("in", in_port, local(origin.port()), p, "",
                              client_auth(p, "        allow_dns: [client.test]\n"))),
        out(dir, "out",
            header() + outbound("out", out_port, local(in_port), p, "server.test", "",
                                "      cert: " + (p / (identity + ".crt")).string() +
                                    "\n      key: " + (p / (identity + ".key")).string() + "\n")) {}
  loopback_server origin;
  std::uint16_t in_port;
  std::uint16_t out_port;
  atlsd in;
  atlsd out;
};

TEST_CASE("an outbound listener presents its client certificate to a server that requires one") {
  const temp_dir dir;
  mutual_tls_pair pair(dir, make_pki(dir), "client");
  const auto result = curl_http(pair.out_port);
  CHECK(result.exit_code == 0);
  CHECK(result.out == "mutual\n");
}

TEST_CASE("an outbound listener whose client certificate the server refuses logs the refusal") {
  const temp_dir dir;
  mutual_tls_pair pair(dir, make_pki(dir), "intruder");
  const auto result = curl_http(pair.out_port);
  CHECK(result.exit_code != 0);
  CHECK(result.out.empty());
  CHECK(
      pair.out.wait_for_log("outcome=rejected reason=\"upstream read: peer sent a fatal alert: "));
  CHECK(pair.in.wait_for_log("outcome=rejected"));
  CHECK(pair.origin.accepted() == 0);
}

// openssl s_client against an inbound listener, offering `alpn` (comma-separated) if not empty.
run_result s_client_offering(const pki& p, std::uint16_t port, const std::string& alpn) {
  std::vector<std::string> argv = {"openssl",
                                   "s_client",
                                   "-connect",
                                   local(port),
                                   "-servername",
                                   "server.test",
                                   "-CAfile",
                                   (p / "ca.crt").string(),
                                   "-verify_return_error"};
  if (!alpn.empty()) {
    argv.insert(argv.end(), {"-alpn", alpn});
  }
  return run(argv, 15s);
}

TEST_CASE("an inbound listener with alpn picks its own first choice among what the client offers") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("ok\n"));
  const auto port = free_port();
  atlsd in(
      dir, "in",
      header() + inbound("in", port, local(origin.port()), p, "", "      alpn: [h2, http/1.1]\n"));

  SUBCASE("the listener's preference wins over the client's order") {
    const auto result = s_client_offering(p, port, "http/1.1,h2");
    INFO(result.err);
    CHECK(result.exit_code == 0);
    CHECK(result.out.find("ALPN protocol: h2") != std::string::npos);
    CHECK(in.wait_for_log("alpn=h2\""));
  }
  SUBCASE("a client offering only one of them gets that one") {
    const auto result = s_client_offering(p, port, "http/1.1");
    CHECK(result.exit_code == 0);
    CHECK(result.out.find("ALPN protocol: http/1.1") != std::string::npos);
  }
  SUBCASE("a client offering no ALPN is served without it") {
    const auto result = s_client_offering(p, port, "");
    CHECK(result.exit_code == 0);
    CHECK(result.out.find("No ALPN negotiated") != std::string::npos);
  }
}

TEST_CASE("an inbound listener refuses a client that offers none of its alpn protocols") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("ok\n"));
  const auto port = free_port();
  atlsd in(dir, "in",
           header() + inbound("in", port, local(origin.port()), p, "", "      alpn: [h2]\n"));

  const auto result = s_client_offering(p, port, "http/1.1");
  INFO(result.err);
  CHECK(result.exit_code != 0);
  CHECK(result.err.find("no application protocol") != std::string::npos);
  CHECK(in.wait_for_log("outcome=error reason=\"tls handshake: TLS handshake failed"));
  CHECK(origin.accepted() == 0);
}

TEST_CASE("an outbound listener offers its alpn protocols and logs the server's choice") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  s_server server(dir, p, {"-alpn", "h2,http/1.1"});
  const auto port = free_port();
  atlsd out(dir, "out",
            header() + outbound("out", port, local(server.port), p, "server.test", "",
                                "      alpn: [http/1.1]\n"));

  const auto result = curl_http(port);
  INFO(result.err);
  CHECK(result.exit_code == 0);
  CHECK(out.wait_for_log("alpn=http/1.1\""));
}

}  // namespace
}  // namespace atls::test
