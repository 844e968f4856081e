#include "atls/tls/exported_authenticator.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "support/daemon.hpp"
#include "support/temp_dir.hpp"
#include "support/tls_pair.hpp"

namespace atls::tls {
namespace {

// ---------------------------------------------------------------------------------------------
// Fixtures: one PKI per test process (tests/certs/gen-certs.sh), identities from it, and
// established in-memory TLS 1.3 connections.

const test::pki& certificates() {
  static const test::temp_dir dir;
  static const test::pki pki = test::make_pki(dir);
  return pki;
}

struct bio_deleter {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};
struct pkey_deleter {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct pkey_ctx_deleter {
  void operator()(EVP_PKEY_CTX* p) const noexcept { EVP_PKEY_CTX_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;

struct identity {
  x509_ptr cert;
  pkey_ptr key;
};

// "client" or "server" (or "ca" without a key) from the PKI.
identity load_identity(const std::string& name, bool with_key = true) {
  identity out;
  const std::unique_ptr<BIO, bio_deleter> cert_file(
      BIO_new_file((certificates() / (name + ".crt")).c_str(), "r"));
  REQUIRE(cert_file != nullptr);
  out.cert.reset(PEM_read_bio_X509(cert_file.get(), nullptr, nullptr, nullptr));
  REQUIRE(out.cert != nullptr);
  if (with_key) {
    const std::unique_ptr<BIO, bio_deleter> key_file(
        BIO_new_file((certificates() / (name + ".key")).c_str(), "r"));
    REQUIRE(key_file != nullptr);
    out.key.reset(PEM_read_bio_PrivateKey(key_file.get(), nullptr, nullptr, nullptr));
    REQUIRE(out.key != nullptr);
  }
  return out;
}

bytes der_of(X509* cert) {
  const int size = i2d_X509(cert, nullptr);
  REQUIRE(size > 0);
  bytes out(static_cast<std::size_t>(size));
  unsigned char* p = out.data();
  i2d_X509(cert, &p);
  return out;
}

struct connection_options {
  bool mutual = false;
  const char* ciphersuites = nullptr;  // TLS 1.3 suites, default OpenSSL's (AES-256-GCM-SHA384)
};

std::unique_ptr<test::tls_pair> connect(connection_options options = {}) {
  test::tls_pair_options pair_options{.mutual = options.mutual};
  if (options.ciphersuites != nullptr) {
    pair_options.configure_server = [suites = options.ciphersuites](SSL_CTX* ctx) {
      REQUIRE(SSL_CTX_set_ciphersuites(ctx, suites) == 1);
    };
  }
  auto pair = std::make_unique<test::tls_pair>(certificates(), std::move(pair_options));
  const auto failed = pair->handshake();
  REQUIRE_MESSAGE(!failed, failed.value_or(""));
  return pair;
}

template <class T>
error_code error_of(const result<T>& r) {
  return r ? error_code{} : r.error();
}

bytes new_request(authenticator_request_kind kind, request_options options = {}) {
  const auto context = make_request_context();
  REQUIRE(context.has_value());
  auto request = make_request(kind, *context, options);
  REQUIRE_MESSAGE(request.has_value(), request.error().message());
  return *request;
}

const bytes sample_cmw = {0x82, 0x78, 0x18, 'a', 'p', 'p', 'l', 'i', 'c', 'a',  't',  'i',  'o',
                          'n',  '/',  'e',  'a', 't', '+', 'c', 'w', 't', 0x43, 0x01, 0x02, 0x03};

// The three steps of an answer, with a software key.
bytes answer(SSL* ssl, const bytes& request, const identity& id, const std::optional<bytes>& cmw,
             authenticator_session& session) {
  X509* chain[] = {id.cert.get()};
  std::optional<std::span<const std::uint8_t>> evidence;
  if (cmw) {
    evidence = *cmw;
  }
  const auto prepared = prepare_authenticator(ssl, request, chain, evidence, session);
  REQUIRE_MESSAGE(prepared.has_value(), prepared.error().message());
  const auto signature = sign_prepared(*prepared, id.key.get());
  REQUIRE_MESSAGE(signature.has_value(), signature.error().message());
  auto out = finish_authenticator(ssl, *prepared, *signature);
  REQUIRE_MESSAGE(out.has_value(), out.error().message());
  return *out;
}

bytes answer(SSL* ssl, const bytes& request, const identity& id,
             const std::optional<bytes>& cmw = std::nullopt) {
  authenticator_session session;
  return answer(ssl, request, id, cmw, session);
}

// Writes the fuzz seeds (tests/fuzz/seeds/exported_authenticator/) when ATLS_EA_SEED_DIR is set.
void dump_seed(const std::string& name, const bytes& data) {
  const char* dir = std::getenv("ATLS_EA_SEED_DIR");
  if (dir == nullptr) {
    return;
  }
  std::ofstream out(std::filesystem::path(dir) / name, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

// ---------------------------------------------------------------------------------------------
// An independent construction from RFC 9261's formulas, with none of the library's code: to
// check the library against the RFC, and to build authenticators the library refuses to make.

void put(bytes& out, std::size_t size, std::size_t value) {
  for (std::size_t i = size; i > 0; --i) {
    out.push_back(static_cast<std::uint8_t>(value >> (8 * (i - 1))));
  }
}

void put_bytes(bytes& out, std::size_t length_size, const bytes& data) {
  put(out, length_size, data.size());
  out.insert(out.end(), data.begin(), data.end());
}

bytes handshake(std::uint8_t type, const bytes& body) {
  bytes out{type};
  put_bytes(out, 3, body);
  return out;
}

struct entry {
  bytes cert;
  std::vector<std::pair<std::uint16_t, bytes>> extensions;
};

bytes certificate_message_of(const bytes& context, const std::vector<entry>& entries) {
  bytes list;
  for (const auto& e : entries) {
    put_bytes(list, 3, e.cert);
    bytes block;
    for (const auto& [type, data] : e.extensions) {
      put(block, 2, type);
      put_bytes(block, 2, data);
    }
    put_bytes(list, 2, block);
  }
  bytes body;
  put_bytes(body, 1, context);
  put_bytes(body, 3, list);
  return handshake(11, body);
}

bytes export_value(SSL* ssl, const std::string& label, std::size_t size) {
  bytes out(size);
  REQUIRE(SSL_export_keying_material(ssl, out.data(), size, label.data(), label.size(), nullptr, 0,
                                     1) == 1);
  return out;
}

bytes hash_of(const EVP_MD* md, const std::vector<bytes>& parts) {
  const std::unique_ptr<EVP_MD_CTX, md_ctx_deleter> ctx(EVP_MD_CTX_new());
  REQUIRE(EVP_DigestInit_ex(ctx.get(), md, nullptr) == 1);
  for (const auto& p : parts) {
    REQUIRE(EVP_DigestUpdate(ctx.get(), p.data(), p.size()) == 1);
  }
  bytes out(EVP_MAX_MD_SIZE);
  unsigned int size = 0;
  REQUIRE(EVP_DigestFinal_ex(ctx.get(), out.data(), &size) == 1);
  out.resize(size);
  return out;
}

// Certificate ‖ CertificateVerify (ecdsa_secp256r1_sha256 with key) ‖ Finished, created by the
// side of ssl, whatever the certificate message holds.
bytes hand_made_authenticator(SSL* ssl, const bytes& request, const bytes& certificate,
                              EVP_PKEY* key) {
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(SSL_get_current_cipher(ssl));
  const auto size = static_cast<std::size_t>(EVP_MD_get_size(md));
  const std::string side = SSL_is_server(ssl) == 1 ? "server" : "client";
  const auto context =
      export_value(ssl, "EXPORTER-" + side + " authenticator handshake context", size);
  const auto finished_key =
      export_value(ssl, "EXPORTER-" + side + " authenticator finished key", size);
  bytes content(64, 0x20);
  const std::string label = "Exported Authenticator";
  content.insert(content.end(), label.begin(), label.end());
  content.push_back(0);
  const auto transcript = hash_of(md, {context, request, certificate});
  content.insert(content.end(), transcript.begin(), transcript.end());

  const std::unique_ptr<EVP_MD_CTX, md_ctx_deleter> ctx(EVP_MD_CTX_new());
  REQUIRE(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) == 1);
  std::size_t signature_size = 0;
  REQUIRE(EVP_DigestSign(ctx.get(), nullptr, &signature_size, content.data(), content.size()) == 1);
  bytes signature(signature_size);
  REQUIRE(EVP_DigestSign(ctx.get(), signature.data(), &signature_size, content.data(),
                         content.size()) == 1);
  signature.resize(signature_size);
  bytes verify_body;
  put(verify_body, 2, 0x0403);
  put_bytes(verify_body, 2, signature);
  const auto certificate_verify = handshake(15, verify_body);

  const auto finished_input = hash_of(md, {context, request, certificate, certificate_verify});
  bytes mac(EVP_MAX_MD_SIZE);
  unsigned int mac_size = 0;
  REQUIRE(HMAC(md, finished_key.data(), static_cast<int>(finished_key.size()),
               finished_input.data(), finished_input.size(), mac.data(), &mac_size) != nullptr);
  mac.resize(mac_size);

  bytes out = certificate;
  out.insert(out.end(), certificate_verify.begin(), certificate_verify.end());
  const auto finished = handshake(20, mac);
  out.insert(out.end(), finished.begin(), finished.end());
  return out;
}

bytes cmw_extension_data(const bytes& cmw) {
  bytes out;
  put_bytes(out, 2, cmw);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Both directions.

TEST_CASE("a server asks for attestation and the client's certificate and evidence verify") {
  const auto client = load_identity("client");
  for (const bool mutual : {false, true}) {
    CAPTURE(mutual);
    auto pair = connect({.mutual = mutual});
    const auto request =
        new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
    const auto authenticator = answer(pair->client(), request, client, sample_cmw);

    authenticator_session session;
    const auto verified = verify_authenticator(pair->server(), request, authenticator, session);
    REQUIRE_MESSAGE(verified.has_value(), verified.error().message());
    REQUIRE(verified->chain.size() == 1);
    CHECK(der_of(verified->chain.front().get()) == der_of(client.cert.get()));
    REQUIRE(verified->cmw.has_value());
    CHECK(*verified->cmw == sample_cmw);
    CHECK(verified->signature_scheme == signature_scheme::ecdsa_secp256r1_sha256);
    CHECK(ERR_peek_error() == 0);

    dump_seed("request.bin", request);
    dump_seed("authenticator.bin", authenticator);
  }
}

TEST_CASE("a client asks the server for a certificate and the server's answer verifies") {
  const auto server = load_identity("server");
  for (const bool attestation : {false, true}) {
    CAPTURE(attestation);
    auto pair = connect({.mutual = true});
    const auto request = new_request(authenticator_request_kind::client_certificate_request,
                                     {.request_attestation = attestation});
    CHECK(request.front() == client_certificate_request_type);
    std::optional<bytes> cmw;
    if (attestation) {
      cmw = sample_cmw;
    }
    const auto authenticator = answer(pair->server(), request, server, cmw);

    authenticator_session session;
    const auto verified = verify_authenticator(pair->client(), request, authenticator, session);
    REQUIRE_MESSAGE(verified.has_value(), verified.error().message());
    CHECK(der_of(verified->chain.front().get()) == der_of(server.cert.get()));
    CHECK(verified->cmw == cmw);
    if (attestation) {
      dump_seed("client-request.bin", request);
    }
  }
}

TEST_CASE("a chain of several certificates comes back whole, leaf first") {
  const auto client = load_identity("client");
  const auto ca = load_identity("ca", false);
  auto pair = connect();
  const auto request = new_request(authenticator_request_kind::certificate_request);
  X509* chain[] = {client.cert.get(), ca.cert.get()};
  authenticator_session answered;
  const auto prepared =
      prepare_authenticator(pair->client(), request, chain, std::nullopt, answered);
  REQUIRE(prepared.has_value());
  const auto signature = sign_prepared(*prepared, client.key.get());
  REQUIRE(signature.has_value());
  const auto authenticator = finish_authenticator(pair->client(), *prepared, *signature);
  REQUIRE(authenticator.has_value());

  authenticator_session session;
  const auto verified = verify_authenticator(pair->server(), request, *authenticator, session);
  REQUIRE_MESSAGE(verified.has_value(), verified.error().message());
  REQUIRE(verified->chain.size() == 2);
  CHECK(der_of(verified->chain[0].get()) == der_of(client.cert.get()));
  CHECK(der_of(verified->chain[1].get()) == der_of(ca.cert.get()));
  CHECK_FALSE(verified->cmw.has_value());
}

TEST_CASE("authenticators work with a SHA-256 cipher suite as with SHA-384") {
  const auto client = load_identity("client");
  auto pair = connect({.ciphersuites = "TLS_AES_128_GCM_SHA256"});
  const auto request =
      new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
  const auto authenticator = answer(pair->client(), request, client, sample_cmw);
  // Finished is Hash.length bytes: the last 32 bytes after a 4-byte header.
  CHECK(authenticator[authenticator.size() - 36] == 20);
  authenticator_session session;
  CHECK(verify_authenticator(pair->server(), request, authenticator, session).has_value());
}

TEST_CASE("an authenticator built from RFC 9261's formulas alone verifies") {
  // Cross-check of the library against an independent construction in this file.
  const auto client = load_identity("client");
  auto pair = connect();
  const auto request =
      new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
  const auto decoded = decode_request(request);
  REQUIRE(decoded.has_value());
  const attestation_code_points code_points;
  const auto certificate = certificate_message_of(
      decoded->context,
      {{der_of(client.cert.get()),
        {{code_points.cmw_attestation_extension, cmw_extension_data(sample_cmw)}}}});
  const auto authenticator =
      hand_made_authenticator(pair->client(), request, certificate, client.key.get());
  authenticator_session session;
  const auto verified = verify_authenticator(pair->server(), request, authenticator, session);
  REQUIRE_MESSAGE(verified.has_value(), verified.error().message());
  CHECK(verified->cmw == sample_cmw);
}

// ---------------------------------------------------------------------------------------------
// The binder.

TEST_CASE(
    "both ends compute the same binder, and another context, connection or option "
    "gives another") {
  const auto client = load_identity("client");
  auto pair = connect();
  auto other = connect();
  const auto request =
      new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
  const auto authenticator = answer(pair->client(), request, client, sample_cmw);
  authenticator_session session;
  const auto verified = verify_authenticator(pair->server(), request, authenticator, session);
  REQUIRE(verified.has_value());
  const auto context = decode_request(request)->context;
  const auto& spki = verified->leaf_spki_der;

  const auto at_server = attestation_binder(pair->server(), context, spki);
  const auto at_client = attestation_binder(pair->client(), context, spki);
  REQUIRE(at_server.has_value());
  REQUIRE(at_client.has_value());
  CHECK(*at_server == *at_client);
  CHECK(at_server->size() == 48);  // SHA-384, the default suite's hash

  const auto other_context = make_request_context();
  REQUIRE(other_context.has_value());
  CHECK(*attestation_binder(pair->server(), *other_context, spki) != *at_server);
  CHECK(*attestation_binder(other->server(), context, spki) != *at_server);
  const auto binding_label =
      attestation_binder(pair->server(), context, spki, {.label = "Attestation Binding"});
  const auto raw_key = attestation_binder(pair->server(), context, spki,
                                          {.key_encoding = binder_key_encoding::raw_public_key});
  REQUIRE(binding_label.has_value());
  REQUIRE(raw_key.has_value());
  CHECK(*binding_label != *at_server);
  CHECK(*raw_key != *at_server);
  CHECK(*raw_key == *attestation_binder(pair->client(), context, spki,
                                        {.key_encoding = binder_key_encoding::raw_public_key}));
}

TEST_CASE("the binder is Hash(public key || exporter value) with the key encoding chosen") {
  const auto client = load_identity("client");
  auto pair = connect({.ciphersuites = "TLS_AES_128_GCM_SHA256"});
  const auto context = make_request_context();
  REQUIRE(context.has_value());
  const int spki_size = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(client.cert.get()), nullptr);
  bytes spki(static_cast<std::size_t>(spki_size));
  unsigned char* p = spki.data();
  i2d_X509_PUBKEY(X509_get_X509_PUBKEY(client.cert.get()), &p);

  bytes exported(32);
  const std::string label = "Attestation";
  REQUIRE(SSL_export_keying_material(pair->server(), exported.data(), exported.size(), label.data(),
                                     label.size(), context->data(), context->size(), 1) == 1);
  // A P-256 SPKI ends with the 65-byte uncompressed point.
  const bytes point(spki.end() - 65, spki.end());
  REQUIRE(point.front() == 0x04);

  const auto der = attestation_binder(pair->server(), *context, spki);
  const auto raw = attestation_binder(pair->server(), *context, spki,
                                      {.key_encoding = binder_key_encoding::raw_public_key});
  REQUIRE(der.has_value());
  REQUIRE(raw.has_value());
  CHECK(*der == hash_of(EVP_sha256(), {spki, exported}));
  CHECK(*raw == hash_of(EVP_sha256(), {point, exported}));
}

// ---------------------------------------------------------------------------------------------
// Refusals.

TEST_CASE("an authenticator made on one connection does not verify on another (relay)") {
  const auto client = load_identity("client");
  auto a = connect({.mutual = true});
  auto b = connect({.mutual = true});
  // The same request bytes reach both clients, the same certificate answers: only the
  // connection differs.
  const auto request =
      new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
  const auto from_a = answer(a->client(), request, client, sample_cmw);
  authenticator_session session;
  const auto on_b = verify_authenticator(b->server(), request, from_a, session);
  CHECK(error_of(on_b) == errc::bad_authenticator_signature);
  CHECK(ERR_peek_error() == 0);

  // Even with a valid signature, Finished ties it to the connection: a relay that re-signs
  // (it cannot, without the key) would still fail there. An empty authenticator has only
  // Finished.
  const auto refusal = make_empty_authenticator(a->client(), request);
  REQUIRE(refusal.has_value());
  CHECK(error_of(verify_authenticator(b->server(), request, *refusal, session)) ==
        errc::bad_authenticator_finished);

  // And on its own connection it verifies.
  CHECK(verify_authenticator(a->server(), request, from_a, session).has_value());
}

TEST_CASE("a context is answered and accepted only once per connection") {
  const auto client = load_identity("client");
  auto pair = connect();
  const auto request = new_request(authenticator_request_kind::certificate_request);
  authenticator_session answered;
  const auto first = answer(pair->client(), request, client, std::nullopt, answered);

  authenticator_session session;
  REQUIRE(verify_authenticator(pair->server(), request, first, session).has_value());
  CHECK(error_of(verify_authenticator(pair->server(), request, first, session)) ==
        errc::authenticator_context_reused);
  // A fresh authenticator for the same context is a replay too.
  const auto second = answer(pair->client(), request, client);
  CHECK(error_of(verify_authenticator(pair->server(), request, second, session)) ==
        errc::authenticator_context_reused);

  // The answering side refuses to answer the same context twice (RFC 9261 §5.2).
  X509* chain[] = {client.cert.get()};
  CHECK(error_of(prepare_authenticator(pair->client(), request, chain, std::nullopt, answered)) ==
        errc::authenticator_context_reused);
}

TEST_CASE("an authenticator that answers another request is refused") {
  const auto client = load_identity("client");
  auto pair = connect();
  const auto asked = new_request(authenticator_request_kind::certificate_request);
  const auto other = new_request(authenticator_request_kind::certificate_request);
  const auto authenticator = answer(pair->client(), other, client);
  authenticator_session session;
  CHECK(error_of(verify_authenticator(pair->server(), asked, authenticator, session)) ==
        errc::authenticator_context_mismatch);
  // The failure did not use up the context.
  CHECK(verify_authenticator(pair->server(), other, authenticator, session).has_value());
}

TEST_CASE("an empty authenticator is a refusal: no evidence, and the context is used") {
  auto pair = connect();
  const auto request =
      new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
  const auto refusal = make_empty_authenticator(pair->client(), request);
  REQUIRE(refusal.has_value());
  dump_seed("empty-authenticator.bin", *refusal);
  // RFC 9261 §6, computed here independently: Finished alone, HMAC(Finished MAC Key,
  // Hash(Handshake Context ‖ request ‖ Certificate with the request's context and no entries)).
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(SSL_get_current_cipher(pair->client()));
  const auto size = static_cast<std::size_t>(EVP_MD_get_size(md));
  const auto transcript = hash_of(
      md, {export_value(pair->client(), "EXPORTER-client authenticator handshake context", size),
           request, certificate_message_of(decode_request(request)->context, {})});
  const auto key = export_value(pair->client(), "EXPORTER-client authenticator finished key", size);
  bytes mac(EVP_MAX_MD_SIZE);
  unsigned int mac_size = 0;
  REQUIRE(HMAC(md, key.data(), static_cast<int>(key.size()), transcript.data(), transcript.size(),
               mac.data(), &mac_size) != nullptr);
  mac.resize(mac_size);
  CHECK(*refusal == handshake(20, mac));

  authenticator_session session;
  CHECK(error_of(verify_authenticator(pair->server(), request, *refusal, session)) ==
        errc::no_evidence);
  CHECK(error_of(verify_authenticator(pair->server(), request, *refusal, session)) ==
        errc::authenticator_context_reused);
  // A refusal is authenticated: another request's refusal, or a forged one, is not taken.
  const auto other = new_request(authenticator_request_kind::certificate_request);
  authenticator_session fresh;
  CHECK(error_of(verify_authenticator(pair->server(), other, *refusal, fresh)) ==
        errc::bad_authenticator_finished);
  auto forged = *refusal;
  forged.back() ^= 0x01;
  CHECK(error_of(verify_authenticator(pair->server(), request, forged, fresh)) ==
        errc::bad_authenticator_finished);
}

TEST_CASE("evidence the request did not ask for is refused by both sides") {
  const auto client = load_identity("client");
  auto pair = connect();
  const auto request = new_request(authenticator_request_kind::certificate_request);
  X509* chain[] = {client.cert.get()};
  authenticator_session answered;
  CHECK(error_of(prepare_authenticator(pair->client(), request, chain,
                                       std::span<const std::uint8_t>(sample_cmw), answered)) ==
        errc::unrequested_extension);

  // A correctly signed authenticator carrying cmw_attestation nobody asked for.
  const attestation_code_points code_points;
  const auto context = decode_request(request)->context;
  const auto certificate = certificate_message_of(
      context, {{der_of(client.cert.get()),
                 {{code_points.cmw_attestation_extension, cmw_extension_data(sample_cmw)}}}});
  authenticator_session session;
  CHECK(error_of(verify_authenticator(
            pair->server(), request,
            hand_made_authenticator(pair->client(), request, certificate, client.key.get()),
            session)) == errc::unrequested_extension);

  // signature_algorithms was in the request, but only a request may carry it.
  const auto with_request_only = certificate_message_of(
      context, {{der_of(client.cert.get()), {{signature_algorithms_extension, {0, 2, 4, 3}}}}});
  CHECK(error_of(verify_authenticator(
            pair->server(), request,
            hand_made_authenticator(pair->client(), request, with_request_only, client.key.get()),
            session)) == errc::unrequested_extension);
}

TEST_CASE("evidence outside the first certificate entry, or empty, is refused") {
  const auto client = load_identity("client");
  const auto ca = load_identity("ca", false);
  auto pair = connect();
  const auto request =
      new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
  const attestation_code_points code_points;
  const auto context = decode_request(request)->context;
  authenticator_session session;

  const auto in_second = certificate_message_of(
      context, {{der_of(client.cert.get()), {}},
                {der_of(ca.cert.get()),
                 {{code_points.cmw_attestation_extension, cmw_extension_data(sample_cmw)}}}});
  CHECK(error_of(verify_authenticator(
            pair->server(), request,
            hand_made_authenticator(pair->client(), request, in_second, client.key.get()),
            session)) == errc::malformed_attestation_extension);

  for (const bytes& data : {bytes{}, bytes{0, 0}, bytes{0, 2, 1}, bytes{0, 1, 1, 1}}) {
    CAPTURE(data.size());
    const auto bad = certificate_message_of(
        context, {{der_of(client.cert.get()), {{code_points.cmw_attestation_extension, data}}}});
    CHECK(error_of(verify_authenticator(
              pair->server(), request,
              hand_made_authenticator(pair->client(), request, bad, client.key.get()), session)) ==
          errc::malformed_attestation_extension);
  }
}

// Offsets of the three messages of an authenticator.
struct layout {
  std::size_t certificate_verify = 0;
  std::size_t finished = 0;
};

layout layout_of(const bytes& authenticator) {
  const auto length = [&](std::size_t at) {
    return (std::size_t{authenticator[at + 1]} << 16U) |
           (std::size_t{authenticator[at + 2]} << 8U) | authenticator[at + 3];
  };
  layout out;
  out.certificate_verify = 4 + length(0);
  out.finished = out.certificate_verify + 4 + length(out.certificate_verify);
  REQUIRE(authenticator[out.certificate_verify] == 15);
  REQUIRE(authenticator[out.finished] == 20);
  return out;
}

TEST_CASE("a flipped byte anywhere is refused, with the code of the message it hits") {
  const auto client = load_identity("client");
  auto pair = connect();
  const auto request =
      new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
  const auto good = answer(pair->client(), request, client, sample_cmw);
  const auto at = layout_of(good);
  const auto verify_flipped = [&](std::size_t i) {
    auto bad = good;
    bad[i] ^= 0x01;
    authenticator_session session;
    return error_of(verify_authenticator(pair->server(), request, bad, session));
  };

  // Certificate: the context, the certificate, the evidence.
  CHECK(verify_flipped(5) == errc::authenticator_context_mismatch);
  CHECK(verify_flipped(at.certificate_verify - 10) == errc::bad_authenticator_signature);
  // Certificate: the last byte of the certificate's own signature (it still parses).
  const std::size_t cert_end = 4 + 1 + 32 + 3 + 3 + der_of(client.cert.get()).size();
  CHECK(verify_flipped(cert_end - 1) == errc::bad_authenticator_signature);
  // CertificateVerify: the scheme (0x0403 -> 0x0402, not requested) and the signature.
  CHECK(verify_flipped(at.certificate_verify + 5) == errc::bad_authenticator_signature);
  CHECK(verify_flipped(at.finished - 1) == errc::bad_authenticator_signature);
  // Finished.
  CHECK(verify_flipped(at.finished + 4) == errc::bad_authenticator_finished);
  CHECK(verify_flipped(good.size() - 1) == errc::bad_authenticator_finished);
  // Framing: a message type.
  CHECK(verify_flipped(0) == errc::malformed_authenticator);
  CHECK(verify_flipped(at.finished) == errc::malformed_authenticator);

  // And nowhere does a flip go through.
  std::size_t accepted = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    if (!verify_flipped(i)) {
      ++accepted;
    }
  }
  CHECK(accepted == 0);
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("a requested scheme that does not fit the leaf key is refused") {
  const auto client = load_identity("client");
  auto pair = connect();
  const auto request =
      new_request(authenticator_request_kind::certificate_request,
                  {.signature_schemes = {signature_scheme::rsa_pss_rsae_sha256,
                                         signature_scheme::ecdsa_secp256r1_sha256}});
  auto authenticator = answer(pair->client(), request, client);
  const auto at = layout_of(authenticator);
  // rsa_pss_rsae_sha256 was requested, but the leaf is a P-256 key.
  authenticator[at.certificate_verify + 4] = 0x08;
  authenticator[at.certificate_verify + 5] = 0x04;
  authenticator_session session;
  CHECK(error_of(verify_authenticator(pair->server(), request, authenticator, session)) ==
        errc::bad_authenticator_signature);
}

TEST_CASE("every truncation and any trailing byte is refused") {
  const auto client = load_identity("client");
  auto pair = connect();
  const auto request =
      new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
  const auto good = answer(pair->client(), request, client, sample_cmw);
  const auto refusal = make_empty_authenticator(pair->client(), request);
  REQUIRE(refusal.has_value());

  authenticator_session session;
  for (const auto* whole : {&good, &*refusal}) {
    std::size_t refused = 0;
    for (std::size_t size = 0; size < whole->size(); ++size) {
      const std::span<const std::uint8_t> prefix(whole->data(), size);
      if (error_of(verify_authenticator(pair->server(), request, prefix, session)) ==
              errc::malformed_authenticator &&
          !decode_authenticator(prefix)) {
        ++refused;
      }
    }
    CHECK(refused == whole->size());
    auto longer = *whole;
    longer.push_back(0);
    CHECK(error_of(verify_authenticator(pair->server(), request, longer, session)) ==
          errc::malformed_authenticator);
  }

  std::size_t refused = 0;
  for (std::size_t size = 0; size < request.size(); ++size) {
    if (!decode_request(std::span<const std::uint8_t>(request.data(), size))) {
      ++refused;
    }
  }
  CHECK(refused == request.size());
  auto longer = request;
  longer.push_back(0);
  CHECK(error_of(decode_request(longer)) == errc::malformed_authenticator);
  // Still good: nothing above used the context.
  CHECK(verify_authenticator(pair->server(), request, good, session).has_value());
}

// ---------------------------------------------------------------------------------------------
// Creating: the two-step path and its checks.

TEST_CASE(
    "a signature made on another thread over the prepared digest completes an "
    "authenticator that verifies") {
  const auto client = load_identity("client");
  auto pair = connect();
  const auto request =
      new_request(authenticator_request_kind::certificate_request, {.request_attestation = true});
  X509* chain[] = {client.cert.get()};
  authenticator_session answered;
  const auto prepared = prepare_authenticator(pair->client(), request, chain,
                                              std::span<const std::uint8_t>(sample_cmw), answered);
  REQUIRE(prepared.has_value());
  REQUIRE(prepared->signature_scheme == signature_scheme::ecdsa_secp256r1_sha256);

  // Like a TPM: the signer gets SHA-256(to_be_signed) and signs the digest, on its own thread.
  bytes signature;
  std::thread signer([&] {
    const auto digest = hash_of(EVP_sha256(), {prepared->to_be_signed});
    const std::unique_ptr<EVP_PKEY_CTX, pkey_ctx_deleter> ctx(
        EVP_PKEY_CTX_new(client.key.get(), nullptr));
    std::size_t size = 0;
    if (ctx != nullptr && EVP_PKEY_sign_init(ctx.get()) == 1 &&
        EVP_PKEY_sign(ctx.get(), nullptr, &size, digest.data(), digest.size()) == 1) {
      signature.resize(size);
      if (EVP_PKEY_sign(ctx.get(), signature.data(), &size, digest.data(), digest.size()) == 1) {
        signature.resize(size);
      } else {
        signature.clear();
      }
    }
  });
  signer.join();
  REQUIRE_FALSE(signature.empty());

  const auto authenticator = finish_authenticator(pair->client(), *prepared, signature);
  REQUIRE_MESSAGE(authenticator.has_value(), authenticator.error().message());
  authenticator_session session;
  const auto verified = verify_authenticator(pair->server(), request, *authenticator, session);
  REQUIRE_MESSAGE(verified.has_value(), verified.error().message());
  CHECK(verified->leaf_spki_der == prepared->leaf_spki_der);
}

TEST_CASE("a signature by the wrong key or for another connection never leaves the signer") {
  const auto client = load_identity("client");
  const auto server = load_identity("server");
  auto pair = connect();
  auto other = connect();
  const auto request = new_request(authenticator_request_kind::certificate_request);
  X509* chain[] = {client.cert.get()};
  authenticator_session answered;
  const auto prepared =
      prepare_authenticator(pair->client(), request, chain, std::nullopt, answered);
  REQUIRE(prepared.has_value());

  const auto wrong_key = sign_prepared(*prepared, server.key.get());
  REQUIRE(wrong_key.has_value());  // both P-256: the scheme fits, the key is not the leaf's
  CHECK(error_of(finish_authenticator(pair->client(), *prepared, *wrong_key)) ==
        errc::signing_failed);

  const auto signature = sign_prepared(*prepared, client.key.get());
  REQUIRE(signature.has_value());
  CHECK(error_of(finish_authenticator(other->client(), *prepared, *signature)) ==
        errc::authenticator_context_mismatch);
  CHECK(finish_authenticator(pair->client(), *prepared, *signature).has_value());
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("the answer uses the requester's preferred scheme that fits the key, or none") {
  const auto client = load_identity("client");
  auto pair = connect();
  X509* chain[] = {client.cert.get()};
  authenticator_session answered;
  const auto rsa_first = new_request(
      authenticator_request_kind::certificate_request,
      {.signature_schemes = {signature_scheme::rsa_pss_rsae_sha256, signature_scheme::ed25519,
                             signature_scheme::ecdsa_secp256r1_sha256}});
  const auto prepared =
      prepare_authenticator(pair->client(), rsa_first, chain, std::nullopt, answered);
  REQUIRE(prepared.has_value());
  CHECK(prepared->signature_scheme == signature_scheme::ecdsa_secp256r1_sha256);

  const auto no_fit = new_request(
      authenticator_request_kind::certificate_request,
      {.signature_schemes = {signature_scheme::ecdsa_secp384r1_sha384, signature_scheme::ed25519}});
  CHECK(error_of(prepare_authenticator(pair->client(), no_fit, chain, std::nullopt, answered)) ==
        errc::no_common_attestation_scheme);
}

TEST_CASE("a request travels one way only: the server answers client requests and the reverse") {
  const auto client = load_identity("client");
  const auto server = load_identity("server");
  auto pair = connect();
  X509* server_chain[] = {server.cert.get()};
  authenticator_session answered;
  // The server sends CertificateRequests; it does not answer one.
  const auto server_request = new_request(authenticator_request_kind::certificate_request);
  CHECK(error_of(prepare_authenticator(pair->server(), server_request, server_chain, std::nullopt,
                                       answered)) == errc::malformed_authenticator);
  CHECK(error_of(make_empty_authenticator(pair->server(), server_request)) ==
        errc::malformed_authenticator);
  // The client does not accept an answer to a CertificateRequest: it never sends one.
  const auto answer_to_server = answer(pair->client(), server_request, client);
  authenticator_session session;
  CHECK(error_of(verify_authenticator(pair->client(), server_request, answer_to_server, session)) ==
        errc::malformed_authenticator);
}

TEST_CASE("nothing is exported before the handshake completes") {
  const auto client = load_identity("client");
  test::tls_pair pair(certificates());
  const auto request = new_request(authenticator_request_kind::certificate_request);
  X509* chain[] = {client.cert.get()};
  authenticator_session answered;
  CHECK(error_of(prepare_authenticator(pair.client(), request, chain, std::nullopt, answered)) ==
        errc::protocol_error);
  CHECK(error_of(make_empty_authenticator(pair.client(), request)) == errc::protocol_error);
  // A refused attempt does not use up the context.
  CHECK_FALSE(answered.used(decode_request(request)->context));
  authenticator_session session;
  CHECK(error_of(verify_authenticator(pair.server(), request, bytes{20, 0, 0, 32}, session)) ==
        errc::malformed_authenticator);
  CHECK(error_of(attestation_binder(pair.server(), decode_request(request)->context,
                                    bytes{0x30})) == errc::malformed_authenticator);
  const int spki_size = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(client.cert.get()), nullptr);
  bytes spki(static_cast<std::size_t>(spki_size));
  unsigned char* p = spki.data();
  i2d_X509_PUBKEY(X509_get_X509_PUBKEY(client.cert.get()), &p);
  CHECK(error_of(attestation_binder(pair.server(), decode_request(request)->context, spki)) ==
        errc::protocol_error);
}

// ---------------------------------------------------------------------------------------------
// Requests on the wire.

TEST_CASE("a request decodes to what was asked for and encodes back byte for byte") {
  const auto context = make_request_context();
  REQUIRE(context.has_value());
  const auto request = make_request(authenticator_request_kind::certificate_request, *context,
                                    {.request_attestation = true});
  REQUIRE(request.has_value());
  const auto decoded = decode_request(*request);
  REQUIRE(decoded.has_value());
  CHECK(decoded->kind == authenticator_request_kind::certificate_request);
  CHECK(decoded->context == bytes(context->begin(), context->end()));
  CHECK(requested_signature_schemes(*decoded) ==
        std::vector<std::uint16_t>{0x0403, 0x0804, 0x0807});
  const auto* cmw =
      find_extension(decoded->extensions, attestation_code_points{}.cmw_attestation_extension);
  REQUIRE(cmw != nullptr);
  CHECK(cmw->data.empty());
  CHECK(*encode_request(*decoded) == *request);
}

TEST_CASE("requests that break RFC 9261 are neither made nor accepted") {
  const auto kind = authenticator_request_kind::certificate_request;
  CHECK(error_of(make_request(kind, bytes{})) == errc::malformed_authenticator);
  CHECK(error_of(make_request(kind, bytes(256, 1))) == errc::malformed_authenticator);
  CHECK(make_request(kind, bytes(255, 1)).has_value());
  CHECK(error_of(make_request(kind, bytes(32, 1), {.signature_schemes = {}})) ==
        errc::malformed_authenticator);
  CHECK(error_of(make_request(kind, bytes(32, 1), {.signature_schemes = {0x0403, 0x0403}})) ==
        errc::malformed_authenticator);

  const auto body_of = [](const bytes& context, const bytes& extensions) {
    bytes body;
    put_bytes(body, 1, context);
    put_bytes(body, 2, extensions);
    return handshake(13, body);
  };
  const bytes sigalgs{0, 13, 0, 4, 0, 2, 4, 3};  // signature_algorithms: {0x0403}
  CHECK(decode_request(body_of({1}, sigalgs)).has_value());
  // No signature_algorithms.
  CHECK(error_of(decode_request(body_of({1}, {0xff, 0x3b, 0, 0}))) ==
        errc::malformed_authenticator);
  // Empty context.
  CHECK(error_of(decode_request(body_of({}, sigalgs))) == errc::malformed_authenticator);
  // The same extension twice.
  bytes twice = sigalgs;
  twice.insert(twice.end(), sigalgs.begin(), sigalgs.end());
  CHECK(error_of(decode_request(body_of({1}, twice))) == errc::malformed_authenticator);
  // An empty or odd-length scheme list.
  CHECK(error_of(decode_request(body_of({1}, {0, 13, 0, 2, 0, 0}))) ==
        errc::malformed_authenticator);
  CHECK(error_of(decode_request(body_of({1}, {0, 13, 0, 5, 0, 3, 4, 3, 8}))) ==
        errc::malformed_authenticator);
  // Another handshake type.
  auto certificate_type = body_of({1}, sigalgs);
  certificate_type[0] = 11;
  CHECK(error_of(decode_request(certificate_type)) == errc::malformed_authenticator);
}

TEST_CASE("authenticators over the caps are refused") {
  const auto client = load_identity("client");
  auto pair = connect();
  const auto request = new_request(authenticator_request_kind::certificate_request);
  const auto context = decode_request(request)->context;
  const auto leaf = der_of(client.cert.get());
  authenticator_session session;

  std::vector<entry> seventeen(max_certificates + 1, entry{leaf, {}});
  CHECK(error_of(verify_authenticator(
            pair->server(), request,
            hand_made_authenticator(pair->client(), request,
                                    certificate_message_of(context, seventeen), client.key.get()),
            session)) == errc::malformed_authenticator);
  std::vector<entry> sixteen(max_certificates, entry{leaf, {}});
  CHECK(verify_authenticator(
            pair->server(), request,
            hand_made_authenticator(pair->client(), request,
                                    certificate_message_of(context, sixteen), client.key.get()),
            session)
            .has_value());

  authenticator_session fresh;
  const auto huge = certificate_message_of(context, {{bytes(max_certificate_size + 1, 0x30), {}}});
  CHECK(error_of(verify_authenticator(
            pair->server(), request,
            hand_made_authenticator(pair->client(), request, huge, client.key.get()), fresh)) ==
        errc::malformed_authenticator);
  CHECK(error_of(decode_authenticator(bytes(max_authenticator_size + 1, 0))) ==
        errc::malformed_authenticator);
}

}  // namespace
}  // namespace atls::tls
