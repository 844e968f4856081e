#include "atls/tls/context.hpp"

#include <algorithm>
#include <string_view>

#include <boost/asio/ip/address.hpp>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "atls/common/named_file.hpp"
#include "atls/common/openssl_ptr.hpp"
#include "atls/tls/error.hpp"

namespace atls::tls {

struct context::state {
  struct ctx_deleter {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
  };
  std::unique_ptr<SSL_CTX, ctx_deleter> ctx;
  tls::role role = tls::role::server;
  std::string server_name;
  peer_name_policy peer_names;  // read by the verify callback through SSL_CTX ex_data
  bool external_key = false;
  // Server role: the protocols the workload speaks in ALPN's wire form (RFC 7301 §3.1), then h2
  // when the listener takes tunnels; read by the selection callback.
  std::vector<unsigned char> alpn;
  bool alpn_required = true;  // no overlap is fatal (the workload speaks only these)
};

namespace {

int policy_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// Runs inside the handshake for every certificate of the peer's chain. After OpenSSL's own
// checks (chain, validity, and for clients the host name) pass, the leaf's SANs must satisfy the
// allow-lists. Synchronous, no I/O, never throws across OpenSSL.
int verify_peer(int preverify_ok, X509_STORE_CTX* store) noexcept {
  if (preverify_ok != 1 || X509_STORE_CTX_get_error_depth(store) != 0) {
    return preverify_ok;
  }
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  const auto* policy = static_cast<const peer_name_policy*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), policy_index()));
  if (policy == nullptr || !policy->restricts()) {
    return 1;
  }
  try {
    if (names_allowed(*policy, subject_alt_names(X509_STORE_CTX_get_current_cert(store)))) {
      return 1;
    }
  } catch (...) {
    // Out of memory while copying names: refuse rather than guess.
  }
  X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
  return 0;
}

failure openssl_failure(errc code, const std::filesystem::path& file) {
  auto reasons = drain_openssl_errors();
  std::string detail = file.string();
  if (!reasons.empty()) {
    detail += ": " + reasons;
  }
  return {code, std::move(detail)};
}

// Settings both roles share: TLS 1.3 only, modern groups, no session resumption yet.
detailed_result<std::unique_ptr<SSL_CTX, context::state::ctx_deleter>> new_tls13_context(
    const SSL_METHOD* method) {
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, context::state::ctx_deleter> ctx(SSL_CTX_new(method));
  if (!ctx) {
    return failure{errc::context_setup_failed, drain_openssl_errors()};
  }
  SSL_CTX* c = ctx.get();
  // RFC 8446 only: TLS 1.2 and below are refused by both roles.
  const bool ok = SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) == 1 &&
                  SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) == 1 &&
                  SSL_CTX_set1_groups_list(c, "X25519:P-256:P-384") == 1;
  if (!ok) {
    return failure{errc::context_setup_failed, drain_openssl_errors()};
  }
  // Resumption is off: attested connections must not resume (draft-fossati-seat-expat), and a
  // sidecar pair that never resumes keeps one code path. See PROTOCOL-NOTES.md.
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
  // Idle connections give their record buffers back: matters with thousands of open tunnels.
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return ctx;
}

std::string describe(const private_key_source& key) {
  if (const auto* file = std::get_if<std::filesystem::path>(&key)) {
    return file->string();
  }
  return std::get<external_key>(key).description;
}

// A key file's PEM is never decrypted with a password: with no callback, OpenSSL would prompt
// on the terminal, and a daemon has none.
int no_password(char* /*buffer*/, int /*size*/, int /*writing*/, void* /*unused*/) {
  return -1;
}

// The text of a file the listener names, read as the config is (read_named_file), or why not.
detailed_result<std::string> read_pem(errc code, const std::filesystem::path& file) {
  auto text = read_named_file(file);
  if (!text) {
    return failure{code, "cannot read " + file.string() + ": " + text.error().detail};
  }
  return std::move(*text);
}

void free_x509_infos(STACK_OF(X509_INFO) * infos) {
  sk_X509_INFO_pop_free(infos, X509_INFO_free);
}
using x509_infos_ptr = std::unique_ptr<STACK_OF(X509_INFO), openssl_free<free_x509_infos>>;

bio_ptr memory_bio(std::string_view text) {
  return bio_ptr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// PEM reading stops at the end of the text with "no start line"; anything else queued means a
// block was there but could not be read.
bool only_end_of_pem_queued() {
  const auto code = ERR_peek_last_error();
  if (ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE) {
    ERR_clear_error();
    return true;
  }
  return code == 0;
}

// The certificate, then its chain, as SSL_CTX_use_certificate_chain_file reads a file.
bool use_certificate_chain(SSL_CTX* c, std::string_view pem) {
  const auto bio = memory_bio(pem);
  if (!bio) {
    return false;
  }
  const x509_ptr leaf(PEM_read_bio_X509_AUX(bio.get(), nullptr, no_password, nullptr));
  if (!leaf || SSL_CTX_use_certificate(c, leaf.get()) != 1 || SSL_CTX_clear_chain_certs(c) != 1) {
    return false;
  }
  for (;;) {
    x509_ptr issuer(PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr));
    if (!issuer) {
      return only_end_of_pem_queued();
    }
    if (SSL_CTX_add0_chain_cert(c, issuer.get()) != 1) {
      return false;
    }
    (void)issuer.release();  // the context owns it now
  }
}

bool use_private_key(SSL_CTX* c, std::string_view pem) {
  const auto bio = memory_bio(pem);
  const pkey_ptr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr)
                         : nullptr);
  return key && SSL_CTX_use_PrivateKey(c, key.get()) == 1;
}

detailed_result<void> load_identity(SSL_CTX* c, const std::filesystem::path& chain,
                                    const private_key_source& key) {
  ERR_clear_error();
  const auto chain_pem = read_pem(errc::certificate_unusable, chain);
  if (!chain_pem) {
    return chain_pem.error();
  }
  if (!use_certificate_chain(c, *chain_pem)) {
    return openssl_failure(errc::certificate_unusable, chain);
  }
  bool used = false;
  if (const auto* file = std::get_if<std::filesystem::path>(&key)) {
    const auto key_pem = read_pem(errc::private_key_unusable, *file);
    if (!key_pem) {
      return key_pem.error();
    }
    used = use_private_key(c, *key_pem);
  } else {
    const auto& external = std::get<external_key>(key);
    used = external.pkey != nullptr && SSL_CTX_use_PrivateKey(c, external.pkey.get()) == 1;
  }
  if (!used) {
    // OpenSSL checks the key against the certificate already loaded; say so plainly.
    const auto code = ERR_peek_last_error();
    const bool mismatch =
        ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH;
    return openssl_failure(
        mismatch ? errc::key_does_not_match_certificate : errc::private_key_unusable,
        describe(key));
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    return openssl_failure(errc::key_does_not_match_certificate, describe(key));
  }
  return {};
}

// Every certificate and CRL in the file, as SSL_CTX_load_verify_locations reads one.
detailed_result<void> load_trust(SSL_CTX* c, const std::filesystem::path& ca) {
  ERR_clear_error();
  const auto pem = read_pem(errc::ca_unusable, ca);
  if (!pem) {
    return pem.error();
  }
  const auto bio = memory_bio(*pem);
  const x509_infos_ptr infos(bio ? PEM_X509_INFO_read_bio(bio.get(), nullptr, no_password, nullptr)
                                 : nullptr);
  if (!infos) {
    return openssl_failure(errc::ca_unusable, ca);
  }
  X509_STORE* store = SSL_CTX_get_cert_store(c);
  int loaded = 0;
  for (int i = 0; i < sk_X509_INFO_num(infos.get()); ++i) {
    const X509_INFO* info = sk_X509_INFO_value(infos.get(), i);
    if (info->x509 != nullptr) {
      if (X509_STORE_add_cert(store, info->x509) != 1) {
        return openssl_failure(errc::ca_unusable, ca);
      }
      ++loaded;
    }
    if (info->crl != nullptr) {
      if (X509_STORE_add_crl(store, info->crl) != 1) {
        return openssl_failure(errc::ca_unusable, ca);
      }
      ++loaded;
    }
  }
  if (loaded == 0) {
    return failure{errc::ca_unusable, ca.string() + ": no certificate or CRL in it"};
  }
  return {};
}

// RFC 7301 §3.1: a list of non-empty protocol names of at most 255 bytes, each with a one-byte
// length, the whole list at most 2^16-1 bytes. Empty when any name is unusable.
std::vector<unsigned char> alpn_wire_form(const std::vector<std::string>& protocols) {
  std::vector<unsigned char> wire;
  for (const auto& p : protocols) {
    if (p.empty() || p.size() > 255) {
      return {};
    }
    wire.push_back(static_cast<unsigned char>(p.size()));
    wire.insert(wire.end(), p.begin(), p.end());
  }
  if (wire.size() > 0xffff) {
    return {};
  }
  return wire;
}

// The server's choice is its own first preference that the client offered (RFC 7301 §3.2). No
// overlap is a fatal no_application_protocol alert: the workload behind us speaks none of what
// the client wants, and guessing would hand it bytes of a protocol it does not speak.
// A listener whose only protocol is the tunnel's h2 lets other clients through without ALPN.
int select_alpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* out_size,
                const unsigned char* offered, unsigned int offered_size, void* arg) noexcept {
  const auto* st = static_cast<const context::state*>(arg);
  const auto& ours = st->alpn;
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, out_size, ours.data(), static_cast<unsigned>(ours.size()),
                            offered, offered_size) != OPENSSL_NPN_NEGOTIATED) {
    return st->alpn_required ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
  }
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

bool valid_server_name(std::string_view name) {
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(name, ec);
  if (!ec) {
    return true;
  }
  if (name.empty() || name.size() > 253 || name.front() == '.' || name.back() == '.') {
    return false;
  }
  return std::ranges::all_of(name, [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
  });
}

}  // namespace

detailed_result<context> context::make_server(const server_options& options) {
  auto ctx = new_tls13_context(TLS_server_method());
  if (!ctx) {
    return ctx.error();
  }
  auto st = std::make_shared<state>();
  st->ctx = std::move(*ctx);
  st->role = tls::role::server;
  SSL_CTX* c = st->ctx.get();
  if (auto r = load_identity(c, options.cert_chain, options.private_key); !r) {
    return r.error();
  }
  st->external_key = std::holds_alternative<external_key>(options.private_key);
  if (options.client_ca) {
    if (auto r = load_trust(c, *options.client_ca); !r) {
      return r.error();
    }
    // Tell clients which CAs we accept (RFC 8446 §4.2.4), so they pick the right certificate.
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options.client_ca->c_str());
    if (names == nullptr) {
      return openssl_failure(errc::ca_unusable, *options.client_ca);
    }
    SSL_CTX_set_client_CA_list(c, names);
    st->peer_names = options.client_names;
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_peer);
  }
  auto protocols = options.alpn;
  if (options.accept_tunnels) {
    protocols.emplace_back("h2");
    st->alpn_required = !options.alpn.empty();
  }
  if (!protocols.empty()) {
    st->alpn = alpn_wire_form(protocols);
    if (st->alpn.empty()) {
      return failure{errc::context_setup_failed, "alpn: each protocol name must be 1 to 255 bytes"};
    }
    SSL_CTX_set_alpn_select_cb(c, select_alpn, st.get());
  }
  if (SSL_CTX_set_num_tickets(c, 0) != 1 ||
      SSL_CTX_set_ex_data(c, policy_index(), &st->peer_names) != 1) {
    return failure{errc::context_setup_failed, drain_openssl_errors()};
  }
  return context(std::move(st));
}

detailed_result<context> context::make_client(const client_options& options) {
  if (!valid_server_name(options.server_name)) {
    return failure{errc::bad_server_name, options.server_name};
  }
  auto ctx = new_tls13_context(TLS_client_method());
  if (!ctx) {
    return ctx.error();
  }
  auto st = std::make_shared<state>();
  st->ctx = std::move(*ctx);
  st->role = tls::role::client;
  st->server_name = options.server_name;
  st->peer_names = options.server_names;
  SSL_CTX* c = st->ctx.get();
  if (auto r = load_trust(c, options.ca); !r) {
    return r.error();
  }
  if (options.cert_chain && options.private_key) {
    if (auto r = load_identity(c, *options.cert_chain, *options.private_key); !r) {
      return r.error();
    }
    st->external_key = std::holds_alternative<external_key>(*options.private_key);
  }
  if (!options.alpn.empty()) {
    const auto wire = alpn_wire_form(options.alpn);
    // SSL_CTX_set_alpn_protos returns 0 on success, unlike most of OpenSSL.
    if (wire.empty() ||
        SSL_CTX_set_alpn_protos(c, wire.data(), static_cast<unsigned>(wire.size())) != 0) {
      return failure{errc::context_setup_failed, "alpn: each protocol name must be 1 to 255 bytes"};
    }
  }
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, verify_peer);
  if (SSL_CTX_set_ex_data(c, policy_index(), &st->peer_names) != 1) {
    return failure{errc::context_setup_failed, drain_openssl_errors()};
  }
  return context(std::move(st));
}

role context::role() const {
  return state_->role;
}

SSL_CTX* context::native_handle() const {
  return state_->ctx.get();
}

const std::string& context::server_name() const {
  return state_->server_name;
}

bool context::has_external_key() const {
  return state_->external_key;
}

}  // namespace atls::tls
