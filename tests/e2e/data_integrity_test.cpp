// Data integrity through a real sidecar pair (client -> outbound -> inbound -> workload): many
// rounds of random payload sizes, sent in random chunks, with random half-close timing in both
// directions, on several connections at once; every byte is compared with the stream it should
// be. The same on an attested pair whose re-attestation frames share the TLS stream with data.
//
// The run is reproducible from its seed: the test prints it, and ATLS_INTEGRITY_SEED=N replays
// the same rounds (ATLS_INTEGRITY_ROUNDS=N changes how many). Thread scheduling still varies.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"
#include "support/process_watch.hpp"
#include <sys/socket.h>

namespace atls::test {
namespace {

using namespace std::chrono_literals;

// ---- the byte streams -------------------------------------------------------------------------

// Byte `offset` of stream `seed`: byte offset%8 of a splitmix64 word, so that either end can
// produce any part of a stream without keeping it.
std::uint64_t stream_word(std::uint64_t seed, std::uint64_t index) {
  auto z = seed + (index + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

void stream_fill(std::uint64_t seed, std::uint64_t offset, char* out, std::size_t size) {
  std::size_t i = 0;
  while (i < size) {
    const auto at = offset + i;
    const auto word = stream_word(seed, at / 8);
    for (auto k = at % 8; k < 8 && i < size; ++k, ++i) {
      out[i] = static_cast<char>((word >> (8 * k)) & 0xff);
    }
  }
}

constexpr std::uint64_t no_mismatch = std::numeric_limits<std::uint64_t>::max();

// What one end received in one direction, compared byte by byte with the stream it expected.
struct received_check {
  std::uint64_t bytes = 0;
  std::uint64_t first_mismatch = no_mismatch;  // offset of the first wrong (or extra) byte
  int error = 0;                               // errno of a failed recv (a timeout, a reset)
};

// Reads fd until EOF with reads of random sizes, comparing each byte with stream `seed`, which
// is `size` bytes long.
received_check receive_checked(int fd, std::uint64_t seed, std::uint64_t size,
                               std::mt19937_64& rng) {
  received_check out;
  std::vector<char> buffer(64 * 1024);
  std::vector<char> expected(buffer.size());
  for (;;) {
    const auto want = std::uniform_int_distribution<std::size_t>(1, buffer.size())(rng);
    const auto n = ::recv(fd, buffer.data(), want, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      out.error = errno;
      return out;
    }
    if (n == 0) {
      return out;
    }
    const auto got = static_cast<std::size_t>(n);
    if (out.first_mismatch == no_mismatch) {
      const auto in_stream = out.bytes >= size ? 0 : std::min<std::uint64_t>(got, size - out.bytes);
      stream_fill(seed, out.bytes, expected.data(), in_stream);
      for (std::size_t i = 0; i < got; ++i) {
        if (i >= in_stream || buffer[i] != expected[i]) {
          out.first_mismatch = out.bytes + i;
          break;
        }
      }
    }
    out.bytes += got;
  }
}

// What one end's sending came to: ok, or the errno of the send that failed.
struct sent_check {
  bool ok = true;
  int error = 0;
};

// Sends `size` bytes of stream `seed` in chunks of random sizes; `pace` is spread over the
// transfer as short pauses, one per 32 KiB (a slow writer, so that the connection lives through
// re-attestation rounds).

sent_check send_stream(int fd, std::uint64_t seed, std::uint64_t size, std::mt19937_64& rng,
                       std::chrono::milliseconds pace) {
  std::vector<char> chunk;
  std::uint64_t sent = 0;
  const auto pauses = pace.count() > 0 ? std::max<std::uint64_t>(1, size / (32 * 1024)) : 0;
  const auto pause = pauses > 0 ? std::chrono::microseconds(pace) / static_cast<long>(pauses)
                                : std::chrono::microseconds(0);
  std::uint64_t next_pause = pauses > 0 ? size / pauses : no_mismatch;
  while (sent < size) {
    // Mostly medium writes, some of a few bytes (one TLS record each), some large.
    const auto shape = rng() % 8;
    const std::uint64_t limit = shape == 0 ? 16 : shape < 6 ? 20 * 1024 : 300 * 1024;
    const auto n = std::min<std::uint64_t>(
        size - sent, std::uniform_int_distribution<std::uint64_t>(1, limit)(rng));
    chunk.resize(n);
    stream_fill(seed, sent, chunk.data(), n);
    if (!send_all(fd, std::string_view(chunk.data(), n))) {
      return {.ok = false, .error = errno};
    }
    sent += n;
    if (sent >= next_pause && sent < size) {
      std::this_thread::sleep_for(pause);
      next_pause += size / pauses;
    }
  }
  return {};
}

// ---- the rounds -------------------------------------------------------------------------------

// When each end half-closes its sending side, relative to the other.
enum class timing {
  client_first,  // the client sends and half-closes; the server answers after that end
  both_at_once,  // both send at once, and half-close whenever each is done
  server_first,  // the server answers and half-closes at once, keeps reading; then the client
};

const char* name_of(timing t) {
  switch (t) {
    case timing::client_first:
      return "client_first";
    case timing::both_at_once:
      return "both_at_once";
    case timing::server_first:
      return "server_first";
  }
  return "?";
}

struct round_plan {
  std::uint64_t id = 0;
  std::uint64_t seed = 0;  // of the request and response streams and of the chunk sizes
  std::uint64_t request_size = 0;
  std::uint64_t response_size = 0;
  timing when = timing::client_first;
  std::chrono::microseconds client_delay{0};  // before the client sends its payload
  std::chrono::microseconds server_delay{0};  // before the server sends its answer
  std::chrono::milliseconds pace{0};          // spread over each end's sending
  // The client sends nothing at all, not even the header, and half-closes at once.
  bool silent = false;
};

// A round's request starts with this header, so that the workload knows the round's plan; the
// payload streams follow it. A silent round has no header, and gets the silent answer.
constexpr std::size_t header_size = 16;
constexpr std::string_view magic = "atls-di1";

std::string header_of(std::uint64_t id) {
  std::string out(magic);
  for (int i = 0; i < 8; ++i) {
    out.push_back(static_cast<char>((id >> (8 * i)) & 0xff));
  }
  return out;
}

std::uint64_t request_seed(const round_plan& plan) {
  return plan.seed ^ 0x5265717565737421ULL;
}
std::uint64_t response_seed(const round_plan& plan) {
  return plan.seed ^ 0x526573706f6e7365ULL;
}

// A size around where TLS records (16384 bytes of plaintext at most), the relay buffers (16 KiB
// by default) and the 1 MiB chunks of other tests' writers end, or anywhere up to a few MiB.
std::uint64_t random_size(std::mt19937_64& rng) {
  const auto pick = rng() % 100;
  const auto uniform = [&rng](std::uint64_t low, std::uint64_t high) {
    return std::uniform_int_distribution<std::uint64_t>(low, high)(rng);
  };
  if (pick < 8) {
    return 0;
  }
  if (pick < 13) {
    return 1;
  }
  if (pick < 38) {
    constexpr std::array<std::uint64_t, 6> bases{16384,     2 * 16384, 3 * 16384,
                                                 4 * 16384, 5 * 1024,  1u << 20};
    const auto base = bases[rng() % bases.size()];
    return base + uniform(0, 2) - 1;  // base - 1, base or base + 1
  }
  if (pick < 78) {
    return uniform(2, 64 * 1024);
  }
  if (pick < 95) {
    return uniform(64 * 1024, 1u << 20);
  }
  return uniform(1u << 20, 4u << 20);
}

// The same seed gives the same rounds.
std::vector<round_plan> plan_rounds(std::uint64_t seed, std::size_t rounds, bool paced) {
  std::mt19937_64 rng(seed);
  std::vector<round_plan> out;
  out.reserve(rounds);
  for (std::size_t i = 0; i < rounds; ++i) {
    round_plan plan;
    plan.id = i;
    plan.seed = rng();
    plan.request_size = random_size(rng);
    plan.response_size = random_size(rng);
    plan.when = static_cast<timing>(rng() % 3);
    plan.client_delay = std::chrono::microseconds(rng() % 3000);
    plan.server_delay = std::chrono::microseconds(rng() % 3000);
    // On the attested pair a third of the rounds last long enough for re-attestation rounds
    // (every 300 ms) to come while their bytes flow.
    if (paced && rng() % 3 == 0) {
      plan.pace = std::chrono::milliseconds(400 + rng() % 800);
    }
    plan.silent = rng() % 40 == 0;
    if (plan.silent) {
      plan.request_size = 0;
      plan.when = timing::client_first;
    }
    out.push_back(plan);
  }
  return out;
}

// What a silent round is answered with: the workload cannot tell silent rounds apart, so they
// all get the same stream, of a size drawn from the run's seed.
struct silent_answer {
  std::uint64_t seed = 0;
  std::uint64_t size = 0;
};

// What each end saw of one round.
struct round_result {
  bool done = false;
  bool connected = false;
  bool twice = false;  // the workload saw the round's header on a second connection
  received_check received;
  sent_check sent;
};

// The workload behind the inbound sidecar: reads the header, then plays its side of the plan.
class workload {
 public:
  workload(const std::vector<round_plan>& plans, silent_answer silent)
      : plans_(plans), results_(plans.size()), silent_(silent), server_(handler()) {}

  std::uint16_t port() const { return server_.port(); }

  // Waits until every non-silent round and `silent_rounds` silent ones are done here.
  bool wait_all(std::size_t silent_rounds, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        const std::lock_guard lock(mutex_);
        bool all = silent_done_ >= silent_rounds;
        for (std::size_t i = 0; i < plans_.size() && all; ++i) {
          all = plans_[i].silent || results_[i].done;
        }
        if (all) {
          return true;
        }
      }
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  round_result result(std::size_t id) const {
    const std::lock_guard lock(mutex_);
    return results_[id];
  }
  std::size_t silent_done() const {
    const std::lock_guard lock(mutex_);
    return silent_done_;
  }
  std::size_t silent_bad() const {
    const std::lock_guard lock(mutex_);
    return silent_bad_;
  }
  std::size_t bad_headers() const {
    const std::lock_guard lock(mutex_);
    return bad_headers_;
  }

 private:
  loopback_server::handler handler() {
    return [this](int fd) { serve(fd); };
  }

  void serve(int fd) {
    std::string header(header_size, '\0');
    std::size_t have = 0;
    while (have < header_size) {
      const auto n = ::recv(fd, header.data() + have, header_size - have, 0);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        break;
      }
      have += static_cast<std::size_t>(n);
    }
    if (have == 0) {
      serve_silent(fd);
      return;
    }
    std::uint64_t id = 0;
    for (int i = 0; i < 8; ++i) {
      id |= static_cast<std::uint64_t>(static_cast<unsigned char>(header[8 + i])) << (8 * i);
    }
    if (have < header_size || !header.starts_with(magic) || id >= plans_.size()) {
      const std::lock_guard lock(mutex_);
      ++bad_headers_;
      return;
    }
    const auto& plan = plans_[id];
    std::mt19937_64 send_rng(plan.seed ^ 1);
    std::mt19937_64 receive_rng(plan.seed ^ 2);
    auto receiver = std::async(std::launch::async, [fd, &plan, &receive_rng] {
      return receive_checked(fd, request_seed(plan), plan.request_size, receive_rng);
    });
    if (plan.when == timing::client_first) {
      receiver.wait();  // answers only once the request has ended
    }
    std::this_thread::sleep_for(plan.server_delay);
    const auto sent = send_stream(fd, response_seed(plan), plan.response_size, send_rng, plan.pace);
    ::shutdown(fd, SHUT_WR);
    const auto received = receiver.get();
    const std::lock_guard lock(mutex_);
    auto& result = results_[id];
    result.twice = result.done;
    result.done = true;
    result.sent = sent;
    result.received = received;
  }

  void serve_silent(int fd) {
    std::mt19937_64 rng(silent_.seed);
    const auto sent = send_stream(fd, silent_.seed, silent_.size, rng, 0ms);
    ::shutdown(fd, SHUT_WR);
    const auto rest = receive_checked(fd, 0, 0, rng);
    const std::lock_guard lock(mutex_);
    ++silent_done_;
    if (!sent.ok || rest.bytes != 0 || rest.error != 0) {
      ++silent_bad_;
    }
  }

  const std::vector<round_plan>& plans_;
  mutable std::mutex mutex_;
  std::vector<round_result> results_;
  silent_answer silent_;
  std::size_t silent_done_ = 0;
  std::size_t silent_bad_ = 0;
  std::size_t bad_headers_ = 0;
  loopback_server server_;  // last: its threads use the members above
};

// The client's side of one round, through the outbound sidecar at `port`.
round_result run_client(std::uint16_t port, const round_plan& plan, const silent_answer& silent) {
  round_result out;
  const auto fd = connect_loopback(port, 30s);
  if (!fd) {
    return out;
  }
  out.connected = true;
  std::mt19937_64 send_rng(plan.seed ^ 3);
  std::mt19937_64 receive_rng(plan.seed ^ 4);
  const auto expected_seed = plan.silent ? silent.seed : response_seed(plan);
  const auto expected_size = plan.silent ? silent.size : plan.response_size;
  auto receiver = std::async(std::launch::async, [&fd, expected_seed, expected_size, &receive_rng] {
    return receive_checked(fd.get(), expected_seed, expected_size, receive_rng);
  });
  if (!plan.silent) {
    if (!send_all(fd.get(), header_of(plan.id))) {
      out.sent = {.ok = false, .error = errno};
    }
    if (plan.when == timing::server_first) {
      receiver.wait();  // the whole answer, and its end, before the client's payload
    }
    std::this_thread::sleep_for(plan.client_delay);
    if (out.sent.ok) {
      out.sent = send_stream(fd.get(), request_seed(plan), plan.request_size, send_rng, plan.pace);
    }
  }
  ::shutdown(fd.get(), SHUT_WR);
  out.received = receiver.get();
  out.done = true;
  return out;
}

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') {
    return fallback;
  }
  return std::strtoull(text, nullptr, 0);
}

// One run of rounds: the seed, the plans it gives, and the workload that plays the server side.
// Construct it before the sidecars (they need the workload's port), then play().
class integrity_run {
 public:
  integrity_run(const char* pair, std::size_t default_rounds, bool paced)
      : pair_(pair),
        seed_(env_number("ATLS_INTEGRITY_SEED", std::random_device{}())),
        plans_(plan_rounds(seed_, env_number("ATLS_INTEGRITY_ROUNDS", default_rounds), paced)),
        silent_(silent_of(seed_)),
        workload_(plans_, silent_) {
    std::fprintf(stderr,
                 "data integrity (%s): seed=%llu rounds=%zu; replay with "
                 "ATLS_INTEGRITY_SEED=%llu\n",
                 pair_.c_str(), static_cast<unsigned long long>(seed_), plans_.size(),
                 static_cast<unsigned long long>(seed_));
  }

  std::uint16_t upstream_port() const { return workload_.port(); }
  std::uint64_t seed() const { return seed_; }
  std::size_t rounds() const { return plans_.size(); }
  // What the sidecars relay: every request (with its header) and every response.
  std::uint64_t request_bytes() const {
    std::uint64_t total = 0;
    for (const auto& plan : plans_) {
      total += plan.silent ? 0 : header_size + plan.request_size;
    }
    return total;
  }
  std::uint64_t response_bytes() const {
    std::uint64_t total = 0;
    for (const auto& plan : plans_) {
      total += plan.silent ? silent_.size : plan.response_size;
    }
    return total;
  }

  // Plays every round through the outbound sidecar at `port`, `concurrency` connections at once,
  // and checks every byte at both ends (doctest CHECKs, with the seed in their context).
  void play(std::uint16_t port, std::size_t concurrency) {
    INFO(pair_ << ": replay with ATLS_INTEGRITY_SEED=" << seed_);
    std::vector<round_result> client(plans_.size());
    std::atomic<std::size_t> next{0};
    const auto deadline = std::chrono::steady_clock::now() + 50s;
    std::vector<std::thread> workers;
    workers.reserve(concurrency);
    for (std::size_t w = 0; w < concurrency; ++w) {
      workers.emplace_back([&] {
        for (auto i = next++; i < plans_.size() && std::chrono::steady_clock::now() < deadline;
             i = next++) {
          client[i] = run_client(port, plans_[i], silent_);
        }
      });
    }
    for (auto& worker : workers) {
      worker.join();
    }
    std::size_t silent_rounds = 0;
    std::map<std::string, int> shapes;
    for (const auto& plan : plans_) {
      silent_rounds += plan.silent ? 1 : 0;
      ++shapes[plan.silent ? std::string("silent") : name_of(plan.when)];
    }
    CHECK_MESSAGE(workload_.wait_all(silent_rounds, 30s), "the workload did not see every round");

    std::size_t failed = 0;
    for (const auto& plan : plans_) {
      const auto& c = client[plan.id];
      const auto s = workload_.result(plan.id);
      const auto expected_response = plan.silent ? silent_.size : plan.response_size;
      const bool client_ok = c.done && c.connected && c.sent.ok && c.received.error == 0 &&
                             c.received.bytes == expected_response &&
                             c.received.first_mismatch == no_mismatch;
      const bool server_ok =
          plan.silent ||
          (s.done && !s.twice && s.sent.ok && s.received.error == 0 &&
           s.received.bytes == plan.request_size && s.received.first_mismatch == no_mismatch);
      if (client_ok && server_ok) {
        continue;
      }
      ++failed;
      if (failed > 10) {
        continue;  // the first ten say enough
      }
      const auto first = [](std::uint64_t at) {
        return at == no_mismatch ? std::string("none") : std::to_string(at);
      };
      const std::string shape = plan.silent ? "silent" : name_of(plan.when);
      FAIL_CHECK("round " << plan.id << " (" << shape << ", request " << plan.request_size
                          << " B, response " << expected_response << " B, pace "
                          << plan.pace.count() << " ms): client done=" << c.done
                          << " sent=" << c.sent.ok << " errno=" << c.sent.error << " received "
                          << c.received.bytes << " B, first wrong byte "
                          << first(c.received.first_mismatch) << ", recv errno " << c.received.error
                          << "; workload done=" << s.done << " twice=" << s.twice
                          << " sent=" << s.sent.ok << " received " << s.received.bytes
                          << " B, first wrong byte " << first(s.received.first_mismatch)
                          << ", recv errno " << s.received.error);
    }
    CHECK(failed == 0);
    CHECK(workload_.bad_headers() == 0);
    CHECK(workload_.silent_done() == silent_rounds);
    CHECK(workload_.silent_bad() == 0);
    std::string summary;
    for (const auto& [shape, count] : shapes) {
      summary += " " + shape + "=" + std::to_string(count);
    }
    MESSAGE(pair_ << ": seed=" << seed_ << " rounds=" << plans_.size() << summary
                  << " request_bytes=" << request_bytes() << " response_bytes=" << response_bytes()
                  << " failed=" << failed);
  }

 private:
  static silent_answer silent_of(std::uint64_t seed) {
    std::mt19937_64 rng(seed ^ 0x53696c656e74ULL);
    const auto stream = rng();
    return {.seed = stream, .size = random_size(rng)};
  }

  std::string pair_;
  std::uint64_t seed_;
  std::vector<round_plan> plans_;
  silent_answer silent_;
  workload workload_;
};

// The sum of `key=N` over the close lines of `listener` in `log`.
std::uint64_t sum_of(const std::string& log, const std::string& listener, const std::string& key) {
  std::uint64_t total = 0;
  const auto tag = "connection closed listener=" + listener + " ";
  for (auto at = log.find(tag); at != std::string::npos; at = log.find(tag, at + 1)) {
    const auto end = log.find('\n', at);
    const auto field = log.find(" " + key + "=", at);
    if (field != std::string::npos && field < end) {
      total += std::strtoull(log.c_str() + field + key.size() + 2, nullptr, 10);
    }
  }
  return total;
}

// Every connection of the run closed cleanly on both sidecars, with the bytes the rounds carried,
// and nothing was logged at warning level or above.
void check_sidecar_logs(const std::string& out_log, const std::string& in_log,
                        const integrity_run& run) {
  for (const auto& [log, listener] : {std::pair{out_log, "out"}, std::pair{in_log, "in"}}) {
    INFO(listener << " log:\n" << log.substr(log.size() > 20000 ? log.size() - 20000 : 0));
    CHECK(count_lines_with(log, "connection closed listener=" + std::string(listener) + " ") ==
          run.rounds());
    CHECK(count_lines_with(log, "outcome=ok") >= run.rounds());
    CHECK(problem_lines(log).empty());
    CHECK(sum_of(log, listener, "client_to_upstream") == run.request_bytes());
    CHECK(sum_of(log, listener, "upstream_to_client") == run.response_bytes());
  }
}

// Waits until `daemon` has logged `count` close lines for `listener`.
bool wait_for_closes(const atlsd& daemon, const std::string& listener, std::size_t count) {
  const auto tag = "connection closed listener=" + listener + " ";
  for (int i = 0; i < 500; ++i) {
    if (count_lines_with(daemon.log(), tag) >= count) {
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

TEST_CASE("random sizes, chunks and half-close timing arrive byte-exact through a TLS pair") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  integrity_run run("plain TLS pair", 400, false);
  const auto in_port = free_port();
  const auto out_port = free_port();
  atlsd in(dir, "in", header() + inbound("in", in_port, local(run.upstream_port()), p));
  atlsd out(dir, "out", header() + outbound("out", out_port, local(in_port), p));

  run.play(out_port, 8);

  REQUIRE(wait_for_closes(out, "out", run.rounds()));
  REQUIRE(wait_for_closes(in, "in", run.rounds()));
  check_sidecar_logs(out.log(), in.log(), run);
}

// An attested pair (the inbound side's key is its TIK in swtpm; the outbound side asks for fresh
// evidence every `reattest_every`) in front of `upstream`.
struct attested_pair {
  attested_pair(const temp_dir& dir, std::uint16_t upstream, const std::string& reattest_every,
                const std::string& inbound_more = "")
      : p(make_pki(dir)),
        tik(dir, p, "DNS:server.test", "serverAuth"),
        ak(write_ak(dir, tik, "server-ak.pem")),
        in_port(free_port()),
        out_port(free_port()),
        in(dir, "in",
           tik.config() + header() + attesting_inbound(in_port, upstream, tik) + inbound_more),
        out(dir, "out",
            header() + relying_outbound("out", out_port, in_port, p,
                                        "      reattest_every: " + reattest_every + "\n" +
                                            peer_block({.trusted_ak = trusted_pem(ak)}))) {}
  pki p;
  tpm_identity tik;
  std::filesystem::path ak;
  std::uint16_t in_port;
  std::uint16_t out_port;
  atlsd in;
  atlsd out;
};

// Sends `size` pattern bytes over about `spread`, in 16 KiB writes.
bool send_slowly(int fd, std::uint64_t seed, std::size_t size, std::chrono::milliseconds spread) {
  const auto data = pattern_bytes(seed, size);
  constexpr std::size_t piece = 16 * 1024;
  const auto pieces = (size + piece - 1) / piece;
  for (std::size_t at = 0; at < size; at += piece) {
    if (!send_all(fd, std::string_view(data).substr(at, piece))) {
      return false;
    }
    std::this_thread::sleep_for(spread / static_cast<long>(pieces));
  }
  return true;
}

TEST_CASE("after the client half-closes, re-attestation rounds do not cut the response short") {
  // The client's end (close_notify from the outbound side) comes first; the response then flows
  // for about 1.5 s, over several re-attestation periods.
  const temp_dir dir;
  constexpr std::size_t response_size = 1u << 20;
  std::promise<std::string> request;
  loopback_server upstream([&](int fd) {
    request.set_value(receive_all(fd));
    send_slowly(fd, 5, response_size, 1500ms);
    ::shutdown(fd, SHUT_WR);
  });
  attested_pair pair(dir, upstream.port(), "300ms");

  const auto fd = connect_loopback(pair.out_port, 15s);
  REQUIRE(fd);
  REQUIRE(send_all(fd.get(), "the whole request"));
  ::shutdown(fd.get(), SHUT_WR);
  const auto received = receive_all(fd.get());
  auto seen = request.get_future();
  REQUIRE(seen.wait_for(10s) == std::future_status::ready);
  CHECK(seen.get() == "the whole request");
  CHECK(received.size() == response_size);
  CHECK(received == pattern_bytes(5, response_size));
  REQUIRE(pair.out.wait_for_log("connection closed listener=out "));
  INFO(pair.out.log());
  CHECK(count_lines_with(pair.out.log(), "outcome=ok") == 1);
  CHECK(problem_lines(pair.out.log()).empty());
  CHECK(problem_lines(pair.in.log()).empty());
}

TEST_CASE("after the upstream half-closes, re-attestation rounds do not cut the request short") {
  // The upstream's end (close_notify from the inbound side) comes first; the request then flows
  // for about 1.5 s, over several re-attestation periods.
  const temp_dir dir;
  constexpr std::size_t request_size = 1u << 20;
  std::promise<std::string> request;
  loopback_server upstream([&](int fd) {
    send_all(fd, "the whole response");
    ::shutdown(fd, SHUT_WR);
    request.set_value(receive_all(fd));
  });
  attested_pair pair(dir, upstream.port(), "300ms");

  const auto fd = connect_loopback(pair.out_port, 15s);
  REQUIRE(fd);
  CHECK(receive_all(fd.get()) == "the whole response");
  CHECK(send_slowly(fd.get(), 6, request_size, 1500ms));
  ::shutdown(fd.get(), SHUT_WR);
  auto seen = request.get_future();
  REQUIRE(seen.wait_for(10s) == std::future_status::ready);
  const auto got = seen.get();
  CHECK(got.size() == request_size);
  CHECK(got == pattern_bytes(6, request_size));
  REQUIRE(pair.out.wait_for_log("connection closed listener=out "));
  INFO(pair.in.log());
  CHECK(problem_lines(pair.out.log()).empty());
  CHECK(problem_lines(pair.in.log()).empty());
}

TEST_CASE("bytes arrive exact while re-attestation rounds share the stream of an attested pair") {
  const temp_dir dir;
  integrity_run run("attested pair", 100, true);
  // An odd relay buffer on the inbound side, so that its reads end off the TLS record edges.
  attested_pair pair(dir, run.upstream_port(), "300ms", "    buffer_size: 5KiB\n");

  run.play(pair.out_port, 8);

  REQUIRE(wait_for_closes(pair.out, "out", run.rounds()));
  REQUIRE(wait_for_closes(pair.in, "in", run.rounds()));
  check_sidecar_logs(pair.out.log(), pair.in.log(), run);
  // Re-attestation rounds (round=1 and on; round=0 is the set-up) that came while bytes flowed
  // all passed (a refused round logs a warning, which check_sidecar_logs fails on). Rounds run
  // only while both directions are open, so how many there were depends on timing: the next
  // case makes sure of them.
  const auto out_log = pair.out.log();
  const auto rounds = count_lines_with(out_log, " round=") - count_lines_with(out_log, " round=0 ");
  MESSAGE("attested pair: " << rounds << " re-attestation rounds during the transfers");
}

TEST_CASE("bytes flowing both ways at once arrive exact across re-attestation rounds") {
  // Both directions open for about 1.5 s while each end sends: every 300 ms period falls inside
  // the transfer, so its round's frames interleave with data both ways.
  const temp_dir dir;
  constexpr std::size_t size = 1u << 20;
  std::promise<std::string> at_upstream;
  loopback_server upstream([&](int fd) {
    std::thread sender([fd] {
      send_slowly(fd, 7, size, 1500ms);
      ::shutdown(fd, SHUT_WR);
    });
    at_upstream.set_value(receive_all(fd));
    sender.join();
  });
  attested_pair pair(dir, upstream.port(), "300ms");

  const auto fd = connect_loopback(pair.out_port, 15s);
  REQUIRE(fd);
  std::thread sender([&fd] {
    send_slowly(fd.get(), 8, size, 1500ms);
    ::shutdown(fd.get(), SHUT_WR);
  });
  const auto at_client = receive_all(fd.get());
  sender.join();
  auto seen = at_upstream.get_future();
  REQUIRE(seen.wait_for(10s) == std::future_status::ready);
  CHECK(seen.get() == pattern_bytes(8, size));
  CHECK(at_client == pattern_bytes(7, size));
  REQUIRE(pair.out.wait_for_log("connection closed listener=out "));
  const auto out_log = pair.out.log();
  INFO(out_log);
  CHECK(count_lines_with(out_log, "outcome=ok") == 1);
  CHECK(count_lines_with(out_log, "outcome=accepted") >= 4);  // the set-up and 3+ rounds
  CHECK(problem_lines(out_log).empty());
  CHECK(problem_lines(pair.in.log()).empty());
}

}  // namespace
}  // namespace atls::test
