// The admin listener: a small HTTP/1.1 server for probes and scrapers, apart from the data path.
//   GET|HEAD /healthz  200 text/plain "ok\n" while the process serves requests at all
//   GET|HEAD /readyz   200 when every readiness check passes, else 503; JSON
//                      {"ready":bool,"checks":[{"name":..,"ok":..,"detail":..}]}
//   GET|HEAD /metrics  200, the Prometheus text exposition (version 0.0.4)
// Any other path is 404, any other method on these paths 405 (Allow: GET, HEAD). A query string
// is ignored. Requests carry no body (413), headers are bounded (431), a connection that sends
// nothing within the read timeout is closed, and connections beyond a cap wait in the kernel's
// backlog until one closes, so that a broken scraper costs the daemon a bounded number of
// descriptors and bounded memory, and no data-path work.
//
// It binds loopback in the shipped configuration: the endpoints carry no secrets, but the
// metrics name listeners and verifiers, and nothing here authenticates a client.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "atls/common/result.hpp"
#include "atls/net/endpoint.hpp"

namespace atls::admin {

struct readiness_check {
  std::string name;  // a stable word: "listeners", "tpm", "verifier:veraison-a"
  bool ok = false;
  std::string detail;  // why not, for the operator; "" when ok
};

// What the endpoints report. Both are called on the server's executor, once per request, and
// must not block it. An unset handler counts as "nothing to report": /readyz is ready with no
// checks, /metrics is an empty exposition. A handler that throws gives a 500 for that request.
struct admin_handlers {
  std::function<std::vector<readiness_check>()> readiness;
  std::function<std::string()> metrics;
};

struct admin_options {
  net::endpoint_spec listen;  // TCP host:port (port 0: the kernel picks) or unix:/path
  admin_handlers handlers;
  // Beyond this many open connections, new ones wait in the kernel's accept backlog.
  std::size_t max_connections = 16;
  // The request line and headers together; more gets a 431 and the connection is closed.
  std::size_t max_header_bytes = std::size_t{8} * 1024;
  // For a whole request to arrive (an idle keep-alive connection included), and for a response
  // to be written; on expiry the connection is closed without an answer.
  std::chrono::milliseconds io_timeout{std::chrono::seconds(10)};
};

// Every member function must be called on the executor given to the constructor (in the
// daemon: the main io_context's thread), or before that executor's context runs. The server
// must be destroyed before that execution context is.
class admin_server {
 public:
  admin_server(boost::asio::any_io_executor executor, admin_options options);
  ~admin_server();  // stop()
  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;
  admin_server(admin_server&&) = delete;
  admin_server& operator=(admin_server&&) = delete;

  // Resolves options.listen and opens, binds and listens on it; a stale unix socket file (and
  // only a socket) is replaced. Fails with the resolver's or the socket's error code, the
  // detail naming the address ("admin listener on 127.0.0.1:9100"). Once only.
  [[nodiscard]] detailed_result<void> bind();

  // Where the server listens (the kernel's port when options.listen asked for port 0), after a
  // successful bind(); options.listen before.
  [[nodiscard]] net::endpoint_spec local_endpoint() const;

  // Starts accepting, after a successful bind(); does nothing otherwise.
  void start();

  // Closes the acceptor (and removes its unix socket file) and every open connection, and
  // drops the handlers: no handler is called after stop() returns, and every coroutine of the
  // server ends at its next resumption, so that the executor's context runs out of work
  // without io_context::stop(). Final: the server does not start again. Idempotent.
  void stop();

  [[nodiscard]] std::size_t open_connections() const;

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace atls::admin
