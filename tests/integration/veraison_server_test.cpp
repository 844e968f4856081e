// The Veraison-API test server against a plain Boost.Beast client written here: the server must
// answer as veraison/services does (verification/api), since the Veraison client's tests trust it.
#include "support/veraison_server.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
// gcc 12 at -O2 with the sanitizers reports a boost::optional in Beast's response parser as
// maybe uninitialized when the synchronous http::read inlines it: a false positive inside Beast.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/beast/http.hpp>
#pragma GCC diagnostic pop
#include <boost/json.hpp>
#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "atls/attest/evidence.hpp"
#include "atls/verify/ear.hpp"
#include "atls/verify/error.hpp"
#include "atls/verify/jose.hpp"

#include "support/daemon.hpp"
#include "support/temp_dir.hpp"
#include <sys/socket.h>
#include <sys/time.h>

namespace atls::test {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using verify::bytes;
using namespace std::chrono_literals;

constexpr std::string_view session_type =
    "application/vnd.veraison.challenge-response-session+json";
constexpr std::string_view discovery_type = "application/vnd.veraison.discovery+json";
constexpr std::string_view problem_type = "application/problem+json";
constexpr std::string_view parsec_type = "application/vnd.parallaxsecond.key-attestation.tpm";
constexpr std::string_view new_session_target = "/challenge-response/v1/newSession";
constexpr std::string_view discovery_target = "/.well-known/veraison/verification";
// base64(kid) of the Veraison vector: the instance its AK is provisioned for.
constexpr std::string_view vector_instance = "AYiFVFnuuemzSkbrSMs58vaqadoEUioybRI9XFAfziEM";

std::string vector_path(std::string_view name) {
  return std::string(ATLS_SOURCE_DIR "/../shared/vectors/") + std::string(name);
}

bytes to_bytes(std::string_view s) {
  return {s.begin(), s.end()};
}

bytes vector_evidence() {
  return to_bytes(read_file(vector_path("parsec-tpm-evidence.cbor")));
}

// The AK of the vector as DER SPKI.
bytes vector_ak() {
  const std::string pem = read_file(vector_path("ak-pub.pem"));
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  REQUIRE(key);
  unsigned char* der = nullptr;
  const int size = i2d_PUBKEY(key.get(), &der);
  REQUIRE(size > 0);
  bytes out(der, der + size);
  OPENSSL_free(der);
  return out;
}

// The vector's endorsements: its AK for its instance, and all-zero SHA-256 PCRs 0, 1 and 2.
veraison_server_options vector_options() {
  veraison_server_options options;
  options.trust_anchors.emplace(std::string(vector_instance), vector_ak());
  verify::pcr_values reference;
  for (const std::uint8_t pcr : {0, 1, 2}) {
    reference.values.emplace(pcr, bytes(32, 0));
  }
  options.reference = reference;
  return options;
}

bytes random_nonce(std::size_t size) {
  bytes out(size);
  REQUIRE(RAND_bytes(out.data(), static_cast<int>(out.size())) == 1);
  return out;
}

std::string base64(std::span<const std::uint8_t> data, bool url, bool padded) {
  static constexpr std::string_view std_alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  static constexpr std::string_view url_alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const auto alphabet = url ? url_alphabet : std_alphabet;
  std::string out;
  std::uint32_t acc = 0;
  unsigned bits = 0;
  for (const auto b : data) {
    acc = (acc << 8U) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += alphabet[(acc >> bits) & 63U];
    }
  }
  if (bits > 0) {
    out += alphabet[(acc << (6 - bits)) & 63U];
  }
  while (padded && out.size() % 4 != 0) {
    out += '=';
  }
  return out;
}

// "session/" and a UUID in canonical lower-case form.
bool is_relative_session_location(std::string_view location) {
  constexpr std::string_view prefix = "session/";
  if (!location.starts_with(prefix) || location.size() != prefix.size() + 36) {
    return false;
  }
  location.remove_prefix(prefix.size());
  for (std::size_t i = 0; i < location.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    const char c = location[i];
    if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

// YYYY-MM-DDTHH:MM:SS[.fraction]Z
bool is_rfc3339_utc(std::string_view text) {
  constexpr std::string_view shape = "dddd-dd-ddTdd:dd:dd";
  if (text.size() < shape.size() + 1 || text.back() != 'Z') {
    return false;
  }
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 'd' ? !(text[i] >= '0' && text[i] <= '9') : text[i] != shape[i]) {
      return false;
    }
  }
  const auto fraction = text.substr(shape.size(), text.size() - shape.size() - 1);
  if (fraction.empty()) {
    return true;
  }
  return fraction.size() >= 2 && fraction.front() == '.' &&
         std::all_of(fraction.begin() + 1, fraction.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

// ---------------------------------------------------------------------------------------------
// A blocking HTTP/1.1 client over one connection, HTTP or HTTPS, with socket timeouts so that a
// server that never answers fails the test instead of hanging it.

struct reply {
  unsigned status = 0;
  http::fields headers;
  std::string body;
  bool keep_alive = false;

  [[nodiscard]] std::string header(http::field f) const { return std::string(headers[f]); }
  [[nodiscard]] json::object object() const { return json::parse(body).as_object(); }
};

struct header_list {
  std::vector<std::pair<http::field, std::string>> fields;
};

class http_client {
 public:
  explicit http_client(const veraison_server& server, const std::string& ca_file = {}) {
    const std::string url = server.base_url();
    const auto port = static_cast<std::uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
    tcp::socket socket(io_);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    const timeval timeout{.tv_sec = 10, .tv_usec = 0};
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (!url.starts_with("https://")) {
      plain_.emplace(std::move(socket));
      return;
    }
    tls_context_.emplace(asio::ssl::context::tls_client);
    tls_context_->load_verify_file(ca_file);
    tls_context_->set_verify_mode(asio::ssl::verify_peer);
    tls_context_->set_verify_callback(asio::ssl::host_name_verification("127.0.0.1"));
    tls_.emplace(std::move(socket), *tls_context_);
  }

  // Throws boost::system::system_error when the handshake fails.
  void handshake() { tls_->handshake(asio::ssl::stream_base::client); }

  reply request(http::verb method, std::string_view target, const header_list& headers = {},
                std::string body = {}) {
    if (tls_ && !handshaken_) {
      handshake();
      handshaken_ = true;
    }
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [field, value] : headers.fields) {
      req.set(field, value);
    }
    req.body() = std::move(body);
    req.prepare_payload();
    http::response_parser<http::string_body> parser;
    parser.body_limit(std::uint64_t{1024} * 1024);
    if (tls_) {
      http::write(*tls_, req);
      http::read(*tls_, buffer_, parser);
    } else {
      http::write(*plain_, req);
      http::read(*plain_, buffer_, parser);
    }
    auto res = parser.release();
    reply out;
    out.status = res.result_int();
    out.keep_alive = res.keep_alive();
    for (const auto& field : res.base()) {
      out.headers.insert(field.name_string(), field.value());
    }
    out.body = std::move(res.body());
    return out;
  }

  // Sends raw bytes (a partial request, say) without reading.
  void send_raw(std::string_view data) { asio::write(*plain_, asio::buffer(data)); }

  // True when the server closed the connection with nothing more to say.
  bool closed_by_server() {
    std::array<char, 64> scratch{};
    boost::system::error_code ec;
    std::size_t n = 0;
    if (tls_) {
      n = tls_->read_some(asio::buffer(scratch), ec);
    } else {
      n = plain_->read_some(asio::buffer(scratch), ec);
    }
    return n == 0 && (ec == asio::error::eof || ec == asio::error::connection_reset ||
                      ec == asio::ssl::error::stream_truncated);
  }

 private:
  asio::io_context io_;
  std::optional<asio::ssl::context> tls_context_;
  std::optional<tcp::socket> plain_;
  std::optional<asio::ssl::stream<tcp::socket>> tls_;
  bool handshaken_ = false;
  boost::beast::flat_buffer buffer_;
};

header_list accept_session() {
  return {{{http::field::accept, std::string(session_type)}}};
}

reply new_session(http_client& client, std::string_view query = {}) {
  std::string target(new_session_target);
  if (!query.empty()) {
    target += '?';
    target += query;
  }
  return client.request(http::verb::post, target, accept_session());
}

// Where a 201 says the session lives: the Location resolved against the newSession URL.
std::string session_target(const reply& created) {
  return "/challenge-response/v1/" + created.header(http::field::location);
}

reply post_evidence(http_client& client, const std::string& target, const bytes& evidence,
                    std::string_view media_type = parsec_type) {
  return client.request(http::verb::post, target,
                        {{{http::field::accept, std::string(session_type)},
                          {http::field::content_type, std::string(media_type)}}},
                        std::string(evidence.begin(), evidence.end()));
}

bytes session_nonce(const reply& r) {
  const auto decoded = verify::base64url_decode(r.object().at("nonce").as_string());
  REQUIRE(decoded.has_value());
  return *decoded;
}

// The claims of a JWT, undecoded by the library under test, to look at exactly what was sent.
json::object jwt_claims(std::string_view token) {
  const auto first = token.find('.');
  const auto second = token.find('.', first + 1);
  REQUIRE(second != std::string_view::npos);
  const auto payload = verify::base64url_decode(token.substr(first + 1, second - first - 1));
  REQUIRE(payload.has_value());
  return json::parse(
             std::string_view(reinterpret_cast<const char*>(payload->data()), payload->size()))
      .as_object();
}

json::object submodule(const json::object& claims) {
  return claims.at("submods").as_object().at("PARSEC_TPM").as_object();
}

verify::verification_key published_key(const veraison_server& server) {
  auto key = verify::parse_jwk(server.ear_key_jwk(), verify::jws_algorithm::es256);
  REQUIRE(key.has_value());
  return *key;
}

// Posts the vector's evidence to a fresh session and returns the answer.
reply appraise_vector(http_client& client, const bytes& evidence = vector_evidence(),
                      std::string_view query = "nonceSize=32") {
  const auto created = new_session(client, query);
  REQUIRE(created.status == 201);
  return post_evidence(client, session_target(created), evidence);
}

void check_problem(const reply& r, unsigned status) {
  CHECK(r.status == status);
  CHECK(r.header(http::field::content_type) == problem_type);
  const auto body = r.object();
  CHECK(body.at("type").as_string() == "about:blank");
  CHECK(body.at("status").as_int64() == status);
  CHECK_FALSE(body.at("title").as_string().empty());
  CHECK_FALSE(body.at("detail").as_string().empty());
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("Veraison test server: discovery publishes the EAR key, its media type and endpoints") {
  veraison_server server(vector_options());
  http_client client(server);
  const auto r = client.request(http::verb::get, discovery_target,
                                {{{http::field::accept, std::string(discovery_type)}}});
  REQUIRE(r.status == 200);
  CHECK(r.header(http::field::content_type) == discovery_type);
  CHECK(r.header(http::field::cache_control) == "max-age=60");
  const auto body = r.object();
  CHECK(body.at("ear-verification-key") == json::parse(server.ear_key_jwk()));
  CHECK(body.at("ear-verification-key").as_object().at("alg").as_string() == "ES256");
  CHECK_FALSE(body.at("ear-verification-key").as_object().contains("d"));
  CHECK(body.at("media-types") == json::array{json::string(parsec_type)});
  CHECK(body.at("service-state").as_string() == "READY");
  CHECK_FALSE(body.at("version").as_string().empty());
  CHECK(body.at("api-endpoints").as_object().at("newChallengeResponseSession").as_string() ==
        new_session_target);
  // Veraison leaves the schemes out of its discovery document.
  CHECK_FALSE(body.contains("attestation-schemes"));
  CHECK(published_key(server).algorithm == verify::jws_algorithm::es256);

  // Without Accept it answers too; Accept: application/json gets 406, as from gin.
  CHECK(client.request(http::verb::get, discovery_target).status == 200);
  check_problem(client.request(http::verb::get, discovery_target,
                               {{{http::field::accept, "application/json"}}}),
                406);
}

TEST_CASE(
    "Veraison test server: a session opened with a nonce returns it as unpadded base64url "
    "with a relative Location") {
  veraison_server server(vector_options());
  http_client client(server);
  const auto nonce = random_nonce(32);
  // Veraison takes the nonce parameter as base64url, padded or not.
  for (const bool padded : {true, false}) {
    CAPTURE(padded);
    const auto r = new_session(client, "nonce=" + base64(nonce, true, padded));
    REQUIRE(r.status == 201);
    CHECK(r.header(http::field::content_type) == session_type);
    CHECK(is_relative_session_location(r.header(http::field::location)));
    const auto body = r.object();
    CHECK(body.at("status").as_string() == "waiting");
    CHECK(body.at("nonce").as_string() == base64(nonce, true, false));
    CHECK(body.at("accept") == json::array{json::string(parsec_type)});
    CHECK_FALSE(body.contains("evidence"));
    CHECK_FALSE(body.contains("result"));
    CHECK(is_rfc3339_utc(body.at("expiry").as_string()));
    // The Location leads to the session.
    const auto got = client.request(http::verb::get, session_target(r), accept_session());
    CHECK(got.status == 200);
    CHECK(got.object() == body);
  }
  CHECK(server.open_sessions() == 2);
}

TEST_CASE(
    "Veraison test server: nonceSize mints a nonce of that size, and no parameter mints 32 "
    "bytes") {
  veraison_server server(vector_options());
  http_client client(server);
  for (const std::size_t size : {8, 33, 64}) {
    CAPTURE(size);
    const auto r = new_session(client, "nonceSize=" + std::to_string(size));
    REQUIRE(r.status == 201);
    CHECK(session_nonce(r).size() == size);
  }
  const auto r = new_session(client);
  REQUIRE(r.status == 201);
  CHECK(session_nonce(r).size() == 32);
  CHECK(session_nonce(r) != session_nonce(new_session(client)));
}

TEST_CASE(
    "Veraison test server: newSession refuses both parameters, sizes outside 8..64 and "
    "nonces that are not base64url") {
  veraison_server server(vector_options());
  http_client client(server);
  const auto eight = base64(random_nonce(8), true, false);
  check_problem(new_session(client, "nonce=" + eight + "&nonceSize=8"), 400);
  for (const std::string size : {"7", "65", "0", "256", "-8", "8.5", "abc", "%208"}) {
    CAPTURE(size);
    check_problem(new_session(client, "nonceSize=" + size), 400);
  }
  // 0xFB 0xFF 0xBF is "+/+/" in the standard alphabet, which Veraison's decoder refuses.
  const bytes std_only = {0xFB, 0xFF, 0xBF, 0xFB, 0xFF, 0xBF, 0xFB, 0xFF, 0xBF};
  for (const std::string& nonce : std::vector<std::string>{
           base64(random_nonce(7), true, false), base64(random_nonce(65), true, false),
           "!!!!!!!!!!!!", "%2B%2F%2B%2F%2B%2F%2B%2F%2B%2F%2B%2F",
           base64(std_only, true, false) + "="}) {
    CAPTURE(nonce);
    check_problem(new_session(client, "nonce=" + nonce), 400);
  }
  CHECK(base64(std_only, false, false) == "+/+/+/+/+/+/");
  CHECK(new_session(client, "nonce=" + base64(std_only, true, false)).status == 201);
  CHECK(server.open_sessions() == 1);
}

TEST_CASE(
    "Veraison test server: the Veraison Parsec TPM vector appraises to an affirming EAR "
    "signed with the published key") {
  veraison_server server(vector_options());
  http_client client(server);
  const auto evidence = vector_evidence();
  const auto created = new_session(client, "nonceSize=32");
  REQUIRE(created.status == 201);
  const auto nonce = session_nonce(created);
  const auto r = post_evidence(client, session_target(created), evidence);
  REQUIRE(r.status == 200);
  CHECK(r.header(http::field::content_type) == session_type);
  const auto body = r.object();
  CHECK(body.at("status").as_string() == "complete");
  CHECK(body.at("evidence").as_object().at("type").as_string() == parsec_type);
  CHECK(body.at("evidence").as_object().at("value").as_string() == base64(evidence, false, true));
  const std::string ear(body.at("result").as_string());

  const auto verified = verify::verify_ear(ear, published_key(server));
  REQUIRE(verified.has_value());
  CHECK(verified->status == verify::ear_status::affirming);
  CHECK(verified->trust[verify::trust_claim::instance_identity] == verify::trustworthy_instance);
  CHECK(verified->trust[verify::trust_claim::hardware] == verify::genuine_hardware);
  CHECK(verified->trust[verify::trust_claim::executables] == verify::approved_runtime);
  const auto decoded = attest::decode(evidence);
  REQUIRE(decoded.has_value());
  const auto tls_key = attest::spki_der(decoded->pub_area);
  REQUIRE(tls_key.has_value());
  CHECK(verified->attested_key == *tls_key);
  CHECK(verified->nonce == nonce);
  REQUIRE(verified->submodules.size() == 1);
  CHECK(verified->submodules[0].name == "PARSEC_TPM");
  CHECK(verified->submodules[0].policy_id == "policy:PARSEC_TPM");
  CHECK(verified->verifier.developer == "Veraison Project");

  // On the wire, as veraison/ear writes it: every trust claim, padded base64url eat_nonce,
  // unpadded base64url akpub.
  const auto claims = jwt_claims(ear);
  CHECK(claims.at("eat_profile").as_string() == verify::ear_profile);
  CHECK(claims.at("eat_nonce").as_string() == base64(nonce, true, true));
  CHECK_FALSE(claims.contains("exp"));
  const auto sub = submodule(claims);
  CHECK(sub.at("ear.status").as_string() == "affirming");
  CHECK(sub.at("ear.trustworthiness-vector").as_object().size() == 8);
  CHECK(sub.at("ear.veraison.key-attestation").as_object().at("akpub").as_string() ==
        base64(*tls_key, true, false));
  CHECK(sub.at("ear.veraison.annotated-evidence").as_object().contains("kat"));

  // The session keeps the result.
  const auto got = client.request(http::verb::get, session_target(created), accept_session());
  REQUIRE(got.status == 200);
  CHECK(got.object() == body);
}

TEST_CASE(
    "Veraison test server: evidence without a trust anchor gets a contraindicated EAR, not "
    "an HTTP error") {
  auto options = vector_options();
  options.trust_anchors.clear();
  options.trust_anchors.emplace("AAAA", vector_ak());
  veraison_server server(std::move(options));
  http_client client(server);
  const auto r = appraise_vector(client);
  REQUIRE(r.status == 200);
  CHECK(r.object().at("status").as_string() == "complete");
  const std::string ear(r.object().at("result").as_string());
  const auto verified = verify::verify_ear(ear, published_key(server));
  REQUIRE(verified.has_value());
  CHECK(verified->status == verify::ear_status::contraindicated);
  CHECK_FALSE(verified->attested_key.has_value());
  const auto sub = submodule(jwt_claims(ear));
  for (const auto& claim : sub.at("ear.trustworthiness-vector").as_object()) {
    const std::string_view name = claim.key();
    CAPTURE(name);
    CHECK(claim.value().as_int64() == 99);
  }
  CHECK(sub.at("ear.veraison.policy-claims").as_object().at("problem").as_string() ==
        "no trust anchor for evidence");
}

TEST_CASE(
    "Veraison test server: a bad signature and undecodable evidence are contraindicated, "
    "unknown PCR values give status none") {
  SUBCASE("a bad signature") {
    veraison_server server(vector_options());
    http_client client(server);
    auto decoded = attest::decode(vector_evidence());
    REQUIRE(decoded.has_value());
    decoded->pat_sig.back() ^= 0x01U;
    const auto r = appraise_vector(client, attest::encode(*decoded));
    REQUIRE(r.status == 200);
    const std::string ear(r.object().at("result").as_string());
    const auto verified = verify::verify_ear(ear, published_key(server));
    REQUIRE(verified.has_value());
    CHECK(verified->status == verify::ear_status::contraindicated);
    const auto problem = std::string(
        submodule(jwt_claims(ear)).at("ear.veraison.policy-claims").at("problem").as_string());
    CHECK(problem.starts_with("integrity validation failed"));
  }
  SUBCASE("bytes that are not Parsec TPM evidence") {
    veraison_server server(vector_options());
    http_client client(server);
    const auto r = appraise_vector(client, to_bytes("not CBOR at all"));
    REQUIRE(r.status == 200);
    const std::string ear(r.object().at("result").as_string());
    const auto verified = verify::verify_ear(ear, published_key(server));
    REQUIRE(verified.has_value());
    CHECK(verified->status == verify::ear_status::contraindicated);
    CHECK(submodule(jwt_claims(ear)).at("ear.veraison.policy-claims").at("problem").as_string() ==
          "could not establish identity from evidence");
  }
  SUBCASE("PCR values that match no reference") {
    auto options = vector_options();
    auto& reference = std::get<verify::pcr_values>(options.reference);
    reference.values[1] = bytes(32, 0x11);
    veraison_server server(std::move(options));
    http_client client(server);
    const auto r = appraise_vector(client);
    REQUIRE(r.status == 200);
    const std::string ear(r.object().at("result").as_string());
    const auto verified = verify::verify_ear(ear, published_key(server));
    REQUIRE(verified.has_value());
    // Veraison drops the scheme's partial result when the PCRs do not match.
    CHECK(verified->status == verify::ear_status::none);
    CHECK_FALSE(verified->attested_key.has_value());
    const auto sub = submodule(jwt_claims(ear));
    for (const auto& claim : sub.at("ear.trustworthiness-vector").as_object()) {
      const std::string_view name = claim.key();
      CAPTURE(name);
      CHECK(claim.value().as_int64() == 0);
    }
  }
}

TEST_CASE(
    "Veraison test server: like Veraison it ignores the session nonce, unless check_nonce "
    "is set") {
  const bytes challenge = {0xDE, 0xAD, 0xBE, 0xEF, 0xDE, 0xAD, 0xBE, 0xEF};
  SUBCASE("check_nonce off: any session nonce is affirming") {
    veraison_server server(vector_options());
    http_client client(server);
    const auto r = appraise_vector(client, vector_evidence(), "nonceSize=16");
    REQUIRE(r.status == 200);
    const auto verified =
        verify::verify_ear(r.object().at("result").as_string(), published_key(server));
    REQUIRE(verified.has_value());
    CHECK(verified->status == verify::ear_status::affirming);
  }
  SUBCASE("check_nonce on") {
    auto options = vector_options();
    options.check_nonce = true;
    veraison_server server(std::move(options));
    http_client client(server);
    const auto wrong = appraise_vector(client, vector_evidence(), "nonceSize=8");
    REQUIRE(wrong.status == 200);
    const auto refused =
        verify::verify_ear(wrong.object().at("result").as_string(), published_key(server));
    REQUIRE(refused.has_value());
    CHECK(refused->status == verify::ear_status::contraindicated);

    const auto right =
        appraise_vector(client, vector_evidence(), "nonce=" + base64(challenge, true, false));
    REQUIRE(right.status == 200);
    const auto accepted =
        verify::verify_ear(right.object().at("result").as_string(), published_key(server));
    REQUIRE(accepted.has_value());
    CHECK(accepted->status == verify::ear_status::affirming);
  }
}

TEST_CASE(
    "Veraison test server: Accept application/json gets 406, other evidence media types "
    "415") {
  veraison_server server(vector_options());
  http_client client(server);
  const header_list json_accept{{{http::field::accept, "application/json"}}};
  check_problem(client.request(http::verb::post, new_session_target, json_accept), 406);
  for (const std::string& accept :
       std::vector<std::string>{"*/*", "application/*", std::string(session_type) + "; q=0.9",
                                "text/html, " + std::string(session_type)}) {
    CAPTURE(accept);
    CHECK(client.request(http::verb::post, new_session_target, {{{http::field::accept, accept}}})
              .status == 201);
  }
  CHECK(client.request(http::verb::post, new_session_target).status == 201);

  const auto created = new_session(client);
  REQUIRE(created.status == 201);
  const auto target = session_target(created);
  const auto evidence = vector_evidence();
  check_problem(client.request(http::verb::get, target, json_accept), 406);
  check_problem(client.request(http::verb::post, target,
                               {{{http::field::accept, "application/json"},
                                 {http::field::content_type, std::string(parsec_type)}}},
                               std::string(evidence.begin(), evidence.end())),
                406);
  const auto unsupported = post_evidence(client, target, evidence, "application/json");
  check_problem(unsupported, 415);
  CHECK(unsupported.header(http::field::accept) == parsec_type);
  check_problem(post_evidence(client, target, evidence, "application/eat+cwt; profile=x"), 415);
  // Not a media type at all, or no evidence: 400.
  check_problem(post_evidence(client, target, evidence, ""), 400);
  check_problem(post_evidence(client, target, {}), 400);
  // Veraison normalises the case of the type before comparing.
  CHECK(
      post_evidence(client, target, evidence, "Application/VND.parallaxsecond.key-attestation.tpm")
          .status == 200);
}

TEST_CASE(
    "Veraison test server: unknown sessions are 404, malformed ids 400, other methods 405 "
    "with Allow, other paths 404") {
  veraison_server server(vector_options());
  http_client client(server);
  const std::string unknown = "/challenge-response/v1/session/5c5bd88b-c922-482b-ad9f-097e187b42a1";
  check_problem(client.request(http::verb::get, unknown, accept_session()), 404);
  check_problem(post_evidence(client, unknown, vector_evidence()), 404);
  check_problem(
      client.request(http::verb::get, "/challenge-response/v1/session/1111-2222", accept_session()),
      400);

  const auto put = client.request(http::verb::put, new_session_target, accept_session());
  check_problem(put, 405);
  CHECK(put.header(http::field::allow) == "POST");
  CHECK(client.request(http::verb::get, new_session_target).header(http::field::allow) == "POST");
  CHECK(client.request(http::verb::post, discovery_target).header(http::field::allow) == "GET");
  const auto patch = client.request(http::verb::patch, unknown);
  CHECK(patch.status == 405);
  CHECK(patch.header(http::field::allow) == "GET, POST, DELETE");

  for (const std::string_view path :
       {"/", "/challenge-response/v1/session/", "/challenge-response/v2/newSession",
        "/challenge-response/v1/session/a/b"}) {
    CAPTURE(path);
    CHECK(client.request(http::verb::get, path).status == 404);
  }
  CHECK(server.open_sessions() == 0);
}

TEST_CASE("Veraison test server: DELETE answers 204 and the session is gone") {
  veraison_server server(vector_options());
  http_client client(server);
  const auto created = new_session(client);
  REQUIRE(created.status == 201);
  CHECK(server.open_sessions() == 1);
  const auto deleted = client.request(http::verb::delete_, session_target(created));
  CHECK(deleted.status == 204);
  CHECK(deleted.body.empty());
  CHECK(server.open_sessions() == 0);
  check_problem(client.request(http::verb::get, session_target(created), accept_session()), 404);
  check_problem(post_evidence(client, session_target(created), vector_evidence()), 404);
}

TEST_CASE("Veraison test server: sessions expire after session_lifetime") {
  auto options = vector_options();
  options.session_lifetime = std::chrono::seconds(1);
  veraison_server server(std::move(options));
  http_client client(server);
  const auto created = new_session(client);
  REQUIRE(created.status == 201);
  CHECK(client.request(http::verb::get, session_target(created), accept_session()).status == 200);
  CHECK(server.open_sessions() == 1);
  std::this_thread::sleep_for(1100ms);
  CHECK(server.open_sessions() == 0);
  check_problem(client.request(http::verb::get, session_target(created), accept_session()), 404);
}

TEST_CASE(
    "Veraison test server: one keep-alive connection carries many requests, and Connection: "
    "close ends it") {
  veraison_server server(vector_options());
  http_client client(server);
  for (int i = 0; i < 3; ++i) {
    const auto r = client.request(http::verb::get, discovery_target);
    CHECK(r.status == 200);
    CHECK(r.keep_alive);
  }
  const auto last =
      client.request(http::verb::get, discovery_target, {{{http::field::connection, "close"}}});
  CHECK(last.status == 200);
  CHECK_FALSE(last.keep_alive);
  CHECK(client.closed_by_server());
  CHECK(server.connections() == 1);
  CHECK(server.requests() == 4);
}

TEST_CASE("Veraison test server: fail_with_500 answers the next N requests with 500 problem+json") {
  veraison_server server(vector_options());
  server.faults().fail_with_500 = 2;
  http_client client(server);
  check_problem(client.request(http::verb::get, discovery_target), 500);
  check_problem(new_session(client), 500);
  CHECK(new_session(client).status == 201);
  CHECK(server.faults().fail_with_500 == 0);
  CHECK(server.open_sessions() == 1);
}

TEST_CASE("Veraison test server: drop_connection closes connections without an answer") {
  veraison_server server(vector_options());
  server.faults().drop_connection = 1;
  {
    http_client client(server);
    CHECK_THROWS_AS(client.request(http::verb::get, discovery_target), boost::system::system_error);
  }
  http_client client(server);
  CHECK(client.request(http::verb::get, discovery_target).status == 200);
  CHECK(server.connections() == 2);
  CHECK(server.requests() == 2);
}

TEST_CASE("Veraison test server: delay_ms holds every answer back") {
  veraison_server server(vector_options());
  http_client client(server);
  server.faults().delay_ms = 300;
  const auto start = std::chrono::steady_clock::now();
  CHECK(client.request(http::verb::get, discovery_target).status == 200);
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  server.faults().delay_ms = 0;
  const auto again = std::chrono::steady_clock::now();
  CHECK(client.request(http::verb::get, discovery_target).status == 200);
  CHECK(std::chrono::steady_clock::now() - again < 300ms);
}

TEST_CASE(
    "Veraison test server: answer_processing answers 202 processing, and a later GET shows "
    "the session complete") {
  veraison_server server(vector_options());
  server.faults().answer_processing = 1;
  http_client client(server);
  const auto created = new_session(client);
  REQUIRE(created.status == 201);
  const auto r = post_evidence(client, session_target(created), vector_evidence());
  REQUIRE(r.status == 202);
  CHECK(r.header(http::field::content_type) == session_type);
  CHECK(r.object().at("status").as_string() == "processing");
  CHECK(r.object().contains("evidence"));
  CHECK_FALSE(r.object().contains("result"));

  std::optional<json::object> done;
  for (int i = 0; i < 100 && !done; ++i) {
    const auto got = client.request(http::verb::get, session_target(created), accept_session());
    REQUIRE(got.status == 200);
    const auto body = got.object();
    if (body.at("status").as_string() == "complete") {
      done = body;
    } else {
      CHECK(body.at("status").as_string() == "processing");
      std::this_thread::sleep_for(20ms);
    }
  }
  REQUIRE(done.has_value());
  const auto verified = verify::verify_ear(done->at("result").as_string(), published_key(server));
  REQUIRE(verified.has_value());
  CHECK(verified->status == verify::ear_status::affirming);
  // Only one answer was asked to be asynchronous.
  CHECK(appraise_vector(client).status == 200);
}

TEST_CASE("Veraison test server: sign_with_wrong_key makes EARs that fail with the published key") {
  veraison_server server(vector_options());
  server.faults().sign_with_wrong_key = true;
  http_client client(server);
  const auto r = appraise_vector(client);
  REQUIRE(r.status == 200);
  const auto verified =
      verify::verify_ear(r.object().at("result").as_string(), published_key(server));
  REQUIRE_FALSE(verified.has_value());
  CHECK(verified.error() == verify::verify_errc::bad_signature);
}

TEST_CASE("Veraison test server: expired_ear issues EARs an hour old whose exp has passed") {
  veraison_server server(vector_options());
  server.faults().expired_ear = true;
  http_client client(server);
  const auto r = appraise_vector(client);
  REQUIRE(r.status == 200);
  const auto verified =
      verify::verify_ear(r.object().at("result").as_string(), published_key(server));
  REQUIRE(verified.has_value());
  const auto now = verify::clock::now();
  CHECK(verified->issued_at <= now - 59min);
  REQUIRE(verified->expires_at.has_value());
  CHECK(*verified->expires_at < now);
}

TEST_CASE("Veraison test server: HTTPS with a certificate from the test CA") {
  const temp_dir dir;
  const auto p = make_pki(dir);
  auto options = vector_options();
  options.tls_cert_file = (p / "server.crt").string();
  options.tls_key_file = (p / "server.key").string();
  veraison_server server(std::move(options));
  REQUIRE(server.base_url().starts_with("https://127.0.0.1:"));

  http_client client(server, (p / "ca.crt").string());
  CHECK(client.request(http::verb::get, discovery_target).status == 200);
  const auto r = appraise_vector(client);
  REQUIRE(r.status == 200);
  CHECK(verify::verify_ear(r.object().at("result").as_string(), published_key(server)).has_value());
  CHECK(server.connections() == 1);

  // A client that trusts another CA does not get through.
  http_client stranger(server, (p / "rogue-ca.crt").string());
  CHECK_THROWS_AS(stranger.handshake(), boost::system::system_error);
}

TEST_CASE("Veraison test server: stops promptly with a client connection still open") {
  auto server = std::make_unique<veraison_server>(vector_options());
  http_client idle(*server);
  CHECK(idle.request(http::verb::get, discovery_target).status == 200);
  http_client partial(*server);
  partial.send_raw("POST /challenge-response/v1/newSession HTTP/1.1\r\nHost: x\r\n");
  auto created = new_session(idle);
  CHECK(created.status == 201);
  const auto start = std::chrono::steady_clock::now();
  server.reset();
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  CHECK(idle.closed_by_server());
  CHECK(partial.closed_by_server());
}

}  // namespace
}  // namespace atls::test
