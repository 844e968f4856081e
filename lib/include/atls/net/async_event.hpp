// A broadcast wake-up for coroutines that share one strand (a condition variable without a
// mutex). Waiters re-check their condition after every wake-up.
#pragma once

#include <tuple>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

namespace atls::net {

class async_event {
 public:
  explicit async_event(const boost::asio::any_io_executor& executor);

  // Suspends until notify_all() or until the awaiting coroutine is cancelled. Returns false when
  // the coroutine was cancelled, so that wait loops can end. Call on the event's executor.
  boost::asio::awaitable<bool> wait();

  // The wait alone, not a coroutine around it (no frame is held while it waits), for a caller
  // that re-checks its own condition and the cancellation state after every wake-up.
  boost::asio::awaitable<std::tuple<boost::system::error_code>> woken();

  // Wakes every current waiter. Call on the event's executor.
  void notify_all();

 private:
  boost::asio::steady_timer timer_;
};

}  // namespace atls::net
