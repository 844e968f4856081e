// The JSON reader for JOSE headers, JWKs and EAR claims: untrusted text, read strictly.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include <boost/json/value.hpp>

namespace atls::verify::detail {

// Parses one JSON document of at most `max_size` bytes: RFC 8259 only (no comments, trailing
// commas or invalid UTF-8), nested at most 32 deep, nothing after it but whitespace, and no
// object with a repeated member name. RFC 7515 §5.2 and RFC 7519 §4 allow either refusing
// duplicates or keeping the last; refusing them means no two parsers can read different claims
// out of the same signed text. nullopt on any failure. Implemented in jose.cpp.
[[nodiscard]] std::optional<boost::json::value> parse_json_strict(std::string_view text,
                                                                  std::size_t max_size);

}  // namespace atls::verify::detail
