// atlsd as systemd starts it: with extra environment (WATCHDOG_USEC...) or under a wrapper such as
// systemd-socket-activate, its notifications read from a NOTIFY_SOCKET the fixture owns. Unlike
// atlsd (support/daemon.hpp) it does not wait for READY=1 on construction, so that a test can
// see the READY=1 message itself, or a start-up that fails.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/loopback.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"
#include <signal.h>

namespace atls::test {

// A datagram socket bound at `path`, to be NOTIFY_SOCKET: sd_notify's messages arrive here.
class notify_socket {
 public:
  explicit notify_socket(const std::filesystem::path& path);
  const std::filesystem::path& path() const { return path_; }
  // The next message, if one arrives in time.
  std::optional<std::string> next(std::chrono::milliseconds timeout);

 private:
  std::filesystem::path path_;
  socket_fd fd_;
};

struct launch_options {
  // argv in front of `atlsd --config FILE`, e.g. socket_activate(...); empty: atlsd itself.
  std::vector<std::string> wrapper;
  // Added to the environment, besides NOTIFY_SOCKET.
  std::map<std::string, std::string> env;
};

// `systemd-socket-activate -l ADDR... --fdname=NAME:... -E NOTIFY_SOCKET`: listens on each
// address, and on the first connection execs atlsd with those sockets (LISTEN_FDS and
// LISTEN_FDNAMES). It passes on only the environment it is told to, hence -E.
std::vector<std::string> socket_activate(const std::vector<std::string>& addresses,
                                         const std::vector<std::string>& names);

// /bin/sh -c 'WATCHDOG_PID=$$ exec atlsd ...': a watchdog meant for atlsd's own pid, which the
// test cannot know before the child exists.
std::vector<std::string> with_watchdog_pid_of_child();

class atlsd_launch {
 public:
  // Writes the config to dir/<name>.yaml and starts the wrapper with atlsd; returns at once.
  atlsd_launch(const temp_dir& dir, std::string_view name, std::string_view config_yaml,
               const launch_options& options = {});
  // SIGTERM when still running, then checks what atlsd's destructor checks: exit code 0 and no
  // sanitizer report in the log.
  ~atlsd_launch();
  atlsd_launch(const atlsd_launch&) = delete;
  atlsd_launch& operator=(const atlsd_launch&) = delete;

  // Waits for a message with READY=1 and returns it. Throws with the log when atlsd exits first
  // or is not ready in time. Messages before it are dropped.
  std::string wait_ready(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  std::optional<std::string> next_notification(std::chrono::milliseconds timeout) {
    return notify_.next(timeout);
  }

  std::string log() const;
  bool wait_for_log(std::string_view text,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  std::optional<int> stop(int sig = SIGTERM,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20));
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  pid_t pid() const { return process_->pid(); }

 private:
  std::filesystem::path log_;
  notify_socket notify_;
  std::optional<process> process_;
};

}  // namespace atls::test
