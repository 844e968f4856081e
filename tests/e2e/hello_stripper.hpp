// The man in the middle of the downgrade attack: a loopback TCP proxy that removes one extension
// from every ClientHello it forwards and passes all other bytes through unchanged. A relying party
// that offered attestation then meets a server that never saw the offer; the handshake transcript
// (RFC 8446 §4.4.1), which both ends hash, is what must give the MITM away.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace atls::test {

class hello_stripper {
 public:
  // Listens on 127.0.0.1 port 0 and forwards each connection to 127.0.0.1:upstream_port, minus
  // `extension_type` in the ClientHello (the first TLS record from the client, which must hold
  // the whole ClientHello; OpenSSL's does). Runs on a thread of its own until destroyed. Throws
  // when it cannot listen.
  hello_stripper(std::uint16_t upstream_port, std::uint16_t extension_type);
  // Closes the listener and every connection, then joins the thread.
  ~hello_stripper();
  hello_stripper(const hello_stripper&) = delete;
  hello_stripper& operator=(const hello_stripper&) = delete;

  [[nodiscard]] std::uint16_t port() const { return port_; }
  // ClientHellos from which the extension was removed.
  [[nodiscard]] int stripped() const { return stripped_; }
  // ClientHellos forwarded as they came, because they did not carry the extension.
  [[nodiscard]] int untouched() const { return untouched_; }

 private:
  boost::asio::io_context io_{1};
  boost::asio::ip::tcp::acceptor acceptor_;
  std::uint16_t upstream_port_;
  std::uint16_t extension_type_;
  std::uint16_t port_ = 0;
  std::atomic<int> stripped_{0};
  std::atomic<int> untouched_{0};
  std::thread thread_;
};

}  // namespace atls::test
