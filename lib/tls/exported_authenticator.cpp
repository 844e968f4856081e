#include "atls/tls/exported_authenticator.hpp"

#include <algorithm>
#include <initializer_list>
#include <string_view>
#include <utility>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "atls/common/openssl_error_scope.hpp"
#include "atls/common/openssl_ptr.hpp"

namespace atls::tls {

namespace {

using byte_span = std::span<const std::uint8_t>;

// RFC 8446 §4 HandshakeType values of an authenticator's messages.
constexpr std::uint8_t handshake_certificate = 11;
constexpr std::uint8_t handshake_certificate_verify = 15;
constexpr std::uint8_t handshake_finished = 20;

// RFC 8446 §4.2 extensions that only a CertificateRequest can carry ("CR" without "CT"): they
// describe what is asked for, never a certificate.
constexpr std::array<std::uint16_t, 4> request_only_extensions{
    signature_algorithms_extension,
    47,  // certificate_authorities
    48,  // oid_filters
    50,  // signature_algorithms_cert
};

// RFC 9261 §5.2.2: the CertificateVerify context string, not NUL-terminated.
constexpr std::string_view signature_context = "Exported Authenticator";
constexpr std::size_t signature_padding = 64;

// RFC 9261 §5.1: the exporter labels, named after the side that CREATES the authenticator
// ("for authenticators sent by the client or server, respectively").
constexpr std::string_view client_handshake_context_label =
    "EXPORTER-client authenticator handshake context";
constexpr std::string_view server_handshake_context_label =
    "EXPORTER-server authenticator handshake context";
constexpr std::string_view client_finished_key_label = "EXPORTER-client authenticator finished key";
constexpr std::string_view server_finished_key_label = "EXPORTER-server authenticator finished key";

// draft-fossati-seat-expat: TLS-Exporter(label, certificate_request_context, 32).
constexpr std::size_t binder_exporter_size = 32;

// Largest values of TLS vector length prefixes (RFC 8446 §3.4).
constexpr std::size_t max_u8 = 0xff;
constexpr std::size_t max_u16 = 0xffff;
constexpr std::size_t max_u24 = 0xffffff;

error_code out_of_memory() {
  return make_error_code(boost::system::errc::not_enough_memory);
}

// ---------------------------------------------------------------------------------------------
// Reading (RFC 8446 §3: big-endian integers, vectors with a 1-, 2- or 3-byte length).

// Reads fields from the front of a span in the style of BoringSSL's CBS: each read returns
// false when the input is too short, so a parse is a chain of reads joined with &&.
class reader {
 public:
  explicit reader(byte_span input) : rest_(input) {}

  [[nodiscard]] bool empty() const { return rest_.empty(); }
  [[nodiscard]] byte_span rest() const { return rest_; }

  bool u8(std::uint8_t& out) {
    std::uint32_t value = 0;
    if (!integer(1, value)) {
      return false;
    }
    out = static_cast<std::uint8_t>(value);
    return true;
  }
  bool u16(std::uint16_t& out) {
    std::uint32_t value = 0;
    if (!integer(2, value)) {
      return false;
    }
    out = static_cast<std::uint16_t>(value);
    return true;
  }
  bool u24(std::uint32_t& out) { return integer(3, out); }

  // n raw bytes, borrowed from the input.
  bool take(std::size_t n, byte_span& out) {
    if (rest_.size() < n) {
      return false;
    }
    out = rest_.first(n);
    rest_ = rest_.subspan(n);
    return true;
  }

  // A vector whose length is in the next length_size bytes.
  bool vector(std::size_t length_size, byte_span& out) {
    std::uint32_t length = 0;
    return integer(length_size, length) && take(length, out);
  }

 private:
  bool integer(std::size_t size, std::uint32_t& out) {
    byte_span raw;
    if (!take(size, raw)) {
      return false;
    }
    out = 0;
    for (const std::uint8_t b : raw) {
      out = (out << 8U) | b;
    }
    return true;
  }

  byte_span rest_;
};

// One handshake message (RFC 8446 §4): msg_type, uint24 length, body. whole is the message with
// its header, as it enters transcript hashes.
struct handshake_message {
  std::uint8_t type = 0;
  byte_span body;
  byte_span whole;
};

bool read_handshake(reader& in, handshake_message& out) {
  const byte_span start = in.rest();
  if (!in.u8(out.type) || !in.vector(3, out.body)) {
    return false;
  }
  out.whole = start.first(start.size() - in.rest().size());
  return true;
}

// Extension extensions<..>: each {uint16 type; opaque data<0..2^16-1>}, no type twice
// (RFC 8446 §4.2), at most max_extensions.
bool parse_extensions(byte_span block, std::vector<extension>& out) {
  reader in(block);
  while (!in.empty()) {
    std::uint16_t type = 0;
    byte_span data;
    if (out.size() == max_extensions || !in.u16(type) || !in.vector(2, data) ||
        find_extension(out, type) != nullptr) {
      return false;
    }
    out.push_back({type, bytes(data.begin(), data.end())});
  }
  return true;
}

// RFC 8446 §4.2.3: SignatureScheme supported_signature_algorithms<2..2^16-2>.
bool parse_signature_schemes(byte_span data, std::vector<std::uint16_t>& out) {
  reader in(data);
  byte_span list;
  if (!in.vector(2, list) || !in.empty() || list.empty() || list.size() % 2 != 0) {
    return false;
  }
  reader items(list);
  while (!items.empty()) {
    std::uint16_t scheme = 0;
    if (!items.u16(scheme)) {
      return false;
    }
    out.push_back(scheme);
  }
  return true;
}

bool parse_certificate_body(byte_span body, certificate_message& out) {
  reader in(body);
  byte_span context;
  byte_span list;
  if (!in.vector(1, context) || !in.vector(3, list) || !in.empty()) {
    return false;
  }
  out.context.assign(context.begin(), context.end());
  reader entries(list);
  while (!entries.empty()) {
    byte_span cert;
    byte_span extensions;
    if (out.entries.size() == max_certificates || !entries.vector(3, cert) || cert.empty() ||
        cert.size() > max_certificate_size || !entries.vector(2, extensions)) {
      return false;
    }
    certificate_entry entry{.cert_data = bytes(cert.begin(), cert.end())};
    if (!parse_extensions(extensions, entry.extensions)) {
      return false;
    }
    out.entries.push_back(std::move(entry));
  }
  // A Certificate without entries exists only inside the empty authenticator's transcript
  // (RFC 9261 §6), never on the wire next to a CertificateVerify.
  return !out.entries.empty();
}

bool parse_certificate_verify_body(byte_span body, certificate_verify_message& out) {
  reader in(body);
  byte_span signature;
  if (!in.u16(out.scheme) || !in.vector(2, signature) || !in.empty()) {
    return false;
  }
  out.signature.assign(signature.begin(), signature.end());
  return true;
}

bool valid_finished_size(std::size_t size) {
  return size >= min_finished_size && size <= max_finished_size;
}

// A decoded authenticator with the raw messages its transcript hashes cover.
struct parsed_authenticator {
  authenticator value;
  byte_span certificate;
  byte_span certificate_verify;
};

result<parsed_authenticator> parse_authenticator(byte_span input) {
  const error_code malformed = errc::malformed_authenticator;
  if (input.size() > max_authenticator_size) {
    return malformed;
  }
  reader in(input);
  handshake_message first;
  if (!read_handshake(in, first)) {
    return malformed;
  }
  parsed_authenticator out;
  // RFC 9261 §6: Finished alone is the empty authenticator.
  if (first.type == handshake_finished) {
    if (!in.empty() || !valid_finished_size(first.body.size())) {
      return malformed;
    }
    out.value.finished.assign(first.body.begin(), first.body.end());
    return out;
  }
  handshake_message verify;
  handshake_message finished;
  certificate_message certificate;
  certificate_verify_message certificate_verify;
  if (first.type != handshake_certificate || !parse_certificate_body(first.body, certificate) ||
      !read_handshake(in, verify) || verify.type != handshake_certificate_verify ||
      !parse_certificate_verify_body(verify.body, certificate_verify) ||
      !read_handshake(in, finished) || finished.type != handshake_finished ||
      !valid_finished_size(finished.body.size()) || !in.empty()) {
    return malformed;
  }
  out.value.certificate = std::move(certificate);
  out.value.certificate_verify = std::move(certificate_verify);
  out.value.finished.assign(finished.body.begin(), finished.body.end());
  out.certificate = first.whole;
  out.certificate_verify = verify.whole;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing. Each put_* returns false when the value does not fit its length prefix.

void put_integer(bytes& out, std::size_t size, std::uint32_t value) {
  for (std::size_t i = size; i > 0; --i) {
    out.push_back(static_cast<std::uint8_t>(value >> (8U * (i - 1))));
  }
}

bool put_vector(bytes& out, std::size_t length_size, byte_span data) {
  const std::size_t max = length_size == 1 ? max_u8 : length_size == 2 ? max_u16 : max_u24;
  if (data.size() > max) {
    return false;
  }
  put_integer(out, length_size, static_cast<std::uint32_t>(data.size()));
  out.insert(out.end(), data.begin(), data.end());
  return true;
}

bool put_extensions(bytes& out, const std::vector<extension>& extensions) {
  bytes block;
  for (const auto& e : extensions) {
    put_integer(block, 2, e.type);
    if (!put_vector(block, 2, e.data)) {
      return false;
    }
  }
  return put_vector(out, 2, block);
}

bool put_handshake(bytes& out, std::uint8_t type, byte_span body) {
  out.push_back(type);
  return put_vector(out, 3, body);
}

bool put_certificate(bytes& out, const certificate_message& message) {
  bytes body;
  bytes list;
  if (!put_vector(body, 1, message.context)) {
    return false;
  }
  for (const auto& entry : message.entries) {
    if (!put_vector(list, 3, entry.cert_data) || !put_extensions(list, entry.extensions)) {
      return false;
    }
  }
  return put_vector(body, 3, list) && put_handshake(out, handshake_certificate, body);
}

bool put_certificate_verify(bytes& out, std::uint16_t scheme, byte_span signature) {
  bytes body;
  put_integer(body, 2, scheme);
  return put_vector(body, 2, signature) && put_handshake(out, handshake_certificate_verify, body);
}

// ---------------------------------------------------------------------------------------------
// Hashes, MACs, exporters.

result<bytes> digest(const EVP_MD* md, std::span<const byte_span> parts) {
  md_ctx_ptr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1) {
    return out_of_memory();
  }
  for (const auto part : parts) {
    if (EVP_DigestUpdate(ctx.get(), part.data(), part.size()) != 1) {
      return out_of_memory();
    }
  }
  bytes out(EVP_MAX_MD_SIZE);
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(ctx.get(), out.data(), &size) != 1) {
    return out_of_memory();
  }
  out.resize(size);
  return out;
}

result<bytes> digest(const EVP_MD* md, std::initializer_list<byte_span> parts) {
  return digest(md, std::span<const byte_span>(parts.begin(), parts.size()));
}

result<bytes> hmac(const EVP_MD* md, byte_span key, byte_span data) {
  bytes out(EVP_MAX_MD_SIZE);
  unsigned int size = 0;
  if (HMAC(md, key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(),
           &size) == nullptr) {
    return out_of_memory();
  }
  out.resize(size);
  return out;
}

// The connection's handshake hash, which RFC 9261 §5.1 calls the authenticator hash. Only
// established TLS 1.3 connections: TLS 1.2 would need the extended master secret check
// (RFC 9261 §5.1, §7), and atlsd speaks only TLS 1.3.
result<const EVP_MD*> authenticator_hash(SSL* ssl) {
  if (ssl == nullptr || SSL_version(ssl) != TLS1_3_VERSION || SSL_is_init_finished(ssl) != 1) {
    return error_code(errc::protocol_error);
  }
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  const EVP_MD* md = cipher == nullptr ? nullptr : SSL_CIPHER_get_handshake_digest(cipher);
  if (md == nullptr) {
    return error_code(errc::protocol_error);
  }
  return md;
}

// RFC 8446 §7.5 TLS-Exporter(label, context, length), from the exporter_master_secret (not the
// early one: RFC 9261 §5.1).
result<bytes> exporter(SSL* ssl, std::string_view label, byte_span context, std::size_t length) {
  bytes out(length);
  if (SSL_export_keying_material(ssl, out.data(), out.size(), label.data(), label.size(),
                                 context.data(), context.size(), 1) != 1) {
    return error_code(errc::protocol_error);
  }
  return out;
}

struct authenticator_keys {
  const EVP_MD* md = nullptr;
  bytes handshake_context;
  bytes finished_key;
};

// RFC 9261 §5.1: Handshake Context and Finished MAC Key, exporter values with an empty context
// and Hash.length bytes, labelled by the side that creates the authenticator.
result<authenticator_keys> keys_for(SSL* ssl, const EVP_MD* md, bool creator_is_server) {
  const auto size = static_cast<std::size_t>(EVP_MD_get_size(md));
  auto context = exporter(
      ssl, creator_is_server ? server_handshake_context_label : client_handshake_context_label, {},
      size);
  if (!context) {
    return context.error();
  }
  auto key = exporter(
      ssl, creator_is_server ? server_finished_key_label : client_finished_key_label, {}, size);
  if (!key) {
    return key.error();
  }
  return authenticator_keys{md, std::move(*context), std::move(*key)};
}

// RFC 9261 §4: the server asks with CertificateRequest, the client with
// ClientCertificateRequest.
authenticator_request_kind kind_sent_by(bool server) {
  return server ? authenticator_request_kind::certificate_request
                : authenticator_request_kind::client_certificate_request;
}

// What every authenticator this side creates starts from: the request it answers and the keys
// of the creating side.
struct answer_basis {
  authenticator_request request;
  authenticator_keys keys;
};

// Fails with errc::malformed_authenticator when request does not decode or is not of the kind
// our peer sends (we create, so the peer asked), errc::protocol_error as authenticator_hash and
// exporter. The keys come before the callers' own checks: on an established TLS 1.3 connection
// the exporter fails only when OpenSSL cannot allocate, so no refusal changes its reason.
result<answer_basis> answer_basis_for(SSL* ssl, byte_span request) {
  auto decoded = decode_request(request);
  if (!decoded) {
    return decoded.error();
  }
  const auto md = authenticator_hash(ssl);
  if (!md) {
    return md.error();
  }
  const bool server = SSL_is_server(ssl) == 1;
  if (decoded->kind != kind_sent_by(!server)) {
    return error_code(errc::malformed_authenticator);
  }
  auto keys = keys_for(ssl, *md, server);
  if (!keys) {
    return keys.error();
  }
  return answer_basis{std::move(*decoded), std::move(*keys)};
}

// RFC 9261 §5.2.2: 64 × 0x20 ‖ "Exported Authenticator" ‖ 0x00 ‖
// Hash(Handshake Context ‖ authenticator request ‖ Certificate).
result<bytes> signed_content(const authenticator_keys& keys, byte_span request,
                             byte_span certificate) {
  auto transcript = digest(keys.md, {keys.handshake_context, request, certificate});
  if (!transcript) {
    return transcript.error();
  }
  // Sized up front: growing a 64-byte vector in place trips GCC 12's -Warray-bounds at -O2.
  bytes out;
  out.reserve(signature_padding + signature_context.size() + 1 + transcript->size());
  out.assign(signature_padding, 0x20);
  out.insert(out.end(), signature_context.begin(), signature_context.end());
  out.push_back(0x00);
  out.insert(out.end(), transcript->begin(), transcript->end());
  return out;
}

// RFC 9261 §5.2.3 and §6: HMAC(Finished MAC Key, Hash(Handshake Context ‖ messages...)).
result<bytes> finished_mac(const authenticator_keys& keys,
                           std::initializer_list<byte_span> messages) {
  std::vector<byte_span> parts{keys.handshake_context};
  parts.insert(parts.end(), messages.begin(), messages.end());
  auto transcript = digest(keys.md, parts);
  if (!transcript) {
    return transcript.error();
  }
  return hmac(keys.md, keys.finished_key, *transcript);
}

// RFC 9261 §6: the Certificate of the empty authenticator's transcript, with the request's
// context and no entries.
bytes empty_certificate(byte_span context) {
  bytes out;
  put_certificate(out, certificate_message{.context = bytes(context.begin(), context.end())});
  return out;
}

bool equal_constant_time(byte_span a, byte_span b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// ---------------------------------------------------------------------------------------------
// Signature schemes (RFC 8446 §4.2.3; RFC 9261 §5.2.2: TLS 1.3 schemes only, so no
// RSASSA-PKCS1-v1_5 and no ECDSA with another curve's hash).

struct scheme_info {
  std::uint16_t code;
  const char* key_type;   // EVP_PKEY_is_a name
  int curve;              // ECDSA only: the curve's NID
  const EVP_MD* (*md)();  // nullptr for EdDSA, which signs the message whole
  bool pss;               // RSASSA-PSS, salt = hash length, MGF1 with the same hash
};

constexpr std::array<scheme_info, 8> schemes{{
    {signature_scheme::ecdsa_secp256r1_sha256, "EC", NID_X9_62_prime256v1, &EVP_sha256, false},
    {signature_scheme::ecdsa_secp384r1_sha384, "EC", NID_secp384r1, &EVP_sha384, false},
    {signature_scheme::ecdsa_secp521r1_sha512, "EC", NID_secp521r1, &EVP_sha512, false},
    {signature_scheme::rsa_pss_rsae_sha256, "RSA", NID_undef, &EVP_sha256, true},
    {signature_scheme::rsa_pss_rsae_sha384, "RSA", NID_undef, &EVP_sha384, true},
    {signature_scheme::rsa_pss_rsae_sha512, "RSA", NID_undef, &EVP_sha512, true},
    {signature_scheme::ed25519, "ED25519", NID_undef, nullptr, false},
    {signature_scheme::ed448, "ED448", NID_undef, nullptr, false},
}};

const scheme_info* find_scheme(std::uint16_t code) {
  const auto* it = std::find_if(schemes.begin(), schemes.end(),
                                [code](const scheme_info& s) { return s.code == code; });
  return it == schemes.end() ? nullptr : &*it;
}

int curve_of(EVP_PKEY* key) {
  std::array<char, 64> name{};
  std::size_t size = 0;
  if (EVP_PKEY_get_group_name(key, name.data(), name.size(), &size) != 1) {
    return NID_undef;
  }
  const int nid = OBJ_sn2nid(name.data());
  return nid != NID_undef ? nid : EC_curve_nist2nid(name.data());
}

bool fits(const scheme_info& scheme, EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, scheme.key_type) != 1) {
    return false;
  }
  return scheme.curve == NID_undef || curve_of(key) == scheme.curve;
}

// Sets up ctx for signing or verifying with scheme and key.
bool init_signature(EVP_MD_CTX* ctx, const scheme_info& scheme, EVP_PKEY* key, bool sign) {
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  const EVP_MD* md = scheme.md == nullptr ? nullptr : scheme.md();
  const int rc = sign ? EVP_DigestSignInit(ctx, &pctx, md, nullptr, key)
                      : EVP_DigestVerifyInit(ctx, &pctx, md, nullptr, key);
  if (rc != 1) {
    return false;
  }
  return !scheme.pss || (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1);
}

bool verify_signature(const scheme_info& scheme, EVP_PKEY* key, byte_span message,
                      byte_span signature) {
  md_ctx_ptr ctx(EVP_MD_CTX_new());
  return ctx != nullptr && init_signature(ctx.get(), scheme, key, false) &&
         EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(),
                          message.size()) == 1;
}

// ---------------------------------------------------------------------------------------------
// Certificates and keys.

result<bytes> der_of(X509* cert) {
  const int size = i2d_X509(cert, nullptr);
  if (size <= 0) {
    return error_code(errc::certificate_unusable);
  }
  bytes out(static_cast<std::size_t>(size));
  unsigned char* p = out.data();
  if (i2d_X509(cert, &p) != size) {
    return error_code(errc::certificate_unusable);
  }
  return out;
}

// One DER certificate, all of the input.
x509_ptr parse_certificate(byte_span der) {
  const unsigned char* p = der.data();
  x509_ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (cert == nullptr || p != der.data() + der.size()) {
    return nullptr;
  }
  return cert;
}

std::optional<bytes> spki_of(X509* cert) {
  const int size = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), nullptr);
  if (size <= 0) {
    return std::nullopt;
  }
  bytes out(static_cast<std::size_t>(size));
  unsigned char* p = out.data();
  if (i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &p) != size) {
    return std::nullopt;
  }
  return out;
}

// One DER SubjectPublicKeyInfo, all of the input.
x509_pubkey_ptr parse_spki(byte_span der) {
  const unsigned char* p = der.data();
  x509_pubkey_ptr key(d2i_X509_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  if (key == nullptr || p != der.data() + der.size() || X509_PUBKEY_get0(key.get()) == nullptr) {
    return nullptr;
  }
  return key;
}

// binder_key_encoding::raw_public_key.
std::optional<bytes> raw_public_key(X509_PUBKEY* spki) {
  EVP_PKEY* key = X509_PUBKEY_get0(spki);  // borrowed
  if (EVP_PKEY_is_a(key, "EC") == 1) {
    // The uncompressed point whatever the SPKI's point format: 0x04 ‖ X ‖ Y, each coordinate
    // padded to the field size (SEC 1 §2.3.3).
    BIGNUM* x_raw = nullptr;
    BIGNUM* y_raw = nullptr;
    const bool got_x = EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x_raw) == 1;
    const bn_ptr x(x_raw);
    const bool got_y = EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y_raw) == 1;
    const bn_ptr y(y_raw);
    const int field = (EVP_PKEY_get_bits(key) + 7) / 8;
    if (!got_x || !got_y || field <= 0) {
      return std::nullopt;
    }
    const auto size = static_cast<std::size_t>(field);
    bytes out(1 + 2 * size);
    out[0] = 0x04;
    if (BN_bn2binpad(x.get(), out.data() + 1, field) != field ||
        BN_bn2binpad(y.get(), out.data() + 1 + size, field) != field) {
      return std::nullopt;
    }
    return out;
  }
  const unsigned char* data = nullptr;
  int size = 0;
  if (X509_PUBKEY_get0_param(nullptr, &data, &size, nullptr, spki) != 1 || size <= 0) {
    return std::nullopt;
  }
  return bytes(data, data + size);
}

bool valid_request_context(byte_span context) {
  return !context.empty() && context.size() <= max_u8;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Pure codecs.

const extension* find_extension(const std::vector<extension>& extensions, std::uint16_t type) {
  const auto it = std::find_if(extensions.begin(), extensions.end(),
                               [type](const extension& e) { return e.type == type; });
  return it == extensions.end() ? nullptr : &*it;
}

std::vector<std::uint16_t> requested_signature_schemes(const authenticator_request& request) {
  std::vector<std::uint16_t> out;
  const auto* e = find_extension(request.extensions, signature_algorithms_extension);
  if (e == nullptr || !parse_signature_schemes(e->data, out)) {
    return {};
  }
  return out;
}

result<authenticator_request> decode_request(std::span<const std::uint8_t> in) {
  const error_code malformed = errc::malformed_authenticator;
  reader input(in);
  handshake_message message;
  if (!read_handshake(input, message) || !input.empty()) {
    return malformed;
  }
  authenticator_request out;
  switch (message.type) {
    case static_cast<std::uint8_t>(authenticator_request_kind::certificate_request):
      out.kind = authenticator_request_kind::certificate_request;
      break;
    case client_certificate_request_type:
      out.kind = authenticator_request_kind::client_certificate_request;
      break;
    default:
      return malformed;
  }
  // RFC 9261 §4: opaque certificate_request_context<0..2^8-1>; Extension
  // extensions<2..2^16-1>. We refuse an empty context (see the header).
  reader body(message.body);
  byte_span context;
  byte_span extensions;
  if (!body.vector(1, context) || !valid_request_context(context) || !body.vector(2, extensions) ||
      extensions.size() < 2 || !body.empty() || !parse_extensions(extensions, out.extensions)) {
    return malformed;
  }
  out.context.assign(context.begin(), context.end());
  // RFC 8446 §4.3.2, RFC 9261 §7.1: signature_algorithms is required.
  if (requested_signature_schemes(out).empty()) {
    return malformed;
  }
  return out;
}

result<bytes> encode_request(const authenticator_request& request) {
  const error_code malformed = errc::malformed_authenticator;
  bytes body;
  bytes out;
  if (!put_vector(body, 1, request.context) || !put_extensions(body, request.extensions) ||
      !put_handshake(out, static_cast<std::uint8_t>(request.kind), body)) {
    return malformed;
  }
  // Whatever decode_request would refuse (an empty context, duplicate extensions, no
  // signature_algorithms, a kind out of range) is refused here, so that encode and decode
  // agree.
  const auto again = decode_request(out);
  if (!again || *again != request) {
    return malformed;
  }
  return out;
}

result<authenticator> decode_authenticator(std::span<const std::uint8_t> in) {
  auto parsed = parse_authenticator(in);
  if (!parsed) {
    return parsed.error();
  }
  return std::move(parsed->value);
}

result<bytes> encode_authenticator(const authenticator& value) {
  const error_code malformed = errc::malformed_authenticator;
  if (value.certificate.has_value() != value.certificate_verify.has_value()) {
    return malformed;
  }
  bytes out;
  if (value.certificate && (!put_certificate(out, *value.certificate) ||
                            !put_certificate_verify(out, value.certificate_verify->scheme,
                                                    value.certificate_verify->signature))) {
    return malformed;
  }
  if (!put_handshake(out, handshake_finished, value.finished)) {
    return malformed;
  }
  // The caps and the rules of the decoder (entries, sizes, duplicate extensions) apply here too.
  const auto again = decode_authenticator(out);
  if (!again || *again != value) {
    return malformed;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// authenticator_session

bool authenticator_session::used(std::span<const std::uint8_t> context) const {
  return contexts_.size() >= max_contexts ||
         contexts_.find(bytes(context.begin(), context.end())) != contexts_.end();
}

void authenticator_session::remember(std::span<const std::uint8_t> context) {
  contexts_.emplace(context.begin(), context.end());
}

// ---------------------------------------------------------------------------------------------
// Requests.

result<std::array<std::uint8_t, request_context_size>> make_request_context() {
  const openssl_error_scope errors;
  std::array<std::uint8_t, request_context_size> out{};
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    return error_code(errc::context_setup_failed);
  }
  return out;
}

result<bytes> make_request(authenticator_request_kind kind, std::span<const std::uint8_t> context,
                           const request_options& options) {
  const error_code malformed = errc::malformed_authenticator;
  auto schemes_sorted = options.signature_schemes;
  std::sort(schemes_sorted.begin(), schemes_sorted.end());
  if (options.signature_schemes.empty() ||
      std::adjacent_find(schemes_sorted.begin(), schemes_sorted.end()) != schemes_sorted.end()) {
    return malformed;
  }
  bytes schemes_list;
  for (const auto scheme : options.signature_schemes) {
    put_integer(schemes_list, 2, scheme);
  }
  authenticator_request request{.kind = kind, .context = bytes(context.begin(), context.end())};
  extension signature_algorithms{.type = signature_algorithms_extension};
  if (!put_vector(signature_algorithms.data, 2, schemes_list)) {
    return malformed;
  }
  request.extensions.push_back(std::move(signature_algorithms));
  if (options.request_attestation) {
    // draft-fossati-seat-expat: an empty cmw_attestation says "send evidence".
    request.extensions.push_back({.type = options.code_points.cmw_attestation_extension});
  }
  return encode_request(request);
}

// ---------------------------------------------------------------------------------------------
// Creating authenticators.

result<prepared_authenticator> prepare_authenticator(
    SSL* ssl, std::span<const std::uint8_t> request, std::span<X509* const> chain,
    std::optional<std::span<const std::uint8_t>> cmw, authenticator_session& session,
    const authenticator_options& options) {
  const openssl_error_scope errors;
  const auto basis = answer_basis_for(ssl, request);
  if (!basis) {
    return basis.error();
  }
  const auto& decoded = basis->request;
  // RFC 9261 §5.2: no authenticator for a context already answered or accepted.
  if (session.used(decoded.context)) {
    return error_code(errc::authenticator_context_reused);
  }

  // draft-fossati-seat-expat: the request signals attestation with an EMPTY cmw_attestation;
  // the answer carries it only if asked (RFC 9261 §5.2.1: only requested extensions).
  const auto* asked =
      find_extension(decoded.extensions, options.code_points.cmw_attestation_extension);
  if (asked != nullptr && !asked->data.empty()) {
    return error_code(errc::malformed_attestation_extension);
  }
  if (cmw && asked == nullptr) {
    return error_code(errc::unrequested_extension);
  }
  if (cmw && (cmw->empty() || cmw->size() > max_cmw_size)) {
    return error_code(errc::malformed_attestation_extension);
  }

  if (chain.empty() || chain.size() > max_certificates ||
      std::find(chain.begin(), chain.end(), nullptr) != chain.end()) {
    return error_code(errc::certificate_unusable);
  }
  certificate_message certificate{.context = decoded.context};
  for (X509* cert : chain) {
    auto der = der_of(cert);
    if (!der || der->size() > max_certificate_size) {
      return error_code(errc::certificate_unusable);
    }
    certificate.entries.push_back({.cert_data = std::move(*der)});
  }
  if (cmw) {
    extension e{.type = options.code_points.cmw_attestation_extension};
    put_vector(e.data, 2, *cmw);
    // In the first CertificateEntry: the evidence is about the end-entity key.
    certificate.entries.front().extensions.push_back(std::move(e));
  }

  EVP_PKEY* leaf_key = X509_get0_pubkey(chain.front());  // borrowed
  auto spki = spki_of(chain.front());
  if (leaf_key == nullptr || !spki) {
    return error_code(errc::certificate_unusable);
  }
  // The requester's order of preference decides (RFC 8446 §4.2.3).
  const scheme_info* chosen = nullptr;
  for (const auto code : requested_signature_schemes(decoded)) {
    const auto* candidate = find_scheme(code);
    if (candidate != nullptr && fits(*candidate, leaf_key)) {
      chosen = candidate;
      break;
    }
  }
  if (chosen == nullptr) {
    return error_code(errc::no_common_attestation_scheme);
  }

  prepared_authenticator out{.request = bytes(request.begin(), request.end()),
                             .signature_scheme = chosen->code,
                             .leaf_spki_der = std::move(*spki)};
  // The whole authenticator must stay within what the peer's decoder accepts.
  if (!put_certificate(out.certificate, certificate) ||
      out.certificate.size() + 4 + 2 + 2 + max_u16 + 4 + max_finished_size >
          max_authenticator_size) {
    return error_code(errc::certificate_unusable);
  }
  auto content = signed_content(basis->keys, out.request, out.certificate);
  if (!content) {
    return content.error();
  }
  out.to_be_signed = std::move(*content);
  session.remember(decoded.context);
  return out;
}

result<bytes> sign_prepared(const prepared_authenticator& prepared, EVP_PKEY* key) {
  const openssl_error_scope errors;
  const auto* scheme = find_scheme(prepared.signature_scheme);
  if (key == nullptr || scheme == nullptr || !fits(*scheme, key)) {
    return error_code(errc::signing_failed);
  }
  md_ctx_ptr ctx(EVP_MD_CTX_new());
  std::size_t size = 0;
  if (ctx == nullptr || !init_signature(ctx.get(), *scheme, key, true) ||
      EVP_DigestSign(ctx.get(), nullptr, &size, prepared.to_be_signed.data(),
                     prepared.to_be_signed.size()) != 1) {
    return error_code(errc::signing_failed);
  }
  bytes out(size);
  if (EVP_DigestSign(ctx.get(), out.data(), &size, prepared.to_be_signed.data(),
                     prepared.to_be_signed.size()) != 1) {
    return error_code(errc::signing_failed);
  }
  out.resize(size);
  return out;
}

result<bytes> finish_authenticator(SSL* ssl, const prepared_authenticator& prepared,
                                   std::span<const std::uint8_t> signature) {
  const openssl_error_scope errors;
  const error_code malformed = errc::malformed_authenticator;
  const auto basis = answer_basis_for(ssl, prepared.request);
  if (!basis) {
    return basis.error();
  }
  const auto& keys = basis->keys;
  // The Certificate must be one prepare_authenticator wrote: its context, its leaf.
  reader in(prepared.certificate);
  handshake_message message;
  certificate_message certificate;
  if (!read_handshake(in, message) || !in.empty() || message.type != handshake_certificate ||
      !parse_certificate_body(message.body, certificate) ||
      certificate.context != basis->request.context) {
    return malformed;
  }
  const auto leaf = parse_certificate(certificate.entries.front().cert_data);
  const auto leaf_spki = leaf == nullptr ? std::nullopt : spki_of(leaf.get());
  const auto* scheme = find_scheme(prepared.signature_scheme);
  if (!leaf_spki || *leaf_spki != prepared.leaf_spki_der || scheme == nullptr ||
      signature.size() > max_u16) {
    return malformed;
  }

  // Prepared on this connection? The content signed includes its Handshake Context.
  const auto content = signed_content(keys, prepared.request, prepared.certificate);
  if (!content) {
    return content.error();
  }
  if (*content != prepared.to_be_signed) {
    return error_code(errc::authenticator_context_mismatch);
  }
  // A faulty signer (TPM error, wrong key) is caught here, not by the peer.
  if (!verify_signature(*scheme, X509_get0_pubkey(leaf.get()), *content, signature)) {
    return error_code(errc::signing_failed);
  }

  bytes out = prepared.certificate;
  const auto verify_start = out.size();
  put_certificate_verify(out, prepared.signature_scheme, signature);
  const byte_span verify_message = byte_span(out).subspan(verify_start);
  auto finished = finished_mac(keys, {prepared.request, prepared.certificate, verify_message});
  if (!finished) {
    return finished.error();
  }
  put_handshake(out, handshake_finished, *finished);
  return out;
}

result<bytes> make_empty_authenticator(SSL* ssl, std::span<const std::uint8_t> request) {
  const openssl_error_scope errors;
  const auto basis = answer_basis_for(ssl, request);
  if (!basis) {
    return basis.error();
  }
  auto finished = finished_mac(basis->keys, {request, empty_certificate(basis->request.context)});
  if (!finished) {
    return finished.error();
  }
  bytes out;
  put_handshake(out, handshake_finished, *finished);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Verifying authenticators.

void x509_deleter::operator()(X509* cert) const noexcept {
  X509_free(cert);
}

result<verified_authenticator> verify_authenticator(SSL* ssl, std::span<const std::uint8_t> request,
                                                    std::span<const std::uint8_t> authenticator,
                                                    authenticator_session& session,
                                                    const authenticator_options& options) {
  const openssl_error_scope errors;
  const auto decoded = decode_request(request);
  if (!decoded) {
    return decoded.error();
  }
  const auto parsed = parse_authenticator(authenticator);
  if (!parsed) {
    return parsed.error();
  }
  const auto md = authenticator_hash(ssl);
  if (!md) {
    return md.error();
  }
  // The peer creates, so the request must be of the kind we send.
  const bool server = SSL_is_server(ssl) == 1;
  if (decoded->kind != kind_sent_by(server)) {
    return error_code(errc::malformed_authenticator);
  }
  const auto keys = keys_for(ssl, *md, !server);
  if (!keys) {
    return keys.error();
  }
  const auto& context = decoded->context;

  // RFC 9261 §6: a refusal. Authenticated like any authenticator, and it answers the context.
  if (parsed->value.empty()) {
    const auto expected = finished_mac(*keys, {request, empty_certificate(context)});
    if (!expected) {
      return expected.error();
    }
    if (!equal_constant_time(*expected, parsed->value.finished)) {
      return error_code(errc::bad_authenticator_finished);
    }
    if (session.used(context)) {
      return error_code(errc::authenticator_context_reused);
    }
    session.remember(context);
    return error_code(errc::no_evidence);
  }

  const auto& certificate = *parsed->value.certificate;
  const auto& certificate_verify = *parsed->value.certificate_verify;
  if (certificate.context != context) {
    return error_code(errc::authenticator_context_mismatch);
  }
  if (session.used(context)) {
    return error_code(errc::authenticator_context_reused);
  }

  // RFC 9261 §5.2.1: only extensions the request carried, and none that only a request can
  // carry. draft-fossati-seat-expat: cmw_attestation in the first entry only, holding
  // opaque cmw_data<1..2^16-1>.
  verified_authenticator out;
  const auto cmw_type = options.code_points.cmw_attestation_extension;
  for (std::size_t i = 0; i < certificate.entries.size(); ++i) {
    for (const auto& e : certificate.entries[i].extensions) {
      if (find_extension(decoded->extensions, e.type) == nullptr ||
          std::find(request_only_extensions.begin(), request_only_extensions.end(), e.type) !=
              request_only_extensions.end()) {
        return error_code(errc::unrequested_extension);
      }
      if (e.type != cmw_type) {
        continue;
      }
      reader in(e.data);
      byte_span cmw;
      if (i != 0 || !in.vector(2, cmw) || !in.empty() || cmw.empty()) {
        return error_code(errc::malformed_attestation_extension);
      }
      out.cmw = bytes(cmw.begin(), cmw.end());
    }
  }

  for (const auto& entry : certificate.entries) {
    auto cert = parse_certificate(entry.cert_data);
    if (cert == nullptr) {
      return error_code(errc::malformed_authenticator);
    }
    out.chain.push_back(std::move(cert));
  }
  EVP_PKEY* leaf_key = X509_get0_pubkey(out.chain.front().get());  // borrowed
  auto spki = spki_of(out.chain.front().get());
  if (leaf_key == nullptr || !spki) {
    return error_code(errc::malformed_authenticator);
  }

  // RFC 9261 §5.2.2: a scheme the request offered, fitting the leaf key.
  const auto requested = requested_signature_schemes(*decoded);
  const auto* scheme = find_scheme(certificate_verify.scheme);
  if (std::find(requested.begin(), requested.end(), certificate_verify.scheme) == requested.end() ||
      scheme == nullptr || !fits(*scheme, leaf_key)) {
    return error_code(errc::bad_authenticator_signature);
  }
  const auto content = signed_content(*keys, request, parsed->certificate);
  if (!content) {
    return content.error();
  }
  if (!verify_signature(*scheme, leaf_key, *content, certificate_verify.signature)) {
    return error_code(errc::bad_authenticator_signature);
  }

  // RFC 9261 §5.2.3, compared in constant time (§5.2.4).
  const auto expected =
      finished_mac(*keys, {request, parsed->certificate, parsed->certificate_verify});
  if (!expected) {
    return expected.error();
  }
  if (!equal_constant_time(*expected, parsed->value.finished)) {
    return error_code(errc::bad_authenticator_finished);
  }

  session.remember(context);
  out.leaf_spki_der = std::move(*spki);
  out.signature_scheme = certificate_verify.scheme;
  return out;
}

// ---------------------------------------------------------------------------------------------
// The attestation binder.

result<bytes> attestation_binder(SSL* ssl, std::span<const std::uint8_t> context,
                                 std::span<const std::uint8_t> leaf_spki_der,
                                 const binder_options& options) {
  const openssl_error_scope errors;
  if (!valid_request_context(context)) {
    return error_code(errc::malformed_authenticator);
  }
  const auto spki = parse_spki(leaf_spki_der);
  if (spki == nullptr) {
    return error_code(errc::malformed_authenticator);
  }
  std::optional<bytes> public_key;
  switch (options.key_encoding) {
    case binder_key_encoding::spki_der:
      public_key = bytes(leaf_spki_der.begin(), leaf_spki_der.end());
      break;
    case binder_key_encoding::raw_public_key:
      public_key = raw_public_key(spki.get());
      break;
  }
  if (!public_key) {
    return error_code(errc::malformed_authenticator);
  }
  const auto md = authenticator_hash(ssl);
  if (!md) {
    return md.error();
  }
  const auto exported = exporter(ssl, options.label, context, binder_exporter_size);
  if (!exported) {
    return exported.error();
  }
  return digest(*md, {*public_key, *exported});
}

}  // namespace atls::tls
