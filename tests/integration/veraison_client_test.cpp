// The Veraison client against the Veraison-API test server, over real HTTP and HTTPS sockets:
// what a relying party gets back, and what it does when the verifier misbehaves.
#include "atls/verify/veraison_client.hpp"

#include <chrono>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "atls/attest/attester.hpp"
#include "atls/attest/evidence.hpp"
#include "atls/verify/appraisal_policy.hpp"
#include "atls/verify/ear.hpp"
#include "atls/verify/endorsements.hpp"
#include "atls/verify/error.hpp"

#include "support/daemon.hpp"
#include "support/swtpm.hpp"
#include "support/temp_dir.hpp"
#include "support/veraison_server.hpp"

namespace atls::verify {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

const std::string vectors = ATLS_SOURCE_DIR "/../shared/vectors/";
const bytes vector_nonce{0xDE, 0xAD, 0xBE, 0xEF, 0xDE, 0xAD, 0xBE, 0xEF};
const std::string parsec{attest::parsec_tpm_media_type};

bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bytes pem_to_spki(const std::string& path) {
  const auto pem = read_file(path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  REQUIRE(key != nullptr);
  unsigned char* der = nullptr;
  const int length = i2d_PUBKEY(key, &der);
  EVP_PKEY_free(key);
  REQUIRE(length > 0);
  bytes out(der, der + length);
  OPENSSL_free(der);
  return out;
}

// Veraison's instance id for evidence: standard base64 of its kid.
std::string instance_id(const bytes& evidence) {
  auto decoded = attest::decode(evidence);
  REQUIRE(decoded.has_value());
  return instance_id_of(decoded->kid);
}

pcr_values zero_pcrs(std::initializer_list<std::uint8_t> indices) {
  pcr_values out;
  for (const auto index : indices) {
    out.values[index] = bytes(32, 0);
  }
  return out;
}

// A server that knows the Veraison vector's machine.
test::veraison_server_options vector_machine() {
  const auto evidence = read_file(vectors + "parsec-tpm-evidence.cbor");
  return {.trust_anchors = {{instance_id(evidence), pem_to_spki(vectors + "ak-pub.pem")}},
          .reference = zero_pcrs({0, 1, 2})};
}

// Runs one client call on a fresh io_context, with a time limit.
template <class T>
T run(const std::function<asio::awaitable<T>()>& call) {
  asio::io_context io;
  auto done = asio::co_spawn(io, call, asio::use_future);
  io.run_for(60s);
  REQUIRE(done.wait_for(0s) == std::future_status::ready);
  return done.get();
}

// A client whose network I/O runs on its own thread, as the daemon's control loop would run it;
// the tests await it from another io_context, as a connection's loop would.
struct client_fixture {
  explicit client_fixture(test::veraison_server& server, veraison_client_options options = {})
      : options_(std::move(options)) {
    if (options_.base_urls.empty()) {
      options_.base_urls = {server.base_url()};
    }
    if (!options_.ear_key && !options_.trust_discovered_key) {
      auto key = parse_jwk(server.ear_key_jwk());
      REQUIRE(key.has_value());
      options_.ear_key = *key;
    }
    options_.initial_backoff = 10ms;
  }
  ~client_fixture() {
    client_.reset();
    work_.reset();
    io_.stop();
    thread_.join();
  }
  client_fixture(const client_fixture&) = delete;
  client_fixture& operator=(const client_fixture&) = delete;
  client_fixture(client_fixture&&) = delete;
  client_fixture& operator=(client_fixture&&) = delete;

  std::shared_ptr<veraison_client> make_client() {
    if (!client_) {
      auto created = veraison_client::create(io_.get_executor(), options_);
      REQUIRE(created.has_value());
      client_ = *created;
    }
    return client_;
  }

  result<attestation_result> appraise(const bytes& evidence, const bytes& nonce,
                                      const std::string& media_type = parsec) {
    auto client = make_client();
    return run<result<attestation_result>>(
        [&] { return client->appraise(evidence, media_type, nonce); });
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::thread thread_{[this] { io_.run(); }};
  veraison_client_options options_;
  std::shared_ptr<veraison_client> client_;
};

TEST_CASE("Parsec TPM evidence appraised by Veraison over HTTP comes back affirming with its key") {
  test::veraison_server server(vector_machine());
  client_fixture client(server);
  const auto evidence = read_file(vectors + "parsec-tpm-evidence.cbor");

  const auto outcome = client.appraise(evidence, vector_nonce);

  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
  CHECK(outcome->trust[trust_claim::hardware] == genuine_hardware);
  CHECK(outcome->trust[trust_claim::executables] == approved_runtime);
  const auto decoded = attest::decode(evidence);
  REQUIRE(decoded.has_value());
  const auto tls_key = attest::spki_der(decoded->pub_area);
  REQUIRE(tls_key.has_value());
  CHECK(outcome->attested_key == *tls_key);
  CHECK(outcome->nonce == vector_nonce);
  CHECK_FALSE(outcome->raw_ear.empty());
  // The session was deleted, not left to expire (after the result: off the appraisal's path).
  CHECK(server.wait_for_no_open_session());
}

TEST_CASE("the client works over HTTPS with the verifier's CA, and refuses another CA") {
  test::temp_dir dir;
  const auto pki = test::make_pki(dir);
  auto options = vector_machine();
  options.tls_cert_file = (pki / "server.crt").string();
  options.tls_key_file = (pki / "server.key").string();
  test::veraison_server server(std::move(options));
  REQUIRE(server.base_url().rfind("https://", 0) == 0);
  const auto evidence = read_file(vectors + "parsec-tpm-evidence.cbor");

  client_fixture trusting(server, {.ca_file = (pki / "ca.crt").string()});
  const auto outcome = trusting.appraise(evidence, vector_nonce);
  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);

  client_fixture distrusting(server,
                             {.ca_file = (pki / "rogue-ca.crt").string(), .max_attempts = 1});
  const auto refused = distrusting.appraise(evidence, vector_nonce);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == verify_errc::verifier_unavailable);
}

TEST_CASE("evidence for another nonce is refused before anything is sent to Veraison") {
  // Veraison's parsec-tpm scheme would call it affirming (veraison/services#447).
  test::veraison_server server(vector_machine());
  client_fixture client(server);
  const bytes other_nonce{1, 2, 3, 4, 5, 6, 7, 8};

  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), other_nonce);

  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error() == verify_errc::nonce_mismatch);
  CHECK(server.requests() == 0);
}

TEST_CASE("truncated evidence is refused with the decoder's reason, nothing is sent") {
  test::veraison_server server(vector_machine());
  client_fixture client(server);
  auto evidence = read_file(vectors + "parsec-tpm-evidence.cbor");
  evidence.resize(evidence.size() - 1);

  const auto outcome = client.appraise(evidence, vector_nonce);

  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error() == attest::evidence_errc::truncated);
  CHECK(server.requests() == 0);
}

TEST_CASE("a 500 from Veraison is retried, and the retry succeeds") {
  test::veraison_server server(vector_machine());
  server.faults().fail_with_500 = 1;
  client_fixture client(server);

  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
  CHECK(server.faults().fail_with_500 == 0);
}

TEST_CASE("Veraison answering 500 to everything fails closed after the configured attempts") {
  test::veraison_server server(vector_machine());
  server.faults().fail_with_500 = 1000;
  client_fixture client(server, {.max_attempts = 3});

  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error() == verify_errc::verifier_unavailable);
  CHECK(server.requests() == 3);  // one newSession per attempt, nothing more
}

TEST_CASE("a dropped connection is retried on a new connection") {
  test::veraison_server server(vector_machine());
  server.faults().drop_connection = 1;
  client_fixture client(server);

  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
  CHECK(server.connections() >= 2);
}

TEST_CASE("a verifier slower than the request timeout fails closed, in bounded time") {
  test::veraison_server server(vector_machine());
  server.faults().delay_ms = 3000;
  client_fixture client(server, {.request_timeout = 200ms, .max_attempts = 2});

  const auto started = std::chrono::steady_clock::now();
  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);
  const auto took = std::chrono::steady_clock::now() - started;

  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error() == verify_errc::verifier_unavailable);
  CHECK(took < 2500ms);
}

TEST_CASE("when the first verifier URL is down the next one answers") {
  test::veraison_server down(vector_machine());
  down.faults().fail_with_500 = 1000;
  test::veraison_server up(vector_machine());
  auto key = parse_jwk(up.ear_key_jwk());
  REQUIRE(key.has_value());
  client_fixture client(up, {.base_urls = {down.base_url(), up.base_url()}, .ear_key = *key});

  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
  CHECK(down.requests() == 1);
}

TEST_CASE("a refused connection fails over to the next URL without waiting") {
  // A port that was just open and is now closed.
  std::string closed_url;
  {
    test::veraison_server gone(vector_machine());
    closed_url = gone.base_url();
  }
  test::veraison_server up(vector_machine());
  auto key = parse_jwk(up.ear_key_jwk());
  REQUIRE(key.has_value());
  client_fixture client(up, {.base_urls = {closed_url, up.base_url()}, .ear_key = *key});

  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
}

TEST_CASE("an EAR signed by a key other than the pinned one is refused and not retried") {
  test::veraison_server server(vector_machine());
  server.faults().sign_with_wrong_key = true;
  client_fixture client(server);

  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error() == verify_errc::bad_signature);
  server.wait_for_requests(3);
  CHECK(server.requests() == 3);  // newSession, evidence, delete: one attempt only
}

TEST_CASE("an expired EAR verifies but the appraisal policy refuses it") {
  test::veraison_server server(vector_machine());
  server.faults().expired_ear = true;
  client_fixture client(server);

  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE(outcome.has_value());
  const auto accepted = check(appraisal_policy{.max_age = 300s}, *outcome, clock::now());
  REQUIRE_FALSE(accepted.has_value());
  CHECK((accepted.error() == verify_errc::result_too_old ||
         accepted.error() == verify_errc::result_expired));
}

TEST_CASE("a session still processing is polled until its EAR is ready") {
  test::veraison_server server(vector_machine());
  server.faults().answer_processing = 1;
  client_fixture client(server, {.poll_interval = 20ms});

  const auto outcome =
      client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
  CHECK(server.wait_for_requests(4));  // newSession, evidence (202), at least one GET, delete
}

TEST_CASE("an evidence media type Veraison does not accept is a rejection, not retried") {
  test::veraison_server server(vector_machine());
  client_fixture client(server);

  const auto outcome = client.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"),
                                       vector_nonce, "application/vnd.example.unknown");

  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error() == verify_errc::verifier_rejected);
  server.wait_for_requests(3);
  CHECK(server.requests() == 3);  // newSession, evidence (415), delete
}

TEST_CASE("connections to Veraison are kept alive and reused across appraisals") {
  test::veraison_server server(vector_machine());
  client_fixture client(server);
  const auto evidence = read_file(vectors + "parsec-tpm-evidence.cbor");

  for (std::size_t i = 0; i < 3; ++i) {
    const auto outcome = client.appraise(evidence, vector_nonce);
    REQUIRE(outcome.has_value());
    REQUIRE(server.wait_for_requests(3 * (i + 1)));
  }

  // Nine requests, not nine connections. The session's delete follows the result, so the next
  // appraisal may find the one connection still busy with it and open a second.
  CHECK(server.connections() <= 2);
  CHECK(server.requests() == 9);
}

TEST_CASE("a Veraison behind bearer-token auth lets in the configured token and no other") {
  auto options = vector_machine();
  options.bearer_token = "s3cr3t-token";
  test::veraison_server server(std::move(options));
  const auto evidence = read_file(vectors + "parsec-tpm-evidence.cbor");

  client_fixture with_token(server, {.bearer_token = "s3cr3t-token"});
  const auto admitted = with_token.appraise(evidence, vector_nonce);
  REQUIRE(admitted.has_value());
  CHECK(admitted->status == ear_status::affirming);
  CHECK(server.unauthorized() == 0);

  client_fixture wrong_token(server, {.bearer_token = "s3cr3t-tokem"});
  const auto refused = wrong_token.appraise(evidence, vector_nonce);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == verify_errc::verifier_rejected);
  CHECK(server.unauthorized() == 1);  // a 401 is an answer, not an outage: no retry

  client_fixture no_token(server);
  CHECK_FALSE(no_token.appraise(evidence, vector_nonce).has_value());
  CHECK(server.unauthorized() == 2);
}

TEST_CASE("without a pinned key the client uses the published one only when told to") {
  test::veraison_server server(vector_machine());
  const auto evidence = read_file(vectors + "parsec-tpm-evidence.cbor");

  asio::io_context io;
  const auto refused =
      veraison_client::create(io.get_executor(), {.base_urls = {server.base_url()}});
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == verify_errc::no_verification_key);

  client_fixture client(server, {.trust_discovered_key = true});
  const auto outcome = client.appraise(evidence, vector_nonce);
  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
}

TEST_CASE("discovery says whether the published EAR key is the pinned one") {
  test::veraison_server server(vector_machine());
  auto vector_key = parse_jwk(std::string([] {
    const auto text = read_file(vectors + "ear-verification-key.jwk.json");
    return std::string(text.begin(), text.end());
  }()));
  REQUIRE(vector_key.has_value());
  client_fixture pinned_elsewhere(server, {.ear_key = *vector_key});
  auto client = pinned_elsewhere.make_client();

  const auto found = run<result<veraison_client::discovery>>([&] { return client->discover(); });

  REQUIRE(found.has_value());
  CHECK(found->service_state == "READY");
  CHECK_FALSE(found->ear_key_matches_pinned);
  CHECK(std::find(found->media_types.begin(), found->media_types.end(), parsec) !=
        found->media_types.end());
}

TEST_CASE("bad client options are refused at creation") {
  asio::io_context io;
  const auto ex = io.get_executor();
  auto key = parse_jwk(std::string(R"({"kty":"EC","crv":"P-256",)"
                                   R"("x":"usWxHK2PmfnHKwXPS54m0kTcGJ90UiglWiGahtagnv8",)"
                                   R"("y":"IBOL-C3BttVivg-lSreASjpkttcsz-1rb7btKLv8EX4"})"));
  REQUIRE(key.has_value());
  CHECK_FALSE(veraison_client::create(ex, {.ear_key = *key}).has_value());
  CHECK_FALSE(
      veraison_client::create(ex, {.base_urls = {"ftp://v.example"}, .ear_key = *key}).has_value());
  CHECK_FALSE(
      veraison_client::create(ex, {.base_urls = {"not a url"}, .ear_key = *key}).has_value());
  CHECK_FALSE(veraison_client::create(ex, {.base_urls = {"https://v.example"},
                                           .ear_key = *key,
                                           .ca_file = "/nonexistent/ca.pem"})
                  .has_value());
}

// A real TPM's evidence over a nonce Veraison minted: the background-check flow.
TEST_CASE("a nonce from challenge() binds TPM evidence that Veraison then appraises") {
  test::temp_dir dir;
  test::swtpm simulator(dir);
  auto device = std::make_shared<attest::tpm>(attest::tpm_options{.tcti = simulator.tcti()});
  const auto provisioned = device->provision();
  REQUIRE(provisioned.has_value());
  auto attester = attest::tpm_attester::open(
      device, attest::pcr_selection{.hash_alg = 0x000B, .pcrs = {0, 1, 2, 3, 4, 5, 6, 7}});
  REQUIRE(attester.has_value());

  // The instance id comes from the evidence itself; collect once to learn it.
  auto collect = [&](const bytes& nonce) {
    return run<result<attest::evidence_bundle>>([&] { return (*attester)->evidence(nonce); });
  };
  const auto probe = collect(bytes(32, 7));
  REQUIRE(probe.has_value());
  test::veraison_server server(
      {.trust_anchors = {{instance_id(probe->data), provisioned->keys.ak.spki_der}},
       .reference = zero_pcrs({0, 1, 2, 3, 4, 5, 6, 7})});
  client_fixture fixture(server);
  auto client = fixture.make_client();

  const auto nonce = run<result<bytes>>([&] { return client->challenge(32); });
  REQUIRE(nonce.has_value());
  CHECK(nonce->size() == 32);
  CHECK(server.open_sessions() == 1);
  const auto evidence = collect(*nonce);
  REQUIRE(evidence.has_value());

  const auto outcome = run<result<attestation_result>>(
      [&] { return client->appraise(evidence->data, evidence->media_type, *nonce); });

  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
  CHECK(outcome->attested_key == (*attester)->tls_public_key());
  CHECK(server.wait_for_no_open_session());
  CHECK(server.requests() == 3);  // newSession (challenge), evidence, delete: session reused
}

TEST_CASE("a session prepared while the evidence is produced leaves one request on the path") {
  test::veraison_server server(vector_machine());
  client_fixture fixture(server);
  auto client = fixture.make_client();
  const auto evidence = read_file(vectors + "parsec-tpm-evidence.cbor");

  client->prepare(vector_nonce);
  REQUIRE(server.wait_for_requests(1));  // newSession, in the background
  CHECK(server.open_sessions() == 1);
  // Every answer now takes a second: an appraisal that still had to open its session, or that
  // waited for the delete, would take two.
  server.faults().delay_ms = 1000;
  const auto started = std::chrono::steady_clock::now();
  const auto outcome = fixture.appraise(evidence, vector_nonce);
  const auto took = std::chrono::steady_clock::now() - started;

  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
  CHECK(took < 2s);
  CHECK(server.wait_for_no_open_session());
  CHECK(server.requests() == 3);  // newSession (prepared), evidence, delete
}

TEST_CASE("an appraisal that arrives while its session is being prepared waits for that session") {
  test::veraison_server server(vector_machine());
  server.faults().delay_ms = 200;  // the prepared newSession is still on its way
  client_fixture fixture(server);
  auto client = fixture.make_client();

  client->prepare(vector_nonce);
  const auto outcome =
      fixture.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE(outcome.has_value());
  CHECK(outcome->status == ear_status::affirming);
  CHECK(server.wait_for_no_open_session());
  CHECK(server.requests() == 3);  // one newSession, not two
}

TEST_CASE("a client that goes away stops its background work even while the verifier hangs") {
  test::veraison_server server(vector_machine());
  server.faults().delay_ms = 60'000;
  auto key = parse_jwk(server.ear_key_jwk());
  REQUIRE(key.has_value());
  asio::io_context io;  // no work guard: run() returns once nothing is left to do
  auto created = veraison_client::create(
      io.get_executor(),
      {.base_urls = {server.base_url()}, .ear_key = *key, .request_timeout = 30s});
  REQUIRE(created.has_value());
  auto client = std::move(*created);  // the only reference
  client->prepare(vector_nonce);
  std::thread runner([&] { io.run(); });
  REQUIRE(server.wait_for_requests(1));  // the newSession, which the verifier sits on

  const auto started = std::chrono::steady_clock::now();
  client.reset();
  runner.join();
  // Not the 30 s of the request timeout: a daemon with a hung verifier still exits promptly.
  CHECK(std::chrono::steady_clock::now() - started < 5s);
}

TEST_CASE("a prepared session nobody appraises with does not disturb another nonce's appraisal") {
  test::veraison_server server(vector_machine());
  client_fixture fixture(server);
  auto client = fixture.make_client();

  client->prepare(bytes(32, 0x5A));
  REQUIRE(server.wait_for_requests(1));
  const auto outcome =
      fixture.appraise(read_file(vectors + "parsec-tpm-evidence.cbor"), vector_nonce);

  REQUIRE(outcome.has_value());
  CHECK(outcome->nonce == vector_nonce);
  server.wait_for_requests(4);
  CHECK(server.requests() == 4);       // the prepared newSession, then a session of its own
  CHECK(server.open_sessions() == 1);  // the unused one is left to expire on the server
}

TEST_CASE("a session the verifier opens for another nonce is refused, and deleted") {
  test::veraison_server server(vector_machine());
  server.faults().mint_other_nonce = true;
  client_fixture fixture(server);
  auto client = fixture.make_client();
  const auto evidence = read_file(vectors + "parsec-tpm-evidence.cbor");

  std::size_t sessions_opened = 1;
  SUBCASE("opened by the appraisal") {}
  SUBCASE("prepared ahead") {
    client->prepare(vector_nonce);
    REQUIRE(server.wait_for_requests(2));  // newSession, then its delete
    sessions_opened = 2;                   // and the appraisal tries again on its own
  }
  const auto outcome = fixture.appraise(evidence, vector_nonce);

  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error() == verify_errc::bad_response);
  CHECK(server.wait_for_no_open_session());  // no session of the wrong nonce is left behind
  // Each session opened and deleted, and the evidence never sent to one of them.
  CHECK(server.requests() == 2 * sessions_opened);
}

}  // namespace
}  // namespace atls::verify
