// Log fields are key=value pairs on one line; a value that may hold spaces, quotes or line
// breaks is written quoted, so that a peer-chosen string cannot forge another field or line.
#pragma once

#include <string>
#include <string_view>

namespace atls {

// "text" with '"' and '\' escaped and CR/LF replaced by spaces.
[[nodiscard]] inline std::string quote_for_log(std::string_view text) {
  std::string out = "\"";
  out.reserve(text.size() + 2);
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += (c == '\n' || c == '\r') ? ' ' : c;
  }
  return out + "\"";
}

}  // namespace atls
