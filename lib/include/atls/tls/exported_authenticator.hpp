// Exported Authenticators (RFC 9261) with the cmw_attestation extension and the attestation
// binder of draft-fossati-seat-expat: post-handshake proof, on an established TLS 1.3
// connection, that the peer holds the key of a certificate chain, optionally with attestation
// evidence (a CMW) bound to that connection and that key.
//
// Two layers:
//  - pure codecs over bytes (no SSL object, no I/O), the parsers of untrusted bytes that the
//    fuzz target exercises: decode_request / encode_request, decode_authenticator /
//    encode_authenticator;
//  - operations on a connection, which read the connection's exporter and handshake hash:
//    make_request, prepare_authenticator + finish_authenticator (the signature is made in
//    between, possibly on another thread, such as the TPM's), make_empty_authenticator,
//    verify_authenticator and attestation_binder.
//
// Transport of requests and authenticators is the caller's (RFC 9261 §4, §5).
//
// Certificate path validation is NOT done here: verify_authenticator proves that the peer of
// this connection holds the private key of the leaf and returns the chain; whether that chain is
// acceptable (trust anchors, names, validity) is the caller's policy.
//
// Threading: the functions that take an SSL* read it and must run where the connection may be
// used (its strand); they do not perform I/O. The pure functions and sign_prepared may run
// anywhere. OpenSSL's error queue is empty when they return. Besides the errors listed with each
// function, any of them may fail with boost::system::errc::not_enough_memory when OpenSSL
// cannot allocate.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "atls/common/result.hpp"
#include "atls/tls/code_points.hpp"
#include "atls/tls/error.hpp"

using SSL = struct ssl_st;
using X509 = struct x509_st;
using EVP_PKEY = struct evp_pkey_st;

namespace atls::tls {

using bytes = std::vector<std::uint8_t>;

// ---------------------------------------------------------------------------------------------
// Code points and limits.

// RFC 8446 §4 HandshakeType values of the messages of an authenticator request. RFC 9261 §4:
// the server asks with CertificateRequest, the client with ClientCertificateRequest (IANA TLS
// HandshakeType 17, client_certificate_request_type in code_points.hpp).
enum class authenticator_request_kind : std::uint8_t {
  certificate_request = 13,         // sent by the server; the client answers
  client_certificate_request = 17,  // sent by the client; the server answers
};

// RFC 8446 §4.2.3 SignatureScheme values this module signs and verifies with.
namespace signature_scheme {
inline constexpr std::uint16_t ecdsa_secp256r1_sha256 = 0x0403;
inline constexpr std::uint16_t ecdsa_secp384r1_sha384 = 0x0503;
inline constexpr std::uint16_t ecdsa_secp521r1_sha512 = 0x0603;
inline constexpr std::uint16_t rsa_pss_rsae_sha256 = 0x0804;
inline constexpr std::uint16_t rsa_pss_rsae_sha384 = 0x0805;
inline constexpr std::uint16_t rsa_pss_rsae_sha512 = 0x0806;
inline constexpr std::uint16_t ed25519 = 0x0807;
inline constexpr std::uint16_t ed448 = 0x0808;
}  // namespace signature_scheme

// RFC 8446 §4.2: the signature_algorithms extension, required in every request (RFC 9261 §4).
inline constexpr std::uint16_t signature_algorithms_extension = 13;

// Caps of the decoders, beyond the wire format's own length fields. An input over a cap is
// malformed_authenticator.
inline constexpr std::size_t max_authenticator_size = std::size_t{1024} * 1024;
inline constexpr std::size_t max_certificates = 16;  // entries per Certificate
inline constexpr std::size_t max_certificate_size = std::size_t{64} * 1024;  // DER bytes each
inline constexpr std::size_t max_extensions = 64;                            // per extension block
// RFC 8446 §4.4.4: verify_data is Hash.length bytes: 32 (SHA-256) to 64 (SHA-512).
inline constexpr std::size_t min_finished_size = 32;
inline constexpr std::size_t max_finished_size = 64;
// The context of every request this module makes (RFC 9261 §4: unique on the connection and
// unpredictable to the peer).
inline constexpr std::size_t request_context_size = 32;
// draft-fossati-seat-expat: opaque cmw_data<1..2^16-1> inside an extension_data<0..2^16-1>,
// so at most 2^16 - 1 - 2 bytes of CMW.
inline constexpr std::size_t max_cmw_size = 65533;

// ---------------------------------------------------------------------------------------------
// Messages (RFC 8446 §4.2, §4.3.2, §4.4.2-4.4.4 with RFC 9261 §4, §5).

struct extension {
  std::uint16_t type = 0;
  bytes data;

  bool operator==(const extension&) const = default;
};

// CertificateRequest or ClientCertificateRequest.
struct authenticator_request {
  authenticator_request_kind kind = authenticator_request_kind::certificate_request;
  bytes context;  // certificate_request_context, 1..255 bytes
  std::vector<extension> extensions;

  bool operator==(const authenticator_request&) const = default;
};

struct certificate_entry {
  bytes cert_data;  // one DER X.509 certificate (RFC 9261 §5.2.1: X.509 only)
  std::vector<extension> extensions;

  bool operator==(const certificate_entry&) const = default;
};

struct certificate_message {
  bytes context;                           // certificate_request_context, 0..255 bytes
  std::vector<certificate_entry> entries;  // leaf first, 1..max_certificates

  bool operator==(const certificate_message&) const = default;
};

struct certificate_verify_message {
  std::uint16_t scheme = 0;
  bytes signature;

  bool operator==(const certificate_verify_message&) const = default;
};

// Certificate ‖ CertificateVerify ‖ Finished, or Finished alone: the empty authenticator, an
// authenticated refusal (RFC 9261 §6). Either both optionals are set or neither is.
struct authenticator {
  std::optional<certificate_message> certificate;
  std::optional<certificate_verify_message> certificate_verify;
  bytes finished;  // verify_data

  [[nodiscard]] bool empty() const { return !certificate.has_value(); }
  bool operator==(const authenticator&) const = default;
};

// ---------------------------------------------------------------------------------------------
// Pure codecs. Decoders are strict: every length is checked, trailing bytes, duplicate
// extension types in one block (RFC 8446 §4.2) and anything over the caps above are refused
// with errc::malformed_authenticator. What a decoder accepts, the matching encoder writes back
// byte for byte. Encoders fail with errc::malformed_authenticator for values the wire format
// or the caps cannot carry.

// A request as a handshake message (msg_type 13 or 17, uint24 length, body). The context must
// be 1..255 bytes (the RFC's syntax allows 0; a request must be unique on the connection, so
// an empty context is refused) and signature_algorithms must be present with a well-formed,
// non-empty list.
[[nodiscard]] result<authenticator_request> decode_request(std::span<const std::uint8_t> in);
[[nodiscard]] result<bytes> encode_request(const authenticator_request& request);

// The signature schemes of a decoded request's signature_algorithms, in the requester's order
// of preference. Empty only for a request that decode_request would refuse.
[[nodiscard]] std::vector<std::uint16_t> requested_signature_schemes(
    const authenticator_request& request);

// The extension of that type, or nullptr. Borrowed from the vector.
[[nodiscard]] const extension* find_extension(const std::vector<extension>& extensions,
                                              std::uint16_t type);

// An authenticator: Certificate (11) ‖ CertificateVerify (15) ‖ Finished (20), or Finished
// alone, each a handshake message. At most max_authenticator_size bytes in all.
[[nodiscard]] result<authenticator> decode_authenticator(std::span<const std::uint8_t> in);
[[nodiscard]] result<bytes> encode_authenticator(const authenticator& value);

// ---------------------------------------------------------------------------------------------
// The certificate_request_contexts of one connection.

// RFC 9261 §4, §5.2: a certificate_request_context is used at most once per connection, across
// both directions: an endpoint answers a context at most once and accepts an answer to it at
// most once. One object per connection, used by prepare_authenticator and
// verify_authenticator; not thread-safe (use it on the
// connection's strand). It remembers at most max_contexts contexts: past that, every further
// context counts as reused, so a connection that re-attests that often must be replaced.
class authenticator_session {
 public:
  static constexpr std::size_t max_contexts = 4096;

  // Whether context was answered or accepted before on this connection (or the memory is full).
  [[nodiscard]] bool used(std::span<const std::uint8_t> context) const;
  // Records context as used.
  void remember(std::span<const std::uint8_t> context);

 private:
  std::set<bytes> contexts_;
};

// ---------------------------------------------------------------------------------------------
// Requests.

struct request_options {
  // Adds an empty cmw_attestation extension: "send evidence" (draft-fossati-seat-expat).
  bool request_attestation = false;
  // signature_algorithms, in order of preference: P-256 first (the TPM's TLS key), then
  // RSA-PSS and Ed25519 for software keys. Each value once, at least one.
  std::vector<std::uint16_t> signature_schemes{signature_scheme::ecdsa_secp256r1_sha256,
                                               signature_scheme::rsa_pss_rsae_sha256,
                                               signature_scheme::ed25519};
  attestation_code_points code_points{};
};

// 32 random bytes for a new request (RAND_bytes). Fails with errc::context_setup_failed when the
// RNG fails.
[[nodiscard]] result<std::array<std::uint8_t, request_context_size>> make_request_context();

// The encoded request. The caller keeps the bytes: verify_authenticator needs them exactly.
// Fails with errc::malformed_authenticator when context is not 1..255 bytes or the scheme
// list is empty, too long or has duplicates.
[[nodiscard]] result<bytes> make_request(authenticator_request_kind kind,
                                         std::span<const std::uint8_t> context,
                                         const request_options& options = {});

// ---------------------------------------------------------------------------------------------
// Authenticators: creating.

struct authenticator_options {
  attestation_code_points code_points{};
};

// Everything of an authenticator but the signature. Plain bytes, no secrets: it may be moved to
// the thread that owns the key.
struct prepared_authenticator {
  bytes request;                       // the request answered, as received
  bytes certificate;                   // the Certificate handshake message
  std::uint16_t signature_scheme = 0;  // chosen from the request's signature_algorithms
  bytes leaf_spki_der;  // the leaf's SubjectPublicKeyInfo, for the binder and the self-check
  // RFC 9261 §5.2.2: 64 × 0x20 ‖ "Exported Authenticator" ‖ 0x00 ‖
  // Hash(Handshake Context ‖ request ‖ Certificate). The signer signs these bytes with
  // signature_scheme: it hashes them with the scheme's hash (ECDSA, RSA-PSS; ECDSA signatures
  // DER-encoded as in TLS) or signs them whole (EdDSA).
  bytes to_be_signed;
};

// Step one of answering request (an encoded request received from the peer) on ssl, with
// chain (leaf first, borrowed: the certificates are copied as DER) and, when the request asked
// for it, cmw (the CMW, opaque here) in the first CertificateEntry's cmw_attestation
// extension. Records the request's context in session: a context is answered once, even when
// the signature then fails.
// Fails with:
//  - errc::malformed_authenticator: request does not decode, or is of the kind this side sends
//    (a server answers ClientCertificateRequests, a client CertificateRequests);
//  - errc::authenticator_context_reused: the context was answered or accepted before;
//  - errc::unrequested_extension: cmw given but the request did not ask for attestation;
//  - errc::malformed_attestation_extension: the request's cmw_attestation is not empty, or cmw
//    is empty or longer than max_cmw_size;
//  - errc::certificate_unusable: chain empty, longer than max_certificates, a certificate that
//    does not encode or is over max_certificate_size, or a leaf without a usable public key;
//  - errc::no_common_attestation_scheme: no requested signature scheme fits the leaf key;
//  - errc::protocol_error: ssl is not an established TLS 1.3 connection, or the exporter fails.
[[nodiscard]] result<prepared_authenticator> prepare_authenticator(
    SSL* ssl, std::span<const std::uint8_t> request, std::span<X509* const> chain,
    std::optional<std::span<const std::uint8_t>> cmw, authenticator_session& session,
    const authenticator_options& options = {});

// Signs prepared.to_be_signed with key (borrowed), a software key. Fails with
// errc::signing_failed when the key does not fit the scheme or cannot sign.
[[nodiscard]] result<bytes> sign_prepared(const prepared_authenticator& prepared, EVP_PKEY* key);

// Step two: the authenticator, Certificate ‖ CertificateVerify ‖ Finished, with Finished =
// HMAC(Finished MAC Key, Hash(Handshake Context ‖ request ‖ Certificate ‖ CertificateVerify))
// (RFC 9261 §5.2.3). Checks the signature with the leaf key first, so that a faulty signer
// (a TPM error, the wrong key) is caught here rather than by the peer. Fails with:
//  - errc::signing_failed: the signature does not verify with the leaf key;
//  - errc::authenticator_context_mismatch: prepared was made on another connection;
//  - errc::malformed_authenticator: prepared is inconsistent (not made by
//    prepare_authenticator) or the signature is over 2^16 - 1 bytes;
//  - errc::protocol_error: as prepare_authenticator.
[[nodiscard]] result<bytes> finish_authenticator(SSL* ssl, const prepared_authenticator& prepared,
                                                 std::span<const std::uint8_t> signature);

// The empty authenticator answering request: a refusal (RFC 9261 §6), Finished alone, computed
// over a Certificate with the request's context and no entries. It does not consult or record
// the connection's contexts: a refusal proves nothing, so answering with one after
// prepare_authenticator burnt the context (e.g. the signer failed) is allowed. Fails with
// errc::malformed_authenticator or errc::protocol_error, as prepare_authenticator.
[[nodiscard]] result<bytes> make_empty_authenticator(SSL* ssl,
                                                     std::span<const std::uint8_t> request);

// ---------------------------------------------------------------------------------------------
// Authenticators: verifying.

struct x509_deleter {
  void operator()(X509* cert) const noexcept;
};
using x509_ptr = std::unique_ptr<X509, x509_deleter>;

struct verified_authenticator {
  std::vector<x509_ptr> chain;  // leaf first, owned; NOT path-validated
  bytes leaf_spki_der;          // the leaf's SubjectPublicKeyInfo, DER
  std::optional<bytes> cmw;     // the CMW of the first entry, opaque; absent when not sent
  std::uint16_t signature_scheme = 0;
};

// Checks authenticator, received from the peer of ssl, as the answer to request (the bytes
// this side sent). On success records the context in session. Fails with:
//  - errc::malformed_authenticator: request or authenticator does not decode, a certificate
//    that is not one DER X.509 certificate, a leaf without a usable key, or a request of the
//    kind the peer sends;
//  - errc::authenticator_context_mismatch: the Certificate's context is not the request's;
//  - errc::authenticator_context_reused: the context was answered or accepted before;
//  - errc::unrequested_extension: a CertificateEntry extension the request did not carry
//    (RFC 9261 §5.2.1), or one that only a request may carry (signature_algorithms,
//    signature_algorithms_cert, certificate_authorities, oid_filters: RFC 8446 §4.2);
//  - errc::malformed_attestation_extension: cmw_attestation outside the first entry, or whose
//    cmw_data is not opaque<1..2^16-1>;
//  - errc::bad_authenticator_signature: the scheme was not requested or does not fit the leaf
//    key, or CertificateVerify does not verify;
//  - errc::bad_authenticator_finished: Finished does not match (another connection, tampering);
//  - errc::no_evidence: a well-formed empty authenticator, the peer's refusal (the context is
//    then used);
//  - errc::protocol_error: ssl is not an established TLS 1.3 connection, or the exporter fails.
[[nodiscard]] result<verified_authenticator> verify_authenticator(
    SSL* ssl, std::span<const std::uint8_t> request, std::span<const std::uint8_t> authenticator,
    authenticator_session& session, const authenticator_options& options = {});

// ---------------------------------------------------------------------------------------------
// The attestation binder (draft-fossati-seat-expat):
//   binder = Hash(public_key ‖ TLS-Exporter(label, certificate_request_context, 32))
// with Hash the connection's handshake hash. The challenge inside the evidence (for a TPM,
// qualifyingData), so that evidence is bound to this connection, this request and this key.

enum class binder_key_encoding : std::uint8_t {
  // The DER SubjectPublicKeyInfo: unambiguous for every key type, and the form every verifier
  // already has (the certificate's, and akpub in Veraison's EARs).
  spki_der,
  // The subjectPublicKey contents: for EC the uncompressed point (0x04 ‖ X ‖ Y), for EdDSA the
  // raw key, for RSA the RSAPublicKey DER.
  raw_public_key,
};

struct binder_options {
  // The draft's binding formula says "Attestation"; another section and the Rust reference
  // implementation say "Attestation Binding".
  std::string label = "Attestation";
  binder_key_encoding key_encoding = binder_key_encoding::spki_der;
};

// Hash.length bytes. leaf_spki_der is the authenticator's end-entity key (prepared or
// verified .leaf_spki_der). Fails with errc::malformed_authenticator when the context is not
// 1..255 bytes or the SPKI does not parse, errc::protocol_error as above.
[[nodiscard]] result<bytes> attestation_binder(SSL* ssl, std::span<const std::uint8_t> context,
                                               std::span<const std::uint8_t> leaf_spki_der,
                                               const binder_options& options = {});

}  // namespace atls::tls
