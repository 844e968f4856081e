#include "atls/tls/early_binder.hpp"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <memory>
#include <new>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "atls/common/openssl_error_scope.hpp"
#include "atls/common/openssl_ptr.hpp"

namespace atls::tls {

using bytes = std::vector<std::uint8_t>;

namespace {

error_code invalid_argument() {
  return make_error_code(boost::system::errc::invalid_argument);
}

// RFC 8446 §7.1: every TLS 1.3 label is prefixed, so these values can never collide with the
// key schedule's own HKDF-Expand-Label outputs, whose labels differ.
constexpr std::string_view label_prefix = "tls13 ";
constexpr std::size_t max_hkdf_label = 255;
constexpr std::size_t max_hkdf_context = 255;
constexpr std::size_t max_hkdf_blocks = 255;  // RFC 5869 §2.3: L <= 255 * HashLen

// RFC 8446 §4.1.3: the ServerHello.random of a HelloRetryRequest, SHA-256("HelloRetryRequest").
constexpr std::array<std::uint8_t, 32> hello_retry_request_random{
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c};

// RFC 8446 §4 handshake types, and the header that precedes every handshake message.
constexpr std::uint8_t client_hello_type = 1;
constexpr std::uint8_t server_hello_type = 2;
constexpr std::uint8_t message_hash_type = 254;  // §4.4.1, the synthetic message after a HRR
constexpr std::size_t handshake_header_size = 4;
// ServerHello body: legacy_version (2 bytes), then the 32-byte random.
constexpr std::size_t server_random_offset = handshake_header_size + 2;

result<bytes> digest(const EVP_MD* md, std::initializer_list<std::span<const std::uint8_t>> parts) {
  md_ctx_ptr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1) {
    return make_error_code(errc::handshake_failed);
  }
  for (const auto& part : parts) {
    if (EVP_DigestUpdate(ctx.get(), part.data(), part.size()) != 1) {
      return make_error_code(errc::handshake_failed);
    }
  }
  bytes out(static_cast<std::size_t>(EVP_MD_get_size(md)));
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(ctx.get(), out.data(), &size) != 1 || size != out.size()) {
    return make_error_code(errc::handshake_failed);
  }
  return out;
}

}  // namespace

result<bytes> hkdf_expand_label(const EVP_MD* md, std::span<const std::uint8_t> secret,
                                std::string_view label, std::span<const std::uint8_t> context,
                                std::size_t length) {
  if (md == nullptr) {
    return invalid_argument();
  }
  const auto hash_size = static_cast<std::size_t>(EVP_MD_get_size(md));
  if (hash_size == 0 || secret.size() < hash_size || label.empty() ||
      label_prefix.size() + label.size() > max_hkdf_label || context.size() > max_hkdf_context ||
      length == 0 || length > max_hkdf_blocks * hash_size || length > 0xffff) {
    return invalid_argument();
  }

  // struct { uint16 length; opaque label<7..255>; opaque context<0..255>; } HkdfLabel;
  bytes info;
  info.reserve(2 + 1 + label_prefix.size() + label.size() + 1 + context.size());
  info.push_back(static_cast<std::uint8_t>(length >> 8U));
  info.push_back(static_cast<std::uint8_t>(length));
  info.push_back(static_cast<std::uint8_t>(label_prefix.size() + label.size()));
  info.insert(info.end(), label_prefix.begin(), label_prefix.end());
  info.insert(info.end(), label.begin(), label.end());
  info.push_back(static_cast<std::uint8_t>(context.size()));
  info.insert(info.end(), context.begin(), context.end());

  const openssl_error_scope errors;
  const kdf_ptr kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (kdf == nullptr) {
    return make_error_code(errc::context_setup_failed);
  }
  const kdf_ctx_ptr ctx(EVP_KDF_CTX_new(kdf.get()));
  if (ctx == nullptr) {
    return make_error_code(errc::context_setup_failed);
  }
  // Expand only: the secret is already a pseudorandom key (RFC 5869 §2.3), as in RFC 8446's
  // key schedule where HKDF-Extract and HKDF-Expand-Label are separate steps.
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  const std::array<OSSL_PARAM, 5> params{
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                       const_cast<char*>(EVP_MD_get0_name(md)), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                        const_cast<std::uint8_t*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end(),
  };
  bytes out(length);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params.data()) != 1) {
    return make_error_code(errc::context_setup_failed);
  }
  return out;
}

result<bytes> early_attestation_binder(const EVP_MD* md,
                                       std::span<const std::uint8_t> transcript_hash,
                                       std::span<const std::uint8_t> attester_spki_der) {
  if (md == nullptr) {
    return invalid_argument();
  }
  const auto hash_size = static_cast<std::size_t>(EVP_MD_get_size(md));
  if (transcript_hash.size() != hash_size || attester_spki_der.empty()) {
    return invalid_argument();
  }
  // "0" is Hash.length zero bytes: there is no input keying material, so HKDF-Extract is
  // skipped and the binder is a public value bound to the transcript, not a secret.
  const bytes zeros(hash_size, 0);
  auto attest_base = hkdf_expand_label(md, zeros, "attestation base", transcript_hash, hash_size);
  if (!attest_base) {
    return attest_base.error();
  }
  const openssl_error_scope errors;
  auto spki_hash = digest(md, {attester_spki_der});
  if (!spki_hash) {
    return make_error_code(errc::context_setup_failed);
  }
  return hkdf_expand_label(md, *attest_base, "attestation", *spki_hash, hash_size);
}

result<bytes> certificate_spki_der(const X509* certificate) {
  if (certificate == nullptr) {
    return make_error_code(errc::certificate_unusable);
  }
  const openssl_error_scope errors;
  const X509_PUBKEY* key = X509_get_X509_PUBKEY(certificate);
  const int size = key == nullptr ? -1 : i2d_X509_PUBKEY(key, nullptr);
  if (size <= 0) {
    return make_error_code(errc::certificate_unusable);
  }
  bytes out(static_cast<std::size_t>(size));
  unsigned char* cursor = out.data();
  if (i2d_X509_PUBKEY(key, &cursor) != size) {
    return make_error_code(errc::certificate_unusable);
  }
  return out;
}

bool binders_equal(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) noexcept {
  // The length is public (Hash.length); only the content must not leak through timing.
  if (a.size() != b.size() || a.empty()) {
    return false;
  }
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void handshake_transcript::attach(SSL* ssl) noexcept {
  SSL_set_msg_callback(ssl, &handshake_transcript::on_message);
  SSL_set_msg_callback_arg(ssl, this);
}

void handshake_transcript::on_message(int /*write_p*/, int /*version*/, int content_type,
                                      const void* buf, std::size_t len, SSL* /*ssl*/,
                                      void* arg) noexcept {
  if (arg == nullptr || (buf == nullptr && len != 0)) {
    return;
  }
  static_cast<handshake_transcript*>(arg)->observe(content_type,
                                                   {static_cast<const std::uint8_t*>(buf), len});
}

void handshake_transcript::observe(int content_type,
                                   std::span<const std::uint8_t> message) noexcept {
  // The callback also reports each record header (SSL3_RT_HEADER, 5 bytes that start with a
  // content type of 22 for handshake records), TLS 1.3 inner content types
  // (SSL3_RT_INNER_CONTENT_TYPE, 1 byte) and ChangeCipherSpec: none of them are in the
  // transcript (RFC 8446 §4.4.1 hashes handshake messages only).
  if (content_type != SSL3_RT_HANDSHAKE || state_ == state::complete || state_ == state::broken) {
    return;
  }
  try {
    record(message);
  } catch (const std::bad_alloc&) {
    state_ = state::broken;
  }
}

void handshake_transcript::record(std::span<const std::uint8_t> message) {
  // Exactly one handshake message: type, uint24 length, body of that length.
  if (message.size() < handshake_header_size) {
    state_ = state::broken;
    return;
  }
  const std::size_t body_size =
      (std::size_t{message[1]} << 16U) | (std::size_t{message[2]} << 8U) | std::size_t{message[3]};
  if (message.size() != handshake_header_size + body_size) {
    state_ = state::broken;
    return;
  }
  const std::uint8_t type = message[0];
  const bool is_retry_request =
      type == server_hello_type &&
      message.size() >= server_random_offset + hello_retry_request_random.size() &&
      std::equal(hello_retry_request_random.begin(), hello_retry_request_random.end(),
                 message.begin() + static_cast<std::ptrdiff_t>(server_random_offset));

  switch (state_) {
    case state::want_client_hello:
      if (type == client_hello_type) {
        client_hello_.assign(message.begin(), message.end());
        state_ = state::want_server_hello;
        return;
      }
      break;
    case state::want_server_hello:
      if (type == server_hello_type) {
        if (is_retry_request) {
          retry_request_.assign(message.begin(), message.end());
          state_ = state::want_second_client_hello;
        } else {
          server_hello_.assign(message.begin(), message.end());
          state_ = state::complete;
        }
        return;
      }
      break;
    case state::want_second_client_hello:
      if (type == client_hello_type) {
        second_client_hello_.assign(message.begin(), message.end());
        state_ = state::want_second_server_hello;
        return;
      }
      break;
    case state::want_second_server_hello:
      // A second HelloRetryRequest is an unexpected_message (RFC 8446 §4.1.4).
      if (type == server_hello_type && !is_retry_request) {
        server_hello_.assign(message.begin(), message.end());
        state_ = state::complete;
        return;
      }
      break;
    case state::complete:
    case state::broken:
      return;
  }
  state_ = state::broken;
}

result<bytes> handshake_transcript::hash(const EVP_MD* md) const {
  if (md == nullptr) {
    return invalid_argument();
  }
  if (state_ == state::broken) {
    return make_error_code(errc::handshake_failed);
  }
  if (state_ != state::complete) {
    return invalid_argument();
  }
  const openssl_error_scope errors;
  if (retry_request_.empty()) {
    return digest(md, {client_hello_, server_hello_});
  }
  // RFC 8446 §4.4.1: after a HelloRetryRequest, ClientHello1 is replaced by
  //   message_hash (254) || 00 00 Hash.length || Hash(ClientHello1).
  auto first_hello_hash = digest(md, {client_hello_});
  if (!first_hello_hash) {
    return first_hello_hash.error();
  }
  const std::array<std::uint8_t, handshake_header_size> message_hash_header{
      message_hash_type, 0, 0, static_cast<std::uint8_t>(first_hello_hash->size())};
  return digest(md, {message_hash_header, *first_hello_hash, retry_request_, second_client_hello_,
                     server_hello_});
}

result<bytes> handshake_transcript::hash(const SSL* ssl) const {
  if (ssl == nullptr || SSL_version(ssl) != TLS1_3_VERSION) {
    return invalid_argument();
  }
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  const EVP_MD* md = cipher == nullptr ? nullptr : SSL_CIPHER_get_handshake_digest(cipher);
  if (md == nullptr) {
    return invalid_argument();
  }
  return hash(md);
}

}  // namespace atls::tls
