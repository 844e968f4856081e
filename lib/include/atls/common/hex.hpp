// Hex digits: lower-case hex of bytes for logs and JSON dumps, and the value of one digit for the
// parsers (each checks its own lengths and separators).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace atls {

[[nodiscard]] inline std::string to_hex(std::span<const std::uint8_t> data) {
  static constexpr std::string_view digits = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (const std::uint8_t b : data) {
    out.push_back(digits[b >> 4U]);
    out.push_back(digits[b & 0x0fU]);
  }
  return out;
}

// The value of one hex digit (either case), or -1 for any other character.
[[nodiscard]] constexpr int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

}  // namespace atls
