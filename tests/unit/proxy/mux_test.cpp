// HTTP/2 CONNECT tunnels (proxy/mux.hpp) between two ends of a socket pair: what a workload
// connection relies on when it rides on a tunnel.
#include "atls/proxy/mux.hpp"

#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <doctest/doctest.h>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using atls::error_code;
namespace mux = atls::proxy::mux;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// The completion of a spawned test coroutine: a failed assertion inside it fails the test.
void rethrow(const std::exception_ptr& e) {
  if (e) {
    std::rethrow_exception(e);
  }
}

class socket_transport final : public mux::transport {
 public:
  explicit socket_transport(asio::local::stream_protocol::socket& socket) : socket_(socket) {}
  asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
      asio::mutable_buffer buffer) override {
    return socket_.async_read_some(buffer, use_tuple);
  }
  asio::awaitable<error_code> write(asio::const_buffer buffer) override {
    auto [ec, n] = co_await asio::async_write(socket_, buffer, use_tuple);
    (void)n;
    co_return ec;
  }
  [[nodiscard]] const std::string& error_detail() const override { return none_; }

 private:
  asio::local::stream_protocol::socket& socket_;
  std::string none_;
};

// Two tunnels over a socket pair, run on one io_context.
struct tunnel_pair {
  asio::io_context io;
  asio::local::stream_protocol::socket client_socket{io};
  asio::local::stream_protocol::socket server_socket{io};
  socket_transport client_transport{client_socket};
  socket_transport server_transport{server_socket};
  std::shared_ptr<mux::tunnel> client;
  std::shared_ptr<mux::tunnel> server;
  error_code client_end;
  error_code server_end;
  bool client_ended = false;
  bool server_ended = false;

  explicit tunnel_pair(const mux::limits& limits = {}) {
    asio::local::connect_pair(client_socket, server_socket);
    client = mux::tunnel::make(io.get_executor(), mux::tunnel::role::client, limits);
    server = mux::tunnel::make(io.get_executor(), mux::tunnel::role::server, limits);
    asio::co_spawn(io, client->run(client_transport), [this](std::exception_ptr e, error_code ec) {
      REQUIRE(!e);
      client_end = ec;
      client_ended = true;
    });
    asio::co_spawn(io, server->run(server_transport), [this](std::exception_ptr e, error_code ec) {
      REQUIRE(!e);
      server_end = ec;
      server_ended = true;
    });
  }

  template <class F>
  void run(F body) {
    bool done = false;
    asio::co_spawn(io, std::move(body), [&](std::exception_ptr e) {
      done = true;
      if (e) {
        std::rethrow_exception(e);
      }
    });
    io.run_for(10s);
    REQUIRE(done);
  }
};

std::vector<std::uint8_t> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) {
    b = static_cast<std::uint8_t>(gen());
  }
  return out;
}

// Everything the stream delivers until EOF (or an error, returned).
asio::awaitable<std::tuple<error_code, std::vector<std::uint8_t>>> read_all(mux::stream& s) {
  std::vector<std::uint8_t> got;
  std::array<std::uint8_t, 7000> chunk{};
  for (;;) {
    auto [ec, n] = co_await s.read_some(asio::buffer(chunk));
    if (ec == asio::error::eof) {
      co_return std::tuple{error_code{}, std::move(got)};
    }
    if (ec) {
      co_return std::tuple{ec, std::move(got)};
    }
    got.insert(got.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
  }
}

}  // namespace

TEST_CASE("a tunnelled stream carries bytes both ways and passes each half-close on") {
  tunnel_pair pair;
  // Beyond one stream window, so that flow control has to open it as the reader takes bytes.
  const auto up = random_bytes(3'000'000, 1);
  const auto down = random_bytes(100'000, 2);
  std::vector<std::uint8_t> got_up;
  std::vector<std::uint8_t> got_down;
  std::string authority;
  bool server_done = false;
  asio::co_spawn(
      pair.io,
      [&]() -> asio::awaitable<void> {
        auto accepted = co_await pair.server->accept();
        REQUIRE(accepted);
        auto& s = **accepted;
        authority = s.authority();
        s.accept();
        auto [ec, data] = co_await read_all(s);
        CHECK(!ec);
        got_up = std::move(data);
        CHECK(!co_await s.write(asio::buffer(down)));
        CHECK(!co_await s.shutdown_send());
        server_done = true;
      },
      rethrow);
  pair.run([&]() -> asio::awaitable<void> {
    std::string detail;
    auto opened = co_await pair.client->open("upstream.test:443", detail);
    REQUIRE_MESSAGE(opened, detail);
    auto& s = **opened;
    CHECK(!co_await s.write(asio::buffer(up)));
    CHECK(!co_await s.shutdown_send());
    auto [ec, data] = co_await read_all(s);
    CHECK(!ec);
    got_down = std::move(data);
  });
  CHECK(server_done);
  CHECK(authority == "upstream.test:443");
  CHECK(got_up == up);
  CHECK(got_down == down);
}

namespace {

// Accepts `count` streams on the server side and runs `serve` on each, concurrently. `serve` is
// a coroutine lambda: its captures live in the closure, which each spawned coroutine keeps alive.
template <class Serve>
void serve_streams(tunnel_pair& pair, int count, Serve serve) {
  auto shared_serve = std::make_shared<Serve>(std::move(serve));
  asio::co_spawn(
      pair.io,
      [&pair, count, shared_serve]() -> asio::awaitable<void> {
        for (int i = 0; i < count; ++i) {
          auto accepted = co_await pair.server->accept();
          REQUIRE(accepted);
          std::shared_ptr<mux::stream> s = std::move(*accepted);
          asio::co_spawn(
              pair.io, [shared_serve, s] { return (*shared_serve)(s); }, rethrow);
        }
      },
      rethrow);
}

}  // namespace

TEST_CASE("a CONNECT the peer refuses fails to open, with the peer's status") {
  tunnel_pair pair;
  serve_streams(pair, 1, [](std::shared_ptr<mux::stream> s) -> asio::awaitable<void> {
    s->refuse(502);
    co_return;
  });
  pair.run([&]() -> asio::awaitable<void> {
    std::string detail;
    auto opened = co_await pair.client->open("upstream.test:443", detail);
    REQUIRE(!opened);
    CHECK(opened.error() == mux::errc::refused);
    CHECK(detail.find("502") != std::string::npos);
    // The tunnel itself is still good for the next stream.
    CHECK(pair.client->can_open());
  });
}

TEST_CASE("a stream the peer resets fails its reader and writer, and the tunnel carries on") {
  tunnel_pair pair;
  serve_streams(pair, 2, [](std::shared_ptr<mux::stream> s) -> asio::awaitable<void> {
    s->accept();
    std::array<std::uint8_t, 16> b{};
    auto [ec, n] = co_await s->read_some(asio::buffer(b));
    if (!ec && b[0] == 'r') {
      s->reset();  // RST_STREAM: the client's side must see an error, not an end of stream
      co_return;
    }
    if (!ec) {
      CHECK(!co_await s->write(asio::buffer(b.data(), n)));
      CHECK(!co_await s->shutdown_send());
    }
  });
  pair.run([&]() -> asio::awaitable<void> {
    std::string detail;
    auto first = co_await pair.client->open("a:1", detail);
    REQUIRE(first);
    CHECK(!co_await (*first)->write(asio::buffer(std::string("reset me"))));
    std::array<std::uint8_t, 16> b{};
    auto [ec, n] = co_await (*first)->read_some(asio::buffer(b));
    CHECK(n == 0);
    CHECK(ec == mux::errc::stream_reset);
    auto second = co_await pair.client->open("a:1", detail);
    REQUIRE(second);
    CHECK(!co_await (*second)->write(asio::buffer(std::string("echo"))));
    auto [ec2, got] = co_await read_all(**second);
    CHECK(!ec2);
    CHECK(std::string(got.begin(), got.end()) == "echo");
  });
}

TEST_CASE("a reader that stops reading stalls its own stream and no other") {
  tunnel_pair pair;
  bool flooding_done = false;
  serve_streams(pair, 2, [&](std::shared_ptr<mux::stream> s) -> asio::awaitable<void> {
    s->accept();
    std::array<std::uint8_t, 1> which{};
    auto [ec, n] = co_await s->read_some(asio::buffer(which));
    REQUIRE(!ec);
    if (which[0] == 'f') {
      // Four stream windows' worth to a client that reads none of it: this write cannot finish.
      const std::vector<std::uint8_t> flood(std::size_t{1024} * 1024, 0x5a);
      auto wrote = co_await s->write(asio::buffer(flood));
      (void)wrote;
      flooding_done = true;
      co_return;
    }
    CHECK(!co_await s->write(asio::buffer(std::string("fine"))));
    CHECK(!co_await s->shutdown_send());
  });
  pair.run([&]() -> asio::awaitable<void> {
    std::string detail;
    auto stalled = co_await pair.client->open("a:1", detail);
    REQUIRE(stalled);
    CHECK(!co_await (*stalled)->write(asio::buffer(std::string("f"))));
    auto other = co_await pair.client->open("a:1", detail);
    REQUIRE(other);
    CHECK(!co_await (*other)->write(asio::buffer(std::string("o"))));
    CHECK(!co_await (*other)->shutdown_send());
    auto [ec, got] = co_await read_all(**other);
    CHECK(!ec);
    CHECK(std::string(got.begin(), got.end()) == "fine");
    CHECK(!flooding_done);
  });
}

TEST_CASE("when the tunnel's connection ends, every open stream fails and no new one opens") {
  tunnel_pair pair;
  serve_streams(pair, 1, [](std::shared_ptr<mux::stream> s) -> asio::awaitable<void> {
    s->accept();
    auto [ec, got] = co_await read_all(*s);  // holds the stream until the tunnel ends
    CHECK(ec);
  });
  pair.run([&]() -> asio::awaitable<void> {
    std::string detail;
    auto opened = co_await pair.client->open("a:1", detail);
    REQUIRE(opened);
    error_code ignored;
    pair.server_socket.close(ignored);  // the peer goes away mid-stream
    std::array<std::uint8_t, 16> b{};
    auto [ec, n] = co_await (*opened)->read_some(asio::buffer(b));
    CHECK(n == 0);
    CHECK(ec == mux::errc::tunnel_closed);
    CHECK(!pair.client->can_open());
    auto again = co_await pair.client->open("a:1", detail);
    CHECK(!again);
  });
  CHECK(pair.client_ended);
  CHECK(pair.client_end);
}

TEST_CASE("after GOAWAY a tunnel finishes its open streams, then ends cleanly on both sides") {
  tunnel_pair pair;
  serve_streams(pair, 1, [](std::shared_ptr<mux::stream> s) -> asio::awaitable<void> {
    s->accept();
    auto [ec, got] = co_await read_all(*s);
    CHECK(!ec);
    CHECK(!co_await s->write(asio::buffer(got)));
    CHECK(!co_await s->shutdown_send());
  });
  pair.run([&]() -> asio::awaitable<void> {
    std::string detail;
    auto opened = co_await pair.client->open("a:1", detail);
    REQUIRE(opened);
    pair.client->go_away();
    CHECK(!pair.client->can_open());
    // The stream opened before GOAWAY still works to its end.
    CHECK(!co_await (*opened)->write(asio::buffer(std::string("last words"))));
    CHECK(!co_await (*opened)->shutdown_send());
    auto [ec, got] = co_await read_all(**opened);
    CHECK(!ec);
    CHECK(std::string(got.begin(), got.end()) == "last words");
  });
  pair.io.restart();
  pair.io.run_for(5s);
  CHECK(pair.client_ended);
  CHECK(!pair.client_end);
}
