// Loading and validating the daemon's YAML configuration. This is the only file in atls that
// includes yaml-cpp: everything after it works on the plain structs of config.hpp.
//
// The checker walks the document once, against a schema written out as code, and records every
// problem it finds instead of stopping at the first: an operator fixing a config wants the whole
// list in one go. A value that fails keeps its default, so later checks still run; the config is
// returned only when no error was recorded. The typed accessors it shares with the verifier
// policy loader are in detail/checker.hpp.
#include "atls/config/config.hpp"

#include <algorithm>
#include <charconv>
#include <limits>
#include <span>
#include <utility>

#include <boost/asio/ip/address.hpp>
#include <yaml-cpp/yaml.h>

#include "detail/checker.hpp"
#include "detail/verifier_policy.hpp"
#include <sched.h>

namespace atls::config {

namespace {

using detail::contains;
using detail::join;
using detail::mapping;
using detail::value_ref;

// ---------------------------------------------------------------------------------------------
// Numbers with units

constexpr std::uint64_t kib = 1024;
constexpr detail::unit size_units[] = {
    {"B", 1},        {"KiB", kib},           {"k", kib},           {"K", kib}, {"MiB", kib* kib},
    {"M", kib* kib}, {"GiB", kib* kib* kib}, {"G", kib* kib* kib},
};

detail::quantity parse_size_quantity(std::string_view text) {
  return detail::parse_quantity(text, size_units, std::numeric_limits<std::uint64_t>::max());
}

std::string size_message(const detail::quantity& q) {
  switch (*q.error) {
    case detail::quantity_error::empty:
      return "expected a size, e.g. 16KiB";
    case detail::quantity_error::no_number:
      return "a size is a whole number followed by a unit (B, KiB, MiB, GiB), e.g. 16KiB";
    case detail::quantity_error::fraction:
      return "a size must be a whole number of its unit, e.g. 1536KiB instead of 1.5MiB";
    case detail::quantity_error::space:
      return "a size must not contain spaces, e.g. 16KiB";
    case detail::quantity_error::no_unit:
      return "size needs a unit (B, KiB, MiB, GiB), e.g. 16KiB";
    case detail::quantity_error::bad_unit:
      return "unknown size unit '" + std::string(q.suffix) +
             "' (use B, KiB, MiB or GiB; k, M and G mean the same binary multiples)";
    case detail::quantity_error::too_large:
      return "size is too large";
  }
  return "invalid size";
}

// The shortest exact spelling of a size, for range messages ("16MiB" rather than "16777216B").
std::string format_size(std::uint64_t bytes) {
  constexpr std::pair<std::uint64_t, std::string_view> steps[] = {
      {kib * kib * kib, "GiB"}, {kib * kib, "MiB"}, {kib, "KiB"}};
  for (const auto& [factor, name] : steps) {
    if (bytes != 0 && bytes % factor == 0) {
      return std::to_string(bytes / factor) + std::string(name);
    }
  }
  return std::to_string(bytes) + "B";
}

// ---------------------------------------------------------------------------------------------
// Small text checks

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool valid_listener_name(std::string_view name) {
  if (name.empty() || name.size() > 64) {
    return false;
  }
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

// A DNS name as it appears in a certificate's subjectAltName: dot-separated labels of 1 to 63
// letters, digits, '-' or '_' (RFC 1035 section 2.3.4 sizes), 253 characters in all.
bool valid_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  std::size_t label = 0;
  for (const char c : name) {
    if (c == '.') {
      if (label == 0) {
        return false;
      }
      label = 0;
      continue;
    }
    if (!is_alnum(c) && c != '-' && c != '_') {
      return false;
    }
    if (++label > 63) {
      return false;
    }
  }
  return label != 0;
}

bool is_ip_literal(std::string_view text) {
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(std::string(text), ec);
  return !ec;
}

bool has_space_or_control(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f;
  });
}

// Returns why an allow_dns entry is unusable, or an empty string.
std::string dns_pattern_problem(std::string_view name) {
  if (name.empty()) {
    return "must not be empty";
  }
  if (name.find('*') != std::string_view::npos) {
    return "wildcards are not supported in allow_dns: list each DNS name exactly";
  }
  if (!valid_dns_name(name)) {
    return "'" + std::string(name) +
           "' is not a valid DNS name (letters, digits, '-', '_' in dot-separated labels)";
  }
  return "";
}

// Returns why an allow_uris entry is unusable, or an empty string. A '*' may only be the whole last
// path segment ("spiffe://example.org/ns/*"): a prefix match on anything shorter, such as
// "spiffe://example.org/ns*" or "spiffe://*", would accept identities nobody meant to allow.
std::string uri_pattern_problem(std::string_view uri) {
  if (uri.empty()) {
    return "must not be empty";
  }
  if (has_space_or_control(uri)) {
    return "must not contain spaces or control characters";
  }
  const auto scheme_end = uri.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0) {
    return "'" + std::string(uri) +
           "' is not a URI: expected scheme://authority/path, e.g. "
           "spiffe://example.org/ns/prod/sa/web";
  }
  const auto authority_start = scheme_end + 3;
  if (authority_start >= uri.size() || uri[authority_start] == '/') {
    return "'" + std::string(uri) + "' has nothing after '://'";
  }
  const auto star = uri.find('*');
  if (star == std::string_view::npos) {
    return "";
  }
  const bool final_segment =
      star == uri.size() - 1 && uri[star - 1] == '/' && star - 1 > authority_start;
  if (!final_segment) {
    return "'*' is only allowed as the whole last path segment, e.g. spiffe://example.org/ns/*";
  }
  return "";
}

// Returns why a Veraison base URL is unusable, or an empty string. The same rules as the client's
// (verify/veraison_client.cpp), checked here so that a typo is reported at its line.
std::string veraison_url_problem(std::string_view url) {
  if (url.empty()) {
    return "must not be empty";
  }
  if (has_space_or_control(url)) {
    return "must not contain spaces or control characters";
  }
  std::string_view rest;
  if (url.starts_with("https://")) {
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else {
    return "'" + std::string(url) +
           "' is not an http:// or https:// URL, e.g. https://veraison.example:8443";
  }
  const auto authority = rest.substr(0, rest.find('/'));
  if (authority.empty()) {
    return "'" + std::string(url) + "' has no host after '://'";
  }
  if (authority.find('@') != std::string_view::npos) {
    return "user information in the URL is not supported: put a bearer token in 'token'";
  }
  // host[:port], the host maybe a bracketed IPv6 literal.
  const auto bracket = authority.rfind(']');
  if (const auto colon = authority.find(':', bracket == std::string_view::npos ? 0 : bracket);
      colon != std::string_view::npos &&
      !std::all_of(authority.begin() + static_cast<std::ptrdiff_t>(colon) + 1, authority.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return "'" + std::string(url) + "' has a port that is not a number";
  }
  if (url.find_first_of("?#") != std::string_view::npos) {
    return "a base URL has no query or fragment";
  }
  return "";
}

// An exporter label (RFC 8446 section 7.5) both sides must spell the same: short printable ASCII,
// so that it can be written in YAML and read in logs without surprises.
bool valid_binder_label(std::string_view label) {
  return !label.empty() && label.size() <= 64 &&
         std::all_of(label.begin(), label.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

// ---------------------------------------------------------------------------------------------
// The checker

constexpr std::string_view root_keys[] = {"log",   "drain_timeout", "threads",  "tpm",
                                          "admin", "watch_config",  "listeners"};
constexpr std::string_view admin_keys[] = {"listen", "allow_non_loopback", "probe_every"};
constexpr std::string_view tpm_keys[] = {"tcti", "ak_handle", "tik_handle", "queue_limit"};
constexpr std::string_view log_keys[] = {"level", "audit"};
// In the order of enum audit_format.
constexpr std::string_view audit_formats[] = {"text", "json"};
constexpr std::string_view listener_keys[] = {"name",
                                              "mode",
                                              "listen",
                                              "upstream",
                                              "allow_non_loopback",
                                              "tls",
                                              "timeouts",
                                              "max_connections",
                                              "buffer_size",
                                              "attestation",
                                              "proxy_protocol",
                                              "multiplex"};
constexpr std::string_view inbound_tls_keys[] = {"cert", "key", "client_auth", "alpn"};
constexpr std::string_view outbound_tls_keys[] = {"ca",   "server_name", "allow_dns", "allow_uris",
                                                  "cert", "key",         "alpn"};
constexpr std::string_view client_auth_keys[] = {"ca", "allow_dns", "allow_uris"};
constexpr std::string_view timeout_keys[] = {"connect", "handshake", "idle"};
// In the order of enum log_level, so that an index converts to it.
constexpr std::string_view log_levels[] = {"trace", "debug", "info", "warn", "error"};
static_assert(static_cast<std::size_t>(log_level::error) + 1 == std::size(log_levels));
constexpr std::string_view modes[] = {"inbound", "outbound"};
// In the order of enum proxy_protocol_version, so that an index converts to it.
constexpr std::string_view proxy_protocol_versions[] = {"none", "v2"};
static_assert(static_cast<std::size_t>(proxy_protocol_version::v2) + 1 ==
              std::size(proxy_protocol_versions));
constexpr std::string_view attestation_keys[] = {
    "mode", "model", "reattest_every", "reattest_on_reload", "binder", "self", "peer"};
constexpr std::string_view binder_keys[] = {"label", "key_encoding"};
constexpr std::string_view self_keys[] = {"pcrs", "veraison", "refresh_every"};
constexpr std::string_view peer_keys[] = {"required",      "verifier", "local", "veraison",
                                          "passport_keys", "accept",   "pin",   "verifier_grace"};
constexpr std::string_view veraison_keys[] = {
    "urls", "ca", "token", "ear_key", "trust_discovered_key", "request_timeout"};
// Each in the order of its enum, so that an index converts to it.
constexpr std::string_view attestation_modes[] = {"post-handshake", "intra-handshake"};
static_assert(static_cast<std::size_t>(attestation_mode::intra_handshake) + 1 ==
              std::size(attestation_modes));
constexpr std::string_view attestation_models[] = {"background-check", "passport"};
static_assert(static_cast<std::size_t>(attestation_model::passport) + 1 ==
              std::size(attestation_models));
constexpr std::string_view verifier_kinds[] = {"local", "veraison"};
static_assert(static_cast<std::size_t>(verifier_kind::veraison) + 1 == std::size(verifier_kinds));
constexpr std::string_view key_encodings[] = {"spki-der", "raw-public-key"};
static_assert(static_cast<std::size_t>(binder_key_encoding::raw_public_key) + 1 ==
              std::size(key_encodings));
// TPM 2.0 PC Client platforms have 24 PCRs (TCG PC Client Platform TPM Profile, PCR banks).
constexpr std::uint64_t max_pcr = 23;
constexpr std::uint16_t tpm_alg_sha256 = 0x000B;
constexpr std::size_t sha256_size = 32;

// What the attestation rules need to know about a listener's tls block, known only when the mode
// and the whole block were valid: otherwise those errors are the ones to fix.
struct tls_facts {
  listener_mode mode = listener_mode::inbound;
  // The TLS key is the TPM's TIK (outbound: with a client certificate), so that the evidence can
  // vouch for the key the handshake used.
  bool tpm_key = false;
  // Inbound: client certificates are checked against a CA (tls.client_auth).
  bool client_auth = false;
};

// What the rest of a listener's checks need to know about it.
struct listener_draft {
  listener value;
  std::string path;
  bool name_ok = false;
  YAML::Mark name_mark;
  bool listen_ok = false;
  YAML::Mark listen_mark;
};

class checker : public detail::checker_base {
 public:
  using checker_base::checker_base;

  std::optional<daemon_config> check_root(const YAML::Node& root) {
    const value_ref self{root, "", root.Mark(), root.Mark()};
    if (root.IsNull()) {
      error(YAML::Mark::null_mark(), "", "the config is empty: it needs at least 'listeners'");
      return std::nullopt;
    }
    const auto m = open_mapping(self, root_keys);
    if (!m) {
      return std::nullopt;
    }

    daemon_config out;
    if (const auto* e = m->find("log")) {
      if (const auto log = open_mapping(e->value, log_keys)) {
        if (const auto* level = log->find("level")) {
          if (const auto v = get_choice(level->value, log_levels)) {
            out.log_level = static_cast<config::log_level>(*v);
          }
        }
        if (const auto* audit = log->find("audit")) {
          if (const auto v = get_choice(audit->value, audit_formats)) {
            out.audit = static_cast<config::audit_format>(*v);
          }
        }
      }
    }
    if (const auto* e = m->find("drain_timeout")) {
      if (const auto d = get_duration(e->value, false)) {
        out.drain_timeout = *d;
      }
    }
    if (const auto* e = m->find("threads")) {
      if (const auto n = get_integer(e->value, 1, 64)) {
        out.threads = static_cast<unsigned>(*n);
      }
    }
    if (const auto* e = m->find("admin")) {
      out.admin = check_admin(e->value);
    }
    if (const auto* e = m->find("watch_config")) {
      if (const auto d = get_duration(e->value, false)) {
        if (*d < std::chrono::milliseconds(100) || *d > std::chrono::hours(1)) {
          error(e->value.mark, e->value.path, "must be from 100ms to 1h");
        } else {
          out.watch_config = *d;
        }
      }
    }
    const auto* tpm = m->find("tpm");
    if (tpm != nullptr) {
      out.tpm = check_tpm(tpm->value);
    }
    if (const auto v = require(*m, "listeners")) {
      out.listeners = check_listeners(*v);
    }
    check_tpm_is_configured(out, tpm != nullptr);
    return out;
  }

 private:
  std::optional<std::uint64_t> get_size(const value_ref& v, std::uint64_t min, std::uint64_t max) {
    if (!v.node.IsScalar()) {
      error(v.mark, v.path, "expected a size, e.g. 16KiB");
      return std::nullopt;
    }
    const auto q = parse_size_quantity(v.node.Scalar());
    if (q.error) {
      error(v.mark, v.path, size_message(q));
      return std::nullopt;
    }
    if (q.value < min || q.value > max) {
      error(v.mark, v.path, "must be from " + format_size(min) + " to " + format_size(max));
      return std::nullopt;
    }
    return q.value;
  }

  // Only a listen address may name a socket that systemd passed (systemd:NAME).
  enum class endpoint_role { listen, upstream };

  std::optional<net::endpoint_spec> get_endpoint(const value_ref& v, endpoint_role role) {
    const auto s = get_string(v);
    if (!s) {
      return std::nullopt;
    }
    auto r =
        role == endpoint_role::listen ? net::parse_listen_endpoint(*s) : net::parse_endpoint(*s);
    if (!r) {
      error(v.mark, v.path, "invalid address '" + *s + "': " + r.error().message());
      return std::nullopt;
    }
    return std::move(*r);
  }

  tpm_settings check_tpm(const value_ref& v) {
    tpm_settings out;
    const auto m = open_mapping(v, tpm_keys);
    if (!m) {
      return out;
    }
    if (const auto* e = m->find("tcti")) {
      if (auto s = get_nonempty_string(e->value)) {
        out.tcti = std::move(*s);
      }
    }
    const auto* ak = m->find("ak_handle");
    const auto* tik = m->find("tik_handle");
    if (ak != nullptr) {
      out.ak_handle = get_persistent_handle(ak->value).value_or(out.ak_handle);
    }
    if (tik != nullptr) {
      out.tik_handle = get_persistent_handle(tik->value).value_or(out.tik_handle);
    }
    if (const auto* e = m->find("queue_limit")) {
      if (const auto n = get_integer(e->value, 1, 4096)) {
        out.queue_limit = static_cast<std::size_t>(*n);
      }
    }
    if (out.ak_handle == out.tik_handle) {
      const auto& where = tik != nullptr ? tik->value : ak != nullptr ? ak->value : v;
      error(where.mark, where.path, "the AK and the TIK need different handles");
    }
    return out;
  }

  // The admin endpoints say what the daemon depends on and how it is doing, and /metrics names
  // listeners and peers' reasons: loopback only, unless the operator says otherwise.
  admin_settings check_admin(const value_ref& v) {
    admin_settings out;
    const auto m = open_mapping(v, admin_keys);
    if (!m) {
      return out;
    }
    const auto* listen = m->find("listen");
    if (listen != nullptr) {
      if (auto e = get_endpoint(listen->value, endpoint_role::upstream)) {
        out.listen = std::move(*e);
      }
    }
    bool allow_non_loopback = false;
    if (const auto* e = m->find("allow_non_loopback")) {
      allow_non_loopback = get_bool(e->value).value_or(false);
    }
    if (listen != nullptr && !allow_non_loopback && !net::is_loopback(out.listen)) {
      error(listen->value.mark, listen->value.path,
            "the admin endpoints are for this host only: listen on a loopback address or a unix "
            "socket, or set allow_non_loopback: true (Kubernetes probes reach the pod's address)");
    }
    if (const auto* e = m->find("probe_every")) {
      if (const auto d = get_duration(e->value, false)) {
        if (*d < std::chrono::milliseconds(100) || *d > std::chrono::minutes(10)) {
          error(e->value.mark, e->value.path, "must be from 100ms to 10m");
        } else {
          out.probe_every = *d;
        }
      }
    }
    return out;
  }

  // A listener whose key is tpm:tik (every listener that attests has one) needs a TPM: falling
  // back to a default device would make a config with a forgotten `tpm:` section look complete.
  // Whether the TPM answers is for assemble (and so `atlsd --check`), which opens it.
  void check_tpm_is_configured(const daemon_config& c, bool tpm_section) {
    if (tpm_section) {
      return;
    }
    for (const auto& l : c.listeners) {
      const private_key_ref* key = nullptr;
      if (const auto* in = std::get_if<inbound_tls>(&l.tls)) {
        key = &in->key;
      } else if (const auto& out_key = std::get<outbound_tls>(l.tls).key) {
        key = &*out_key;
      }
      if (const auto* tik = key != nullptr ? std::get_if<tpm_key_ref>(key) : nullptr) {
        error_at(tik->where, tik->key,
                 "the TLS key is in the TPM, but no TPM is configured: add a 'tpm' section "
                 "(tcti: device:/dev/tpmrm0 for the kernel's resource manager, or the TCTI of "
                 "your TPM)");
        return;
      }
    }
  }

  // An owner-hierarchy persistent handle (TPM 2.0 Part 2 §7.5; the platform's range above
  // 0x81800000 needs platform authorisation), in hex as TPM tools print it.
  std::optional<std::uint32_t> get_persistent_handle(const value_ref& v) {
    const auto s = get_nonempty_string(v);
    if (!s) {
      return std::nullopt;
    }
    std::uint32_t handle = 0;
    const bool hex = s->size() > 2 && (*s)[0] == '0' && ((*s)[1] == 'x' || (*s)[1] == 'X');
    const char* first = s->data() + (hex ? 2 : 0);
    const char* last = s->data() + s->size();
    const auto [end, ec] = std::from_chars(first, last, handle, hex ? 16 : 10);
    if (ec != std::errc() || end != last || handle < 0x81000000U || handle > 0x817FFFFFU) {
      error(v.mark, v.path,
            "'" + *s + "' is not an owner persistent handle: expected 0x81000000 to 0x817fffff");
      return std::nullopt;
    }
    return handle;
  }

  // A PEM file, or "tpm:tik" for the TPM's TLS identity key.
  std::optional<private_key_ref> get_private_key(const value_ref& v) {
    if (v.node.IsScalar() && v.node.Scalar().starts_with("tpm:")) {
      if (v.node.Scalar() != "tpm:tik") {
        error(v.mark, v.path,
              "unknown TPM key '" + v.node.Scalar() +
                  "': the TPM's TLS key is 'tpm:tik' (a file whose name starts with 'tpm:' "
                  "can be written as ./" +
                  v.node.Scalar() + ")");
        return std::nullopt;
      }
      return tpm_key_ref{pos(v.mark), v.path};
    }
    if (auto f = get_file(v)) {
      return std::move(*f);
    }
    return std::nullopt;
  }

  // A list of strings, each of which problem() accepts.
  std::vector<std::string> get_allow_list(const value_ref& v,
                                          std::string (*problem)(std::string_view)) {
    std::vector<std::string> out;
    const auto items = get_list(v);
    if (!items) {
      return out;
    }
    for (const auto& item : *items) {
      const auto s = get_string(item);
      if (!s) {
        continue;
      }
      if (const auto why = problem(*s); !why.empty()) {
        error(item.mark, item.path, why);
        continue;
      }
      out.push_back(*s);
    }
    return out;
  }

  void check_allow_lists(const mapping& m, peer_verification& out) {
    if (const auto* e = m.find("allow_dns")) {
      out.allow_dns = get_allow_list(e->value, dns_pattern_problem);
    }
    if (const auto* e = m.find("allow_uris")) {
      out.allow_uris = get_allow_list(e->value, uri_pattern_problem);
    }
  }

  // A tunnel is negotiated as ALPN h2 (PROTOCOL-NOTES.md, "Multiplexing"): an outbound listener
  // offers only that, and an inbound one cannot also relay a workload's own h2.
  void check_multiplex_alpn(const value_ref& v, const listener& l) {
    if (const auto* out = std::get_if<outbound_tls>(&l.tls); out != nullptr && !out->alpn.empty()) {
      error(v.mark, v.path,
            "a multiplexing outbound listener negotiates ALPN h2 for its tunnels itself: remove "
            "tls.alpn");
    }
    if (const auto* in = std::get_if<inbound_tls>(&l.tls);
        in != nullptr && std::ranges::find(in->alpn, "h2") != in->alpn.end()) {
      error(v.mark, v.path,
            "a multiplexing inbound listener takes ALPN h2 as a tunnel: remove h2 from tls.alpn "
            "(its workload's own HTTP/2 travels inside the tunnel)");
    }
  }

  // `alpn: [h2, http/1.1]`: RFC 7301 protocol names, most preferred first. Printable ASCII
  // only, so that what the log and the PROXY v2 header carry is what the operator wrote.
  std::vector<std::string> get_alpn(const value_ref& v) {
    std::vector<std::string> out;
    const auto items = get_list(v);
    if (!items) {
      return out;
    }
    if (items->empty()) {
      error(v.mark, v.path, "list at least one protocol, or leave 'alpn' out");
    }
    for (const auto& item : *items) {
      auto s = get_nonempty_string(item);
      if (!s) {
        continue;
      }
      const bool printable = std::ranges::all_of(*s, [](char c) { return c > ' ' && c <= '~'; });
      if (s->size() > 255 || !printable) {
        error(item.mark, item.path,
              "a protocol name is 1 to 255 printable ASCII characters without spaces, e.g. h2 or "
              "http/1.1");
        continue;
      }
      if (std::ranges::find(out, *s) != out.end()) {
        error(item.mark, item.path, "'" + *s + "' is listed twice");
        continue;
      }
      out.push_back(std::move(*s));
    }
    return out;
  }

  std::optional<std::string> get_server_name(const value_ref& v) {
    auto s = get_nonempty_string(v);
    if (!s) {
      return std::nullopt;
    }
    if (s->size() > 2 && s->front() == '[' && s->back() == ']') {
      error(v.mark, v.path, "write an IPv6 address without brackets");
      return std::nullopt;
    }
    if (s->find('*') != std::string::npos) {
      error(v.mark, v.path, "must be one exact name, without wildcards");
      return std::nullopt;
    }
    // '_' appears in some SAN entries but not in host names, and the TLS layer refuses it here.
    const bool host_name = valid_dns_name(*s) && s->find('_') == std::string::npos;
    if (!host_name && !is_ip_literal(*s)) {
      error(v.mark, v.path, "'" + *s + "' is neither a DNS name nor an IP address");
      return std::nullopt;
    }
    return s;
  }

  inbound_tls check_inbound_tls(const value_ref& v) {
    inbound_tls tls;
    const auto hint = [](std::string_view key) -> std::string {
      if (!contains(outbound_tls_keys, key)) {
        return "";
      }
      std::string text = ": it applies to outbound listeners only";
      if (contains(client_auth_keys, key)) {
        text += " (to verify client certificates, put it under tls.client_auth)";
      }
      return text;
    };
    const auto m = open_mapping(v, inbound_tls_keys, hint);
    if (!m) {
      return tls;
    }
    if (const auto r = require(*m, "cert")) {
      if (auto f = get_file(*r)) {
        tls.cert = std::move(*f);
      }
    }
    if (const auto r = require(*m, "key")) {
      if (auto k = get_private_key(*r)) {
        tls.key = std::move(*k);
      }
    }
    if (const auto* e = m->find("client_auth")) {
      if (const auto ca_map = open_mapping(e->value, client_auth_keys)) {
        peer_verification pv;
        if (const auto r = require(*ca_map, "ca")) {
          if (auto f = get_file(*r)) {
            pv.ca = std::move(*f);
          }
        }
        check_allow_lists(*ca_map, pv);
        tls.client_auth = std::move(pv);
      }
    }
    if (const auto* e = m->find("alpn")) {
      tls.alpn = get_alpn(e->value);
    }
    return tls;
  }

  outbound_tls check_outbound_tls(const value_ref& v) {
    outbound_tls tls;
    const auto hint = [](std::string_view key) -> std::string {
      if (key != "client_auth") {
        return "";
      }
      return ": it applies to inbound listeners only (an outbound listener verifies the server "
             "with tls.ca and presents a client certificate with tls.cert and tls.key)";
    };
    const auto m = open_mapping(v, outbound_tls_keys, hint);
    if (!m) {
      return tls;
    }
    if (const auto r = require(*m, "ca")) {
      if (auto f = get_file(*r)) {
        tls.server.ca = std::move(*f);
      }
    }
    if (const auto r = require(*m, "server_name")) {
      if (auto s = get_server_name(*r)) {
        tls.server_name = std::move(*s);
      }
    }
    check_allow_lists(*m, tls.server);
    if (const auto* e = m->find("alpn")) {
      tls.alpn = get_alpn(e->value);
    }
    const auto* cert = m->find("cert");
    const auto* key = m->find("key");
    if (cert) {
      tls.cert = get_file(cert->value);
    }
    if (key) {
      tls.key = get_private_key(key->value);
    }
    if (cert && !key) {
      error(cert->key_mark, cert->value.path,
            "'cert' is set without 'key': a client certificate needs its private key");
    }
    if (key && !cert) {
      error(key->key_mark, key->value.path,
            "'key' is set without 'cert': a private key needs its client certificate");
    }
    return tls;
  }

  void check_timeouts(const value_ref& v, config::timeouts& out) {
    const auto m = open_mapping(v, timeout_keys);
    if (!m) {
      return;
    }
    if (const auto* e = m->find("connect")) {
      if (const auto d = get_duration(e->value, false)) {
        out.connect = *d;
      }
    }
    if (const auto* e = m->find("handshake")) {
      if (const auto d = get_duration(e->value, false)) {
        out.handshake = *d;
      }
    }
    if (const auto* e = m->find("idle")) {
      if (const auto d = get_duration(e->value, true)) {
        out.idle = *d;
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // attestation (config/README.md, "Attestation")

  static tls_facts facts_of(listener_mode mode,
                            const std::variant<inbound_tls, outbound_tls>& tls) {
    tls_facts facts{.mode = mode};
    if (const auto* in = std::get_if<inbound_tls>(&tls)) {
      facts.tpm_key = std::holds_alternative<tpm_key_ref>(in->key);
      facts.client_auth = in->client_auth.has_value();
    } else if (const auto* out = std::get_if<outbound_tls>(&tls)) {
      facts.tpm_key = out->cert && out->key && std::holds_alternative<tpm_key_ref>(*out->key);
    }
    return facts;
  }

  // `pcrs: [0, 1, 2]`: PCR indices of the sha256 bank, each once.
  std::optional<attest::pcr_selection> get_pcr_selection(const value_ref& v) {
    const auto items = get_list(v);
    if (!items) {
      return std::nullopt;
    }
    if (items->empty()) {
      error(v.mark, v.path, "list at least one PCR");
      return std::nullopt;
    }
    const auto errors_before = error_count();
    attest::pcr_selection out{.hash_alg = tpm_alg_sha256, .pcrs = {}};
    for (const auto& item : *items) {
      const auto n = get_integer(item, 0, max_pcr);
      if (!n) {
        continue;
      }
      const auto index = static_cast<std::uint8_t>(*n);
      if (std::find(out.pcrs.begin(), out.pcrs.end(), index) != out.pcrs.end()) {
        error(item.mark, item.path, "PCR " + std::to_string(index) + " is listed twice");
        continue;
      }
      out.pcrs.push_back(index);
    }
    if (error_count() != errors_before) {
      return std::nullopt;
    }
    // A quote selects PCRs as a bitmap (TPM 2.0 Part 2, TPMS_PCR_SELECTION): the order written
    // carries no meaning, and the evidence lists them ascending.
    std::sort(out.pcrs.begin(), out.pcrs.end());
    return out;
  }

  // `pin: [HEX, ...]`: SHA-256 of attested keys' DER SubjectPublicKeyInfo, each once.
  std::optional<std::vector<std::array<std::uint8_t, sha256_size>>> get_pins(const value_ref& v) {
    const auto items = get_list(v);
    if (!items) {
      return std::nullopt;
    }
    const auto errors_before = error_count();
    std::vector<std::array<std::uint8_t, sha256_size>> out;
    for (const auto& item : *items) {
      const auto digest = get_hex(item, sha256_size, "an SPKI SHA-256");
      if (!digest) {
        continue;
      }
      std::array<std::uint8_t, sha256_size> pin{};
      std::copy(digest->begin(), digest->end(), pin.begin());
      if (std::find(out.begin(), out.end(), pin) != out.end()) {
        error(item.mark, item.path, "this key is listed twice");
        continue;
      }
      out.push_back(pin);
    }
    if (error_count() != errors_before) {
      return std::nullopt;
    }
    return out;
  }

  veraison_settings check_veraison(const value_ref& v) {
    veraison_settings out;
    out.where = pos(v.owner);
    const auto m = open_mapping(v, veraison_keys);
    if (!m) {
      return out;
    }
    if (const auto r = require(*m, "urls")) {
      out.urls = get_allow_list(*r, veraison_url_problem);
      if (r->node.IsSequence() && r->node.size() == 0) {
        error(r->mark, r->path, "list at least one URL, e.g. https://veraison.example:8443");
      }
    }
    if (const auto* e = m->find("ca")) {
      out.ca = get_file(e->value);
    }
    if (const auto* e = m->find("token")) {
      out.token = get_file(e->value);
    }
    const auto* ear_key = m->find("ear_key");
    if (ear_key != nullptr) {
      out.ear_key = get_file(ear_key->value);
    }
    const auto* trust = m->find("trust_discovered_key");
    // Unset or a valid bool; when it is neither, that is the error to fix.
    bool trust_known = true;
    if (trust != nullptr) {
      const auto b = get_bool(trust->value);
      trust_known = b.has_value();
      out.trust_discovered_key = b.value_or(false);
    }
    if (const auto* e = m->find("request_timeout")) {
      if (const auto d = get_duration(e->value, false)) {
        out.request_timeout = *d;
      }
    }
    // An EAR is only as good as the key that checks its signature: the key must come from the
    // operator, or the operator must say explicitly that whatever the service publishes will do.
    if (ear_key == nullptr && trust_known && !out.trust_discovered_key) {
      error(m->self.owner, m->self.path,
            "missing 'ear_key' (the PEM public key that signs the service's attestation "
            "results); 'trust_discovered_key: true' takes the key the service publishes "
            "instead, for tests and demos only");
    }
    if (ear_key != nullptr && out.trust_discovered_key && trust != nullptr) {
      error(trust->value.mark, trust->value.path,
            "set either 'ear_key' or 'trust_discovered_key: true', not both: with 'ear_key' "
            "the published key is never trusted");
    }
    return out;
  }

  // `binder`: the exporter label and key encoding of the binder that ties evidence to this TLS
  // connection (RFC 9261 exported authenticators, draft-fossati-seat-early-attestation).
  void check_binder(const value_ref& v, attestation& out) {
    const auto m = open_mapping(v, binder_keys);
    if (!m) {
      return;
    }
    if (const auto* e = m->find("label")) {
      if (auto s = get_string(e->value)) {
        if (valid_binder_label(*s)) {
          out.binder_label = std::move(*s);
        } else {
          error(e->value.mark, e->value.path,
                "must be 1 to 64 printable ASCII characters, e.g. Attestation");
        }
      }
    }
    if (const auto* e = m->find("key_encoding")) {
      if (const auto i = get_choice(e->value, key_encodings)) {
        out.binder_key = static_cast<binder_key_encoding>(*i);
      }
    }
  }

  // `self`. model is unset when its own value was wrong, and the rules that depend on it are
  // then skipped.
  static bool is(const attestation_model* model, attestation_model value) {
    return model != nullptr && *model == value;
  }

  self_attestation check_self(const value_ref& v, const attestation_model* model) {
    self_attestation out;
    out.where = pos(v.owner);
    const auto m = open_mapping(v, self_keys);
    if (!m) {
      return out;
    }
    if (const auto* e = m->find("pcrs")) {
      if (auto pcrs = get_pcr_selection(e->value)) {
        out.pcrs = std::move(*pcrs);
      }
    }
    // A key that the model refuses is reported once, below, without also checking what is in it.
    const auto* veraison = m->find("veraison");
    if (veraison != nullptr && !is(model, attestation_model::background_check)) {
      out.veraison = check_veraison(veraison->value);
    }
    if (is(model, attestation_model::passport) && veraison == nullptr) {
      error(m->self.owner, m->self.path,
            "model passport needs 'veraison': the service that appraises this sidecar's "
            "evidence and issues the attestation result it presents");
    }
    if (is(model, attestation_model::background_check) && veraison != nullptr) {
      error(veraison->key_mark, veraison->value.path,
            "'veraison' under self applies to model passport only: with background-check the "
            "peer's verifier appraises this sidecar's evidence");
    }
    if (const auto* e = m->find("refresh_every")) {
      if (is(model, attestation_model::background_check)) {
        error(e->key_mark, e->value.path,
              "'refresh_every' applies to model passport only: with background-check evidence is "
              "made fresh for each connection");
      } else if (const auto d = get_duration(e->value, false)) {
        if (*d < std::chrono::seconds(1) || *d > std::chrono::hours(24)) {
          error(e->value.mark, e->value.path,
                "refresh_every must be from 1s to 24h: how often a new attestation result is "
                "fetched");
        } else {
          out.refresh_every = *d;
        }
      }
    }
    return out;
  }

  // `peer`. model is unset when its own value was wrong; needs_pin says that nothing but
  // attestation identifies the peer (an inbound listener without tls.client_auth).
  peer_attestation check_peer(const value_ref& v, const attestation_model* model, bool needs_pin) {
    peer_attestation out;
    out.where = pos(v.owner);
    const auto m = open_mapping(v, peer_keys);
    if (!m) {
      return out;
    }
    if (const auto* e = m->find("required")) {
      out.required = get_bool(e->value).value_or(out.required);
    }
    // A key that the model or the verifier refuses is reported once, by the rules below,
    // without also checking what is in it. Unset model or kind (a wrong value): check it all.
    const bool passport = is(model, attestation_model::passport);
    const bool background_check = is(model, attestation_model::background_check);
    const auto* verifier = m->find("verifier");
    std::optional<verifier_kind> kind = out.verifier;
    if (verifier != nullptr && !passport) {
      const auto i = get_choice(verifier->value, verifier_kinds);
      kind = i ? std::optional(static_cast<verifier_kind>(*i)) : std::nullopt;
      out.verifier = kind.value_or(out.verifier);
    }
    const auto* local = m->find("local");
    if (local != nullptr && !passport && kind != verifier_kind::veraison) {
      out.local = detail::check_local_verifier(*this, local->value);
    }
    const auto* veraison = m->find("veraison");
    if (veraison != nullptr && !passport && kind != verifier_kind::local) {
      out.veraison = check_veraison(veraison->value);
    }
    const auto* passport_keys = m->find("passport_keys");
    if (passport_keys != nullptr && !background_check) {
      if (const auto items = get_list(passport_keys->value)) {
        if (items->empty()) {
          error(passport_keys->value.mark, passport_keys->value.path,
                "list at least one PEM public key that signs acceptable attestation results");
        }
        for (const auto& item : *items) {
          if (auto f = get_file(item)) {
            out.passport_keys.push_back(std::move(*f));
          }
        }
      }
    }
    if (const auto* e = m->find("accept")) {
      if (auto accept = detail::check_appraisal_policy(*this, e->value)) {
        out.accept = std::move(*accept);
      }
    }
    if (const auto* e = m->find("verifier_grace")) {
      if (passport) {
        error(e->key_mark, e->value.path,
              "'verifier_grace' applies to model background-check only: a passport is checked "
              "without calling a verifier");
      } else if (const auto d = get_duration(e->value, true)) {
        if (*d > std::chrono::hours(24)) {
          error(e->value.mark, e->value.path, "verifier_grace is at most 24h");
        } else {
          out.verifier_grace = *d;
        }
      }
    }
    const auto* pin = m->find("pin");
    bool pin_ok = true;
    if (pin != nullptr) {
      auto pins = get_pins(pin->value);
      pin_ok = pins.has_value();
      if (pins) {
        out.pinned_keys = std::move(*pins);
      }
    }

    if (passport) {
      check_passport_peer(*m);
    } else if (background_check) {
      check_background_check_peer(*m, kind);
    }

    // RA-only: without a CA-checked client certificate, any client that can produce evidence
    // accepted by `accept` would do, including one on another machine with the same software.
    if (needs_pin && pin_ok && out.pinned_keys.empty()) {
      const auto& where = pin != nullptr ? pin->value : m->self;
      error(pin != nullptr ? where.mark : where.owner, where.path,
            "an inbound listener without tls.client_auth does not check client certificates "
            "against a CA, so only attestation identifies the client: list the attested keys to "
            "accept in 'pin' (RA-only), or add tls.client_auth (RA + PKI)");
    }
    return out;
  }

  // Model passport: the peer presents an attestation result; nothing is called to appraise it.
  void check_passport_peer(const mapping& m) {
    for (const std::string_view key : {"verifier", "local", "veraison"}) {
      if (const auto* e = m.find(key)) {
        error(e->key_mark, e->value.path,
              "'" + std::string(key) +
                  "' applies to model background-check only: with passport the peer presents "
                  "an attestation result signed by one of 'passport_keys', and no verifier is "
                  "called");
      }
    }
    if (m.find("passport_keys") == nullptr) {
      error(m.self.owner, m.self.path,
            "model passport needs 'passport_keys': the PEM public keys that sign acceptable "
            "attestation results");
    }
  }

  // Model background-check: the peer's evidence goes to the verifier named by `verifier`.
  void check_background_check_peer(const mapping& m, std::optional<verifier_kind> kind) {
    if (const auto* e = m.find("passport_keys")) {
      error(e->key_mark, e->value.path,
            "'passport_keys' applies to model passport only: with background-check the "
            "verifier appraises the peer's evidence");
    }
    if (!kind) {
      return;
    }
    const auto* local = m.find("local");
    const auto* veraison = m.find("veraison");
    switch (*kind) {
      case verifier_kind::local:
        if (veraison != nullptr) {
          error(veraison->key_mark, veraison->value.path,
                "'veraison' needs 'verifier: veraison' (the verifier is local unless set)");
        } else if (local == nullptr) {
          error(m.self.owner, m.self.path,
                "verifier local needs 'local': the trusted attestation keys and reference "
                "values");
        }
        return;
      case verifier_kind::veraison:
        if (local != nullptr) {
          error(local->key_mark, local->value.path,
                "'local' needs 'verifier: local', not veraison");
        } else if (veraison == nullptr) {
          error(m.self.owner, m.self.path,
                "verifier veraison needs 'veraison': the service's URLs and the key that signs "
                "its attestation results");
        }
        return;
    }
  }

  attestation check_attestation(const value_ref& v, const std::optional<tls_facts>& tls) {
    attestation out;
    out.where = pos(v.owner);
    const auto m = open_mapping(v, attestation_keys);
    if (!m) {
      return out;
    }
    // Each unset when its value was wrong: the rules that depend on it are then skipped.
    // (Flags and a pointer rather than std::optional of an enum: GCC 12 at -O2 warns that such
    // an optional "may be used uninitialized" where it cannot be.)
    bool mode_known = true;
    bool model_known = true;
    if (const auto* e = m->find("mode")) {
      const auto i = get_choice(e->value, attestation_modes);
      mode_known = i.has_value();
      if (i) {
        out.mode = static_cast<attestation_mode>(*i);
      }
    }
    if (const auto* e = m->find("model")) {
      const auto i = get_choice(e->value, attestation_models);
      model_known = i.has_value();
      if (i) {
        out.model = static_cast<attestation_model>(*i);
      }
    }
    const attestation_model* model = model_known ? &out.model : nullptr;
    if (const auto* e = m->find("reattest_every")) {
      if (const auto d = get_duration(e->value, true)) {
        out.reattest_every = *d;
        // Intra-handshake evidence is bound to the handshake (draft-fossati-seat-early-
        // attestation); only a post-handshake exchange can be repeated on an open connection.
        if (d->count() > 0 && mode_known && out.mode == attestation_mode::intra_handshake) {
          error(e->value.mark, e->value.path,
                "re-attestation needs mode post-handshake: intra-handshake attestation happens "
                "once, inside the handshake");
        }
      }
    }
    if (const auto* e = m->find("binder")) {
      check_binder(e->value, out);
    }

    const auto* self = m->find("self");
    const auto* peer = m->find("peer");
    if (self == nullptr && peer == nullptr) {
      error(m->self.owner, m->self.path,
            "an attestation block needs 'self' (this sidecar attests), 'peer' (the peer must "
            "attest) or both");
    }
    if (self != nullptr) {
      out.self = check_self(self->value, model);
      // The evidence vouches for the TLS key (TPM2_Certify of the TIK): a key outside the TPM
      // would make it vouch for nothing the handshake used.
      if (tls && !tls->tpm_key) {
        error(self->key_mark, self->value.path,
              std::string("a listener that attests without a TPM key: the evidence proves that "
                          "the TLS key is the TPM's TLS identity key, so ") +
                  (tls->mode == listener_mode::inbound
                       ? "set tls.key: tpm:tik"
                       : "set tls.cert and tls.key: tpm:tik (the client certificate of the TIK)"));
      }
    }
    if (peer != nullptr) {
      const bool needs_pin = tls && tls->mode == listener_mode::inbound && !tls->client_auth;
      out.peer = check_peer(peer->value, model, needs_pin);
    }
    if (const auto* e = m->find("reattest_on_reload")) {
      out.reattest_on_reload = get_bool(e->value).value_or(false);
      // Only a relying party has a policy to apply to its open connections, and only a
      // post-handshake exchange can be repeated on one.
      if (out.reattest_on_reload && peer == nullptr) {
        error(e->key_mark, e->value.path,
              "reattest_on_reload needs 'peer': it re-checks the peers of open connections "
              "under a reloaded policy, and this listener does not appraise its peers");
      } else if (out.reattest_on_reload && mode_known &&
                 out.mode == attestation_mode::intra_handshake) {
        error(e->key_mark, e->value.path,
              "reattest_on_reload needs mode post-handshake: intra-handshake attestation happens "
              "once, inside the handshake (accept.max_age bounds those connections instead)");
      }
    }
    return out;
  }

  // `mode` is unset when the listener's own mode was wrong: that error is the one to fix.
  void check_proxy_protocol(const value_ref& v, std::optional<listener_mode> mode, listener& l) {
    // Version 1 is a text line with no room for TLVs: the workload would lose the TLS and
    // attestation facts without a word, so it is refused rather than offered.
    if (v.node.IsScalar() && v.node.Scalar() == "v1") {
      error(v.mark, v.path,
            "PROXY protocol v1 is not supported: its text line cannot carry the TLS and "
            "attestation TLVs; use v2 (nginx: listen ... proxy_protocol; haproxy: accept-proxy)");
      return;
    }
    const auto i = get_choice(v, proxy_protocol_versions);
    if (!i) {
      return;
    }
    l.proxy_protocol = static_cast<proxy_protocol_version>(*i);
    if (mode == listener_mode::outbound && l.proxy_protocol != proxy_protocol_version::none) {
      error(v.mark, v.path,
            "proxy_protocol applies only to inbound listeners: it tells the local workload who "
            "called, and an outbound listener's upstream is the remote TLS server");
    }
  }

  listener_draft check_listener(const value_ref& v) {
    listener_draft draft;
    draft.path = v.path;
    listener& l = draft.value;
    l.where = pos(v.owner);

    const auto m = open_mapping(v, listener_keys);
    if (!m) {
      return draft;
    }

    if (const auto r = require(*m, "name")) {
      if (auto s = get_string(*r)) {
        if (valid_listener_name(*s)) {
          l.name = std::move(*s);
          draft.name_ok = true;
          draft.name_mark = r->mark;
        } else {
          error(r->mark, r->path,
                "'" + *s + "' is not a valid name: use 1 to 64 of A-Z a-z 0-9 _ . -");
        }
      }
    }

    std::optional<listener_mode> mode;
    if (const auto r = require(*m, "mode")) {
      if (const auto i = get_choice(*r, modes)) {
        mode = *i == 0 ? listener_mode::inbound : listener_mode::outbound;
        l.mode = *mode;
      }
    }

    std::optional<net::endpoint_spec> listen;
    if (const auto r = require(*m, "listen")) {
      listen = get_endpoint(*r, endpoint_role::listen);
      if (listen) {
        l.listen = *listen;
        draft.listen_ok = true;
        draft.listen_mark = r->mark;
      }
    }

    if (const auto r = require(*m, "upstream")) {
      if (const auto upstream = get_endpoint(*r, endpoint_role::upstream)) {
        l.upstream = *upstream;
        if (listen && *listen == *upstream) {
          error(r->mark, r->path,
                "upstream is the same address as listen: the listener would connect to itself");
        }
      }
    }

    const auto* allow_entry = m->find("allow_non_loopback");
    // Unset or a valid bool. When it is neither, that error is the one to fix: the loopback rule
    // below cannot know what was meant.
    bool allow_known = true;
    if (allow_entry) {
      const auto b = get_bool(allow_entry->value);
      allow_known = b.has_value();
      l.allow_non_loopback = b.value_or(false);
    }

    const auto errors_before_tls = error_count();
    const bool has_tls = m->find("tls") != nullptr;
    if (const auto r = require(*m, "tls")) {
      if (!mode) {
        // Which keys belong in tls depends on the mode; without one, listing every key as
        // unknown would bury the one error that matters.
        if (!r->node.IsMap()) {
          error(r->mark, r->path, "expected a mapping");
        }
      } else if (*mode == listener_mode::inbound) {
        l.tls = check_inbound_tls(*r);
      } else {
        l.tls = check_outbound_tls(*r);
      }
    }
    std::optional<tls_facts> facts;
    if (mode && has_tls && error_count() == errors_before_tls) {
      facts = facts_of(*mode, l.tls);
    }

    if (const auto* e = m->find("timeouts")) {
      check_timeouts(e->value, l.timeouts);
    }
    if (const auto* e = m->find("max_connections")) {
      if (const auto n = get_integer(e->value, 1, 1'000'000)) {
        l.max_connections = static_cast<std::size_t>(*n);
      }
    }
    if (const auto* e = m->find("buffer_size")) {
      if (const auto n = get_size(e->value, kib, 16 * kib * kib)) {
        l.buffer_size = static_cast<std::size_t>(*n);
      }
    }

    if (const auto* e = m->find("attestation")) {
      l.attestation = check_attestation(e->value, facts);
    }
    if (const auto* e = m->find("proxy_protocol")) {
      check_proxy_protocol(e->value, mode, l);
    }
    if (const auto* e = m->find("multiplex")) {
      l.multiplex = get_bool(e->value).value_or(false);
      if (l.multiplex) {
        check_multiplex_alpn(e->value, l);
      }
    }

    // allow_non_loopback is true only when allow_entry set it; the null check is for the
    // analyzer, which cannot see that through the checker's out-of-line accessors.
    if (mode == listener_mode::inbound && l.allow_non_loopback && allow_entry != nullptr) {
      error(allow_entry->value.mark, allow_entry->value.path,
            "allow_non_loopback applies only to outbound listeners: an inbound listener accepts "
            "TLS and may listen on any address");
    }
    // An outbound listener takes plaintext and relays it over TLS with this host's client
    // identity. Reachable from the network, it lets anyone borrow that identity.
    if (mode == listener_mode::outbound && listen && allow_known && !net::is_loopback(*listen) &&
        !l.allow_non_loopback) {
      error(draft.listen_mark, join(v.path, "listen"),
            "outbound listener on non-loopback address '" + net::to_string(*listen) +
                "' would expose a plaintext relay that anyone who can reach it can use to connect "
                "with this host's TLS identity; listen on 127.0.0.1, ::1 or a unix: socket, or set "
                "allow_non_loopback: true if the network in front of it is trusted");
    }
    return draft;
  }

  std::vector<listener> check_listeners(const value_ref& v) {
    std::vector<listener> out;
    const auto items = get_list(v);
    if (!items) {
      return out;
    }
    if (items->empty()) {
      error(v.mark, v.path, "at least one listener is required");
      return out;
    }
    std::vector<listener_draft> drafts;
    for (const auto& item : *items) {
      drafts.push_back(check_listener(item));
    }

    for (std::size_t i = 0; i < drafts.size(); ++i) {
      const auto& d = drafts[i];
      for (std::size_t j = 0; j < i; ++j) {
        const auto& earlier = drafts[j];
        if (d.name_ok && earlier.name_ok && d.value.name == earlier.value.name) {
          error(d.name_mark, join(d.path, "name"),
                "duplicate listener name '" + d.value.name + "' (first used on line " +
                    std::to_string(earlier.name_mark.line + 1) + ")");
          break;
        }
      }
      for (std::size_t j = 0; j < i; ++j) {
        const auto& earlier = drafts[j];
        if (d.listen_ok && earlier.listen_ok && d.value.listen == earlier.value.listen) {
          const auto who = earlier.name_ok ? "'" + earlier.value.name + "'" : earlier.path;
          error(d.listen_mark, join(d.path, "listen"),
                "listen address '" + net::to_string(d.value.listen) +
                    "' is already used by listener " + who + " (line " +
                    std::to_string(earlier.listen_mark.line + 1) + ")");
          break;
        }
      }
    }
    // Moved only now: the comparisons above read every earlier draft.
    for (auto& d : drafts) {
      out.push_back(std::move(d.value));
    }
    return out;
  }
};

}  // namespace

std::string to_string(const diagnostic& d) {
  std::string out = d.where.file;
  // Line 0 means the problem concerns the whole file, such as a file that cannot be read.
  if (d.where.line > 0) {
    out += ":" + std::to_string(d.where.line) + ":" + std::to_string(d.where.column);
  }
  out += ": ";
  if (!d.key.empty()) {
    out += d.key + ": ";
  }
  out += d.message;
  return out;
}

std::optional<std::string> read_named_file(const file_ref& file, std::vector<diagnostic>& errors) {
  std::vector<diagnostic> why;
  auto text = detail::read_file(file.path, file.path.string(), why);
  for (auto& d : why) {
    errors.push_back({file.where, file.key, std::move(d.message)});
  }
  return text;
}

load_result load_file(const std::filesystem::path& path) {
  load_result result;
  const auto text = detail::read_file(path, "config", result.errors);
  if (!text) {
    return result;
  }
  const auto base_dir = detail::base_dir_of(path, "config", result.errors);
  if (!base_dir) {
    return result;
  }
  return load_text(*text, path.string(), *base_dir);
}

load_result load_text(std::string_view yaml, std::string_view file_name,
                      const std::filesystem::path& base_dir) {
  load_result result;
  const auto document = detail::parse_document(yaml, file_name, "config", result.errors);
  if (!document) {
    return result;
  }

  checker c(file_name, base_dir);
  std::optional<daemon_config> config;
  try {
    config = c.check_root(*document);
  } catch (const YAML::Exception& e) {
    // The checker only reads nodes it has type-checked, so this would be a bug in it; still a
    // diagnostic rather than an exception escaping into the daemon.
    c.error(e.mark, "", std::string("internal error while reading the config: ") + e.msg);
  }
  result.errors = c.take_errors();
  if (!result.errors.empty()) {
    detail::sort_by_position(result.errors);
    return result;
  }
  result.config = std::move(config);
  return result;
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  const auto q = detail::parse_duration_quantity(text);
  if (q.error) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(q.value));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  const auto q = parse_size_quantity(text);
  if (q.error) {
    return std::nullopt;
  }
  return q.value;
}

unsigned usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) {
    return 1;
  }
  return static_cast<unsigned>(std::clamp(CPU_COUNT(&set), 1, 64));
}

}  // namespace atls::config
