#include "atls/net/alongside.hpp"

#include <exception>
#include <utility>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>

#include "atls/net/async_event.hpp"

namespace atls::net {

namespace asio = boost::asio;

asio::awaitable<void> alongside(asio::any_io_executor executor, asio::awaitable<void> here,
                                asio::awaitable<void> beside, ends rule,
                                std::function<void()> on_beside_end) {
  net::async_event beside_ended(executor);
  asio::cancellation_signal cancel_beside;
  bool ended = false;
  std::exception_ptr beside_failure;
  asio::co_spawn(executor, std::move(beside),
                 asio::bind_cancellation_slot(cancel_beside.slot(),
                                              [&ended, &beside_failure, &beside_ended,
                                               &on_beside_end](const std::exception_ptr& e) {
                                                ended = true;
                                                beside_failure = e;
                                                beside_ended.notify_all();
                                                if (on_beside_end) {
                                                  on_beside_end();
                                                }
                                              }));

  std::exception_ptr here_failure;
  try {
    co_await std::move(here);
  } catch (...) {
    here_failure = std::current_exception();
  }

  // `beside` refers to what the caller holds: this frame must not end before it does, not even
  // by the exception Asio throws at a cancelled coroutine's next co_await.
  const bool throwing = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  bool cancelled_beside = false;
  while (!ended) {
    const auto state = co_await asio::this_coro::cancellation_state;
    const bool stop = rule == ends::with_first || here_failure != nullptr ||
                      state.cancelled() != asio::cancellation_type::none;
    if (stop && !cancelled_beside) {
      cancelled_beside = true;
      cancel_beside.emit(asio::cancellation_type::terminal);
    }
    auto [ec] = co_await beside_ended.woken();
    (void)ec;  // `beside` ended, or the caller was cancelled: the loop re-checks
  }
  co_await asio::this_coro::throw_if_cancelled(throwing);
  if (here_failure) {
    std::rethrow_exception(here_failure);
  }
  if (beside_failure && !cancelled_beside) {
    std::rethrow_exception(beside_failure);
  }
}

}  // namespace atls::net
