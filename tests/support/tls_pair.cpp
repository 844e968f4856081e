#include "support/tls_pair.hpp"

#include <array>
#include <stdexcept>
#include <utility>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

namespace atls::test {
namespace {

struct ctx_deleter {
  void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
};
struct ssl_deleter {
  void operator()(SSL* s) const noexcept { SSL_free(s); }
};

std::string openssl_errors() {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    if (!out.empty()) {
      out += "; ";
    }
    out += text.data();
  }
  return out;
}

void require(bool ok, const std::string& what) {
  if (!ok) {
    throw std::runtime_error("tls_pair: " + what + ": " + openssl_errors());
  }
}

std::unique_ptr<SSL_CTX, ctx_deleter> make_context(const SSL_METHOD* method, const pki& p,
                                                   const std::string& identity, bool verify_peer,
                                                   bool require_peer) {
  std::unique_ptr<SSL_CTX, ctx_deleter> ctx(SSL_CTX_new(method));
  require(ctx != nullptr, "SSL_CTX_new");
  require(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) == 1, "TLS 1.3 only");
  require(SSL_CTX_load_verify_locations(ctx.get(), (p / "ca.crt").c_str(), nullptr) == 1, "ca.crt");
  if (!identity.empty()) {
    require(SSL_CTX_use_certificate_chain_file(ctx.get(), (p / (identity + ".crt")).c_str()) == 1,
            identity + ".crt");
    require(SSL_CTX_use_PrivateKey_file(ctx.get(), (p / (identity + ".key")).c_str(),
                                        SSL_FILETYPE_PEM) == 1,
            identity + ".key");
  }
  int mode = verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE;
  if (require_peer) {
    mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  }
  SSL_CTX_set_verify(ctx.get(), mode, nullptr);
  return ctx;
}

// One step of a handshake: true when done, false when it wants more, an error text on failure.
std::optional<std::string> step(SSL* ssl, const char* side, bool& done) {
  if (done) {
    return std::nullopt;
  }
  const int rc = SSL_do_handshake(ssl);
  if (rc == 1) {
    done = true;
    return std::nullopt;
  }
  const int error = SSL_get_error(ssl, rc);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
    return std::nullopt;
  }
  return std::string(side) + ": SSL_get_error " + std::to_string(error) + ": " + openssl_errors();
}

}  // namespace

struct tls_pair::impl {
  std::unique_ptr<SSL_CTX, ctx_deleter> client_ctx;
  std::unique_ptr<SSL_CTX, ctx_deleter> server_ctx;
  std::unique_ptr<SSL, ssl_deleter> client;
  std::unique_ptr<SSL, ssl_deleter> server;
};

tls_pair::tls_pair(const pki& certificates, tls_pair_options options)
    : impl_(std::make_unique<impl>()) {
  impl_->client_ctx =
      make_context(TLS_client_method(), certificates, options.mutual ? "client" : "", true, false);
  impl_->server_ctx =
      make_context(TLS_server_method(), certificates, "server", options.mutual, options.mutual);
  if (options.configure_client) {
    options.configure_client(impl_->client_ctx.get());
  }
  if (options.configure_server) {
    options.configure_server(impl_->server_ctx.get());
  }
  impl_->client.reset(SSL_new(impl_->client_ctx.get()));
  impl_->server.reset(SSL_new(impl_->server_ctx.get()));
  require(impl_->client != nullptr && impl_->server != nullptr, "SSL_new");
  require(SSL_set1_host(impl_->client.get(), "server.test") == 1, "SSL_set1_host");

  // One BIO pair: what the client writes, the server reads, and the other way round. 64 KiB
  // each way holds a whole flight with certificates and attestation extensions.
  BIO* client_end = nullptr;
  BIO* server_end = nullptr;
  require(BIO_new_bio_pair(&client_end, 65536, &server_end, 65536) == 1, "BIO_new_bio_pair");
  SSL_set_bio(impl_->client.get(), client_end, client_end);
  SSL_set_bio(impl_->server.get(), server_end, server_end);
  SSL_set_connect_state(impl_->client.get());
  SSL_set_accept_state(impl_->server.get());
}

tls_pair::~tls_pair() = default;

SSL* tls_pair::client() const {
  return impl_->client.get();
}

SSL* tls_pair::server() const {
  return impl_->server.get();
}

std::optional<std::string> tls_pair::handshake() {
  ERR_clear_error();
  bool client_done = false;
  bool server_done = false;
  // Each round moves one flight each way; a TLS 1.3 handshake needs two or three.
  for (int round = 0; round < 16 && !(client_done && server_done); ++round) {
    if (auto failed = step(impl_->client.get(), "client", client_done)) {
      return failed;
    }
    if (auto failed = step(impl_->server.get(), "server", server_done)) {
      return failed;
    }
  }
  if (!(client_done && server_done)) {
    return std::string("handshake did not complete");
  }
  return std::nullopt;
}

void tls_pair::send(SSL* from, const std::vector<std::uint8_t>& data) {
  std::size_t written = 0;
  require(data.empty() || SSL_write_ex(from, data.data(), data.size(), &written) == 1,
          "SSL_write_ex");
  require(written == data.size(), "short SSL_write_ex");
}

std::vector<std::uint8_t> tls_pair::receive(SSL* to) {
  std::vector<std::uint8_t> out;
  std::array<std::uint8_t, 16384> chunk{};
  for (;;) {
    std::size_t read = 0;
    if (SSL_read_ex(to, chunk.data(), chunk.size(), &read) != 1) {
      const int error = SSL_get_error(to, 0);
      require(error == SSL_ERROR_WANT_READ, "SSL_read_ex");
      ERR_clear_error();
      return out;
    }
    out.insert(out.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(read));
  }
}

}  // namespace atls::test
