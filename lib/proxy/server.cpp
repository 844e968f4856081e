#include "atls/proxy/server.hpp"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <limits>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "atls/metrics/atlsd_metrics.hpp"

#include "detail/listener_state.hpp"
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace atls::proxy {

namespace asio = boost::asio;
// Found by ordinary lookup only, which clang-tidy 14 does not count as a use.
using asio::experimental::awaitable_operators::operator||;  // NOLINT(misc-unused-using-decls)
using detail::listener_state;
using detail::session_control;
using detail::tunnel_handle;
using generic_endpoint = asio::generic::stream_protocol::endpoint;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// How long aborted sessions get to unwind after the drain timeout before drain gives up on them.
constexpr auto abort_grace = std::chrono::seconds(5);

using net::is_inet;
using net::remove_stale_socket;

using acceptor_type = asio::basic_socket_acceptor<asio::generic::stream_protocol>;

// SO_REUSEPORT (Linux 3.9): sockets of the same effective user may bind the same port, and the
// kernel spreads new connections among them. A new atlsd binds while the old one drains, so no
// connection is refused during a restart.
using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

error_code last_system_error() {
  return {errno, boost::system::system_category()};
}

// Opens, binds and listens on a tcp or unix address.
error_code bind_address(acceptor_type& acceptor, asio::io_context& io,
                        const net::endpoint_spec& spec) {
  auto endpoint = net::resolve_listen_address(io.get_executor(), spec);
  if (!endpoint) {
    return endpoint.error();
  }
  error_code ec;
  acceptor.open(endpoint->protocol(), ec);
  if (ec) {
    return ec;
  }
  if (is_inet(*endpoint)) {
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) {
      acceptor.set_option(reuse_port(true), ec);
    }
    if (ec) {
      return ec;
    }
  } else {
    remove_stale_socket(spec);
  }
  acceptor.bind(*endpoint, ec);
  if (!ec) {
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
  }
  return ec;
}

// Adopts a duplicate of the listening socket that systemd passed as `fd`, as it is: systemd
// bound it (ReusePort= and the like are the socket unit's business) and keeps a copy of its own,
// and the caller keeps `fd`. Closing the duplicate (drain) leaves both alone, and there is no
// socket file to remove.
error_code adopt_socket(acceptor_type& acceptor, int fd) {
  int family = 0;
  int protocol = 0;
  int type = 0;
  int listening = 0;
  for (auto [option, value] : {std::pair{SO_DOMAIN, &family}, std::pair{SO_PROTOCOL, &protocol},
                               std::pair{SO_TYPE, &type}, std::pair{SO_ACCEPTCONN, &listening}}) {
    socklen_t size = sizeof(int);
    if (::getsockopt(fd, SOL_SOCKET, option, value, &size) != 0) {
      return last_system_error();
    }
  }
  if (type != SOCK_STREAM || listening == 0) {
    return net::errc::systemd_socket_not_listening;
  }
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) {
    return last_system_error();
  }
  error_code ec;
  acceptor.assign(asio::generic::stream_protocol(family, protocol), copy, ec);
  if (ec) {
    ::close(copy);
  }
  return ec;
}

// A listener that was bound but will never accept: its socket closes, and a unix socket file it
// created goes with it.
void abandon(listener_state& listener) {
  error_code ignored;
  listener.acceptor.close(ignored);
  if (const auto* u = std::get_if<net::unix_endpoint>(&listener.listen)) {
    std::error_code fs_ignored;
    std::filesystem::remove(u->path, fs_ignored);
  }
}

// The listener among `bound` that listens on exactly the address `acceptor` does, if any.
const listener_state* same_address(const std::vector<std::shared_ptr<listener_state>>& bound,
                                   const acceptor_type& acceptor) {
  error_code ec;
  const auto address = acceptor.local_endpoint(ec);
  if (ec) {
    return nullptr;
  }
  for (const auto& other : bound) {
    if (other->acceptor.local_endpoint(ec) == address && !ec) {
      return other.get();
    }
  }
  return nullptr;
}

// "a, b", for an error that says which names systemd did pass.
std::string names_of(const std::map<std::string, int>& activated) {
  if (activated.empty()) {
    return "none";
  }
  std::string out;
  for (const auto& [name, fd] : activated) {
    out += (out.empty() ? "'" : ", '") + name + "'";
  }
  return out;
}

}  // namespace

struct server::state {
  state(asio::io_context& context, net::event_loops& loops)
      : io(context),
        connection_loops(loops),
        executor(asio::make_strand(context)),
        all_closed(executor) {}

  asio::io_context& io;
  net::event_loops& connection_loops;
  asio::any_io_executor executor;  // drain bookkeeping
  net::async_event all_closed;
  std::vector<std::shared_ptr<listener_state>> listeners;  // on `executor` once started
  // Removed by a reload and still finishing their connections (on `executor`).
  std::vector<std::shared_ptr<listener_state>> retiring;
  // What systemd passed (name -> fd), kept so that a reload can adopt a socket again.
  std::map<std::string, int> activated;
  // Set by drain (on `executor`): from then on a reload changes nothing. A reload that was
  // already under way when drain began checks it again before it commits its new listeners.
  bool draining = false;
  std::atomic<std::size_t> open{0};

  // Registers `control` as an open session of `listener` if fewer than `limit` are open: drain
  // can abort it, reloads reach it, and it counts as open until finish_session. Any thread.
  bool admit(const std::shared_ptr<listener_state>& listener,
             const std::shared_ptr<session_control>& control, std::size_t limit) {
    {
      const std::lock_guard lock(listener->mutex);
      if (listener->sessions.size() >= limit) {
        return false;
      }
      listener->sessions.emplace(control->id, control);
    }
    ++open;
    metrics::process().open_connections.with({listener->name}).inc();
    return true;
  }

  static void finish_session(const std::shared_ptr<state>& self,
                             const std::shared_ptr<listener_state>& listener, std::uint64_t id) {
    {
      const std::lock_guard lock(listener->mutex);
      listener->sessions.erase(id);
    }
    asio::post(listener->executor, [listener] { listener->slot_freed.notify_all(); });
    --self->open;
    metrics::process().open_connections.with({listener->name}).dec();
    asio::post(self->executor, [self] { self->all_closed.notify_all(); });
  }

  // Runs `body` (a session of the listener, on `executor`) as a connection: drain can abort it,
  // and it counts as open until it completes.
  template <class Body>
  void spawn(const std::shared_ptr<state>& self, const std::shared_ptr<listener_state>& listener,
             const asio::any_io_executor& loop, Body body) {
    auto control = std::make_shared<session_control>(detail::next_connection_id(), loop);
    admit(listener, control, std::numeric_limits<std::size_t>::max());
    // The coroutine itself, not a function that makes it: Asio's entry point would hold the
    // function, and what it captured, for the session's life.
    asio::co_spawn(
        control->executor, body(control),
        asio::bind_cancellation_slot(
            control->cancel.slot(), [self, listener, control](const std::exception_ptr& e) {
              if (e) {
                spdlog::error("listener={} id={} session failed: {}", listener->name, control->id,
                              describe_escaped(e));
              }
              finish_session(self, listener, control->id);
            }));
  }

  void spawn_session(const std::shared_ptr<state>& self,
                     const std::shared_ptr<listener_state>& listener,
                     std::shared_ptr<const listener_options> options,
                     asio::generic::stream_protocol::socket socket) {
    auto loop = socket.get_executor();
    spawn(self, listener, loop,
          [listener, options = std::move(options),
           s = std::move(socket)](std::shared_ptr<session_control> control) mutable {
            return detail::run_session(listener, std::move(options), std::move(control),
                                       std::move(s));
          });
  }

  void spawn_tunnel(const std::shared_ptr<state>& self,
                    const std::shared_ptr<listener_state>& listener,
                    std::shared_ptr<tunnel_handle> handle) {
    auto loop = handle->executor;
    spawn(self, listener, loop,
          [listener, handle = std::move(handle)](std::shared_ptr<session_control> control) {
            return detail::run_tunnel_session(listener, std::move(control), handle);
          });
  }

  // Runs on the listener's strand. Beyond max_connections it stops accepting, so further
  // clients wait in the kernel's backlog instead of being accepted and starved.
  static asio::awaitable<void> accept_loop(std::shared_ptr<state> self,
                                           std::shared_ptr<listener_state> listener) {
    for (;;) {
      while (!listener->stopping &&
             listener->open_sessions() >= listener->current->max_connections) {
        if (!co_await listener->slot_freed.wait()) {
          co_return;
        }
      }
      if (listener->stopping) {
        co_return;
      }
      auto loop = self->connection_loops.next();
      auto [ec, socket] = co_await listener->acceptor.async_accept(loop, use_tuple);
      if (ec) {
        if (listener->stopping) {
          co_return;
        }
        spdlog::warn("listener={} accept failed: {}", listener->name, ec.message());
        // Out of descriptors or memory: back off rather than spin on the same error.
        asio::steady_timer pause(listener->executor, std::chrono::milliseconds(100));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      error_code ignored;
      if (is_inet(socket.local_endpoint(ignored))) {
        socket.set_option(asio::ip::tcp::no_delay(true), ignored);
      }
      self->spawn_session(self, listener, listener->current, std::move(socket));
    }
  }

  // Ends every open session of the listener at once: each logs itself as aborted.
  static void abort_sessions(listener_state& listener) {
    const std::lock_guard lock(listener.mutex);
    for (const auto& [id, control] : listener.sessions) {
      asio::post(control->executor, [control = control] {
        control->aborting = true;
        control->cancel.emit(asio::cancellation_type::terminal);
      });
    }
  }

  // reattest_on_reload: each open session is told to re-check its peer under `settings`.
  static void hand_policy_to_sessions(listener_state& listener,
                                      const std::shared_ptr<const listener_options>& settings) {
    const std::lock_guard lock(listener.mutex);
    for (const auto& [id, control] : listener.sessions) {
      asio::post(control->executor, [control = control, settings] {
        control->policy = settings;
        if (control->policy_changed) {
          control->policy_changed();
        }
      });
    }
  }

  // Runs on the listener's strand: accepting ends, and its socket file goes unless another
  // listener now serves that path.
  static asio::awaitable<void> stop_accepting(std::shared_ptr<listener_state> listener,
                                              bool remove_socket_file) {
    listener->stopping = true;
    retire_tunnels(*listener);
    error_code ignored;
    listener->acceptor.close(ignored);
    listener->slot_freed.notify_all();
    if (const auto* u = std::get_if<net::unix_endpoint>(&listener->listen);
        u != nullptr && remove_socket_file) {
      std::error_code fs_ignored;
      std::filesystem::remove(u->path, fs_ignored);
    }
    co_return;
  }

  // A listener a reload removed: it has stopped accepting; its connections may finish within
  // `timeout`, then the rest are aborted. Runs on the listener's strand, then lets the server
  // forget it, which releases its settings (and their background work, such as a passport).
  static asio::awaitable<void> retire(std::shared_ptr<state> self,
                                      std::shared_ptr<listener_state> listener,
                                      std::chrono::milliseconds timeout) {
    asio::steady_timer timer(listener->executor);
    const auto wait_while_open =
        [&](std::chrono::steady_clock::time_point deadline) -> asio::awaitable<void> {
      while (listener->open_sessions() > 0 && std::chrono::steady_clock::now() < deadline) {
        timer.expires_at(deadline);
        co_await (listener->slot_freed.wait() || timer.async_wait(use_tuple));
      }
    };
    auto draining = wait_while_open(std::chrono::steady_clock::now() + timeout);
    co_await std::move(draining);
    if (listener->open_sessions() > 0) {
      spdlog::warn("listener={} removed by reload: aborting {} connection(s) after {} ms",
                   listener->name, listener->open_sessions(), timeout.count());
      abort_sessions(*listener);
      auto aborting = wait_while_open(std::chrono::steady_clock::now() + abort_grace);
      co_await std::move(aborting);
    }
    spdlog::info("listener={} removed by reload: drained", listener->name);
    auto forget = [self, listener]() -> asio::awaitable<void> {
      std::erase(self->retiring, listener);
      co_return;
    };
    auto forgotten = asio::co_spawn(self->executor, std::move(forget), asio::use_awaitable);
    co_await std::move(forgotten);
  }

  // Runs on the server's strand: waits for sessions to end, aborts the rest at the timeout.
  static asio::awaitable<void> drain_sessions(std::shared_ptr<state> self,
                                              std::chrono::milliseconds timeout) {
    if (self->open > 0) {
      spdlog::info("draining {} open connection(s), up to {} ms", self->open.load(),
                   timeout.count());
    }
    co_await self->wait_until_closed(std::chrono::steady_clock::now() + timeout);
    if (self->open == 0) {
      co_return;
    }
    spdlog::warn("drain timeout: aborting {} connection(s)", self->open.load());
    for (const auto& listener : self->listeners) {
      abort_sessions(*listener);
    }
    for (const auto& listener : self->retiring) {
      abort_sessions(*listener);
    }
    co_await self->wait_until_closed(std::chrono::steady_clock::now() + abort_grace);
    if (self->open > 0) {
      spdlog::error("{} connection(s) did not stop after abort", self->open.load());
    }
  }

  asio::awaitable<void> wait_until_closed(std::chrono::steady_clock::time_point deadline) {
    asio::steady_timer timer(executor);
    while (open > 0 && std::chrono::steady_clock::now() < deadline) {
      timer.expires_at(deadline);
      co_await (all_closed.wait() || timer.async_wait(use_tuple));
    }
  }
};

server::server(asio::io_context& io, net::event_loops& connection_loops)
    : state_(std::make_shared<state>(io, connection_loops)) {}

server::~server() = default;

namespace {

// Binds one listener, or adopts its systemd socket, refusing an address that one of `others`
// already has. `adopted` records which passed sockets were taken.
detailed_result<void> bind_one(asio::io_context& io, listener_state& listener,
                               const std::vector<std::shared_ptr<listener_state>>& others,
                               const std::map<std::string, int>& activated,
                               std::map<std::string, bool>& adopted) {
  const auto where = "listener '" + listener.name + "' on " + net::to_string(listener.listen);
  const auto* systemd = std::get_if<net::systemd_socket>(&listener.listen);
  if (systemd == nullptr) {
    if (const auto ec = bind_address(listener.acceptor, io, listener.listen)) {
      return failure{ec, where};
    }
    // SO_REUSEPORT would let two of our own listeners share an address (say localhost:8443
    // and 127.0.0.1:8443), the kernel splitting connections between them at random: that
    // stays the error it was without it.
    if (const auto* twin = same_address(others, listener.acceptor)) {
      return failure{asio::error::address_in_use,
                     where + " (listener '" + twin->name + "' has that address)"};
    }
    return {};
  }
  const auto found = activated.find(systemd->name);
  if (found == activated.end()) {
    return failure{net::errc::systemd_socket_not_passed,
                   where + " (systemd passed: " + names_of(activated) + ")"};
  }
  if (const auto ec = adopt_socket(listener.acceptor, found->second)) {
    return failure{ec, where + " (fd " + std::to_string(found->second) + ")"};
  }
  adopted[systemd->name] = true;
  error_code ignored;
  spdlog::info("listener={} adopted the socket systemd passed as '{}', listening on {}",
               listener.name, systemd->name,
               net::to_string(listener.acceptor.local_endpoint(ignored)));
  return {};
}

void start_accepting(const std::shared_ptr<server::state>& self,
                     const std::shared_ptr<listener_state>& listener);

}  // namespace

detailed_result<void> server::bind(std::vector<listener_options> listeners,
                                   const std::map<std::string, int>& activated) {
  std::vector<std::shared_ptr<listener_state>> bound;
  std::map<std::string, bool> adopted;  // by name: whether a listener took it
  for (const auto& [name, fd] : activated) {
    adopted.emplace(name, false);
  }
  for (auto& options : listeners) {
    auto listener =
        std::make_shared<listener_state>(std::move(options), asio::make_strand(state_->io));
    if (auto r = bind_one(state_->io, *listener, bound, activated, adopted); !r) {
      return r.error();
    }
    bound.push_back(std::move(listener));
  }
  for (const auto& [name, used] : adopted) {
    if (!used) {
      spdlog::warn("systemd passed a socket named '{}' that no listener uses (listen: systemd:{})",
                   name, name);
    }
  }
  state_->listeners = std::move(bound);
  state_->activated = activated;
  return {};
}

// Runs on the server's strand, so that it never overlaps a drain or another reload. Every new
// socket is bound before anything changes: one that fails leaves the running listeners as they
// were.
asio::awaitable<detailed_result<reload_report>> server::reconfigure(
    std::vector<listener_options> next, std::chrono::milliseconds drain_timeout) {
  auto self = state_;
  auto apply = [self, next = std::move(next),
                drain_timeout]() mutable -> asio::awaitable<detailed_result<reload_report>> {
    if (self->draining) {
      co_return failure{asio::error::operation_aborted, "atlsd is draining"};
    }
    reload_report report;
    std::vector<std::pair<std::shared_ptr<listener_state>, listener_options>> kept;
    std::vector<std::shared_ptr<listener_state>> added;
    std::map<std::string, bool> adopted;
    for (auto& options : next) {
      const auto old = std::ranges::find_if(self->listeners, [&](const auto& l) {
        return l->name == options.name && l->listen == options.listen;
      });
      if (old != self->listeners.end()) {
        kept.emplace_back(*old, std::move(options));
        continue;
      }
      auto listener =
          std::make_shared<listener_state>(std::move(options), asio::make_strand(self->io));
      // A new listener may take over the address of one this reload removes (SO_REUSEPORT),
      // not that of one it keeps, nor another new one's.
      std::vector<std::shared_ptr<listener_state>> others = added;
      for (const auto& [k, unused] : kept) {
        others.push_back(k);
      }
      auto bound = bind_one(self->io, *listener, others, self->activated, adopted);
      if (!bound) {
        for (const auto& a : added) {
          abandon(*a);
        }
        co_return bound.error();
      }
      added.push_back(std::move(listener));
    }
    std::vector<std::shared_ptr<listener_state>> removed;
    for (const auto& l : self->listeners) {
      const bool stays = std::ranges::any_of(kept, [&](const auto& k) { return k.first == l; });
      if (!stays) {
        removed.push_back(l);
      }
    }

    // Commit. Kept listeners take their new settings for the connections they accept next.
    std::vector<std::shared_ptr<listener_state>> listeners;
    for (auto& [listener, options] : kept) {
      auto settings = std::make_shared<const listener_options>(std::move(options));
      auto swap = [listener = listener, settings]() -> asio::awaitable<void> {
        listener->current = settings;
        listener->slot_freed.notify_all();  // max_connections may have grown
        // A tunnel set up under the replaced settings carries no new stream (find_tunnel). Told
        // now, an idle one closes at once instead of holding an attested connection, trusted
        // under the old policy, until its idle timeout or the next connection on its loop.
        retire_tunnels(*listener);
        if (settings->attestation && settings->attestation->reattest_on_reload) {
          state::hand_policy_to_sessions(*listener, settings);
        }
        co_return;
      };
      auto swapped = asio::co_spawn(listener->executor, std::move(swap), asio::use_awaitable);
      co_await std::move(swapped);
      report.kept.push_back(listener->name);
      listeners.push_back(listener);
    }
    for (const auto& listener : removed) {
      // Its unix socket file stays when a new listener has just bound the same path.
      const bool path_reused =
          std::ranges::any_of(added, [&](const auto& a) { return a->listen == listener->listen; });
      auto stop = [listener, path_reused]() {
        return state::stop_accepting(listener, !path_reused);
      };
      auto stopped = asio::co_spawn(listener->executor, std::move(stop), asio::use_awaitable);
      co_await std::move(stopped);
      report.removed.push_back(listener->name);
      self->retiring.push_back(listener);
      auto drain = [self, listener, drain_timeout]() {
        return state::retire(self, listener, drain_timeout);
      };
      asio::co_spawn(listener->executor, std::move(drain),
                     [name = listener->name](const std::exception_ptr& e) {
                       if (e) {
                         spdlog::error("listener={} drain after reload failed: {}", name,
                                       describe_escaped(e));
                       }
                     });
    }
    // Back on the server's strand, with no suspension from here to the assignment: a drain that
    // began while the commit above awaited took its list of listeners without the new ones, so
    // they never start. The kept and removed ones are drain's already, and its list stays as it
    // took it (drain clears it at the end, which may already have happened).
    if (self->draining) {
      for (const auto& listener : added) {
        abandon(*listener);
      }
      co_return failure{asio::error::operation_aborted,
                        "atlsd began draining during the reload; no listener was added"};
    }
    for (const auto& listener : added) {
      report.added.push_back(listener->name);
      listeners.push_back(listener);
      start_accepting(self, listener);
    }
    self->listeners = std::move(listeners);
    co_return report;
  };
  auto applied = asio::co_spawn(self->executor, std::move(apply), asio::use_awaitable);
  auto outcome = co_await std::move(applied);
  co_return outcome;
}

namespace {

void start_accepting(const std::shared_ptr<server::state>& self,
                     const std::shared_ptr<listener_state>& listener) {
  // Weak: the listener keeps this function, and the server keeps the listener.
  listener->start_tunnel = [weak_self = std::weak_ptr(self),
                            weak_listener = std::weak_ptr(listener)](auto handle) {
    auto server = weak_self.lock();
    auto owner = weak_listener.lock();
    if (server && owner) {
      // Posted: the caller is a session waiting for this tunnel, which must not start inside it.
      asio::post(handle->executor, [server, owner, handle]() mutable {
        server->spawn_tunnel(server, owner, std::move(handle));
      });
      return;
    }
    // Called on the handle's loop, by the session that waits for it.
    handle->state = tunnel_handle::phase::closed;
    handle->failure = "atlsd is shutting down";
    handle->changed.notify_all();
  };
  listener->admit_session =
      [weak_self = std::weak_ptr(self), weak_listener = std::weak_ptr(listener)](
          const std::shared_ptr<session_control>& control, std::size_t limit) {
        auto live_server = weak_self.lock();
        auto live_listener = weak_listener.lock();
        return live_server && live_listener && live_server->admit(live_listener, control, limit);
      };
  listener->finish_session = [weak_self = std::weak_ptr(self),
                              weak_listener = std::weak_ptr(listener)](std::uint64_t id) {
    auto live_server = weak_self.lock();
    auto live_listener = weak_listener.lock();
    if (live_server && live_listener) {
      server::state::finish_session(live_server, live_listener, id);
    }
  };
  const auto& options = *listener->current;
  spdlog::info("listener={} mode={} listen={} upstream={} max_connections={}", listener->name,
               options.mode == mode::inbound ? "inbound" : "outbound",
               net::to_string(listener->listen), net::to_string(options.upstream),
               options.max_connections);
  asio::co_spawn(
      listener->executor, [self, listener] { return server::state::accept_loop(self, listener); },
      [name = listener->name](const std::exception_ptr& e) {
        if (e) {
          spdlog::critical("listener={} stopped accepting: {}", name, describe_escaped(e));
        }
      });
}

}  // namespace

void server::start() {
  for (const auto& listener : state_->listeners) {
    start_accepting(state_, listener);
  }
}

// GCC 12 destroys a capturing lambda twice when it is a temporary inside a co_await expression
// (the bug behind asio issue #858), so the lambdas below are named before they are awaited.
asio::awaitable<void> server::drain(std::chrono::milliseconds timeout) {
  auto self = state_;
  // The list as the server's strand sees it: a reload may have changed it.
  auto snapshot = [self]() -> asio::awaitable<std::vector<std::shared_ptr<listener_state>>> {
    self->draining = true;
    co_return self->listeners;
  };
  auto taking = asio::co_spawn(self->executor, std::move(snapshot), asio::use_awaitable);
  const auto listeners = co_await std::move(taking);
  for (const auto& listener : listeners) {
    auto stop = [listener]() { return state::stop_accepting(listener, true); };
    auto stopped = asio::co_spawn(listener->executor, std::move(stop), asio::use_awaitable);
    co_await std::move(stopped);
  }
  auto wait_for_sessions = [self, timeout]() { return state::drain_sessions(self, timeout); };
  auto drained = asio::co_spawn(self->executor, std::move(wait_for_sessions), asio::use_awaitable);
  co_await std::move(drained);
  // The listeners' settings own background work on the daemon's loop (a passport's refreshes):
  // released with them, it stops, and the loop can run out of work.
  auto release = [self]() -> asio::awaitable<void> {
    self->listeners.clear();
    co_return;
  };
  auto released = asio::co_spawn(self->executor, std::move(release), asio::use_awaitable);
  co_await std::move(released);
}

std::size_t server::open_connections() const {
  return state_->open;
}

}  // namespace atls::proxy

namespace atls::proxy::detail {

std::uint64_t next_connection_id() {
  static std::atomic<std::uint64_t> next{1};
  return next++;
}

void retire_tunnels(listener_state& listener) {
  const std::lock_guard lock(listener.tunnels_mutex);
  for (const auto& weak : listener.tunnels) {
    if (auto handle = weak.lock()) {
      boost::asio::post(handle->executor, [handle] {
        handle->retiring = true;
        handle->changed.notify_all();
      });
    }
  }
}

}  // namespace atls::proxy::detail
