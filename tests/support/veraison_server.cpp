// The Veraison-API test server. Each behaviour below mirrors veraison/services as of its 2026
// sources (verification/api/handler.go, challengeresponsesession.go, capability/well-known.go,
// vts/trustedservices/trustedservices_grpc.go, scheme/parsec-tpm/scheme.go) and the EAR library
// (veraison/ear); where this server departs from them, the comment says so.
#include "support/veraison_server.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <ctime>
#include <exception>
#include <future>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "atls/attest/evidence.hpp"
#include "atls/verify/error.hpp"
#include "atls/verify/local_verifier.hpp"

#include "support/jws_signer.hpp"
#include <fcntl.h>

namespace atls::test {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

using request = http::request<http::vector_body<std::uint8_t>>;
using response = http::response<http::string_body>;
using verify::bytes;

constexpr std::string_view session_media_type =
    "application/vnd.veraison.challenge-response-session+json";
constexpr std::string_view discovery_media_type = "application/vnd.veraison.discovery+json";
constexpr std::string_view problem_media_type = "application/problem+json";

constexpr std::string_view discovery_path = "/.well-known/veraison/verification";
constexpr std::string_view new_session_path = "/challenge-response/v1/newSession";
constexpr std::string_view session_path_prefix = "/challenge-response/v1/session/";

// The parsec-tpm scheme's name, which is the EAR submodule's name, and its one media type.
constexpr std::string_view scheme_name = "PARSEC_TPM";
constexpr std::string_view parsec_tpm_media_type = attest::parsec_tpm_media_type;

// handler.go: ConfigNonceSize, the nonce minted when newSession names neither parameter.
constexpr std::size_t default_nonce_size = 32;
// config/buildtime.go: what every Veraison build without ldflags puts in ear.verifier-id.
constexpr std::string_view verifier_build = "N/A";
constexpr std::string_view verifier_developer = "Veraison Project";
// handler.go: the well-known document's cache lifetime by default.
constexpr std::chrono::seconds discovery_max_age{60};
// How long a 202 "processing" session stays processing before it completes.
constexpr auto processing_time = 200ms;
// Bounds on what a client may send; Veraison has none this small, but a test never needs more.
constexpr std::uint64_t max_body_size = std::uint64_t{1024} * 1024;
constexpr std::uint32_t max_header_size = 16 * 1024;

// ear.TrustClaim values (veraison/ear trustclaim.go) that the appraisal pipeline sets on all
// claims at once.
constexpr std::int8_t crypto_validation_failed = 99;

// The AR4SI claim names in the order of verify::trust_claim.
constexpr std::array<std::string_view, verify::trust_claim_count> trust_claim_names = {
    "instance-identity", "configuration",  "executables",    "file-system",
    "hardware",          "runtime-opaque", "storage-opaque", "sourced-data"};

// ---------------------------------------------------------------------------------------------
// Encodings, as Go's encoding/base64 does them.

constexpr std::string_view std_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view url_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64_encode(std::span<const std::uint8_t> data, std::string_view alphabet,
                          bool padded) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16U) | (std::uint32_t{data[i + 1]} << 8U) |
                            std::uint32_t{data[i + 2]};
    out += alphabet[(v >> 18U) & 63U];
    out += alphabet[(v >> 12U) & 63U];
    out += alphabet[(v >> 6U) & 63U];
    out += alphabet[v & 63U];
  }
  const std::size_t rest = data.size() - i;
  if (rest == 0) {
    return out;
  }
  std::uint32_t v = std::uint32_t{data[i]} << 16U;
  if (rest == 2) {
    v |= std::uint32_t{data[i + 1]} << 8U;
  }
  out += alphabet[(v >> 18U) & 63U];
  out += alphabet[(v >> 12U) & 63U];
  if (rest == 2) {
    out += alphabet[(v >> 6U) & 63U];
  }
  if (padded) {
    out.append(3 - rest, '=');
  }
  return out;
}

std::string base64_std(std::span<const std::uint8_t> data) {
  return base64_encode(data, std_alphabet, true);
}
std::string base64url_padded(std::span<const std::uint8_t> data) {
  return base64_encode(data, url_alphabet, true);
}
std::string base64url_raw(std::span<const std::uint8_t> data) {
  return base64_encode(data, url_alphabet, false);
}

// Go's base64.RawURLEncoding (padded == false) or base64.URLEncoding (padded == true)
// DecodeString: the URL alphabet only, CR and LF skipped, non-zero trailing bits accepted (the
// encodings are not Strict()).
std::optional<bytes> base64url_decode_go(std::string_view text, bool padded) {
  std::string clean;
  clean.reserve(text.size());
  for (const char c : text) {
    if (c != '\r' && c != '\n') {
      clean += c;
    }
  }
  std::size_t padding = 0;
  if (padded) {
    if (clean.size() % 4 != 0) {
      return std::nullopt;
    }
    while (padding < 2 && padding < clean.size() && clean[clean.size() - 1 - padding] == '=') {
      ++padding;
    }
    clean.resize(clean.size() - padding);
  }
  if (clean.size() % 4 == 1) {
    return std::nullopt;
  }
  if (padded && padding != 0 && (clean.size() + padding) % 4 != 0) {
    return std::nullopt;
  }
  bytes out;
  std::uint32_t acc = 0;
  unsigned bits = 0;
  for (const char c : clean) {
    const auto pos = url_alphabet.find(c);
    if (pos == std::string_view::npos) {
      return std::nullopt;
    }
    acc = (acc << 6U) | static_cast<std::uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xFFU));
    }
  }
  return out;
}

// handler.go since "Use unpadded base64url nonces": unpadded base64url first, then padded. The
// standard alphabet ('+', '/') is refused, as Veraison refuses it.
std::optional<bytes> decode_nonce_parameter(std::string_view text) {
  if (auto raw = base64url_decode_go(text, false)) {
    return raw;
  }
  return base64url_decode_go(text, true);
}

// ---------------------------------------------------------------------------------------------
// Times.

std::tm utc(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  return tm;
}

std::string format_time(const char* format, std::time_t t) {
  const std::tm tm = utc(t);
  std::array<char, 64> text{};
  const auto n = std::strftime(text.data(), text.size(), format, &tm);
  return {text.data(), n};
}

// Go's time.Time in JSON: RFC 3339 with the fraction's trailing zeros dropped (RFC3339Nano).
std::string rfc3339(verify::clock::time_point when) {
  const auto since_epoch = when.time_since_epoch();
  const auto seconds = std::chrono::floor<std::chrono::seconds>(since_epoch);
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - seconds);
  std::string out = format_time("%Y-%m-%dT%H:%M:%S", static_cast<std::time_t>(seconds.count()));
  if (nanos.count() != 0) {
    std::string fraction = std::to_string(nanos.count());
    fraction.insert(0, 9 - fraction.size(), '0');
    while (fraction.back() == '0') {
      fraction.pop_back();
    }
    out += '.';
    out += fraction;
  }
  out += 'Z';
  return out;
}

std::time_t to_time_t(verify::clock::time_point when) {
  return verify::clock::to_time_t(when);
}

// ---------------------------------------------------------------------------------------------
// HTTP details as gin and Go's net/http implement them.

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// gin's Context.NegotiateFormat with one offer: an absent or empty Accept admits it; otherwise
// an entry (parameters cut off) admits it when it is a prefix of the offer or a '*' appears
// before the first difference. So "*/*", "application/*" and the exact type pass, and
// "application/json" does not.
bool accepts(const request& req, std::string_view offer) {
  const std::string_view header = req[http::field::accept];
  bool any = false;
  std::string_view rest = header;
  while (true) {
    const auto comma = rest.find(',');
    std::string_view part = rest.substr(0, comma);
    if (const auto semicolon = part.find(';');
        semicolon != std::string_view::npos && semicolon > 0) {
      part = part.substr(0, semicolon);
    }
    part = trim(part);
    if (!part.empty()) {
      any = true;
      std::size_t i = 0;
      for (; i < part.size() && i < offer.size(); ++i) {
        if (part[i] == '*' || offer[i] == '*') {
          return true;
        }
        if (part[i] != offer[i]) {
          break;
        }
      }
      if (i == part.size()) {
        return true;
      }
    }
    if (comma == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(comma + 1);
  }
  return !any;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

// Go's url.QueryUnescape: '+' is a space, %XX a byte; a bad escape fails.
std::optional<std::string> query_unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
      continue;
    }
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) {
      return std::nullopt;
    }
    const int hi = hex_value(s[i + 1]);
    const int lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) {
      return std::nullopt;
    }
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// gin's Context.Query: the first value of `name` in Go's url.ParseQuery of the raw query, where
// pairs with a ';' or a bad escape are dropped. An absent parameter and an empty one are both "".
std::string query_parameter(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty() || pair.find(';') != std::string_view::npos) {
      continue;
    }
    const auto eq = pair.find('=');
    const auto key = query_unescape(pair.substr(0, eq));
    const auto value =
        query_unescape(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
    if (!key || !value) {
      continue;
    }
    if (*key == name) {
      return *value;
    }
  }
  return {};
}

bool is_token_char(char c) {
  static constexpr std::string_view separators = "()<>@,;:\\\"/[]?= \t";
  return c > 0x20 && c < 0x7F && separators.find(c) == std::string_view::npos;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  });
  return out;
}

// Go's mime.FormatMediaType(mime.ParseMediaType(mt)), which Veraison's verifier applies to the
// evidence's Content-Type before comparing it with its media types (api/api.go): type and
// parameter names in lower case, parameters sorted, values quoted only when they must be.
// nullopt when the text is not a media type (Veraison answers 400).
std::optional<std::string> normalize_media_type(std::string_view text) {
  const auto semicolon = text.find(';');
  const std::string type = lower(trim(text.substr(0, semicolon)));
  const auto slash = type.find('/');
  if (type.empty() || slash == 0 || slash == std::string::npos || slash + 1 == type.size()) {
    return std::nullopt;
  }
  if (!std::all_of(type.begin(), type.end(), [](char c) { return c == '/' || is_token_char(c); }) ||
      type.find('/', slash + 1) != std::string::npos) {
    return std::nullopt;
  }
  std::vector<std::pair<std::string, std::string>> parameters;
  std::string_view rest =
      semicolon == std::string_view::npos ? std::string_view{} : text.substr(semicolon + 1);
  while (!trim(rest).empty()) {
    rest = trim(rest);
    const auto eq = rest.find('=');
    if (eq == std::string_view::npos) {
      return std::nullopt;
    }
    const std::string key = lower(trim(rest.substr(0, eq)));
    if (key.empty() || !std::all_of(key.begin(), key.end(), is_token_char)) {
      return std::nullopt;
    }
    rest.remove_prefix(eq + 1);
    std::string value;
    if (!rest.empty() && rest.front() == '"') {
      std::size_t i = 1;
      for (; i < rest.size() && rest[i] != '"'; ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) {
          ++i;
        }
        value += rest[i];
      }
      if (i >= rest.size()) {
        return std::nullopt;
      }
      rest.remove_prefix(i + 1);
    } else {
      std::size_t i = 0;
      while (i < rest.size() && is_token_char(rest[i])) {
        ++i;
      }
      value = rest.substr(0, i);
      rest.remove_prefix(i);
      if (value.empty()) {
        return std::nullopt;
      }
    }
    rest = trim(rest);
    if (!rest.empty()) {
      if (rest.front() != ';') {
        return std::nullopt;
      }
      rest.remove_prefix(1);
    }
    if (std::any_of(parameters.begin(), parameters.end(),
                    [&key](const auto& p) { return p.first == key; })) {
      return std::nullopt;
    }
    parameters.emplace_back(key, std::move(value));
  }
  std::sort(parameters.begin(), parameters.end());
  std::string out = type;
  for (const auto& [key, value] : parameters) {
    out += "; ";
    out += key;
    out += '=';
    if (!value.empty() && std::all_of(value.begin(), value.end(), is_token_char)) {
      out += value;
      continue;
    }
    out += '"';
    for (const char c : value) {
      if (c == '"' || c == '\\') {
        out += '\\';
      }
      out += c;
    }
    out += '"';
  }
  return out;
}

// google/uuid's Parse, canonicalised: 36-character hyphenated, 32 hex digits, {braced} or
// urn:uuid:. Veraison answers 400 for anything else.
std::optional<std::string> parse_uuid(std::string_view text, std::string& error) {
  if (text.size() == 45 && lower(text.substr(0, 9)) == "urn:uuid:") {
    text.remove_prefix(9);
  } else if (text.size() == 38 && text.front() == '{' && text.back() == '}') {
    text = text.substr(1, 36);
  }
  std::string hex;
  if (text.size() == 36) {
    for (std::size_t i = 0; i < text.size(); ++i) {
      const bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
      if (dash_position != (text[i] == '-')) {
        error = "invalid UUID format";
        return std::nullopt;
      }
      if (!dash_position) {
        hex += text[i];
      }
    }
  } else if (text.size() == 32) {
    hex = text;
  } else {
    error = "invalid UUID length: " + std::to_string(text.size());
    return std::nullopt;
  }
  if (!std::all_of(hex.begin(), hex.end(), [](char c) { return hex_value(c) >= 0; })) {
    error = "invalid UUID format";
    return std::nullopt;
  }
  hex = lower(hex);
  return hex.substr(0, 8) + '-' + hex.substr(8, 4) + '-' + hex.substr(12, 4) + '-' +
         hex.substr(16, 4) + '-' + hex.substr(20);
}

std::string random_uuid() {
  std::array<std::uint8_t, 16> b{};
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0FU) | 0x40U);  // version 4
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3FU) | 0x80U);  // RFC 4122 variant
  static constexpr std::string_view digits = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) {
      out += '-';
    }
    out += digits[b[i] >> 4U];
    out += digits[b[i] & 0x0FU];
  }
  return out;
}

bytes random_bytes(std::size_t size) {
  bytes out(size);
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  return out;
}

// Decrements `counter` if it is positive; true when this request takes one of its N.
bool take(std::atomic<int>& counter) {
  int current = counter.load();
  while (current > 0) {
    if (counter.compare_exchange_weak(current, current - 1)) {
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Responses.

response make_response(const request& req, http::status status, std::string_view content_type,
                       std::string body) {
  response res{status, req.version()};
  res.set(http::field::date,
          format_time("%a, %d %b %Y %H:%M:%S GMT", to_time_t(verify::clock::now())));
  if (!content_type.empty()) {
    res.set(http::field::content_type, content_type);
  }
  res.body() = std::move(body);
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  return res;
}

// Veraison's ReportProblem: moogar0880/problems' NewStatusProblem, i.e. RFC 7807 with type
// about:blank and the status text as title.
response problem(const request& req, http::status status, std::string_view detail) {
  json::object body;
  body["type"] = "about:blank";
  body["title"] = http::obsolete_reason(status);
  body["status"] = static_cast<int>(status);
  body["detail"] = detail;
  return make_response(req, status, problem_media_type, json::serialize(body));
}

// gin answers unknown routes with its own plain-text page, not problem+json.
response not_found_page(const request& req) {
  return make_response(req, http::status::not_found, "text/plain", "404 page not found");
}

// gin is configured without HandleMethodNotAllowed in Veraison, so a known path with another
// method is a plain 404 there. A 405 with Allow is what HTTP asks for, and what this server's
// brief chose; no client depends on either.
response method_not_allowed(const request& req, std::string_view allow) {
  auto res = problem(req, http::status::method_not_allowed,
                     std::string(req.method_string()) + " is not allowed here");
  res.set(http::field::allow, allow);
  return res;
}

std::string not_acceptable_detail(std::string_view offer) {
  return "the only supported output format is " + std::string(offer);
}

enum class session_status : std::uint8_t { waiting, processing, complete, failed };

std::string_view to_string(session_status status) {
  switch (status) {
    case session_status::waiting:
      return "waiting";
    case session_status::processing:
      return "processing";
    case session_status::complete:
      return "complete";
    case session_status::failed:
      return "failed";
  }
  return "unknown";
}

struct evidence_blob {
  std::string type;  // the Content-Type as the client sent it
  bytes value;
};

struct session {
  bytes nonce;
  verify::clock::time_point expiry;
  session_status status = session_status::waiting;
  std::optional<evidence_blob> evidence;
  std::optional<std::string> result;  // the EAR
};

// ChallengeResponseSession in JSON: the nonce as unpadded base64url (since "Use unpadded
// base64url nonces"), the evidence value as Go's []byte (padded standard base64).
std::string session_json(const session& s) {
  json::object body;
  body["status"] = to_string(s.status);
  body["nonce"] = base64url_raw(s.nonce);
  body["expiry"] = rfc3339(s.expiry);
  body["accept"] = json::array{json::string(parsec_tpm_media_type)};
  if (s.evidence) {
    body["evidence"] =
        json::object{{"type", s.evidence->type}, {"value", base64_std(s.evidence->value)}};
  }
  if (s.result) {
    body["result"] = *s.result;
  }
  return json::serialize(body);
}

// What an appraisal puts in the EAR's one submodule.
struct appraisal {
  std::array<std::int8_t, verify::trust_claim_count> trust{};  // 0 = no claim
  std::optional<bytes> attested_key;
  std::optional<json::object> annotated_evidence;
  std::optional<std::string> problem;
};

// ear.TrustClaim.GetTier, as numbers that order like ear.TrustTier.
int tier(int v) {
  if (v >= -1 && v <= 1) {
    return 0;
  }
  if ((v >= 2 && v <= 31) || (v >= -32 && v <= -2)) {
    return 2;
  }
  if ((v >= 32 && v <= 95) || (v >= -96 && v <= -33)) {
    return 32;
  }
  return 96;
}

std::string_view tier_name(int t) {
  switch (t) {
    case 2:
      return "affirming";
    case 32:
      return "warning";
    case 96:
      return "contraindicated";
    default:
      return "none";
  }
}

// The parsec tpm.Evidence as JSON (veraison/parsec tpm/kat.go, pat.go): Veraison's annotated
// evidence, byte strings as Go's []byte.
json::object annotated(const attest::parsec_tpm_evidence& e) {
  return json::object{
      {"kat", json::object{{"tpmVer", "2.0"},
                           {"kid", base64_std(e.kid)},
                           {"sig", base64_std(e.kat_sig)},
                           {"pubArea", base64_std(e.pub_area)},
                           {"certInfo", base64_std(e.cert_info)}}},
      {"pat", json::object{{"tpmVer", "2.0"},
                           {"kid", base64_std(e.kid)},
                           {"sig", base64_std(e.pat_sig)},
                           {"attestInfo", base64_std(e.attest_info)}}},
  };
}

}  // namespace

// ---------------------------------------------------------------------------------------------

class veraison_server::impl {
 public:
  explicit impl(veraison_server_options options)
      : options_(std::move(options)),
        ear_key_(generate_signing_key(verify::jws_algorithm::es256)),
        wrong_key_(generate_signing_key(verify::jws_algorithm::es256)),
        io_(std::make_unique<asio::io_context>(1)) {
    if (!ear_key_ || !wrong_key_) {
      throw std::runtime_error("veraison_server: cannot generate the EAR signing keys");
    }
    // Veraison publishes the key with its "alg" (GetEARSigningPublicKey sets it).
    ear_jwk_ = public_jwk(ear_key_.get(), verify::jws_algorithm::es256, true);
    if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
      ssl_.emplace(asio::ssl::context::tls_server);
      ssl_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                        asio::ssl::context::no_tlsv1_1);
      ssl_->use_certificate_chain_file(options_.tls_cert_file);
      ssl_->use_private_key_file(options_.tls_key_file, asio::ssl::context::pem);
    }
    acceptor_.emplace(*io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    close_on_exec(acceptor_->native_handle());
    base_url_ = std::string(ssl_ ? "https" : "http") +
                "://127.0.0.1:" + std::to_string(acceptor_->local_endpoint().port());
    asio::co_spawn(*io_, accept_loop(), [](const std::exception_ptr&) {});
    thread_ = std::thread([this] { io_->run(); });
  }

  ~impl() {
    // Stopping the loop and destroying the io_context destroys every suspended coroutine, and
    // with it every socket, however many connections clients keep open.
    io_->stop();
    if (thread_.joinable()) {
      thread_.join();
    }
    acceptor_.reset();
    paused_.reset();  // fault suite: a guard left by stop_listening() goes before its io_context
    io_.reset();
  }

  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  impl(impl&&) = delete;
  impl& operator=(impl&&) = delete;

  [[nodiscard]] const std::string& base_url() const { return base_url_; }
  [[nodiscard]] const std::string& ear_key_jwk() const { return ear_jwk_; }
  [[nodiscard]] veraison_faults& faults() { return faults_; }

  // Fault suite: the service stopped and started again on the same port.
  void stop_listening() {
    on_server_thread([this] {
      // With the accept loop gone and no connection open, io_->run() would return and end the
      // server's thread; the guard keeps it until resume_listening().
      paused_.emplace(io_->get_executor());
      stopped_ = true;
      boost::system::error_code ignored;
      acceptor_->close(ignored);
    });
  }
  void resume_listening() {
    on_server_thread([this] {
      const auto port =
          static_cast<std::uint16_t>(std::stoi(base_url_.substr(base_url_.rfind(':') + 1)));
      // The old acceptor's accept has been aborted; reuse_address lets the port be bound again
      // while connections it accepted linger in TIME_WAIT.
      acceptor_.emplace(*io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), true);
      close_on_exec(acceptor_->native_handle());
      stopped_ = false;
      asio::co_spawn(*io_, accept_loop(), [](const std::exception_ptr&) {});
      paused_.reset();
    });
  }

  [[nodiscard]] std::size_t requests() const { return requests_.load(); }
  [[nodiscard]] std::size_t connections() const { return connections_.load(); }
  [[nodiscard]] std::size_t unauthorized() const { return unauthorized_.load(); }
  [[nodiscard]] std::size_t open_sessions() const {
    const std::lock_guard lock(mutex_);
    purge_expired();
    return sessions_.size();
  }

 private:
  // Asio opens sockets without FD_CLOEXEC, so every atlsd a test starts would inherit the
  // listening socket and the open connections, and keep them open after the server closes
  // them: a stopped server would still take connections into a daemon's backlog, and its port
  // could not be bound again.
  static void close_on_exec(int fd) { ::fcntl(fd, F_SETFD, FD_CLOEXEC); }

  // Fault suite: runs f on the server's thread and waits for it; rethrows what it threw.
  template <class F>
  void on_server_thread(F f) {
    std::promise<void> done;
    auto finished = done.get_future();
    asio::post(*io_, [&f, &done] {
      try {
        f();
        done.set_value();
      } catch (...) {
        done.set_exception(std::current_exception());
      }
    });
    finished.get();
  }

  // Fault suite: the answer's status and headers as a working service sends them (200 for the
  // client's sake), and a body that is neither JSON nor a JWS: a NUL, invalid UTF-8, and a
  // newline followed by garbage_forged_line, which a client that logs the body unescaped
  // writes into its log as a line of its own.
  static void garble(response& res) {
    res.result(http::status::ok);
    res.body() = std::string("\x00\xff{\"status\": eyJhbGciOi...not json, not an EAR\n", 47) +
                 std::string(garbage_forged_line);
    res.prepare_payload();
  }

  asio::awaitable<void> accept_loop() {
    while (acceptor_->is_open()) {
      auto [ec, socket] = co_await acceptor_->async_accept(use_tuple);
      if (ec == asio::error::operation_aborted) {
        co_return;
      }
      if (ec) {
        continue;
      }
      ++connections_;
      close_on_exec(socket.native_handle());
      asio::co_spawn(*io_, serve_socket(std::move(socket)), [](const std::exception_ptr&) {});
    }
  }

  asio::awaitable<void> serve_socket(tcp::socket socket) {
    if (!ssl_) {
      if (co_await serve(socket)) {
        boost::system::error_code ignored;
        socket.shutdown(tcp::socket::shutdown_send, ignored);
      }
      co_return;
    }
    asio::ssl::stream<tcp::socket> stream(std::move(socket), *ssl_);
    auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
    if (ec) {
      co_return;
    }
    if (!co_await serve(stream)) {
      co_return;
    }
    // Go's tls.Conn.Close sends close_notify; a client that never answers it does not keep
    // this coroutine waiting for long.
    asio::steady_timer timer(stream.get_executor(), 1s);
    auto shutdown = stream.async_shutdown(use_tuple);
    auto timeout = timer.async_wait(use_tuple);
    using asio::experimental::awaitable_operators::operator||;
    auto either = std::move(shutdown) || std::move(timeout);
    co_await std::move(either);
  }

  // Serves requests until the client closes, asks to close, or a fault drops the connection.
  // True when the connection should be closed gracefully.
  template <class Stream>
  asio::awaitable<bool> serve(Stream& stream) {
    boost::beast::flat_buffer buffer;
    while (true) {
      http::request_parser<http::vector_body<std::uint8_t>> parser;
      parser.body_limit(max_body_size);
      parser.header_limit(max_header_size);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
      if (ec == http::error::end_of_stream) {
        co_return true;
      }
      if (ec) {
        if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
            ec != http::error::partial_message) {
          // Go's net/http answers a request it cannot parse with a bare 400 and closes.
          request bad;
          bad.version(11);
          bad.keep_alive(false);
          auto res = make_response(bad, http::status::bad_request, "text/plain; charset=utf-8",
                                   "400 Bad Request");
          co_await http::async_write(stream, res, use_tuple);
        }
        co_return false;
      }
      ++requests_;
      request req = parser.release();
      if (take(faults_.drop_connection) || stopped_) {
        co_return false;
      }
      if (const int delay = faults_.delay_ms.load(); delay > 0) {
        asio::steady_timer timer(stream.get_executor(), std::chrono::milliseconds(delay));
        co_await timer.async_wait(use_tuple);
      }
      auto res = answer(req);
      if (faults_.garbage_answers.load()) {
        garble(res);
      }
      auto [write_error, written] = co_await http::async_write(stream, res, use_tuple);
      if (write_error) {
        co_return false;
      }
      if (!res.keep_alive()) {
        co_return true;
      }
    }
  }

  response answer(const request& req) {
    if (take(faults_.fail_with_500)) {
      return problem(req, http::status::internal_server_error, "injected failure");
    }
    const std::string_view target = req.target();
    const auto question = target.find('?');
    const std::string_view path = target.substr(0, question);
    const std::string_view query =
        question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);

    if (path == discovery_path) {
      if (req.method() != http::verb::get) {
        return method_not_allowed(req, "GET");
      }
      return discovery(req);
    }
    if (!authorized(req)) {
      ++unauthorized_;
      auto res = problem(req, http::status::unauthorized, "missing or invalid bearer token");
      res.set(http::field::www_authenticate, R"(Bearer realm="veraison")");
      return res;
    }
    if (path == new_session_path) {
      if (req.method() != http::verb::post) {
        return method_not_allowed(req, "POST");
      }
      return new_session(req, query);
    }
    if (path.starts_with(session_path_prefix)) {
      const std::string_view id = path.substr(session_path_prefix.size());
      if (id.empty() || id.find('/') != std::string_view::npos) {
        return not_found_page(req);
      }
      switch (req.method()) {
        case http::verb::get:
          return get_session(req, id);
        case http::verb::post:
          return submit_evidence(req, id);
        case http::verb::delete_:
          return delete_session(req, id);
        default:
          return method_not_allowed(req, "GET, POST, DELETE");
      }
    }
    return not_found_page(req);
  }

  bool authorized(const request& req) const {
    if (options_.bearer_token.empty()) {
      return true;
    }
    const auto presented = req[http::field::authorization];
    const std::string expected = "Bearer " + options_.bearer_token;
    return presented.size() == expected.size() &&
           CRYPTO_memcmp(presented.data(), expected.data(), expected.size()) == 0;
  }

  // GetWellKnownVerificationInfo. Veraison passes no attestation schemes to
  // NewWellKnownInfoObj, so "attestation-schemes" is absent (omitempty), as here.
  response discovery(const request& req) const {
    if (!accepts(req, discovery_media_type)) {
      return problem(req, http::status::not_acceptable,
                     not_acceptable_detail(discovery_media_type));
    }
    json::object body;
    body["ear-verification-key"] = json::parse(ear_jwk_);
    body["media-types"] = json::array{json::string(parsec_tpm_media_type)};
    body["version"] = "0.0.2601-atls-test";
    body["service-state"] = "READY";
    body["api-endpoints"] = json::object{{"newChallengeResponseSession", new_session_path}};
    auto res = make_response(req, http::status::ok, discovery_media_type, json::serialize(body));
    const auto now = verify::clock::now();
    res.set(http::field::cache_control, "max-age=" + std::to_string(discovery_max_age.count()));
    // Go's time.RFC1123 on a UTC time says "UTC", not "GMT".
    res.set(http::field::expires,
            format_time("%a, %d %b %Y %H:%M:%S UTC", to_time_t(now + discovery_max_age)));
    return res;
  }

  // NewChallengeResponse: Accept first, then parseNonceRequest, then 201 with a relative
  // Location (path.Join("session", id)).
  response new_session(const request& req, std::string_view query) {
    if (!accepts(req, session_media_type)) {
      return problem(req, http::status::not_acceptable, not_acceptable_detail(session_media_type));
    }
    const std::string nonce_parameter = query_parameter(query, "nonce");
    const std::string size_parameter = query_parameter(query, "nonceSize");
    const auto bad_nonce = [&req](std::string_view why) {
      return problem(req, http::status::bad_request,
                     "failed handling nonce request: " + std::string(why));
    };
    bytes nonce;
    if (!nonce_parameter.empty() && !size_parameter.empty()) {
      return bad_nonce("nonce and nonceSize are mutually exclusive");
    }
    if (nonce_parameter.empty() && size_parameter.empty()) {
      nonce = random_bytes(default_nonce_size);
    } else if (!size_parameter.empty()) {
      // strconv.ParseUint(v, 10, 8): decimal digits only, at most 255, then 8..64.
      const bool digits = std::all_of(size_parameter.begin(), size_parameter.end(),
                                      [](char c) { return c >= '0' && c <= '9'; });
      const auto size = digits && size_parameter.size() <= 3 ? std::stoul(size_parameter) : 0UL;
      if (!digits || size > 255 || size < verify::min_nonce_size || size > verify::max_nonce_size) {
        return bad_nonce("nonceSize must be in range 8..64");
      }
      nonce = random_bytes(size);
    } else {
      auto decoded = decode_nonce_parameter(nonce_parameter);
      if (!decoded) {
        return bad_nonce("nonce must be valid base64");
      }
      if (decoded->size() < verify::min_nonce_size || decoded->size() > verify::max_nonce_size) {
        return bad_nonce("nonce must be between 8 and 64 bytes long; got " +
                         std::to_string(decoded->size()));
      }
      nonce = std::move(*decoded);
    }
    if (faults_.mint_other_nonce) {
      nonce = random_bytes(nonce.size());
    }
    const std::string id = random_uuid();
    session s{.nonce = std::move(nonce),
              .expiry = verify::clock::now() + options_.session_lifetime};
    std::string body = session_json(s);
    {
      const std::lock_guard lock(mutex_);
      purge_expired();
      sessions_.emplace(id, std::move(s));
    }
    auto res = make_response(req, http::status::created, session_media_type, std::move(body));
    res.set(http::field::location, "session/" + id);
    return res;
  }

  response get_session(const request& req, std::string_view raw_id) {
    if (!accepts(req, session_media_type)) {
      return problem(req, http::status::not_acceptable, not_acceptable_detail(session_media_type));
    }
    std::string error;
    const auto id = parse_uuid(raw_id, error);
    if (!id) {
      return bad_session_id(req, error);
    }
    const std::lock_guard lock(mutex_);
    purge_expired();
    const auto it = sessions_.find(*id);
    if (it == sessions_.end()) {
      return session_not_found(req, *id);
    }
    return make_response(req, http::status::ok, session_media_type, session_json(it->second));
  }

  // DelSession: no content negotiation, and Veraison's default session store (ttlcache)
  // deletes an unknown id without complaint, so that is 204 too.
  response delete_session(const request& req, std::string_view raw_id) {
    std::string error;
    const auto id = parse_uuid(raw_id, error);
    if (!id) {
      return bad_session_id(req, error);
    }
    {
      const std::lock_guard lock(mutex_);
      sessions_.erase(*id);
    }
    response res{http::status::no_content, req.version()};
    res.set(http::field::date,
            format_time("%a, %d %b %Y %H:%M:%S GMT", to_time_t(verify::clock::now())));
    res.keep_alive(req.keep_alive());
    return res;
  }

  // SubmitEvidence, checks in Veraison's order: Accept (406), an empty body (400), the media
  // type (400 when it does not parse, 415 with Accept when no scheme takes it), the session id
  // (400), the session (404). Veraison does not look at the session's state, so evidence posted
  // again to a completed session is appraised again. CMW-wrapped evidence is not supported
  // here (Veraison unwraps it): its media types get 415.
  response submit_evidence(const request& req, std::string_view raw_id) {
    if (!accepts(req, session_media_type)) {
      return problem(req, http::status::not_acceptable, not_acceptable_detail(session_media_type));
    }
    if (req.body().empty()) {
      return problem(req, http::status::bad_request,
                     "unable to read evidence from the request body");
    }
    const std::string media_type(req[http::field::content_type]);
    const auto normalized = normalize_media_type(media_type);
    if (!normalized) {
      return problem(
          req, http::status::bad_request,
          "could not check media type with verifier: validation failed for " + media_type);
    }
    if (*normalized != parsec_tpm_media_type) {
      auto res = problem(req, http::status::unsupported_media_type,
                         "no active plugin found for " + media_type);
      res.set(http::field::accept, parsec_tpm_media_type);
      return res;
    }
    std::string error;
    const auto id = parse_uuid(raw_id, error);
    if (!id) {
      return bad_session_id(req, error);
    }
    bytes nonce;
    {
      const std::lock_guard lock(mutex_);
      purge_expired();
      const auto it = sessions_.find(*id);
      if (it == sessions_.end()) {
        return session_not_found(req, *id);
      }
      nonce = it->second.nonce;
    }

    const auto outcome = appraise(req.body(), nonce);
    const bool asynchronous = outcome && take(faults_.answer_processing);
    std::string ear = outcome ? make_ear(*outcome, nonce) : std::string{};

    const std::lock_guard lock(mutex_);
    const auto it = sessions_.find(*id);
    if (it == sessions_.end()) {
      return session_not_found(req, *id);
    }
    session& s = it->second;
    if (!outcome) {
      // Not the evidence's fault: Veraison marks the session failed and answers 500.
      s.status = session_status::failed;
      return problem(req, http::status::internal_server_error,
                     "error encountered while processing evidence");
    }
    s.evidence = evidence_blob{.type = media_type, .value = req.body()};
    if (asynchronous) {
      s.status = session_status::processing;
      s.result.reset();
      asio::co_spawn(*io_, complete_later(*id, std::move(ear)), [](const std::exception_ptr&) {});
      return make_response(req, http::status::accepted, session_media_type, session_json(s));
    }
    s.status = session_status::complete;
    s.result = std::move(ear);
    return make_response(req, http::status::ok, session_media_type, session_json(s));
  }

  asio::awaitable<void> complete_later(std::string id, std::string ear) {
    const auto executor = co_await asio::this_coro::executor;
    asio::steady_timer timer(executor, processing_time);
    co_await timer.async_wait(use_tuple);
    const std::lock_guard lock(mutex_);
    const auto it = sessions_.find(id);
    if (it != sessions_.end() && it->second.status == session_status::processing) {
      it->second.status = session_status::complete;
      it->second.result = std::move(ear);
    }
  }

  static response bad_session_id(const request& req, const std::string& error) {
    return problem(
        req, http::status::bad_request,
        "invalid session id (" + std::string(req.target()) + ") in path segment: " + error);
  }

  static response session_not_found(const request& req, const std::string& id) {
    return problem(req, http::status::not_found,
                   "session not found for (id, tenant)=(" + id + ", 0)");
  }

  // Callers hold mutex_.
  void purge_expired() const {
    const auto now = verify::clock::now();
    std::erase_if(sessions_, [now](const auto& entry) { return entry.second.expiry <= now; });
  }

  // The VTS pipeline for parsec-tpm (trustedservices_grpc.go GetAttestation and the scheme).
  // Problems with the evidence are results, not errors: evidence that does not decode, has no
  // trust anchor or fails its signatures gets every claim set to 99 (crypto validation failed,
  // so status contraindicated) with a "problem" policy claim; PCRs that match no reference
  // make the scheme fail with BadEvidence, whose partial result Veraison throws away, leaving
  // every claim 0 and status none. nullopt means the verifier itself failed.
  [[nodiscard]] std::optional<appraisal> appraise(std::span<const std::uint8_t> evidence,
                                                  std::span<const std::uint8_t> nonce) const {
    appraisal out;
    const auto refuse = [&out](std::string problem_text) {
      out.trust.fill(crypto_validation_failed);
      out.problem = std::move(problem_text);
      return out;
    };
    const auto decoded = attest::decode(evidence);
    if (!decoded) {
      return refuse("could not establish identity from evidence");
    }
    const auto anchor = options_.trust_anchors.find(base64_std(decoded->kid));
    if (anchor == options_.trust_anchors.end()) {
      return refuse("no trust anchor for evidence");
    }
    // Veraison's scheme never compares extraData with the session nonce (veraison/services#447):
    // expecting the evidence's own challenge makes the local verifier's check a no-op.
    bytes expected(nonce.begin(), nonce.end());
    if (!options_.check_nonce) {
      if (const auto certify = attest::parse_attest(decoded->cert_info)) {
        expected = certify->extra_data;
      }
    }
    const verify::local_verifier_options verifier_options{
        .trusted_aks = {anchor->second},
        .reference = options_.reference,
        .developer = std::string(verifier_developer),
        .submodule = std::string(scheme_name)};
    const auto result = verify::appraise_parsec_tpm(
        verifier_options, evidence, parsec_tpm_media_type, expected, verify::clock::now());
    if (!result) {
      const auto ec = result.error();
      if (ec == verify::verify_errc::no_reference_values) {
        return out;
      }
      if (ec == verify::verify_errc::unknown_attestation_key ||
          ec == attest::evidence_errc::bad_signature) {
        return refuse("integrity validation failed: failed to verify signature");
      }
      if (ec == attest::evidence_errc::nonce_mismatch) {
        return refuse("integrity validation failed: nonce mismatch");
      }
      if (ec.category() == attest::evidence_category()) {
        return refuse("could not establish identity from evidence: " + ec.message());
      }
      return std::nullopt;
    }
    if (result->status != verify::ear_status::affirming) {
      return out;
    }
    for (std::size_t i = 0; i < out.trust.size(); ++i) {
      out.trust[i] = result->trust.claims[i].value_or(0);
    }
    out.attested_key = result->attested_key;
    out.annotated_evidence = annotated(*decoded);
    return out;
  }

  // An EAR as veraison/ear's AttestationResult.Sign writes it: every trust claim present (0 for
  // none), ear.status from the vector, eat_nonce as padded base64url (appraisal.NewContext),
  // akpub as unpadded base64url (ear.SetKeyAttestation).
  [[nodiscard]] std::string make_ear(const appraisal& a, std::span<const std::uint8_t> nonce) {
    const auto now = verify::clock::now();
    const bool expired = faults_.expired_ear.load();
    const auto issued = expired ? now - 1h : now;

    json::object trust;
    int status = 0;
    for (std::size_t i = 0; i < a.trust.size(); ++i) {
      trust[trust_claim_names[i]] = a.trust[i];
      status = std::max(status, tier(a.trust[i]));
    }
    json::object submodule;
    submodule["ear.status"] = tier_name(status);
    submodule["ear.trustworthiness-vector"] = std::move(trust);
    submodule["ear.appraisal-policy-id"] = "policy:" + std::string(scheme_name);
    if (a.annotated_evidence) {
      submodule["ear.veraison.annotated-evidence"] = *a.annotated_evidence;
    }
    if (a.problem) {
      submodule["ear.veraison.policy-claims"] = json::object{{"problem", *a.problem}};
    }
    if (a.attested_key) {
      submodule["ear.veraison.key-attestation"] =
          json::object{{"akpub", base64url_raw(*a.attested_key)}};
    }

    json::object claims;
    claims["eat_profile"] = "tag:github.com,2023:veraison/ear";
    claims["iat"] = static_cast<std::int64_t>(to_time_t(issued));
    if (expired) {
      claims["exp"] = static_cast<std::int64_t>(to_time_t(now - 30min));
    }
    claims["ear.verifier-id"] =
        json::object{{"build", verifier_build}, {"developer", verifier_developer}};
    claims["eat_nonce"] = base64url_padded(nonce);
    claims["submods"] = json::object{{scheme_name, std::move(submodule)}};

    EVP_PKEY* key = faults_.sign_with_wrong_key.load() ? wrong_key_.get() : ear_key_.get();
    auto token = sign_jwt(key, verify::jws_algorithm::es256, json::serialize(claims));
    return forge_ear(std::move(token), claims);
  }

  // --- Forged EARs, for the attack suite (veraison_faults::unsigned_ear, tampered_ear). ---
  // `token` is the genuine compact JWS of `claims`; returns it, or the forgery a fault asks for.
  [[nodiscard]] std::string forge_ear(std::string token, json::object claims) const {
    const auto text_b64 = [](std::string_view text) {
      return base64url_raw(
          std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
    };
    if (faults_.unsigned_ear.load()) {
      // RFC 7515 §A.5: header.payload. with an empty signature.
      return text_b64(R"({"alg":"none","typ":"JWT"})") + "." + text_b64(json::serialize(claims)) +
             ".";
    }
    if (faults_.tampered_ear.load()) {
      // Keep the header and signature of the genuine token; swap in claims that say more.
      auto& submods = claims["submods"].as_object();
      for (auto& entry : submods) {
        auto& submodule = entry.value().as_object();
        submodule["ear.status"] = "affirming";
        // Changed even when the genuine result already was affirming.
        submodule["ear.appraisal-policy-id"] = "policy:forged";
        for (auto& claim : submodule["ear.trustworthiness-vector"].as_object()) {
          claim.value() = 2;
        }
      }
      const auto first = token.find('.');
      const auto second = token.find('.', first + 1);
      return token.substr(0, first + 1) + text_b64(json::serialize(claims)) + token.substr(second);
    }
    return token;
  }

  veraison_server_options options_;
  veraison_faults faults_;
  // Fault suite: between stop_listening() and resume_listening(). Touched on io_'s thread only.
  bool stopped_ = false;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> paused_;
  unique_pkey ear_key_;
  unique_pkey wrong_key_;  // never published: EARs it signs must fail verification
  std::string ear_jwk_;
  std::optional<asio::ssl::context> ssl_;
  mutable std::mutex mutex_;
  mutable std::map<std::string, session> sessions_;  // by canonical UUID
  std::atomic<std::size_t> requests_{0};
  std::atomic<std::size_t> connections_{0};
  std::atomic<std::size_t> unauthorized_{0};
  std::string base_url_;
  // Declared last among what the coroutines use, and reset explicitly in ~impl.
  std::unique_ptr<asio::io_context> io_;
  std::optional<tcp::acceptor> acceptor_;
  std::thread thread_;
};

veraison_server::veraison_server(veraison_server_options options)
    : impl_(std::make_unique<impl>(std::move(options))) {}

veraison_server::~veraison_server() = default;

std::string veraison_server::base_url() const {
  return impl_->base_url();
}
std::string veraison_server::ear_key_jwk() const {
  return impl_->ear_key_jwk();
}
veraison_faults& veraison_server::faults() {
  return impl_->faults();
}
void veraison_server::stop_listening() {
  impl_->stop_listening();
}
void veraison_server::resume_listening() {
  impl_->resume_listening();
}
std::size_t veraison_server::requests() const {
  return impl_->requests();
}
std::size_t veraison_server::connections() const {
  return impl_->connections();
}
std::size_t veraison_server::open_sessions() const {
  return impl_->open_sessions();
}
std::size_t veraison_server::unauthorized() const {
  return impl_->unauthorized();
}

namespace {
template <class Condition>
bool poll_until(Condition condition, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > until) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}
}  // namespace

bool veraison_server::wait_for_requests(std::size_t count,
                                        std::chrono::milliseconds timeout) const {
  return poll_until([&] { return requests() >= count; }, timeout);
}

bool veraison_server::wait_for_no_open_session(std::chrono::milliseconds timeout) const {
  return poll_until([&] { return open_sessions() == 0; }, timeout);
}

}  // namespace atls::test
