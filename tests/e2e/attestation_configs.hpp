// YAML snippets for attested sidecars in end-to-end tests (the attesting side, the relying
// party's `peer` rules), and the audit lines those sidecars write, so that each test states only
// what it varies. The plain-TLS snippets are in configs.hpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/temp_dir.hpp"

namespace atls::test {

// Whether `part` occurs in `text` (a log, a line of it).
inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// A sha256 PCR as swtpm starts it: all zero.
inline const std::string zero_pcr(64, '0');

// An attesting `self` mapping (indent 6) that quotes PCRs 0-7; `more` is appended inside it
// (indent 8), e.g. a passport's `veraison` mapping.
inline std::string self_block(const std::string& more = "") {
  return "      self:\n        pcrs: [0, 1, 2, 3, 4, 5, 6, 7]\n" + more;
}

// The TLS identity of a sidecar whose key is its TIK, inside `tls` (indent 6).
inline std::string tik_tls(const tpm_identity& tik) {
  return "      cert: " + tik.cert.string() + "\n      key: tpm:tik\n";
}

// Writes the AK's public key to dir/name for a relying party's `trusted_aks: [{pem: ...}]`.
inline std::filesystem::path write_ak(const temp_dir& dir, const tpm_identity& tik,
                                      const std::string& name) {
  const auto path = dir / name;
  std::ofstream(path) << tik.ak_public_pem;
  return path;
}

// A relying party's rules for a peer appraised by the built-in local verifier.
struct local_peer {
  // The one `trusted_aks` entry: "pem: FILE" or "spki_sha256: HEX".
  std::string trusted_ak;
  // What each of PCRs 0-7 must hold.
  std::string pcr_value = zero_pcr;
  // The `accept` mapping, flow style.
  std::string accept = "{minimum_status: affirming}";
  // More lines inside `peer` (indent 8): `pin`, `required`.
  std::string more;
};

// The `trusted_aks` entry for the AK in the PEM file `ak_pem`.
inline std::string trusted_pem(const std::filesystem::path& ak_pem) {
  return "pem: " + ak_pem.string();
}

// The `peer` mapping (indent 6) of a relying party with the local verifier.
inline std::string peer_block(const local_peer& rules) {
  std::string pcrs;
  for (int i = 0; i < 8; ++i) {
    pcrs += std::string(i == 0 ? "" : ", ") + std::to_string(i) + ": " + rules.pcr_value;
  }
  return "      peer:\n        verifier: local\n        local:\n          trusted_aks: [{" +
         rules.trusted_ak + "}]\n          reference_values: {bank: sha256, pcrs: {" + pcrs +
         "}}\n        accept: " + rules.accept + "\n" + rules.more;
}

// A relying party's rules for a peer that presents passports.
struct passport_peer {
  // The PEM public key that signs acceptable EARs.
  std::filesystem::path ear_key;
  // The `accept` mapping, flow style. A passport needs max_age or its own exp.
  std::string accept = "{minimum_status: affirming, max_age: 5m}";
  // More lines inside `peer` (indent 8): `pin`, `required`.
  std::string more;
};

// The `peer` mapping (indent 6) of a relying party that takes passports.
inline std::string passport_peer_block(const passport_peer& rules) {
  return "      peer:\n        passport_keys: [" + rules.ear_key.string() +
         "]\n        accept: " + rules.accept + "\n" + rules.more;
}

// An inbound listener whose TLS key is the TIK, with `attestation` as the lines of its
// `attestation` mapping (indent 6: mode, model, self, peer).
struct attesting_listener {
  std::string name = "in";
  std::string attestation = self_block();
  std::string tls_more;  // more lines inside `tls` (indent 6), e.g. `client_auth`
};

inline std::string attesting_inbound(std::uint16_t port, std::uint16_t origin,
                                     const tpm_identity& tik,
                                     const attesting_listener& listener = {}) {
  return "  - name: " + listener.name + "\n    mode: inbound\n    listen: " + local(port) +
         "\n    upstream: " + local(origin) + "\n    tls:\n" + tik_tls(tik) + listener.tls_more +
         "    attestation:\n" + listener.attestation;
}

// An outbound listener to server.test at `server`, with `attestation` as the lines of its
// `attestation` mapping (indent 6), e.g. the peer_block() by which it judges the server.
inline std::string relying_outbound(const std::string& name, std::uint16_t port,
                                    std::uint16_t server, const pki& p,
                                    const std::string& attestation) {
  return outbound(name, port, local(server), p, "server.test", "    attestation:\n" + attestation);
}

// The header() of configs.hpp with `log.audit: json`.
inline std::string json_audit_header(const std::string& extra = "") {
  auto out = header(extra);
  out.replace(out.find("  level: debug\n"), 15, "  level: debug\n  audit: json\n");
  return out;
}

// The first text audit line of `listener` (from "attestation listener=" to the line's end),
// once `daemon` has written it; fails the test when it does not within 10 s.
inline std::string audit_line(const atlsd& daemon, std::string_view listener) {
  const auto tag = "attestation listener=" + std::string(listener) + " ";
  REQUIRE_MESSAGE(daemon.wait_for_log(tag), "no audit line for " << listener);
  const auto log = daemon.log();
  const auto start = log.find(tag);
  return log.substr(start, log.find('\n', start) - start);
}

// The first JSON audit line of `listener` (log.audit: json), parsed, once `daemon` has written
// it; fails the test when it does not within 10 s or is not JSON.
inline boost::json::object audit_json(const atlsd& daemon, std::string_view listener) {
  const auto tag = "{\"event\":\"attestation\",\"listener\":" +
                   boost::json::serialize(boost::json::string(listener)) + ",";
  REQUIRE_MESSAGE(daemon.wait_for_log(tag), "no audit line for " << listener);
  const auto log = daemon.log();
  const auto start = log.find(tag);
  auto doc = boost::json::parse(log.substr(start, log.find('\n', start) - start));
  REQUIRE(doc.is_object());
  return std::move(doc.as_object());
}

}  // namespace atls::test
