// Multiplexing end to end (config/README.md "Multiplexing"): workload connections riding as
// HTTP/2 CONNECT streams on one attested tunnel between two atlsd, with real sockets, swtpm as
// the attester's TPM and the built-in local verifier on the relying side.
#include <chrono>
#include <cstdint>
#include <future>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "e2e/admin_client.hpp"
#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include "support/process.hpp"
#include <signal.h>
#include <sys/socket.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;

// header() of configs.hpp with one connection loop (so one tunnel per outbound listener) and
// the given drain timeout.
std::string one_loop_header(const std::string& extra = "", const std::string& drain = "5s") {
  auto out = header(extra);
  out.replace(out.find("threads: 2\n"), 11, "threads: 1\n");
  out.replace(out.find("drain_timeout: 5s\n"), 18, "drain_timeout: " + drain + "\n");
  return out;
}

const std::string multiplex = "    multiplex: true\n";

// Every whole line of `log` that contains `part`.
std::vector<std::string> lines_with(const std::string& log, std::string_view part) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < log.size()) {
    auto end = log.find('\n', start);
    if (end == std::string::npos) {
      break;  // a line still being written
    }
    const auto line = log.substr(start, end - start);
    if (contains(line, part)) {
      out.push_back(line);
    }
    start = end + 1;
  }
  return out;
}

// The N of "tunnel=N" in a connection line, or empty.
std::string tunnel_of(const std::string& line) {
  const auto at = line.find("tunnel=");
  if (at == std::string::npos) {
    return {};
  }
  const auto begin = at + 7;
  auto end = begin;
  while (end < line.size() && line[end] >= '0' && line[end] <= '9') {
    ++end;
  }
  return line.substr(begin, end - begin);
}

// The "connection closed" lines of the workload connections (streams) of `listener`, not
// those of the tunnels that carried them.
std::vector<std::string> stream_lines(const std::string& log, const std::string& listener) {
  auto lines = lines_with(log, "connection closed listener=" + listener + " ");
  std::erase_if(lines, [](const std::string& line) { return tunnel_of(line).empty(); });
  return lines;
}

// Polls until `daemon` has logged `count` stream lines for `listener` (10 s at most), and
// returns them.
std::vector<std::string> wait_for_streams(const atlsd& daemon, const std::string& listener,
                                          std::size_t count,
                                          std::chrono::milliseconds timeout = 10s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto lines = stream_lines(daemon.log(), listener);
    if (lines.size() >= count || std::chrono::steady_clock::now() > until) {
      return lines;
    }
    std::this_thread::sleep_for(20ms);
  }
}

// One workload connection through `port` to an echo upstream: sends `size` pattern bytes of
// `seed`, half-closes, and reads everything back. True when the same bytes came back.
bool echo_round_trip(std::uint16_t port, std::uint64_t seed, std::size_t size) {
  const auto fd = connect_loopback(port, 15s);
  if (!fd) {
    return false;
  }
  const auto sent = pattern_bytes(seed, size);
  if (!send_all(fd.get(), sent)) {
    return false;
  }
  ::shutdown(fd.get(), SHUT_WR);
  return receive_all(fd.get()) == sent;
}

// The attested pair of attestation_test.cpp: an attesting inbound (TIK in swtpm, an admin
// listener for its TPM metrics) with an echo upstream; the test starts the relying outbound.
struct attested_pair {
  explicit attested_pair(const temp_dir& d, const std::string& in_more = multiplex)
      : dir(d),
        p(make_pki(dir)),
        tik(dir, p, "DNS:server.test", "serverAuth"),
        upstream(echo_responder()),
        in_port(free_port()),
        in_admin(free_port()),
        in(dir, "in",
           one_loop_header(tik.config() + admin_block(in_admin)) +
               attesting_inbound(in_port, upstream.port(), tik) + in_more),
        ak(write_ak(dir, tik, "server-ak.pem")) {}

  // The multiplexing outbound listener "out" on `port`; `attestation_more` goes before the
  // peer rules (indent 6).
  [[nodiscard]] std::string relying_config(std::uint16_t port, const std::string& pcr_value,
                                           const std::string& attestation_more = "") const {
    return one_loop_header() +
           outbound("out", port, local(in_port), p, "server.test",
                    multiplex + "    attestation:\n" + attestation_more +
                        peer_block({.trusted_ak = trusted_pem(ak), .pcr_value = pcr_value}));
  }

  // How often the attester's TPM did `operation` successfully, from its /metrics. A piece of
  // evidence (the quote and the AK's certification) is one "evidence" operation.
  [[nodiscard]] double tpm_operations(const std::string& operation) const {
    return scrape(in_admin)
        .value_of("atlsd_tpm_operations_total", {{"operation", operation}, {"result", "ok"}})
        .value_or(0);
  }

  const temp_dir& dir;
  pki p;
  tpm_identity tik;
  loopback_server upstream;
  std::uint16_t in_port;
  std::uint16_t in_admin;
  atlsd in;
  std::filesystem::path ak;
};

// A plain-TLS multiplexing pair: inbound "in" before `upstream`, outbound "out" to it.
struct plain_pair {
  plain_pair(const temp_dir& d, const std::string& upstream, const std::string& in_more = multiplex,
             const std::string& out_more = multiplex, const std::string& drain = "5s")
      : p(make_pki(d)),
        in_port(free_port()),
        out_port(free_port()),
        in(d, "in", one_loop_header() + inbound("in", in_port, upstream, p, in_more)),
        out(d, "out",
            one_loop_header("", drain) +
                outbound("out", out_port, local(in_port), p, "server.test", out_more)) {}

  pki p;
  std::uint16_t in_port;
  std::uint16_t out_port;
  atlsd in;
  atlsd out;
};

const std::string closed_out = "connection closed listener=out ";
const std::string closed_in = "connection closed listener=in ";

// A plain multiplexing pair to an echo upstream whose tunnels idle out after `idle`, after one
// stream has ridden a tunnel and closed. `tunnel` is that tunnel, empty if the stream failed.
struct tunnel_after_one_stream {
  explicit tunnel_after_one_stream(const std::string& idle)
      : upstream(echo_responder()),
        pair(dir, local(upstream.port()), idle_after(idle), idle_after(idle)) {
    if (echo_round_trip(pair.out_port, 1, 2048) && pair.out.wait_for_log(closed_out)) {
      tunnel = tunnel_of(lines_with(pair.out.log(), closed_out).at(0));
    }
  }
  static std::string idle_after(const std::string& idle) {
    return multiplex + "    timeouts: {idle: " + idle + "}\n";
  }

  // The tunnel logged its own end (the line of the session whose id is the tunnel id) within
  // `timeout`, as a clean close.
  [[nodiscard]] bool tunnel_closed_cleanly(std::chrono::milliseconds timeout) const {
    const auto line = closed_out + "id=" + tunnel + " ";
    return pair.out.wait_for_log(line, timeout) &&
           contains(lines_with(pair.out.log(), line).at(0), "outcome=ok");
  }

  // A second workload connection is carried, and by another tunnel than the first.
  [[nodiscard]] bool next_stream_rides_a_new_tunnel() const {
    if (!echo_round_trip(pair.out_port, 2, 2048)) {
      return false;
    }
    const auto lines = wait_for_streams(pair.out, "out", 2);
    return lines.size() == 2 && contains(lines[1], "outcome=ok") && !tunnel_of(lines[1]).empty() &&
           tunnel_of(lines[1]) != tunnel;
  }

  temp_dir dir;
  loopback_server upstream;
  plain_pair pair;
  std::string tunnel;
};

TEST_CASE(
    "twenty connections over a multiplexing pair carry their bytes and attest the peer once") {
  const temp_dir dir;
  attested_pair server(dir);
  const auto out_port = free_port();
  atlsd out(dir, "out", server.relying_config(out_port, zero_pcr));
  // The inbound's own start-up may use the TPM; count from here.
  const auto evidence_before = server.tpm_operations("evidence");

  for (int i = 0; i < 20; ++i) {
    INFO("connection " << i);
    CHECK(echo_round_trip(out_port, 1000 + i, 20000 + 997 * i));
  }
  const auto out_lines = wait_for_streams(out, "out", 20);
  const auto in_lines = wait_for_streams(server.in, "in", 20);
  INFO(out.log());
  INFO(server.in.log());
  REQUIRE(out_lines.size() == 20);
  REQUIRE(in_lines.size() == 20);
  for (const auto& line : out_lines) {
    CHECK(contains(line, "outcome=ok"));
    CHECK(contains(line, "alpn=h2 tunnel="));
    CHECK(contains(line, "attestation=\"peer=affirming key=sha256:"));
  }
  for (const auto& line : in_lines) {
    CHECK(contains(line, "outcome=ok"));
    CHECK(contains(line, "tunnel="));
  }
  CHECK(lines_with(out.log(), "attestation listener=out ").size() == 1);
  CHECK(
      lines_with(out.log(), " attester=peer round=0 verifier=\"local\" outcome=accepted").size() ==
      1);
  // One piece of evidence (one quote) for all twenty.
  CHECK(server.tpm_operations("evidence") - evidence_before == 1);
  CHECK(server.upstream.accepted() == 20);
}

TEST_CASE("fifty concurrent connections share one tunnel without mixing their bytes") {
  const temp_dir dir;
  loopback_server upstream(echo_responder());
  plain_pair pair(dir, local(upstream.port()));

  constexpr int count = 50;
  std::vector<std::future<bool>> done;
  done.reserve(count);
  for (int i = 0; i < count; ++i) {
    done.push_back(std::async(std::launch::async, [port = pair.out_port, i] {
      return echo_round_trip(port, 7000 + i, 30000 + 131 * i);
    }));
  }
  int ok = 0;
  for (auto& f : done) {
    ok += f.get() ? 1 : 0;
  }
  const auto lines = wait_for_streams(pair.out, "out", count);
  INFO(pair.out.log());
  CHECK(ok == count);
  REQUIRE(lines.size() == count);
  std::set<std::string> tunnels;
  for (const auto& line : lines) {
    CHECK(contains(line, "outcome=ok"));
    tunnels.insert(tunnel_of(line));
  }
  CHECK(tunnels.size() == 1);
  CHECK_FALSE(tunnels.begin()->empty());
}

TEST_CASE("a client that half-closes its stream still receives all the upstream sends after") {
  const temp_dir dir;
  const auto answer = pattern_bytes(42, 100000);
  std::promise<std::string> received;
  loopback_server upstream([&](int fd) {
    // Reads to EOF (the client's FIN through the stream), only then answers and closes.
    received.set_value(receive_all(fd));
    send_all(fd, answer);
  });
  plain_pair pair(dir, local(upstream.port()));

  const auto fd = connect_loopback(pair.out_port, 15s);
  REQUIRE(fd);
  const auto request = pattern_bytes(41, 5000);
  REQUIRE(send_all(fd.get(), request));
  REQUIRE(::shutdown(fd.get(), SHUT_WR) == 0);
  CHECK(receive_all(fd.get()) == answer);
  auto at_upstream = received.get_future();
  REQUIRE(at_upstream.wait_for(10s) == std::future_status::ready);
  CHECK(at_upstream.get() == request);
  REQUIRE(pair.out.wait_for_log(closed_out));
  CHECK(contains(lines_with(pair.out.log(), closed_out).at(0), "outcome=ok"));
}

TEST_CASE("a stream whose upstream refuses is closed with 502 and the tunnel keeps serving") {
  const temp_dir dir;
  const auto socket_path = dir / "upstream.sock";  // nothing listens there yet
  plain_pair pair(dir, "unix:" + socket_path.string());

  const auto refused = connect_loopback(pair.out_port, 15s);
  REQUIRE(refused);
  send_all(refused.get(), "lost");
  CHECK(closed_by_peer(refused.get()));
  REQUIRE(pair.out.wait_for_log(closed_out));
  REQUIRE(pair.in.wait_for_log(closed_in));
  INFO(pair.out.log());
  INFO(pair.in.log());
  // The stream never opened, so its line names the tunnel in its reason ("tunnel N to ...").
  const auto first = lines_with(pair.out.log(), closed_out).at(0);
  CHECK(contains(first, "outcome=error"));
  CHECK(contains(first, "502"));
  const auto named = first.find("reason=\"tunnel ");
  REQUIRE(named != std::string::npos);
  const auto first_tunnel = tunnel_of("tunnel=" + first.substr(named + 15));
  CHECK(contains(lines_with(pair.in.log(), closed_in).at(0), "outcome=error"));

  const loopback_server upstream(echo_responder(), socket_path);
  CHECK(echo_round_trip(pair.out_port, 9, 4096));
  const auto lines = wait_for_streams(pair.out, "out", 1);
  REQUIRE(lines.size() == 1);
  CHECK(contains(lines[0], "outcome=ok"));
  CHECK_FALSE(first_tunnel.empty());
  CHECK(tunnel_of(lines[0]) == first_tunnel);
}

TEST_CASE("streams count against the inbound's max_connections and one beyond it is refused") {
  const temp_dir dir;
  const loopback_server upstream(echo_responder());
  // Two sessions: the tunnel itself and one stream.
  plain_pair pair(dir, local(upstream.port()), multiplex + "    max_connections: 2\n");

  const auto held = connect_loopback(pair.out_port, 15s);
  REQUIRE(held);
  REQUIRE(echoed(held.get(), "first"));  // its stream is open on the inbound now

  const auto over = connect_loopback(pair.out_port, 15s);
  REQUIRE(over);
  send_all(over.get(), "lost");
  CHECK(closed_by_peer(over.get()));
  REQUIRE(pair.in.wait_for_log("outcome=at_capacity"));
  REQUIRE(pair.out.wait_for_log(closed_out));
  INFO(pair.in.log());
  INFO(pair.out.log());
  const auto refused_in = lines_with(pair.in.log(), "outcome=at_capacity");
  REQUIRE(refused_in.size() == 1);
  CHECK(contains(refused_in[0], "max_connections (2) reached"));
  const auto refused_out = lines_with(pair.out.log(), closed_out);
  REQUIRE(refused_out.size() == 1);
  CHECK(contains(refused_out[0], "503"));
  // The held connection was not disturbed.
  CHECK(echoed(held.get(), "still here"));

  // Its end frees the slot: the next connection rides the same tunnel.
  ::shutdown(held.get(), SHUT_WR);
  CHECK(receive_all(held.get()).empty());
  REQUIRE(pair.in.wait_for_log("outcome=ok"));
  CHECK(echo_round_trip(pair.out_port, 3, 1024));
  // (The refused connection's line names no tunnel: its stream never opened.)
  const auto lines = wait_for_streams(pair.out, "out", 2);
  REQUIRE(lines.size() == 2);
  CHECK(contains(lines[1], "outcome=ok"));
  CHECK(tunnel_of(lines[1]) == tunnel_of(lines[0]));
}

TEST_CASE(
    "an outbound that multiplexes to a peer that does not take tunnels closes the connection") {
  const temp_dir dir;
  loopback_server upstream(echo_responder());
  plain_pair pair(dir, local(upstream.port()), /*in_more=*/"");

  const auto fd = connect_loopback(pair.out_port, 15s);
  REQUIRE(fd);
  CHECK(closed_by_peer(fd.get()));
  INFO(pair.out.log());
  CHECK(pair.out.wait_for_log("does not take tunnels"));
}

TEST_CASE("a multiplexing inbound still serves clients that do not tunnel") {
  const temp_dir dir;
  loopback_server upstream(http_responder("not tunnelled\n"));
  plain_pair pair(dir, local(upstream.port()), multiplex, /*out_more=*/"");

  const auto fetched = curl_http(pair.out_port);
  INFO(fetched.err);
  INFO(pair.out.log());
  INFO(pair.in.log());
  CHECK(fetched.exit_code == 0);
  CHECK(fetched.out == "not tunnelled\n");

  // openssl s_client offering no ALPN: the handshake completes and the request gets its answer.
  const auto request = dir / "request.txt";
  dir.write("request.txt", "GET / HTTP/1.1\r\nHost: server.test\r\n\r\n");
  const auto client =
      run({"openssl", "s_client", "-connect", local(pair.in_port), "-servername", "server.test",
           "-CAfile", (pair.p / "ca.crt").string(), "-verify_return_error", "-ign_eof"},
          20s, request);
  INFO(client.err);
  CHECK(client.exit_code == 0);
  CHECK(contains(client.out, "Verify return code: 0 (ok)"));
  CHECK(contains(client.out, "No ALPN negotiated"));
  CHECK(contains(client.out, "not tunnelled"));
}

TEST_CASE("an idle tunnel closes by itself and a later connection opens a new one") {
  const tunnel_after_one_stream t("1s");
  REQUIRE_FALSE(t.tunnel.empty());
  INFO(t.pair.out.log());
  INFO(t.pair.in.log());
  CHECK(t.tunnel_closed_cleanly(8s));
  CHECK(t.next_stream_rides_a_new_tunnel());
}

TEST_CASE("SIGTERM closes an idle tunnel at once instead of waiting for the drain timeout") {
  const temp_dir dir;
  loopback_server upstream(echo_responder());
  const std::string idle = multiplex + "    timeouts: {idle: 5m}\n";
  plain_pair pair(dir, local(upstream.port()), idle, idle, "20s");

  CHECK(echo_round_trip(pair.out_port, 3, 2048));
  REQUIRE(pair.out.wait_for_log(closed_out));
  const auto started = std::chrono::steady_clock::now();
  const auto code = pair.out.stop(SIGTERM, 25s);
  const auto took = std::chrono::steady_clock::now() - started;
  INFO(pair.out.log());
  INFO(pair.in.log());
  CHECK(code.value_or(-1) == 0);
  CHECK(took < 5s);
}

TEST_CASE("a reload closes an idle tunnel at once instead of leaving it to its idle timeout") {
  tunnel_after_one_stream t("5m");
  REQUIRE_FALSE(t.tunnel.empty());
  CHECK_FALSE(t.tunnel_closed_cleanly(1s));

  t.pair.out.signal(SIGHUP);
  REQUIRE(t.pair.out.wait_for_log("reloaded: added=- removed=- kept=out"));
  INFO(t.pair.out.log());
  CHECK(t.tunnel_closed_cleanly(5s));
  // It rides a tunnel set up under the reloaded settings.
  CHECK(t.next_stream_rides_a_new_tunnel());
}

TEST_CASE("a refused re-attestation on reload resets every stream of the tunnel") {
  const temp_dir dir;
  attested_pair server(dir);
  const auto out_port = free_port();
  const std::string reattest = "      reattest_on_reload: true\n";
  atlsd out(dir, "out", server.relying_config(out_port, zero_pcr, reattest));

  std::vector<socket_fd> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_loopback(out_port, 15s));
    REQUIRE(clients.back());
    REQUIRE(echoed(clients.back().get(), "stream " + std::to_string(i)));
  }

  // The new policy expects other PCR values: the tunnel's peer is asked again and refused.
  dir.write("out.yaml", server.relying_config(out_port, std::string(64, '1'), reattest));
  out.signal(SIGHUP);
  REQUIRE(out.wait_for_log("reloaded: added=- removed=- kept=out"));
  for (auto& client : clients) {
    CHECK(closed_by_peer(client.get()));
  }
  INFO(out.log());
  CHECK(out.wait_for_log("round=1 verifier=\"local\" outcome=status_below_policy"));
  const auto lines = wait_for_streams(out, "out", 3);
  REQUIRE(lines.size() == 3);
  for (const auto& line : lines) {
    CHECK_FALSE(contains(line, "outcome=ok"));
  }
}

TEST_CASE("a reload that requires attestation closes an unattested tunnel and its streams") {
  const temp_dir dir;
  attested_pair server(dir);
  const auto out_port = free_port();
  atlsd out(dir, "out",
            one_loop_header() + outbound("out", out_port, local(server.in_port), server.p,
                                         "server.test", multiplex));

  std::vector<socket_fd> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(connect_loopback(out_port, 15s));
    REQUIRE(clients.back());
    REQUIRE(echoed(clients.back().get(), "unattested stream " + std::to_string(i)));
  }

  // The tunnel cannot attest in place: it closes, and every stream on it with it.
  dir.write("out.yaml",
            server.relying_config(out_port, zero_pcr, "      reattest_on_reload: true\n"));
  out.signal(SIGHUP);
  REQUIRE(out.wait_for_log("reloaded: added=- removed=- kept=out"));
  for (auto& client : clients) {
    CHECK(closed_by_peer(client.get()));
  }
  INFO(out.log());
  CHECK(out.wait_for_log("outcome=rejected reason=\"attestation attestation_required: "));
  const auto lines = wait_for_streams(out, "out", 2);
  REQUIRE(lines.size() == 2);
  for (const auto& line : lines) {
    CHECK(contains(line, "the reloaded policy requires the peer to attest"));
  }
  // A new connection rides a new tunnel, attested under the reloaded policy.
  const auto next = connect_loopback(out_port, 15s);
  REQUIRE(next);
  CHECK(echoed(next.get(), "attested stream"));
}

}  // namespace
}  // namespace atls::test
