#include "atls/admin/admin_server.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <string_view>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "atls/common/log_quote.hpp"
#include "atls/net/async_event.hpp"

namespace atls::admin {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using protocol = asio::generic::stream_protocol;
using stream_type = beast::basic_stream<protocol, asio::any_io_executor>;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// What a closing connection reads and drops at most, and for how long, before it closes: see
// close_gracefully().
constexpr std::size_t linger_bytes = std::size_t{64} * 1024;
constexpr auto linger_time = std::chrono::seconds(1);

// Log lines quote at most this much of a peer's request target.
constexpr std::size_t logged_target = 200;

using net::is_inet;

bool is_parse_error(const error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

struct reply {
  http::status status = http::status::ok;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  bool allow_get_head = false;  // a 405 says which methods would do
};

reply text(http::status status, std::string body) {
  return {.status = status, .body = std::move(body)};
}

std::string readiness_json(const std::vector<readiness_check>& checks, bool ready) {
  json::array list;
  list.reserve(checks.size());
  for (const auto& check : checks) {
    list.push_back(json::object{{"name", check.name}, {"ok", check.ok}, {"detail", check.detail}});
  }
  const json::object body{{"ready", ready}, {"checks", std::move(list)}};
  return json::serialize(body) + "\n";
}

}  // namespace

struct admin_server::state {
  state(asio::any_io_executor ex, admin_options opts)
      : executor(std::move(ex)),
        options(std::move(opts)),
        acceptor(executor),
        pause(executor),
        slot_freed(executor) {}

  asio::any_io_executor executor;
  admin_options options;
  asio::basic_socket_acceptor<protocol> acceptor;
  asio::steady_timer pause;  // between failed accepts
  net::async_event slot_freed;
  bool bound = false;
  bool started = false;
  bool stopping = false;
  std::size_t open = 0;  // spawned connection coroutines that have not completed
  std::uint64_t next_id = 1;
  // The streams of the running connections, which live in their coroutines' frames, so that
  // stop() can close them.
  std::map<std::uint64_t, stream_type*> connections;

  // Runs on the executor. Beyond max_connections it stops accepting, so further clients wait in
  // the kernel's backlog instead of being accepted and starved.
  static asio::awaitable<void> accept_loop(std::shared_ptr<state> self) {
    for (;;) {
      while (!self->stopping && self->open >= self->options.max_connections) {
        if (!co_await self->slot_freed.wait()) {
          co_return;
        }
      }
      if (self->stopping) {
        co_return;
      }
      auto [ec, socket] = co_await self->acceptor.async_accept(use_tuple);
      if (self->stopping) {
        co_return;
      }
      if (ec) {
        spdlog::warn("admin listener: accept failed: {}", ec.message());
        // Out of descriptors or memory: back off rather than spin on the same error.
        self->pause.expires_after(std::chrono::milliseconds(100));
        co_await self->pause.async_wait(use_tuple);
        continue;
      }
      spawn_connection(self, std::move(socket));
    }
  }

  static void spawn_connection(const std::shared_ptr<state>& self, protocol::socket socket) {
    const auto id = self->next_id++;
    ++self->open;
    asio::co_spawn(
        self->executor,
        [self, id, s = std::move(socket)]() mutable { return serve(self, id, std::move(s)); },
        [self, id](const std::exception_ptr& e) {
          if (e) {
            spdlog::error("admin listener: connection {} failed: {}", id, describe_escaped(e));
          }
          --self->open;
          self->slot_freed.notify_all();
        });
  }

  // One connection: requests one after another (keep-alive) until the client closes, a request
  // fails, the timeout passes or the server stops.
  static asio::awaitable<void> serve(std::shared_ptr<state> self, std::uint64_t id,
                                     protocol::socket socket) {
    if (self->stopping) {
      co_return;
    }
    stream_type stream(std::move(socket));
    self->connections.emplace(id, &stream);
    struct deregister {
      state& owner;
      std::uint64_t key;
      deregister(state& o, std::uint64_t k) : owner(o), key(k) {}
      deregister(const deregister&) = delete;
      deregister& operator=(const deregister&) = delete;
      deregister(deregister&&) = delete;
      deregister& operator=(deregister&&) = delete;
      ~deregister() { owner.connections.erase(key); }
    } const registered{*self, id};

    error_code ignored;
    const auto peer = net::to_string(stream.socket().remote_endpoint(ignored));
    // Bounds what a request may buffer beyond the parser's own header limit.
    beast::flat_buffer buffer(self->options.max_header_bytes + 1024);
    for (;;) {
      http::request_parser<http::empty_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(
          std::min<std::size_t>(self->options.max_header_bytes, UINT32_MAX)));
      stream.expires_after(self->options.io_timeout);
      auto [read_error, read] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
      (void)read;
      if (self->stopping) {
        co_return;
      }
      if (read_error) {
        // The client closed: between requests (the normal end of keep-alive) or in the middle
        // of one. Both are in Beast's parser category, but there is nobody left to answer.
        if (read_error == http::error::end_of_stream ||
            read_error == http::error::partial_message) {
          co_return;
        }
        if (read_error == http::error::header_limit || read_error == http::error::buffer_overflow) {
          spdlog::debug("admin peer={} request headers over {} bytes: 431", peer,
                        self->options.max_header_bytes);
          auto refusal =
              text(http::status::request_header_fields_too_large, "request headers too large\n");
          auto sent = self->respond(stream, std::move(refusal), 11, false, false);
          co_await std::move(sent);
        } else if (is_parse_error(read_error)) {
          spdlog::debug("admin peer={} malformed request ({}): 400", peer, read_error.message());
          auto refusal = text(http::status::bad_request, "malformed request\n");
          auto sent = self->respond(stream, std::move(refusal), 11, false, false);
          co_await std::move(sent);
        } else if (read_error == beast::error::timeout) {
          spdlog::debug("admin peer={} no request within {} ms: closed", peer,
                        self->options.io_timeout.count());
        }
        co_return;
      }

      const auto& request = parser.get();
      // Whatever body the request has stays unread, so the connection cannot carry another.
      const bool body_pending = !parser.is_done();
      const bool head = request.method() == http::verb::head;
      auto answer = self->route(request, body_pending);
      const bool keep_alive = request.keep_alive() && !body_pending;
      spdlog::debug("admin peer={} method={} target={} status={}", peer,
                    quote_for_log(request.method_string()),
                    quote_for_log(request.target().substr(0, logged_target)),
                    static_cast<unsigned>(answer.status));
      // Named first: GCC 12 mishandles non-trivial temporaries inside a co_await expression.
      auto sent = self->respond(stream, std::move(answer), request.version(), head, keep_alive);
      const bool written = co_await std::move(sent);
      if (!written || !keep_alive || self->stopping) {
        co_return;
      }
    }
  }

  // The answer to a request whose header has arrived. Runs on the executor; calls the handlers.
  [[nodiscard]] reply route(const http::request<http::empty_body>& request,
                            bool body_pending) const {
    const auto target = std::string_view(request.target());
    const auto path = target.substr(0, target.find('?'));
    if (path != "/healthz" && path != "/readyz" && path != "/metrics") {
      return text(http::status::not_found, "not found\n");
    }
    if (request.method() != http::verb::get && request.method() != http::verb::head) {
      auto refusal = text(http::status::method_not_allowed, "method not allowed\n");
      refusal.allow_get_head = true;
      return refusal;
    }
    if (body_pending) {
      return text(http::status::payload_too_large, "request bodies are not accepted\n");
    }
    // RFC 9112 section 3.2: an HTTP/1.1 request without Host gets a 400.
    if (request.version() >= 11 && request.find(http::field::host) == request.end()) {
      return text(http::status::bad_request, "missing Host header\n");
    }
    if (path == "/healthz") {
      return text(http::status::ok, "ok\n");
    }
    // The handlers belong to the daemon; a throwing one costs this request, not the listener.
    try {
      if (path == "/readyz") {
        std::vector<readiness_check> checks;
        if (options.handlers.readiness) {
          checks = options.handlers.readiness();
        }
        const bool ready = std::all_of(checks.begin(), checks.end(),
                                       [](const readiness_check& c) { return c.ok; });
        return {.status = ready ? http::status::ok : http::status::service_unavailable,
                .content_type = "application/json",
                .body = readiness_json(checks, ready)};
      }
      std::string body;
      if (options.handlers.metrics) {
        body = options.handlers.metrics();
      }
      return {.status = http::status::ok,
              .content_type = "text/plain; version=0.0.4; charset=utf-8",
              .body = std::move(body)};
    } catch (const std::exception& e) {
      spdlog::error("admin listener: {} handler failed: {}", path, e.what());
      return text(http::status::internal_server_error, "internal error\n");
    }
  }

  // Writes the answer (its header alone for HEAD, Content-Length as GET would have it). Closes
  // the connection unless keep_alive. False when the connection is gone.
  asio::awaitable<bool> respond(stream_type& stream, reply answer, unsigned version, bool head,
                                bool keep_alive) const {
    http::response<http::string_body> response{answer.status, version};
    response.set(http::field::content_type, answer.content_type);
    response.set(http::field::cache_control, "no-store");
    if (answer.allow_get_head) {
      response.set(http::field::allow, "GET, HEAD");
    }
    response.keep_alive(keep_alive);
    response.body() = std::move(answer.body);
    response.prepare_payload();
    stream.expires_after(options.io_timeout);
    error_code write_error;
    if (head) {
      http::response<http::empty_body> header_only{std::move(response.base())};
      auto [ec, n] = co_await http::async_write(stream, header_only, use_tuple);
      (void)n;
      write_error = ec;
    } else {
      auto [ec, n] = co_await http::async_write(stream, response, use_tuple);
      (void)n;
      write_error = ec;
    }
    if (write_error || stopping) {
      co_return false;
    }
    if (!keep_alive) {
      co_await close_gracefully(stream);
      co_return false;
    }
    co_return true;
  }

  // Ends our side, then reads and drops what the client still sends (the rest of an oversized
  // header, an unread body) for a moment: closing a socket with unread data resets the
  // connection, and the reset can destroy our answer before the client has read it.
  static asio::awaitable<void> close_gracefully(stream_type& stream) {
    error_code ignored;
    stream.socket().shutdown(protocol::socket::shutdown_send, ignored);
    std::array<char, 4096> scratch{};
    std::size_t dropped = 0;
    stream.expires_after(linger_time);
    while (dropped < linger_bytes) {
      auto [ec, n] = co_await stream.async_read_some(asio::buffer(scratch), use_tuple);
      if (ec) {
        break;
      }
      dropped += n;
    }
    stream.close();
  }

  void stop() {
    if (stopping) {
      return;
    }
    stopping = true;
    error_code ignored;
    acceptor.close(ignored);
    if (bound) {
      net::remove_stale_socket(options.listen);
    }
    pause.cancel();
    slot_freed.notify_all();
    // Each coroutine wakes with operation_aborted, sees `stopping` and ends.
    for (const auto& [id, stream] : connections) {
      stream->close();
    }
    // The handlers may capture what their owner destroys right after stop().
    options.handlers = {};
  }
};

admin_server::admin_server(asio::any_io_executor executor, admin_options options)
    : state_(std::make_shared<state>(std::move(executor), std::move(options))) {}

admin_server::~admin_server() {
  // stop() throws only when closing or cancelling fails (descriptor table corrupted, out of
  // memory); a destructor cannot report that, and what stop() got done before stays done.
  try {
    state_->stop();
  } catch (...) {
  }
}

detailed_result<void> admin_server::bind() {
  auto& s = *state_;
  const auto where = "admin listener on " + net::to_string(s.options.listen);
  if (s.bound || s.stopping) {
    return failure{asio::error::already_open, where};
  }
  auto endpoint = net::resolve_listen_address(s.executor, s.options.listen);
  if (!endpoint) {
    return failure{endpoint.error(), where};
  }
  error_code ec;
  s.acceptor.open(endpoint->protocol(), ec);
  if (ec) {
    return failure{ec, where};
  }
  if (is_inet(*endpoint)) {
    s.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  } else {
    net::remove_stale_socket(s.options.listen);
  }
  if (!ec) {
    s.acceptor.bind(*endpoint, ec);
  }
  if (!ec) {
    s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    error_code ignored;
    s.acceptor.close(ignored);
    return failure{ec, where};
  }
  s.bound = true;
  return {};
}

net::endpoint_spec admin_server::local_endpoint() const {
  const auto& s = *state_;
  if (!s.bound || std::holds_alternative<net::unix_endpoint>(s.options.listen)) {
    return s.options.listen;
  }
  error_code ec;
  const auto local = s.acceptor.local_endpoint(ec);
  if (ec || !is_inet(local)) {
    return s.options.listen;
  }
  asio::ip::tcp::endpoint tcp;
  std::memcpy(tcp.data(), local.data(), std::min<std::size_t>(local.size(), sizeof(sockaddr_in6)));
  return net::tcp_endpoint{tcp.address().to_string(), tcp.port()};
}

void admin_server::start() {
  auto& s = *state_;
  if (!s.bound || s.started || s.stopping) {
    return;
  }
  s.started = true;
  spdlog::info("admin listener on {} (max_connections={})", net::to_string(local_endpoint()),
               s.options.max_connections);
  asio::co_spawn(
      s.executor, [self = state_] { return state::accept_loop(self); },
      [](const std::exception_ptr& e) {
        if (e) {
          spdlog::critical("admin listener stopped accepting: {}", describe_escaped(e));
        }
      });
}

void admin_server::stop() {
  state_->stop();
}

std::size_t admin_server::open_connections() const {
  return state_->open;
}

}  // namespace atls::admin
