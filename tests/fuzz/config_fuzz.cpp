// libFuzzer target for the YAML config loaders (lib/config): the input is the text of a config
// file, given to the daemon config's loader and to the verifier policy's. Build and run: see
// README.md next to this file.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>
#include <vector>

#include "atls/config/config.hpp"
#include "atls/config/verifier_policy.hpp"
#include "atls/net/endpoint.hpp"

#include "detail/checker.hpp"
#include <unistd.h>

namespace atls::config {
namespace {

namespace fs = std::filesystem;

void require(bool condition) {
  if (!condition) {
    std::abort();
  }
}

// The directory relative paths resolve against. It holds one file, ak.pem (the Veraison
// vector's AK), so that `trusted_aks: [{pem: ak.pem}]` in a seed loads and the mutations of a
// valid attested listener get past the AK.
const fs::path& base_dir() {
  // Never destroyed (a pointer), so that the exit handler below may still read it.
  static const fs::path* const dir = [] {
    auto* path = new fs::path(fs::temp_directory_path() /
                              ("atls-config-fuzz-" + std::to_string(::getpid())));
    fs::create_directories(*path);
    std::ofstream(*path / "ak.pem")
        << "-----BEGIN PUBLIC KEY-----\n"
           "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2lB1xtcIWePIt/Wwt+s8Ybp+5ji8\n"
           "t2pzGDKSOG7xTGK5gOYkcLCHz4i4L/yGzyEmBO1mZFZNuJz14X0J24+XQQ==\n"
           "-----END PUBLIC KEY-----\n";
    // libFuzzer ends with exit() when a run is done; a crash leaves the directory behind.
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(base_dir(), ec);
    });
    return path;
  }();
  return *dir;
}

constexpr std::string_view file_name = "fuzz.yaml";

// Diagnostics the reader can act on: each says something, points into this file (line 0 only
// for the whole file), and they come in file order. No YAML exception escaped the checker.
void check_diagnostics(const std::vector<diagnostic>& errors) {
  for (std::size_t i = 0; i < errors.size(); ++i) {
    const auto& d = errors[i];
    require(!d.message.empty());
    require(d.where.file == file_name);
    require(d.where.line >= 0 && d.where.column >= 0);
    // load_text's catch-all for a YAML exception out of the checker (a bug in the checker). The
    // prefix, not a substring: messages quote the unknown keys they are about.
    require(!d.message.starts_with("internal error while reading"));
    require(!to_string(d).empty());
    if (i > 0) {
      const auto& p = errors[i - 1].where;
      require(std::pair(p.line, p.column) <= std::pair(d.where.line, d.where.column));
    }
  }
}

bool valid_duration(std::chrono::milliseconds d) {
  return d.count() >= 0 && d <= detail::max_duration;
}

bool valid_handle(std::uint32_t h) {
  return h >= 0x81000000U && h <= 0x817fffffU;
}

// A config that loaded keeps the rules config/README.md states ("Rules across keys" and the
// ranges of each key); a violation is an incorrect acceptance.
void check_accepted(const daemon_config& c) {
  require(c.threads >= 1 && c.threads <= 64);
  require(valid_duration(c.drain_timeout) && c.drain_timeout.count() > 0);
  require(valid_handle(c.tpm.ak_handle) && valid_handle(c.tpm.tik_handle));
  require(c.tpm.ak_handle != c.tpm.tik_handle);
  if (c.watch_config) {
    require(valid_duration(*c.watch_config) && c.watch_config->count() > 0);
  }
  if (c.admin) {
    require(valid_duration(c.admin->probe_every) && c.admin->probe_every.count() > 0);
  }
  require(!c.listeners.empty());
  std::set<std::string> names;
  for (std::size_t i = 0; i < c.listeners.size(); ++i) {
    const auto& l = c.listeners[i];
    require(!l.name.empty());
    require(names.insert(l.name).second);
    for (std::size_t j = 0; j < i; ++j) {
      require(!(c.listeners[j].listen == l.listen));
    }
    require(l.max_connections >= 1 && l.max_connections <= 1'000'000);
    require(l.buffer_size >= 1024 && l.buffer_size <= std::size_t{16} * 1024 * 1024);
    require(valid_duration(l.timeouts.connect) && valid_duration(l.timeouts.handshake) &&
            valid_duration(l.timeouts.idle));
    const bool inbound = l.mode == listener_mode::inbound;
    require(std::holds_alternative<inbound_tls>(l.tls) == inbound);
    if (!inbound) {
      require(l.proxy_protocol == proxy_protocol_version::none);
      require(l.allow_non_loopback || net::is_loopback(l.listen));
      const auto& tls = std::get<outbound_tls>(l.tls);
      require(tls.cert.has_value() == tls.key.has_value());
      require(!tls.server_name.empty());
    }
    if (l.attestation) {
      const auto& a = *l.attestation;
      require(a.peer || a.self);
      require(valid_duration(a.reattest_every));
      if (a.self) {
        const auto& pcrs = a.self->pcrs.pcrs;
        require(!pcrs.empty() && std::is_sorted(pcrs.begin(), pcrs.end()) &&
                std::adjacent_find(pcrs.begin(), pcrs.end()) == pcrs.end());
      }
      if (a.peer) {
        require(valid_duration(a.peer->verifier_grace));
        // Background check: exactly the chosen verifier is configured; passport: no verifier,
        // at least one key that signs EARs.
        const auto& p = *a.peer;
        if (a.model == attestation_model::background_check) {
          const bool local = p.verifier == verifier_kind::local;
          require(p.local.has_value() == local && p.veraison.has_value() == !local);
          require(p.passport_keys.empty());
        } else {
          require(!p.local && !p.veraison && !p.passport_keys.empty());
        }
      }
    }
  }
}

// Two loads of the same text agree: the same diagnostics, and, when it loads, the same
// listeners in the same order (the parts that print; the structs have no operator==).
std::string summary(const load_result& r) {
  std::string out;
  for (const auto& d : r.errors) {
    out += to_string(d) + "\n";
  }
  if (r.config) {
    out += "threads " + std::to_string(r.config->threads) + "\n";
    for (const auto& l : r.config->listeners) {
      out += l.name + " " + net::to_string(l.listen) + " " + net::to_string(l.upstream) + " " +
             std::to_string(l.max_connections) + " " + std::to_string(l.buffer_size) + " " +
             std::to_string(l.timeouts.idle.count()) + (l.attestation ? " attested" : "") + "\n";
    }
  }
  return out;
}

void daemon_config_loader(std::string_view text) {
  const auto first = load_text(text, file_name, base_dir());
  require(first.config.has_value() == first.errors.empty());
  check_diagnostics(first.errors);
  if (first.config) {
    check_accepted(*first.config);
  }
  const auto again = load_text(text, file_name, base_dir());
  require(summary(first) == summary(again));
}

void verifier_policy_loader(std::string_view text) {
  const auto r = load_verifier_policy_text(text, file_name, base_dir());
  require(r.policy.has_value() == r.errors.empty());
  check_diagnostics(r.errors);
}

// The unit parsers on the raw text: a duration that parses prints back to itself.
void units(std::string_view text) {
  if (text.size() > 32) {
    return;
  }
  if (const auto d = parse_duration(text); d && *d <= detail::max_duration) {
    require(parse_duration(detail::format_duration(*d)) == d);
  }
  (void)parse_size(text);
}

}  // namespace
}  // namespace atls::config

// The entry point's name is libFuzzer's.
extern "C" int LLVMFuzzerTestOneInput(  // NOLINT(readability-identifier-naming)
    const std::uint8_t* data, std::size_t size) {
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): bytes as text
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  atls::config::daemon_config_loader(text);
  atls::config::verifier_policy_loader(text);
  atls::config::units(text);
  return 0;
}
