// An HTTP origin whose faults a test switches while the sidecar in front of it keeps running:
// it can stop listening (connects are refused, as when the workload is down) and listen again on
// the same port, or reset each connection in the middle of its response (the workload crashed
// while answering). Plain blocking sockets, like the other loopback peers, so that it shares no
// code with the proxy under test.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"

namespace atls::test {

class flaky_upstream {
 public:
  enum class mode {
    serve,               // answers each request 200 with the body, then closes
    reset_mid_response,  // sends the headers and part of the body, then a TCP RST
  };

  // Listens on a free 127.0.0.1 port at once, in mode serve. Throws when it cannot bind.
  explicit flaky_upstream(std::string body);
  // Stops accepting and joins every thread; connections still open are closed.
  ~flaky_upstream();
  flaky_upstream(const flaky_upstream&) = delete;
  flaky_upstream& operator=(const flaky_upstream&) = delete;

  [[nodiscard]] std::uint16_t port() const { return port_; }
  // Applies to connections accepted from now on.
  void set_mode(mode m) { mode_ = m; }
  // Closes the listening socket: connects to port() are refused until listen_again().
  void stop_listening();
  // Listens on port() again. Throws when the port cannot be bound (taken meanwhile).
  void listen_again();

  // Connections accepted so far, and how many of them were reset mid-response.
  [[nodiscard]] int accepted() const { return accepted_; }
  [[nodiscard]] int reset() const { return reset_; }

 private:
  void bind_listener();
  void accept_loop();
  void serve(socket_fd client, mode m);

  std::string body_;
  std::uint16_t port_ = 0;
  std::atomic<mode> mode_{mode::serve};
  std::atomic<int> accepted_{0};
  std::atomic<int> reset_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  socket_fd listener_;                // guarded by mutex_; empty while not listening
  std::vector<std::thread> workers_;  // guarded by mutex_
  std::thread acceptor_;
};

}  // namespace atls::test
