// The PROXY protocol v2 header a workload receives from an inbound listener: the exact bytes for
// known inputs (written out field by field from haproxy's proxy-protocol.txt, section 2.2, not
// produced by the encoder), the limits, and a decoder that accepts nothing but those bytes.
#include "atls/proxy/proxy_protocol.hpp"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address.hpp>
#include <doctest/doctest.h>

#include "atls/common/hex.hpp"

namespace atls::proxy::pp2 {
namespace {

namespace asio = boost::asio;
using bytes = std::vector<std::uint8_t>;

// Spaces separate fields for the reader and are skipped.
bytes from_hex(std::string_view spaced) {
  std::string text(spaced);
  std::erase(text, ' ');
  REQUIRE(text.size() % 2 == 0);
  bytes out;
  for (std::size_t i = 0; i < text.size(); i += 2) {
    const int high = hex_digit(text[i]);
    const int low = hex_digit(text[i + 1]);
    REQUIRE(high >= 0);
    REQUIRE(low >= 0);
    out.push_back(static_cast<std::uint8_t>(high * 16 + low));
  }
  return out;
}

asio::ip::tcp::endpoint endpoint(const char* address, std::uint16_t port) {
  return {asio::ip::make_address(address), port};
}

sha256_digest counting_digest() {
  sha256_digest out{};
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::uint8_t>(i);
  }
  return out;
}

// A TLS 1.3 client at 192.0.2.10:51234 that reached 198.51.100.1:443 with SNI and ALPN, presented
// a verified certificate, and attested (affirming) with an EAR.
header full_header() {
  sha256_digest ear{};
  ear.fill(0xFF);
  return header{
      .endpoints = addresses{.source = endpoint("192.0.2.10", 51234),
                             .destination = endpoint("198.51.100.1", 443)},
      .alpn = "h2",
      .authority = "server.test",
      .tls = tls_info{.client = client_ssl | client_cert_conn | client_cert_sess,
                      .verify = 0,
                      .version = "TLSv1.3",
                      .cipher = "TLS_AES_128_GCM_SHA256"},
      .attestation = attestation_info{.status = attestation_status::affirming,
                                      .key_sha256 = counting_digest(),
                                      .ear_sha256 = ear},
  };
}

bytes full_header_bytes() {
  return from_hex(
      "0d0a0d0a000d0a515549540a"        // signature
      "21"                              // version 2, command PROXY
      "11"                              // TCP over IPv4
      "00dc"                            // 220 bytes follow
      "c000020a c6336401 c822 01bb"     // 192.0.2.10, 198.51.100.1, 51234, 443
      "01 0002 6832"                    // ALPN "h2"
      "02 000b 7365727665722e74657374"  // AUTHORITY "server.test"
      "20 0028 07 00000000"             // SSL, 40 bytes: every client bit, verified
      "21 0007 544c5376312e33"          //   VERSION "TLSv1.3"
      "23 0016 544c535f4145535f3132385f47434d5f534841323536"  //   CIPHER
      "e0 0009 6166666972 6d696e67"                           // attestation status "affirming"
      "e1 0040"  // attested key SHA-256, 00 01 .. 1f as 64 hex digits
      "3030 3031 3032 3033 3034 3035 3036 3037 3038 3039 3061 3062 3063 3064 3065 3066"
      "3130 3131 3132 3133 3134 3135 3136 3137 3138 3139 3161 3162 3163 3164 3165 3166"
      "e2 0040"  // EAR SHA-256, ff .. ff as 64 hex digits
      "6666666666666666666666666666666666666666666666666666666666666666"
      "6666666666666666666666666666666666666666666666666666666666666666");
}

TEST_CASE("a PROXY v2 header carries the client address, TLS facts and attestation as documented") {
  const auto encoded = encode(full_header());
  REQUIRE(encoded.has_value());
  CHECK(to_hex(*encoded) == to_hex(full_header_bytes()));
  const auto decoded = decode(*encoded);
  REQUIRE(decoded.has_value());
  CHECK(*decoded == full_header());
}

TEST_CASE("a client on a unix socket gets an AF_UNSPEC header that still says it is unattested") {
  const header h{.attestation = attestation_info{}};
  const auto encoded = encode(h);
  REQUIRE(encoded.has_value());
  CHECK(to_hex(*encoded) ==
        "0d0a0d0a000d0a515549540a"
        "21"
        "00"
        "000d"
        "e0"
        "000a"
        "756e6174746573746564");
  CHECK(decode(*encoded).value() == h);
}

TEST_CASE("an IPv6 client is sent as TCP over IPv6 with 36 address bytes") {
  header h = full_header();
  h.endpoints = addresses{.source = endpoint("2001:db8::7", 40000),
                          .destination = endpoint("2001:db8::1", 8443)};
  const auto encoded = encode(h);
  REQUIRE(encoded.has_value());
  CHECK((*encoded)[13] == 0x21);
  CHECK(encoded->size() == full_header_bytes().size() + 36 - 12);
  const bytes source(encoded->begin() + 16, encoded->begin() + 32);
  CHECK(to_hex(source) == "20010db8000000000000000000000007");
  CHECK(decode(*encoded).value() == h);
}

TEST_CASE("the header size is known from its first 16 bytes") {
  const auto full = full_header_bytes();
  CHECK(header_size(std::span(full).first(16)).value() == full.size());
  CHECK(header_size(std::span(full).first(15)).error() == errc::malformed);
  auto v1 = full;
  v1[12] = 0x11;  // version 1 nibble with the binary signature
  CHECK(header_size(v1).error() == errc::malformed);
  auto text = full;
  text[0] = 'P';
  CHECK(header_size(text).error() == errc::malformed);
}

TEST_CASE("the encoder refuses headers a receiver could not parse") {
  SUBCASE("text values are at most 255 bytes") {
    header h = full_header();
    h.authority = std::string(255, 'a');
    CHECK(encode(h).has_value());
    h.authority += 'a';
    CHECK(encode(h).error() == errc::value_too_long);
    h = full_header();
    h.alpn = std::string(256, 'x');
    CHECK(encode(h).error() == errc::value_too_long);
    h = full_header();
    h.tls->cipher = std::string(256, 'x');
    CHECK(encode(h).error() == errc::value_too_long);
  }
  SUBCASE("both endpoints have one family") {
    header h = full_header();
    h.endpoints->destination = endpoint("::1", 443);
    CHECK(encode(h).error() == errc::invalid_header);
  }
  SUBCASE("PP2_CLIENT_SSL always comes with a TLS version, and only known client bits") {
    header h = full_header();
    h.tls->version.clear();
    CHECK(encode(h).error() == errc::invalid_header);
    h = full_header();
    h.tls->client = client_cert_conn;
    CHECK(encode(h).error() == errc::invalid_header);
    h = full_header();
    h.tls->client = client_ssl | 0x08;
    CHECK(encode(h).error() == errc::invalid_header);
  }
  SUBCASE("an unattested peer has no attested key or EAR") {
    header h = full_header();
    h.attestation->status = attestation_status::unattested;
    CHECK(encode(h).error() == errc::invalid_header);
    h.attestation->key_sha256.reset();
    CHECK(encode(h).error() == errc::invalid_header);
    h.attestation->ear_sha256.reset();
    CHECK(encode(h).has_value());
  }
}

// The offset of the first byte of the TLV of `type` in full_header_bytes().
std::size_t tlv_offset(const bytes& header_bytes, std::uint8_t type) {
  std::size_t at = 16 + 12;
  while (at + 3 <= header_bytes.size()) {
    if (header_bytes[at] == type) {
      return at;
    }
    at += 3 + ((std::size_t{header_bytes[at + 1]} << 8U) | header_bytes[at + 2]);
  }
  FAIL("no TLV of type " << int{type});
  return 0;
}

// Rewrites the length field after an edit of the TLV area, so that only the edit is judged.
bytes with_length(bytes b) {
  const auto length = b.size() - fixed_size;
  b[14] = static_cast<std::uint8_t>(length >> 8U);
  b[15] = static_cast<std::uint8_t>(length & 0xFFU);
  return b;
}

TEST_CASE("the decoder accepts only the encoder's form") {
  const auto good = full_header_bytes();
  REQUIRE(decode(good).has_value());

  SUBCASE("every truncation and any trailing byte") {
    for (std::size_t n = 0; n < good.size(); ++n) {
      CAPTURE(n);
      CHECK(decode(std::span(good).first(n)).error() == errc::malformed);
    }
    auto longer = good;
    longer.push_back(0);
    CHECK(decode(longer).error() == errc::malformed);
    CHECK(decode(with_length(longer)).error() == errc::malformed);
  }
  SUBCASE("a flipped bit either fails or decodes to what re-encodes to the flipped bytes") {
    for (std::size_t i = 0; i < good.size(); ++i) {
      for (unsigned bit = 0; bit < 8; ++bit) {
        auto tampered = good;
        tampered[i] ^= static_cast<std::uint8_t>(1U << bit);
        const auto decoded = decode(tampered);
        if (decoded) {
          CAPTURE(i);
          CHECK(encode(*decoded).value() == tampered);
          CHECK_FALSE(*decoded == full_header());
        }
      }
    }
  }
  SUBCASE("commands, families and protocols other than PROXY over TCP") {
    for (const std::uint8_t version : {0x20, 0x22, 0x11}) {
      auto b = good;
      b[12] = version;
      CHECK(decode(b).error() == errc::malformed);
    }
    for (const std::uint8_t family : {0x12, 0x22, 0x31, 0x10, 0x01}) {
      auto b = good;
      b[13] = family;
      CHECK(decode(b).error() == errc::malformed);
    }
  }
  SUBCASE("TLVs out of order, repeated, unknown or empty") {
    const auto authority = tlv_offset(good, type_authority);
    const auto ssl = tlv_offset(good, type_ssl);
    // AUTHORITY before ALPN.
    bytes swapped(good.begin(), good.begin() + 28);
    swapped.insert(swapped.end(), good.begin() + static_cast<std::ptrdiff_t>(authority),
                   good.begin() + static_cast<std::ptrdiff_t>(ssl));
    swapped.insert(swapped.end(), good.begin() + 28,
                   good.begin() + static_cast<std::ptrdiff_t>(authority));
    swapped.insert(swapped.end(), good.begin() + static_cast<std::ptrdiff_t>(ssl), good.end());
    REQUIRE(swapped.size() == good.size());
    CHECK(decode(swapped).error() == errc::malformed);
    // ALPN twice.
    auto twice = good;
    twice.insert(twice.begin() + 28 + 5, good.begin() + 28, good.begin() + 28 + 5);
    CHECK(decode(with_length(twice)).error() == errc::malformed);
    // CRC32C, NOOP, UNIQUE_ID, NETNS and the rest of the custom range are not written.
    for (const std::uint8_t type : {0x03, 0x04, 0x05, 0x30, 0xE3, 0xEF, 0xF0}) {
      CAPTURE(int{type});
      auto extra = good;
      for (const std::uint8_t b : {type, std::uint8_t{0}, std::uint8_t{0}}) {
        extra.push_back(b);
      }
      CHECK(decode(with_length(extra)).error() == errc::malformed);
    }
    // An empty ALPN value.
    auto empty_alpn = good;
    empty_alpn.erase(empty_alpn.begin() + 28 + 3, empty_alpn.begin() + 28 + 5);
    empty_alpn[28 + 2] = 0;
    CHECK(decode(with_length(empty_alpn)).error() == errc::malformed);
  }
  SUBCASE("a TLV length beyond the header") {
    auto b = good;
    b[28 + 2] = 0xFF;
    CHECK(decode(b).error() == errc::malformed);
  }
  SUBCASE("attestation values outside their vocabulary") {
    const auto status = tlv_offset(good, type_attestation_status);
    auto unknown = good;
    unknown[status + 3] = 'A';  // "Affirming"
    CHECK(decode(unknown).error() == errc::malformed);
    const auto key = tlv_offset(good, type_attested_key_sha256);
    auto upper = good;
    upper[key + 3 + 1] = 'A';  // an uppercase hex digit ("0A" for 0x0a)
    CHECK(decode(upper).error() == errc::malformed);
    // A digest after "unattested" (status value rewritten, digests kept).
    bytes unattested(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(status));
    for (const std::uint8_t b : {std::uint8_t{0xE0}, std::uint8_t{0}, std::uint8_t{10}}) {
      unattested.push_back(b);
    }
    for (const char c : std::string_view("unattested")) {
      unattested.push_back(static_cast<std::uint8_t>(c));
    }
    unattested.insert(unattested.end(), good.begin() + static_cast<std::ptrdiff_t>(key),
                      good.end());
    CHECK(decode(with_length(unattested)).error() == errc::malformed);
    // A digest with no status at all.
    bytes no_status(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(status));
    no_status.insert(no_status.end(), good.begin() + static_cast<std::ptrdiff_t>(key), good.end());
    CHECK(decode(with_length(no_status)).error() == errc::malformed);
  }
  SUBCASE("an SSL TLV without a version or with an unknown client bit") {
    const auto ssl = tlv_offset(good, type_ssl);
    auto unknown_bit = good;
    unknown_bit[ssl + 3] = 0x0F;
    CHECK(decode(unknown_bit).error() == errc::malformed);
    auto not_ssl = good;
    not_ssl[ssl + 3] = 0x06;
    CHECK(decode(not_ssl).error() == errc::malformed);
    // The version sub-TLV removed, the SSL length adjusted.
    auto no_version = good;
    const auto version = ssl + 3 + 5;
    no_version.erase(no_version.begin() + static_cast<std::ptrdiff_t>(version),
                     no_version.begin() + static_cast<std::ptrdiff_t>(version + 3 + 7));
    no_version[ssl + 2] = static_cast<std::uint8_t>(no_version[ssl + 2] - 10);
    CHECK(decode(with_length(no_version)).error() == errc::malformed);
  }
}

TEST_CASE("the fuzz seeds are headers the decoder accepts") {
  const std::filesystem::path dir = ATLS_SOURCE_DIR "/tests/fuzz/seeds/proxy_protocol";
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    CAPTURE(entry.path().string());
    std::ifstream in(entry.path(), std::ios::binary);
    const bytes content((std::istreambuf_iterator<char>(in)), {});
    const auto decoded = decode(content);
    REQUIRE(decoded.has_value());
    CHECK(encode(*decoded).value() == content);
    ++seen;
  }
  CHECK(seen >= 3);
}

}  // namespace
}  // namespace atls::proxy::pp2
