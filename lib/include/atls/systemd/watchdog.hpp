// The systemd watchdog (WatchdogSec=, sd_watchdog_enabled(3)): "WATCHDOG=1" every half interval,
// but only while the daemon's event loops are healthy, so that systemd restarts a daemon whose
// loops hang instead of one whose pinging thread alone is still alive.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "atls/systemd/notify.hpp"

namespace atls::systemd {

// The interval systemd asked for: WATCHDOG_USEC, when WATCHDOG_PID is unset or names this
// process. Nothing when the watchdog is off or the variables are malformed (logged). Leaves the
// environment as it is.
[[nodiscard]] std::optional<std::chrono::microseconds> watchdog_interval();

// A loop besides the pinging one whose health the pings vouch for.
struct watched_loop {
  std::string name;  // for the log, e.g. "connection loop 1"
  boost::asio::any_io_executor executor;
};

struct watchdog_options {
  // systemd's interval; pings go out every half of it (sd_watchdog_enabled(3) recommends that).
  std::chrono::microseconds interval{0};
  // Each gets a no-op posted every half interval; while one has not run its no-op for a whole
  // interval, no ping goes out (and a warning names it).
  std::vector<watched_loop> loops;
};

// Pings from a coroutine on `executor`, the daemon's main loop: a tick that comes more than half
// an interval late (that loop was blocked) sends no ping either. The first ping goes out as soon
// as the executor runs. Pinging ends with cancel() or destruction, never by stopping a loop.
// The executors' contexts must outlive the watchdog (their queued work refers to its state only
// through shared ownership, so they may also outlive it).
class watchdog {
 public:
  watchdog(const boost::asio::any_io_executor& executor, watchdog_options options,
           notifier notify = {});
  ~watchdog();  // cancel()
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;
  watchdog(watchdog&&) = delete;
  watchdog& operator=(watchdog&&) = delete;

  // Stops pinging: no tick starts after cancel() returns. Any thread; idempotent. The pinging
  // coroutine then completes, so the executor's loop can run out of work. Throws only what
  // queueing a handler on the executor throws (std::bad_alloc).
  void cancel();

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace atls::systemd
