// Post-handshake attestation (RFC 9261 exported authenticators with draft-fossati-seat-expat)
// between two tls::stream objects over a socket pair: the TIK in swtpm, the local verifier, and
// the attacks that channel binding is there to stop.
#include "atls/attested/post_handshake.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <doctest/doctest.h>

#include "atls/attested/reason.hpp"
#include "atls/tls/context.hpp"
#include "atls/tls/stream.hpp"

#include "integration/attested_machine.hpp"

namespace atls::attested {
namespace {

namespace asio = boost::asio;
using asio::experimental::awaitable_operators::operator&&;
using namespace std::chrono_literals;
using socket_type = asio::generic::stream_protocol::socket;

const tls::attestation_code_points points;

struct side {
  error_code outcome;  // the handshake's, then establish()'s
  std::string detail;
  std::optional<verify::attestation_result> peer_result;
};

struct exchange {
  side client;
  side server;
};

// A handshake and the first attestation exchange between a client that appraises and a server
// that attests with `server_machine`'s TPM key.
exchange attest_once(const machine& server_machine, const settings& client_settings,
                     const settings& server_settings) {
  auto server_ctx =
      tls::context::make_server(
          {.cert_chain = server_machine.certificate,
           .private_key =
               tls::external_key{.pkey = server_machine.attester->tls_key(), .description = "TIK"}})
          .value();
  auto client_ctx =
      tls::context::make_client({.ca = server_machine.certificate, .server_name = "server.test"})
          .value();
  REQUIRE(install_post_handshake(server_ctx.native_handle(), points).has_value());
  REQUIRE(install_post_handshake(client_ctx.native_handle(), points).has_value());

  asio::io_context io;
  asio::local::stream_protocol::socket a(io);
  asio::local::stream_protocol::socket b(io);
  asio::local::connect_pair(a, b);
  const asio::generic::stream_protocol protocol(AF_UNIX, 0);
  tls::stream server(socket_type(io, protocol, a.release()), server_ctx);
  tls::stream client(socket_type(io, protocol, b.release()), client_ctx);
  post_handshake_negotiation server_offer(server, server_settings, true);
  post_handshake_negotiation client_offer(client, client_settings, false);

  exchange out;
  const auto drive = [](tls::stream& s, const post_handshake_negotiation& offer,
                        const settings& config, side& result) -> asio::awaitable<void> {
    result.outcome = co_await s.handshake();
    if (result.outcome) {
      co_return;
    }
    auto roles = offer.roles();
    if (!roles) {
      result.outcome = roles.error();
      s.close();
      co_return;
    }
    attested_stream framed(s, config, *roles);
    result.outcome = co_await framed.establish();
    result.detail = framed.error_detail();
    result.peer_result = framed.peer_result();
    if (result.outcome) {
      s.close();
    }
  };
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await (drive(client, client_offer, client_settings, out.client) &&
                  drive(server, server_offer, server_settings, out.server));
      },
      [&done](const std::exception_ptr& e) {
        done = true;
        CHECK_FALSE(e);
      });
  io.run_for(60s);
  REQUIRE_MESSAGE(done, "timed out");
  return out;
}

settings relying_on(const machine& m) {
  settings s;
  s.peer = relying_party{.verifier = local_verifier_for(m)};
  return s;
}

settings attesting_as(const machine& m) {
  settings s;
  s.self = attesting_party{.attester = m.attester};
  return s;
}

TEST_CASE("a client accepts a server's TPM evidence bound to this connection's exporter") {
  const machine server_machine("server.test");
  const auto r =
      attest_once(server_machine, relying_on(server_machine), attesting_as(server_machine));
  REQUIRE_MESSAGE(!r.client.outcome, r.client.detail);
  REQUIRE_MESSAGE(!r.server.outcome, r.server.detail);
  REQUIRE(r.client.peer_result.has_value());
  CHECK(r.client.peer_result->status == verify::ear_status::affirming);
  CHECK(r.client.peer_result->attested_key == server_machine.attester->tls_public_key());
}

TEST_CASE(
    "evidence produced for connection A and replayed into connection B with the same TPM key is "
    "refused as wrong_nonce") {
  const machine server_machine("server.test");
  const auto first =
      attest_once(server_machine, relying_on(server_machine), attesting_as(server_machine));
  REQUIRE_MESSAGE(!first.client.outcome, first.client.detail);
  REQUIRE(server_machine.attester->last.has_value());

  // Same machine, same TIK signing the authenticator, same verifier: only the evidence is old.
  server_machine.attester->replay = true;
  const auto second =
      attest_once(server_machine, relying_on(server_machine), attesting_as(server_machine));
  INFO(second.client.detail);
  CHECK(reason_of(second.client.outcome) == reason::wrong_nonce);
  // The attester learns why from the verdict.
  CHECK(second.server.outcome == errc::refused_by_peer);
  CHECK(second.server.detail.find("wrong_nonce") != std::string::npos);
}

TEST_CASE("a server whose evidence comes from another TPM is refused") {
  const machine server_machine("server.test");
  const machine other_machine("other.test");
  // The client trusts only the other machine's AK: a genuine TPM, but not one it vouches for.
  const auto r =
      attest_once(server_machine, relying_on(other_machine), attesting_as(server_machine));
  INFO(r.client.detail);
  CHECK(reason_of(r.client.outcome) == reason::verifier_refused);
}

}  // namespace
}  // namespace atls::attested
