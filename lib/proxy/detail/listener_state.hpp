// What a listener and its sessions share. Private to the proxy module.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/generic/stream_protocol.hpp>

#include "atls/net/async_event.hpp"
#include "atls/proxy/server.hpp"

namespace atls::proxy::detail {

// The handle through which drain aborts one session, and a reload hands it a new policy. The
// signal is emitted, and the rest touched, on `executor` only.
struct session_control {
  session_control(std::uint64_t session_id, const boost::asio::any_io_executor& strand)
      : id(session_id), executor(strand), policy_changed(strand) {}

  const std::uint64_t id;
  const boost::asio::any_io_executor executor;  // the session's strand
  boost::asio::cancellation_signal cancel;
  bool aborting = false;  // set just before `cancel` is emitted
  // Set by a reload whose settings ask for it (attested::settings::reattest_on_reload): the
  // settings the open connection must now satisfy. policy_changed wakes the session.
  std::shared_ptr<const listener_options> policy;
  net::async_event policy_changed;
};

struct listener_state {
  listener_state(listener_options opts, const boost::asio::any_io_executor& strand)
      : name(opts.name),
        listen(opts.listen),
        current(std::make_shared<const listener_options>(std::move(opts))),
        executor(strand),
        acceptor(strand),
        slot_freed(strand) {}

  // What a reload cannot change without making it another listener.
  const std::string name;
  const net::endpoint_spec listen;
  // The settings new connections start with. A reload replaces them (on `executor`); each session
  // keeps the ones it started with, so open connections never see their settings change.
  std::shared_ptr<const listener_options> current;
  boost::asio::any_io_executor executor;  // the listener's strand: acceptor, slot_freed, stopping,
                                          // current
  boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol> acceptor;
  net::async_event slot_freed;
  bool stopping = false;

  std::mutex mutex;  // guards sessions, which end on their own strands
  std::map<std::uint64_t, std::shared_ptr<session_control>> sessions;

  std::size_t open_sessions() {
    const std::lock_guard lock(mutex);
    return sessions.size();
  }
};

// Runs one accepted connection to its end and writes its log line. Runs on control->executor;
// the caller does the bookkeeping when it completes.
boost::asio::awaitable<void> run_session(std::shared_ptr<listener_state> listener,
                                         std::shared_ptr<const listener_options> options,
                                         std::shared_ptr<session_control> control,
                                         boost::asio::generic::stream_protocol::socket client);

}  // namespace atls::proxy::detail
