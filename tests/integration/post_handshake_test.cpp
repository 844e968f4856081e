// Post-handshake attestation (RFC 9261 exported authenticators with draft-fossati-seat-expat)
// between two tls::stream objects over a socket pair: the TIK in swtpm, the local verifier, and
// the attacks that channel binding is there to stop.
#include "atls/attested/post_handshake.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>

#include "atls/attest/evidence.hpp"
#include "atls/attested/appraisal.hpp"
#include "atls/attested/reason.hpp"
#include "atls/tls/attestation_framing.hpp"
#include "atls/tls/context.hpp"
#include "atls/tls/exported_authenticator.hpp"
#include "atls/tls/stream.hpp"
#include "atls/verify/error.hpp"
#include "atls/verify/verifier.hpp"

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

settings relying_on(std::shared_ptr<verify::verifier> verifier) {
  settings s;
  s.peer = relying_party{.verifier = std::move(verifier)};
  return s;
}

settings relying_on(const machine& m) {
  return relying_on(local_verifier_for(m));
}

settings attesting_as(const machine& m) {
  settings s;
  s.self = attesting_party{.attester = m.attester};
  return s;
}

std::pair<socket_type, socket_type> socket_pair(asio::io_context& io) {
  asio::local::stream_protocol::socket a(io);
  asio::local::stream_protocol::socket b(io);
  asio::local::connect_pair(a, b);
  const asio::generic::stream_protocol protocol(AF_UNIX, 0);
  return {socket_type(io, protocol, a.release()), socket_type(io, protocol, b.release())};
}

tls::context server_context(const machine& m) {
  auto ctx =
      tls::context::make_server(
          {.cert_chain = m.certificate,
           .private_key = tls::external_key{.pkey = m.attester->tls_key(), .description = "TIK"}})
          .value();
  REQUIRE(install_post_handshake(ctx.native_handle(), points).has_value());
  return ctx;
}

tls::context client_context(const machine& trusted) {
  auto ctx =
      tls::context::make_client({.ca = trusted.certificate, .server_name = "server.test"}).value();
  REQUIRE(install_post_handshake(ctx.native_handle(), points).has_value());
  return ctx;
}

// One TLS connection over a socket pair, not yet handshaken. The server end holds `server_as`'s
// certificate and TPM key; the client end trusts exactly that certificate. Each end has its
// offer attached, made from its settings, which must outlive the connection.
struct connection {
  connection(asio::io_context& io, const machine& server_as, const settings& client_settings,
             const settings& server_settings)
      : connection(socket_pair(io), server_as, client_settings, server_settings) {}

  tls::stream server;
  tls::stream client;
  post_handshake_negotiation server_offer;
  post_handshake_negotiation client_offer;

 private:
  connection(std::pair<socket_type, socket_type> sockets, const machine& server_as,
             const settings& client_settings, const settings& server_settings)
      : server(std::move(sockets.first), server_context(server_as)),
        client(std::move(sockets.second), client_context(server_as)),
        server_offer(server, server_settings, true),
        client_offer(client, client_settings, false) {}
};

// Runs body on io to completion, failing the test after `limit`; a check that failed inside the
// body fails the test with its own message.
template <class Body>
void run(asio::io_context& io, Body body, std::chrono::seconds limit = 60s) {
  bool done = false;
  std::exception_ptr failure;
  asio::co_spawn(io, std::move(body), [&](const std::exception_ptr& e) {
    done = true;
    failure = e;
  });
  io.run_for(limit);
  if (failure) {
    std::rethrow_exception(failure);
  }
  REQUIRE_MESSAGE(done, "timed out");
}

// What an end does once its establish() failed.
enum class after_failure {
  close,  // as atlsd does
  // Keep the connection open until the peer closes it: a peer that learned nothing from what
  // came before then waits for a deadline, as it would for a silent peer.
  linger,
};

asio::awaitable<void> linger(tls::stream& s) {
  std::array<std::uint8_t, 1024> sink{};
  for (;;) {
    auto got = co_await s.read_some(asio::buffer(sink));
    if (std::get<0>(got)) {
      break;
    }
  }
  s.close();
}

// One end as atlsd runs it: the handshake, then the attestation exchanges its settings ask for.
asio::awaitable<void> run_end(tls::stream& s, const post_handshake_negotiation& offer,
                              const settings& config, side& result,
                              after_failure then = after_failure::close) {
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
  if (!result.outcome) {
    co_return;
  }
  if (then == after_failure::linger) {
    auto lingering = linger(s);
    co_await std::move(lingering);
    co_return;
  }
  s.close();
}

// A handshake and the first attestation exchange between a client that appraises and a server
// that attests with `server_machine`'s TPM key.
exchange attest_once(const machine& server_machine, const settings& client_settings,
                     const settings& server_settings) {
  asio::io_context io;
  connection c(io, server_machine, client_settings, server_settings);
  exchange out;
  run(io, [&]() -> asio::awaitable<void> {
    auto both = run_end(c.client, c.client_offer, client_settings, out.client) &&
                run_end(c.server, c.server_offer, server_settings, out.server);
    co_await std::move(both);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// A hand-driven end: the attacker's, which speaks frames without the engine's rules.

asio::awaitable<error_code> send_frame(tls::stream& s, tls::frame_type type, const bytes& payload) {
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

bytes fresh_request() {
  const auto context = tls::make_request_context();
  REQUIRE(context.has_value());
  auto request = tls::make_request(tls::authenticator_request_kind::client_certificate_request,
                                   *context, {.request_attestation = true, .code_points = points});
  REQUIRE(request.has_value());
  return *request;
}

// An authenticator the genuine server made on a connection of its own.
struct captured {
  error_code failure;  // the attacker's, should it not get one
  bytes request;
  bytes authenticator;
  // verify_authenticator accepted it on that connection: it is genuine, so a refusal elsewhere
  // is the other connection's doing.
  bool valid_where_made = false;
};

// The attacker's client end: sends `request` framed, as an atlsd client would, and keeps the
// authenticator that comes back.
asio::awaitable<void> fetch_authenticator(tls::stream& s, const bytes& request, captured& out) {
  out.failure = co_await s.handshake();
  if (!out.failure) {
    out.failure = co_await send_frame(s, tls::frame_type::authenticator_request, request);
  }
  if (out.failure) {
    s.close();
    co_return;
  }
  tls::frame_reader reader;
  auto answer = co_await next_frame(s, reader);
  if (!answer || answer->type != tls::frame_type::authenticator) {
    out.failure = answer ? make_error_code(tls::errc::malformed_frame) : answer.error();
    s.close();
    co_return;
  }
  out.request = request;
  out.authenticator = std::move(answer->payload);
  tls::authenticator_session session;
  out.valid_where_made = tls::verify_authenticator(s.native_handle(), request, out.authenticator,
                                                   session, {.code_points = points})
                             .has_value();
  // Without a verdict the genuine server's establish() ends here, as it would for a client
  // that walked away.
  s.close();
}

// The attacker as a client of the genuine server, on a connection of its own.
asio::awaitable<void> ask_genuine_server(asio::io_context& io, const machine& genuine,
                                         bytes request, captured& out) {
  const settings client_settings = relying_on(genuine);  // only for the offer: hand-driven
  const settings server_settings = attesting_as(genuine);
  connection a(io, genuine, client_settings, server_settings);
  side server;
  auto genuine_end = run_end(a.server, a.server_offer, server_settings, server);
  auto attacker_end = fetch_authenticator(a.client, request, out);
  auto both = std::move(genuine_end) && std::move(attacker_end);
  co_await std::move(both);
}

captured capture_from(const machine& genuine) {
  asio::io_context io;
  captured out;
  auto request = fresh_request();
  run(io, [&]() -> asio::awaitable<void> {
    auto asking = ask_genuine_server(io, genuine, std::move(request), out);
    co_await std::move(asking);
  });
  REQUIRE_MESSAGE(!out.failure, out.failure.message());
  return out;
}

enum class attack {
  // Answer with an authenticator captured earlier, on another connection.
  replay_captured,
  // Pass this connection's request to the genuine server on another connection, verbatim, and
  // pass its answer back: the request context then matches.
  relay_request,
  // Answer with what a forger makes on this connection.
  forge,
};

// The attacker's answer to `request`, made on the victim's connection `s`.
using forger = std::function<asio::awaitable<result<bytes>>(tls::stream& s, const bytes& request)>;

struct attack_log {
  error_code failure;                   // the attacker's own, should its plan not run
  bytes request;                        // what the victim asked on its connection
  std::optional<captured> relayed;      // relay_request: what the genuine server answered it
  std::optional<tls::verdict> verdict;  // what the victim told the attacker
};

// The attacker as the server of the victim's connection: answers the victim's request with an
// authenticator from another connection of the genuine server.
asio::awaitable<void> impersonate(asio::io_context& io, tls::stream& s, const machine& genuine,
                                  attack how, bytes earlier, forger forge, attack_log& log) {
  log.failure = co_await s.handshake();
  if (log.failure) {
    co_return;
  }
  tls::frame_reader reader;
  auto asked = co_await next_frame(s, reader);
  if (!asked || asked->type != tls::frame_type::authenticator_request) {
    log.failure = asked ? make_error_code(tls::errc::malformed_frame) : asked.error();
    s.close();
    co_return;
  }
  log.request = asked->payload;
  bytes answer = std::move(earlier);
  if (how == attack::relay_request) {
    log.relayed.emplace();
    auto relaying = ask_genuine_server(io, genuine, log.request, *log.relayed);
    co_await std::move(relaying);
    answer = log.relayed->authenticator;
  }
  if (how == attack::forge) {
    auto forging = forge(s, log.request);
    auto forged = co_await std::move(forging);
    if (!forged) {
      log.failure = forged.error();
      s.close();
      co_return;
    }
    answer = std::move(*forged);
  }
  log.failure = co_await send_frame(s, tls::frame_type::authenticator, answer);
  if (!log.failure) {
    auto told = co_await next_frame(s, reader);
    if (told && told->type == tls::frame_type::verdict) {
      if (auto verdict = tls::decode_verdict(told->payload)) {
        log.verdict = std::move(*verdict);
      }
    }
  }
  s.close();
}

struct attack_outcome {
  side victim;  // the client that relies on the genuine server's attestation
  attack_log attacker;
};

// A client with `victim_settings`, which trusts `impostor`'s certificate for TLS, connects to
// the attacker, who serves with `impostor`'s certificate and key.
attack_outcome attack_client_with(const settings& victim_settings, const machine& genuine,
                                  const machine& impostor, attack how, bytes earlier,
                                  forger forge) {
  const settings impostor_settings = attesting_as(impostor);  // only for the offer: hand-driven
  asio::io_context io;
  connection b(io, impostor, victim_settings, impostor_settings);
  attack_outcome out;
  run(io, [&]() -> asio::awaitable<void> {
    auto victim = run_end(b.client, b.client_offer, victim_settings, out.victim);
    auto attacker =
        impersonate(io, b.server, genuine, how, std::move(earlier), std::move(forge), out.attacker);
    auto both = std::move(victim) && std::move(attacker);
    co_await std::move(both);
  });
  REQUIRE_MESSAGE(!out.attacker.failure, out.attacker.failure.message());
  return out;
}

// A client that trusts `impostor`'s certificate for TLS and the genuine machine's AK for
// attestation connects to the attacker, who serves with `impostor`'s certificate and key.
attack_outcome attack_client(const machine& genuine, const machine& impostor, attack how,
                             bytes earlier = {}) {
  return attack_client_with(relying_on(genuine), genuine, impostor, how, std::move(earlier), {});
}

// A client with `victim_settings` connects to the attacker, who serves with `serving`'s
// certificate and key and answers the client's request with what `forge` makes.
attack_outcome forge_for_client(const settings& victim_settings, const machine& serving,
                                forger forge) {
  return attack_client_with(victim_settings, serving, serving, attack::forge, {}, std::move(forge));
}

// The victim refused with `why` and told the attacker so, about the request it made.
void check_verdict(const attack_outcome& r, reason why) {
  REQUIRE(r.attacker.verdict.has_value());
  CHECK(r.attacker.verdict->reason == static_cast<std::uint16_t>(why));
  CHECK(r.attacker.verdict->context == tls::decode_request(r.attacker.request)->context);
}

// What every refusal must look like to the relying party: the error that refused, the reason it
// reports, and no result accepted.
void check_refused(const side& relying_party, const error_code& expected, reason why) {
  INFO(relying_party.detail);
  CHECK(relying_party.outcome == expected);
  CHECK(reason_of(relying_party.outcome) == why);
  CHECK_FALSE(relying_party.peer_result.has_value());
}

// A refused attack: the victim refused as above and told the attacker why, about the request it
// made.
void check_refused(const attack_outcome& r, const error_code& expected, reason why) {
  check_refused(r.victim, expected, why);
  check_verdict(r, why);
}

// ---------------------------------------------------------------------------------------------
// Forgers: the attacker's answers, made on the victim's connection with the library's own
// encoders, as the engine makes them, but from parts the engine would not put together.

tls::x509_ptr load_certificate(const std::filesystem::path& file) {
  const std::unique_ptr<BIO, decltype(&BIO_free)> in(BIO_new_file(file.c_str(), "r"), &BIO_free);
  REQUIRE(in != nullptr);
  tls::x509_ptr cert(PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr));
  REQUIRE(cert != nullptr);
  return cert;
}

// `whose` TPM evidence over the binder of s, the request's context and `whose` TIK: what that
// machine would attest with, were it answering `request` on this connection.
asio::awaitable<result<attest::evidence_bundle>> evidence_on(tls::stream& s, const bytes& request,
                                                             const machine& whose) {
  auto decoded = tls::decode_request(request);
  if (!decoded) {
    co_return decoded.error();
  }
  auto binder = tls::attestation_binder(s.native_handle(), decoded->context,
                                        whose.attester->tls_public_key());
  if (!binder) {
    co_return binder.error();
  }
  auto collecting = whose.attester->evidence(std::move(*binder));
  auto evidence = co_await std::move(collecting);
  co_return evidence;
}

// An authenticator answering `request` on s with `as`'s certificate, signed by `as`'s TIK in its
// TPM, carrying `cmw` in the cmw_attestation extension, whatever those bytes are.
asio::awaitable<result<bytes>> authenticate_as(tls::stream& s, const bytes& request,
                                               const machine& as, bytes cmw) {
  SSL* ssl = s.native_handle();
  const auto leaf = load_certificate(as.certificate);
  const std::array<X509*, 1> chain{leaf.get()};
  tls::authenticator_session session;  // the attacker's own
  auto prepared = tls::prepare_authenticator(
      ssl, request, chain, std::span<const std::uint8_t>(cmw), session, {.code_points = points});
  if (!prepared) {
    co_return prepared.error();
  }
  const auto& to_sign = *prepared;
  auto sign = [&to_sign](EVP_PKEY* key) { return tls::sign_prepared(to_sign, key); };
  auto signing = as.attester->with_tls_key(sign);
  auto signature = co_await std::move(signing);
  if (!signature) {
    co_return signature.error();
  }
  co_return tls::finish_authenticator(ssl, *prepared, *signature);
}

enum class evidence_form {
  cmw_record,  // wrapped as the engine wraps it
  bare,        // the TPM evidence itself, where a CMW record belongs
};

// The authenticator `as` would answer `request` with on s: its certificate, its TIK's signature,
// its evidence over this connection's binder.
asio::awaitable<result<bytes>> answer_as(tls::stream& s, const bytes& request, const machine& as,
                                         evidence_form form) {
  auto collecting = evidence_on(s, request, as);
  auto evidence = co_await std::move(collecting);
  if (!evidence) {
    co_return evidence.error();
  }
  bytes cmw = evidence->data;
  if (form == evidence_form::cmw_record) {
    auto wrapped = wrap_evidence(*evidence);
    if (!wrapped) {
      co_return wrapped.error();
    }
    cmw = std::move(*wrapped);
  }
  auto answering = authenticate_as(s, request, as, std::move(cmw));
  auto answer = co_await std::move(answering);
  co_return answer;
}

enum class damage {
  truncated,  // the last byte cut off
  extended,   // a byte appended
};

// `as`'s genuine answer, damaged on the way.
asio::awaitable<result<bytes>> damaged_answer(tls::stream& s, const bytes& request,
                                              const machine& as, damage how) {
  auto answering = answer_as(s, request, as, evidence_form::cmw_record);
  auto answer = co_await std::move(answering);
  if (!answer) {
    co_return answer.error();
  }
  switch (how) {
    case damage::truncated:
      answer->pop_back();
      break;
    case damage::extended:
      answer->push_back(0x00);
      break;
  }
  co_return answer;
}

// ---------------------------------------------------------------------------------------------
// Test attesters and verifiers.

// Signs with one machine's TIK (`signer`), vouches with another machine's TPM (`witness`):
// genuine evidence over whatever binder it is given, about the witness's own TIK.
class split_attester final : public attest::attester {
 public:
  split_attester(std::shared_ptr<attest::attester> signer,
                 std::shared_ptr<attest::attester> witness)
      : signer_(std::move(signer)), witness_(std::move(witness)) {}
  asio::awaitable<result<attest::evidence_bundle>> evidence(attest::bytes nonce) override {
    auto collecting = witness_->evidence(std::move(nonce));
    auto got = co_await std::move(collecting);
    co_return got;
  }
  [[nodiscard]] std::shared_ptr<EVP_PKEY> tls_key() const override { return signer_->tls_key(); }
  [[nodiscard]] const attest::bytes& tls_public_key() const override {
    return signer_->tls_public_key();
  }
  asio::awaitable<result<attest::bytes>> with_tls_key(
      std::function<result<attest::bytes>(EVP_PKEY*)> sign) override {
    auto signing = signer_->with_tls_key(std::move(sign));
    auto signature = co_await std::move(signing);
    co_return signature;
  }

 private:
  std::shared_ptr<attest::attester> signer_;
  std::shared_ptr<attest::attester> witness_;
};

// A verifier that keeps what it concluded, so that a refusal after an appraisal that succeeded
// can be told from the verifier's own.
class witnessing_verifier final : public verify::verifier {
 public:
  explicit witnessing_verifier(std::shared_ptr<verify::verifier> inner)
      : inner_(std::move(inner)) {}
  asio::awaitable<result<verify::attestation_result>> appraise(bytes evidence,
                                                               std::string media_type,
                                                               bytes expected_nonce) override {
    ++appraisals;
    auto appraising =
        inner_->appraise(std::move(evidence), std::move(media_type), std::move(expected_nonce));
    auto appraised = co_await std::move(appraising);
    if (appraised) {
      last = *appraised;
    }
    co_return appraised;
  }
  asio::awaitable<result<bytes>> challenge(std::size_t size) override {
    auto asking = inner_->challenge(size);
    auto nonce = co_await std::move(asking);
    co_return nonce;
  }
  asio::awaitable<result<void>> probe() override {
    auto probing = inner_->probe();
    auto probed = co_await std::move(probing);
    co_return probed;
  }
  [[nodiscard]] std::string_view name() const noexcept override { return inner_->name(); }

  int appraisals = 0;
  std::optional<verify::attestation_result> last;  // the last result it gave

 private:
  std::shared_ptr<verify::verifier> inner_;
};

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
  // The quote's extraData is the binder of connection A (attest::verify compares it).
  check_refused(second.client, attest::evidence_errc::nonce_mismatch, reason::wrong_nonce);
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
  check_refused(r.client, verify::verify_errc::unknown_attestation_key, reason::verifier_refused);
}

// Issue 5: a replayed authenticator is refused. The genuine server's authenticator is checked on
// the connection it was made for, so each refusal below comes from the connection, not from a
// damaged capture.

TEST_CASE("an authenticator captured on one connection and replayed on another is refused") {
  const machine genuine("server.test");
  // A host the client accepts as server.test for TLS, but whose TPM the verifier does not know:
  // it wants to pass for the genuine server's attestation.
  const machine impostor("server.test");
  const auto earlier = capture_from(genuine);
  REQUIRE(earlier.valid_where_made);

  const auto r = attack_client(genuine, impostor, attack::replay_captured, earlier.authenticator);
  // The victim's request has a fresh context; the captured Certificate names connection A's.
  check_refused(r, tls::errc::authenticator_context_mismatch, reason::bad_authenticator);
}

TEST_CASE(
    "an authenticator replayed on another connection by the same machine, with the same TPM key, "
    "is refused") {
  const machine genuine("server.test");
  const auto earlier = capture_from(genuine);
  REQUIRE(earlier.valid_where_made);

  // The handshake certificate's key is the authenticator's key: only the connection differs.
  const auto r = attack_client(genuine, genuine, attack::replay_captured, earlier.authenticator);
  check_refused(r, tls::errc::authenticator_context_mismatch, reason::bad_authenticator);
}

TEST_CASE(
    "an authenticator that answers this very request but was made on another connection is "
    "refused, even with the same TPM key") {
  const machine genuine("server.test");
  // The attacker holds the genuine TPM key on the victim's connection and passes the victim's
  // request, context and all, to the genuine server on a connection of its own.
  const auto r = attack_client(genuine, genuine, attack::relay_request);
  REQUIRE(r.attacker.relayed.has_value());
  CHECK(r.attacker.relayed->request == r.attacker.request);
  REQUIRE(r.attacker.relayed->valid_where_made);
  // RFC 9261 §5.2.2: CertificateVerify signs the Handshake Context, an exporter value of the
  // connection the authenticator was made on.
  check_refused(r, tls::errc::bad_authenticator_signature, reason::bad_authenticator);
}

// Issue 5: every way the exchange fails has its own reason, and the attester is told it.

TEST_CASE(
    "a server whose genuine evidence over this connection's binder vouches for another TPM's key "
    "than the one that signed is refused as key_mismatch") {
  const machine server_machine("server.test");
  const machine other_machine("other.test");
  // The server signs the handshake and the authenticator with its own TIK, but its evidence is
  // the other TPM's certification of the other TIK, over the binder the server was given.
  settings server_settings;
  server_settings.self = attesting_party{.attester = std::make_shared<split_attester>(
                                             server_machine.attester, other_machine.attester)};
  // The verifier trusts the other TPM: its evidence appraises, nonce and all.
  const auto witness = std::make_shared<witnessing_verifier>(local_verifier_for(other_machine));
  const auto r = attest_once(server_machine, relying_on(witness), server_settings);

  check_refused(r.client, verify::verify_errc::attested_key_mismatch, reason::key_mismatch);
  // Refused after an appraisal that succeeded: the only thing wrong is whose key it vouches for.
  CHECK(witness->appraisals == 1);
  REQUIRE(witness->last.has_value());
  CHECK(witness->last->status == verify::ear_status::affirming);
  CHECK(witness->last->attested_key == other_machine.attester->tls_public_key());
  CHECK(witness->last->attested_key != server_machine.attester->tls_public_key());
  // The verdict told the attester.
  CHECK(r.server.outcome == errc::refused_by_peer);
  CHECK(r.server.detail.find("key_mismatch") != std::string::npos);
}

TEST_CASE(
    "a server whose authenticator is another machine's genuine one, with a certificate other "
    "than its handshake certificate, is refused as key_mismatch before appraisal") {
  const machine genuine("genuine.test");
  // The client accepts the impostor as server.test for TLS; the attacker also commands the
  // genuine machine's TPM, whose evidence the client's verifier trusts.
  const machine impostor("server.test");
  const auto witness = std::make_shared<witnessing_verifier>(local_verifier_for(genuine));
  // Everything in the authenticator is the genuine machine's and bound to this connection:
  // certificate, TIK signature, evidence over the binder for that TIK. Only the handshake
  // was the impostor's.
  const forger forge = [&genuine](tls::stream& s, const bytes& request) {
    return answer_as(s, request, genuine, evidence_form::cmw_record);
  };
  const auto r = forge_for_client(relying_on(witness), impostor, forge);

  check_refused(r, verify::verify_errc::attested_key_mismatch, reason::key_mismatch);
  CHECK(witness->appraisals == 0);
}

// The server's own genuine answer, damaged on the way, must be refused as malformed.
void check_unparsable(damage how) {
  const machine server_machine("server.test");
  const forger forge = [&server_machine, how](tls::stream& s, const bytes& request) {
    return damaged_answer(s, request, server_machine, how);
  };
  const auto r = forge_for_client(relying_on(server_machine), server_machine, forge);

  check_refused(r, tls::errc::malformed_authenticator, reason::malformed);
}

TEST_CASE("an authenticator frame whose bytes do not parse is refused as malformed") {
  // RFC 9261's messages have exact lengths, and nothing may follow Finished.
  SUBCASE("one byte short") {
    check_unparsable(damage::truncated);
  }
  SUBCASE("one byte long") {
    check_unparsable(damage::extended);
  }
}

TEST_CASE(
    "a validly signed authenticator whose cmw_attestation is not a CMW record is refused as "
    "malformed") {
  const machine server_machine("server.test");
  // Genuine TPM evidence over this connection's binder, signed by the handshake's key, but bare
  // where a CMW record belongs.
  const auto witness = std::make_shared<witnessing_verifier>(local_verifier_for(server_machine));
  const forger forge = [&server_machine](tls::stream& s, const bytes& request) {
    return answer_as(s, request, server_machine, evidence_form::bare);
  };
  const auto r = forge_for_client(relying_on(witness), server_machine, forge);

  // Past every RFC 9261 check: the authenticator itself was sound.
  check_refused(r, tls::errc::malformed_cmw, reason::malformed);
  CHECK(witness->appraisals == 0);
}

TEST_CASE(
    "a server that answers the request with the empty authenticator is refused as no_evidence") {
  const machine server_machine("server.test");
  // RFC 9261 §6: Finished alone, the attester's authenticated refusal.
  const forger forge = [](tls::stream& s, const bytes& request) -> asio::awaitable<result<bytes>> {
    co_return tls::make_empty_authenticator(s.native_handle(), request);
  };
  const auto r = forge_for_client(relying_on(server_machine), server_machine, forge);

  check_refused(r, tls::errc::no_evidence, reason::no_evidence);
}

// An attester that cannot attest declines with the empty authenticator and keeps the connection
// open: the relying party must learn no_evidence from the refusal itself, well before
// `limit`, and not from a close or its own deadline.
exchange decline_and_linger(const machine& server_machine, const settings& server_settings,
                            std::chrono::seconds limit) {
  const settings client_settings = relying_on(server_machine);
  asio::io_context io;
  connection c(io, server_machine, client_settings, server_settings);
  exchange out;
  run(
      io,
      [&]() -> asio::awaitable<void> {
        auto client = run_end(c.client, c.client_offer, client_settings, out.client);
        auto server =
            run_end(c.server, c.server_offer, server_settings, out.server, after_failure::linger);
        auto both = std::move(client) && std::move(server);
        co_await std::move(both);
      },
      limit);
  return out;
}

TEST_CASE(
    "a server whose TPM gives no evidence declines with the empty authenticator, and the client "
    "refuses it as no_evidence at once") {
  const machine server_machine("server.test");
  const error_code tpm_down = attest::tpm_errc::connect_failed;
  server_machine.attester->evidence_failure = tpm_down;
  const auto started = std::chrono::steady_clock::now();
  const auto r = decline_and_linger(server_machine, attesting_as(server_machine), 20s);
  const auto took = std::chrono::steady_clock::now() - started;

  check_refused(r.client, tls::errc::no_evidence, reason::no_evidence);
  CHECK(took < 5s);
  // The attester's own outcome is its own failure, not the relying party's verdict.
  CHECK(r.server.outcome == tpm_down);
  CHECK(r.server.detail.find("collecting evidence") != std::string::npos);
}

TEST_CASE(
    "a passport server without a fresh attestation result declines with the empty "
    "authenticator, and the client refuses it as no_evidence at once") {
  const machine server_machine("server.test");
  settings server_settings;
  server_settings.self =
      attesting_party{.attester = server_machine.attester, .model = model::passport};
  const auto started = std::chrono::steady_clock::now();
  const auto r = decline_and_linger(server_machine, server_settings, 20s);
  const auto took = std::chrono::steady_clock::now() - started;

  check_refused(r.client, tls::errc::no_evidence, reason::no_evidence);
  CHECK(took < 5s);
  CHECK(r.server.outcome == errc::no_passport);
}

}  // namespace
}  // namespace atls::attested
