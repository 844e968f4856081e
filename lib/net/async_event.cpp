#include "atls/net/async_event.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace atls::net {

namespace asio = boost::asio;

async_event::async_event(const asio::any_io_executor& executor)
    : timer_(executor, asio::steady_timer::time_point::max()) {}

asio::awaitable<std::tuple<boost::system::error_code>> async_event::woken() {
  // The timer never expires: notify_all() cancels it, which is the wake-up.
  return timer_.async_wait(asio::as_tuple(asio::use_awaitable));
}

asio::awaitable<bool> async_event::wait() {
  auto [ec] = co_await woken();
  (void)ec;
  const auto state = co_await asio::this_coro::cancellation_state;
  co_return state.cancelled() == asio::cancellation_type::none;
}

void async_event::notify_all() {
  timer_.cancel();
}

}  // namespace atls::net
