// The daemon as an operator meets it: configuration checks, start-up failures, signals.
#include "support/daemon.hpp"

#include <chrono>
#include <thread>

#include <doctest/doctest.h>

#include "e2e/configs.hpp"
#include "support/loopback.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

TEST_CASE("atlsd --check accepts a valid config and exits without listening") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const auto port = free_port();
  const auto config = dir.write("ok.yaml", header() + inbound("in", port, local(9), p));
  const auto result = run({ATLSD_BINARY, "--config", config.string(), "--check"}, 15s);
  CHECK(result.exit_code == 0);
  CHECK(result.out.find("OK (1 listener(s))") != std::string::npos);
  CHECK_FALSE(connect_loopback(port));
}

TEST_CASE("atlsd --check prints every config error with its file, line and key") {
  const temp_dir dir;
  const auto config = dir.write("bad.yaml",
                                "listeners:\n"
                                "  - name: in\n"
                                "    mode: inbound\n"
                                "    listen: 127.0.0.1:8443\n"
                                "    upstream: 127.0.0.1:8080\n"
                                "    tls: {cert: a.crt, key: a.key}\n"
                                "    timeouts:\n"
                                "      idle: 10\n"
                                "    max_conections: 5\n");
  const auto result = run({ATLSD_BINARY, "--config", config.string(), "--check"}, 15s);
  CHECK(result.exit_code == 1);
  INFO(result.err);
  const auto file = config.string();
  CHECK(result.err.find(file + ":8:") != std::string::npos);  // duration without a unit
  CHECK(result.err.find("listeners[0].timeouts.idle") != std::string::npos);
  CHECK(result.err.find(file + ":9:") != std::string::npos);  // unknown key, with a suggestion
  CHECK(result.err.find("max_connections") != std::string::npos);
  CHECK(result.err.find("2 error(s)") != std::string::npos);
}

TEST_CASE("atlsd --check reports an unreadable key file at the key that names it") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const auto config =
      dir.write("missing.yaml",
                "listeners:\n"
                "  - name: in\n"
                "    mode: inbound\n"
                "    listen: 127.0.0.1:8443\n"
                "    upstream: 127.0.0.1:8080\n"
                "    tls:\n"
                "      cert: " +
                    (p / "server.crt").string() + "\n" + "      key: does-not-exist.key\n");
  const auto result = run({ATLSD_BINARY, "--config", config.string(), "--check"}, 15s);
  CHECK(result.exit_code == 1);
  INFO(result.err);
  CHECK(result.err.find(config.string() + ":8:") != std::string::npos);
  CHECK(result.err.find("private key cannot be used") != std::string::npos);
  CHECK(result.err.find((dir / "does-not-exist.key").string()) != std::string::npos);
}

TEST_CASE(
    "atlsd --check and atlsctl config check agree on a key that does not match its certificate") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  auto yaml = header() + inbound("in", free_port(), local(9), p);
  const auto key_at = yaml.find((p / "server.key").string());
  REQUIRE(key_at != std::string::npos);
  yaml.replace(key_at, (p / "server.key").string().size(), (p / "client.key").string());
  const auto config = dir.write("mismatch.yaml", yaml);

  const auto atlsd_result = run({ATLSD_BINARY, "--config", config.string(), "--check"}, 15s);
  const auto atlsctl_result = run({ATLSCTL_BINARY, "config", "check", config.string()}, 15s);
  CHECK(atlsd_result.exit_code == 1);
  CHECK(atlsctl_result.exit_code == 1);
  CHECK(atlsd_result.err.find("private key does not match the certificate") != std::string::npos);
  CHECK(atlsctl_result.err.find("private key does not match the certificate") != std::string::npos);
}

TEST_CASE("start-up fails with a clear message when a listen address is taken") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server occupant([](int) {});
  const auto config =
      dir.write("busy.yaml", header() + inbound("in", occupant.port(), local(9), p));
  const auto result = run({ATLSD_BINARY, "--config", config.string()}, 15s);
  CHECK(result.exit_code == 1);
  CHECK(result.err.find("cannot listen: Address already in use: listener 'in' on " +
                        local(occupant.port())) != std::string::npos);
}

TEST_CASE("SIGTERM stops accepting and lets an open connection finish") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const std::string reply = "finished after the signal\n";
  loopback_server origin([&](int fd) {
    (void)receive_all(fd);  // the request ends with the client's half-close
    send_all(fd, reply);
  });
  const auto port = free_port();
  atlsd in(dir, "in", header() + inbound("in", port, local(origin.port()), p));

  tls_client client({.port = port, .ca = p / "ca.crt", .io_timeout = 10s});
  REQUIRE(client.handshake());
  REQUIRE(client.write("part one, "));

  in.stop(SIGTERM, 0ms);
  const auto notification = in.next_notification(5s);
  REQUIRE(notification);
  CHECK(notification->find("STOPPING=1") != std::string::npos);
  // New connections are refused once the listener closed.
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    refused = !connect_loopback(port);
    std::this_thread::sleep_for(20ms);
  }
  CHECK(refused);

  // The open connection still works to the end.
  REQUIRE(client.write("part two"));
  CHECK(client.shutdown_send());
  CHECK(client.read_all() == reply);
  const auto code = in.wait_exit(10s);
  CHECK(code == 0);
  CHECK(in.log().find("outcome=ok") != std::string::npos);
}

TEST_CASE("connections still open at the drain timeout are aborted and atlsd exits 0") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin([](int fd) { (void)receive_all(fd); });
  const auto port = free_port();
  atlsd in(dir, "in",
           "drain_timeout: 500ms\nlisteners:\n" + inbound("in", port, local(origin.port()), p));

  tls_client client({.port = port, .ca = p / "ca.crt", .io_timeout = 10s});
  REQUIRE(client.handshake());
  REQUIRE(client.write("hello"));
  const auto started = std::chrono::steady_clock::now();
  const auto code = in.stop(SIGTERM, 10s);
  CHECK(code == 0);
  CHECK(std::chrono::steady_clock::now() - started < 4s);
  CHECK(client.closed_by_server());
  CHECK(in.log().find("outcome=aborted reason=\"drain timeout\"") != std::string::npos);
}

}  // namespace
}  // namespace atls::test
