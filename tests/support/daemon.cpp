#include "support/daemon.hpp"

#include <array>
#include <cstring>
#include <stdexcept>
#include <thread>

#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

namespace atls::test {

atlsd::atlsd(const temp_dir& dir, std::string_view name, std::string_view config_yaml) {
  const auto config = dir.write(std::string(name) + ".yaml", config_yaml);
  log_ = dir / (std::string(name) + ".log");
  const auto notify_path = dir / (std::string(name) + ".notify");

  notify_ = socket_fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, notify_path.c_str(), sizeof addr.sun_path - 1);
  if (::bind(notify_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("cannot bind notify socket " + notify_path.string());
  }

  process_.emplace(process_options{
      .argv = {ATLSD_BINARY, "--config", config.string()},
      .env = {{"NOTIFY_SOCKET", notify_path.string()}},
      .stdout_file = log_,
      .stderr_file = log_,
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    const auto message = next_notification(std::chrono::milliseconds(100));
    if (message && message->find("READY=1") != std::string::npos) {
      return;
    }
    if (!process_->running()) {
      throw std::runtime_error("atlsd exited before it was ready:\n" + log());
    }
  }
  throw std::runtime_error("atlsd not ready after 20 s:\n" + log());
}

// Every test ends with a graceful stop, so that each one also checks that atlsd drains, exits 0
// and, in the sanitizer build, that ASan, LSan and UBSan found nothing.
atlsd::~atlsd() {
  stop_and_check_clean_exit(*process_, log_);
}

void stop_and_check_clean_exit(process& daemon, const std::filesystem::path& log) {
  if (daemon.running()) {
    daemon.signal(SIGTERM);
    const auto code = daemon.wait_for(std::chrono::seconds(20));
    CHECK_MESSAGE(code.has_value(), "atlsd did not stop on SIGTERM");
    CHECK_MESSAGE(code.value_or(-1) == 0, "atlsd exited with ", code.value_or(-1));
    if (!code) {
      daemon.signal(SIGKILL);
    }
  }
  const auto text = read_file(log);
  for (const char* report : {"AddressSanitizer", "LeakSanitizer", "runtime error:"}) {
    CHECK_MESSAGE(text.find(report) == std::string::npos, "sanitizer report in atlsd log:\n", text);
  }
}

std::string atlsd::log() const {
  return read_file(log_);
}

bool atlsd::wait_for_log(std::string_view text, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto now = log();
    if (const auto at = now.find(text); at != std::string::npos) {
      const auto from = at + text.size() - (text.ends_with('\n') ? 1 : 0);
      if (now.find('\n', from) != std::string::npos) {
        return true;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void atlsd::signal(int sig) const {
  process_->signal(sig);
}

std::optional<int> atlsd::stop(int sig, std::chrono::milliseconds timeout) {
  process_->signal(sig);
  return process_->wait_for(timeout);
}

std::optional<int> atlsd::wait_exit(std::chrono::milliseconds timeout) {
  return process_->wait_for(timeout);
}

std::optional<std::string> atlsd::next_notification(std::chrono::milliseconds timeout) {
  pollfd p{.fd = notify_.get(), .events = POLLIN, .revents = 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) {
    return std::nullopt;
  }
  std::array<char, 4096> buffer{};
  const auto n = ::recv(notify_.get(), buffer.data(), buffer.size(), 0);
  if (n <= 0) {
    return std::nullopt;
  }
  return std::string(buffer.data(), static_cast<std::size_t>(n));
}

run_result atlsctl(std::vector<std::string> args) {
  args.insert(args.begin(), ATLSCTL_BINARY);
  return run(std::move(args), std::chrono::seconds(30));
}

pki make_pki(const temp_dir& dir) {
  const auto out = dir / "pki";
  const auto result =
      run({ATLS_SOURCE_DIR "/tests/certs/gen-certs.sh", out.string()}, std::chrono::seconds(30));
  if (result.exit_code != 0) {
    throw std::runtime_error("gen-certs.sh failed: " + result.err);
  }
  return {out};
}

}  // namespace atls::test
