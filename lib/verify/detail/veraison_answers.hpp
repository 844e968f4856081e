// What a Veraison verifier answers, read without the network: the session and discovery
// documents of the challenge-response API (veraison/services, verification/api), its problem
// details and the Location of a new session. These are untrusted bytes (the verifier, or whoever
// sits on a plain-HTTP path to it, chooses them), so each reader is strict and is fuzzed
// (tests/fuzz/veraison_answers_fuzz.cpp). No I/O and no coroutines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "atls/common/result.hpp"

namespace atls::verify::detail {

// verification/api/handler.go: the only representation of a session, and of discovery.
inline constexpr std::string_view session_media_type =
    "application/vnd.veraison.challenge-response-session+json";
inline constexpr std::string_view discovery_media_type = "application/vnd.veraison.discovery+json";
inline constexpr std::string_view problem_media_type = "application/problem+json";
inline constexpr std::string_view api_root = "/challenge-response/v1/";

// Answers bigger than this are not Veraison's: a session with an EAR is a few KiB.
inline constexpr std::size_t max_body_size = std::size_t{1024} * 1024;

struct http_answer {
  unsigned status = 0;
  std::string content_type;
  std::string location;
  std::string body;
};

// A verifier base URL from the config: http or https, a host, maybe a port and a path prefix,
// nothing else (no user info, query or fragment).
struct base_url {
  bool tls = false;
  std::string host;  // without IPv6 brackets
  std::string port;
  std::string host_header;
  std::string prefix;  // path without a trailing '/', possibly empty
  std::string text;
};
[[nodiscard]] result<base_url> parse_base_url(std::string_view text);

// "type/subtype; params" -> lower-case "type/subtype".
[[nodiscard]] std::string bare_media_type(std::string_view value);

// The problem+json "detail" (RFC 9457), or the start of the body, at most 200 bytes of it,
// quoted for the log (quote_for_log): the sender must not be able to end the line and write
// one of its own.
[[nodiscard]] std::string problem_detail(const http_answer& answer);

struct session_view {
  std::string status;
  std::vector<std::uint8_t> nonce;
  std::optional<std::string> ear;
};
// A session document (strict JSON, the session media type, a string status and a base64 nonce,
// a string or null result); verify_errc::bad_response for anything else.
[[nodiscard]] result<session_view> parse_session(const http_answer& answer);

struct discovery_view {
  std::string service_state;
  std::vector<std::string> media_types;
  std::string version;
  std::string ear_key_jwk;  // as published, re-serialized; empty when there is none
};
// The well-known verification document (its media type or application/json, strict JSON);
// members of the wrong type are left out. verify_errc::bad_response when it is not an object.
[[nodiscard]] result<discovery_view> parse_discovery(const http_answer& answer);

// The request target for the session a newSession answer's Location names, resolved against
// `base` (Veraison sends the relative "session/<id>"). Only a path on the configured server is
// accepted: an absolute URL must have the same scheme, host and port, and a reference must be
// a path without query or fragment. Empty when refused. What is returned is a valid origin-form
// target: '/' then only RFC 3986 path characters, so that nothing the verifier sends can alter
// the request line.
[[nodiscard]] std::string session_target(const base_url& base, std::string_view location);

}  // namespace atls::verify::detail
