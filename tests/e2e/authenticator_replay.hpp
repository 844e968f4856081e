// The replay of an RFC 9261 exported authenticator, for the attack suite: the attacker asks a
// genuine attesting atlsd for an authenticator on a connection of its own (as a client, with a
// request it made), then serves a victim's connection as server.test and answers the victim's
// request with the captured authenticator. Hand-driven from lib/tls pieces, because atlsd never
// sends an authenticator made for another connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "support/daemon.hpp"

namespace atls::test {

// The authenticator that the attesting atlsd at 127.0.0.1:port (post-handshake, certificate for
// server.test from p's CA) sends for a fresh request of the attacker's. Checks on the connection
// it came on that it is genuine. Fails the test when it gets none within 20 s.
[[nodiscard]] std::vector<std::uint8_t> capture_authenticator(std::uint16_t port, const pki& p);

class authenticator_replayer {
 public:
  // Listens on 127.0.0.1 port 0 as server.test (p's server.crt and server.key), answers the
  // post-handshake offer as an attester, and answers every authenticator request with
  // `authenticator`. Serves on a thread of its own until destroyed.
  authenticator_replayer(const pki& p, std::vector<std::uint8_t> authenticator);
  // Closes everything and joins the thread.
  ~authenticator_replayer();
  authenticator_replayer(const authenticator_replayer&) = delete;
  authenticator_replayer& operator=(const authenticator_replayer&) = delete;

  [[nodiscard]] std::uint16_t port() const { return port_; }
  // The reason number of the last verdict a victim sent (attested/reason.hpp), or -1 before any.
  [[nodiscard]] int last_verdict() const { return verdict_; }
  // Authenticator requests answered with the captured authenticator.
  [[nodiscard]] int replayed() const { return replayed_; }

 private:
  boost::asio::io_context io_{1};
  boost::asio::ip::tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::atomic<int> verdict_{-1};
  std::atomic<int> replayed_{0};
  std::thread thread_;
};

}  // namespace atls::test
