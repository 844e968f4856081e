#include "atls/tls/early_binder.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "atls/tls/cmw.hpp"
#include "atls/tls/code_points.hpp"
#include "atls/tls/remote_attestation.hpp"

#include "support/tls_pair.hpp"

namespace atls::tls {
namespace {

bytes from_hex(std::string_view hex) {
  bytes out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

bytes as_bytes(std::string_view s) {
  return {s.begin(), s.end()};
}

bytes sha(const EVP_MD* md, std::span<const std::uint8_t> data) {
  bytes out(static_cast<std::size_t>(EVP_MD_get_size(md)));
  unsigned int size = 0;
  REQUIRE(EVP_Digest(data.data(), data.size(), out.data(), &size, md, nullptr) == 1);
  return out;
}

bytes concat(std::initializer_list<std::span<const std::uint8_t>> parts) {
  bytes out;
  for (const auto& p : parts) {
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

// The certificates are made once per test process (gen-certs.sh takes a while).
const test::pki& shared_pki() {
  static const test::temp_dir dir;
  static const test::pki pki = test::make_pki(dir);
  return pki;
}

bytes spki_of(const X509* certificate) {
  auto spki = certificate_spki_der(certificate);
  REQUIRE(spki.has_value());
  return *spki;
}

// ---------------------------------------------------------------------------------------------
// HKDF-Expand-Label against RFC 8448 §3 (simple 1-RTT handshake).

TEST_CASE("HKDF-Expand-Label gives RFC 8448's derived secret for an empty-hash context") {
  const auto early_secret =
      from_hex("33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a");
  const auto empty_hash = sha(EVP_sha256(), {});
  const auto derived = hkdf_expand_label(EVP_sha256(), early_secret, "derived", empty_hash, 32);
  REQUIRE(derived.has_value());
  CHECK(*derived == from_hex("6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba"));
}

TEST_CASE("HKDF-Expand-Label gives RFC 8448's client handshake traffic secret") {
  // Derive-Secret(handshake secret, "c hs traffic", ClientHello...ServerHello).
  const auto handshake_secret =
      from_hex("1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac");
  const auto transcript =
      from_hex("860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8");
  const auto secret =
      hkdf_expand_label(EVP_sha256(), handshake_secret, "c hs traffic", transcript, 32);
  REQUIRE(secret.has_value());
  CHECK(*secret == from_hex("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21"));
}

TEST_CASE("HKDF-Expand-Label gives RFC 8448's server handshake key, shorter than the hash") {
  const auto server_secret =
      from_hex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38");
  const auto key = hkdf_expand_label(EVP_sha256(), server_secret, "key", {}, 16);
  REQUIRE(key.has_value());
  CHECK(*key == from_hex("3fce516009c21727d0f2e4e86ee403bc"));
}

TEST_CASE("HKDF-Expand-Label refuses arguments RFC 8446 and RFC 5869 do not allow") {
  const bytes secret(32, 1);
  const auto invalid = make_error_code(boost::system::errc::invalid_argument);
  CHECK(hkdf_expand_label(nullptr, secret, "l", {}, 32).error() == invalid);
  CHECK(hkdf_expand_label(EVP_sha256(), bytes(31, 1), "l", {}, 32).error() == invalid);
  CHECK(hkdf_expand_label(EVP_sha256(), secret, "", {}, 32).error() == invalid);
  CHECK(hkdf_expand_label(EVP_sha256(), secret, std::string(250, 'l'), {}, 32).error() == invalid);
  CHECK(hkdf_expand_label(EVP_sha256(), secret, std::string(249, 'l'), {}, 32).has_value());
  CHECK(hkdf_expand_label(EVP_sha256(), secret, "l", bytes(256, 0), 32).error() == invalid);
  CHECK(hkdf_expand_label(EVP_sha256(), secret, "l", bytes(255, 0), 32).has_value());
  CHECK(hkdf_expand_label(EVP_sha256(), secret, "l", {}, 0).error() == invalid);
  CHECK(hkdf_expand_label(EVP_sha256(), secret, "l", {}, 255 * 32 + 1).error() == invalid);
  CHECK(hkdf_expand_label(EVP_sha256(), secret, "l", {}, 255 * 32).value().size() == 255 * 32);
}

// ---------------------------------------------------------------------------------------------
// The binder: known answers from an independent implementation (Python's hmac and hashlib,
// checked against the RFC 8448 vectors above), for a transcript hash of
// Hash("ClientHello...ServerHello") and the P-256 SPKI below.

const bytes known_spki = from_hex(
    "3059301306072a8648ce3d020106082a8648ce3d03010703420004da5075c6d70859e3c8b7f5b0b7eb3c61ba7ee6"
    "38bcb76a73183292386ef14c62b980e62470b087cf88b82ffc86cf212604ed6664564db89cf5e17d09db8f9741");

TEST_CASE("the binder matches a known answer with SHA-256") {
  const auto transcript = sha(EVP_sha256(), as_bytes("ClientHello...ServerHello"));
  const auto binder = early_attestation_binder(EVP_sha256(), transcript, known_spki);
  REQUIRE(binder.has_value());
  CHECK(*binder == from_hex("362aef814eca0bb6f3509db8828d2fbf4b517eaa4365feee7d04b177cfdff2a5"));
}

TEST_CASE("the binder matches a known answer with SHA-384 and is 48 bytes long") {
  const auto transcript = sha(EVP_sha384(), as_bytes("ClientHello...ServerHello"));
  const auto binder = early_attestation_binder(EVP_sha384(), transcript, known_spki);
  REQUIRE(binder.has_value());
  CHECK(*binder == from_hex("f49dfb0a0880df34457c8f5798f1736fd03d79d5119a2e60f9078654777a7d2c"
                            "c6375fd611904af08ea4e1b96f12bcff"));
}

TEST_CASE("the binder refuses a transcript hash of the wrong size or an empty key") {
  const auto invalid = make_error_code(boost::system::errc::invalid_argument);
  CHECK(early_attestation_binder(EVP_sha256(), bytes(48, 0), known_spki).error() == invalid);
  CHECK(early_attestation_binder(EVP_sha256(), bytes(32, 0), {}).error() == invalid);
  CHECK(early_attestation_binder(nullptr, bytes(32, 0), known_spki).error() == invalid);
}

TEST_CASE("binders compare equal only when every byte and the length match") {
  const bytes a(32, 7);
  auto b = a;
  CHECK(binders_equal(a, b));
  b[31] ^= 1U;
  CHECK_FALSE(binders_equal(a, b));
  CHECK_FALSE(binders_equal(a, std::span(a).first(31)));
  CHECK_FALSE(binders_equal({}, {}));
}

// ---------------------------------------------------------------------------------------------
// The transcript, fed by hand: what OpenSSL's message callback reports besides handshake
// messages must not enter it.

bytes handshake_message(std::uint8_t type, const bytes& body) {
  bytes out{type, 0, static_cast<std::uint8_t>(body.size() >> 8U),
            static_cast<std::uint8_t>(body.size())};
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

bytes server_hello_body(bool retry) {
  bytes body{0x03, 0x03};
  const auto hrr_random =
      from_hex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c");
  if (retry) {
    body.insert(body.end(), hrr_random.begin(), hrr_random.end());
  } else {
    body.insert(body.end(), 32, 0x42);
  }
  body.insert(body.end(), {0x00, 0x13, 0x01, 0x00, 0x00, 0x00});
  return body;
}

const bytes client_hello_1 = handshake_message(1, bytes(80, 0x11));
const bytes client_hello_2 = handshake_message(1, bytes(90, 0x22));
const bytes hello_retry = handshake_message(2, server_hello_body(true));
const bytes server_hello = handshake_message(2, server_hello_body(false));

TEST_CASE("the transcript hashes ClientHello and ServerHello and nothing around them") {
  handshake_transcript t;
  t.observe(SSL3_RT_HEADER, from_hex("1603010054"));
  t.observe(SSL3_RT_HANDSHAKE, client_hello_1);
  t.observe(SSL3_RT_HEADER, from_hex("160303005a"));
  t.observe(SSL3_RT_HANDSHAKE, server_hello);
  t.observe(SSL3_RT_CHANGE_CIPHER_SPEC, from_hex("01"));
  t.observe(SSL3_RT_INNER_CONTENT_TYPE, from_hex("16"));
  t.observe(SSL3_RT_HANDSHAKE, handshake_message(8, bytes{0, 0}));  // EncryptedExtensions
  REQUIRE(t.complete());
  CHECK_FALSE(t.saw_hello_retry_request());
  CHECK(t.hash(EVP_sha256()).value() == sha(EVP_sha256(), concat({client_hello_1, server_hello})));
  CHECK(t.hash(EVP_sha384()).value() == sha(EVP_sha384(), concat({client_hello_1, server_hello})));
}

TEST_CASE("after a HelloRetryRequest the first ClientHello enters as its message_hash") {
  handshake_transcript t;
  for (const auto* m : {&client_hello_1, &hello_retry, &client_hello_2, &server_hello}) {
    t.observe(SSL3_RT_HEADER, from_hex("1603030000"));
    t.observe(SSL3_RT_HANDSHAKE, *m);
  }
  REQUIRE(t.complete());
  CHECK(t.saw_hello_retry_request());
  // RFC 8446 §4.4.1: message_hash || 00 00 Hash.length || Hash(ClientHello1).
  const auto ch1_hash = sha(EVP_sha256(), client_hello_1);
  const bytes header{254, 0, 0, 32};
  CHECK(t.hash(EVP_sha256()).value() ==
        sha(EVP_sha256(), concat({header, ch1_hash, hello_retry, client_hello_2, server_hello})));
}

TEST_CASE("the transcript has no hash before the ServerHello") {
  handshake_transcript t;
  const auto invalid = make_error_code(boost::system::errc::invalid_argument);
  CHECK(t.hash(EVP_sha256()).error() == invalid);
  t.observe(SSL3_RT_HANDSHAKE, client_hello_1);
  CHECK(t.hash(EVP_sha256()).error() == invalid);
  t.observe(SSL3_RT_HANDSHAKE, hello_retry);
  CHECK_FALSE(t.complete());
  CHECK(t.hash(EVP_sha256()).error() == invalid);
}

TEST_CASE("hellos out of order or malformed break the transcript") {
  const std::vector<std::vector<bytes>> flows{
      {server_hello},
      {client_hello_1, client_hello_2},
      {client_hello_1, hello_retry, server_hello},
      {client_hello_1, hello_retry, client_hello_2, hello_retry},
      {client_hello_1, handshake_message(8, {}), server_hello},
      {bytes{1, 0, 0}},
      {bytes{1, 0, 0, 2, 0}},
      {bytes{1, 0, 0, 1, 0, 0}},
  };
  for (const auto& flow : flows) {
    CAPTURE(flow.size());
    handshake_transcript t;
    for (const auto& m : flow) {
      t.observe(SSL3_RT_HANDSHAKE, m);
    }
    t.observe(SSL3_RT_HANDSHAKE, server_hello);
    CHECK_FALSE(t.complete());
    CHECK(t.hash(EVP_sha256()).error() == errc::handshake_failed);
  }
}

// ---------------------------------------------------------------------------------------------
// Real handshakes: both peers record their own transcript through SSL_set_msg_callback.

// Every report of the message callback, kept alongside the transcript under test, so that the
// test can compute the expected hash from the raw messages itself.
struct recorded_callbacks {
  handshake_transcript transcript;
  std::vector<std::pair<int, bytes>> reports;

  void attach(SSL* ssl) {
    SSL_set_msg_callback(
        ssl, [](int, int, int content_type, const void* buf, std::size_t len, SSL*, void* arg) {
          auto* self = static_cast<recorded_callbacks*>(arg);
          const auto* data = static_cast<const std::uint8_t*>(buf);
          self->reports.emplace_back(content_type, bytes(data, data + len));
          self->transcript.observe(content_type, {data, len});
        });
    SSL_set_msg_callback_arg(ssl, this);
  }

  // The handshake messages up to the ServerHello, straight from the reports: everything until
  // a ServerHello whose random is not the HelloRetryRequest value.
  [[nodiscard]] std::vector<bytes> hellos() const {
    std::vector<bytes> out;
    for (const auto& [type, data] : reports) {
      if (type != SSL3_RT_HANDSHAKE) {
        continue;
      }
      out.push_back(data);
      const bool retry = data.size() >= 38 &&
                         std::equal(data.begin() + 6, data.begin() + 38, hello_retry.begin() + 6);
      if (data[0] == 2 && !retry) {
        break;
      }
    }
    return out;
  }
  [[nodiscard]] bool saw(int content_type) const {
    return std::any_of(reports.begin(), reports.end(),
                       [&](const auto& r) { return r.first == content_type; });
  }
};

struct binder_handshake {
  recorded_callbacks client;
  recorded_callbacks server;
  bytes client_binder_for_server;
  bytes server_binder_for_server;
  bytes client_binder_for_client;
  bytes server_binder_for_client;
  std::string cipher;
  const EVP_MD* md = nullptr;
};

void run_binder_handshake(binder_handshake& out, test::tls_pair_options options = {}) {
  const bool mutual = options.mutual;
  test::tls_pair pair(shared_pki(), std::move(options));
  out.client.attach(pair.client());
  out.server.attach(pair.server());
  const auto failed = pair.handshake();
  REQUIRE_MESSAGE(!failed, failed.value_or(""));
  out.cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(pair.client()));

  const auto client_hash = out.client.transcript.hash(pair.client());
  const auto server_hash = out.server.transcript.hash(pair.server());
  REQUIRE(client_hash.has_value());
  REQUIRE(server_hash.has_value());
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(SSL_get_current_cipher(pair.client()));
  out.md = md;
  const auto server_spki_seen = spki_of(SSL_get0_peer_certificate(pair.client()));
  const auto server_spki_own = spki_of(SSL_get_certificate(pair.server()));
  out.client_binder_for_server =
      early_attestation_binder(md, *client_hash, server_spki_seen).value();
  out.server_binder_for_server =
      early_attestation_binder(md, *server_hash, server_spki_own).value();
  if (mutual) {
    const auto client_spki_seen = spki_of(SSL_get0_peer_certificate(pair.server()));
    const auto client_spki_own = spki_of(SSL_get_certificate(pair.client()));
    out.client_binder_for_client =
        early_attestation_binder(md, *client_hash, client_spki_own).value();
    out.server_binder_for_client =
        early_attestation_binder(md, *server_hash, client_spki_seen).value();
  }
}

TEST_CASE("client and server compute the same binder for the server's key") {
  binder_handshake h;
  run_binder_handshake(h);
  // OpenSSL's default preference, TLS_AES_256_GCM_SHA384: the binder is SHA-384 sized.
  CHECK(h.cipher == "TLS_AES_256_GCM_SHA384");
  CHECK(h.client_binder_for_server.size() == 48);
  CHECK(binders_equal(h.client_binder_for_server, h.server_binder_for_server));
  CHECK_FALSE(h.client.transcript.saw_hello_retry_request());
  // The callback did report record headers and inner content types: the filter mattered.
  CHECK(h.client.saw(SSL3_RT_HEADER));
  CHECK(h.client.saw(SSL3_RT_INNER_CONTENT_TYPE));
  // The transcript is exactly the reported ClientHello and ServerHello.
  const auto hellos = h.client.hellos();
  REQUIRE(hellos.size() == 2);
  CHECK(h.client.transcript.hash(h.md).value() == sha(h.md, concat({hellos[0], hellos[1]})));
  CHECK(h.server.hellos() == hellos);
}

TEST_CASE("transcripts installed with attach() agree on both sides of a handshake") {
  // Declared before the pair, so that they outlive the SSL objects whose callbacks use them.
  handshake_transcript client_transcript;
  handshake_transcript server_transcript;
  test::tls_pair pair(shared_pki());
  client_transcript.attach(pair.client());
  server_transcript.attach(pair.server());
  CHECK(client_transcript.hash(pair.client()).error() ==
        make_error_code(boost::system::errc::invalid_argument));
  const auto failed = pair.handshake();
  REQUIRE_MESSAGE(!failed, failed.value_or(""));
  REQUIRE(client_transcript.complete());
  REQUIRE(server_transcript.complete());
  const auto client_hash = client_transcript.hash(pair.client());
  REQUIRE(client_hash.has_value());
  CHECK(client_hash->size() == 48);
  CHECK(*client_hash == server_transcript.hash(pair.server()).value());
}

TEST_CASE("a SHA-256 cipher suite gives a 32-byte binder that both sides agree on") {
  test::tls_pair_options options;
  options.configure_client = [](SSL_CTX* ctx) {
    REQUIRE(SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") == 1);
  };
  binder_handshake h;
  run_binder_handshake(h, std::move(options));
  CHECK(h.cipher == "TLS_AES_128_GCM_SHA256");
  CHECK(h.client_binder_for_server.size() == 32);
  CHECK(binders_equal(h.client_binder_for_server, h.server_binder_for_server));
}

TEST_CASE("a second handshake gives a different binder") {
  binder_handshake first;
  run_binder_handshake(first);
  binder_handshake second;
  run_binder_handshake(second);
  CHECK(binders_equal(second.client_binder_for_server, second.server_binder_for_server));
  CHECK_FALSE(binders_equal(first.client_binder_for_server, second.client_binder_for_server));
}

TEST_CASE("with mutual TLS the client's and the server's binders differ and both agree") {
  binder_handshake h;
  run_binder_handshake(h, {.mutual = true});
  CHECK(binders_equal(h.client_binder_for_server, h.server_binder_for_server));
  CHECK(binders_equal(h.client_binder_for_client, h.server_binder_for_client));
  CHECK_FALSE(binders_equal(h.client_binder_for_client, h.client_binder_for_server));
}

TEST_CASE("after a HelloRetryRequest both sides still compute the same binder") {
  // The client sends a key share for its first group only; the server accepts only the second,
  // so it must ask again (RFC 8446 §4.1.4).
  test::tls_pair_options options;
  options.configure_client = [](SSL_CTX* ctx) {
    REQUIRE(SSL_CTX_set1_groups_list(ctx, "X25519:P-256") == 1);
  };
  options.configure_server = [](SSL_CTX* ctx) {
    REQUIRE(SSL_CTX_set1_groups_list(ctx, "P-256") == 1);
  };
  binder_handshake h;
  run_binder_handshake(h, std::move(options));
  REQUIRE(h.client.transcript.saw_hello_retry_request());
  REQUIRE(h.server.transcript.saw_hello_retry_request());
  CHECK(binders_equal(h.client_binder_for_server, h.server_binder_for_server));

  // The transcript hash is RFC 8446 §4.4.1's, computed here from the raw reports.
  const auto hellos = h.client.hellos();
  REQUIRE(hellos.size() == 4);
  const auto first_hash = sha(h.md, hellos[0]);
  const bytes header{254, 0, 0, static_cast<std::uint8_t>(first_hash.size())};
  CHECK(h.client.transcript.hash(h.md).value() ==
        sha(h.md, concat({header, first_hash, hellos[1], hellos[2], hellos[3]})));
  CHECK(h.server.hellos() == hellos);
}

// ---------------------------------------------------------------------------------------------
// Feasibility of the wire path with OpenSSL 3.0 custom extensions: the ClientHello lists, the
// server's choice in EncryptedExtensions, the client's in CertificateRequest, and a CMW in the
// first CertificateEntry whose value is the binder. The production engine (policy, alerts,
// appraisal) is not this; this shows that stock OpenSSL carries every part of the draft.

const std::string parsec_tpm = "application/vnd.parallaxsecond.key-attestation.tpm";
constexpr attestation_code_points code_points{};
constexpr unsigned int extension_contexts =
    SSL_EXT_TLS1_3_ONLY | SSL_EXT_CLIENT_HELLO | SSL_EXT_TLS1_3_ENCRYPTED_EXTENSIONS |
    SSL_EXT_TLS1_3_CERTIFICATE_REQUEST | SSL_EXT_TLS1_3_CERTIFICATE;

struct attestation_peer {
  bool is_server = false;
  client_hello_attestation offer;                   // client: what it sends
  std::vector<attestation_scheme> can_attest_with;  // server: as attester, in preference order
  std::vector<attestation_scheme> can_appraise;     // server: from the client
  recorded_callbacks callbacks;

  std::optional<attestation_scheme> chosen_server_scheme;
  std::optional<attestation_scheme> chosen_client_scheme;
  std::optional<cmw_record> peer_cmw;
  std::vector<std::size_t> peer_cmw_chain_indices;
  bytes peer_spki;
  bytes sent_binder;
  bytes out;  // the extension_data of the last add callback, alive until the next
  std::string failure;
};

bool offered(const std::vector<attestation_scheme>& list, const attestation_scheme& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

int add_extension(SSL* ssl, unsigned int /*ext_type*/, unsigned int context,
                  const unsigned char** out, std::size_t* outlen, X509* x, std::size_t chainidx,
                  int* al, void* arg) noexcept {
  auto& peer = *static_cast<attestation_peer*>(arg);
  *al = SSL_AD_INTERNAL_ERROR;
  try {
    result<bytes> data = make_error_code(errc::no_evidence);
    switch (context) {
      case SSL_EXT_CLIENT_HELLO:
        data = encode_client_hello(peer.offer);
        break;
      case SSL_EXT_TLS1_3_ENCRYPTED_EXTENSIONS:
        if (!peer.chosen_server_scheme) {
          return 0;
        }
        data = encode_encrypted_extensions(*peer.chosen_server_scheme);
        break;
      case SSL_EXT_TLS1_3_CERTIFICATE_REQUEST:
        if (!peer.chosen_client_scheme) {
          return 0;
        }
        data = encode_certificate_request(*peer.chosen_client_scheme);
        break;
      case SSL_EXT_TLS1_3_CERTIFICATE: {
        // Only in the first CertificateEntry, and only for the side that was asked to attest.
        const bool asked = peer.is_server ? peer.chosen_server_scheme.has_value()
                                          : peer.chosen_client_scheme.has_value();
        if (chainidx != 0 || !asked) {
          return 0;
        }
        const auto transcript_hash = peer.callbacks.transcript.hash(ssl);
        const auto spki = certificate_spki_der(x);
        if (!transcript_hash || !spki) {
          return -1;
        }
        const EVP_MD* md = SSL_CIPHER_get_handshake_digest(SSL_get_current_cipher(ssl));
        auto binder = early_attestation_binder(md, *transcript_hash, *spki);
        if (!binder) {
          return -1;
        }
        peer.sent_binder = *binder;
        // A stand-in for Evidence whose nonce is the binder: the binder itself.
        const auto cmw = encode_cbor({parsec_tpm, *binder, cmw_indicator::evidence});
        if (!cmw) {
          return -1;
        }
        data = encode_certificate(*cmw);
        break;
      }
      default:
        return 0;
    }
    if (!data) {
      peer.failure = "encode: " + data.error().message();
      return -1;
    }
    peer.out = std::move(*data);
    *out = peer.out.data();
    *outlen = peer.out.size();
    return 1;
  } catch (...) {
    return -1;
  }
}

int parse_extension(SSL* /*ssl*/, unsigned int /*ext_type*/, unsigned int context,
                    const unsigned char* in, std::size_t inlen, X509* x, std::size_t chainidx,
                    int* al, void* arg) noexcept {
  auto& peer = *static_cast<attestation_peer*>(arg);
  const std::span<const std::uint8_t> data(in, inlen);
  *al = SSL_AD_ILLEGAL_PARAMETER;
  try {
    switch (context) {
      case SSL_EXT_CLIENT_HELLO: {
        const auto received = decode_client_hello(data);
        if (!received) {
          *al = SSL_AD_DECODE_ERROR;
          return 0;
        }
        peer.chosen_server_scheme =
            choose_scheme(received->server_attester_schemes, peer.can_attest_with);
        peer.chosen_client_scheme =
            choose_scheme(received->client_attester_schemes, peer.can_appraise);
        if (!peer.chosen_server_scheme && !peer.chosen_client_scheme) {
          *al = code_points.unsupported_attestation_schemes_alert;
          peer.failure = "no common scheme";
          return 0;
        }
        return 1;
      }
      case SSL_EXT_TLS1_3_ENCRYPTED_EXTENSIONS: {
        auto chosen = decode_encrypted_extensions(data);
        if (!chosen || !offered(peer.offer.server_attester_schemes, *chosen)) {
          return 0;
        }
        peer.chosen_server_scheme = std::move(*chosen);
        return 1;
      }
      case SSL_EXT_TLS1_3_CERTIFICATE_REQUEST: {
        auto chosen = decode_certificate_request(data);
        if (!chosen || !offered(peer.offer.client_attester_schemes, *chosen)) {
          return 0;
        }
        peer.chosen_client_scheme = std::move(*chosen);
        return 1;
      }
      case SSL_EXT_TLS1_3_CERTIFICATE: {
        peer.peer_cmw_chain_indices.push_back(chainidx);
        // The draft: anywhere but the first CertificateEntry is illegal_parameter.
        if (chainidx != 0) {
          return 0;
        }
        const auto payload = decode_certificate(data);
        auto cmw = payload ? decode_cmw(*payload) : result<cmw_record>(payload.error());
        const auto spki = certificate_spki_der(x);
        if (!cmw || !spki) {
          return 0;
        }
        peer.peer_cmw = std::move(*cmw);
        peer.peer_spki = *spki;
        return 1;
      }
      default:
        return 1;
    }
  } catch (...) {
    *al = SSL_AD_INTERNAL_ERROR;
    return 0;
  }
}

void add_remote_attestation(SSL_CTX* ctx, attestation_peer& peer) {
  REQUIRE(SSL_CTX_add_custom_ext(ctx, code_points.remote_attestation_extension, extension_contexts,
                                 &add_extension, nullptr, &peer, &parse_extension, &peer) == 1);
}

struct attested_handshake {
  attestation_peer client;
  attestation_peer server;
  std::optional<std::string> failed;
  bytes client_recomputed_server_binder;
  bytes server_recomputed_client_binder;
};

void run_attested_handshake(attested_handshake& h, bool mutual) {
  h.server.is_server = true;
  test::tls_pair_options options;
  options.mutual = mutual;
  options.configure_client = [&](SSL_CTX* ctx) { add_remote_attestation(ctx, h.client); };
  options.configure_server = [&](SSL_CTX* ctx) { add_remote_attestation(ctx, h.server); };
  test::tls_pair pair(shared_pki(), std::move(options));
  h.client.callbacks.attach(pair.client());
  h.server.callbacks.attach(pair.server());
  h.failed = pair.handshake();
  if (h.failed) {
    return;
  }
  // Each relying party recomputes the binder from its own transcript and the key it saw.
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(SSL_get_current_cipher(pair.client()));
  if (h.client.peer_cmw) {
    h.client_recomputed_server_binder =
        early_attestation_binder(md, h.client.callbacks.transcript.hash(pair.client()).value(),
                                 spki_of(SSL_get0_peer_certificate(pair.client())))
            .value();
  }
  if (h.server.peer_cmw) {
    h.server_recomputed_client_binder =
        early_attestation_binder(md, h.server.callbacks.transcript.hash(pair.server()).value(),
                                 spki_of(SSL_get0_peer_certificate(pair.server())))
            .value();
  }
}

TEST_CASE("a CMW carrying the binder reaches the client through remoteAttestation") {
  attested_handshake h;
  const auto tpm = attestation_scheme::evidence_media_type(parsec_tpm);
  const auto ear = attestation_scheme::result_from(as_bytes("veraison.example"));
  h.client.offer = {{ear, tpm}, {}};
  h.server.can_attest_with = {tpm};
  run_attested_handshake(h, false);
  REQUIRE_MESSAGE(!h.failed, h.failed.value_or(""));

  // The choice travelled in EncryptedExtensions; nobody asked the client to attest.
  REQUIRE(h.client.chosen_server_scheme.has_value());
  CHECK(*h.client.chosen_server_scheme == tpm);
  CHECK_FALSE(h.client.chosen_client_scheme.has_value());
  CHECK_FALSE(h.server.peer_cmw.has_value());

  // The CMW arrived intact, once, in the first CertificateEntry, for the server's key.
  REQUIRE(h.client.peer_cmw.has_value());
  CHECK(h.client.peer_cmw_chain_indices == std::vector<std::size_t>{0});
  CHECK(*h.client.peer_cmw ==
        cmw_record{parsec_tpm, h.server.sent_binder, cmw_indicator::evidence});
  // The binder inside is what the client computes on its own.
  CHECK(binders_equal(h.client.peer_cmw->value, h.client_recomputed_server_binder));
}

TEST_CASE("with mutual TLS the client attests through CertificateRequest and its Certificate") {
  attested_handshake h;
  const auto tpm = attestation_scheme::evidence_media_type(parsec_tpm);
  const auto cwt = attestation_scheme::evidence_content_format(263);
  h.client.offer = {{tpm}, {cwt, tpm}};
  h.server.can_attest_with = {tpm};
  h.server.can_appraise = {tpm, cwt};
  run_attested_handshake(h, true);
  REQUIRE_MESSAGE(!h.failed, h.failed.value_or(""));

  // The server's preference wins for the client's scheme.
  REQUIRE(h.client.chosen_client_scheme.has_value());
  CHECK(*h.client.chosen_client_scheme == tpm);
  REQUIRE(h.server.peer_cmw.has_value());
  REQUIRE(h.client.peer_cmw.has_value());
  CHECK(binders_equal(h.server.peer_cmw->value, h.server_recomputed_client_binder));
  CHECK(binders_equal(h.client.peer_cmw->value, h.client_recomputed_server_binder));
  // Each binder is bound to its attester's key.
  CHECK_FALSE(binders_equal(h.server.peer_cmw->value, h.client.peer_cmw->value));
}

TEST_CASE("a server with no scheme in common ends the handshake") {
  attested_handshake h;
  h.client.offer = {{attestation_scheme::result_from(as_bytes("veraison.example"))}, {}};
  h.server.can_attest_with = {attestation_scheme::evidence_media_type(parsec_tpm)};
  run_attested_handshake(h, false);
  CHECK(h.failed.has_value());
  CHECK(h.server.failure == "no common scheme");
  CHECK_FALSE(h.client.peer_cmw.has_value());
}

}  // namespace
}  // namespace atls::tls
