// libFuzzer target for the tunnel's HTTP/2 input (lib/proxy/mux.cpp): the bytes an attested peer
// sends on a multiplexed connection, fed to a tunnel that serves streams the way atlsd does. The
// first byte picks the side: even, an inbound tunnel (the peer opens CONNECT streams, which are
// accepted or refused and then read and answered); odd, an outbound one (we open a stream and
// the peer answers). The rest arrives in chunks whose sizes the input also chooses, then EOF.
// Whatever the bytes, the tunnel must end, every stream with it, without a crash, leak or hang.
// Build and run: see README.md next to this file.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <tuple>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "atls/proxy/mux.hpp"

namespace atls::proxy::mux {
namespace {

namespace asio = boost::asio;

void require(bool condition) {
  if (!condition) {
    std::abort();
  }
}

void no_exception(const std::exception_ptr& e) {
  require(!e);
}

// The peer: the fuzz input, in chunks of 1 to 256 bytes whose sizes come from the input itself,
// then EOF. What the tunnel writes is counted and dropped; past a bound it fails like a dead
// connection, so that no input can make the harness write forever.
class fuzzed_peer final : public transport {
 public:
  explicit fuzzed_peer(std::span<const std::uint8_t> input) : input_(input) {}

  asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
      asio::mutable_buffer buffer) override {
    if (input_.empty()) {
      co_return std::tuple{error_code{asio::error::eof}, std::size_t{0}};
    }
    const std::size_t chunk = std::size_t{input_.front()} + 1;
    input_ = input_.subspan(1);
    const auto n = std::min({chunk, buffer.size(), input_.size()});
    std::copy_n(input_.begin(), n, static_cast<std::uint8_t*>(buffer.data()));
    input_ = input_.subspan(n);
    co_return std::tuple{error_code{}, n};
  }

  asio::awaitable<error_code> write(asio::const_buffer buffer) override {
    written_ += buffer.size();
    if (written_ > max_written) {
      co_return error_code{asio::error::broken_pipe};
    }
    co_return error_code{};
  }

  [[nodiscard]] const std::string& error_detail() const override { return detail_; }

 private:
  static constexpr std::size_t max_written = 64U * 1024 * 1024;
  std::span<const std::uint8_t> input_;
  std::size_t written_ = 0;
  std::string detail_;
};

// What the relay does with a stream: read until it ends, answer once, half-close.
asio::awaitable<void> serve_stream(std::unique_ptr<stream> s) {
  std::array<std::uint8_t, 4096> buffer{};
  bool reading = true;
  while (reading) {
    auto [ec, n] = co_await s->read_some(asio::buffer(buffer));
    reading = !ec && n > 0;
  }
  const std::string answer = "answer";
  (void)co_await s->write(asio::buffer(answer));
  (void)co_await s->shutdown_send();
}

// Inbound: every CONNECT is taken, the odd-numbered ones refused (as an unreachable upstream
// would be), the others accepted and served.
asio::awaitable<void> accept_streams(std::shared_ptr<tunnel> t) {
  bool accepting = true;
  while (accepting) {
    auto next = co_await t->accept();
    if (!next) {
      accepting = false;
      continue;
    }
    auto s = std::move(*next);
    if (s->id() % 4 == 3) {
      s->refuse(502);
      continue;
    }
    s->accept();
    asio::co_spawn(co_await asio::this_coro::executor, serve_stream(std::move(s)), no_exception);
  }
}

// Outbound: one stream to the peer, served like a workload connection once it answered.
asio::awaitable<void> open_stream(std::shared_ptr<tunnel> t) {
  std::string detail;
  auto opened = co_await t->open("upstream.test:443", detail);
  if (opened) {
    co_await serve_stream(std::move(*opened));
  }
}

void run_tunnel(bool inbound, std::span<const std::uint8_t> input) {
  asio::io_context io;
  fuzzed_peer peer(input);
  const auto role = inbound ? tunnel::role::server : tunnel::role::client;
  auto t = tunnel::make(io.get_executor(), role, limits{.max_streams = 8});
  bool ended = false;
  asio::co_spawn(io, t->run(peer), [&](const std::exception_ptr& e, error_code) {
    no_exception(e);
    ended = true;
  });
  if (inbound) {
    asio::co_spawn(io, accept_streams(t), no_exception);
  } else {
    asio::co_spawn(io, open_stream(t), no_exception);
  }
  io.run();
  require(ended && t->ended());
}

}  // namespace
}  // namespace atls::proxy::mux

// The entry point's name is libFuzzer's.
extern "C" int LLVMFuzzerTestOneInput(  // NOLINT(readability-identifier-naming)
    const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::span input(data, size);
  atls::proxy::mux::run_tunnel(input[0] % 2 == 0, input.subspan(1));
  return 0;
}
