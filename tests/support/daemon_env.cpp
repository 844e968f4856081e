#include "support/daemon_env.hpp"

#include <array>
#include <cstring>
#include <stdexcept>
#include <thread>

#include <doctest/doctest.h>

#include "support/daemon.hpp"
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

namespace atls::test {

notify_socket::notify_socket(const std::filesystem::path& path)
    : path_(path), fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.string().size() >= sizeof addr.sun_path) {
    throw std::runtime_error("notify socket path too long: " + path.string());
  }
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (!fd_ || ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("cannot bind notify socket " + path.string());
  }
}

std::optional<std::string> notify_socket::next(std::chrono::milliseconds timeout) {
  pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) {
    return std::nullopt;
  }
  std::array<char, 4096> buffer{};
  const auto n = ::recv(fd_.get(), buffer.data(), buffer.size(), 0);
  if (n <= 0) {
    return std::nullopt;
  }
  return std::string(buffer.data(), static_cast<std::size_t>(n));
}

std::vector<std::string> socket_activate(const std::vector<std::string>& addresses,
                                         const std::vector<std::string>& names) {
  std::vector<std::string> argv{"/usr/bin/systemd-socket-activate"};
  for (const auto& address : addresses) {
    argv.insert(argv.end(), {"-l", address});
  }
  std::string joined;
  for (const auto& name : names) {
    joined += (joined.empty() ? "" : ":") + name;
  }
  if (!joined.empty()) {
    argv.push_back("--fdname=" + joined);
  }
  argv.insert(argv.end(), {"-E", "NOTIFY_SOCKET"});
  return argv;
}

std::vector<std::string> with_watchdog_pid_of_child() {
  // $0 is atlsd and "$@" its arguments: exec keeps the shell's pid, which $$ names.
  return {"/bin/sh", "-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""};
}

atlsd_launch::atlsd_launch(const temp_dir& dir, std::string_view name, std::string_view config_yaml,
                           const launch_options& options)
    : log_(dir / (std::string(name) + ".log")), notify_(dir / (std::string(name) + ".notify")) {
  const auto config = dir.write(std::string(name) + ".yaml", config_yaml);
  process_options launch{.stdout_file = log_, .stderr_file = log_};
  launch.argv = options.wrapper;
  launch.argv.insert(launch.argv.end(), {ATLSD_BINARY, "--config", config.string()});
  launch.env = options.env;
  launch.env["NOTIFY_SOCKET"] = notify_.path().string();
  process_.emplace(launch);
}

atlsd_launch::~atlsd_launch() {
  stop_and_check_clean_exit(*process_, log_);
}

std::string atlsd_launch::wait_ready(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto message = notify_.next(std::chrono::milliseconds(100));
    if (message && message->find("READY=1") != std::string::npos) {
      return std::move(*message);
    }
    if (!process_->running()) {
      throw std::runtime_error("atlsd exited before it was ready:\n" + log());
    }
  }
  throw std::runtime_error("atlsd not ready in time:\n" + log());
}

std::string atlsd_launch::log() const {
  return read_file(log_);
}

bool atlsd_launch::wait_for_log(std::string_view text, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (log().find(text) != std::string::npos) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::optional<int> atlsd_launch::stop(int sig, std::chrono::milliseconds timeout) {
  process_->signal(sig);
  return process_->wait_for(timeout);
}

std::optional<int> atlsd_launch::wait_exit(std::chrono::milliseconds timeout) {
  return process_->wait_for(timeout);
}

}  // namespace atls::test
