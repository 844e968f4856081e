// Intra-handshake attestation (draft-fossati-seat-early-attestation) between two tls::stream
// objects over a socket pair: real TLS 1.3 handshakes whose leaf keys live in swtpm, evidence
// from the TPM, appraisal by the local verifier, and the draft's alerts on every refusal.
#include "atls/attested/early_attestation.hpp"

#include <array>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <doctest/doctest.h>
#include <openssl/sha.h>

#include "atls/attest/attester.hpp"
#include "atls/attested/reason.hpp"
#include "atls/tls/certificate.hpp"
#include "atls/tls/context.hpp"
#include "atls/tls/error.hpp"
#include "atls/tls/stream.hpp"
#include "atls/verify/local_verifier.hpp"

#include "integration/attested_machine.hpp"
#include "support/process.hpp"
#include "support/replay_attester.hpp"
#include "support/swtpm.hpp"
#include "support/temp_dir.hpp"

namespace atls::attested {
namespace {

namespace asio = boost::asio;
using asio::experimental::awaitable_operators::operator&&;
using namespace std::chrono_literals;
using socket_type = asio::generic::stream_protocol::socket;

const tls::attestation_code_points points;

relying_party relying_on(const machine& m) {
  relying_party rp;
  rp.verifier = local_verifier_for(m);
  return rp;
}

attesting_party attesting_as(const machine& m) {
  return {.attester = m.attester};
}

std::array<std::uint8_t, 32> sha256_of(const attest::bytes& data) {
  std::array<std::uint8_t, 32> digest{};
  SHA256(data.data(), data.size(), digest.data());
  return digest;
}

tls::external_key key_of(const attest::attester& a) {
  return {.pkey = a.tls_key(), .description = "TIK"};
}

// Installs the engine on a context (once per context).
tls::context with_engine(tls::context ctx) {
  REQUIRE(install_early_attestation(ctx.native_handle(), points).has_value());
  return ctx;
}

// The outcome of one handshake on both sides.
struct side {
  error_code handshake;
  std::optional<std::uint8_t> alert;  // the alert the peer sent us
  result<void> outcome;
  std::string detail;
  std::optional<verify::attestation_result> peer_result;
  bool attested = false;
};

struct run_result {
  side client;
  side server;
};

// Runs a handshake between a client and a server stream on a socket pair, each with an engine
// when its settings are given.
run_result handshake(const tls::context& client_ctx, const std::optional<settings>& client_settings,
                     const tls::context& server_ctx,
                     const std::optional<settings>& server_settings) {
  asio::io_context io;
  asio::local::stream_protocol::socket a(io);
  asio::local::stream_protocol::socket b(io);
  asio::local::connect_pair(a, b);
  const asio::generic::stream_protocol protocol(AF_UNIX, 0);
  tls::stream server(socket_type(io, protocol, a.release()), server_ctx);
  tls::stream client(socket_type(io, protocol, b.release()), client_ctx);
  std::optional<early_attestation> server_engine;
  std::optional<early_attestation> client_engine;
  if (server_settings) {
    server_engine.emplace(server, *server_settings);
  }
  if (client_settings) {
    client_engine.emplace(client, *client_settings);
  }
  run_result out;
  const auto drive = [](tls::stream& s, side& result) -> asio::awaitable<void> {
    result.handshake = co_await s.handshake();
    if (result.handshake) {
      s.close();  // the peer then sees our alert, then EOF
    }
  };
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await (drive(client, out.client) && drive(server, out.server));
        // A refusal after the client's Finished reaches the client on its first read.
        if (!out.client.handshake && out.server.handshake) {
          std::array<char, 16> buffer{};
          auto [ec, n] = co_await client.read_some(asio::buffer(buffer));
          (void)n;
          out.client.handshake = ec;
        }
      },
      [&done](const std::exception_ptr& e) {
        done = true;
        CHECK_FALSE(e);
      });
  io.run_for(60s);
  REQUIRE_MESSAGE(done, "timed out");
  out.client.alert = client.received_alert();
  out.server.alert = server.received_alert();
  const auto collect = [](const std::optional<early_attestation>& e, side& s) {
    if (!e) {
      return;
    }
    s.outcome = e->outcome(s.handshake);
    s.detail = e->detail();
    s.peer_result = e->peer_result();
    s.attested = e->attested();
  };
  collect(client_engine, out.client);
  collect(server_engine, out.server);
  return out;
}

reason reason_on(const side& s) {
  return s.outcome ? reason::accepted : reason_of(s.outcome.error());
}

struct fixture {
  fixture() : server_machine("server.test"), client_machine("client.test") {}

  [[nodiscard]] tls::context server_context(bool client_ca) const {
    tls::server_options o{.cert_chain = server_machine.certificate,
                          .private_key = key_of(*server_machine.attester)};
    if (client_ca) {
      o.client_ca = client_machine.certificate;
    }
    return with_engine(tls::context::make_server(o).value());
  }
  [[nodiscard]] tls::context client_context(bool with_certificate) const {
    tls::client_options o{.ca = server_machine.certificate, .server_name = "server.test"};
    if (with_certificate) {
      o.cert_chain = client_machine.certificate;
      o.private_key = key_of(*client_machine.attester);
    }
    return with_engine(tls::context::make_client(o).value());
  }

  machine server_machine;
  machine client_machine;
};

settings intra() {
  settings s;
  s.mode = mode::intra_handshake;
  return s;
}

TEST_CASE(
    "a server that attests in the handshake is accepted by the client with an affirming "
    "result") {
  fixture f;
  auto client = intra();
  client.peer = relying_on(f.server_machine);
  auto server = intra();
  server.self = attesting_as(f.server_machine);

  const auto r = handshake(f.client_context(false), client, f.server_context(false), server);
  REQUIRE_FALSE(r.client.handshake);
  REQUIRE_FALSE(r.server.handshake);
  REQUIRE_MESSAGE(r.client.outcome.has_value(), r.client.detail);
  REQUIRE(r.client.peer_result.has_value());
  CHECK(r.client.peer_result->status == verify::ear_status::affirming);
  CHECK(r.client.peer_result->attested_key == f.server_machine.attester->tls_public_key());
  CHECK(r.server.attested);
  CHECK(r.server.outcome.has_value());
}

TEST_CASE("a client that attests in its Certificate is accepted by the server") {
  fixture f;
  auto client = intra();
  client.self = attesting_as(f.client_machine);
  auto server = intra();
  server.peer = relying_on(f.client_machine);

  const auto r = handshake(f.client_context(true), client, f.server_context(true), server);
  REQUIRE_FALSE(r.client.handshake);
  REQUIRE_FALSE(r.server.handshake);
  REQUIRE_MESSAGE(r.server.outcome.has_value(), r.server.detail);
  REQUIRE(r.server.peer_result.has_value());
  CHECK(r.server.peer_result->status == verify::ear_status::affirming);
  CHECK(r.server.peer_result->attested_key == f.client_machine.attester->tls_public_key());
  CHECK(r.client.attested);
}

TEST_CASE("a client without a CA-issued certificate is accepted by pinned key (RA-only)") {
  fixture f;
  auto client = intra();
  client.self = attesting_as(f.client_machine);
  auto server = intra();
  server.peer = relying_on(f.client_machine);
  server.peer->pinned_keys = {sha256_of(f.client_machine.attester->tls_public_key())};

  const auto r = handshake(f.client_context(true), client, f.server_context(false), server);
  REQUIRE_FALSE(r.client.handshake);
  REQUIRE_FALSE(r.server.handshake);
  REQUIRE_MESSAGE(r.server.outcome.has_value(), r.server.detail);
  CHECK(r.server.peer_result.has_value());
}

TEST_CASE("both sides attest and both accept") {
  fixture f;
  auto client = intra();
  client.self = attesting_as(f.client_machine);
  client.peer = relying_on(f.server_machine);
  auto server = intra();
  server.self = attesting_as(f.server_machine);
  server.peer = relying_on(f.client_machine);

  const auto r = handshake(f.client_context(true), client, f.server_context(true), server);
  REQUIRE_FALSE(r.client.handshake);
  REQUIRE_FALSE(r.server.handshake);
  REQUIRE_MESSAGE(r.client.outcome.has_value(), r.client.detail);
  REQUIRE_MESSAGE(r.server.outcome.has_value(), r.server.detail);
  CHECK(r.client.peer_result.has_value());
  CHECK(r.server.peer_result.has_value());
  CHECK(r.client.attested);
  CHECK(r.server.attested);
}

TEST_CASE("evidence with PCRs off the reference is refused with attestation_failed") {
  fixture f;
  SUBCASE("the client refuses the server's evidence") {
    auto client = intra();
    client.peer = relying_on(f.server_machine);
    client.peer->verifier = local_verifier_for(f.server_machine, 0x11);
    auto server = intra();
    server.self = attesting_as(f.server_machine);

    const auto r = handshake(f.client_context(false), client, f.server_context(false), server);
    CHECK(r.client.handshake);
    CHECK(r.server.handshake);
    CHECK(reason_on(r.client) == reason::status_below_policy);
    CHECK(r.server.alert == points.attestation_failed_alert);
  }
  SUBCASE("the server refuses the client's evidence") {
    auto client = intra();
    client.self = attesting_as(f.client_machine);
    auto server = intra();
    server.peer = relying_on(f.client_machine);
    server.peer->verifier = local_verifier_for(f.client_machine, 0x11);

    const auto r = handshake(f.client_context(true), client, f.server_context(true), server);
    CHECK(r.server.handshake);
    CHECK(reason_on(r.server) == reason::status_below_policy);
    // After its Finished the client learns it on its first read, from the encrypted alert.
    CHECK(r.client.handshake);
    CHECK(r.client.alert == points.attestation_failed_alert);
  }
}

TEST_CASE("a client that requires attestation refuses a plain server with attestation_required") {
  fixture f;
  auto client = intra();
  client.peer = relying_on(f.server_machine);
  const auto plain_server =
      tls::context::make_server({.cert_chain = f.server_machine.certificate,
                                 .private_key = key_of(*f.server_machine.attester)})
          .value();

  const auto r = handshake(f.client_context(false), client, plain_server, std::nullopt);
  CHECK(r.client.handshake);
  CHECK(r.server.handshake);
  CHECK(reason_on(r.client) == reason::attestation_required);
  CHECK(r.server.alert == points.attestation_required_alert);
}

TEST_CASE("a server that requires attestation refuses a client that offers none") {
  fixture f;
  auto server = intra();
  server.peer = relying_on(f.client_machine);
  const auto plain_client =
      tls::context::make_client({.ca = f.server_machine.certificate, .server_name = "server.test"})
          .value();

  const auto r = handshake(plain_client, std::nullopt, f.server_context(true), server);
  CHECK(r.client.handshake);
  CHECK(r.server.handshake);
  CHECK(reason_on(r.server) == reason::attestation_required);
  CHECK(r.client.alert == points.attestation_required_alert);
}

TEST_CASE(
    "no attestation scheme in common ends the handshake with unsupported_attestation_schemes") {
  fixture f;
  auto client = intra();
  client.peer = relying_on(f.server_machine);
  client.peer->model = model::passport;  // wants an EAR; the server only has evidence
  auto server = intra();
  server.self = attesting_as(f.server_machine);

  const auto r = handshake(f.client_context(false), client, f.server_context(false), server);
  CHECK(r.client.handshake);
  CHECK(r.server.handshake);
  CHECK(reason_on(r.server) == reason::unsupported_schemes);
  CHECK(r.client.alert == points.unsupported_attestation_schemes_alert);
}

TEST_CASE("evidence from one connection replayed into another is refused as wrong_nonce") {
  fixture f;
  auto client = intra();
  client.peer = relying_on(f.server_machine);
  auto server = intra();
  server.self = attesting_as(f.server_machine);
  const auto first = handshake(f.client_context(false), client, f.server_context(false), server);
  REQUIRE_MESSAGE(first.client.outcome.has_value(), first.client.detail);
  REQUIRE(f.server_machine.attester->last.has_value());

  // The relay: connection A's genuine evidence, a key of its own, a certificate the client
  // trusts for it.
  auto relay = std::make_shared<test::replay_attester>(*f.server_machine.attester->last);
  const auto relay_certificate = f.server_machine.certify(*relay, "server.test");
  auto relay_server = intra();
  relay_server.self = attesting_party{.attester = relay};
  const auto relay_ctx = with_engine(
      tls::context::make_server({.cert_chain = relay_certificate, .private_key = key_of(*relay)})
          .value());
  const auto relay_client_ctx = with_engine(
      tls::context::make_client({.ca = relay_certificate, .server_name = "server.test"}).value());

  const auto r = handshake(relay_client_ctx, client, relay_ctx, relay_server);
  CHECK(r.client.handshake);
  CHECK(reason_on(r.client) == reason::wrong_nonce);
  CHECK(r.server.alert == points.attestation_failed_alert);
}

TEST_CASE("a genuine attester whose key is not the pinned one is refused as not_pinned") {
  fixture f;
  auto client = intra();
  client.peer = relying_on(f.server_machine);
  client.peer->pinned_keys = {std::array<std::uint8_t, 32>{0x01}};
  auto server = intra();
  server.self = attesting_as(f.server_machine);

  const auto r = handshake(f.client_context(false), client, f.server_context(false), server);
  CHECK(r.client.handshake);
  CHECK(reason_on(r.client) == reason::not_pinned);
  CHECK(r.server.alert == points.attestation_failed_alert);
}

TEST_CASE("openssl s_client against a server that requires client attestation gets alert 225") {
  fixture f;
  auto server_settings = intra();
  server_settings.peer = relying_on(f.client_machine);
  const auto ctx = f.server_context(true);

  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = acceptor.local_endpoint().port();
  std::optional<side> seen;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto peer = co_await acceptor.async_accept(asio::use_awaitable);
        const asio::generic::stream_protocol protocol(AF_INET, IPPROTO_TCP);
        tls::stream server(socket_type(io, protocol, peer.release()), ctx);
        early_attestation engine(server, server_settings);
        side s;
        s.handshake = co_await server.handshake();
        s.outcome = engine.outcome(s.handshake);
        server.close();
        seen = s;
      },
      [](const std::exception_ptr& e) { CHECK_FALSE(e); });
  std::thread loop([&io] { io.run_for(30s); });
  const auto hello =
      test::run({"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port), "-tls1_3",
                 "-servername", "server.test", "-CAfile", f.server_machine.certificate.string()},
                20s, "/dev/null");
  loop.join();
  CHECK(hello.exit_code != 0);
  CHECK_MESSAGE(hello.err.find("alert number 225") != std::string::npos, hello.err);
  REQUIRE(seen.has_value());
  CHECK(seen->handshake);
  CHECK(reason_on(*seen) == reason::attestation_required);
}

}  // namespace
}  // namespace atls::attested
