#include "e2e/hello_stripper.hpp"

#include <array>
#include <cstddef>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace atls::test {

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::experimental::awaitable_operators::operator&&;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

constexpr std::uint8_t handshake_record = 22;  // ContentType handshake (RFC 8446 §5.1)
constexpr std::uint8_t client_hello = 1;       // HandshakeType client_hello (§4)
constexpr std::size_t record_header = 5;

std::size_t get16(std::span<const std::uint8_t> b, std::size_t at) {
  return (std::size_t{b[at]} << 8) | b[at + 1];
}

void put16(std::vector<std::uint8_t>& b, std::size_t at, std::size_t v) {
  b[at] = static_cast<std::uint8_t>(v >> 8);
  b[at + 1] = static_cast<std::uint8_t>(v);
}

void put24(std::vector<std::uint8_t>& b, std::size_t at, std::size_t v) {
  b[at] = static_cast<std::uint8_t>(v >> 16);
  put16(b, at + 1, v & 0xFFFF);
}

// Removes extension `type` from the ClientHello in `record` (one whole TLS record: header and
// fragment) and fixes the three lengths that enclose it: the extensions block, the handshake
// message and the record (RFC 8446 §4.1.2, §5.1). False when the record is not a ClientHello
// that carries the extension, or does not parse; the record is then unchanged.
bool strip_extension(std::vector<std::uint8_t>& record, std::uint16_t type) {
  const std::span<const std::uint8_t> b(record);
  if (b.size() < record_header + 4 || b[0] != handshake_record ||
      b[record_header] != client_hello) {
    return false;
  }
  // legacy_version, random, then the session id, cipher suites and compression methods.
  std::size_t at = record_header + 4 + 2 + 32;
  if (at + 1 > b.size()) {
    return false;
  }
  at += 1 + b[at];
  if (at + 2 > b.size()) {
    return false;
  }
  at += 2 + get16(b, at);
  if (at + 1 > b.size()) {
    return false;
  }
  at += 1 + b[at];
  if (at + 2 > b.size()) {
    return false;
  }
  const std::size_t extensions_length_at = at;
  const std::size_t end = at + 2 + get16(b, at);
  if (end != b.size()) {
    return false;
  }
  for (at += 2; at + 4 <= end;) {
    const auto size = 4 + get16(b, at + 2);
    if (at + size > end) {
      return false;
    }
    if (get16(b, at) == type) {
      record.erase(record.begin() + static_cast<std::ptrdiff_t>(at),
                   record.begin() + static_cast<std::ptrdiff_t>(at + size));
      put16(record, extensions_length_at, get16(record, extensions_length_at) - size);
      put24(record, record_header + 1, record.size() - record_header - 4);
      put16(record, 3, record.size() - record_header);
      return true;
    }
    at += size;
  }
  return false;
}

asio::awaitable<void> pump(tcp::socket& from, tcp::socket& to) {
  std::array<std::uint8_t, 16384> buffer{};
  for (;;) {
    auto [ec, n] = co_await from.async_read_some(asio::buffer(buffer), use_tuple);
    if (ec) {
      break;
    }
    auto [wec, written] = co_await asio::async_write(to, asio::buffer(buffer.data(), n), use_tuple);
    if (wec) {
      break;
    }
  }
  boost::system::error_code ignored;
  to.shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> serve(tcp::socket client, std::uint16_t upstream_port, std::uint16_t type,
                            std::atomic<int>& stripped, std::atomic<int>& untouched) {
  tcp::socket upstream(client.get_executor());
  const tcp::endpoint target(asio::ip::address_v4::loopback(), upstream_port);
  auto [cec] = co_await upstream.async_connect(target, use_tuple);
  if (cec) {
    co_return;
  }
  std::vector<std::uint8_t> record(record_header);
  auto [hec, hn] = co_await asio::async_read(client, asio::buffer(record), use_tuple);
  if (hec) {
    co_return;
  }
  record.resize(record_header + get16(record, 3));
  auto [bec, bn] = co_await asio::async_read(
      client, asio::buffer(record.data() + record_header, record.size() - record_header),
      use_tuple);
  if (bec) {
    co_return;
  }
  ++(strip_extension(record, type) ? stripped : untouched);
  auto [wec, wn] = co_await asio::async_write(upstream, asio::buffer(record), use_tuple);
  if (wec) {
    co_return;
  }
  co_await (pump(client, upstream) && pump(upstream, client));
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, std::uint16_t upstream_port,
                                  std::uint16_t type, std::atomic<int>& stripped,
                                  std::atomic<int>& untouched) {
  for (;;) {
    auto [ec, client] = co_await acceptor.async_accept(use_tuple);
    if (ec) {
      co_return;
    }
    // A test helper: the connection's coroutine ends with its sockets, or with io_context.
    asio::co_spawn(acceptor.get_executor(),
                   serve(std::move(client), upstream_port, type, stripped, untouched),
                   asio::detached);
  }
}

}  // namespace

hello_stripper::hello_stripper(std::uint16_t upstream_port, std::uint16_t extension_type)
    : acceptor_(io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0)),
      upstream_port_(upstream_port),
      extension_type_(extension_type),
      port_(acceptor_.local_endpoint().port()) {
  asio::co_spawn(io_,
                 accept_loop(acceptor_, upstream_port_, extension_type_, stripped_, untouched_),
                 asio::detached);
  thread_ = std::thread([this] { io_.run(); });
}

hello_stripper::~hello_stripper() {
  // The proxy's own loop: nothing of the daemon's runs on it.
  io_.stop();
  thread_.join();
}

}  // namespace atls::test
