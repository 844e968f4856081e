// proxy::server's reload against its drain, driven directly on one thread so that their
// interleaving is the one a SIGTERM during a file-watch reload produces.
#include <chrono>
#include <optional>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <doctest/doctest.h>

#include "atls/net/event_loops.hpp"
#include "atls/proxy/server.hpp"

#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include "support/temp_dir.hpp"

namespace atls::proxy {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

listener_options inbound_on(std::string name, std::uint16_t port, const test::pki& p) {
  return {.name = std::move(name),
          .mode = mode::inbound,
          .listen = net::tcp_endpoint{"127.0.0.1", port},
          .upstream = net::tcp_endpoint{"127.0.0.1", test::free_port()},
          .tls = tls::context::make_server(
                     {.cert_chain = p / "server.crt", .private_key = p / "server.key"})
                     .value()};
}

struct reload_and_drain {
  explicit reload_and_drain(const test::pki& p)
      : pki(p), kept_port(test::free_port()), added_port(test::free_port()) {
    std::vector<listener_options> first;
    first.push_back(inbound_on("kept", kept_port, pki));
    REQUIRE(proxy.bind(std::move(first)).has_value());
    proxy.start();
  }

  void spawn_reload() {
    std::vector<listener_options> next;
    next.push_back(inbound_on("kept", kept_port, pki));
    next.push_back(inbound_on("added", added_port, pki));
    asio::co_spawn(
        io,
        [this, next = std::move(next)]() mutable -> asio::awaitable<void> {
          auto applying = proxy.reconfigure(std::move(next), 1s);
          reloaded = co_await std::move(applying);
        },
        [](const std::exception_ptr& e) { CHECK_FALSE(e); });
  }

  void spawn_drain() {
    asio::co_spawn(
        io,
        [this]() -> asio::awaitable<void> {
          co_await proxy.drain(1s);
          drained = true;
        },
        [](const std::exception_ptr& e) { CHECK_FALSE(e); });
  }

  // True when the loop ran out of work, as the daemon's must for the process to exit.
  bool runs_out_of_work() {
    io.run_for(10s);
    return io.stopped();
  }

  const test::pki& pki;
  asio::io_context io{1};
  net::event_loops loops{1};
  proxy::server proxy{io, loops};
  std::uint16_t kept_port;
  std::uint16_t added_port;
  std::optional<detailed_result<reload_report>> reloaded;
  bool drained = false;
};

TEST_CASE("a drain that begins while a reload commits leaves no new listener accepting") {
  const test::temp_dir dir;
  const auto p = test::make_pki(dir);
  reload_and_drain run(p);
  // The reload binds the new socket and then awaits the kept listener's strand, which is when
  // the drain takes its list of listeners: the shape of a SIGTERM during a watch_config reload.
  run.spawn_reload();
  run.spawn_drain();

  REQUIRE_MESSAGE(run.runs_out_of_work(), "a listener added during the drain is still accepting");
  CHECK(run.drained);
  REQUIRE(run.reloaded.has_value());
  REQUIRE_FALSE(run.reloaded->has_value());
  CHECK(run.reloaded->error().detail.find("draining") != std::string::npos);
  CHECK_FALSE(test::connect_loopback(run.added_port));
  CHECK_FALSE(test::connect_loopback(run.kept_port));
}

TEST_CASE("a reload asked for once the drain has begun changes nothing") {
  const test::temp_dir dir;
  const auto p = test::make_pki(dir);
  reload_and_drain run(p);
  run.spawn_drain();
  run.spawn_reload();

  REQUIRE(run.runs_out_of_work());
  CHECK(run.drained);
  REQUIRE(run.reloaded.has_value());
  REQUIRE_FALSE(run.reloaded->has_value());
  CHECK(run.reloaded->error().detail == "atlsd is draining");
  CHECK_FALSE(test::connect_loopback(run.added_port));
}

}  // namespace
}  // namespace atls::proxy
