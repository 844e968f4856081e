// Loopback peers for end-to-end tests, written with blocking sockets and plain OpenSSL on
// purpose: they share no code with the proxy under test.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <netinet/in.h>

using SSL = struct ssl_st;
using SSL_CTX = struct ssl_ctx_st;

namespace atls::test {

// A port that was free a moment ago on 127.0.0.1.
std::uint16_t free_port();

// 127.0.0.1:port, for bind and connect.
sockaddr_in loopback_address(std::uint16_t port);

// An owned file descriptor.
class socket_fd {
 public:
  socket_fd() = default;
  explicit socket_fd(int fd) : fd_(fd) {}
  ~socket_fd();
  socket_fd(socket_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  socket_fd& operator=(socket_fd&& other) noexcept;
  socket_fd(const socket_fd&) = delete;
  socket_fd& operator=(const socket_fd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

// Connects to 127.0.0.1:port; receive and send calls on it time out after io_timeout.
// Returns an empty socket_fd when the connection is refused.
socket_fd connect_loopback(std::uint16_t port,
                           std::chrono::milliseconds io_timeout = std::chrono::seconds(10));

bool send_all(int fd, std::string_view data);
// Reads until EOF, error or timeout; returns what arrived.
std::string receive_all(int fd);
// True when the peer closes (EOF or reset) within the socket's receive timeout, with no data.
bool closed_by_peer(int fd);

// Accepts connections on 127.0.0.1 (or a unix socket) and runs handler(fd) for each on its own
// thread. Stops and joins in the destructor.
class loopback_server {
 public:
  using handler = std::function<void(int fd)>;
  explicit loopback_server(handler h);
  loopback_server(handler h, const std::filesystem::path& unix_path);
  ~loopback_server();
  loopback_server(const loopback_server&) = delete;
  loopback_server& operator=(const loopback_server&) = delete;

  std::uint16_t port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  void serve();
  handler handler_;
  socket_fd listener_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::mutex mutex_;
  std::vector<std::thread> workers_;
  std::thread acceptor_;
};

// An HTTP/1.1 origin: answers every request with 200 and the body, then closes.
loopback_server::handler http_responder(std::string body);
// An origin that echoes what it reads until the connection ends: holds connections open for as
// long as a test needs them.
loopback_server::handler echo_responder();
// Sends text on fd and reads back as many bytes; true when they come back unchanged.
bool echoed(int fd, std::string_view text);

// Deterministic pseudo-random bytes, so that two sides can agree on content without sharing it.
std::string pattern_bytes(std::uint64_t seed, std::size_t size);
std::string sha256_hex(std::string_view data);

// Streams `size` pattern bytes in chunks, hashing as it goes (for large transfers).
struct stream_digest {
  std::size_t bytes = 0;
  std::string sha256;
};
stream_digest send_pattern(int fd, std::uint64_t seed, std::size_t size);
// The SHA-256 of what send_pattern(fd, seed, size) sends.
std::string pattern_digest(std::uint64_t seed, std::size_t size);
stream_digest receive_digest(int fd);

// A blocking TLS 1.3 client over plain OpenSSL.
struct tls_client_options {
  std::uint16_t port = 0;
  std::filesystem::path ca;
  std::string server_name = "server.test";
  std::optional<std::filesystem::path> cert;
  std::optional<std::filesystem::path> key;
  std::chrono::milliseconds io_timeout{std::chrono::seconds(10)};
};

class tls_client {
 public:
  explicit tls_client(const tls_client_options& options);  // connects TCP; throws if refused
  ~tls_client();
  tls_client(const tls_client&) = delete;
  tls_client& operator=(const tls_client&) = delete;

  // Runs (or continues) the handshake; false on failure or when the receive timeout passed.
  bool handshake();
  bool write(std::string_view data);
  // Sends close_notify and a TCP FIN; reading stays possible (TLS 1.3 half-close).
  bool shutdown_send();
  // Application data until close_notify, EOF or timeout.
  std::string read_all();
  // True when the server ended the connection (alert, close_notify, EOF) within the timeout.
  bool closed_by_server();
  void set_timeout(std::chrono::milliseconds timeout);
  std::string error() const { return error_; }
  std::string protocol() const;

 private:
  socket_fd fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string error_;
};

}  // namespace atls::test
