#include "atls/tls/cmw.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>

namespace atls::tls {
namespace {

using bytes = std::vector<std::uint8_t>;

bytes as_bytes(std::string_view s) {
  return {s.begin(), s.end()};
}

bytes from_hex(std::string_view hex) {
  bytes out;
  std::string digits;
  for (const char c : hex) {
    if (c != ' ') {
      digits.push_back(c);
    }
  }
  for (std::size_t i = 0; i + 1 < digits.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(digits.substr(i, 2), nullptr, 16)));
  }
  return out;
}

bool is_malformed(std::span<const std::uint8_t> input) {
  const auto decoded = decode_cmw(input);
  return !decoded && decoded.error() == errc::malformed_cmw;
}

bool is_malformed(std::string_view json) {
  return is_malformed(as_bytes(json));
}

const std::string parsec_tpm = "application/vnd.parallaxsecond.key-attestation.tpm";
const std::string ear_media_type =
    R"(application/eat+jwt; eat_profile="tag:github.com,2023:veraison/ear")";

cmw_record evidence_record() {
  return {parsec_tpm, bytes{0xa2, 0x63, 0x6b, 0x61, 0x74}, cmw_indicator::evidence};
}

// ---------------------------------------------------------------------------------------------
// The examples of draft-ietf-rats-msg-wrap.

TEST_CASE("the draft's CBOR record with a CoAP content format decodes and re-encodes") {
  // [64999, h'2347da55']
  const auto wire = from_hex("8219fde7442347da55");
  const auto decoded = decode_cmw(wire);
  REQUIRE(decoded.has_value());
  CHECK(std::get<std::uint16_t>(decoded->type) == 64999);
  CHECK(decoded->value == from_hex("2347da55"));
  CHECK_FALSE(decoded->indicator.has_value());
  CHECK(encode_cbor(*decoded).value() == wire);
}

TEST_CASE("the draft's CBOR record with an explicit indicator decodes and re-encodes") {
  // ["application/signed-corim+cbor", h'd28443a10126a1', 3]
  const auto wire = from_hex(
      "83781d6170706c69636174696f6e2f7369676e65642d636f72696d2b63626f7247d28443a10126a103");
  const auto decoded = decode_cmw(wire);
  REQUIRE(decoded.has_value());
  CHECK(std::get<std::string>(decoded->type) == "application/signed-corim+cbor");
  CHECK(decoded->value == from_hex("d28443a10126a1"));
  CHECK(decoded->indicator == (cmw_indicator::reference_values | cmw_indicator::endorsements));
  CHECK(encode_cbor(*decoded).value() == wire);
}

TEST_CASE("the draft's JSON records decode, whitespace and escaped quotes included") {
  const auto one = decode_cmw(
      as_bytes("[\n  \"application/vnd.example.rats-conceptual-msg\",\n  \"I0faVQ\"\n]\n"));
  REQUIRE(one.has_value());
  CHECK(std::get<std::string>(one->type) == "application/vnd.example.rats-conceptual-msg");
  CHECK(one->value == from_hex("2347da55"));

  const auto two = decode_cmw(as_bytes(
      R"([ "application/eat+cwt; eat_profile=\"tag:psacertified.org,2023:psa#tfm\"", "I0faVQ" ])"));
  REQUIRE(two.has_value());
  CHECK(std::get<std::string>(two->type) ==
        R"(application/eat+cwt; eat_profile="tag:psacertified.org,2023:psa#tfm")");
}

// ---------------------------------------------------------------------------------------------
// Round trips.

TEST_CASE("records round-trip through both forms") {
  const std::vector<cmw_record> records{
      evidence_record(),
      {ear_media_type, as_bytes("eyJhbGciOiJFUzI1NiJ9.e30.sig"),
       cmw_indicator::attestation_results},
      {parsec_tpm, bytes{0x00}, std::nullopt},
      {parsec_tpm, bytes{0x00, 0x01}, cmw_indicator::all},
      {parsec_tpm, bytes(max_cmw_value_size, 0xee), std::nullopt},
  };
  for (const auto& record : records) {
    const auto cbor = encode_cbor(record);
    REQUIRE(cbor.has_value());
    CHECK(decode_cmw(*cbor).value() == record);
    const auto json = encode_json(record);
    REQUIRE(json.has_value());
    CHECK(json->front() == '[');
    CHECK(decode_cmw(as_bytes(*json)).value() == record);
  }
  const cmw_record content_format{std::uint16_t{10572}, bytes{1, 2, 3}, std::nullopt};
  CHECK(decode_cmw(encode_cbor(content_format).value()).value() == content_format);
}

TEST_CASE("the JSON form is compact and base64url without padding") {
  const cmw_record record{parsec_tpm, bytes{0xfb, 0xff}, cmw_indicator::evidence};
  CHECK(encode_json(record).value() == "[\"" + parsec_tpm + "\",\"-_8\",4]");
}

TEST_CASE("a CoAP content format cannot be written as JSON") {
  const cmw_record record{std::uint16_t{64999}, bytes{1}, std::nullopt};
  CHECK(encode_json(record).error() == errc::malformed_cmw);
  CHECK(is_malformed(R"([64999,"AQ"])"));
}

TEST_CASE("the encoders refuse what the decoder refuses") {
  auto empty_value = evidence_record();
  empty_value.value.clear();
  auto oversized = evidence_record();
  oversized.value.assign(max_cmw_value_size + 1, 0);
  auto zero_indicator = evidence_record();
  zero_indicator.indicator = 0;
  auto unknown_bit = evidence_record();
  unknown_bit.indicator = 16;
  auto bad_type = evidence_record();
  bad_type.type = std::string("not a media type");
  for (const auto& record : {empty_value, oversized, zero_indicator, unknown_bit, bad_type}) {
    CHECK(encode_cbor(record).error() == errc::malformed_cmw);
    CHECK(encode_json(record).error() == errc::malformed_cmw);
  }
}

// ---------------------------------------------------------------------------------------------
// CBOR tampering.

TEST_CASE("every truncation of a CBOR record is refused") {
  const auto wire = encode_cbor(evidence_record()).value();
  for (std::size_t size = 0; size < wire.size(); ++size) {
    CAPTURE(size);
    CHECK(is_malformed(std::span(wire).first(size)));
  }
}

TEST_CASE("a byte after a CBOR record is refused") {
  auto wire = encode_cbor(evidence_record()).value();
  wire.push_back(0x00);
  CHECK(is_malformed(wire));
}

TEST_CASE("no single-bit flip of a CBOR record decodes to the same record") {
  const auto wire = encode_cbor(evidence_record()).value();
  for (std::size_t bit = 0; bit < wire.size() * 8; ++bit) {
    auto flipped = wire;
    flipped[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
    const auto decoded = decode_cmw(flipped);
    CAPTURE(bit);
    CHECK((!decoded || *decoded != evidence_record()));
  }
}

TEST_CASE("CBOR heads that are not in the shortest form are refused") {
  // Content format 1 and a 5-byte value, then the same with a one-byte length (0x58 0x05).
  CHECK_FALSE(is_malformed(from_hex("82 01 45 0102030405")));
  CHECK(is_malformed(from_hex("82 01 5805 0102030405")));
  // Content formats at the edges of each head width.
  CHECK(is_malformed(from_hex("82 1801 41ff")));
  CHECK(is_malformed(from_hex("82 1817 41ff")));
  CHECK_FALSE(is_malformed(from_hex("82 1818 41ff")));
  CHECK(is_malformed(from_hex("82 1900ff 41ff")));
  CHECK_FALSE(is_malformed(from_hex("82 190100 41ff")));
  CHECK(is_malformed(from_hex("82 1a0000ffff 41ff")));
  // Indicator 4 with an extra byte.
  CHECK_FALSE(is_malformed(from_hex("83 01 41ff 04")));
  CHECK(is_malformed(from_hex("83 01 41ff 1804")));
}

TEST_CASE("CBOR forms other than a definite two- or three-element record are refused") {
  CHECK(is_malformed(from_hex("9f0141ffff")));        // indefinite array
  CHECK(is_malformed(from_hex("98020141ff")));        // array(2) in a non-shortest head
  CHECK(is_malformed(from_hex("81 01")));             // one element
  CHECK(is_malformed(from_hex("840141ff0400")));      // four elements
  CHECK(is_malformed(from_hex("d9fde7820141ff")));    // a tag (the CBOR tag CMW form)
  CHECK(is_malformed(from_hex("a10141ff")));          // a map (a CMW collection)
  CHECK(is_malformed(from_hex("82c10141ff")));        // a tagged type
  CHECK(is_malformed(from_hex("822041ff")));          // a negative content format
  CHECK(is_malformed(from_hex("821a0001000041ff")));  // a content format above 0xffff
  CHECK(is_malformed(from_hex("8201 5f41ffff")));     // an indefinite byte string
  CHECK(is_malformed(from_hex("820161ff")));          // the value as a text string
  CHECK(is_malformed(from_hex("820140")));            // an empty value
  CHECK(is_malformed(from_hex("830141ff00")));        // indicator 0
  CHECK(is_malformed(from_hex("830141ff10")));        // indicator 16
  CHECK(is_malformed(from_hex("830141fff5")));        // indicator true
}

TEST_CASE("CBOR media types must be printable and shaped type/subtype") {
  const auto record = [](std::string_view type) {
    bytes out{0x82, static_cast<std::uint8_t>(0x60 + type.size())};
    out.insert(out.end(), type.begin(), type.end());
    out.insert(out.end(), {0x41, 0xff});
    return out;
  };
  CHECK_FALSE(is_malformed(record("a/b")));
  CHECK_FALSE(is_malformed(record("a/b;x=1")));
  CHECK(is_malformed(record("")));
  CHECK(is_malformed(record("ab")));
  CHECK(is_malformed(record("/b")));
  CHECK(is_malformed(record("a/")));
  CHECK(is_malformed(record("#cmw-j2c-tunnel")));
  CHECK(is_malformed(record("a/b\n")));
  CHECK(is_malformed(record("a/b x")));
  CHECK(is_malformed(record("a/b ")));
}

TEST_CASE("a value over 64 KiB is refused before it is read") {
  // bstr of 65537 bytes declared, only one present.
  CHECK(is_malformed(from_hex("82015a0001000100")));
}

// ---------------------------------------------------------------------------------------------
// JSON tampering.

TEST_CASE("base64url must be strict: no padding, no whitespace, no other alphabet") {
  CHECK_FALSE(is_malformed(R"(["a/b","AQ"])"));
  CHECK(is_malformed(R"(["a/b","AQ=="])"));
  CHECK(is_malformed(R"(["a/b","A Q"])"));
  CHECK(is_malformed(R"(["a/b","+/8"])"));
  CHECK(is_malformed(R"(["a/b","AR"])"));  // non-zero spare bits: not the encoding of 0x01
  CHECK(is_malformed(R"(["a/b","A"])"));   // an impossible length
  CHECK(is_malformed(R"(["a/b",""])"));    // an empty value
}

TEST_CASE("JSON records with the wrong shape or types are refused") {
  CHECK(is_malformed(R"(["a/b"])"));
  CHECK(is_malformed(R"(["a/b","AQ",4,1])"));
  CHECK(is_malformed(R"(["a/b",["AQ"]])"));
  CHECK(is_malformed(R"(["a/b","AQ","4"])"));
  CHECK(is_malformed(R"(["a/b","AQ",4.0])"));
  CHECK(is_malformed(R"(["a/b","AQ",4e0])"));
  CHECK(is_malformed(R"(["a/b","AQ",-4])"));
  CHECK(is_malformed(R"(["a/b","AQ",0])"));
  CHECK(is_malformed(R"(["a/b","AQ",16])"));
  CHECK(is_malformed(R"(["a/b","AQ",18446744073709551615])"));
  CHECK(is_malformed(R"(["a/b","AQ",null])"));
  CHECK(is_malformed(R"(["not a media type","AQ"])"));
  CHECK(is_malformed(R"({"a":["a/b","AQ"]})"));
  CHECK(is_malformed(R"( ["a/b","AQ"])"));
  CHECK(is_malformed(R"(["a/b","AQ"] x)"));
  CHECK(is_malformed(R"(["a/b","AQ"],)"));
  CHECK(is_malformed(R"(["a/b","AQ",])"));
  CHECK(is_malformed(R"(["a/b","AQ"]/**/)"));
  CHECK(is_malformed(as_bytes("[\"a/b\xff\",\"AQ\"]")));
}

TEST_CASE("an empty CMW or an unknown first byte is refused") {
  CHECK(is_malformed(bytes{}));
  CHECK(is_malformed(bytes{0x7b, 0x7d}));
  CHECK(is_malformed(bytes{0x00}));
}

}  // namespace
}  // namespace atls::tls
