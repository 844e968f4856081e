// atls_netload: the origin server and the load generators of bench/run.sh. It is not a test and
// not part of atlsd: it exists so that the benchmarks measure the proxies, not a slow origin or
// client (python3's http.server tops out far below what the proxies relay).
//
// One origin serves every benchmark on one port; the first byte a client sends says what it
// wants:
//   'U' + 8-byte big-endian N, then N bytes   the origin reads the N bytes, answers one byte 'k'
//   'D' + 8-byte big-endian N                 the origin sends N bytes
//   'E'                                       the origin answers one byte 'e', then waits for EOF
//   anything else                             HTTP/1.1 keep-alive: each request (no body) gets a
//                                             fixed 200 response with a 2-byte body
// No exchange needs a half-close, so a proxy that does not pass one on is measured all the same.
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <unistd.h>

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using bench_clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

constexpr std::string_view usage = R"(usage:
  atls_netload serve [--port P] [--threads N]
  atls_netload bulk  --port P --bytes N --direction up|down [--buffer BYTES]
  atls_netload rate  --port P --seconds S [--warmup S] [--concurrency C] [--timeout S]
  atls_netload hold  --port P --count N [--concurrency C] [--ramp S] [--timeout S]
  atls_netload once  --port P
  atls_netload http  --port P --seconds S [--warmup S] [--concurrency C] [--timeout S]

serve: the origin on 127.0.0.1:P (0: any free port); prints "listening on PORT" and serves until
       SIGTERM or SIGINT.
bulk:  one connection carries N bytes to the origin (up) or from it (down); prints JSON
       {"bytes", "seconds"}.
rate:  C workers each open a connection, send 1 byte, read 1 byte and close, again and again for
       S seconds after S warm-up seconds; prints JSON {"connections", "errors", "seconds",
       "per_second", "p50_ms", "p99_ms", "first_error"}.
hold:  opens N connections, at most C at once, each proven end to end by a 1-byte exchange, and
       keeps them open; prints JSON {"held", "failed", "seconds", "first_error"} once every one
       was tried (or S ramp seconds passed), then holds them until standard input ends.
once:  one connection with a 1-byte exchange; exit status 0 when it worked (for hyperfine).
http:  C kept-alive HTTP/1.1 connections, each sending GET and reading the response, one at a
       time; the connections are opened and used for S warm-up seconds before S seconds are
       measured, so that set-up (handshakes, attestation) stays out of the latencies; prints
       JSON {"requests", "errors", "seconds", "per_second", "p50_us", "p99_us", "p999_us",
       "max_us", "first_error"}.
)";

struct options {
  std::string command;
  std::uint16_t port = 0;
  unsigned threads = 1;
  std::uint64_t bytes = 0;
  bool up = true;
  std::size_t buffer = std::size_t{256} * 1024;
  double seconds = 10;
  double warmup = 1;
  unsigned concurrency = 16;
  double timeout = 30;
  std::uint64_t count = 0;
  double ramp = 300;
};

template <typename T>
std::optional<T> parse_number(std::string_view text) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

// nullopt after printing why.
std::optional<options> parse_options(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << usage;
    return std::nullopt;
  }
  options out;
  out.command = argv[1];
  bool have_port = false;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const std::string_view value = argv[i + 1];
    bool ok = true;
    if (flag == "--port") {
      const auto port = parse_number<std::uint16_t>(value);
      ok = port.has_value();
      out.port = port.value_or(0);
      have_port = ok;
    } else if (flag == "--threads") {
      const auto threads = parse_number<unsigned>(value);
      ok = threads && *threads > 0;
      out.threads = threads.value_or(1);
    } else if (flag == "--bytes") {
      const auto bytes = parse_number<std::uint64_t>(value);
      ok = bytes && *bytes > 0;
      out.bytes = bytes.value_or(0);
    } else if (flag == "--direction") {
      ok = value == "up" || value == "down";
      out.up = value == "up";
    } else if (flag == "--buffer") {
      const auto buffer = parse_number<std::size_t>(value);
      ok = buffer && *buffer > 0;
      out.buffer = buffer.value_or(1);
    } else if (flag == "--seconds" || flag == "--warmup" || flag == "--timeout" ||
               flag == "--ramp") {
      const auto seconds = parse_number<double>(value);
      ok = seconds && *seconds >= 0;
      (flag == "--seconds"   ? out.seconds
       : flag == "--warmup"  ? out.warmup
       : flag == "--timeout" ? out.timeout
                             : out.ramp) = seconds.value_or(0);
    } else if (flag == "--concurrency") {
      const auto concurrency = parse_number<unsigned>(value);
      ok = concurrency && *concurrency > 0;
      out.concurrency = concurrency.value_or(1);
    } else if (flag == "--count") {
      const auto count = parse_number<std::uint64_t>(value);
      ok = count && *count > 0;
      out.count = count.value_or(0);
    } else {
      ok = false;
    }
    if (!ok) {
      std::cerr << "atls_netload: bad option " << flag << " " << value << "\n" << usage;
      return std::nullopt;
    }
  }
  const bool known = out.command == "serve" || out.command == "bulk" || out.command == "rate" ||
                     out.command == "hold" || out.command == "once" || out.command == "http";
  if (!known || (out.command != "serve" && !have_port) ||
      (out.command == "bulk" && out.bytes == 0) || (out.command == "hold" && out.count == 0)) {
    std::cerr << usage;
    return std::nullopt;
  }
  return out;
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "\"";
}

double seconds_since(bench_clock::time_point start) {
  return std::chrono::duration<double>(bench_clock::now() - start).count();
}

std::chrono::steady_clock::duration as_duration(double seconds) {
  return std::chrono::duration_cast<bench_clock::duration>(std::chrono::duration<double>(seconds));
}

std::array<unsigned char, 9> request_header(char what, std::uint64_t count) {
  std::array<unsigned char, 9> out{};
  out[0] = static_cast<unsigned char>(what);
  for (int i = 0; i < 8; ++i) {
    out[static_cast<std::size_t>(8 - i)] = static_cast<unsigned char>(count >> (8 * i));
  }
  return out;
}

// ---- the origin ----

// The bytes a download sends: the content does not matter, the proxies encrypt it all the same.
const std::vector<char>& download_block() {
  static const std::vector<char> block(std::size_t{256} * 1024, 'x');
  return block;
}

asio::awaitable<std::optional<std::uint64_t>> read_count(tcp::socket& socket) {
  std::array<unsigned char, 8> raw{};
  const auto [ec, n] = co_await asio::async_read(socket, asio::buffer(raw), use_tuple);
  if (ec) {
    co_return std::nullopt;
  }
  std::uint64_t count = 0;
  for (const auto byte : raw) {
    count = (count << 8) | byte;
  }
  co_return count;
}

asio::awaitable<void> drain_until_eof(tcp::socket& socket) {
  std::array<char, 512> scratch{};
  for (;;) {
    const auto [ec, n] = co_await socket.async_read_some(asio::buffer(scratch), use_tuple);
    if (ec) {
      co_return;
    }
  }
}

asio::awaitable<void> serve_upload(tcp::socket& socket) {
  const auto count = co_await read_count(socket);
  if (!count) {
    co_return;
  }
  std::vector<char> buffer(std::size_t{256} * 1024);
  std::uint64_t left = *count;
  while (left > 0) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buffer.size()));
    const auto [ec, n] =
        co_await socket.async_read_some(asio::buffer(buffer.data(), want), use_tuple);
    if (ec) {
      co_return;
    }
    left -= n;
  }
  const char ack = 'k';
  const auto [ec, n] = co_await asio::async_write(socket, asio::buffer(&ack, 1), use_tuple);
  if (!ec) {
    co_await drain_until_eof(socket);
  }
}

asio::awaitable<void> serve_download(tcp::socket& socket) {
  const auto count = co_await read_count(socket);
  if (!count) {
    co_return;
  }
  const auto& block = download_block();
  std::uint64_t left = *count;
  while (left > 0) {
    const auto size = static_cast<std::size_t>(std::min<std::uint64_t>(left, block.size()));
    const auto [ec, n] =
        co_await asio::async_write(socket, asio::buffer(block.data(), size), use_tuple);
    if (ec) {
      co_return;
    }
    left -= n;
  }
  co_await drain_until_eof(socket);
}

asio::awaitable<void> serve_echo(tcp::socket& socket) {
  const char reply = 'e';
  const auto [ec, n] = co_await asio::async_write(socket, asio::buffer(&reply, 1), use_tuple);
  if (!ec) {
    co_await drain_until_eof(socket);
  }
}

// HTTP/1.1 without request bodies, as wrk sends it: every request ends at an empty line, and
// requests that arrive together (pipelined) are answered together.
asio::awaitable<void> serve_http(tcp::socket& socket, char first) {
  static constexpr std::string_view response =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
  std::string pending(1, first);
  std::string out;
  std::array<char, std::size_t{16} * 1024> buffer{};
  for (;;) {
    std::size_t answered = 0;
    std::size_t end = 0;
    for (auto at = pending.find("\r\n\r\n"); at != std::string::npos;
         at = pending.find("\r\n\r\n", end)) {
      end = at + 4;
      ++answered;
    }
    if (answered > 0) {
      pending.erase(0, end);
      out.clear();
      for (std::size_t i = 0; i < answered; ++i) {
        out += response;
      }
      const auto [ec, n] = co_await asio::async_write(socket, asio::buffer(out), use_tuple);
      if (ec) {
        co_return;
      }
    }
    if (pending.size() > std::size_t{64} * 1024) {
      co_return;  // not a request this origin understands
    }
    const auto [ec, n] = co_await socket.async_read_some(asio::buffer(buffer), use_tuple);
    if (ec) {
      co_return;
    }
    pending.append(buffer.data(), n);
  }
}

asio::awaitable<void> serve_connection(tcp::socket socket) {
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  char first = 0;
  const auto [ec, n] = co_await asio::async_read(socket, asio::buffer(&first, 1), use_tuple);
  if (ec) {
    co_return;
  }
  switch (first) {
    case 'U':
      co_await serve_upload(socket);
      break;
    case 'D':
      co_await serve_download(socket);
      break;
    case 'E':
      co_await serve_echo(socket);
      break;
    default:
      co_await serve_http(socket, first);
      break;
  }
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
    if (ec == asio::error::operation_aborted) {
      co_return;
    }
    if (ec) {
      // EMFILE and the like: wait for connections to close rather than spin.
      asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(10));
      co_await pause.async_wait(use_tuple);
      continue;
    }
    // A connection that ends in an exception (out of memory, say) ends only itself.
    asio::co_spawn(acceptor.get_executor(), serve_connection(std::move(socket)),
                   [](const std::exception_ptr&) {});
  }
}

int serve(const options& opts) {
  asio::io_context io(static_cast<int>(opts.threads));
  tcp::acceptor acceptor(io);
  const tcp::endpoint where(asio::ip::make_address_v4("127.0.0.1"), opts.port);
  acceptor.open(where.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(where);
  acceptor.listen(4096);
  std::cout << "listening on " << acceptor.local_endpoint().port() << std::endl;

  asio::signal_set stop(io, SIGTERM, SIGINT);
  stop.async_wait([&](const error_code&, int) {
    error_code ignored;
    acceptor.close(ignored);
    io.stop();  // a bench tool: open connections end with the process
  });
  asio::co_spawn(io, accept_loop(acceptor), [](const std::exception_ptr& e) {
    if (e) {
      std::rethrow_exception(e);
    }
  });
  std::vector<std::thread> extra;
  for (unsigned i = 1; i < opts.threads; ++i) {
    extra.emplace_back([&io] { io.run(); });
  }
  io.run();
  for (auto& thread : extra) {
    thread.join();
  }
  return 0;
}

// ---- clients ----

const tcp::endpoint& target(const options& opts) {
  static const tcp::endpoint where(asio::ip::make_address_v4("127.0.0.1"), opts.port);
  return where;
}

// Closes `socket` unless disarm() is called within `limit`: a stalled proxy ends the attempt
// instead of the run. The socket is shared so that a deadline that fires late finds it alive.
class deadline {
 public:
  deadline(const std::shared_ptr<tcp::socket>& socket, double limit)
      : timer_(socket->get_executor(), as_duration(limit)) {
    timer_.async_wait([socket](const error_code& ec) {
      if (!ec) {
        error_code ignored;
        socket->close(ignored);
      }
    });
  }
  deadline(const deadline&) = delete;
  deadline& operator=(const deadline&) = delete;
  deadline(deadline&&) = delete;
  deadline& operator=(deadline&&) = delete;
  ~deadline() {
    try {
      timer_.cancel();
    } catch (...) {  // NOLINT(bugprone-empty-catch): a timer that cannot cancel just fires late
    }
  }

 private:
  asio::steady_timer timer_;
};

// Connects and makes the 1-byte exchange; the error that stopped it, if any.
asio::awaitable<error_code> exchange_one(std::shared_ptr<tcp::socket> socket, tcp::endpoint where) {
  const auto [connect_ec] = co_await socket->async_connect(where, use_tuple);
  if (connect_ec) {
    co_return connect_ec;
  }
  error_code ignored;
  socket->set_option(tcp::no_delay(true), ignored);
  const char request = 'E';
  const auto [write_ec, written] =
      co_await asio::async_write(*socket, asio::buffer(&request, 1), use_tuple);
  if (write_ec) {
    co_return write_ec;
  }
  char reply = 0;
  const auto [read_ec, read] =
      co_await asio::async_read(*socket, asio::buffer(&reply, 1), use_tuple);
  if (read_ec) {
    co_return read_ec;
  }
  if (reply != 'e') {
    co_return asio::error::make_error_code(asio::error::invalid_argument);
  }
  co_return error_code{};
}

struct bulk_result {
  std::uint64_t bytes = 0;
  double seconds = 0;
  std::string error;
};

asio::awaitable<void> bulk_client(options opts, bulk_result& out) {
  const auto executor = co_await asio::this_coro::executor;
  tcp::socket socket(executor);
  const auto [connect_ec] = co_await socket.async_connect(target(opts), use_tuple);
  if (connect_ec) {
    out.error = "connect: " + connect_ec.message();
    co_return;
  }
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  std::vector<char> buffer(opts.buffer, 'y');
  const auto header = request_header(opts.up ? 'U' : 'D', opts.bytes);
  const auto start = bench_clock::now();
  const auto [header_ec, header_n] =
      co_await asio::async_write(socket, asio::buffer(header), use_tuple);
  if (header_ec) {
    out.error = "write: " + header_ec.message();
    co_return;
  }
  std::uint64_t left = opts.bytes;
  while (left > 0) {
    const auto size = static_cast<std::size_t>(std::min<std::uint64_t>(left, buffer.size()));
    std::size_t moved = 0;
    if (opts.up) {
      const auto [ec, n] =
          co_await asio::async_write(socket, asio::buffer(buffer.data(), size), use_tuple);
      if (ec) {
        out.error = "write: " + ec.message();
        co_return;
      }
      moved = n;
    } else {
      const auto [ec, n] =
          co_await socket.async_read_some(asio::buffer(buffer.data(), size), use_tuple);
      if (ec) {
        out.error =
            "read: " + ec.message() + " after " + std::to_string(opts.bytes - left) + " bytes";
        co_return;
      }
      moved = n;
    }
    left -= moved;
  }
  if (opts.up) {
    char ack = 0;
    const auto [ec, n] = co_await asio::async_read(socket, asio::buffer(&ack, 1), use_tuple);
    if (ec || ack != 'k') {
      out.error = "no acknowledgement from the origin: " + ec.message();
      co_return;
    }
  }
  out.seconds = seconds_since(start);
  out.bytes = opts.bytes;
}

int bulk(const options& opts) {
  asio::io_context io(1);
  bulk_result result;
  asio::co_spawn(io, bulk_client(opts, result), [](const std::exception_ptr& e) {
    if (e) {
      std::rethrow_exception(e);
    }
  });
  io.run();
  if (!result.error.empty()) {
    std::cerr << "atls_netload bulk: " << result.error << "\n";
    return 1;
  }
  std::cout << "{\"bytes\": " << result.bytes << ", \"seconds\": " << result.seconds << "}\n";
  return 0;
}

struct rate_state {
  bench_clock::time_point counted_from;
  bench_clock::time_point stop_at;
  std::uint64_t connections = 0;
  std::uint64_t errors = 0;
  std::vector<double> latencies_ms;
  std::string first_error;
};

asio::awaitable<void> rate_worker(options opts, std::shared_ptr<rate_state> state) {
  const auto executor = co_await asio::this_coro::executor;
  while (bench_clock::now() < state->stop_at) {
    const auto start = bench_clock::now();
    auto socket = std::make_shared<tcp::socket>(executor);
    error_code ec;
    {
      const deadline limit(socket, opts.timeout);
      ec = co_await exchange_one(socket, target(opts));
    }
    error_code ignored;
    socket->close(ignored);
    const bool counted = start >= state->counted_from;
    if (ec) {
      if (counted) {
        ++state->errors;
        if (state->first_error.empty()) {
          state->first_error = ec.message();
        }
      }
      // A refusing proxy answers at once: pause instead of counting refusals at full speed.
      asio::steady_timer pause(executor, std::chrono::milliseconds(10));
      co_await pause.async_wait(use_tuple);
      continue;
    }
    if (counted) {
      ++state->connections;
      state->latencies_ms.push_back(seconds_since(start) * 1000.0);
    }
  }
}

double percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) {
    return 0;
  }
  const auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size()));
  return sorted[std::min(rank, sorted.size() - 1)];
}

int rate(const options& opts) {
  asio::io_context io(1);
  auto state = std::make_shared<rate_state>();
  const auto start = bench_clock::now();
  state->counted_from = start + as_duration(opts.warmup);
  state->stop_at = state->counted_from + as_duration(opts.seconds);
  for (unsigned i = 0; i < opts.concurrency; ++i) {
    asio::co_spawn(io, rate_worker(opts, state), [](const std::exception_ptr& e) {
      if (e) {
        std::rethrow_exception(e);
      }
    });
  }
  io.run();
  const double measured =
      std::chrono::duration<double>(bench_clock::now() - state->counted_from).count();
  std::sort(state->latencies_ms.begin(), state->latencies_ms.end());
  std::cout << "{\"connections\": " << state->connections << ", \"errors\": " << state->errors
            << ", \"seconds\": " << measured
            << ", \"per_second\": " << static_cast<double>(state->connections) / measured
            << ", \"p50_ms\": " << percentile(state->latencies_ms, 50)
            << ", \"p99_ms\": " << percentile(state->latencies_ms, 99)
            << ", \"first_error\": " << json_string(state->first_error) << "}\n";
  return 0;
}

struct hold_state {
  bench_clock::time_point stop_starting_at;
  std::uint64_t next = 0;
  std::uint64_t failed = 0;
  std::vector<std::shared_ptr<tcp::socket>> held;
  std::string first_error;
};

asio::awaitable<void> hold_worker(options opts, std::shared_ptr<hold_state> state) {
  const auto executor = co_await asio::this_coro::executor;
  while (state->next < opts.count && bench_clock::now() < state->stop_starting_at) {
    ++state->next;
    auto socket = std::make_shared<tcp::socket>(executor);
    error_code ec;
    {
      const deadline limit(socket, opts.timeout);
      ec = co_await exchange_one(socket, target(opts));
    }
    if (ec) {
      ++state->failed;
      if (state->first_error.empty()) {
        state->first_error = ec.message();
      }
      continue;
    }
    state->held.push_back(std::move(socket));
  }
}

int hold(const options& opts) {
  asio::io_context io(1);
  auto state = std::make_shared<hold_state>();
  state->held.reserve(static_cast<std::size_t>(opts.count));
  const auto start = bench_clock::now();
  state->stop_starting_at = start + as_duration(opts.ramp);
  for (unsigned i = 0; i < opts.concurrency; ++i) {
    asio::co_spawn(io, hold_worker(opts, state), [](const std::exception_ptr& e) {
      if (e) {
        std::rethrow_exception(e);
      }
    });
  }
  io.run();
  std::cout << "{\"held\": " << state->held.size() << ", \"failed\": " << state->failed
            << ", \"seconds\": " << seconds_since(start)
            << ", \"first_error\": " << json_string(state->first_error) << "}" << std::endl;
  // The connections stay open, with nothing pending, until whoever started us is done measuring.
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  return 0;
}

struct http_state {
  bench_clock::time_point counted_from;
  bench_clock::time_point stop_at;
  std::uint64_t errors = 0;
  std::vector<double> latencies_us;
  std::string first_error;
};

// Reads one response: headers to the empty line, then Content-Length bytes of body. `pending`
// keeps what arrived beyond it.
asio::awaitable<error_code> read_response(tcp::socket& socket, std::string& pending) {
  std::array<char, 4096> buffer{};
  for (;;) {
    const auto end = pending.find("\r\n\r\n");
    if (end != std::string::npos) {
      std::size_t length = 0;
      const auto at = pending.find("Content-Length: ");
      if (at != std::string::npos && at < end) {
        const auto* const digits = pending.data() + at + 16;
        std::from_chars(digits, pending.data() + end, length);
      }
      if (pending.size() >= end + 4 + length) {
        pending.erase(0, end + 4 + length);
        co_return error_code{};
      }
    }
    const auto [ec, n] = co_await socket.async_read_some(asio::buffer(buffer), use_tuple);
    if (ec) {
      co_return ec;
    }
    pending.append(buffer.data(), n);
  }
}

asio::awaitable<void> http_worker(options opts, std::shared_ptr<http_state> state) {
  static constexpr std::string_view request = "GET / HTTP/1.1\r\nHost: origin\r\n\r\n";
  const auto executor = co_await asio::this_coro::executor;
  while (bench_clock::now() < state->stop_at) {
    auto socket = std::make_shared<tcp::socket>(executor);
    const auto [connect_ec] = co_await socket->async_connect(target(opts), use_tuple);
    error_code ec = connect_ec;
    error_code ignored;
    socket->set_option(tcp::no_delay(true), ignored);
    std::string pending;
    while (!ec && bench_clock::now() < state->stop_at) {
      const auto start = bench_clock::now();
      const deadline limit(socket, opts.timeout);
      const auto [write_ec, n] =
          co_await asio::async_write(*socket, asio::buffer(request), use_tuple);
      ec = write_ec;
      if (!ec) {
        ec = co_await read_response(*socket, pending);
      }
      if (!ec && start >= state->counted_from) {
        state->latencies_us.push_back(seconds_since(start) * 1e6);
      }
    }
    if (ec) {
      if (bench_clock::now() >= state->counted_from) {
        ++state->errors;
        if (state->first_error.empty()) {
          state->first_error = ec.message();
        }
      }
      asio::steady_timer pause(executor, std::chrono::milliseconds(10));
      co_await pause.async_wait(use_tuple);
    }
  }
}

int http(const options& opts) {
  asio::io_context io(1);
  auto state = std::make_shared<http_state>();
  state->counted_from = bench_clock::now() + as_duration(opts.warmup);
  state->stop_at = state->counted_from + as_duration(opts.seconds);
  state->latencies_us.reserve(1 << 20);
  for (unsigned i = 0; i < opts.concurrency; ++i) {
    asio::co_spawn(io, http_worker(opts, state), [](const std::exception_ptr& e) {
      if (e) {
        std::rethrow_exception(e);
      }
    });
  }
  io.run();
  const double measured = seconds_since(state->counted_from);
  auto& sorted = state->latencies_us;
  std::sort(sorted.begin(), sorted.end());
  std::cout << "{\"requests\": " << sorted.size() << ", \"errors\": " << state->errors
            << ", \"seconds\": " << measured
            << ", \"per_second\": " << static_cast<double>(sorted.size()) / measured
            << ", \"p50_us\": " << percentile(sorted, 50)
            << ", \"p99_us\": " << percentile(sorted, 99)
            << ", \"p999_us\": " << percentile(sorted, 99.9)
            << ", \"max_us\": " << (sorted.empty() ? 0.0 : sorted.back())
            << ", \"first_error\": " << json_string(state->first_error) << "}\n";
  return 0;
}

int once(const options& opts) {
  // hyperfine waits for us: never hang it on a proxy that stalls.
  alarm(30);
  asio::io_context io(1);
  error_code result = asio::error::make_error_code(asio::error::timed_out);
  auto socket = std::make_shared<tcp::socket>(io);
  asio::co_spawn(io, exchange_one(socket, target(opts)),
                 [&result](const std::exception_ptr& e, error_code ec) {
                   if (e) {
                     std::rethrow_exception(e);
                   }
                   result = ec;
                 });
  io.run();
  if (result) {
    std::cerr << "atls_netload once: " << result.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const auto opts = parse_options(argc, argv);
  if (!opts) {
    return 2;
  }
  try {
    if (opts->command == "serve") {
      return serve(*opts);
    }
    if (opts->command == "bulk") {
      return bulk(*opts);
    }
    if (opts->command == "rate") {
      return rate(*opts);
    }
    if (opts->command == "hold") {
      return hold(*opts);
    }
    if (opts->command == "http") {
      return http(*opts);
    }
    return once(*opts);
  } catch (const std::exception& e) {
    std::cerr << "atls_netload " << opts->command << ": " << e.what() << "\n";
    return 1;
  }
}
