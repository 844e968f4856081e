// A plaintext socket with the same coroutine interface as tls::stream, so that the relay is
// written once for both kinds of leg.
#pragma once

#include <cstddef>
#include <string>
#include <tuple>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "atls/common/result.hpp"

namespace atls::proxy::detail {

class plain_stream {
 public:
  using socket_type = boost::asio::generic::stream_protocol::socket;

  // try_read_some() needs the socket non-blocking; Asio's asynchronous operations ignore the flag.
  explicit plain_stream(socket_type socket) : socket_(std::move(socket)) {
    error_code ignored;
    socket_.non_blocking(true, ignored);
  }

  boost::asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
      boost::asio::mutable_buffer buffer) {
    return socket_.async_read_some(buffer, boost::asio::as_tuple(boost::asio::use_awaitable));
  }

  // Reads what has arrived without waiting: asio::error::would_block when nothing has.
  std::tuple<error_code, std::size_t> try_read_some(boost::asio::mutable_buffer buffer) {
    error_code ec;
    const auto n = socket_.read_some(buffer, ec);
    return {ec, n};
  }

  boost::asio::awaitable<error_code> write(boost::asio::const_buffer buffer) {
    auto [ec, n] = co_await boost::asio::async_write(
        socket_, buffer, boost::asio::as_tuple(boost::asio::use_awaitable));
    (void)n;
    co_return ec;
  }

  // Half-close: a TCP FIN (or the unix-socket equivalent); reading stays possible.
  boost::asio::awaitable<error_code> shutdown_send() {
    error_code ec;
    socket_.shutdown(socket_type::shutdown_send, ec);
    co_return ec;
  }

  void close() {
    error_code ignored;
    socket_.close(ignored);
  }

  // Closes with a TCP RST (SO_LINGER 0), so that the other end sees an error and not an end of
  // stream. Unix sockets have no reset; their peer sees the close.
  void reset() {
    error_code ignored;
    socket_.set_option(boost::asio::socket_base::linger(true, 0), ignored);
    socket_.close(ignored);
  }

  [[nodiscard]] const std::string& error_detail() const { return no_detail_; }
  socket_type& socket() { return socket_; }

 private:
  socket_type socket_;
  std::string no_detail_;
};

}  // namespace atls::proxy::detail
