// atlsd under systemd: what the service manager hears on NOTIFY_SOCKET (READY=1, STOPPING=1, the
// watchdog's WATCHDOG=1), socket activation through systemd-socket-activate (Debian's systemd
// package), and a second atlsd taking over the port while the first drains (SO_REUSEPORT).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <doctest/doctest.h>

#include "atls/systemd/notify.hpp"
#include "atls/systemd/watchdog.hpp"

#include "e2e/configs.hpp"
#include "support/daemon_env.hpp"
#include "support/loopback.hpp"
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// An inbound listener whose listen address is given verbatim (systemd:NAME).
std::string inbound_on(const std::string& name, const std::string& listen,
                       const std::string& upstream, const pki& p) {
  return "  - name: " + name + "\n    mode: inbound\n    listen: " + listen +
         "\n    upstream: " + upstream + "\n    tls:\n      cert: " + (p / "server.crt").string() +
         "\n      key: " + (p / "server.key").string() + "\n";
}

// curl over TLS straight to an inbound listener, as a client on the network.
run_result curl_https(const pki& p, std::uint16_t port) {
  const auto authority = "server.test:" + std::to_string(port);
  return run({"curl", "-sS", "--max-time", "10", "--cacert", (p / "ca.crt").string(), "--resolve",
              authority + ":127.0.0.1", "https://" + authority + "/"},
             15s);
}

// systemd-socket-activate says so on stderr (the log) once it listens: a connection before that
// would be refused instead of starting atlsd.
void wait_until_activator_listens(const atlsd_launch& daemon, std::uint16_t port) {
  REQUIRE(daemon.wait_for_log("Listening on " + local(port) + " as "));
}

// The WATCHDOG=1 messages that arrive within `window`, as times of arrival.
std::vector<std::chrono::steady_clock::time_point> watchdog_pings(
    const std::function<std::optional<std::string>(std::chrono::milliseconds)>& next,
    std::chrono::milliseconds window) {
  std::vector<std::chrono::steady_clock::time_point> pings;
  const auto end = std::chrono::steady_clock::now() + window;
  for (auto now = std::chrono::steady_clock::now(); now < end;
       now = std::chrono::steady_clock::now()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - now);
    const auto message = next(std::max(left, 1ms));
    if (message && *message == "WATCHDOG=1") {
      pings.push_back(std::chrono::steady_clock::now());
    }
  }
  return pings;
}

std::chrono::milliseconds longest_gap(const std::vector<std::chrono::steady_clock::time_point>& t) {
  std::chrono::steady_clock::duration longest{0};
  for (std::size_t i = 1; i < t.size(); ++i) {
    longest = std::max(longest, t[i] - t[i - 1]);
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(longest);
}

// Sets (or, given nothing, unsets) an environment variable for one test and restores the old
// value.
class scoped_env {
 public:
  scoped_env(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) {  // NOLINT(concurrency-mt-unsafe): no threads yet
      old_ = old;
    }
    if (value) {
      ::setenv(name, value->c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
    } else {
      ::unsetenv(name);  // NOLINT(concurrency-mt-unsafe)
    }
  }
  ~scoped_env() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
    } else {
      ::unsetenv(name_);  // NOLINT(concurrency-mt-unsafe)
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST_CASE(
    "systemd hears READY=1 with a status once the listener is bound, and STOPPING=1 on "
    "SIGTERM") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const auto port = free_port();
  atlsd_launch in(dir, "in", header() + inbound("in", port, local(9), p));

  const auto ready = in.wait_ready();
  CHECK(contains(ready, "READY=1\n"));
  CHECK(contains(ready, "STATUS=serving 1 listener(s)"));
  CHECK(contains(ready, "MAINPID=" + std::to_string(in.pid())));
  // READY=1 means bound: a client may connect at once.
  CHECK(connect_loopback(port));

  in.stop(SIGTERM, 0ms);
  const auto stopping = in.next_notification(5s);
  REQUIRE(stopping);
  CHECK(*stopping == "STOPPING=1");
  CHECK(in.wait_exit(20s) == 0);
}

TEST_CASE("with a watchdog interval, atlsd sends WATCHDOG=1 about every half interval") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  atlsd_launch in(dir, "in", header() + inbound("in", free_port(), local(9), p),
                  {.wrapper = with_watchdog_pid_of_child(), .env = {{"WATCHDOG_USEC", "1000000"}}});
  (void)in.wait_ready();

  const auto pings = watchdog_pings([&](auto t) { return in.next_notification(t); }, 3200ms);
  INFO(in.log());
  // Every 500 ms over 3.2 s: 6 or 7, with room for a slow tick but not for a missed one.
  CHECK(pings.size() >= 5);
  CHECK(pings.size() <= 8);
  CHECK(longest_gap(pings) < 1000ms);  // what systemd checks: never a whole interval without one
  CHECK(in.wait_for_log("systemd watchdog: WATCHDOG=1 every 500 ms"));
}

TEST_CASE("a watchdog meant for another process (WATCHDOG_PID) gets no pings from atlsd") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  atlsd_launch in(dir, "in", header() + inbound("in", free_port(), local(9), p),
                  {.env = {{"WATCHDOG_USEC", "200000"}, {"WATCHDOG_PID", "1"}}});
  (void)in.wait_ready();
  const auto pings = watchdog_pings([&](auto t) { return in.next_notification(t); }, 1500ms);
  CHECK(pings.empty());
}

TEST_CASE("a listener on a socket passed by systemd-socket-activate relays a request") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("activated\n"));
  const auto port = free_port();
  const auto spare = free_port();
  atlsd_launch in(dir, "in", header() + inbound_on("in", "systemd:web", local(origin.port()), p),
                  {.wrapper = socket_activate({local(port), local(spare)}, {"web", "spare"})});

  // systemd-socket-activate starts atlsd on the first connection, which waits in the backlog
  // of the socket atlsd then adopts.
  wait_until_activator_listens(in, port);
  const auto fetched = curl_https(p, port);
  INFO(fetched.err);
  INFO(in.log());
  CHECK(fetched.exit_code == 0);
  CHECK(fetched.out == "activated\n");
  CHECK(contains(in.wait_ready(), "READY=1"));
  CHECK(contains(in.log(), "listener=in adopted the socket systemd passed as 'web', listening on " +
                               local(port)));
  CHECK(contains(in.log(), "systemd passed a socket named 'spare' that no listener uses"));
  CHECK(curl_https(p, port).out == "activated\n");
  CHECK(in.stop(SIGTERM) == 0);
}

TEST_CASE("a listener naming a socket that systemd did not pass stops start-up, naming both") {
  const temp_dir dir;
  const auto p = make_pki(dir);

  SUBCASE("not socket-activated at all") {
    const auto config =
        dir.write("none.yaml", header() + inbound_on("in", "systemd:web", local(9), p));
    const auto result = run({ATLSD_BINARY, "--config", config.string()}, 15s);
    CHECK(result.exit_code == 1);
    INFO(result.err);
    CHECK(contains(result.err, "cannot listen: systemd passed no socket of this name"));
    CHECK(contains(result.err, "listener 'in' on systemd:web (systemd passed: none)"));
  }
  SUBCASE("activated with other sockets") {
    const auto port = free_port();
    atlsd_launch in(dir, "in", header() + inbound_on("in", "systemd:web", local(9), p),
                    {.wrapper = socket_activate({local(port)}, {"other"})});
    wait_until_activator_listens(in, port);
    const auto trigger = connect_loopback(port);
    CHECK(in.wait_exit(20s) == 1);
    INFO(in.log());
    CHECK(contains(in.log(), "cannot listen: systemd passed no socket of this name"));
    CHECK(contains(in.log(), "listener 'in' on systemd:web (systemd passed: 'other')"));
  }
}

TEST_CASE("sockets that systemd passed but no listener can use stop start-up with the reason") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const auto yaml = header() + inbound_on("in", "systemd:web", local(9), p);

  SUBCASE("two sockets with one name") {
    const auto port = free_port();
    atlsd_launch in(
        dir, "in", yaml,
        {.wrapper = socket_activate({local(port), local(free_port())}, {"web", "web"})});
    wait_until_activator_listens(in, port);
    const auto trigger = connect_loopback(port);
    CHECK(in.wait_exit(20s) == 1);
    INFO(in.log());
    CHECK(contains(in.log(), "socket activation: systemd passed two sockets with the same name"));
    CHECK(contains(in.log(), "'web'"));
  }
  SUBCASE("a datagram socket") {
    const auto port = free_port();
    auto wrapper = socket_activate({local(port)}, {"web"});
    wrapper.insert(wrapper.begin() + 1, "--datagram");
    atlsd_launch in(dir, "in", yaml, {.wrapper = wrapper});
    // A datagram is the "connection" that makes systemd-socket-activate start atlsd; it may
    // not be listening yet, so knock until atlsd has gone.
    const socket_fd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    const auto to = loopback_address(port);
    std::optional<int> code;
    for (int i = 0; i < 100 && !code; ++i) {
      (void)::sendto(udp.get(), "x", 1, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
      code = in.wait_exit(200ms);
    }
    CHECK(code == 1);
    INFO(in.log());
    CHECK(contains(in.log(), "a socket systemd passed is not a listening stream socket"));
    CHECK(contains(in.log(), "'web' (fd 3)"));
  }
}

TEST_CASE(
    "a second atlsd binds the same port while the first drains, and requests keep "
    "succeeding") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  loopback_server origin(http_responder("served\n"));
  const auto port = free_port();
  const auto yaml = header() + inbound("in", port, local(origin.port()), p);
  atlsd_launch first(dir, "first", yaml);
  (void)first.wait_ready();
  // A connection the first daemon accepted, open across the hand-over: it keeps the first
  // draining, and must still be served.
  tls_client held({.port = port, .ca = p / "ca.crt", .io_timeout = 10s});
  REQUIRE(held.handshake());

  atlsd_launch second(dir, "second", yaml);  // fails to bind without SO_REUSEPORT
  (void)second.wait_ready();

  first.stop(SIGTERM, 0ms);
  REQUIRE(first.next_notification(5s) == "STOPPING=1");
  // Logged once the first's listener is closed: from then on, only the second accepts.
  REQUIRE(first.wait_for_log("draining 1 open connection(s)"));
  for (int i = 0; i < 5; ++i) {
    const auto fetched = curl_https(p, port);
    INFO(fetched.err);
    CHECK(fetched.out == "served\n");
  }
  REQUIRE(held.write("GET / HTTP/1.1\r\nHost: server.test\r\nConnection: close\r\n\r\n"));
  CHECK(contains(held.read_all(), "served\n"));
  held.shutdown_send();
  CHECK(first.wait_exit(20s) == 0);

  CHECK(curl_https(p, port).out == "served\n");
  INFO(second.log());
  CHECK(second.wait_for_log("outcome=ok"));
}

// What "localhost" resolves to first here, in the form a config writes it ("127.0.0.1" or
// "[::1]"), as atlsd's resolver picks it.
std::string first_localhost_address() {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  REQUIRE(::getaddrinfo("localhost", "1", &hints, &found) == 0);
  const int family = found->ai_family;
  ::freeaddrinfo(found);
  return family == AF_INET6 ? "[::1]" : "127.0.0.1";
}

TEST_CASE(
    "two listeners of one atlsd on the same address are still refused, despite "
    "SO_REUSEPORT") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const auto port = std::to_string(free_port());
  const auto config =
      dir.write("twins.yaml",
                header() + inbound_on("a", first_localhost_address() + ":" + port, local(9), p) +
                    inbound_on("b", "localhost:" + port, local(9), p));
  const auto result = run({ATLSD_BINARY, "--config", config.string()}, 15s);
  CHECK(result.exit_code == 1);
  INFO(result.err);
  CHECK(contains(result.err, "cannot listen: Address already in use: listener 'b' on localhost:" +
                                 port + " (listener 'a' has that address)"));
}

// The watchdog's own rules, against a real NOTIFY_SOCKET in this process.

TEST_CASE("the watchdog stops pinging while a watched loop is stuck, and resumes when it runs") {
  const temp_dir dir;
  notify_socket manager(dir / "notify");
  const scoped_env env("NOTIFY_SOCKET", manager.path().string());
  const auto next = [&](std::chrono::milliseconds t) { return manager.next(t); };

  asio::io_context main_loop(1);
  asio::io_context watched(1);
  auto keep = asio::make_work_guard(watched);
  std::thread watched_thread([&] { watched.run(); });
  std::promise<void> unblock;
  {
    systemd::watchdog dog(
        main_loop.get_executor(),
        {.interval = 300ms, .loops = {{"loop under test", watched.get_executor()}}});
    std::thread main_thread([&] { main_loop.run(); });

    CHECK(watchdog_pings(next, 700ms).size() >= 3);  // every 150 ms while both loops run

    asio::post(watched, [blocked = unblock.get_future().share()] { blocked.wait(); });
    // The no-op posted next waits; after a whole interval (300 ms, and a tick or two to notice)
    // the pings stop.
    (void)watchdog_pings(next, 800ms);
    CHECK(watchdog_pings(next, 700ms).empty());

    unblock.set_value();
    const auto resumed = watchdog_pings(next, 700ms);
    CHECK(resumed.size() >= 2);

    // Cancelling ends the coroutine, so the loop runs out of work and run() returns.
    dog.cancel();
    main_thread.join();
    CHECK(watchdog_pings(next, 400ms).empty());
  }
  keep.reset();
  watched_thread.join();
}

TEST_CASE(
    "notifications carry what systemd needs: MONOTONIC_USEC with RELOADING=1, one-line "
    "status") {
  const temp_dir dir;
  notify_socket manager(dir / "notify");
  const systemd::notifier notify;
  {
    const scoped_env env("NOTIFY_SOCKET", manager.path().string());
    CHECK(notify.enabled());

    timespec before{};
    ::clock_gettime(CLOCK_MONOTONIC, &before);
    notify.reloading();
    const auto reloading = manager.next(2s);
    REQUIRE(reloading);
    const std::string prefix = "RELOADING=1\nMONOTONIC_USEC=";
    REQUIRE(reloading->starts_with(prefix));
    const auto usec = std::stoull(reloading->substr(prefix.size()));
    const auto before_usec = static_cast<unsigned long long>(before.tv_sec) * 1'000'000ULL +
                             static_cast<unsigned long long>(before.tv_nsec) / 1'000ULL;
    CHECK(usec >= before_usec);
    CHECK(usec - before_usec < 2'000'000ULL);

    notify.ready("serving\nMAINPID=1");
    CHECK(manager.next(2s) ==
          "READY=1\nSTATUS=serving MAINPID=1\nMAINPID=" + std::to_string(::getpid()));
    notify.status("draining 3 connection(s)");
    CHECK(manager.next(2s) == "STATUS=draining 3 connection(s)");
    notify.stopping();
    CHECK(manager.next(2s) == "STOPPING=1");
  }
  // Without NOTIFY_SOCKET every call is a no-op.
  const scoped_env none("NOTIFY_SOCKET", std::nullopt);
  CHECK_FALSE(notify.enabled());
  notify.ready("x");
  notify.stopping();
  CHECK_FALSE(manager.next(200ms));
}

}  // namespace
}  // namespace atls::test
