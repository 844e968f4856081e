#include "detail/veraison_answers.hpp"

#include <algorithm>
#include <cctype>
#include <utility>

#include <boost/json.hpp>
#include <boost/url/parse.hpp>

#include "atls/common/log_quote.hpp"
#include "atls/verify/error.hpp"
#include "atls/verify/jose.hpp"

#include "detail/strict_json.hpp"

namespace atls::verify::detail {

namespace json = boost::json;

result<base_url> parse_base_url(std::string_view text) {
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed) {
    return make_error_code(std::errc::invalid_argument);
  }
  base_url out;
  const auto scheme = parsed->scheme_id();
  if (scheme == boost::urls::scheme::https) {
    out.tls = true;
  } else if (scheme != boost::urls::scheme::http) {
    return make_error_code(std::errc::invalid_argument);
  }
  if (!parsed->has_authority() || parsed->host().empty() || parsed->has_userinfo() ||
      parsed->has_query() || parsed->has_fragment()) {
    return make_error_code(std::errc::invalid_argument);
  }
  out.host = parsed->host_address();
  // RFC 3986 §3.2.3: an empty port ("host:") is the scheme's default.
  out.port = parsed->port().empty() ? (out.tls ? "443" : "80") : std::string(parsed->port());
  out.host_header = parsed->encoded_host_and_port();
  out.prefix = parsed->encoded_path();
  // Boost.URL 1.81 accepts "https://host:8443path" as port 8443 and path "path"; RFC 3986's
  // path-abempty after an authority starts with '/' or is empty.
  if (!out.prefix.empty() && out.prefix.front() != '/') {
    return make_error_code(std::errc::invalid_argument);
  }
  while (!out.prefix.empty() && out.prefix.back() == '/') {
    out.prefix.pop_back();
  }
  out.text = std::string(text);
  return out;
}

std::string bare_media_type(std::string_view value) {
  const auto semicolon = value.find(';');
  auto type = value.substr(0, semicolon);
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) {
    type.remove_suffix(1);
  }
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t')) {
    type.remove_prefix(1);
  }
  std::string out(type);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string problem_detail(const http_answer& answer) {
  constexpr std::size_t shown = 200;
  if (bare_media_type(answer.content_type) == problem_media_type) {
    const auto value = parse_json_strict(answer.body, max_body_size);
    if (value && value->is_object()) {
      if (const auto* detail = value->as_object().if_contains("detail");
          detail != nullptr && detail->is_string()) {
        return quote_for_log(std::string_view(detail->as_string()).substr(0, shown));
      }
    }
  }
  return quote_for_log(std::string_view(answer.body).substr(0, shown));
}

result<session_view> parse_session(const http_answer& answer) {
  if (bare_media_type(answer.content_type) != session_media_type) {
    return verify_errc::bad_response;
  }
  const auto value = parse_json_strict(answer.body, max_body_size);
  if (!value || !value->is_object()) {
    return verify_errc::bad_response;
  }
  const auto& object = value->as_object();
  session_view out;
  const auto* status = object.if_contains("status");
  const auto* nonce = object.if_contains("nonce");
  if (status == nullptr || !status->is_string() || nonce == nullptr || !nonce->is_string()) {
    return verify_errc::bad_response;
  }
  out.status = std::string(status->as_string());
  // Current releases send padded base64url, older ones padded standard base64.
  auto decoded = base64_decode_lenient(nonce->as_string());
  if (!decoded) {
    return verify_errc::bad_response;
  }
  out.nonce = std::move(*decoded);
  if (const auto* ear = object.if_contains("result"); ear != nullptr && !ear->is_null()) {
    if (!ear->is_string()) {
      return verify_errc::bad_response;
    }
    out.ear = std::string(ear->as_string());
  }
  return out;
}

result<discovery_view> parse_discovery(const http_answer& answer) {
  const auto type = bare_media_type(answer.content_type);
  if (type != discovery_media_type && type != "application/json") {
    return verify_errc::bad_response;
  }
  const auto value = parse_json_strict(answer.body, max_body_size);
  if (!value || !value->is_object()) {
    return verify_errc::bad_response;
  }
  const auto& object = value->as_object();
  discovery_view out;
  if (const auto* key = object.if_contains("ear-verification-key");
      key != nullptr && key->is_object()) {
    out.ear_key_jwk = json::serialize(*key);
  }
  if (const auto* state = object.if_contains("service-state");
      state != nullptr && state->is_string()) {
    out.service_state = std::string(state->as_string());
  }
  if (const auto* version = object.if_contains("version");
      version != nullptr && version->is_string()) {
    out.version = std::string(version->as_string());
  }
  if (const auto* types = object.if_contains("media-types");
      types != nullptr && types->is_array()) {
    for (const auto& type_value : types->as_array()) {
      if (type_value.is_string()) {
        out.media_types.emplace_back(type_value.as_string());
      }
    }
  }
  return out;
}

std::string session_target(const base_url& base, std::string_view location) {
  if (location.find("://") != std::string_view::npos) {
    auto absolute = parse_base_url(location);
    if (!absolute || absolute->tls != base.tls || absolute->host != base.host ||
        absolute->port != base.port) {
      return {};
    }
    return absolute->prefix;
  }
  // A network-path reference ("//host/...") would name another server.
  auto reference = boost::urls::parse_relative_ref(location);
  if (!reference || reference->has_authority() || reference->has_query() ||
      reference->has_fragment() || reference->encoded_path().empty()) {
    return {};
  }
  const std::string_view path = reference->encoded_path();
  if (path.front() == '/') {
    return std::string(path);
  }
  return base.prefix + std::string(api_root) + std::string(path);
}

}  // namespace atls::verify::detail
