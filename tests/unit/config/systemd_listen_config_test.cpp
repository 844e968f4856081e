// `listen: systemd:NAME` as an operator meets it: a listen address that names a socket systemd
// passed, refused as an upstream and with a bad name, pointing at the key.
#include <string>
#include <string_view>
#include <variant>

#include <doctest/doctest.h>

#include "atls/config/config.hpp"

#include "unit/config/config_checks.hpp"

namespace atls::config {
namespace {

// Line 1 is "listeners:"; listen is on line 4 and upstream on line 5.
std::string listener(std::string_view mode, std::string_view listen, std::string_view upstream,
                     std::string_view more = "") {
  const std::string tls = mode == "inbound" ? "{cert: server.crt, key: server.key}"
                                            : "{ca: ca.crt, server_name: server.test}";
  return "listeners:\n  - name: l\n    mode: " + std::string(mode) +
         "\n    listen: " + std::string(listen) + "\n    upstream: " + std::string(upstream) +
         "\n    tls: " + tls + "\n" + std::string(more);
}

using checks::all_errors;
using checks::contains;
using checks::only_error;

load_result load(const std::string& yaml) {
  return checks::load_as_file(yaml);
}

TEST_CASE("an inbound listener may listen on a socket that systemd passed, by its name") {
  const auto r = load(listener("inbound", "systemd:atlsd-web.socket", "127.0.0.1:8080"));
  INFO(all_errors(r));
  REQUIRE(r.config.has_value());
  const auto& listen = r.config->listeners.at(0).listen;
  REQUIRE(std::holds_alternative<net::systemd_socket>(listen));
  CHECK(std::get<net::systemd_socket>(listen).name == "atlsd-web.socket");
}

TEST_CASE("an upstream cannot be a systemd socket, and the error says why") {
  const auto d = only_error(load(listener("inbound", "127.0.0.1:8443", "systemd:web")));
  CHECK(d.key == "listeners[0].upstream");
  CHECK(d.where.line == 5);
  CHECK(contains(d.message, "invalid address 'systemd:web'"));
  CHECK(contains(d.message, "cannot be connected to"));
}

TEST_CASE("a systemd socket name that systemd would refuse is an error at listen") {
  for (const auto* name : {"\"systemd:a:b\"", "\"systemd:\"", "\"systemd:tab\\there\""}) {
    CAPTURE(name);
    const auto d = only_error(load(listener("inbound", name, "127.0.0.1:8080")));
    CHECK(d.key == "listeners[0].listen");
    CHECK(d.where.line == 4);
    CHECK(contains(d.message, "FileDescriptorName="));
  }
}

TEST_CASE("two listeners cannot share one systemd socket") {
  const auto yaml = listener("inbound", "systemd:web", "127.0.0.1:8080") +
                    "  - name: m\n    mode: inbound\n    listen: systemd:web\n"
                    "    upstream: 127.0.0.1:8081\n"
                    "    tls: {cert: server.crt, key: server.key}\n";
  const auto d = only_error(load(yaml));
  CHECK(d.key == "listeners[1].listen");
  CHECK(contains(d.message, "systemd:web"));
}

// The socket unit decides the address, which the config cannot see: an outbound listener (a
// plaintext relay with this host's TLS identity) takes one only on the operator's word.
TEST_CASE("an outbound listener on a systemd socket needs allow_non_loopback") {
  const auto d = only_error(load(listener("outbound", "systemd:relay", "127.0.0.1:8443")));
  CHECK(d.key == "listeners[0].listen");
  CHECK(contains(d.message, "allow_non_loopback"));
  const auto allowed = load(
      listener("outbound", "systemd:relay", "127.0.0.1:8443", "    allow_non_loopback: true\n"));
  INFO(all_errors(allowed));
  CHECK(allowed.config.has_value());
}

}  // namespace
}  // namespace atls::config
