// TLS 1.3 contexts for the two roles a sidecar plays. Only TLS 1.3 is ever negotiated.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "atls/common/result.hpp"
#include "atls/tls/peer_names.hpp"

using SSL_CTX = struct ssl_ctx_st;
using EVP_PKEY = struct evp_pkey_st;

namespace atls::tls {

// A private key that lives outside this process, such as the TPM's TLS identity key
// (attest/tik_key.hpp). Its signing may pause the handshake as an OpenSSL ASYNC job; a stream
// whose context has one resumes the handshake when the key's work is done.
struct external_key {
  std::shared_ptr<EVP_PKEY> pkey;
  std::string description;  // for messages, e.g. "TPM key 0x81000101"
};

// A PEM file, or a key held elsewhere.
using private_key_source = std::variant<std::filesystem::path, external_key>;

struct server_options {
  std::filesystem::path cert_chain;  // PEM, leaf first
  private_key_source private_key;
  // Set: clients must present a certificate that chains to this bundle and passes client_names.
  std::optional<std::filesystem::path> client_ca;
  peer_name_policy client_names;
  // The application protocols the workload speaks, most preferred first (RFC 7301). A client
  // that offers ALPN but none of these is refused with the no_application_protocol alert; a
  // client that offers none gets no ALPN. Empty: ALPN is not negotiated.
  std::vector<std::string> alpn;
  // Multiplexing (proxy/mux.hpp): "h2" is chosen after the workload's protocols, as a tunnel.
  // With no workload protocols, a client that offers neither gets no ALPN rather than an alert.
  bool accept_tunnels = false;
};

struct client_options {
  std::filesystem::path ca;  // the server's certificate must chain to this bundle
  // Sent as SNI (unless it is an IP literal) and matched against the server certificate.
  std::string server_name;
  peer_name_policy server_names;  // optional extra allow-list on the server certificate's SANs
  std::optional<std::filesystem::path> cert_chain;  // client certificate for mTLS
  std::optional<private_key_source> private_key;
  // Offered to the server, most preferred first (RFC 7301). Empty: none offered.
  std::vector<std::string> alpn;
};

enum class role { client, server };

// An immutable, shareable TLS configuration. Copies share the underlying SSL_CTX; a connection
// keeps its copy alive, so replacing a listener's context never disturbs open connections.
class context {
 public:
  // Loads the certificate chain and key and checks that they match. Fails with
  // tls::errc::certificate_unusable, private_key_unusable, key_does_not_match_certificate or
  // ca_unusable; the detail names the file and OpenSSL's reason.
  [[nodiscard]] static detailed_result<context> make_server(const server_options& options);

  // Fails like make_server, and with errc::bad_server_name.
  [[nodiscard]] static detailed_result<context> make_client(const client_options& options);

  [[nodiscard]] tls::role role() const;
  [[nodiscard]] SSL_CTX* native_handle() const;          // borrowed
  [[nodiscard]] const std::string& server_name() const;  // client role only; empty for servers
  // True when the private key is an external_key: handshakes then run as OpenSSL ASYNC jobs,
  // which must be resumed on the thread that started them (see tls::stream).
  [[nodiscard]] bool has_external_key() const;

  struct state;

 private:
  explicit context(std::shared_ptr<const state> shared) : state_(std::move(shared)) {}
  std::shared_ptr<const state> state_;
};

}  // namespace atls::tls
