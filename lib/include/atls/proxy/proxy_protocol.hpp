// PROXY protocol version 2 (haproxy's doc/proxy-protocol.txt, section 2.2): the binary header an
// inbound listener sends to its upstream before the first workload byte, so that the workload
// learns who called: the client's address, the TLS it used, and what it proved by attestation.
// config/README.md lists the TLVs for operators; PROTOCOL-NOTES.md, "PROXY protocol v2 to the
// workload", says why each is encoded as it is.
//
// Pure functions over bytes: no I/O, no OpenSSL, no coroutines (the clang fuzz build links this).
// The encoder writes one canonical form; the decoder accepts exactly that form and nothing else
// (it exists for tests and the fuzz round trip, not for reading headers from the network), so
// that decode(encode(h)) == h and encode(decode(b)) == b.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_category.hpp>

#include "atls/common/result.hpp"

namespace atls::proxy::pp2 {

enum class errc {
  value_too_long = 1,  // a text value beyond max_value_size
  invalid_header,      // encoder input that breaks a rule below (mixed families, empty version...)
  malformed,           // decoder input that is not exactly what encode() writes
};

const boost::system::error_category& pp2_category() noexcept;

inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), pp2_category()};
}

// The first 12 bytes of every version 2 header (section 2.2).
inline constexpr std::array<std::uint8_t, 12> signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                           0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
// Signature, version and command, family and protocol, length.
inline constexpr std::size_t fixed_size = 16;

// TLV types: the registered ones (section 2.2), then this project's in the range the
// specification reserves for application-specific data (2.2.8: 0xE0-0xEF).
inline constexpr std::uint8_t type_alpn = 0x01;
inline constexpr std::uint8_t type_authority = 0x02;
inline constexpr std::uint8_t type_ssl = 0x20;
inline constexpr std::uint8_t subtype_ssl_version = 0x21;
inline constexpr std::uint8_t subtype_ssl_cipher = 0x23;
inline constexpr std::uint8_t type_attestation_status = 0xE0;
inline constexpr std::uint8_t type_attested_key_sha256 = 0xE1;
inline constexpr std::uint8_t type_ear_sha256 = 0xE2;

// The <client> bits of PP2_TYPE_SSL (section 2.2.6).
inline constexpr std::uint8_t client_ssl = 0x01;
inline constexpr std::uint8_t client_cert_conn = 0x02;
inline constexpr std::uint8_t client_cert_sess = 0x04;

// ALPN protocol names and SNI host names are at most 255 bytes on the wire (RFC 7301 section
// 3.1, RFC 6066 section 3 with DNS names); so is every other text value here.
inline constexpr std::size_t max_value_size = 255;

// TCP over IPv4 (family 0x11) or IPv6 (0x21): both endpoints of one family.
struct addresses {
  boost::asio::ip::tcp::endpoint source;       // the client
  boost::asio::ip::tcp::endpoint destination;  // the listener's address the client reached
  bool operator==(const addresses&) const = default;
};

// PP2_TYPE_SSL: how the client reached us.
struct tls_info {
  std::uint8_t client = client_ssl;  // client_* bits; client_ssl is always set
  // Zero when the client presented a certificate and it was verified, non-zero otherwise
  // (section 2.2.6).
  std::uint32_t verify = 1;
  std::string version;  // PP2_SUBTYPE_SSL_VERSION, required: "TLSv1.3"
  std::string cipher;   // PP2_SUBTYPE_SSL_CIPHER; empty: not sent
  bool operator==(const tls_info&) const = default;
};

// What the peer proved. Written as text on the wire: see attestation_status_text.
enum class attestation_status : std::uint8_t {
  unattested,  // the peer did not attest (the listener does not ask, or asks without requiring)
  affirming,   // the EAR status of the peer's accepted attestation result (draft-fv-rats-ear)
  warning,
  contraindicated,
  none,  // the verifier made no claim
};

// "unattested", "affirming", "warning", "contraindicated", "none".
[[nodiscard]] std::string_view to_string(attestation_status status) noexcept;

using sha256_digest = std::array<std::uint8_t, 32>;

struct attestation_info {
  attestation_status status = attestation_status::unattested;
  // SHA-256 of the attested key's DER SubjectPublicKeyInfo, when the result names one.
  std::optional<sha256_digest> key_sha256;
  // SHA-256 of the EAR (the compact JWS as received), when the result came as one.
  std::optional<sha256_digest> ear_sha256;
  bool operator==(const attestation_info&) const = default;
};

// One header, command PROXY.
struct header {
  std::optional<addresses> endpoints;  // unset: family AF_UNSPEC (a client on a unix socket)
  std::string alpn;                    // the negotiated protocol; empty: not sent
  std::string authority;               // the client's SNI; empty: not sent
  std::optional<tls_info> tls;
  std::optional<attestation_info> attestation;
  bool operator==(const header&) const = default;
};

// The header's bytes. TLVs come in ascending type order (ALPN, AUTHORITY, SSL with VERSION then
// CIPHER, then 0xE0, 0xE1, 0xE2); digests are written as 64 lowercase hex digits. Fails with
// errc::value_too_long, or errc::invalid_header when the endpoints' families differ, the TLS
// version is empty, client_ssl is not set or an unknown client bit is, or a digest comes
// without a status other than unattested.
[[nodiscard]] result<std::vector<std::uint8_t>> encode(const header& h);

// The whole header's size (16 + its length field) from at least its first 16 bytes, so that a
// reader knows how much more to read. Fails with errc::malformed when the bytes are not a
// version 2 signature.
[[nodiscard]] result<std::size_t> header_size(std::span<const std::uint8_t> prefix);

// Exactly one header that encode() could have written, with no byte after it. Fails with
// errc::malformed.
[[nodiscard]] result<header> decode(std::span<const std::uint8_t> input);

}  // namespace atls::proxy::pp2

template <>
struct boost::system::is_error_code_enum<atls::proxy::pp2::errc> : std::true_type {};
