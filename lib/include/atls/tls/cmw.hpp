// CMW records (RATS Conceptual Message Wrapper, draft-ietf-rats-msg-wrap, "RFC 9999" in
// PROTOCOL.md): the wrapper of Evidence and Attestation Results in the remoteAttestation and
// cmw_attestation extensions. Only the record form is supported, in both serializations:
//
//   cbor-record = [ type: coap-content-format-type / media-type, value: bytes, ? ind: uint ]
//   json-record = [ type: media-type, value: base64url-string, ? ind: uint ]
//
// CMW tags, collections and tunnels are refused (malformed_cmw): attestation over TLS carries
// one conceptual message, and every extra form is parser surface without a use here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "atls/common/result.hpp"
#include "atls/tls/error.hpp"

namespace atls::tls {

// The `ind` bits (msg-wrap, "CMW Indicators Registry"). A record may set several; the draft
// allows any combination of the four, i.e. 1..15.
namespace cmw_indicator {
inline constexpr std::uint8_t reference_values = 1U << 0U;
inline constexpr std::uint8_t endorsements = 1U << 1U;
inline constexpr std::uint8_t evidence = 1U << 2U;
inline constexpr std::uint8_t attestation_results = 1U << 3U;
inline constexpr std::uint8_t all =
    reference_values | endorsements | evidence | attestation_results;
}  // namespace cmw_indicator

// Caps of our own. Evidence and EAR tokens are a few KiB; a CMW rides in one TLS extension,
// which holds at most 64 KiB anyway.
inline constexpr std::size_t max_cmw_value_size = std::size_t{64} * 1024;
inline constexpr std::size_t max_cmw_media_type_size = 256;

struct cmw_record {
  // A media type ("application/eat+jwt; eat_profile=...") or a CoAP Content-Format number. The
  // JSON form only has media types (msg-wrap: "MUST NOT be used in the JSON serialization").
  std::variant<std::string, std::uint16_t> type;
  // The conceptual message itself, 1 to max_cmw_value_size bytes.
  std::vector<std::uint8_t> value;
  // cmw_indicator bits, 1..15, when present.
  std::optional<std::uint8_t> indicator;

  bool operator==(const cmw_record&) const = default;
};

// What decode_cmw and the encoders accept as a media type: printable US-ASCII, at most
// max_cmw_media_type_size bytes, starting with type "/" subtype as RFC 6838 §4.2
// restricted-names; anything after the subtype must start with ";" (parameters, optionally
// after spaces; their syntax is not checked further). A leading "#" (msg-wrap's tunnel
// sentinel) therefore never passes.
[[nodiscard]] bool is_cmw_media_type(std::string_view media_type) noexcept;

// The CBOR record, in the shortest encoding (RFC 8949 §4.2.1): array(2 or 3), the type, the
// value as a byte string, the indicator when present. Fails with errc::malformed_cmw when the
// record breaks a rule that decode_cmw enforces (empty or oversized value, a bad media type,
// an indicator outside 1..15). This is the form atlsd sends.
[[nodiscard]] result<std::vector<std::uint8_t>> encode_cbor(const cmw_record& record);

// The JSON record: ["media type", "base64url value without padding", indicator?], without
// whitespace. Fails with errc::malformed_cmw as encode_cbor does, and for a CoAP Content-Format
// type, which the JSON form does not have.
[[nodiscard]] result<std::string> encode_json(const cmw_record& record);

// Either form, told apart by the first byte as msg-wrap's demultiplexer does: 0x82 or 0x83 is a
// CBOR record, '[' a JSON record; anything else (tags, collections, leading whitespace) fails.
// Strict: CBOR with definite, shortest-form lengths only, no tags, nothing after the record;
// JSON per RFC 8259 (Boost.JSON, UTF-8 checked) with exactly two or three elements of the
// right types, the value in base64url without padding, whitespace or non-zero spare bits; an
// indicator that is an integer in 1..15. Fails with errc::malformed_cmw. The record owns its
// copy of the bytes.
[[nodiscard]] result<cmw_record> decode_cmw(std::span<const std::uint8_t> cmw);

}  // namespace atls::tls
