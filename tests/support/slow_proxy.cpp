#include "support/slow_proxy.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <stdexcept>
#include <utility>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

namespace atls::test {

namespace {

// Every TPM 2.0 command and response starts with tag (2 bytes), size (4, big-endian, of the
// whole message) and command or response code (4): TPM 2.0 Part 1 §18.
constexpr std::size_t tpm_header_size = 10;
// Far above what swtpm accepts (4096): a larger size field means the stream is not TPM traffic.
constexpr std::uint32_t max_tpm_message = 64 * 1024;
// How often blocked threads look at stopping_, so that the destructor is prompt.
constexpr int poll_ms = 50;

// Every socket here is close-on-exec. The test spawns curl and atlsd while the proxy runs, and a
// child that inherited a connection to swtpm would keep it open after the proxy closed it; swtpm
// serves one connection at a time and would wait for that child's exit before the next command.

// A listening socket on 127.0.0.1:port, or an empty one if the port is taken.
socket_fd listen_on(std::uint16_t port) {
  socket_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const auto addr = loopback_address(port);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd.get(), SOMAXCONN) != 0) {
    return {};
  }
  return fd;
}

// A connection to 127.0.0.1:port, or an empty socket when refused.
socket_fd connect_to(std::uint16_t port) {
  socket_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const auto addr = loopback_address(port);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return {};
  }
  return fd;
}

// Waits until fd has data (or EOF) to read; false once stopping is set.
bool wait_readable(int fd, const std::atomic<bool>& stopping) {
  while (!stopping) {
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, poll_ms) > 0) {
      return true;
    }
  }
  return false;
}

bool read_exact(int fd, char* out, std::size_t size, const std::atomic<bool>& stopping) {
  while (size > 0) {
    if (!wait_readable(fd, stopping)) {
      return false;
    }
    const auto n = ::recv(fd, out, size, 0);
    if (n <= 0) {
      return false;
    }
    out += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// One whole TPM command or response, or nothing at EOF, on error or when stopping.
std::optional<std::string> read_tpm_message(int fd, const std::atomic<bool>& stopping) {
  std::string message(tpm_header_size, '\0');
  if (!read_exact(fd, message.data(), tpm_header_size, stopping)) {
    return std::nullopt;
  }
  std::uint32_t size = 0;
  for (std::size_t i = 2; i < 6; ++i) {
    size = (size << 8) | static_cast<std::uint8_t>(message[i]);
  }
  if (size < tpm_header_size || size > max_tpm_message) {
    return std::nullopt;
  }
  message.resize(size);
  if (!read_exact(fd, message.data() + tpm_header_size, size - tpm_header_size, stopping)) {
    return std::nullopt;
  }
  return message;
}

// swtpm::tcti() is "swtpm:host=127.0.0.1,port=N".
std::uint16_t command_port_of(const swtpm& upstream) {
  const auto tcti = upstream.tcti();
  const auto at = tcti.rfind("port=");
  if (at == std::string::npos) {
    throw std::runtime_error("no port in TCTI " + tcti);
  }
  return static_cast<std::uint16_t>(std::stoul(tcti.substr(at + 5)));
}

}  // namespace

slow_tpm_proxy::slow_tpm_proxy(const swtpm& upstream) : upstream_port_(command_port_of(upstream)) {
  for (int attempt = 0; attempt < 50 && port_ == 0; ++attempt) {
    const auto candidate = free_port();
    if (candidate == 65535) {
      continue;
    }
    auto commands = listen_on(candidate);
    auto control = listen_on(static_cast<std::uint16_t>(candidate + 1));
    if (commands && control) {
      command_listener_ = std::move(commands);
      control_listener_ = std::move(control);
      port_ = candidate;
    }
  }
  if (port_ == 0) {
    throw std::runtime_error("slow_tpm_proxy: no two adjacent free ports");
  }
  acceptor_ = std::thread([this] { accept_loop(); });
}

slow_tpm_proxy::~slow_tpm_proxy() {
  stopping_ = true;
  acceptor_.join();
  for (auto& connection : connections_) {
    connection.join();
  }
}

std::string slow_tpm_proxy::tcti() const {
  return "swtpm:host=127.0.0.1,port=" + std::to_string(port_);
}

int slow_tpm_proxy::answered() const {
  const std::lock_guard lock(mutex_);
  return static_cast<int>(
      std::count_if(commands_.begin(), commands_.end(), [](const auto& c) { return c.answered; }));
}

int slow_tpm_proxy::in_flight() const {
  const std::lock_guard lock(mutex_);
  return static_cast<int>(std::count_if(commands_.begin(), commands_.end(), [](const auto& c) {
    return c.ended == clock::time_point::max();
  }));
}

int slow_tpm_proxy::answered_between(clock::time_point from, clock::time_point to) const {
  const std::lock_guard lock(mutex_);
  return static_cast<int>(std::count_if(commands_.begin(), commands_.end(), [&](const auto& c) {
    return c.answered && c.ended >= from && c.ended <= to;
  }));
}

auto slow_tpm_proxy::busy_between(clock::time_point from, clock::time_point to) const
    -> clock::duration {
  std::vector<std::pair<clock::time_point, clock::time_point>> spans;
  {
    const std::lock_guard lock(mutex_);
    const auto now = clock::now();
    for (const auto& c : commands_) {
      const auto begin = std::max(c.received, from);
      const auto end = std::min({c.ended, now, to});
      if (begin < end) {
        spans.emplace_back(begin, end);
      }
    }
  }
  // The union of the spans: commands of different connections may overlap.
  std::sort(spans.begin(), spans.end());
  clock::duration busy{0};
  auto covered_until = from;
  for (const auto& [begin, end] : spans) {
    const auto start = std::max(begin, covered_until);
    if (end > start) {
      busy += end - start;
      covered_until = end;
    }
  }
  return busy;
}

void slow_tpm_proxy::accept_loop() {
  while (!stopping_) {
    std::array<pollfd, 2> listeners{
        {{.fd = command_listener_.get(), .events = POLLIN, .revents = 0},
         {.fd = control_listener_.get(), .events = POLLIN, .revents = 0}}};
    if (::poll(listeners.data(), listeners.size(), poll_ms) <= 0) {
      continue;
    }
    if ((listeners[0].revents & POLLIN) != 0) {
      socket_fd client(::accept4(command_listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (client) {
        connections_.emplace_back(
            [this, fd = std::move(client)]() mutable { serve_commands(std::move(fd)); });
      }
    }
    if ((listeners[1].revents & POLLIN) != 0) {
      socket_fd client(::accept4(control_listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (client) {
        connections_.emplace_back(
            [this, fd = std::move(client)]() mutable { relay_control(std::move(fd)); });
      }
    }
  }
}

// One TCTI connection (tpm2-tss 3.2's swtpm TCTI opens one per command; the loop also serves a
// client that keeps its connection): each command is held for the delay, then passed on, and its
// answer passed back. Timestamps are
// taken when the whole command has arrived and when the whole answer has left, which is when the
// TCTI's caller is waiting for the TPM.
void slow_tpm_proxy::serve_commands(socket_fd client) {
  const auto tpm = connect_to(upstream_port_);
  if (!tpm) {
    return;  // the client sees the connection close, as with a TPM that is down
  }
  for (;;) {
    auto command = read_tpm_message(client.get(), stopping_);
    if (!command) {
      return;
    }
    std::size_t index = 0;
    {
      const std::lock_guard lock(mutex_);
      index = commands_.size();
      commands_.push_back(tpm_command{.received = clock::now()});
    }
    std::this_thread::sleep_for(delay_.load());
    std::optional<std::string> response;
    if (send_all(tpm.get(), *command)) {
      response = read_tpm_message(tpm.get(), stopping_);
    }
    const bool answered = response && send_all(client.get(), *response);
    {
      // A command that got no answer stops counting as in flight when the proxy gives up on it.
      const std::lock_guard lock(mutex_);
      commands_[index].ended = clock::now();
      commands_[index].answered = answered;
    }
    if (!answered) {
      return;
    }
  }
}

// The control channel carries no TPM commands: bytes pass unchanged both ways, without delay.
void slow_tpm_proxy::relay_control(socket_fd client) {
  const auto tpm = connect_to(static_cast<std::uint16_t>(upstream_port_ + 1));
  if (!tpm) {
    return;
  }
  std::array<char, 4096> buffer{};
  while (!stopping_) {
    std::array<pollfd, 2> ends{{{.fd = client.get(), .events = POLLIN, .revents = 0},
                                {.fd = tpm.get(), .events = POLLIN, .revents = 0}}};
    if (::poll(ends.data(), ends.size(), poll_ms) <= 0) {
      continue;
    }
    for (std::size_t i = 0; i < ends.size(); ++i) {
      if (ends[i].revents == 0) {
        continue;
      }
      const auto n = ::recv(ends[i].fd, buffer.data(), buffer.size(), 0);
      const int to = ends[1 - i].fd;
      if (n <= 0 || !send_all(to, {buffer.data(), static_cast<std::size_t>(n)})) {
        return;
      }
    }
  }
}

}  // namespace atls::test
