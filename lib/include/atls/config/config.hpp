// The daemon's configuration: plain option structs filled from YAML. This module is the only one
// that sees YAML; the others receive these structs (or options derived from them).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "atls/attest/evidence.hpp"
#include "atls/common/result.hpp"
#include "atls/net/endpoint.hpp"
#include "atls/verify/appraisal_policy.hpp"
#include "atls/verify/local_verifier.hpp"

namespace atls::config {

// Where a value came from, for messages that point at the line to fix. Lines are 1-based.
struct source_pos {
  std::string file;
  int line = 0;
  int column = 0;
};

// One problem found in a config file. key is the dotted path, e.g. "listeners[1].tls.cert".
struct diagnostic {
  source_pos where;
  std::string key;
  std::string message;
};

// "file:line:column: key: message", the form editors and CI logs link to.
std::string to_string(const diagnostic& d);

// A file named in the config. Relative paths are resolved against the config file's directory.
struct file_ref {
  std::filesystem::path path;
  source_pos where;
  std::string key;
};

// The TPM that holds the attestation key and the TLS identity key (attest/tpm.hpp).
struct tpm_settings {
  std::string tcti = "device:/dev/tpmrm0";  // tpm2-tss TCTI: device:…, swtpm:…, tabrmd
  std::uint32_t ak_handle = 0x81000100;     // owner persistent handles, 0x81000000-0x817fffff
  std::uint32_t tik_handle = 0x81000101;
  // Beyond this many TPM commands waiting or running, new connections whose handshake needs the
  // TPM are refused at once (attest::tpm_options::queue_limit).
  std::size_t queue_limit = 64;
};

// "key: tpm:tik": the TLS private key is the TPM's TLS identity key, which never leaves the TPM.
struct tpm_key_ref {
  source_pos where;
  std::string key;
};

using private_key_ref = std::variant<file_ref, tpm_key_ref>;

enum class listener_mode { inbound, outbound };

// What an inbound listener sends its upstream before the first workload byte.
enum class proxy_protocol_version {
  none,
  v2,  // a PROXY protocol v2 header with the client's address, TLS and attestation TLVs
};

struct timeouts {
  std::chrono::milliseconds connect{std::chrono::seconds(10)};
  std::chrono::milliseconds handshake{std::chrono::seconds(10)};
  // Zero means no idle limit.
  std::chrono::milliseconds idle{std::chrono::minutes(5)};
};

// A peer certificate is acceptable when it chains to the CA and, if any allow-list is given,
// one of its subjectAltName DNS names or URIs is on a list. See tls::peer_name_policy.
struct peer_verification {
  file_ref ca;
  std::vector<std::string> allow_dns;
  std::vector<std::string> allow_uris;
};

// Inbound: we are the TLS server.
struct inbound_tls {
  file_ref cert;                                 // PEM chain, leaf first
  private_key_ref key;                           // PEM private key, or tpm:tik
  std::optional<peer_verification> client_auth;  // set: a client certificate is required
  std::vector<std::string> alpn;                 // the workload's protocols, most preferred first
};

// Outbound: we are the TLS client.
struct outbound_tls {
  peer_verification server;      // ca is required; allow-lists are optional
  std::string server_name;       // SNI and the name the server's certificate must carry
  std::optional<file_ref> cert;  // client certificate for mTLS; cert and key come together
  std::optional<private_key_ref> key;
  std::vector<std::string> alpn;  // offered to the server, most preferred first
};

// ---------------------------------------------------------------------------------------------
// Attestation (config/README.md, "Attestation"). A listener without an `attestation` block is
// plain TLS.

enum class attestation_mode { post_handshake, intra_handshake };
enum class attestation_model { background_check, passport };
enum class verifier_kind { local, veraison };
enum class binder_key_encoding { spki_der, raw_public_key };

// A Veraison verification service (challenge-response API).
struct veraison_settings {
  source_pos where;
  std::vector<std::string> urls;    // base URLs, tried in order (fail-over); at least one
  std::optional<file_ref> ca;       // PEM bundle for https; absent: the system store
  std::optional<file_ref> token;    // a file holding the bearer token; absent: no token
  std::optional<file_ref> ear_key;  // PEM public key that signs the EARs (pinned)
  // Trust the key the service publishes at discovery; for tests and demos only.
  bool trust_discovered_key = false;
  std::chrono::milliseconds request_timeout{std::chrono::seconds(5)};
};

// This sidecar is the relying party: what the peer must prove, and who appraises it.
struct peer_attestation {
  source_pos where;
  // false: a peer that does not offer attestation is served as plain TLS (and logged as such);
  // a peer that offers it must still pass.
  bool required = true;
  verifier_kind verifier = verifier_kind::local;
  std::optional<verify::local_verifier_options> local;  // verifier: local
  std::optional<veraison_settings> veraison;            // verifier: veraison
  // passport model: the keys that sign acceptable EARs (PEM public keys).
  std::vector<file_ref> passport_keys;
  verify::appraisal_policy accept;
  // Identity pins: SHA-256 of the attested key's DER SubjectPublicKeyInfo (the TIK, which the
  // evidence proves to be fixed in one TPM). Empty: any attester that passes `accept`, which is
  // allowed only with RA + PKI (a CA-checked peer certificate).
  std::vector<std::array<std::uint8_t, 32>> pinned_keys;
  // Re-attestation of an open connection: how long after its last accepted round a verifier
  // that cannot be reached is waited out before the connection closes (attested/settings.hpp).
  std::chrono::milliseconds verifier_grace{std::chrono::minutes(1)};
};

// This sidecar attests: its TLS key is the TPM's TIK (tls.key: tpm:tik).
struct self_attestation {
  source_pos where;
  // Quoted PCRs, sha256 bank (TPM_ALG_SHA256), indices ascending. The default, 0 to 7, is what
  // the firmware and boot loader measure on a PC Client platform.
  attest::pcr_selection pcrs{.hash_alg = 0x000B, .pcrs = {0, 1, 2, 3, 4, 5, 6, 7}};
  // passport model: the service that issues this sidecar's EAR.
  std::optional<veraison_settings> veraison;
  // passport model: how often a new EAR is fetched. The relying party's max_age must exceed it,
  // with room for a failed attempt or two.
  std::chrono::milliseconds refresh_every{std::chrono::minutes(1)};
};

struct attestation {
  source_pos where;
  attestation_mode mode = attestation_mode::post_handshake;
  attestation_model model = attestation_model::background_check;
  std::optional<peer_attestation> peer;
  std::optional<self_attestation> self;
  std::string binder_label = "Attestation";
  binder_key_encoding binder_key = binder_key_encoding::spki_der;
  // Zero: attest once per connection. Otherwise the relying party asks again this often.
  std::chrono::milliseconds reattest_every{0};
  // At a reload that keeps the listener, its open connections are re-checked under the new
  // policy (attested/settings.hpp, reattest_on_reload).
  bool reattest_on_reload = false;
};

struct listener {
  std::string name;
  source_pos where;
  listener_mode mode = listener_mode::inbound;
  net::endpoint_spec listen;
  net::endpoint_spec upstream;
  // An outbound listener accepts plaintext; listening beyond loopback needs this explicit opt-in.
  bool allow_non_loopback = false;
  std::variant<inbound_tls, outbound_tls> tls;
  // Qualified: gcc rejects a member that "changes the meaning" of its own type's name.
  config::timeouts timeouts;
  std::size_t max_connections = 1024;
  std::size_t buffer_size = std::size_t{16} * 1024;  // per direction, per connection
  std::optional<config::attestation> attestation;
  proxy_protocol_version proxy_protocol = proxy_protocol_version::none;  // inbound only
  // Workload connections as HTTP/2 CONNECT streams over one attested connection per peer and
  // connection loop (proxy::listener_options::multiplex).
  bool multiplex = false;
};

enum class log_level { trace, debug, info, warn, error };

// How the attestation audit lines are written: key=value text, or one JSON object per line.
enum class audit_format { text, json };

// The admin listener: /healthz, /readyz and /metrics over plain HTTP. Off unless configured.
struct admin_settings {
  net::endpoint_spec listen = net::tcp_endpoint{"127.0.0.1", 9901};
  // How often the TPM and the verifiers are probed for /readyz.
  std::chrono::milliseconds probe_every{std::chrono::seconds(5)};
};

// The CPUs this process may run on (its affinity mask, which cpusets and systemd's CPUAffinity=
// narrow), from 1 to 64: the default number of connection threads.
[[nodiscard]] unsigned usable_cores();

struct daemon_config {
  config::log_level log_level = config::log_level::info;
  config::audit_format audit = audit_format::text;
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(30)};
  unsigned threads = usable_cores();
  tpm_settings tpm;
  std::optional<admin_settings> admin;
  // Set: the config file is re-read this often and reloaded when its content changed, as a
  // SIGHUP would (for a Kubernetes ConfigMap, whose updates replace the file).
  std::optional<std::chrono::milliseconds> watch_config;
  std::vector<listener> listeners;
};

struct load_result {
  std::optional<daemon_config> config;  // set only when errors is empty
  std::vector<diagnostic> errors;
};

// Parses and validates a config file: syntax, unknown keys, types, units, ranges and cross-field
// rules. It touches the file system only to read the file itself: whether the certificate files
// exist and load is checked when the TLS contexts are built.
[[nodiscard]] load_result load_file(const std::filesystem::path& path);

// The same over text already in memory; file_name is used in diagnostics, and relative paths are
// resolved against base_dir.
[[nodiscard]] load_result load_text(std::string_view yaml, std::string_view file_name,
                                    const std::filesystem::path& base_dir);

// Reads a file that the config names and that is used only when the listeners are built (PEM
// keys, token files): at most 1 MiB, like the config itself. On failure appends a diagnostic at
// the key that names the file, saying why, and returns nothing.
[[nodiscard]] std::optional<std::string> read_named_file(const file_ref& file,
                                                         std::vector<diagnostic>& errors);

// "10s", "500ms", "5m", "1h". A unit is required; "0s" is zero.
[[nodiscard]] std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// "16KiB", "1MiB", "512B", also "16k"/"1M"/"1G" as binary multiples. A unit is required.
[[nodiscard]] std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace atls::config
