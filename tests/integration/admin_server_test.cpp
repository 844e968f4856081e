// The admin listener over real sockets: curl against /healthz, /readyz and /metrics, and raw
// sockets for what curl will not do (hold a connection idle, send garbage).
#include "atls/admin/admin_server.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <doctest/doctest.h>

#include "atls/metrics/atlsd_metrics.hpp"

#include "support/loopback.hpp"
#include "support/process.hpp"
#include "support/prometheus_text.hpp"
#include "support/temp_dir.hpp"
#include <sys/socket.h>

namespace atls::admin {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

// An admin server on its own io_context and thread, as the daemon runs it on its main loop.
class running_server {
 public:
  explicit running_server(admin_options options) : server_(io_.get_executor(), std::move(options)) {
    auto bound = server_.bind();
    if (!bound) {
      throw std::runtime_error(to_string(bound.error()));
    }
    server_.start();
    auto finished = std::make_shared<std::promise<void>>();
    finished_ = finished->get_future();
    thread_ = std::thread([this, finished] {
      io_.run();
      finished->set_value();
    });
  }

  ~running_server() {
    if (thread_.joinable()) {
      if (!stop(10s)) {
        io_.stop();  // the test failed already; do not hang the suite on top of it
      }
      thread_.join();
    }
  }
  running_server(const running_server&) = delete;
  running_server& operator=(const running_server&) = delete;

  // stop() on the server's executor, then waits for the loop to run out of work, which it does
  // only when no coroutine, socket operation or timer of the server is left. False on timeout.
  bool stop(std::chrono::milliseconds limit) {
    asio::post(io_, [this] { server_.stop(); });
    return finished_.wait_for(limit) == std::future_status::ready;
  }

  // Runs f on the server's executor and returns its result.
  template <class F>
  auto on_loop(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    asio::post(io_, [&task] { task(); });
    return result.get();
  }

  [[nodiscard]] std::uint16_t port() {
    const auto spec = on_loop([this] { return server_.local_endpoint(); });
    return std::get<net::tcp_endpoint>(spec).port;
  }
  std::string url(std::string_view path) {
    return "http://127.0.0.1:" + std::to_string(port()) + std::string(path);
  }

 private:
  asio::io_context io_;
  admin_server server_;
  std::future<void> finished_;
  std::thread thread_;
};

admin_options loopback_options(admin_handlers handlers = {}) {
  return {.listen = net::tcp_endpoint{"127.0.0.1", 0}, .handlers = std::move(handlers)};
}

struct http_answer {
  int status = 0;
  std::string headers;  // as received, status line included
  std::string body;
};

// curl with a time limit, its headers in the output (-i), split into status, headers and body.
http_answer curl(std::vector<std::string> args) {
  std::vector<std::string> argv{"curl", "-sS", "-i", "--max-time", "10"};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = test::run(argv, 15s);
  INFO("curl stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  http_answer answer;
  const auto split = r.out.find("\r\n\r\n");
  REQUIRE(split != std::string::npos);
  answer.headers = r.out.substr(0, split + 2);
  answer.body = r.out.substr(split + 4);
  REQUIRE(answer.headers.starts_with("HTTP/1.1 "));
  answer.status = std::stoi(answer.headers.substr(9, 3));
  return answer;
}

bool has_header(const http_answer& a, std::string_view line) {
  return a.headers.find("\r\n" + std::string(line) + "\r\n") != std::string::npos;
}

// Reads one response from a raw socket: headers, then Content-Length bytes of body.
std::string read_response(int fd) {
  std::string in;
  char buffer[4096];
  for (;;) {
    const auto end = in.find("\r\n\r\n");
    if (end != std::string::npos) {
      const auto at = in.find("Content-Length: ");
      const std::size_t length = at == std::string::npos ? 0 : std::stoul(in.substr(at + 16));
      if (in.size() >= end + 4 + length) {
        return in;
      }
    }
    const auto n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) {
      return in;
    }
    in.append(buffer, static_cast<std::size_t>(n));
  }
}

TEST_CASE("/healthz answers 200 ok, and HEAD gets the same headers without the body") {
  running_server server(loopback_options());
  const auto get = curl({server.url("/healthz")});
  CHECK(get.status == 200);
  CHECK(get.body == "ok\n");
  CHECK(has_header(get, "Content-Type: text/plain; charset=utf-8"));
  CHECK(has_header(get, "Content-Length: 3"));

  const auto head = curl({"--head", server.url("/healthz")});
  CHECK(head.status == 200);
  CHECK(has_header(head, "Content-Length: 3"));
  CHECK(head.body.empty());
  CHECK(server.stop(5s));
}

TEST_CASE("/readyz answers 503 naming the failing check, and 200 once every check passes") {
  std::atomic<bool> tpm_ok{false};
  admin_handlers handlers;
  handlers.readiness = [&tpm_ok] {
    return std::vector<readiness_check>{
        {.name = "listeners", .ok = true},
        {.name = "tpm", .ok = tpm_ok.load(), .detail = tpm_ok ? "" : "swtpm: connection refused"}};
  };
  running_server server(loopback_options(handlers));

  const auto failing = curl({server.url("/readyz")});
  CHECK(failing.status == 503);
  CHECK(has_header(failing, "Content-Type: application/json"));
  auto body = json::parse(failing.body).as_object();
  CHECK_FALSE(body.at("ready").as_bool());
  const auto& checks = body.at("checks").as_array();
  REQUIRE(checks.size() == 2);
  CHECK(checks[0].at("name").as_string() == "listeners");
  CHECK(checks[0].at("ok").as_bool());
  CHECK(checks[1].at("name").as_string() == "tpm");
  CHECK_FALSE(checks[1].at("ok").as_bool());
  CHECK(checks[1].at("detail").as_string() == "swtpm: connection refused");

  tpm_ok = true;
  const auto passing = curl({server.url("/readyz")});
  CHECK(passing.status == 200);
  body = json::parse(passing.body).as_object();
  CHECK(body.at("ready").as_bool());
  CHECK(body.at("checks").as_array().at(1).at("ok").as_bool());

  tpm_ok = false;  // and back: nothing is cached
  CHECK(curl({server.url("/readyz")}).status == 503);
}

TEST_CASE("/metrics serves the registry's exposition, which passes the strict format checker") {
  const metrics::atlsd_metrics instruments;
  instruments.connections.with({"in", "relayed"}).inc(3);
  instruments.connections.with({"in \"quoted\"\n", "tls_failed"}).inc();
  instruments.handshake_duration.with({"in"}).observe(0.004);
  instruments.ready.with({}).set(1);
  admin_handlers handlers;
  handlers.metrics = [&instruments] { return instruments.registry.exposition(); };
  running_server server(loopback_options(handlers));

  // A scraper's query parameters do not change the route.
  const auto answer = curl({server.url("/metrics?collect%5B%5D=all")});
  CHECK(answer.status == 200);
  CHECK(has_header(answer, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
  const auto check = test::check_prometheus_text(answer.body);
  INFO(answer.body);
  REQUIRE_MESSAGE(check, check.error);
  CHECK(check.text.value_of("atlsd_connections_total",
                            {{"listener", "in"}, {"outcome", "relayed"}}) == 3);
  CHECK(check.text.value_of("atlsd_connections_total",
                            {{"listener", "in \"quoted\"\n"}, {"outcome", "tls_failed"}}) == 1);
  CHECK(check.text.value_of("atlsd_handshake_duration_seconds_count", {{"listener", "in"}}) == 1);
  CHECK(check.text.value_of("atlsd_ready") == 1);
}

TEST_CASE("unknown paths get 404, and other methods 405 with Allow: GET, HEAD") {
  running_server server(loopback_options());
  CHECK(curl({server.url("/")}).status == 404);
  CHECK(curl({server.url("/metricsx")}).status == 404);
  CHECK(curl({"-X", "DELETE", server.url("/nowhere")}).status == 404);
  for (const auto* path : {"/healthz", "/readyz", "/metrics"}) {
    CAPTURE(path);
    const auto post = curl({"-X", "POST", server.url(path)});
    CHECK(post.status == 405);
    CHECK(has_header(post, "Allow: GET, HEAD"));
  }
  CHECK(curl({"-X", "PUT", "--data", "x", server.url("/metrics")}).status == 405);
}

TEST_CASE("a request with a body is refused, and the server goes on serving") {
  running_server server(loopback_options());
  const auto answer = curl({"-X", "GET", "--data", "body", server.url("/healthz")});
  CHECK(answer.status == 413);
  CHECK(has_header(answer, "Connection: close"));
  CHECK(curl({server.url("/healthz")}).status == 200);
}

TEST_CASE("request headers over the limit get 431 and the connection is closed") {
  auto options = loopback_options();
  options.max_header_bytes = 8192;
  running_server server(std::move(options));
  const auto big = curl({"-H", "X-Filler: " + std::string(9000, 'a'), server.url("/healthz")});
  CHECK(big.status == 431);
  CHECK(has_header(big, "Connection: close"));
  // Just under the limit is fine.
  CHECK(curl({"-H", "X-Filler: " + std::string(7000, 'a'), server.url("/healthz")}).status == 200);
}

TEST_CASE("a malformed request gets 400, and so does HTTP/1.1 without Host") {
  running_server server(loopback_options());
  {
    auto fd = test::connect_loopback(server.port(), 5s);
    REQUIRE(fd);
    REQUIRE(test::send_all(fd.get(), "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n"));
    const auto response = read_response(fd.get());
    CHECK(response.starts_with("HTTP/1.1 400 "));
    CHECK(test::closed_by_peer(fd.get()));
  }
  {
    auto fd = test::connect_loopback(server.port(), 5s);
    REQUIRE(fd);
    REQUIRE(test::send_all(fd.get(), "GET /healthz HTTP/1.1\r\n\r\n"));
    CHECK(read_response(fd.get()).starts_with("HTTP/1.1 400 "));
  }
}

TEST_CASE("keep-alive: one connection carries several requests") {
  running_server server(loopback_options());
  // curl reuses its connection across URLs of one command line; num_connects is 0 on reuse.
  const auto r = test::run({"curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-o", "/dev/null",
                            "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n",
                            server.url("/healthz"), server.url("/readyz"), server.url("/metrics")},
                           15s);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "200 1\n200 0\n200 0\n");
}

TEST_CASE("a handler that throws costs its request a 500, not the listener") {
  admin_handlers handlers;
  handlers.metrics = []() -> std::string { throw std::runtime_error("registry unavailable"); };
  running_server server(loopback_options(handlers));
  CHECK(curl({server.url("/metrics")}).status == 500);
  CHECK(curl({server.url("/healthz")}).status == 200);
}

TEST_CASE("stop() with an idle keep-alive connection open ends all the server's work at once") {
  auto options = loopback_options();
  options.io_timeout = 30s;  // far beyond the limit below: only stop() can end the connection
  running_server server(std::move(options));
  auto fd = test::connect_loopback(server.port(), 5s);
  REQUIRE(fd);
  REQUIRE(test::send_all(fd.get(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  const auto response = read_response(fd.get());
  REQUIRE(response.starts_with("HTTP/1.1 200 "));
  REQUIRE(response.ends_with("ok\n"));

  // The loop's thread returns from run() only once nothing of the server is pending.
  const auto started = std::chrono::steady_clock::now();
  CHECK(server.stop(2s));
  CHECK(std::chrono::steady_clock::now() - started < 2s);
  CHECK(test::closed_by_peer(fd.get()));
}

TEST_CASE("a connection that sends no request is closed after the read timeout") {
  auto options = loopback_options();
  options.io_timeout = 300ms;
  running_server server(std::move(options));
  auto fd = test::connect_loopback(server.port(), 5s);
  REQUIRE(fd);
  const auto started = std::chrono::steady_clock::now();
  CHECK(test::closed_by_peer(fd.get()));
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited >= 250ms);
  CHECK(waited < 4s);
}

TEST_CASE("beyond max_connections, new clients wait until a connection closes") {
  auto options = loopback_options();
  options.max_connections = 1;
  running_server server(std::move(options));
  auto holder = test::connect_loopback(server.port(), 5s);
  REQUIRE(holder);
  REQUIRE(test::send_all(holder.get(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  REQUIRE(read_response(holder.get()).starts_with("HTTP/1.1 200 "));

  // The one slot is taken (keep-alive): curl's request sits in the backlog until it gives up.
  const auto waiting =
      test::run({"curl", "-sS", "-o", "/dev/null", "--max-time", "1", server.url("/healthz")}, 5s);
  CHECK(waiting.exit_code == 28);  // curl: operation timed out
  holder.reset();
  CHECK(curl({server.url("/healthz")}).status == 200);
}

TEST_CASE("the admin listener serves a unix socket, and removes its file when it stops") {
  const test::temp_dir dir;
  const auto path = (dir / "admin.sock").string();
  asio::io_context io;
  admin_server server(io.get_executor(), {.listen = net::unix_endpoint{path}});
  REQUIRE(server.bind().has_value());
  server.start();
  std::promise<void> finished;
  auto done = finished.get_future();
  std::thread loop([&] {
    io.run();
    finished.set_value();
  });
  const auto answer = curl({"--unix-socket", path, "http://localhost/healthz"});
  CHECK(answer.status == 200);
  CHECK(std::filesystem::exists(path));
  asio::post(io, [&server] { server.stop(); });
  const bool stopped = done.wait_for(5s) == std::future_status::ready;
  CHECK(stopped);
  if (!stopped) {
    io.stop();
  }
  loop.join();
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("bind() fails on an address in use, naming the address") {
  running_server first(loopback_options());
  const auto port = first.port();
  asio::io_context io;
  admin_server second(io.get_executor(), {.listen = net::tcp_endpoint{"127.0.0.1", port}});
  const auto bound = second.bind();
  REQUIRE_FALSE(bound.has_value());
  CHECK(bound.error().code == boost::system::errc::address_in_use);
  CHECK(bound.error().detail == "admin listener on 127.0.0.1:" + std::to_string(port));
}

}  // namespace
}  // namespace atls::admin
