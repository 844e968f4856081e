// Reading what a Veraison verifier answers: the session's Location, session and discovery
// documents, problem details. The verifier (or whoever sits on a plain-HTTP path to it) chooses
// these bytes.
#include "../../../lib/verify/detail/veraison_answers.hpp"

#include <string>

#include <doctest/doctest.h>

#include "atls/verify/error.hpp"

namespace atls::verify::detail {
namespace {

base_url verifier(const std::string& text) {
  auto parsed = parse_base_url(text);
  REQUIRE(parsed.has_value());
  return *parsed;
}

http_answer session_answer(std::string body) {
  return {.status = 201,
          .content_type = std::string(session_media_type) + "; charset=utf-8",
          .location = "session/1",
          .body = std::move(body)};
}

TEST_CASE("a session Location resolves only to a path on the configured verifier") {
  const auto base = verifier("https://veraison.example:8443/v");
  // What Veraison sends, and the other forms that stay on the same server.
  CHECK(session_target(base, "session/0a1b") == "/v/challenge-response/v1/session/0a1b");
  CHECK(session_target(base, "/v/challenge-response/v1/session/2") ==
        "/v/challenge-response/v1/session/2");
  CHECK(session_target(base, "https://veraison.example:8443/v/session/3") == "/v/session/3");
  // Another server, by scheme, host, port or a network-path reference.
  CHECK(session_target(base, "https://elsewhere.example:8443/v/session/4").empty());
  CHECK(session_target(base, "https://veraison.example:9443/v/session/4").empty());
  CHECK(session_target(base, "http://veraison.example:8443/v/session/4").empty());
  CHECK(session_target(base, "//elsewhere.example/v/session/4").empty());
  // Nothing that would change the request line: a query, a fragment, a space, no path.
  CHECK(session_target(base, "session/5?next=1").empty());
  CHECK(session_target(base, "session/5#x").empty());
  CHECK(session_target(base, "session/5 HTTP/1.1").empty());
  CHECK(session_target(base, "session/\t5").empty());
  CHECK(session_target(base, "").empty());
  CHECK(session_target(base, "https://veraison.example:8443").empty());
  // A port run into the path, which Boost.URL 1.81 reads as port 8443 and a relative path.
  CHECK(session_target(base, "https://veraison.example:8443v/session/6").empty());
}

TEST_CASE("a verifier URL with an empty port uses the scheme's default port") {
  CHECK(verifier("https://veraison.example:/v").port == "443");
  CHECK(verifier("http://veraison.example:").port == "80");
  CHECK(verifier("https://veraison.example:8443").port == "8443");
}

TEST_CASE("a session document is read strictly, or refused as a bad response") {
  SUBCASE("a waiting session with its nonce") {
    const auto session =
        parse_session(session_answer(R"({"status":"waiting","nonce":"AAECAw=="})"));
    REQUIRE(session.has_value());
    CHECK(session->status == "waiting");
    CHECK(session->nonce == std::vector<std::uint8_t>{0, 1, 2, 3});
    CHECK_FALSE(session->ear.has_value());
  }
  SUBCASE("a complete session with its EAR") {
    const auto session = parse_session(
        session_answer(R"({"status":"complete","nonce":"AAECAw==","result":"a.b.c"})"));
    REQUIRE(session.has_value());
    CHECK(session->ear == "a.b.c");
  }
  std::string body;
  SUBCASE("a member given twice: two readers could disagree on it") {
    body = R"({"status":"waiting","nonce":"AAECAw==","status":"complete"})";
  }
  SUBCASE("no nonce") {
    body = R"({"status":"waiting"})";
  }
  SUBCASE("a nonce that is not base64") {
    body = R"({"status":"waiting","nonce":"!!"})";
  }
  SUBCASE("a result that is not a string") {
    body = R"({"status":"complete","nonce":"AAECAw==","result":{}})";
  }
  SUBCASE("not JSON") {
    body = R"({"status":"waiting",)";
  }
  if (!body.empty()) {
    CHECK(parse_session(session_answer(body)).error() == verify_errc::bad_response);
  }
}

TEST_CASE("a session document under another media type is refused") {
  auto answer = session_answer(R"({"status":"waiting","nonce":"AAECAw=="})");
  answer.content_type = "application/json";
  CHECK(parse_session(answer).error() == verify_errc::bad_response);
}

TEST_CASE("a problem detail is quoted so that it cannot start a log line of its own") {
  const http_answer answer{
      .status = 400,
      .content_type = std::string(problem_media_type),
      .body = R"({"title":"Bad Request","detail":"no\nlevel=info forged=\u001b[2J"})"};
  CHECK(problem_detail(answer) == R"("no level=info forged=\x1b[2J")");
  // Not problem+json: the start of the body, quoted the same way.
  const http_answer plain{.status = 502, .content_type = "text/plain", .body = "bad\r\ngateway"};
  CHECK(problem_detail(plain) == R"("bad  gateway")");
}

TEST_CASE("a discovery document keeps the members of the documented types only") {
  const http_answer answer{
      .status = 200,
      .content_type = std::string(discovery_media_type),
      .body = R"({"ear-verification-key":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"},)"
              R"("media-types":["application/eat-collection; profile=x",7],)"
              R"("service-state":"READY","version":3})"};
  const auto discovery = parse_discovery(answer);
  REQUIRE(discovery.has_value());
  CHECK(discovery->service_state == "READY");
  CHECK(discovery->version.empty());
  CHECK(discovery->media_types ==
        std::vector<std::string>{"application/eat-collection; profile=x"});
  CHECK(discovery->ear_key_jwk.find("\"kty\":\"EC\"") != std::string::npos);

  auto wrong_type = answer;
  wrong_type.content_type = "text/html";
  CHECK(parse_discovery(wrong_type).error() == verify_errc::bad_response);
}

}  // namespace
}  // namespace atls::verify::detail
