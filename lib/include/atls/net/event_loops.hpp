// Event loops for connections: a fixed number of io_contexts, each run by a thread of its own.
// A connection stays on the loop it was given.
//
// Why not one io_context on N threads: OpenSSL resumes a handshake that paused while the TPM
// signed only on the thread that started it (tls/stream.hpp), and a connection confined to one
// thread needs no strand.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

namespace atls::net {

class event_loops {
 public:
  // Starts `count` threads (at least one), each running its loop until finish().
  explicit event_loops(unsigned count);
  ~event_loops();  // finish(), then waits for every thread
  event_loops(const event_loops&) = delete;
  event_loops& operator=(const event_loops&) = delete;
  event_loops(event_loops&&) = delete;
  event_loops& operator=(event_loops&&) = delete;

  // The next loop's executor, round-robin. Any thread.
  [[nodiscard]] boost::asio::any_io_executor next();

  // Loop i's executor (i < size()), e.g. for a watchdog that checks every loop. Any thread.
  [[nodiscard]] boost::asio::any_io_executor executor(std::size_t i) const;

  // Lets each thread return once its loop has no work left. Any thread.
  void finish();

  [[nodiscard]] std::size_t size() const { return loops_.size(); }

 private:
  struct loop;
  std::vector<std::unique_ptr<loop>> loops_;
  std::atomic<std::size_t> next_{0};
};

}  // namespace atls::net
