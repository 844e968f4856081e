// A client of atlsd's admin listener for end-to-end tests: the config block, GET with curl,
// and /metrics read through the strict exposition-format checker.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include <doctest/doctest.h>

#include "e2e/configs.hpp"
#include "support/process.hpp"
#include "support/prometheus_text.hpp"

namespace atls::test {

// GET http://127.0.0.1:port/path: the HTTP status, then the body.
inline std::pair<int, std::string> admin_get(std::uint16_t port, const std::string& path) {
  const auto r = run({"curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}",
                      "http://127.0.0.1:" + std::to_string(port) + path},
                     std::chrono::seconds(10));
  const auto split = r.out.rfind('\n');
  if (r.exit_code != 0 || split == std::string::npos) {
    return {0, r.err};
  }
  return {std::stoi(r.out.substr(split + 1)), r.out.substr(0, split)};
}

inline std::string admin_block(std::uint16_t port, const std::string& more = "") {
  return "admin:\n  listen: " + local(port) + "\n" + more;
}

inline prometheus_text scrape(std::uint16_t port) {
  const auto [status, body] = admin_get(port, "/metrics");
  REQUIRE(status == 200);
  auto checked = check_prometheus_text(body);
  INFO(body);
  REQUIRE_MESSAGE(checked, checked.error);
  return std::move(checked.text);
}

}  // namespace atls::test
