#include "atls/proxy/server.hpp"

#include <atomic>
#include <filesystem>

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

#include "detail/listener_state.hpp"

namespace atls::proxy {

namespace asio = boost::asio;
// Found by ordinary lookup only, which clang-tidy 14 does not count as a use.
using asio::experimental::awaitable_operators::operator||;  // NOLINT(misc-unused-using-decls)
using detail::listener_state;
using detail::session_control;
using generic_endpoint = asio::generic::stream_protocol::endpoint;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// How long aborted sessions get to unwind after the drain timeout before drain gives up on them.
constexpr auto abort_grace = std::chrono::seconds(5);

result<generic_endpoint> listen_endpoint(asio::io_context& io, const net::endpoint_spec& spec) {
  if (const auto* u = std::get_if<net::unix_endpoint>(&spec)) {
    return generic_endpoint{asio::local::stream_protocol::endpoint(u->path)};
  }
  const auto& tcp = std::get<net::tcp_endpoint>(spec);
  asio::ip::tcp::resolver resolver(io);
  error_code ec;
  const auto results =
      resolver.resolve(tcp.host, std::to_string(tcp.port), asio::ip::tcp::resolver::passive, ec);
  // The generic endpoint converts from anything, so the error must be placed explicitly.
  if (ec) {
    return {boost::system::in_place_error, ec};
  }
  if (results.empty()) {
    return {boost::system::in_place_error, asio::error::host_not_found};
  }
  return generic_endpoint{results.begin()->endpoint()};
}

// A unix socket file left by a previous run would make bind() fail with EADDRINUSE. Only a
// socket is ever removed, never a regular file that happens to have the name.
void remove_stale_socket(const net::endpoint_spec& spec) {
  if (const auto* u = std::get_if<net::unix_endpoint>(&spec)) {
    std::error_code ec;
    if (std::filesystem::is_socket(u->path, ec)) {
      std::filesystem::remove(u->path, ec);
    }
  }
}

bool is_inet(const generic_endpoint& endpoint) {
  const auto family = endpoint.data()->sa_family;
  return family == AF_INET || family == AF_INET6;
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
  std::vector<std::shared_ptr<listener_state>> listeners;
  std::atomic<std::uint64_t> next_id{1};
  std::atomic<std::size_t> open{0};

  static void finish_session(const std::shared_ptr<state>& self,
                             const std::shared_ptr<listener_state>& listener, std::uint64_t id) {
    {
      const std::lock_guard lock(listener->mutex);
      listener->sessions.erase(id);
    }
    asio::post(listener->executor, [listener] { listener->slot_freed.notify_all(); });
    --self->open;
    asio::post(self->executor, [self] { self->all_closed.notify_all(); });
  }

  void spawn_session(const std::shared_ptr<state>& self,
                     const std::shared_ptr<listener_state>& listener,
                     asio::generic::stream_protocol::socket socket) {
    auto control = std::make_shared<session_control>();
    control->id = next_id++;
    control->executor = socket.get_executor();
    {
      const std::lock_guard lock(listener->mutex);
      listener->sessions.emplace(control->id, control);
    }
    ++open;
    asio::co_spawn(
        control->executor,
        [listener, control, s = std::move(socket)]() mutable {
          return detail::run_session(listener, control, std::move(s));
        },
        asio::bind_cancellation_slot(
            control->cancel.slot(), [self, listener, control](const std::exception_ptr& e) {
              if (e) {
                try {
                  std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                  spdlog::error("listener={} id={} session failed: {}", listener->options.name,
                                control->id, ex.what());
                }
              }
              finish_session(self, listener, control->id);
            }));
  }

  // Runs on the listener's strand. Beyond max_connections it stops accepting, so further
  // clients wait in the kernel's backlog instead of being accepted and starved.
  static asio::awaitable<void> accept_loop(std::shared_ptr<state> self,
                                           std::shared_ptr<listener_state> listener) {
    for (;;) {
      while (!listener->stopping &&
             listener->open_sessions() >= listener->options.max_connections) {
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
        spdlog::warn("listener={} accept failed: {}", listener->options.name, ec.message());
        // Out of descriptors or memory: back off rather than spin on the same error.
        asio::steady_timer pause(listener->executor, std::chrono::milliseconds(100));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      error_code ignored;
      if (is_inet(socket.local_endpoint(ignored))) {
        socket.set_option(asio::ip::tcp::no_delay(true), ignored);
      }
      self->spawn_session(self, listener, std::move(socket));
    }
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
      const std::lock_guard lock(listener->mutex);
      for (const auto& [id, control] : listener->sessions) {
        asio::post(control->executor, [control = control] {
          control->aborting = true;
          control->cancel.emit(asio::cancellation_type::terminal);
        });
      }
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

detailed_result<void> server::bind(std::vector<listener_options> listeners) {
  std::vector<std::shared_ptr<listener_state>> bound;
  for (auto& options : listeners) {
    auto listener =
        std::make_shared<listener_state>(std::move(options), asio::make_strand(state_->io));
    const auto where =
        "listener '" + listener->options.name + "' on " + net::to_string(listener->options.listen);
    auto endpoint = listen_endpoint(state_->io, listener->options.listen);
    if (!endpoint) {
      return failure{endpoint.error(), where};
    }
    auto& acceptor = listener->acceptor;
    error_code ec;
    acceptor.open(endpoint->protocol(), ec);
    if (ec) {
      return failure{ec, where};
    }
    if (is_inet(*endpoint)) {
      acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    } else {
      remove_stale_socket(listener->options.listen);
    }
    acceptor.bind(*endpoint, ec);
    if (!ec) {
      acceptor.listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
      return failure{ec, where};
    }
    bound.push_back(std::move(listener));
  }
  state_->listeners = std::move(bound);
  return {};
}

void server::start() {
  for (const auto& listener : state_->listeners) {
    spdlog::info("listener={} mode={} listen={} upstream={} max_connections={}",
                 listener->options.name,
                 listener->options.mode == mode::inbound ? "inbound" : "outbound",
                 net::to_string(listener->options.listen),
                 net::to_string(listener->options.upstream), listener->options.max_connections);
    asio::co_spawn(
        listener->executor,
        [self = state_, listener] { return state::accept_loop(self, listener); },
        [name = listener->options.name](const std::exception_ptr& e) {
          if (e) {
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& ex) {
              spdlog::critical("listener={} stopped accepting: {}", name, ex.what());
            }
          }
        });
  }
}

// GCC 12 destroys a capturing lambda twice when it is a temporary inside a co_await expression
// (the bug behind asio issue #858), so the lambdas below are named before they are awaited.
asio::awaitable<void> server::drain(std::chrono::milliseconds timeout) {
  auto self = state_;
  for (const auto& listener : self->listeners) {
    auto stop_accepting = [listener]() -> asio::awaitable<void> {
      listener->stopping = true;
      error_code ignored;
      listener->acceptor.close(ignored);
      listener->slot_freed.notify_all();
      if (const auto* u = std::get_if<net::unix_endpoint>(&listener->options.listen)) {
        std::error_code fs_ignored;
        std::filesystem::remove(u->path, fs_ignored);
      }
      co_return;
    };
    auto stopped =
        asio::co_spawn(listener->executor, std::move(stop_accepting), asio::use_awaitable);
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
