// Log fields are key=value pairs on one line; a value that may hold spaces, quotes or line
// breaks is written quoted, so that a peer-chosen string cannot forge another field or line.
#pragma once

#include <string>
#include <string_view>

namespace atls {

// "text" with '"' and '\' escaped, CR/LF replaced by spaces and other control characters
// written as \xNN, so that a terminal showing the log cannot be steered by escape sequences.
[[nodiscard]] inline std::string quote_for_log(std::string_view text) {
  constexpr std::string_view hex = "0123456789abcdef";
  std::string out = "\"";
  out.reserve(text.size() + 2);
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else if (byte < 0x20 || byte == 0x7f) {
      out += "\\x";
      out += hex[byte >> 4U];
      out += hex[byte & 0xfU];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace atls
