#include "support/loopback.hpp"

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace atls::test {

namespace {

void set_timeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

std::string hex(const unsigned char* data, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 0xf];
  }
  return out;
}

std::string openssl_errors() {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    out += text.data();
    out += "; ";
  }
  return out;
}

}  // namespace

socket_fd::~socket_fd() {
  reset();
}

socket_fd& socket_fd::operator=(socket_fd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void socket_fd::reset() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

sockaddr_in loopback_address(std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// Every socket here is close-on-exec: the tests spawn curl, openssl, swtpm and atlsd, and a child
// that inherits a listener or a connection keeps it open behind the test's back.
namespace {

// The first port the kernel hands out for outgoing connections (ip_local_port_range).
int ephemeral_low() {
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0;
  int high = 0;
  return range >> low >> high ? low : 0;
}

bool bindable(std::uint16_t port) {
  const socket_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto addr = loopback_address(port);
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

}  // namespace

// Below the ephemeral range when there is room: a port bind(0) chose is the kernel's to give to
// any outgoing connection the moment the probe closes, and the suite makes thousands of them in
// parallel, so a daemon binding it later could find it taken (CI saw "Address already in use").
// Chosen at random, so that parallel test processes rarely try the same one.
std::uint16_t free_port() {
  static thread_local std::mt19937 pick(std::random_device{}());
  const int low = ephemeral_low();
  constexpr int first = 10000;
  if (low > first + 1000) {
    std::uniform_int_distribution<int> in_range(first, low - 1);
    for (int attempt = 0; attempt < 200; ++attempt) {
      const auto port = static_cast<std::uint16_t>(in_range(pick));
      if (bindable(port)) {
        return port;
      }
    }
  }
  const socket_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto addr = loopback_address(0);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("bind to a free port failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

socket_fd connect_loopback(std::uint16_t port, std::chrono::milliseconds io_timeout) {
  socket_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto addr = loopback_address(port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return {};
  }
  set_timeouts(fd.get(), io_timeout);
  return fd;
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) {
        continue;
      }
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string receive_all(int fd) {
  std::string out;
  std::array<char, 16384> buffer{};
  for (;;) {
    const auto n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return out;
    }
    out.append(buffer.data(), static_cast<std::size_t>(n));
  }
}

bool closed_by_peer(int fd) {
  char byte = 0;
  for (;;) {
    const auto n = ::recv(fd, &byte, 1, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    return n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE));
  }
}

loopback_server::loopback_server(handler h) : handler_(std::move(h)) {
  listener_ = socket_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int one = 1;
  setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  auto addr = loopback_address(0);
  if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener_.get(), 128) != 0) {
    throw std::runtime_error("loopback_server: bind failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { serve(); });
}

loopback_server::loopback_server(handler h, const std::filesystem::path& unix_path)
    : handler_(std::move(h)) {
  listener_ = socket_fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, unix_path.c_str(), sizeof addr.sun_path - 1);
  if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener_.get(), 128) != 0) {
    throw std::runtime_error("loopback_server: bind to " + unix_path.string() + " failed");
  }
  acceptor_ = std::thread([this] { serve(); });
}

loopback_server::~loopback_server() {
  stopping_ = true;
  ::shutdown(listener_.get(), SHUT_RDWR);
  acceptor_.join();
  const std::lock_guard lock(mutex_);
  for (auto& worker : workers_) {
    worker.join();
  }
}

void loopback_server::serve() {
  for (;;) {
    pollfd p{.fd = listener_.get(), .events = POLLIN, .revents = 0};
    const int ready = ::poll(&p, 1, 50);
    if (stopping_) {
      return;
    }
    if (ready <= 0) {
      continue;
    }
    const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      continue;
    }
    ++accepted_;
    set_timeouts(fd, std::chrono::seconds(30));
    const std::lock_guard lock(mutex_);
    workers_.emplace_back([this, fd] {
      const socket_fd owned(fd);
      handler_(fd);
    });
  }
}

loopback_server::handler echo_responder() {
  return [](int fd) {
    std::array<char, 4096> buffer{};
    for (;;) {
      const auto n = ::recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0 || !send_all(fd, std::string_view(buffer.data(), static_cast<std::size_t>(n)))) {
        return;
      }
    }
  };
}

bool echoed(int fd, std::string_view text) {
  if (!send_all(fd, text)) {
    return false;
  }
  std::string got;
  std::array<char, 256> buffer{};
  while (got.size() < text.size()) {
    const auto n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) {
      return false;
    }
    got.append(buffer.data(), static_cast<std::size_t>(n));
  }
  return got == text;
}

loopback_server::handler http_responder(std::string body) {
  return [body = std::move(body)](int fd) {
    std::string request;
    std::array<char, 4096> buffer{};
    while (request.find("\r\n\r\n") == std::string::npos) {
      const auto n = ::recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0) {
        return;
      }
      request.append(buffer.data(), static_cast<std::size_t>(n));
    }
    const std::string response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                                 body;
    send_all(fd, response);
    ::shutdown(fd, SHUT_WR);
    // Linger until the client closes, so that the proxy sees an orderly end.
    (void)receive_all(fd);
  };
}

std::string pattern_bytes(std::uint64_t seed, std::size_t size) {
  std::mt19937_64 generator(seed);
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    const auto word = generator();
    std::memcpy(out.data() + i, &word, std::min<std::size_t>(8, size - i));
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return hex(digest.data(), size);
}

namespace {
constexpr std::size_t pattern_chunk = 1 << 20;
}  // namespace

std::string pattern_digest(std::uint64_t seed, std::size_t size) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
  for (std::size_t done = 0; done < size; done += pattern_chunk) {
    const auto piece = pattern_bytes(seed + done, std::min(pattern_chunk, size - done));
    EVP_DigestUpdate(md, piece.data(), piece.size());
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(md, digest.data(), &len);
  EVP_MD_CTX_free(md);
  return hex(digest.data(), len);
}

stream_digest send_pattern(int fd, std::uint64_t seed, std::size_t size) {
  constexpr std::size_t chunk = pattern_chunk;
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
  stream_digest result;
  for (std::size_t sent = 0; sent < size; sent += chunk) {
    const auto piece = pattern_bytes(seed + sent, std::min(chunk, size - sent));
    EVP_DigestUpdate(md, piece.data(), piece.size());
    if (!send_all(fd, piece)) {
      break;
    }
    result.bytes += piece.size();
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(md, digest.data(), &len);
  EVP_MD_CTX_free(md);
  result.sha256 = hex(digest.data(), len);
  return result;
}

stream_digest receive_digest(int fd) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
  stream_digest result;
  std::array<char, 65536> buffer{};
  for (;;) {
    const auto n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    EVP_DigestUpdate(md, buffer.data(), static_cast<std::size_t>(n));
    result.bytes += static_cast<std::size_t>(n);
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(md, digest.data(), &len);
  EVP_MD_CTX_free(md);
  result.sha256 = hex(digest.data(), len);
  return result;
}

tls_client::tls_client(const tls_client_options& options) {
  fd_ = connect_loopback(options.port, options.io_timeout);
  if (!fd_) {
    throw std::runtime_error("tls_client: connection refused on port " +
                             std::to_string(options.port));
  }
  ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
  SSL_CTX_load_verify_locations(ctx_, options.ca.c_str(), nullptr);
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  if (options.cert && options.key) {
    SSL_CTX_use_certificate_chain_file(ctx_, options.cert->c_str());
    SSL_CTX_use_PrivateKey_file(ctx_, options.key->c_str(), SSL_FILETYPE_PEM);
  }
  ssl_ = SSL_new(ctx_);
  SSL_set_tlsext_host_name(ssl_, options.server_name.c_str());
  SSL_set1_host(ssl_, options.server_name.c_str());
  SSL_set_fd(ssl_, fd_.get());
}

tls_client::~tls_client() {
  SSL_free(ssl_);
  SSL_CTX_free(ctx_);
}

void tls_client::set_timeout(std::chrono::milliseconds timeout) {
  set_timeouts(fd_.get(), timeout);
}

bool tls_client::handshake() {
  ERR_clear_error();
  const int r = SSL_connect(ssl_);
  if (r == 1) {
    return true;
  }
  error_ = "SSL_connect: error " + std::to_string(SSL_get_error(ssl_, r)) + " " + openssl_errors();
  return false;
}

bool tls_client::write(std::string_view data) {
  while (!data.empty()) {
    std::size_t n = 0;
    ERR_clear_error();
    if (SSL_write_ex(ssl_, data.data(), data.size(), &n) != 1) {
      error_ = "SSL_write: " + openssl_errors();
      return false;
    }
    data.remove_prefix(n);
  }
  return true;
}

bool tls_client::shutdown_send() {
  ERR_clear_error();
  if (SSL_shutdown(ssl_) < 0) {
    error_ = "SSL_shutdown: " + openssl_errors();
    return false;
  }
  return ::shutdown(fd_.get(), SHUT_WR) == 0;
}

std::string tls_client::read_all() {
  std::string out;
  std::array<char, 16384> buffer{};
  for (;;) {
    std::size_t n = 0;
    ERR_clear_error();
    if (SSL_read_ex(ssl_, buffer.data(), buffer.size(), &n) != 1) {
      error_ = "SSL_read: error " + std::to_string(SSL_get_error(ssl_, 0)) + " " + openssl_errors();
      return out;
    }
    out.append(buffer.data(), n);
  }
}

bool tls_client::closed_by_server() {
  std::array<char, 256> buffer{};
  std::size_t n = 0;
  ERR_clear_error();
  if (SSL_read_ex(ssl_, buffer.data(), buffer.size(), &n) == 1) {
    return false;
  }
  const int status = SSL_get_error(ssl_, 0);
  error_ = "SSL_read: error " + std::to_string(status) + " " + openssl_errors();
  // A timeout shows as SSL_ERROR_WANT_READ (EAGAIN under SO_RCVTIMEO): not a close.
  return status != SSL_ERROR_WANT_READ;
}

std::string tls_client::protocol() const {
  return SSL_get_version(ssl_);
}

}  // namespace atls::test
