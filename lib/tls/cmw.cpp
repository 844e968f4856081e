#include "atls/tls/cmw.hpp"

#include <boost/json.hpp>

#include "detail/cbor.hpp"

namespace atls::tls {

namespace {

namespace json = boost::json;
namespace cbor = detail::cbor;

// The longest JSON record worth parsing: the value's base64url (4/3 of max_cmw_value_size) and
// a media type whose every byte is written as a \uXXXX escape, with room to spare.
constexpr std::size_t max_json_size = std::size_t{128} * 1024;

// msg-wrap's demultiplexer (its "Decapsulation Algorithm"): the initial byte alone says which
// form follows.
constexpr std::uint8_t cbor_array_of_two = 0x82;
constexpr std::uint8_t cbor_array_of_three = 0x83;
constexpr std::uint8_t json_array_open = '[';

// RFC 6838 §4.2: type and subtype names are 1 to 127 restricted-name characters.
constexpr std::size_t max_restricted_name = 127;

error_code malformed() {
  return make_error_code(errc::malformed_cmw);
}

bool is_alnum(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// restricted-name-chars of RFC 6838 §4.2.
bool is_restricted_name_char(char c) noexcept {
  constexpr std::string_view extra = "!#$&-^_.+";
  return is_alnum(c) || extra.find(c) != std::string_view::npos;
}

// Consumes a restricted-name from the front of text; false when there is none.
bool take_restricted_name(std::string_view& text) noexcept {
  if (text.empty() || !is_alnum(text.front())) {
    return false;
  }
  std::size_t size = 1;
  while (size < text.size() && is_restricted_name_char(text[size])) {
    ++size;
  }
  if (size > max_restricted_name) {
    return false;
  }
  text.remove_prefix(size);
  return true;
}

bool valid_indicator(std::uint64_t indicator) noexcept {
  // msg-wrap: "any value between 1 and 15, included". Bits a later registry adds are refused
  // rather than ignored, because the indicator is what tells Evidence from Attestation Results.
  return indicator >= 1 && indicator <= cmw_indicator::all;
}

// The rules every record obeys, whichever form it is written in.
bool valid_record(const cmw_record& record) noexcept {
  if (record.value.empty() || record.value.size() > max_cmw_value_size) {
    return false;
  }
  if (record.indicator && !valid_indicator(*record.indicator)) {
    return false;
  }
  const auto* media_type = std::get_if<std::string>(&record.type);
  return media_type == nullptr || is_cmw_media_type(*media_type);
}

// RFC 4648 §5, without padding (msg-wrap requires exactly that in the JSON form).
constexpr std::string_view base64url_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64url_encode(std::span<const std::uint8_t> data) {
  std::string out;
  out.reserve((data.size() * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t n =
        (std::uint32_t{data[i]} << 16U) | (std::uint32_t{data[i + 1]} << 8U) | data[i + 2];
    out.push_back(base64url_alphabet[(n >> 18U) & 63U]);
    out.push_back(base64url_alphabet[(n >> 12U) & 63U]);
    out.push_back(base64url_alphabet[(n >> 6U) & 63U]);
    out.push_back(base64url_alphabet[n & 63U]);
  }
  const std::size_t rest = data.size() - i;
  if (rest > 0) {
    std::uint32_t n = std::uint32_t{data[i]} << 16U;
    if (rest == 2) {
      n |= std::uint32_t{data[i + 1]} << 8U;
    }
    out.push_back(base64url_alphabet[(n >> 18U) & 63U]);
    out.push_back(base64url_alphabet[(n >> 12U) & 63U]);
    if (rest == 2) {
      out.push_back(base64url_alphabet[(n >> 6U) & 63U]);
    }
  }
  return out;
}

// Strict: the alphabet only (no padding, no whitespace, no '+' or '/'), no impossible length,
// and zero spare bits in the last character, so that each byte string has exactly one text.
result<std::vector<std::uint8_t>> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) {
    return malformed();
  }
  std::vector<std::uint8_t> out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t buffer = 0;
  unsigned int bits = 0;
  for (const char c : text) {
    const auto index = base64url_alphabet.find(c);
    if (index == std::string_view::npos) {
      return malformed();
    }
    buffer = (buffer << 6U) | static_cast<std::uint32_t>(index);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>(buffer >> bits));
      buffer &= (1U << bits) - 1U;
    }
  }
  if (buffer != 0) {
    return malformed();
  }
  return out;
}

result<cmw_record> decode_cbor_record(std::span<const std::uint8_t> input) {
  cbor::reader in(input);
  std::uint64_t count = 0;
  if (!in.array_head(count) || (count != 2 && count != 3)) {
    return malformed();
  }
  cmw_record record;
  cbor::major_type type = cbor::major_type::unsigned_integer;
  if (!in.peek(type)) {
    return malformed();
  }
  if (type == cbor::major_type::unsigned_integer) {
    // coap-content-format-type = uint .size 2
    std::uint64_t content_format = 0;
    if (!in.unsigned_integer(content_format) || content_format > 0xffff) {
      return malformed();
    }
    record.type = static_cast<std::uint16_t>(content_format);
  } else {
    std::string_view media_type;
    if (!in.text_string(max_cmw_media_type_size, media_type) || !is_cmw_media_type(media_type)) {
      return malformed();
    }
    record.type = std::string(media_type);
  }
  std::span<const std::uint8_t> value;
  if (!in.byte_string(max_cmw_value_size, value) || value.empty()) {
    return malformed();
  }
  record.value.assign(value.begin(), value.end());
  if (count == 3) {
    std::uint64_t indicator = 0;
    if (!in.unsigned_integer(indicator) || !valid_indicator(indicator)) {
      return malformed();
    }
    record.indicator = static_cast<std::uint8_t>(indicator);
  }
  if (!in.at_end()) {
    return malformed();
  }
  return record;
}

result<cmw_record> decode_json_record(std::span<const std::uint8_t> input) {
  if (input.size() > max_json_size) {
    return malformed();
  }
  json::parse_options options;
  // The record is one flat array; anything nested is wrong, so stop before building it.
  options.max_depth = 1;
  boost::system::error_code ec;
  const json::value parsed =
      json::parse(json::string_view(reinterpret_cast<const char*>(input.data()), input.size()), ec,
                  {}, options);
  if (ec) {
    return malformed();
  }
  const json::array* items = parsed.if_array();
  if (items == nullptr || (items->size() != 2 && items->size() != 3)) {
    return malformed();
  }
  const json::string* media_type = (*items)[0].if_string();
  const json::string* value = (*items)[1].if_string();
  if (media_type == nullptr || value == nullptr ||
      !is_cmw_media_type(std::string_view(media_type->data(), media_type->size())) ||
      value->size() > (max_cmw_value_size * 4 + 2) / 3) {
    return malformed();
  }
  auto decoded = base64url_decode(std::string_view(value->data(), value->size()));
  if (!decoded || decoded->empty()) {
    return malformed();
  }
  cmw_record record{std::string(media_type->data(), media_type->size()), std::move(*decoded),
                    std::nullopt};
  if (items->size() == 3) {
    // An integer in JSON's own terms: 2.0 or 2e0 parse as doubles and are refused.
    const json::value& indicator = (*items)[2];
    const auto* as_int = indicator.if_int64();
    const auto* as_uint = indicator.if_uint64();
    std::uint64_t bits = 0;
    if (as_int != nullptr && *as_int >= 0) {
      bits = static_cast<std::uint64_t>(*as_int);
    } else if (as_uint != nullptr) {
      bits = *as_uint;
    }
    if (!valid_indicator(bits)) {
      return malformed();
    }
    record.indicator = static_cast<std::uint8_t>(bits);
  }
  return record;
}

}  // namespace

bool is_cmw_media_type(std::string_view media_type) noexcept {
  if (media_type.empty() || media_type.size() > max_cmw_media_type_size) {
    return false;
  }
  for (const char c : media_type) {
    if (c < 0x20 || c > 0x7e) {
      return false;
    }
  }
  std::string_view rest = media_type;
  if (!take_restricted_name(rest) || rest.empty() || rest.front() != '/') {
    return false;
  }
  rest.remove_prefix(1);
  if (!take_restricted_name(rest)) {
    return false;
  }
  while (!rest.empty() && rest.front() == ' ') {
    rest.remove_prefix(1);
  }
  return rest.empty() ? media_type.back() != ' ' : rest.front() == ';';
}

result<std::vector<std::uint8_t>> encode_cbor(const cmw_record& record) {
  if (!valid_record(record)) {
    return malformed();
  }
  cbor::writer out;
  out.array_head(record.indicator ? 3 : 2);
  if (const auto* content_format = std::get_if<std::uint16_t>(&record.type)) {
    out.unsigned_integer(*content_format);
  } else {
    out.text_string(std::get<std::string>(record.type));
  }
  out.byte_string(record.value);
  if (record.indicator) {
    out.unsigned_integer(*record.indicator);
  }
  return out.take();
}

result<std::string> encode_json(const cmw_record& record) {
  const auto* media_type = std::get_if<std::string>(&record.type);
  if (media_type == nullptr || !valid_record(record)) {
    return malformed();
  }
  json::array items{json::string(*media_type), json::string(base64url_encode(record.value))};
  if (record.indicator) {
    items.emplace_back(static_cast<std::uint64_t>(*record.indicator));
  }
  return json::serialize(items);
}

result<cmw_record> decode_cmw(std::span<const std::uint8_t> cmw) {
  if (cmw.empty()) {
    return malformed();
  }
  switch (cmw.front()) {
    case cbor_array_of_two:
    case cbor_array_of_three:
      return decode_cbor_record(cmw);
    case json_array_open:
      return decode_json_record(cmw);
    default:
      return malformed();
  }
}

}  // namespace atls::tls
