#include "support/swtpm.hpp"

#include <chrono>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "support/loopback.hpp"
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

namespace atls::test {

namespace {

// Whether a listener could bind the port now. SO_REUSEADDR as swtpm sets it: a port that only
// connections in TIME_WAIT still name (plenty, on a machine that has just run a load test) is free.
bool port_free(std::uint16_t port) {
  const socket_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int on = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  auto addr = loopback_address(port);
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

}  // namespace

swtpm::swtpm(const temp_dir& dir) : state_(dir / "swtpm") {
  std::filesystem::create_directories(state_);
  // Between choosing the ports and swtpm binding them, a test running in parallel may take one:
  // then choose again.
  for (int start_attempt = 1;; ++start_attempt) {
    choose_ports();
    try {
      start();
      return;
    } catch (const std::runtime_error& e) {
      if (start_attempt == 5 ||
          std::string_view(e.what()).find("Address already in use") == std::string_view::npos) {
        throw;
      }
    }
  }
}

void swtpm::choose_ports() {
  port_ = 0;
  // swtpm takes two ports: the TPM command port and, right above it, its control port.
  for (int attempt = 0; attempt < 200 && port_ == 0; ++attempt) {
    const auto candidate = free_port();
    if (candidate < 65535 && port_free(static_cast<std::uint16_t>(candidate + 1))) {
      port_ = candidate;
    }
  }
  if (port_ == 0) {
    throw std::runtime_error("no two adjacent free ports for swtpm");
  }
}

swtpm::~swtpm() {
  if (process_ && process_->running()) {
    process_->signal(SIGTERM);
    if (!process_->wait_for(std::chrono::seconds(5))) {
      process_->signal(SIGKILL);
    }
  }
}

std::string swtpm::tcti() const {
  return "swtpm:host=127.0.0.1,port=" + std::to_string(port_);
}

void swtpm::kill() {
  process_->signal(SIGKILL);
  (void)process_->wait_for(std::chrono::seconds(5));
  process_.reset();
}

void swtpm::freeze() {
  process_->signal(SIGSTOP);
}

void swtpm::thaw() {
  process_->signal(SIGCONT);
}

void swtpm::start() {
  const auto port = std::to_string(port_);
  const auto ctrl = std::to_string(port_ + 1);
  process_.emplace(process_options{
      .argv = {"swtpm", "socket", "--tpm2", "--server",
               "type=tcp,port=" + port + ",bindaddr=127.0.0.1", "--ctrl",
               "type=tcp,port=" + ctrl + ",bindaddr=127.0.0.1", "--tpmstate",
               "dir=" + state_.string(), "--flags", "not-need-init,startup-clear"},
      .stdout_file = state_ / "swtpm.log",
      .stderr_file = state_ / "swtpm.err",
  });
  for (int i = 0; i < 500; ++i) {
    if (connect_loopback(port_)) {
      return;
    }
    if (!process_->running()) {
      throw std::runtime_error("swtpm exited: " + read_file(state_ / "swtpm.err"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("swtpm did not listen on port " + port);
}

}  // namespace atls::test
