// No TPM operation blocks an I/O thread (issue 5, item 5). One atlsd with a single connection
// thread serves two listeners: one attests itself with a TPM that a proxy makes slow, the other is
// plain TLS with a key file. While attested connections keep the TPM busy, plain-TLS requests must
// take about as long as they do with the TPM idle. A connection thread that waited for the TPM,
// even once per attested connection, would hold every plain request it met for up to a whole TPM
// command: hundreds of milliseconds here, against a few milliseconds for a plain request.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <openssl/ssl.h>

#include "atls/common/openssl_ptr.hpp"

#include "e2e/admin_client.hpp"
#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include "support/slow_proxy.hpp"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;
using milliseconds = std::chrono::duration<double, std::milli>;

// How long each TPM command is held while the TPM is busy. A plain request that met a blocked
// connection thread would wait up to this long; an attested connection needs four commands (the
// handshake's signature, certify, quote, the authenticator's signature).
constexpr auto tpm_delay = 300ms;
// Attested requests in flight at once: enough that the TPM's queue does not run dry between the
// network round trips of one connection.
constexpr int attesting_clients = 3;
// Plain requests per measurement, started at this pace. The busy measurement then lasts 5 s: many
// TPM commands and more than one attested connection from start to end, so that a stall in any
// step of an attested connection falls inside it.
constexpr std::size_t samples = 50;
constexpr auto pacing = 100ms;

using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, openssl_free<SSL_CTX_free>>;
using ssl_ptr = std::unique_ptr<SSL, openssl_free<SSL_free>>;

// Times plain-TLS requests: plain OpenSSL over a blocking socket with TCP_NODELAY. (tls_client of
// loopback.hpp leaves Nagle's algorithm on, so a request written right after the handshake's
// Finished waits for the server's delayed ACK: a constant 40 ms that would hide what this test
// measures.)
class timing_client {
 public:
  timing_client(const pki& p, std::uint16_t port)
      : ctx_(SSL_CTX_new(TLS_client_method())), port_(port) {
    REQUIRE(ctx_);
    REQUIRE(SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_3_VERSION) == 1);
    REQUIRE(SSL_CTX_load_verify_locations(ctx_.get(), (p / "ca.crt").c_str(), nullptr) == 1);
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
  }

  // One request on a fresh connection: TCP connect, a full TLS 1.3 handshake, GET, the whole
  // answer up to close_notify. Its duration, or nothing when any step failed.
  [[nodiscard]] std::optional<milliseconds> request() const {
    const auto start = clock::now();
    const socket_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int on = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    // A wedged server fails the request instead of hanging the test.
    const timeval limit{.tv_sec = 10, .tv_usec = 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      return std::nullopt;
    }
    const ssl_ptr ssl(SSL_new(ctx_.get()));
    if (!ssl || SSL_set_fd(ssl.get(), fd.get()) != 1 ||
        SSL_set_tlsext_host_name(ssl.get(), "server.test") != 1 ||
        SSL_set1_host(ssl.get(), "server.test") != 1 || SSL_connect(ssl.get()) != 1) {
      return std::nullopt;
    }
    const std::string_view get = "GET / HTTP/1.1\r\nHost: server.test\r\nConnection: close\r\n\r\n";
    std::size_t written = 0;
    if (SSL_write_ex(ssl.get(), get.data(), get.size(), &written) != 1) {
      return std::nullopt;
    }
    std::string answer;
    std::array<char, 4096> buffer{};
    std::size_t n = 0;
    while (SSL_read_ex(ssl.get(), buffer.data(), buffer.size(), &n) == 1) {
      answer.append(buffer.data(), n);
    }
    const bool closed = SSL_get_error(ssl.get(), 0) == SSL_ERROR_ZERO_RETURN;
    const milliseconds took = clock::now() - start;
    (void)SSL_shutdown(ssl.get());  // our close_notify, so that the sidecar logs a clean end
    if (!closed || !answer.ends_with("\r\n\r\nplain\n")) {
      return std::nullopt;
    }
    return took;
  }

 private:
  ssl_ctx_ptr ctx_;
  std::uint16_t port_;
};

struct latencies {
  std::vector<milliseconds> measured;  // sorted
  int failed = 0;
  clock::time_point start;
  clock::time_point end;

  [[nodiscard]] milliseconds median() const { return percentile(50); }
  [[nodiscard]] milliseconds percentile(std::size_t p) const {
    return measured.at((measured.size() - 1) * p / 100);
  }
  [[nodiscard]] milliseconds worst() const { return measured.back(); }
};

// Plain requests started on a fixed schedule, each on its own thread, whether or not the earlier
// ones have finished. One request after another would let a stalled connection thread hold back
// the next request's start too, and so sample each stall once however long it lasted.
std::size_t slower_than(const latencies& l, milliseconds limit) {
  return static_cast<std::size_t>(
      std::count_if(l.measured.begin(), l.measured.end(), [&](auto took) { return took > limit; }));
}

latencies measure_plain(const timing_client& client) {
  latencies out;
  std::vector<std::optional<milliseconds>> results(samples);
  std::vector<std::thread> requests;
  out.start = clock::now();
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto at = out.start + i * pacing;
    requests.emplace_back([&client, &result = results[i], at] {
      std::this_thread::sleep_until(at);
      result = client.request();
    });
  }
  for (auto& request : requests) {
    request.join();
  }
  out.end = clock::now();
  for (const auto& result : results) {
    if (result) {
      out.measured.push_back(*result);
    } else {
      ++out.failed;
    }
  }
  std::sort(out.measured.begin(), out.measured.end());
  return out;
}

// Attested requests through the relying party, `clients` at a time, until stop(). Each makes the
// attesting listener use its TPM four times. Runs on its own threads and asserts nothing there:
// the test reads the counts afterwards.
class attested_load {
 public:
  attested_load(std::uint16_t port, int clients) {
    for (int i = 0; i < clients; ++i) {
      clients_.emplace_back([this, port] { loop(port); });
    }
  }
  ~attested_load() { stop(); }
  attested_load(const attested_load&) = delete;
  attested_load& operator=(const attested_load&) = delete;

  // Lets every request in flight finish, then joins.
  void stop() {
    stopping_ = true;
    for (auto& client : clients_) {
      if (client.joinable()) {
        client.join();
      }
    }
  }
  [[nodiscard]] int succeeded() const { return succeeded_; }
  [[nodiscard]] int failed() const { return failed_; }
  [[nodiscard]] std::string last_failure() const {
    const std::lock_guard lock(mutex_);
    return last_failure_;
  }

 private:
  void loop(std::uint16_t port) {
    while (!stopping_) {
      // Generous: with the TPM's queue full, one attested connection waits for several others'
      // commands, each held for tpm_delay.
      const auto fetched =
          run({"curl", "-sS", "--max-time", "30", "http://127.0.0.1:" + std::to_string(port) + "/"},
              40s);
      if (fetched.exit_code == 0 && fetched.out == "attested\n") {
        ++succeeded_;
      } else {
        ++failed_;
        const std::lock_guard lock(mutex_);
        last_failure_ = "curl exit " + std::to_string(fetched.exit_code) + ": " + fetched.err;
      }
    }
  }

  std::atomic<bool> stopping_{false};
  std::atomic<int> succeeded_{0};
  std::atomic<int> failed_{0};
  mutable std::mutex mutex_;
  std::string last_failure_;
  std::vector<std::thread> clients_;
};

TEST_CASE(
    "plain TLS on one listener keeps its latency while another listener's TPM is busy "
    "attesting") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  slow_tpm_proxy tpm(tik.simulator);
  loopback_server attested_origin(http_responder("attested\n"));
  loopback_server plain_origin(http_responder("plain\n"));
  const auto attested_port = free_port();
  const auto plain_port = free_port();
  const auto relying_port = free_port();
  // One connection thread: the attested and the plain listener's connections all share it.
  atlsd server(
      dir, "server",
      "log:\n  level: debug\ndrain_timeout: 5s\nthreads: 1\ntpm:\n  tcti: \"" + tpm.tcti() +
          "\"\nlisteners:\n" +
          attesting_inbound(attested_port, attested_origin.port(), tik, {.name = "attested"}) +
          inbound("plain", plain_port, local(plain_origin.port()), p));
  atlsd relying_party(
      dir, "relying",
      header() +
          relying_outbound("out", relying_port, attested_port, p,
                           peer_block({.trusted_ak = trusted_pem(write_ak(dir, tik, "ak.pem"))})));

  // Both paths work, with the TPM at full speed.
  const auto first = curl_http(relying_port);
  INFO(first.err);
  INFO(server.log());
  REQUIRE(first.out == "attested\n");
  const timing_client plain(p, plain_port);
  REQUIRE(plain.request());

  const auto idle = measure_plain(plain);

  tpm.set_delay(tpm_delay);
  std::optional<attested_load> load;
  load.emplace(relying_port, attesting_clients);
  // Measure once the queue is primed: the first attested connections have had TPM answers.
  const auto primed = tpm.answered() + attesting_clients;
  const auto priming_deadline = clock::now() + 30s;
  while (tpm.answered() < primed && clock::now() < priming_deadline) {
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(tpm.answered() >= primed);
  const auto busy = measure_plain(plain);
  tpm.set_delay(0ms);
  load->stop();

  CHECK(idle.failed == 0);
  CHECK(busy.failed == 0);
  REQUIRE(!idle.measured.empty());
  REQUIRE(!busy.measured.empty());
  const auto window = busy.end - busy.start;
  const auto tpm_busy = tpm.busy_between(busy.start, busy.end);
  const auto tpm_commands = tpm.answered_between(busy.start, busy.end);
  const auto coverage = milliseconds(tpm_busy) / milliseconds(window);
  MESSAGE("plain TLS request, TPM idle: median ", idle.median().count(), " ms, 90th percentile ",
          idle.percentile(90).count(), " ms, worst ", idle.worst().count(), " ms");
  MESSAGE("plain TLS request, TPM busy: median ", busy.median().count(), " ms, 90th percentile ",
          busy.percentile(90).count(), " ms, worst ", busy.worst().count(), " ms, ",
          slower_than(busy, tpm_delay), " slower than ", tpm_delay.count(), " ms; TPM busy ",
          100 * coverage, "% of ", milliseconds(window).count(), " ms with ", tpm_commands,
          " commands answered (", tpm_delay.count(),
          " ms each); attested requests: ", load->succeeded(), " ok, ", load->failed(), " failed");

  // The comparison means something only if the TPM was idle for the first measurement and
  // working throughout the second, across several commands.
  CHECK(tpm.busy_between(idle.start, idle.end) == clock::duration::zero());
  CHECK(coverage >= 0.8);
  CHECK(tpm_commands >= 10);

  // Generous headroom for a shared, noisy machine: a plain request takes a few milliseconds, and
  // one that meets a connection thread waiting for the TPM waits for the rest of that wait, which
  // lasts at least one TPM command (tpm_delay) and often several.
  CHECK(busy.median() <= 3 * idle.median() + milliseconds(50));
  // The median misses a thread that waits for the TPM only now and then (say, for the handshake's
  // signature alone): such a wait still holds up every plain request that starts during it.
  // One slow request is forgiven as noise.
  CHECK(slower_than(busy, tpm_delay) <= 1);

  INFO(load->last_failure());
  CHECK(load->failed() == 0);
  CHECK(load->succeeded() >= attesting_clients);
  CHECK(server.wait_for_log("attestation=\"self=accepted\""));
}

TEST_CASE(
    "with the TPM's queue full, a new attested connection is refused at once as tpm_busy, and "
    "served again once the queue drains") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  const tpm_identity tik(dir, p, "DNS:server.test", "serverAuth");
  slow_tpm_proxy tpm(tik.simulator);
  loopback_server origin(http_responder("attested\n"));
  const auto attested_port = free_port();
  const auto relying_port = free_port();
  const auto admin_port = free_port();
  // One command may wait or run at a time: an attested handshake in progress fills the queue.
  atlsd server(
      dir, "server",
      header("tpm:\n  tcti: \"" + tpm.tcti() + "\"\n  queue_limit: 1\n" + admin_block(admin_port)) +
          attesting_inbound(attested_port, origin.port(), tik, {.name = "attested"}));
  atlsd relying_party(
      dir, "relying",
      header() +
          relying_outbound("out", relying_port, attested_port, p,
                           peer_block({.trusted_ak = trusted_pem(write_ak(dir, tik, "ak.pem"))})));
  // A readiness probe's TPM command may fill the queue for a moment: a refusal then is right.
  bool served = false;
  for (int i = 0; i < 5 && !served; ++i) {
    served = curl_http(relying_port).out == "attested\n";
  }
  REQUIRE(served);

  // A connection whose handshake holds the TPM for a long time.
  tpm.set_delay(3s);
  std::thread slow([&] { (void)curl_http(relying_port); });
  const auto deadline = clock::now() + 10s;
  while (tpm.in_flight() == 0 && clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE(tpm.in_flight() > 0);

  // Meanwhile a client that connects straight to the attesting listener is turned away with a
  // TLS alert, well before the held command would finish.
  const auto started = clock::now();
  const auto refused = run({"openssl", "s_client", "-connect", local(attested_port), "-tls1_3",
                            "-servername", "server.test", "-CAfile", (p / "ca.crt").string()},
                           20s);
  const auto took = clock::now() - started;
  INFO(refused.out);
  INFO(refused.err);
  CHECK(refused.exit_code != 0);
  CHECK(refused.err.find("alert internal error") != std::string::npos);
  CHECK(took < 2s);
  CHECK(
      server.wait_for_log("outcome=tpm_busy reason=\"the TPM's queue is full (1 commands; "
                          "tpm.queue_limit 1)\""));
  CHECK(scrape(admin_port)
            .value_of("atlsd_connections_total",
                      {{"listener", "attested"}, {"outcome", "tpm_busy"}}) >= 1);

  tpm.set_delay(0ms);
  slow.join();
  const auto again = curl_http(relying_port);
  INFO(server.log());
  CHECK(again.out == "attested\n");
}

}  // namespace
}  // namespace atls::test
