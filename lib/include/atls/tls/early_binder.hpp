// The attestation binder of draft-fossati-seat-early-attestation (-06, "Attestation Binder
// Definition"), computed with stock OpenSSL on either side of a TLS 1.3 handshake:
//
//   attest_base = HKDF-Expand-Label(0, "attestation base", Hash(ClientHello...ServerHello),
//                                   Hash.length)
//   binder      = HKDF-Expand-Label(attest_base, "attestation", Hash(attester SPKI DER),
//                                   Hash.length)
//
// where Hash is the cipher suite's hash and 0 is Hash.length zero bytes. The binder is the
// nonce in the attester's Evidence; the relying party recomputes it and compares
// (binders_equal) or gives it to its verifier as the session nonce.
//
// The transcript comes from OpenSSL's message callback (handshake_transcript), because
// OpenSSL 3.0 has no API for the transcript hash. Nothing here blocks or does I/O, so all of
// it may run inside OpenSSL callbacks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <openssl/types.h>

#include "atls/common/result.hpp"
#include "atls/tls/error.hpp"

namespace atls::tls {

// HKDF-Expand-Label(Secret, Label, Context, Length) of RFC 8446 §7.1: HKDF-Expand (RFC 5869
// §2.3) with md over the HkdfLabel {uint16 length; opaque label<7..255> = "tls13 " + label;
// opaque context<0..255>}. Returns `length` bytes, owned by the caller.
// Fails with boost::system::errc::invalid_argument when md is null, the secret is shorter than
// md's output (RFC 5869: PRK is at least HashLen bytes), the label is empty or longer than 249
// bytes, the context longer than 255 bytes, or length is 0 or above 255 * HashLen; with
// errc::context_setup_failed when OpenSSL fails (no HKDF in the loaded providers, out of
// memory). Leaves the thread's OpenSSL error queue as it found it.
[[nodiscard]] result<std::vector<std::uint8_t>> hkdf_expand_label(
    const EVP_MD* md, std::span<const std::uint8_t> secret, std::string_view label,
    std::span<const std::uint8_t> context, std::size_t length);

// The binder for the attester whose end-entity certificate has the SubjectPublicKeyInfo
// attester_spki_der (DER, as in the certificate), on the connection whose transcript hash
// Hash(ClientHello...ServerHello) is transcript_hash (handshake_transcript::hash). md is the
// cipher suite's hash; the binder is md's output size. Fails with invalid_argument when md is
// null, transcript_hash is not md's output size or the SPKI is empty, and as
// hkdf_expand_label otherwise.
[[nodiscard]] result<std::vector<std::uint8_t>> early_attestation_binder(
    const EVP_MD* md, std::span<const std::uint8_t> transcript_hash,
    std::span<const std::uint8_t> attester_spki_der);

// The DER SubjectPublicKeyInfo of a certificate (borrowed, not freed): the attester SPKI above.
// Fails with errc::certificate_unusable when the certificate is null or has no encodable key.
[[nodiscard]] result<std::vector<std::uint8_t>> certificate_spki_der(const X509* certificate);

// Whether two binders are equal, in time independent of where they differ (CRYPTO_memcmp):
// the binder is the nonce the attester's evidence must carry. Different lengths are unequal;
// two empty spans are unequal too, so an absent binder never matches.
[[nodiscard]] bool binders_equal(std::span<const std::uint8_t> a,
                                 std::span<const std::uint8_t> b) noexcept;

// The ClientHello and ServerHello of one TLS 1.3 handshake, as they enter the transcript
// (RFC 8446 §4.4.1: handshake type, 3-byte length and body), collected from OpenSSL's message
// callback on the client or the server. After a HelloRetryRequest it keeps both ClientHellos
// and the HelloRetryRequest, so that hash() can replace the first ClientHello by its
// message_hash as §4.4.1 prescribes.
//
// One object per SSL object and handshake; not thread-safe (OpenSSL calls the callback on the
// thread that drives the handshake). Everything after the ServerHello is ignored, so it costs
// nothing once the hellos are recorded.
class handshake_transcript {
 public:
  handshake_transcript() = default;
  handshake_transcript(const handshake_transcript&) = delete;
  handshake_transcript& operator=(const handshake_transcript&) = delete;
  handshake_transcript(handshake_transcript&&) = delete;
  handshake_transcript& operator=(handshake_transcript&&) = delete;
  ~handshake_transcript() = default;

  // Installs on_message as ssl's message callback, with this object as its argument (this
  // replaces any callback set before: SSL_set_msg_callback has one slot). Call before the
  // handshake starts; the object must outlive the handshake or be detached first
  // (SSL_set_msg_callback(ssl, nullptr)). The SSL object is borrowed.
  void attach(SSL* ssl) noexcept;

  // The SSL_set_msg_callback signature; arg is the handshake_transcript. noexcept: OpenSSL
  // cannot unwind, so an allocation failure marks the transcript broken instead.
  static void on_message(int write_p, int version, int content_type, const void* buf,
                         std::size_t len, SSL* ssl, void* arg) noexcept;

  // One message as OpenSSL reports it. Only content_type SSL3_RT_HANDSHAKE counts; record
  // headers (SSL3_RT_HEADER), TLS 1.3 inner content types (SSL3_RT_INNER_CONTENT_TYPE),
  // ChangeCipherSpec and alerts are ignored. A handshake report must be exactly one message
  // (header length = body length). Messages out of order (a ServerHello first, a second
  // HelloRetryRequest, another message between the hellos) or malformed ones break the
  // transcript: hash() then fails. Direction does not matter: the order of the hellos does.
  void observe(int content_type, std::span<const std::uint8_t> message) noexcept;

  // Whether the ServerHello (not a HelloRetryRequest) has been recorded.
  [[nodiscard]] bool complete() const noexcept { return state_ == state::complete; }
  // Whether the handshake went through a HelloRetryRequest.
  [[nodiscard]] bool saw_hello_retry_request() const noexcept { return !retry_request_.empty(); }

  // Hash(ClientHello...ServerHello) with md, caller-owned. Fails with invalid_argument when md
  // is null or the ServerHello has not been seen yet, and with errc::handshake_failed when the
  // messages were broken (see observe) or OpenSSL cannot hash.
  [[nodiscard]] result<std::vector<std::uint8_t>> hash(const EVP_MD* md) const;
  // The same with the negotiated cipher suite's hash (SSL_CIPHER_get_handshake_digest), which
  // is known once the ServerHello has been processed. Fails with invalid_argument as well when
  // ssl has no cipher yet or did not negotiate TLS 1.3 (the draft is TLS 1.3 only).
  [[nodiscard]] result<std::vector<std::uint8_t>> hash(const SSL* ssl) const;

 private:
  enum class state : std::uint8_t {
    want_client_hello,         // nothing seen yet
    want_server_hello,         // ClientHello seen
    want_second_client_hello,  // ClientHello and HelloRetryRequest seen
    want_second_server_hello,  // ... and the second ClientHello
    complete,                  // ServerHello seen: everything later is ignored
    broken,                    // out of order or malformed: hash() fails
  };

  void record(std::span<const std::uint8_t> message);

  state state_ = state::want_client_hello;
  std::vector<std::uint8_t> client_hello_;         // the only ClientHello, or the first
  std::vector<std::uint8_t> retry_request_;        // empty without a HelloRetryRequest
  std::vector<std::uint8_t> second_client_hello_;  // empty without a HelloRetryRequest
  std::vector<std::uint8_t> server_hello_;
};

}  // namespace atls::tls
