#include "atls/systemd/notify.hpp"

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <string>

#include <spdlog/spdlog.h>

#include "atls/common/result.hpp"

#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace atls::systemd {

namespace {

// sd_notify() reads NOTIFY_SOCKET on every call and returns 0 when it is unset; the environment
// stays as it is (unset_environment = 0) so that later calls still find it.
void send(const std::string& message) {
  const int r = sd_notify(0, message.c_str());
  if (r < 0) {
    const auto first_line = message.substr(0, message.find('\n'));
    spdlog::warn("cannot tell systemd {}: {}", first_line,
                 error_code(-r, boost::system::system_category()).message());
  }
}

// Each line of a notification is one assignment: a newline inside the text would start another.
std::string one_line(std::string_view text) {
  std::string out(text);
  std::replace(out.begin(), out.end(), '\n', ' ');
  return out;
}

}  // namespace

void notifier::ready(std::string_view status) const {
  send("READY=1\nSTATUS=" + one_line(status) + "\nMAINPID=" + std::to_string(::getpid()));
}

void notifier::reloading() const {
  // systemd orders RELOADING=1 against its own clock: the timestamp must be CLOCK_MONOTONIC,
  // taken now, in microseconds.
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const auto usec = static_cast<unsigned long long>(now.tv_sec) * 1'000'000ULL +
                    static_cast<unsigned long long>(now.tv_nsec) / 1'000ULL;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

void notifier::stopping() const {
  send("STOPPING=1");
}

void notifier::status(std::string_view text) const {
  send("STATUS=" + one_line(text));
}

void notifier::watchdog_ping() const {
  send("WATCHDOG=1");
}

bool notifier::enabled() const {
  const char* socket = std::getenv("NOTIFY_SOCKET");  // NOLINT(concurrency-mt-unsafe): read only
  return socket != nullptr && *socket != '\0';
}

}  // namespace atls::systemd
