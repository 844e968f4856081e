// libFuzzer target for what a Veraison verifier answers (lib/verify/veraison_answers.cpp): the
// session and discovery documents, problem details and a new session's Location. The input is
// text: a Content-Type line, a Location line, then the body. Build and run: see README.md next
// to this file.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/json/parse.hpp>

#include "../../lib/verify/detail/veraison_answers.hpp"

namespace atls::verify::detail {
namespace {

void require(bool condition) {
  if (!condition) {
    std::abort();
  }
}

// The bytes an origin-form request target may hold after its '/' (RFC 3986 pchar, '/', and
// the '%' of percent-encoding): nothing that could end the path or the request line.
bool is_path_char(char c) {
  static constexpr std::string_view allowed = "-._~!$&'()*+,;=:@/%";
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         allowed.find(c) != std::string_view::npos;
}

std::string_view next_line(std::string_view& text) {
  const auto end = text.find('\n');
  const auto line = text.substr(0, end);
  text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
  return line;
}

void check_session_target(std::string_view location) {
  static const std::array<base_url, 3> bases = {
      *parse_base_url("https://veraison.example:8443/prefix"),
      *parse_base_url("http://10.0.0.5"),
      *parse_base_url("https://[2001:db8::1]:8443/a/b/"),
  };
  for (const auto& base : bases) {
    const auto target = session_target(base, location);
    require(target.empty() ||
            (target.front() == '/' && std::all_of(target.begin(), target.end(), is_path_char)));
  }
}

void check_media_type(std::string_view content_type) {
  const auto bare = bare_media_type(content_type);
  require(bare.find(';') == std::string::npos);
  require(bare.empty() || (bare.front() != ' ' && bare.front() != '\t' && bare.back() != ' ' &&
                           bare.back() != '\t'));
  require(std::none_of(bare.begin(), bare.end(), [](char c) { return c >= 'A' && c <= 'Z'; }));
  require(bare_media_type(bare) == bare);
}

void check_problem_detail(const http_answer& answer) {
  const auto quoted = problem_detail(answer);
  // At most 200 bytes shown, each at most 4 once escaped, between two quotes.
  require(quoted.size() >= 2 && quoted.size() <= 2 + 4 * 200);
  require(quoted.front() == '"' && quoted.back() == '"');
  require(std::none_of(quoted.begin(), quoted.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
  }));
}

void check_documents(const http_answer& answer) {
  if (const auto session = parse_session(answer)) {
    require(bare_media_type(answer.content_type) == session_media_type);
    require(session->nonce.size() <= answer.body.size());
  }
  if (const auto discovery = parse_discovery(answer);
      discovery && !discovery->ear_key_jwk.empty()) {
    boost::json::error_code ec;
    const auto key = boost::json::parse(discovery->ear_key_jwk, ec);
    require(!ec && key.is_object());
  }
}

}  // namespace
}  // namespace atls::verify::detail

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace atls::verify::detail;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  http_answer answer;
  answer.content_type = std::string(next_line(text));
  answer.location = std::string(next_line(text));
  answer.body = std::string(text);
  check_session_target(answer.location);
  check_media_type(answer.content_type);
  check_problem_detail(answer);
  check_documents(answer);
  if (const auto url = parse_base_url(answer.location)) {
    require(url->prefix.empty() || url->prefix.back() != '/');
    require(!url->port.empty() && !url->host.empty());
  }
  return 0;
}
