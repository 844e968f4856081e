// A TLS 1.3 client and server connected back to back in memory (two BIO pairs): real OpenSSL
// handshakes without sockets, threads or timing, for tests of what rides on a connection
// (exporters, custom extensions, exported authenticators). Certificates come from make_pki.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/daemon.hpp"

using SSL = struct ssl_st;
using SSL_CTX = struct ssl_ctx_st;

namespace atls::test {

struct tls_pair_options {
  // The client presents client.crt and the server requires it.
  bool mutual = false;
  // Called on each context after the certificates are set and before the SSL objects exist:
  // the place for custom extensions and callbacks.
  std::function<void(SSL_CTX*)> configure_client;
  std::function<void(SSL_CTX*)> configure_server;
};

class tls_pair {
 public:
  // Loads pki's server.crt/server.key (and client.crt/client.key when mutual), with ca.crt
  // trusted on both sides. Throws on a setup failure (tests only).
  tls_pair(const pki& certificates, tls_pair_options options = {});
  ~tls_pair();
  tls_pair(const tls_pair&) = delete;
  tls_pair& operator=(const tls_pair&) = delete;
  tls_pair(tls_pair&&) = delete;
  tls_pair& operator=(tls_pair&&) = delete;

  [[nodiscard]] SSL* client() const;
  [[nodiscard]] SSL* server() const;

  // Drives both handshakes until both complete or one fails. Returns nothing on success, else
  // the failing side's OpenSSL errors ("client: ..." / "server: ...").
  [[nodiscard]] std::optional<std::string> handshake();

  // Application data: from writes, then bytes are moved across and the other side reads all
  // that arrived (post-handshake messages such as NewSessionTicket are processed on the way).
  void send(SSL* from, const std::vector<std::uint8_t>& data);
  [[nodiscard]] std::vector<std::uint8_t> receive(SSL* to);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace atls::test
