// What a listener and its sessions share. Private to the proxy module.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/post.hpp>

#include "atls/net/async_event.hpp"
#include "atls/proxy/mux.hpp"
#include "atls/proxy/server.hpp"

namespace atls::proxy::detail {

// The handle through which drain aborts one session, and a reload hands it a new policy. The
// signal is emitted, and the rest touched, on `executor` only.
struct session_control {
  session_control(std::uint64_t session_id, boost::asio::any_io_executor strand)
      : id(session_id), executor(std::move(strand)) {}

  const std::uint64_t id;
  const boost::asio::any_io_executor executor;  // the session's strand
  boost::asio::cancellation_signal cancel;
  bool aborting = false;  // set just before `cancel` is emitted
  // Set by a reload whose settings ask for it (attested::settings::reattest_on_reload): the
  // settings the open connection must now satisfy. The reload then calls policy_changed, which
  // the session sets while it runs: a callback rather than an event, so that a connection
  // needs no coroutine of its own waiting for reloads.
  std::shared_ptr<const listener_options> policy;
  std::function<void()> policy_changed;
};

// A multiplexing listener's tunnel on one connection loop: the attested connection a session of
// its own runs (see session.cpp, "Multiplexing"), and what the sessions whose connections ride
// on it need from it. Touched on `executor` only.
struct tunnel_handle {
  enum class phase {
    connecting,  // outbound: the connection is being set up and attested
    ready,       // streams may be opened (outbound) or are being accepted (inbound)
    closed,      // ended; `failure` says why when it never became ready
  };

  tunnel_handle(std::shared_ptr<const listener_options> settings,
                const boost::asio::any_io_executor& loop)
      : options(std::move(settings)), executor(loop), changed(loop) {}

  const std::shared_ptr<const listener_options> options;  // the settings it was set up under
  const boost::asio::any_io_executor executor;            // its connection loop
  phase state = phase::connecting;
  // Set by drain, removal or a reload: no new stream; it closes once its streams have finished.
  bool retiring = false;
  std::shared_ptr<mux::tunnel> tunnel;  // once ready
  std::uint64_t connection = 0;         // the id in the tunnel's own log line
  std::string tls_summary;              // for the log lines of the connections it carries
  std::string attestation_summary;
  std::string failure_outcome;  // the tunnel's outcome, for the connections it could not carry
  std::string failure;
  net::async_event changed;  // wakes on every change of state or retiring
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

  // Set by the server before the first connection, for sessions the accept loop does not start
  // (an inbound tunnel's streams). admit_session registers `control` like an accepted
  // connection (drain, reload and the open-connection counts see it) if fewer than `limit`
  // sessions are open, and says whether it did; finish_session undoes it once the session has
  // ended. Any thread.
  std::function<bool(const std::shared_ptr<session_control>& control, std::size_t limit)>
      admit_session;
  std::function<void(std::uint64_t id)> finish_session;

  // Multiplexing (listener_options::multiplex): every tunnel of this listener, on every loop.
  std::mutex tunnels_mutex;
  std::vector<std::weak_ptr<tunnel_handle>> tunnels;
  // Set by the server before the first connection: runs the session that sets up and carries an
  // outbound tunnel, registered like a connection (drain, open connections).
  std::function<void(std::shared_ptr<tunnel_handle>)> start_tunnel;

  void add_tunnel(const std::shared_ptr<tunnel_handle>& handle) {
    const std::lock_guard lock(tunnels_mutex);
    std::erase_if(tunnels, [](const auto& t) { return t.expired(); });
    tunnels.push_back(handle);
  }
  // The live tunnels on `loop`.
  std::vector<std::shared_ptr<tunnel_handle>> tunnels_on(const boost::asio::any_io_executor& loop) {
    std::vector<std::shared_ptr<tunnel_handle>> out;
    const std::lock_guard lock(tunnels_mutex);
    for (const auto& weak : tunnels) {
      if (auto t = weak.lock(); t && t->executor == loop) {
        out.push_back(std::move(t));
      }
    }
    return out;
  }
};

// Every tunnel of the listener stops taking streams and closes once the ones it carries have
// finished (GOAWAY). Any thread.
void retire_tunnels(listener_state& listener);

// Ids for the connection log lines, unique in the process.
std::uint64_t next_connection_id();

// Runs one accepted connection to its end and writes its log line. Runs on control->executor;
// the caller does the bookkeeping when it completes.
boost::asio::awaitable<void> run_session(std::shared_ptr<listener_state> listener,
                                         std::shared_ptr<const listener_options> options,
                                         std::shared_ptr<session_control> control,
                                         boost::asio::generic::stream_protocol::socket client);

// Sets up the outbound tunnel that `handle` stands for (multiplexing) and carries its streams
// until it closes, then writes the tunnel's own log line. Runs on control->executor, which is
// handle->executor.
boost::asio::awaitable<void> run_tunnel_session(std::shared_ptr<listener_state> listener,
                                                std::shared_ptr<session_control> control,
                                                std::shared_ptr<tunnel_handle> handle);

}  // namespace atls::proxy::detail
