// Reload (SIGHUP, or watch_config): a bad file changes nothing, a good one adds, removes and
// changes listeners without dropping the open connections of the ones it keeps.
#include <chrono>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "e2e/configs.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include <signal.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// A plaintext client of an outbound listener whose upstream is `in`'s inbound TLS listener: the
// pair carries an echo connection end to end. Each test reloads the outbound side.
struct echo_pair {
  explicit echo_pair(const temp_dir& dir)
      : p(make_pki(dir)),
        upstream(echo_responder()),
        in_port(free_port()),
        in(dir, "in", header() + inbound("in", in_port, local(upstream.port()), p)) {}

  std::string out_listener(const std::string& name, std::uint16_t port) const {
    return outbound(name, port, local(in_port), p);
  }

  pki p;
  loopback_server upstream;
  std::uint16_t in_port;
  atlsd in;
};

// Waits for the next "READY=1" notification, skipping others; returns what came before it.
std::string notifications_until_ready(atlsd& daemon) {
  std::string seen;
  for (int i = 0; i < 10; ++i) {
    const auto next = daemon.next_notification(10s);
    if (!next) {
      break;
    }
    seen += *next + "\n";
    if (contains(*next, "READY=1")) {
      break;
    }
  }
  return seen;
}

TEST_CASE("a reload with a broken config keeps serving the running one and says why") {
  const temp_dir dir;
  echo_pair pair(dir);
  const auto a_port = free_port();
  atlsd out(dir, "out", header() + pair.out_listener("a", a_port));
  const auto open = connect_loopback(a_port);
  REQUIRE(open);
  REQUIRE(echoed(open.get(), "before"));

  dir.write("out.yaml", header() + pair.out_listener("a", a_port) + "    max_conections: 5\n");
  out.signal(SIGHUP);
  const auto notes = notifications_until_ready(out);
  CHECK(contains(notes, "RELOADING=1"));
  CHECK(contains(notes, "MONOTONIC_USEC="));
  CHECK(out.wait_for_log("reload refused: 1 error(s)"));
  CHECK(contains(out.log(), "unknown key 'max_conections'; did you mean 'max_connections'?"));

  // Nothing changed: the open connection and new ones are served as before.
  CHECK(echoed(open.get(), "after"));
  const auto fresh = connect_loopback(a_port);
  REQUIRE(fresh);
  CHECK(echoed(fresh.get(), "new"));
}

TEST_CASE(
    "a reload that changes the number of threads is refused, naming the key, and changes "
    "nothing") {
  const temp_dir dir;
  echo_pair pair(dir);
  const auto a_port = free_port();
  const auto b_port = free_port();
  atlsd out(dir, "out", header() + pair.out_listener("a", a_port));
  const auto open = connect_loopback(a_port);
  REQUIRE(open);
  REQUIRE(echoed(open.get(), "before"));

  // Valid on its own, but a running daemon cannot change its loop count: the new listener in
  // the same file must not appear either.
  auto fewer_threads = header();
  fewer_threads.replace(fewer_threads.find("threads: 2"), 10, "threads: 1");
  dir.write("out.yaml",
            fewer_threads + pair.out_listener("a", a_port) + pair.out_listener("b", b_port));
  out.signal(SIGHUP);
  CHECK(out.wait_for_log("reload refused: 1 error(s)"));
  CHECK(contains(out.log(),
                 "threads: the number of connection threads changed: that takes a "
                 "restart, not a reload"));

  CHECK_FALSE(connect_loopback(b_port));
  CHECK(echoed(open.get(), "after"));
  const auto fresh = connect_loopback(a_port);
  REQUIRE(fresh);
  CHECK(echoed(fresh.get(), "new"));
}

TEST_CASE("a reload adds and removes listeners, and the removed one's connections drain") {
  const temp_dir dir;
  echo_pair pair(dir);
  const auto a_port = free_port();
  const auto b_port = free_port();
  const auto c_port = free_port();
  atlsd out(dir, "out",
            "drain_timeout: 2s\n" + header().substr(header().find("threads:")) +
                pair.out_listener("a", a_port) + pair.out_listener("b", b_port));
  const auto through_a = connect_loopback(a_port);
  const auto through_b = connect_loopback(b_port);
  REQUIRE(through_a);
  REQUIRE(through_b);
  REQUIRE(echoed(through_a.get(), "a"));
  REQUIRE(echoed(through_b.get(), "b"));

  dir.write("out.yaml", "drain_timeout: 2s\n" + header().substr(header().find("threads:")) +
                            pair.out_listener("b", b_port) + pair.out_listener("c", c_port));
  out.signal(SIGHUP);
  REQUIRE(out.wait_for_log("reloaded: added=c removed=a kept=b"));

  // The kept listener's connection never noticed; the new listener serves.
  CHECK(echoed(through_b.get(), "b again"));
  const auto through_c = connect_loopback(c_port);
  REQUIRE(through_c);
  CHECK(echoed(through_c.get(), "c"));
  // The removed listener accepts nothing more, but its open connection may finish...
  CHECK_FALSE(connect_loopback(a_port));
  CHECK(echoed(through_a.get(), "a draining"));
  // ...until the drain timeout, when it is aborted.
  CHECK(closed_by_peer(through_a.get()));
  CHECK(out.wait_for_log("listener=a removed by reload: aborting 1 connection(s) after 2000 ms"));
  CHECK(echoed(through_b.get(), "b still"));
}

TEST_CASE("a kept listener's new connections get the new settings, its open ones keep theirs") {
  const temp_dir dir;
  echo_pair pair(dir);
  loopback_server second(http_responder("from the new upstream\n"));
  const auto port = free_port();
  atlsd out(dir, "out", header() + pair.out_listener("a", port));
  const auto open = connect_loopback(port);
  REQUIRE(open);
  REQUIRE(echoed(open.get(), "old upstream"));

  // Same name and address, another upstream: plaintext straight to the second origin.
  dir.write("out.yaml", header() + "  - name: a\n    mode: outbound\n    listen: " + local(port) +
                            "\n    upstream: " + local(second.port()) + "\n    tls:\n      ca: " +
                            (pair.p / "ca.crt").string() + "\n      server_name: server.test\n");
  out.signal(SIGHUP);
  REQUIRE(out.wait_for_log("reloaded: added=- removed=- kept=a"));
  CHECK(echoed(open.get(), "still the old upstream"));
  // The new settings point at a server that does not speak TLS: the handshake fails, and the
  // log says the new connection went to the new upstream.
  const auto fetched = curl_http(port);
  CHECK(fetched.exit_code != 0);
  CHECK(out.wait_for_log("upstream=" + local(second.port())));
  CHECK(echoed(open.get(), "and still"));
}

TEST_CASE("with watch_config, saving the file reloads it without a signal") {
  const temp_dir dir;
  echo_pair pair(dir);
  const auto a_port = free_port();
  const auto b_port = free_port();
  const auto watched = "watch_config: 200ms\n" + header();
  atlsd out(dir, "out", watched + pair.out_listener("a", a_port));
  CHECK_FALSE(connect_loopback(b_port));

  dir.write("out.yaml", watched + pair.out_listener("a", a_port) + pair.out_listener("b", b_port));
  REQUIRE(out.wait_for_log("config file changed: reloading"));
  REQUIRE(out.wait_for_log("reloaded: added=b removed=- kept=a"));
  const auto through_b = connect_loopback(b_port);
  REQUIRE(through_b);
  CHECK(echoed(through_b.get(), "b"));
}

}  // namespace
}  // namespace atls::test
