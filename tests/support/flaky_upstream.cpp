#include "support/flaky_upstream.hpp"

#include <stdexcept>
#include <utility>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace atls::test {

namespace {

// The response of mode reset_mid_response: headers that promise much more body than is sent
// before the reset, so that a client cannot take the truncated answer for a whole one.
constexpr std::size_t promised_size = 1 << 20;
constexpr std::size_t sent_before_reset = 4096;

// Reads until the end of the request's headers, the client's end, or the socket's timeout.
void read_request_head(int fd) {
  std::string head;
  char buffer[1024];
  while (head.find("\r\n\r\n") == std::string::npos) {
    const auto n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) {
      return;
    }
    head.append(buffer, static_cast<std::size_t>(n));
  }
}

}  // namespace

flaky_upstream::flaky_upstream(std::string body) : body_(std::move(body)) {
  bind_listener();
  acceptor_ = std::thread([this] { accept_loop(); });
}

flaky_upstream::~flaky_upstream() {
  stopping_ = true;
  if (acceptor_.joinable()) {
    acceptor_.join();
  }
  const std::lock_guard lock(mutex_);
  for (auto& worker : workers_) {
    worker.join();
  }
}

void flaky_upstream::bind_listener() {
  socket_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int one = 1;
  // The port's earlier connections linger in TIME_WAIT; they must not keep it from listening.
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  auto addr = loopback_address(port_);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd.get(), 128) != 0) {
    throw std::runtime_error("flaky_upstream: cannot listen on port " + std::to_string(port_));
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  const std::lock_guard lock(mutex_);
  listener_ = std::move(fd);
}

void flaky_upstream::stop_listening() {
  const std::lock_guard lock(mutex_);
  listener_.reset();
}

void flaky_upstream::listen_again() {
  bind_listener();
}

void flaky_upstream::accept_loop() {
  while (!stopping_) {
    int fd = -1;
    {
      const std::lock_guard lock(mutex_);
      fd = listener_.get();
      if (fd >= 0) {
        pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
        // Short, under the lock: stop_listening() waits at most this long.
        if (::poll(&p, 1, 0) == 1) {
          fd = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (fd >= 0) {
            ++accepted_;
            const timeval timeout{.tv_sec = 10, .tv_usec = 0};
            ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
            ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
            workers_.emplace_back([this, client = socket_fd(fd), m = mode_.load()]() mutable {
              serve(std::move(client), m);
            });
            continue;
          }
        }
      }
    }
    ::usleep(10'000);
  }
}

void flaky_upstream::serve(socket_fd client, mode m) {
  read_request_head(client.get());
  if (m == mode::serve) {
    send_all(client.get(), "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body_.size()) +
                               "\r\nConnection: close\r\n\r\n" + body_);
    ::shutdown(client.get(), SHUT_WR);
    receive_all(client.get());  // until the client closes: no RST from unread bytes
    return;
  }
  send_all(client.get(), "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(promised_size) +
                             "\r\nConnection: close\r\n\r\n" + pattern_bytes(1, sent_before_reset));
  // SO_LINGER with a zero timeout makes close() send RST instead of FIN (RFC 793 ABORT).
  const linger abort{.l_onoff = 1, .l_linger = 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  ++reset_;
  client.reset();
}

}  // namespace atls::test
