#include "atls/systemd/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "atls/common/result.hpp"

#include <systemd/sd-daemon.h>

namespace atls::systemd {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

long long ms(clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

std::optional<std::chrono::microseconds> watchdog_interval() {
  std::uint64_t usec = 0;
  const int r = sd_watchdog_enabled(0, &usec);
  if (r < 0) {
    spdlog::warn("ignoring the systemd watchdog: WATCHDOG_USEC or WATCHDOG_PID: {}",
                 error_code(-r, boost::system::system_category()).message());
    return std::nullopt;
  }
  if (r == 0 || usec == 0) {
    return std::nullopt;
  }
  return std::chrono::microseconds(usec);
}

struct watchdog::state {
  // A no-op posted to a watched loop, and whether that loop has run it yet.
  struct probe {
    std::shared_ptr<std::atomic<bool>> answered = std::make_shared<std::atomic<bool>>(true);
    clock::time_point posted;
  };

  state(const asio::any_io_executor& executor, watchdog_options opts, notifier n)
      : timer(executor), options(std::move(opts)), notify(n) {
    probes.resize(options.loops.size());
  }

  asio::steady_timer timer;
  const watchdog_options options;
  const notifier notify;
  // Set by cancel() on any thread; the coroutine looks at it after every wait, so it ends at the
  // next tick even if the timer's cancellation could not be queued.
  std::atomic<bool> cancelled{false};
  std::vector<probe> probes;

  // One tick: decides on the ping from what the last ticks left behind, then posts fresh no-ops
  // to the loops that ran theirs. `late` is how far behind its deadline the tick came.
  void tick(clock::duration late, clock::duration period) {
    const auto now = clock::now();
    bool healthy = true;
    if (late > period) {
      spdlog::warn("watchdog: the main loop ran its timer {} ms late; no WATCHDOG=1 this time",
                   ms(late));
      healthy = false;
    }
    for (std::size_t i = 0; i < probes.size(); ++i) {
      const auto& p = probes[i];
      const auto waiting = now - p.posted;
      if (!p.answered->load(std::memory_order_acquire) && waiting >= options.interval) {
        spdlog::warn(
            "watchdog: {} has not run a task posted {} ms ago; no WATCHDOG=1 until it does",
            options.loops[i].name, ms(waiting));
        healthy = false;
      }
    }
    if (healthy) {
      notify.watchdog_ping();
    }
    // A loop that is still busy keeps its older no-op: one at a time, dated when it was posted.
    for (std::size_t i = 0; i < probes.size(); ++i) {
      auto& p = probes[i];
      if (p.answered->exchange(false, std::memory_order_acq_rel)) {
        p.posted = now;
        asio::post(options.loops[i].executor,
                   [answered = p.answered] { answered->store(true, std::memory_order_release); });
      }
    }
  }

  static asio::awaitable<void> run(std::shared_ptr<state> self) {
    // Half the interval, as sd_watchdog_enabled(3) recommends, and never a busy loop.
    const auto period =
        std::max<clock::duration>(self->options.interval / 2, std::chrono::milliseconds(1));
    auto deadline = clock::now();
    while (!self->cancelled) {
      const auto late = clock::now() - deadline;
      self->tick(late, period);
      // After a stall, count from now: the ticks that were missed are not made up in a burst.
      deadline = late > period ? clock::now() + period : deadline + period;
      self->timer.expires_at(deadline);
      auto [ec] = co_await self->timer.async_wait(use_tuple);
      (void)ec;  // cancellation shows in `cancelled`; any other error just means tick now
    }
  }
};

watchdog::watchdog(const asio::any_io_executor& executor, watchdog_options options, notifier notify)
    : state_(std::make_shared<state>(executor, std::move(options), notify)) {
  asio::co_spawn(
      executor, [self = state_] { return state::run(self); },
      [](const std::exception_ptr& e) {
        if (e) {
          spdlog::critical("watchdog stopped pinging: {}", describe_escaped(e));
        }
      });
}

watchdog::~watchdog() {
  try {
    cancel();
  } catch (const std::exception& e) {
    // Queueing the timer's cancellation failed (out of memory): the flag is set, so the
    // coroutine still ends at its next tick, without a ping.
    spdlog::error("watchdog: cannot cancel the timer: {}", e.what());
  }
}

void watchdog::cancel() {
  state_->cancelled = true;
  // The timer belongs to the executor: dispatch runs this at once when the caller is already on
  // it, and queues it otherwise.
  asio::dispatch(state_->timer.get_executor(), [self = state_] { self->timer.cancel(); });
}

}  // namespace atls::systemd
