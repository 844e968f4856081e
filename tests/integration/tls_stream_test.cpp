// tls::stream against itself over a socket pair: the properties the relay depends on.
#include <chrono>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <doctest/doctest.h>
#include <openssl/ssl.h>

#include "atls/tls/context.hpp"
#include "atls/tls/error.hpp"
#include "atls/tls/stream.hpp"

#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include "support/temp_dir.hpp"
#include <sys/socket.h>

namespace atls::tls {
namespace {

namespace asio = boost::asio;
using asio::experimental::awaitable_operators::operator&&;
using namespace std::chrono_literals;
using socket_type = asio::generic::stream_protocol::socket;

// Two connected streams, client and server, over a unix socket pair whose kernel buffers are
// as small as Linux allows, so that writers block early.
struct stream_pair {
  explicit stream_pair(const test::pki& p)
      : server_ctx(
            context::make_server({.cert_chain = p / "server.crt", .private_key = p / "server.key"})
                .value()),
        client_ctx(
            context::make_client({.ca = p / "ca.crt", .server_name = "server.test"}).value()) {
    asio::local::stream_protocol::socket a(io);
    asio::local::stream_protocol::socket b(io);
    asio::local::connect_pair(a, b);
    for (auto* s : {&a, &b}) {
      const int size = 4096;
      setsockopt(s->native_handle(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
      setsockopt(s->native_handle(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    const asio::generic::stream_protocol protocol(AF_UNIX, 0);
    server.emplace(socket_type(io, protocol, a.release()), server_ctx);
    client.emplace(socket_type(io, protocol, b.release()), client_ctx);
  }

  // Runs the coroutine that body() returns to completion, failing the test if it takes longer
  // than the limit. co_spawn owns body, so its captures outlive every suspension.
  template <class Body>
  void run(Body body, std::chrono::seconds limit = 60s) {
    bool done = false;
    asio::co_spawn(io, std::move(body), [&done](const std::exception_ptr& e) {
      done = true;
      CHECK_FALSE(e);
    });
    io.run_for(limit);
    REQUIRE_MESSAGE(done, "timed out: the streams stopped making progress");
  }

  asio::io_context io;
  context server_ctx;
  context client_ctx;
  std::optional<stream> server;
  std::optional<stream> client;
};

asio::awaitable<void> handshake(stream& client, stream& server) {
  auto [c, s] = co_await (client.handshake() && server.handshake());
  REQUIRE_FALSE(c);
  REQUIRE_FALSE(s);
}

asio::awaitable<void> send(stream& s, std::uint64_t seed, std::size_t size) {
  const auto data = test::pattern_bytes(seed, size);
  REQUIRE_FALSE(co_await s.write(asio::buffer(data)));
  REQUIRE_FALSE(co_await s.shutdown_send());
}

asio::awaitable<void> receive(stream& s, std::string& out) {
  std::array<char, 16384> buffer{};
  for (;;) {
    auto [ec, n] = co_await s.read_some(asio::buffer(buffer));
    if (ec == asio::error::eof) {
      co_return;
    }
    REQUIRE_FALSE(ec);
    out.append(buffer.data(), n);
  }
}

TEST_CASE("both ends send and receive 8 MiB at once over tiny socket buffers without stalling") {
  // A TLS stream whose read side waits for its own output to drain deadlocks here: each end
  // stops reading while its writes wait for the other end to read.
  constexpr std::size_t size = 8u << 20;
  const test::temp_dir dir;
  stream_pair pair(test::make_pki(dir));
  std::string at_server;
  std::string at_client;
  pair.run([&]() -> asio::awaitable<void> {
    co_await handshake(*pair.client, *pair.server);
    co_await (send(*pair.client, 1, size) && receive(*pair.server, at_server) &&
              send(*pair.server, 2, size) && receive(*pair.client, at_client));
  });
  CHECK(at_server.size() == size);
  CHECK(at_client.size() == size);
  CHECK(at_server == test::pattern_bytes(1, size));
  CHECK(at_client == test::pattern_bytes(2, size));
}

// Sends `size` bytes in chunks, asking the peer for a KeyUpdate every few chunks: the peer
// answers with a KeyUpdate of its own, which OpenSSL queues for its next write.
asio::awaitable<void> send_with_key_updates(stream& s, std::uint64_t seed, std::size_t size) {
  const auto data = test::pattern_bytes(seed, size);
  constexpr std::size_t chunk = 64 * 1024;
  for (std::size_t at = 0, round = 0; at < size; at += chunk, ++round) {
    if (round % 4 == 3) {
      REQUIRE(SSL_key_update(s.native_handle(), SSL_KEY_UPDATE_REQUESTED) == 1);
    }
    const auto n = std::min(chunk, size - at);
    REQUIRE_FALSE(co_await s.write(asio::buffer(data.data() + at, n)));
  }
  REQUIRE_FALSE(co_await s.shutdown_send());
}

TEST_CASE("KeyUpdate requests from both ends mid-transfer are answered in order, with no stall") {
  // Each end changes its receiving keys while the other's records are in flight and its sending
  // keys between two of its own writes: a record out of order, or a stalled direction, shows.
  constexpr std::size_t size = 4u << 20;
  const test::temp_dir dir;
  stream_pair pair(test::make_pki(dir));
  std::string at_server;
  std::string at_client;
  pair.run([&]() -> asio::awaitable<void> {
    co_await handshake(*pair.client, *pair.server);
    co_await (send_with_key_updates(*pair.client, 5, size) && receive(*pair.server, at_server) &&
              send_with_key_updates(*pair.server, 6, size) && receive(*pair.client, at_client));
  });
  CHECK(at_server == test::pattern_bytes(5, size));
  CHECK(at_client == test::pattern_bytes(6, size));
}

TEST_CASE("after close_notify in one direction the other direction still carries data") {
  const test::temp_dir dir;
  stream_pair pair(test::make_pki(dir));
  std::string at_server;
  std::string at_client;
  pair.run([&]() -> asio::awaitable<void> {
    co_await handshake(*pair.client, *pair.server);
    co_await send(*pair.client, 3, 1000);       // request, then the client's half-close
    co_await receive(*pair.server, at_server);  // ends at the client's close_notify
    // The response still flows, and arrives whole.
    co_await (send(*pair.server, 4, 300000) && receive(*pair.client, at_client));
  });
  CHECK(at_server == test::pattern_bytes(3, 1000));
  CHECK(at_client == test::pattern_bytes(4, 300000));
}

TEST_CASE("a TCP close without close_notify is reported as truncation, not as the end") {
  const test::temp_dir dir;
  stream_pair pair(test::make_pki(dir));
  error_code result;
  pair.run([&]() -> asio::awaitable<void> {
    co_await handshake(*pair.client, *pair.server);
    REQUIRE_FALSE(co_await pair.client->write(asio::buffer(std::string("partial"))));
    pair.client->socket().shutdown(socket_type::shutdown_send);  // FIN, no close_notify
    std::array<char, 64> buffer{};
    auto [ec, n] = co_await pair.server->read_some(asio::buffer(buffer));
    REQUIRE_FALSE(ec);
    CHECK(std::string(buffer.data(), n) == "partial");
    auto [ec2, n2] = co_await pair.server->read_some(asio::buffer(buffer));
    result = ec2;
    CHECK(n2 == 0);
  });
  CHECK(result == errc::truncated);
}

TEST_CASE("a client that does not trust the server's CA fails the handshake with peer_rejected") {
  const test::temp_dir dir;
  const auto p = test::make_pki(dir);
  stream_pair pair(p);
  auto untrusting =
      context::make_client({.ca = p / "rogue-ca.crt", .server_name = "server.test"}).value();
  stream client(std::move(pair.client->socket()), untrusting);
  error_code client_result;
  error_code server_result;
  pair.run([&]() -> asio::awaitable<void> {
    auto [c, s] = co_await (client.handshake() && pair.server->handshake());
    client_result = c;
    server_result = s;
  });
  CHECK(client_result == errc::peer_rejected);
  CHECK(client.error_detail() == "unable to get local issuer certificate");
  CHECK(server_result == errc::handshake_failed);  // it received the client's alert
}

TEST_CASE(
    "a server whose chain file holds an intermediate is verified by a client trusting the root") {
  const test::temp_dir dir;
  const auto p = test::make_pki(dir);
  bool with_intermediate = true;
  SUBCASE("the chain file: the leaf, then the intermediate") {}
  SUBCASE("the leaf alone: the same client cannot build the chain") {
    with_intermediate = false;
  }
  stream_pair pair(p);
  auto chained =
      context::make_server({.cert_chain = p / (with_intermediate ? "chained-server-chain.crt"
                                                                 : "chained-server.crt"),
                            .private_key = p / "chained-server.key"})
          .value();
  stream server(std::move(pair.server->socket()), chained);
  error_code client_result;
  pair.run([&]() -> asio::awaitable<void> {
    auto [c, s] = co_await (pair.client->handshake() && server.handshake());
    client_result = c;
  });
  if (with_intermediate) {
    CHECK_FALSE(client_result);
  } else {
    CHECK(client_result == errc::peer_rejected);
  }
}

TEST_CASE("a client whose CA file bundles several CAs trusts a server under the last of them") {
  const test::temp_dir dir;
  const auto p = test::make_pki(dir);
  stream_pair pair(p);
  const auto bundle =
      dir.write("bundle.crt", test::read_file(p / "rogue-ca.crt") + test::read_file(p / "ca.crt"));
  auto trusting = context::make_client({.ca = bundle, .server_name = "server.test"}).value();
  stream client(std::move(pair.client->socket()), trusting);
  error_code client_result;
  pair.run([&]() -> asio::awaitable<void> {
    auto [c, s] = co_await (client.handshake() && pair.server->handshake());
    client_result = c;
  });
  CHECK_FALSE(client_result);
}

}  // namespace
}  // namespace atls::tls
