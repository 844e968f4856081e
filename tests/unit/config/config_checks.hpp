// What the config unit tests share: loading a config text and reading its diagnostics.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include "atls/config/config.hpp"

namespace atls::config::checks {

// `text` as the file /etc/atlsd/test.yaml, so that relative paths resolve under /etc/atlsd.
inline load_result load_as_file(std::string_view text) {
  return load_text(std::string(text), "test.yaml", "/etc/atlsd");
}

// Every diagnostic, one per line, for a failing check's message.
inline std::string all_errors(const load_result& r) {
  std::string out;
  for (const auto& d : r.errors) {
    out += to_string(d) + "\n";
  }
  return out;
}

// The one error the text must produce. Returned by value: the result may be a temporary.
inline diagnostic only_error(const load_result& r) {
  INFO(all_errors(r));
  REQUIRE(r.errors.size() == 1);
  CHECK_FALSE(r.config.has_value());
  return r.errors.front();
}

// The error reported for key, which must be there exactly once.
inline diagnostic error_for(const load_result& r, std::string_view key) {
  INFO(all_errors(r));
  std::optional<diagnostic> found;
  int count = 0;
  for (const auto& d : r.errors) {
    if (d.key == key) {
      found = d;
      ++count;
    }
  }
  REQUIRE(count == 1);
  return *found;
}

inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

}  // namespace atls::config::checks
