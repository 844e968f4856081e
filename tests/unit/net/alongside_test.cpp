#include "atls/net/alongside.hpp"

#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <doctest/doctest.h>

namespace atls::net {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// A branch that sleeps `for_how_long` and notes how it ended: "done" or "cancelled".
asio::awaitable<void> sleeper(std::chrono::milliseconds for_how_long, std::vector<std::string>& log,
                              std::string name) {
  asio::steady_timer timer(co_await asio::this_coro::executor, for_how_long);
  auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  log.push_back(name + (ec ? " cancelled" : " done"));
}

asio::awaitable<void> thrower() {
  co_await asio::this_coro::executor;
  throw std::runtime_error("branch failed");
}

struct outcome {
  bool completed = false;
  std::string failure;
  std::chrono::steady_clock::duration took{};
};

// Runs `body` on `io`; `cancel_after` emits a cancellation at it, if set.
outcome run(asio::io_context& io, asio::awaitable<void> body,
            std::chrono::milliseconds cancel_after = 0ms) {
  asio::cancellation_signal cancel;
  outcome out;
  const auto started = std::chrono::steady_clock::now();
  asio::co_spawn(io, std::move(body),
                 asio::bind_cancellation_slot(cancel.slot(), [&](const std::exception_ptr& e) {
                   out.completed = true;
                   out.took = std::chrono::steady_clock::now() - started;
                   if (e) {
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& failure) {
                       out.failure = failure.what();
                     }
                   }
                 }));
  asio::steady_timer canceller(io, cancel_after);
  if (cancel_after > 0ms) {
    canceller.async_wait(
        [&](const boost::system::error_code&) { cancel.emit(asio::cancellation_type::terminal); });
  }
  io.run_for(10s);
  io.restart();
  return out;
}

TEST_CASE("alongside with_both ends when the later of the two branches ends, neither cancelled") {
  asio::io_context io;
  std::vector<std::string> log;
  auto body = alongside(io.get_executor(), sleeper(10ms, log, "here"), sleeper(60ms, log, "beside"),
                        ends::with_both);
  const auto out = run(io, std::move(body));
  CHECK(out.completed);
  CHECK(out.failure.empty());
  CHECK(out.took >= 60ms);
  CHECK(log == std::vector<std::string>{"here done", "beside done"});
}

TEST_CASE("alongside with_first cancels the branch beside when the caller's own branch ends") {
  asio::io_context io;
  std::vector<std::string> log;
  auto body = alongside(io.get_executor(), sleeper(10ms, log, "here"), sleeper(5s, log, "beside"),
                        ends::with_first);
  const auto out = run(io, std::move(body));
  CHECK(out.completed);
  CHECK(out.took < 2s);
  CHECK(log == std::vector<std::string>{"here done", "beside cancelled"});
}

TEST_CASE("alongside tells the caller when the branch beside ends, so that its own can end") {
  asio::io_context io;
  std::vector<std::string> log;
  asio::steady_timer here_waits(io, asio::steady_timer::time_point::max());
  auto here = [&]() -> asio::awaitable<void> {
    auto [ec] = co_await here_waits.async_wait(asio::as_tuple(asio::use_awaitable));
    log.push_back(ec ? "here woken" : "here expired");
  };
  auto body = alongside(io.get_executor(), here(), sleeper(10ms, log, "beside"), ends::with_first,
                        [&] { here_waits.cancel(); });
  const auto out = run(io, std::move(body));
  CHECK(out.completed);
  CHECK(log == std::vector<std::string>{"beside done", "here woken"});
}

TEST_CASE("a cancelled caller cancels both branches and still waits for both to end") {
  asio::io_context io;
  std::vector<std::string> log;
  auto body = alongside(io.get_executor(), sleeper(5s, log, "here"), sleeper(5s, log, "beside"),
                        ends::with_both);
  const auto out = run(io, std::move(body), 20ms);
  CHECK(out.completed);
  CHECK(out.took < 2s);
  CHECK(log == std::vector<std::string>{"here cancelled", "beside cancelled"});
}

TEST_CASE("a branch's exception reaches the caller once the other branch has ended") {
  asio::io_context io;
  std::vector<std::string> log;
  auto here_fails =
      alongside(io.get_executor(), thrower(), sleeper(5s, log, "beside"), ends::with_both);
  auto out = run(io, std::move(here_fails));
  CHECK(out.failure == "branch failed");
  CHECK(log == std::vector<std::string>{"beside cancelled"});

  log.clear();
  auto beside_fails =
      alongside(io.get_executor(), sleeper(30ms, log, "here"), thrower(), ends::with_both);
  out = run(io, std::move(beside_fails));
  CHECK(out.failure == "branch failed");
  CHECK(log == std::vector<std::string>{"here done"});
}

}  // namespace
}  // namespace atls::net
