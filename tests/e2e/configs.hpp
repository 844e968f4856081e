// YAML snippets for end-to-end tests, so that each test states only what it varies.
#pragma once

#include <cstdint>
#include <string>

#include "support/daemon.hpp"
#include "support/process.hpp"

namespace atls::test {

inline std::string header(const std::string& extra = "") {
  return "log:\n  level: debug\ndrain_timeout: 5s\nthreads: 2\n" + extra + "listeners:\n";
}

inline std::string local(std::uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

// An inbound listener with the server identity of the test PKI. `more` is appended verbatim
// at listener level (indent 4); `client_auth` at tls level (indent 6).
inline std::string inbound(const std::string& name, std::uint16_t port, const std::string& upstream,
                           const pki& p, const std::string& more = "",
                           const std::string& client_auth = "") {
  return "  - name: " + name + "\n    mode: inbound\n    listen: " + local(port) +
         "\n    upstream: " + upstream + "\n    tls:\n      cert: " + (p / "server.crt").string() +
         "\n      key: " + (p / "server.key").string() + "\n" + client_auth + more;
}

inline std::string outbound(const std::string& name, std::uint16_t port,
                            const std::string& upstream, const pki& p,
                            const std::string& server_name = "server.test",
                            const std::string& more = "", const std::string& tls_more = "") {
  return "  - name: " + name + "\n    mode: outbound\n    listen: " + local(port) +
         "\n    upstream: " + upstream + "\n    tls:\n      ca: " + (p / "ca.crt").string() +
         "\n      server_name: " + server_name + "\n" + tls_more + more;
}

// curl GET http://127.0.0.1:port/ with a 10 s limit: the local workload's view of a sidecar.
inline run_result curl_http(std::uint16_t port) {
  using namespace std::chrono_literals;
  return run({"curl", "-sS", "--max-time", "10", "http://127.0.0.1:" + std::to_string(port) + "/"},
             15s);
}

}  // namespace atls::test
