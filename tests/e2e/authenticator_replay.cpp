#include "e2e/authenticator_replay.hpp"

#include <array>
#include <chrono>
#include <exception>
#include <memory>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <doctest/doctest.h>

#include "atls/attested/post_handshake.hpp"
#include "atls/attested/settings.hpp"
#include "atls/tls/attestation_framing.hpp"
#include "atls/tls/context.hpp"
#include "atls/tls/exported_authenticator.hpp"
#include "atls/tls/stream.hpp"

#include "support/replay_attester.hpp"
#include <sys/socket.h>

namespace atls::test {

namespace asio = boost::asio;
using asio::ip::tcp;
using frame_bytes = std::vector<std::uint8_t>;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
const tls::attestation_code_points points;

tls::stream::socket_type to_generic(tcp::socket socket) {
  const asio::generic::stream_protocol protocol(AF_INET, IPPROTO_TCP);
  auto executor = socket.get_executor();
  return {executor, protocol, socket.release()};
}

asio::awaitable<error_code> send_frame(tls::stream& s, tls::frame_type type,
                                       const frame_bytes& payload) {
  auto encoded = tls::encode_frame({.type = type, .payload = payload});
  if (!encoded) {
    co_return encoded.error();
  }
  const auto ec = co_await s.write(asio::buffer(*encoded));
  co_return ec;
}

asio::awaitable<result<tls::frame>> next_frame(tls::stream& s, tls::frame_reader& reader) {
  std::vector<std::uint8_t> buffer(tls::max_data_frame_size + tls::frame_header_size);
  for (;;) {
    auto next = reader.next();
    if (!next) {
      co_return next.error();
    }
    if (*next) {
      co_return std::move(**next);
    }
    auto [ec, n] = co_await s.read_some(asio::buffer(buffer));
    if (ec) {
      co_return ec;
    }
    reader.feed({buffer.data(), n});
  }
}

struct capture {
  std::string failure;  // empty once an authenticator arrived and verified
  frame_bytes authenticator;
};

// The attacker as a client of the genuine server: its own request, the server's answer kept.
asio::awaitable<void> ask(std::uint16_t port, pki p, capture& out) {
  auto executor = co_await asio::this_coro::executor;
  tcp::socket socket(executor);
  const tcp::endpoint server(asio::ip::address_v4::loopback(), port);
  auto [cec] = co_await socket.async_connect(server, use_tuple);
  if (cec) {
    out.failure = "connect: " + cec.message();
    co_return;
  }
  auto ctx = tls::context::make_client({.ca = p / "ca.crt", .server_name = "server.test"});
  if (!ctx || !attested::install_post_handshake(ctx->native_handle(), points)) {
    out.failure = "client context";
    co_return;
  }
  tls::stream s(to_generic(std::move(socket)), *ctx);
  attested::settings relying;
  relying.peer = attested::relying_party{};  // only for the offer: the rest is hand-driven
  const attested::post_handshake_negotiation offer(s, relying, false);
  if (const auto ec = co_await s.handshake()) {
    out.failure = "handshake: " + ec.message();
    co_return;
  }
  const auto context = tls::make_request_context();
  auto request =
      context ? tls::make_request(tls::authenticator_request_kind::client_certificate_request,
                                  *context, {.request_attestation = true, .code_points = points})
              : result<frame_bytes>(context.error());
  if (!request) {
    out.failure = "request: " + request.error().message();
    co_return;
  }
  if (const auto ec = co_await send_frame(s, tls::frame_type::authenticator_request, *request)) {
    out.failure = "send request: " + ec.message();
    co_return;
  }
  tls::frame_reader reader;
  auto answer = co_await next_frame(s, reader);
  if (!answer || answer->type != tls::frame_type::authenticator) {
    out.failure = "no authenticator";
    s.close();
    co_return;
  }
  tls::authenticator_session session;
  const auto verified = tls::verify_authenticator(s.native_handle(), *request, answer->payload,
                                                  session, {.code_points = points});
  if (!verified) {
    out.failure = "the captured authenticator does not verify where it was made: " +
                  verified.error().message();
  }
  out.authenticator = std::move(answer->payload);
  // No verdict: the genuine server's exchange ends as for a client that walked away.
  s.close();
}

// The attacker as the server of the victim's connection.
asio::awaitable<void> impersonate(tcp::socket socket, tls::context ctx,
                                  const frame_bytes& authenticator, std::atomic<int>& replayed,
                                  std::atomic<int>& verdict) {
  tls::stream s(to_generic(std::move(socket)), std::move(ctx));
  attested::settings attesting;  // only for the answer to the offer: "will attest"
  attesting.self = attested::attesting_party{
      .attester = std::make_shared<replay_attester>(attest::evidence_bundle{})};
  const attested::post_handshake_negotiation offer(s, attesting, true);
  if (co_await s.handshake()) {
    co_return;
  }
  tls::frame_reader reader;
  auto asked = co_await next_frame(s, reader);
  if (!asked || asked->type != tls::frame_type::authenticator_request) {
    s.close();
    co_return;
  }
  if (co_await send_frame(s, tls::frame_type::authenticator, authenticator)) {
    s.close();
    co_return;
  }
  ++replayed;
  auto told = co_await next_frame(s, reader);
  if (told && told->type == tls::frame_type::verdict) {
    if (auto decoded = tls::decode_verdict(told->payload)) {
      verdict = decoded->reason;
    }
  }
  s.close();
}

asio::awaitable<void> serve(tcp::acceptor& acceptor, tls::context ctx, frame_bytes authenticator,
                            std::atomic<int>& replayed, std::atomic<int>& verdict) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
    if (ec) {
      co_return;
    }
    // One victim connection at a time: the tests make one.
    auto serving = impersonate(std::move(socket), ctx, authenticator, replayed, verdict);
    co_await std::move(serving);
  }
}

}  // namespace

frame_bytes capture_authenticator(std::uint16_t port, const pki& p) {
  asio::io_context io;
  capture out;
  bool done = false;
  std::exception_ptr failure;
  asio::co_spawn(io, ask(port, p, out), [&](const std::exception_ptr& e) {
    done = true;
    failure = e;
  });
  io.run_for(std::chrono::seconds(20));
  if (failure) {
    std::rethrow_exception(failure);
  }
  REQUIRE_MESSAGE(done, "no authenticator from the genuine server within 20 s");
  REQUIRE_MESSAGE(out.failure.empty(), out.failure);
  return out.authenticator;
}

authenticator_replayer::authenticator_replayer(const pki& p, frame_bytes authenticator)
    : acceptor_(io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0)),
      port_(acceptor_.local_endpoint().port()) {
  auto ctx =
      tls::context::make_server({.cert_chain = p / "server.crt", .private_key = p / "server.key"});
  REQUIRE(ctx.has_value());
  REQUIRE(attested::install_post_handshake(ctx->native_handle(), points).has_value());
  asio::co_spawn(io_,
                 serve(acceptor_, std::move(*ctx), std::move(authenticator), replayed_, verdict_),
                 asio::detached);
  thread_ = std::thread([this] { io_.run(); });
}

authenticator_replayer::~authenticator_replayer() {
  // The replayer's own loop: nothing of the daemon's runs on it.
  io_.stop();
  thread_.join();
}

}  // namespace atls::test
