// A slow TPM for tests: a loopback TCP proxy in front of a swtpm that holds every TPM command for
// a delay the test sets before passing it on. swtpm answers in microseconds, a real TPM takes tens
// to hundreds of milliseconds per signature; with the proxy a test can make the TPM as slow as it
// needs while swtpm stays a correct TPM. The proxy records when each command was in flight, so
// that a test can show the TPM really was busy while it measured something else.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"
#include "support/swtpm.hpp"

namespace atls::test {

class slow_tpm_proxy {
 public:
  using clock = std::chrono::steady_clock;

  // Listens on two adjacent loopback ports in front of upstream's two, because tpm2-tss's swtpm
  // TCTI sends TPM commands to `port` and control commands (locality, reset) to `port + 1`.
  // Starts with no delay. Throws when no two adjacent ports can be bound.
  explicit slow_tpm_proxy(const swtpm& upstream);
  // Stops accepting, ends every connection (within a delay) and joins its threads.
  ~slow_tpm_proxy();
  slow_tpm_proxy(const slow_tpm_proxy&) = delete;
  slow_tpm_proxy& operator=(const slow_tpm_proxy&) = delete;

  // The TCTI configuration string that reaches the swtpm through this proxy.
  [[nodiscard]] std::string tcti() const;
  // From now on, each TPM command waits this long before it goes on to the swtpm.
  void set_delay(std::chrono::milliseconds delay) { delay_ = delay; }

  // TPM commands answered so far.
  [[nodiscard]] int answered() const;
  // TPM commands received and not yet answered (or given up on).
  [[nodiscard]] int in_flight() const;
  // TPM commands whose answer went back within [from, to].
  [[nodiscard]] int answered_between(clock::time_point from, clock::time_point to) const;
  // How long, within [from, to], at least one TPM command was in flight: received from the
  // client, not yet answered. Commands still in flight count up to now.
  [[nodiscard]] clock::duration busy_between(clock::time_point from, clock::time_point to) const;

 private:
  struct tpm_command {
    clock::time_point received;
    clock::time_point ended = clock::time_point::max();  // max: still in flight
    bool answered = false;  // false: the swtpm or the client went away first
  };

  void accept_loop();
  void serve_commands(socket_fd client);
  void relay_control(socket_fd client);

  std::uint16_t upstream_port_ = 0;  // swtpm's command port; its control port is one above
  std::uint16_t port_ = 0;
  socket_fd command_listener_;
  socket_fd control_listener_;
  std::atomic<std::chrono::milliseconds> delay_{std::chrono::milliseconds(0)};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::vector<tpm_command> commands_;  // guarded by mutex_
  // A thread per connection, joined at the end: with a connection per TPM command, a test leaves
  // a few hundred finished threads at most. Touched by the acceptor only, until it is joined.
  std::vector<std::thread> connections_;
  std::thread acceptor_;
};

}  // namespace atls::test
