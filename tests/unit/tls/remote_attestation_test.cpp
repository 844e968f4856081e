#include "atls/tls/remote_attestation.hpp"

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

namespace atls::tls {
namespace {

// ---------------------------------------------------------------------------------------------
// The wire format written by hand, independently of the encoder, remembering where every
// length field is so that the tamper tests can shift each one.

struct wire_builder {
  bytes out;
  std::vector<std::pair<std::size_t, std::size_t>> length_fields;  // offset, width

  wire_builder& u8(std::uint8_t v) {
    out.push_back(v);
    return *this;
  }
  wire_builder& u16(std::uint16_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 8U));
    out.push_back(static_cast<std::uint8_t>(v));
    return *this;
  }
  wire_builder& raw(std::string_view s) {
    out.insert(out.end(), s.begin(), s.end());
    return *this;
  }
  // Opens a vector with a width-byte length; close() fills it in.
  std::size_t open(std::size_t width) {
    const std::size_t at = out.size();
    out.insert(out.end(), width, 0);
    length_fields.emplace_back(at, width);
    return length_fields.size() - 1;
  }
  wire_builder& close(std::size_t field) {
    const auto [at, width] = length_fields[field];
    std::size_t size = out.size() - at - width;
    for (std::size_t i = width; i > 0; --i) {
      out[at + i - 1] = static_cast<std::uint8_t>(size);
      size >>= 8U;
    }
    return *this;
  }
  wire_builder& media_type_scheme(std::string_view media_type) {
    u8(0).u8(1);
    const auto f = open(2);
    return raw(media_type).close(f);
  }
  wire_builder& content_format_scheme(std::uint16_t content_format) {
    return u8(0).u8(0).u16(content_format);
  }
  wire_builder& result_scheme(std::string_view verifier) {
    u8(1);
    const auto f = open(2);
    return raw(verifier).close(f);
  }
};

const std::string parsec_tpm = "application/vnd.parallaxsecond.key-attestation.tpm";
const std::string ear = R"(application/eat+jwt; eat_profile="tag:github.com,2023:veraison/ear")";

bytes as_bytes(std::string_view s) {
  return {s.begin(), s.end()};
}

client_hello_attestation sample_client_hello() {
  return {
      {attestation_scheme::evidence_media_type(parsec_tpm),
       attestation_scheme::result_from(as_bytes("veraison.example")),
       attestation_scheme::evidence_content_format(10572)},
      {attestation_scheme::evidence_media_type(parsec_tpm)},
  };
}

wire_builder sample_client_hello_wire() {
  wire_builder w;
  const auto server_list = w.open(2);
  w.media_type_scheme(parsec_tpm).result_scheme("veraison.example").content_format_scheme(10572);
  w.close(server_list);
  const auto client_list = w.open(2);
  w.media_type_scheme(parsec_tpm);
  w.close(client_list);
  return w;
}

// Adds delta to the big-endian integer at [at, at + width).
bytes shift_length(bytes b, std::size_t at, std::size_t width, int delta) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < width; ++i) {
    v = (v << 8U) | b[at + i];
  }
  v = static_cast<std::uint32_t>(static_cast<std::int64_t>(v) + delta);
  for (std::size_t i = width; i > 0; --i) {
    b[at + i - 1] = static_cast<std::uint8_t>(v);
    v >>= 8U;
  }
  return b;
}

// Every decoder of this file, by name, so that the tamper tests run over all of them.
struct message_case {
  const char* name;
  wire_builder wire;
  bool (*decodes)(std::span<const std::uint8_t>);
};

std::vector<message_case> all_messages() {
  wire_builder ee;
  ee.result_scheme("veraison.example");
  wire_builder cr;
  cr.media_type_scheme(parsec_tpm);
  wire_builder certificate;
  const auto f = certificate.open(3);
  certificate.raw("a CMW record");
  certificate.close(f);
  return {
      {"ClientHello", sample_client_hello_wire(),
       [](std::span<const std::uint8_t> b) { return decode_client_hello(b).has_value(); }},
      {"EncryptedExtensions", ee,
       [](std::span<const std::uint8_t> b) { return decode_encrypted_extensions(b).has_value(); }},
      {"CertificateRequest", cr,
       [](std::span<const std::uint8_t> b) { return decode_certificate_request(b).has_value(); }},
      {"Certificate", certificate,
       [](std::span<const std::uint8_t> b) { return decode_certificate(b).has_value(); }},
  };
}

bool is_malformed(const error_code& ec) {
  return ec == errc::malformed_attestation_extension;
}

// ---------------------------------------------------------------------------------------------
// Round trips against the hand-written wire format.

TEST_CASE("a ClientHello offer encodes to the draft's wire format and decodes back") {
  const auto expected = sample_client_hello_wire().out;
  const auto encoded = encode_client_hello(sample_client_hello());
  REQUIRE(encoded.has_value());
  CHECK(*encoded == expected);
  const auto decoded = decode_client_hello(expected);
  REQUIRE(decoded.has_value());
  CHECK(*decoded == sample_client_hello());
  CHECK(decoded->server_attester_schemes[1].mechanism() == attestation_mechanism::result);
  CHECK(decoded->server_attester_schemes[2].mechanism() == attestation_mechanism::evidence);
}

TEST_CASE("an offer with both lists empty is valid on the wire, for the engine to refuse") {
  const bytes wire{0, 0, 0, 0};
  const auto decoded = decode_client_hello(wire);
  REQUIRE(decoded.has_value());
  CHECK(decoded->server_attester_schemes.empty());
  CHECK(decoded->client_attester_schemes.empty());
  CHECK(encode_client_hello({}).value() == wire);
}

TEST_CASE("the chosen schemes of EncryptedExtensions and CertificateRequest round-trip") {
  for (const auto& scheme : {attestation_scheme::evidence_media_type(parsec_tpm),
                             attestation_scheme::evidence_media_type(""),
                             attestation_scheme::evidence_content_format(0xffff),
                             attestation_scheme::result_from(as_bytes("veraison.example")),
                             attestation_scheme::result_from({})}) {
    const auto ee = encode_encrypted_extensions(scheme);
    REQUIRE(ee.has_value());
    CHECK(decode_encrypted_extensions(*ee).value() == scheme);
    const auto cr = encode_certificate_request(scheme);
    REQUIRE(cr.has_value());
    CHECK(*cr == *ee);
    CHECK(decode_certificate_request(*cr).value() == scheme);
  }
  wire_builder content_format;
  content_format.content_format_scheme(0x1234);
  CHECK(encode_encrypted_extensions(attestation_scheme::evidence_content_format(0x1234)).value() ==
        content_format.out);
}

TEST_CASE("a CMW payload round-trips through the Certificate form with a 3-byte length") {
  const bytes cmw(300, 0x5a);
  const auto encoded = encode_certificate(cmw);
  REQUIRE(encoded.has_value());
  CHECK(encoded->size() == 303);
  CHECK((*encoded)[0] == 0x00);
  CHECK((*encoded)[1] == 0x01);
  CHECK((*encoded)[2] == 0x2c);
  CHECK(decode_certificate(*encoded).value() == cmw);
}

// ---------------------------------------------------------------------------------------------
// Tampering: every decoder, every truncation, every length field.

TEST_CASE("every truncation of every message is refused") {
  for (const auto& m : all_messages()) {
    CAPTURE(m.name);
    REQUIRE(m.decodes(m.wire.out));
    for (std::size_t size = 0; size < m.wire.out.size(); ++size) {
      CAPTURE(size);
      CHECK_FALSE(m.decodes(std::span(m.wire.out).first(size)));
    }
  }
}

TEST_CASE("one byte after any message is refused") {
  for (const auto& m : all_messages()) {
    CAPTURE(m.name);
    for (const std::uint8_t extra : {0x00, 0x01, 0xff}) {
      auto b = m.wire.out;
      b.push_back(extra);
      CHECK_FALSE(m.decodes(b));
    }
  }
}

TEST_CASE("every length field off by one in either direction is refused") {
  for (const auto& m : all_messages()) {
    CAPTURE(m.name);
    REQUIRE_FALSE(m.wire.length_fields.empty());
    for (const auto& [at, width] : m.wire.length_fields) {
      CAPTURE(at);
      CHECK_FALSE(m.decodes(shift_length(m.wire.out, at, width, +1)));
      CHECK_FALSE(m.decodes(shift_length(m.wire.out, at, width, -1)));
    }
  }
}

TEST_CASE("no single-bit flip of an offer decodes to the same offer") {
  const auto wire = sample_client_hello_wire().out;
  for (std::size_t bit = 0; bit < wire.size() * 8; ++bit) {
    auto flipped = wire;
    flipped[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
    const auto decoded = decode_client_hello(flipped);
    CAPTURE(bit);
    CHECK((!decoded || *decoded != sample_client_hello()));
  }
}

TEST_CASE("the errors are malformed_attestation_extension") {
  CHECK(is_malformed(decode_client_hello({}).error()));
  CHECK(is_malformed(decode_encrypted_extensions({}).error()));
  CHECK(is_malformed(decode_certificate_request({}).error()));
  CHECK(is_malformed(decode_certificate({}).error()));
  CHECK(is_malformed(encode_certificate({}).error()));
}

TEST_CASE("an unknown attestation mechanism is refused") {
  for (const std::uint8_t mechanism : {2, 3, 0x7f, 0xff}) {
    CAPTURE(int{mechanism});
    wire_builder w;
    w.u8(mechanism);
    const auto f = w.open(2);
    w.raw("veraison.example").close(f);
    CHECK(is_malformed(decode_encrypted_extensions(w.out).error()));
    // The same bytes with the defined value decode: only the mechanism is wrong.
    w.out[0] = 1;
    CHECK(decode_encrypted_extensions(w.out).has_value());
  }
}

TEST_CASE("an unknown type_encoding is refused") {
  for (const std::uint8_t encoding : {2, 0xff}) {
    CAPTURE(int{encoding});
    wire_builder w;
    w.u8(0).u8(encoding).u16(0);
    CHECK(is_malformed(decode_certificate_request(w.out).error()));
  }
}

TEST_CASE("an empty cmw_payload is refused on the wire and by the encoder") {
  const bytes empty_payload{0, 0, 0};
  CHECK(is_malformed(decode_certificate(empty_payload).error()));
  CHECK(is_malformed(encode_certificate({}).error()));
}

TEST_CASE("a cmw_payload that cannot fit one extension is refused") {
  CHECK(encode_certificate(bytes(max_cmw_payload_size, 1)).has_value());
  CHECK(is_malformed(encode_certificate(bytes(max_cmw_payload_size + 1, 1)).error()));
  // Longer than any extension_data: refused whatever its inner length says.
  bytes too_long(0x10000, 1);
  too_long[0] = 0x00;
  too_long[1] = 0xff;
  too_long[2] = 0xfd;
  CHECK(is_malformed(decode_certificate(too_long).error()));
}

TEST_CASE("scheme lists are capped at 64 entries on both sides") {
  client_hello_attestation offer;
  offer.server_attester_schemes.assign(max_attestation_schemes,
                                       attestation_scheme::evidence_content_format(1));
  const auto at_cap = encode_client_hello(offer);
  REQUIRE(at_cap.has_value());
  CHECK(decode_client_hello(*at_cap).value() == offer);

  offer.server_attester_schemes.push_back(attestation_scheme::evidence_content_format(1));
  CHECK(is_malformed(encode_client_hello(offer).error()));
  // The same list by hand: 65 schemes of 4 bytes.
  wire_builder w;
  const auto list = w.open(2);
  for (std::size_t i = 0; i <= max_attestation_schemes; ++i) {
    w.content_format_scheme(1);
  }
  w.close(list).u16(0);
  CHECK(is_malformed(decode_client_hello(w.out).error()));
}

TEST_CASE("media types over 256 bytes and verifier identities over 1 KiB are refused") {
  const std::string longest(max_scheme_media_type_size, 'a');
  const auto ok = encode_encrypted_extensions(attestation_scheme::evidence_media_type(longest));
  REQUIRE(ok.has_value());
  CHECK(decode_encrypted_extensions(*ok).has_value());
  CHECK(is_malformed(
      encode_encrypted_extensions(attestation_scheme::evidence_media_type(longest + "a")).error()));
  wire_builder w;
  w.media_type_scheme(longest + "a");
  CHECK(is_malformed(decode_encrypted_extensions(w.out).error()));

  const bytes identity(max_verifier_identity_size, 'v');
  CHECK(encode_certificate_request(attestation_scheme::result_from(identity)).has_value());
  wire_builder r;
  r.result_scheme(std::string(max_verifier_identity_size + 1, 'v'));
  CHECK(is_malformed(decode_certificate_request(r.out).error()));
}

TEST_CASE("an offer that would not fit one extension is refused by the encoder") {
  client_hello_attestation offer;
  offer.server_attester_schemes.assign(
      max_attestation_schemes,
      attestation_scheme::result_from(bytes(max_verifier_identity_size, 'v')));
  CHECK(is_malformed(encode_client_hello(offer).error()));
}

TEST_CASE("a single scheme followed by a second one is refused in EncryptedExtensions") {
  wire_builder w;
  w.content_format_scheme(60).content_format_scheme(60);
  CHECK(is_malformed(decode_encrypted_extensions(w.out).error()));
}

// ---------------------------------------------------------------------------------------------
// Choosing a scheme.

TEST_CASE("choose_scheme takes our first preference that the peer offered") {
  const auto tpm = attestation_scheme::evidence_media_type(parsec_tpm);
  const auto ear_from_veraison = attestation_scheme::result_from(as_bytes("veraison.example"));
  const auto cwt = attestation_scheme::evidence_content_format(263);
  const std::vector<attestation_scheme> offered{cwt, tpm, ear_from_veraison};
  const std::vector<attestation_scheme> ours{ear_from_veraison, tpm};
  CHECK(choose_scheme(offered, ours) == ear_from_veraison);
  const std::vector<attestation_scheme> ours_reversed{tpm, ear_from_veraison};
  CHECK(choose_scheme(offered, ours_reversed) == tpm);
}

TEST_CASE("choose_scheme finds nothing when no scheme is common") {
  const auto tpm = attestation_scheme::evidence_media_type(parsec_tpm);
  const std::vector<attestation_scheme> offered{tpm};
  CHECK_FALSE(choose_scheme(offered, {}).has_value());
  CHECK_FALSE(choose_scheme({}, offered).has_value());
  // Near misses: another verifier, a media type with other case or parameters, the same name
  // as a verifier identity instead of an Evidence type.
  const std::vector<attestation_scheme> ours{
      attestation_scheme::result_from(as_bytes(parsec_tpm)),
      attestation_scheme::evidence_media_type("application/VND.parallaxsecond.key-attestation.tpm"),
      attestation_scheme::evidence_media_type(parsec_tpm + ";v=1"),
  };
  CHECK_FALSE(choose_scheme(offered, ours).has_value());
}

}  // namespace
}  // namespace atls::tls
