// Limits that keep one bad client from hurting the others: connection cap and timeouts.
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "e2e/configs.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;

TEST_CASE("the connection limit holds and a waiting client is served once a slot frees") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("ok\n"));
  const auto port = free_port();
  atlsd in(dir, "in",
           header() + inbound("in", port, local(origin.port()), p, "    max_connections: 2\n"));

  std::vector<std::unique_ptr<tls_client>> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(std::make_unique<tls_client>(
        tls_client_options{.port = port, .ca = p / "ca.crt", .io_timeout = 5s}));
    REQUIRE(held.back()->handshake());
  }

  // The third connection waits in the kernel backlog: TCP connects, TLS gets no answer.
  tls_client third({.port = port, .ca = p / "ca.crt", .io_timeout = 1s});
  CHECK_FALSE(third.handshake());

  held.front().reset();  // frees a slot
  third.set_timeout(10s);
  CHECK(third.handshake());
  CHECK(third.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(third.read_all().find("200 OK") != std::string::npos);
}

TEST_CASE("a client that never finishes its handshake is cut at the handshake timeout") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("ok\n"));
  const auto port = free_port();
  atlsd in(dir, "in",
           header() + inbound("in", port, local(origin.port()), p,
                              "    timeouts:\n      handshake: 500ms\n"));

  auto silent = connect_loopback(port, 10s);
  REQUIRE(silent);
  const auto started = std::chrono::steady_clock::now();
  CHECK(closed_by_peer(silent.get()));
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited >= 400ms);
  CHECK(waited < 3s);
  CHECK(in.wait_for_log("outcome=timeout reason=\"handshake timeout (500ms)\""));
  CHECK(origin.accepted() == 0);  // nothing reached the workload

  // Other clients are unaffected.
  tls_client client({.port = port, .ca = p / "ca.crt"});
  CHECK(client.handshake());
}

TEST_CASE("an idle connection is closed at the idle timeout") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin([](int fd) { (void)receive_all(fd); });
  const auto port = free_port();
  atlsd in(dir, "in",
           header() +
               inbound("in", port, local(origin.port()), p, "    timeouts:\n      idle: 700ms\n"));

  tls_client client({.port = port, .ca = p / "ca.crt", .io_timeout = 10s});
  REQUIRE(client.handshake());
  REQUIRE(client.write("some bytes, then silence"));
  const auto started = std::chrono::steady_clock::now();
  CHECK(client.closed_by_server());
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited >= 500ms);
  CHECK(waited < 5s);
  CHECK(in.wait_for_log("outcome=timeout reason=\"idle timeout (700ms)\""));
}

TEST_CASE("an outbound listener gives up on an upstream that never completes the handshake") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  // Accepts TCP and says nothing: a black hole where a TLS server should be.
  loopback_server black_hole([](int fd) { (void)receive_all(fd); });
  const auto port = free_port();
  atlsd out(dir, "out",
            header() + outbound("out", port, local(black_hole.port()), p, "server.test",
                                "    timeouts:\n      handshake: 500ms\n"));
  auto fd = connect_loopback(port, 10s);
  REQUIRE(fd);
  const auto started = std::chrono::steady_clock::now();
  CHECK(closed_by_peer(fd.get()));
  CHECK(std::chrono::steady_clock::now() - started < 3s);
  CHECK(out.wait_for_log("reason=\"handshake timeout (500ms)\""));
}

TEST_CASE("an upstream that never accepts is abandoned at the connect timeout") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  // A listener that never accepts, with its accept queue filled: Linux then drops further SYNs,
  // so a connect to it neither succeeds nor fails until the caller gives up.
  const socket_fd full(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(full.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(full.get(), 0) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(full.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  const auto full_port = ntohs(addr.sin_port);
  // Non-blocking connects fill the queue without waiting for it: once it is full, a blocking
  // connect would sit in SYN retries for minutes.
  std::vector<socket_fd> queued;
  for (int i = 0; i < 4; ++i) {
    queued.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    (void)::connect(queued.back().get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  }
  std::this_thread::sleep_for(100ms);  // let the kernel complete what it will

  const auto port = free_port();
  atlsd out(dir, "out",
            header() + outbound("out", port, local(full_port), p, "server.test",
                                "    timeouts:\n      connect: 500ms\n"));
  auto fd = connect_loopback(port, 10s);
  REQUIRE(fd);
  const auto started = std::chrono::steady_clock::now();
  CHECK(closed_by_peer(fd.get()));
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited >= 400ms);
  CHECK(waited < 3s);
  CHECK(out.wait_for_log("outcome=timeout reason=\"connect timeout (500ms)\""));
}

}  // namespace
}  // namespace atls::test
