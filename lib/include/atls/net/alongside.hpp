// Two coroutines of one strand run at once, at less memory than Asio's `&&` and `||`.
//
// A parallel group holds a frame of its own and one per branch for as long as it runs; a
// connection that relays both directions and has a watchdog holds two such groups for its whole
// life. Here the caller's coroutine runs one branch itself and spawns only the other.
#pragma once

#include <functional>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

namespace atls::net {

enum class ends {
  with_both,   // `here && beside`: each ends on its own
  with_first,  // `here || beside`: the first to end cancels the other
};

// Runs `beside` as a coroutine of its own on `executor` (the caller's strand) while the caller
// awaits `here`, and completes when both have ended.
//
// The caller's cancellation reaches `here`, and `beside` is cancelled (terminal) once the caller
// is cancelled or, under ends::with_first, once `here` ends. `beside` ending cannot cancel `here`
// (it runs in the caller's coroutine): `on_beside_end` is called then, on the strand, and under
// ends::with_first must make `here` end (say, by waking it to check a flag).
//
// An exception from `here` is rethrown once `beside` has ended; one from `beside` too, unless it
// was cancelled.
boost::asio::awaitable<void> alongside(boost::asio::any_io_executor executor,
                                       boost::asio::awaitable<void> here,
                                       boost::asio::awaitable<void> beside, ends rule,
                                       std::function<void()> on_beside_end = {});

}  // namespace atls::net
