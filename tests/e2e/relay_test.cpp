// The data path end to end: real daemons, real sockets, real peers.
#include <chrono>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include <doctest/doctest.h>

#include "e2e/configs.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include <sys/socket.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;

// An outbound and an inbound sidecar chained to an upstream: client -> out -> in -> upstream.
struct sidecar_pair {
  sidecar_pair(const temp_dir& dir, const pki& p, const std::string& upstream,
               const std::string& listener_extra = "")
      : in_port(free_port()),
        out_port(free_port()),
        inbound_daemon(dir, "in", header() + inbound("in", in_port, upstream, p, listener_extra)),
        outbound_daemon(dir, "out",
                        header() + outbound("out", out_port, local(in_port), p, "server.test",
                                            listener_extra)) {}
  std::uint16_t in_port;
  std::uint16_t out_port;
  atlsd inbound_daemon;
  atlsd outbound_daemon;
};

TEST_CASE("curl reaches a local HTTP server through an outbound and an inbound sidecar") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("hello through attested-tls sidecars\n"));
  sidecar_pair pair(dir, p, local(origin.port()));

  const auto result = curl_http(pair.out_port);
  CHECK(result.exit_code == 0);
  CHECK(result.out == "hello through attested-tls sidecars\n");
  INFO(result.err);

  // One close line per connection on each side, with the negotiated protocol and byte counts.
  CHECK(pair.outbound_daemon.wait_for_log("outcome=ok"));
  CHECK(pair.inbound_daemon.wait_for_log("outcome=ok"));
  CHECK(pair.inbound_daemon.log().find("tls=\"TLSv1.3 ") != std::string::npos);
  CHECK(pair.outbound_daemon.log().find("listener=out") != std::string::npos);
}

TEST_CASE(
    "a client that reads its answer and goes away before the upstream closes is a clean close") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  // The origin answers, then keeps its end open a while before closing it.
  loopback_server origin([](int fd) {
    std::string request(64, '\0');
    (void)::recv(fd, request.data(), request.size(), 0);
    send_all(fd, "answer");
    std::this_thread::sleep_for(500ms);
  });
  sidecar_pair pair(dir, p, local(origin.port()));

  auto client = connect_loopback(pair.out_port);
  REQUIRE(client);
  REQUIRE(send_all(client.get(), "question"));
  ::shutdown(client.get(), SHUT_WR);
  std::string answer(6, '\0');
  REQUIRE(::recv(client.get(), answer.data(), answer.size(), MSG_WAITALL) == 6);
  CHECK(answer == "answer");
  // Gone for good, with a reset, while the upstream still holds its end: the upstream's close
  // later has nobody to pass its half-close to, which is the end of a finished exchange.
  const linger abrupt{.l_onoff = 1, .l_linger = 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &abrupt, sizeof abrupt);
  client.reset();

  REQUIRE(pair.outbound_daemon.wait_for_log("connection closed listener=out "));
  const auto log = pair.outbound_daemon.log();
  INFO(log);
  CHECK(log.find("outcome=ok") != std::string::npos);
  CHECK(log.find("outcome=error") == std::string::npos);
}

TEST_CASE("an inbound sidecar forwards to a unix socket upstream") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const auto socket_path = dir / "app.sock";
  loopback_server origin(http_responder("over a unix socket\n"), socket_path);
  sidecar_pair pair(dir, p, "unix:" + socket_path.string());

  const auto result = curl_http(pair.out_port);
  CHECK(result.exit_code == 0);
  CHECK(result.out == "over a unix socket\n");
}

TEST_CASE("64 MiB in each direction at once arrive byte-identical through the pair") {
  constexpr std::size_t size = 64u << 20;
  const temp_dir dir;
  const auto p = make_pki(dir);

  // The upstream sends its own 64 MiB while it receives the client's.
  std::promise<stream_digest> upstream_received;
  std::promise<stream_digest> upstream_sent;
  loopback_server origin([&](int fd) {
    auto sender = std::async(std::launch::async, [fd] {
      auto sent = send_pattern(fd, 2, size);
      ::shutdown(fd, SHUT_WR);
      return sent;
    });
    upstream_received.set_value(receive_digest(fd));
    upstream_sent.set_value(sender.get());
  });
  sidecar_pair pair(dir, p, local(origin.port()));

  auto fd = connect_loopback(pair.out_port, 60s);
  REQUIRE(fd);
  auto sender = std::async(std::launch::async, [&fd] {
    auto sent = send_pattern(fd.get(), 1, size);
    ::shutdown(fd.get(), SHUT_WR);
    return sent;
  });
  const auto client_received = receive_digest(fd.get());
  const auto client_sent = sender.get();

  auto received_future = upstream_received.get_future();
  auto sent_future = upstream_sent.get_future();
  REQUIRE(received_future.wait_for(60s) == std::future_status::ready);
  REQUIRE(sent_future.wait_for(60s) == std::future_status::ready);
  const auto origin_received = received_future.get();
  const auto origin_sent = sent_future.get();

  CHECK(client_sent.bytes == size);
  CHECK(origin_sent.bytes == size);
  CHECK(origin_received.bytes == size);
  CHECK(client_received.bytes == size);
  CHECK(origin_received.sha256 == client_sent.sha256);
  CHECK(client_received.sha256 == origin_sent.sha256);

  const auto expected_counts =
      "client_to_upstream=" + std::to_string(size) + " upstream_to_client=" + std::to_string(size);
  CHECK(pair.inbound_daemon.wait_for_log(expected_counts));
  CHECK(pair.outbound_daemon.wait_for_log(expected_counts));
}

TEST_CASE("several bulk transfers at once, both ways, all arrive intact") {
  // Both sidecars relay full-duplex bulk data on several connections at once: the load under
  // which a relay that waits to write before it reads deadlocks.
  constexpr std::size_t size = 16u << 20;
  constexpr std::uint64_t connections = 4;
  constexpr std::uint64_t origin_seed = 99;
  const temp_dir dir;
  const auto p = make_pki(dir);
  std::mutex mutex;
  std::multiset<std::string> origin_received;
  loopback_server origin([&](int fd) {
    auto sender = std::async(std::launch::async, [fd] {
      (void)send_pattern(fd, origin_seed, size);
      ::shutdown(fd, SHUT_WR);
    });
    auto received = receive_digest(fd);
    sender.get();
    const std::lock_guard lock(mutex);
    origin_received.insert(std::to_string(received.bytes) + " " + received.sha256);
  });
  sidecar_pair pair(dir, p, local(origin.port()));

  std::vector<std::future<stream_digest>> clients;
  for (std::uint64_t i = 0; i < connections; ++i) {
    clients.push_back(std::async(std::launch::async, [&pair, i] {
      auto fd = connect_loopback(pair.out_port, 60s);
      if (!fd) {
        return stream_digest{};
      }
      auto sender = std::async(std::launch::async, [&fd, i] {
        (void)send_pattern(fd.get(), i, size);
        ::shutdown(fd.get(), SHUT_WR);
      });
      auto received = receive_digest(fd.get());
      sender.get();
      return received;
    }));
  }
  std::multiset<std::string> expected_at_origin;
  for (std::uint64_t i = 0; i < connections; ++i) {
    REQUIRE(clients[i].wait_for(90s) == std::future_status::ready);
    const auto received = clients[i].get();
    CHECK(received.bytes == size);
    CHECK(received.sha256 == pattern_digest(origin_seed, size));
    expected_at_origin.insert(std::to_string(size) + " " + pattern_digest(i, size));
  }
  CHECK(pair.inbound_daemon.wait_for_log("id=" + std::to_string(connections) + " "));
  const std::lock_guard lock(mutex);
  CHECK(origin_received == expected_at_origin);
}

TEST_CASE("a client that half-closes after its request still receives the whole response") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const std::string request = "request body that ends with the client's FIN";
  const auto response = pattern_bytes(7, 1u << 20);

  // This upstream answers only after it saw the end of the request: the half-close must have
  // crossed both sidecars for the response to start at all.
  std::promise<std::string> seen;
  loopback_server origin([&](int fd) {
    seen.set_value(receive_all(fd));
    send_all(fd, response);
  });
  sidecar_pair pair(dir, p, local(origin.port()));

  auto fd = connect_loopback(pair.out_port);
  REQUIRE(fd);
  REQUIRE(send_all(fd.get(), request));
  ::shutdown(fd.get(), SHUT_WR);
  const auto received = receive_all(fd.get());

  auto seen_future = seen.get_future();
  REQUIRE(seen_future.wait_for(10s) == std::future_status::ready);
  CHECK(seen_future.get() == request);
  CHECK(received.size() == response.size());
  CHECK(received == response);
}

TEST_CASE("with the upstream down, the client is closed promptly and other clients are served") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("still serving\n"));
  const auto dead_port = free_port();  // nothing listens here
  const auto in_port = free_port();
  const auto dead_in_port = free_port();
  const auto out_port = free_port();
  const auto dead_out_port = free_port();
  atlsd in(dir, "in",
           header() + inbound("in", in_port, local(origin.port()), p) +
               inbound("in-dead", dead_in_port, local(dead_port), p));
  atlsd out(dir, "out",
            header() + outbound("out", out_port, local(in_port), p) +
                outbound("out-dead", dead_out_port, local(dead_port), p));

  // Outbound: the workload's connection ends as soon as the connect is refused.
  for (int i = 0; i < 3; ++i) {
    auto fd = connect_loopback(dead_out_port, 5s);
    REQUIRE(fd);
    const auto started = std::chrono::steady_clock::now();
    CHECK(closed_by_peer(fd.get()));
    CHECK(std::chrono::steady_clock::now() - started < 2s);
  }
  // Inbound: the TLS client is served a handshake, then closed when the upstream refuses.
  tls_client client({.port = dead_in_port, .ca = p / "ca.crt", .io_timeout = 5s});
  REQUIRE(client.handshake());
  const auto started = std::chrono::steady_clock::now();
  CHECK(client.closed_by_server());
  CHECK(std::chrono::steady_clock::now() - started < 2s);

  CHECK(out.wait_for_log("listener=out-dead"));
  CHECK(out.log().find("Connection refused") != std::string::npos);
  CHECK(in.wait_for_log("listener=in-dead"));

  // The same daemons keep serving their healthy listeners.
  const auto result = curl_http(out_port);
  CHECK(result.exit_code == 0);
  CHECK(result.out == "still serving\n");
}

}  // namespace
}  // namespace atls::test
