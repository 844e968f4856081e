// The `proxy_protocol` listener key as an operator meets it: v2 on inbound listeners, and a
// message that says what to write instead for every other use.
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include "atls/config/config.hpp"

#include "unit/config/config_checks.hpp"

namespace atls::config {
namespace {

// Line 1 is "listeners:"; `more` starts on line 7, at listener level.
std::string listener(std::string_view mode, std::string_view more) {
  const std::string tls = mode == "inbound" ? "{cert: server.crt, key: server.key}"
                                            : "{ca: ca.crt, server_name: server.test}";
  return "listeners:\n  - name: l\n    mode: " + std::string(mode) +
         "\n    listen: 127.0.0.1:8443\n    upstream: 127.0.0.1:8080\n    tls: " + tls + "\n" +
         std::string(more);
}

using checks::all_errors;
using checks::contains;
using checks::only_error;

load_result load(const std::string& yaml) {
  return checks::load_as_file(yaml);
}

proxy_protocol_version loaded_version(const load_result& r) {
  INFO(all_errors(r));
  REQUIRE(r.config.has_value());
  REQUIRE(r.config->listeners.size() == 1);
  return r.config->listeners.front().proxy_protocol;
}

TEST_CASE("an inbound listener sends a PROXY v2 header only when proxy_protocol says v2") {
  CHECK(loaded_version(load(listener("inbound", ""))) == proxy_protocol_version::none);
  CHECK(loaded_version(load(listener("inbound", "    proxy_protocol: none\n"))) ==
        proxy_protocol_version::none);
  CHECK(loaded_version(load(listener("inbound", "    proxy_protocol: v2\n"))) ==
        proxy_protocol_version::v2);
}

TEST_CASE("proxy_protocol on an outbound listener is refused, pointing at the key") {
  const auto d = only_error(load(listener("outbound", "    proxy_protocol: v2\n")));
  CHECK(d.key == "listeners[0].proxy_protocol");
  CHECK(d.where.line == 7);
  CHECK(contains(d.message, "applies only to inbound listeners"));
  // Saying none is saying nothing, on either kind of listener.
  CHECK(loaded_version(load(listener("outbound", "    proxy_protocol: none\n"))) ==
        proxy_protocol_version::none);
}

TEST_CASE("an unknown proxy_protocol value is an error that lists the accepted ones") {
  for (const auto* value : {"true", "yes", "2", "v3", "V2", "\"\""}) {
    CAPTURE(value);
    const auto d =
        only_error(load(listener("inbound", "    proxy_protocol: " + std::string(value) + "\n")));
    CHECK(d.key == "listeners[0].proxy_protocol");
    CHECK(d.where.line == 7);
    CHECK(contains(d.message, "is not one of: none, v2"));
  }
  const auto mapping = only_error(load(listener("inbound", "    proxy_protocol: {version: 2}\n")));
  CHECK(mapping.key == "listeners[0].proxy_protocol");
}

TEST_CASE("PROXY protocol v1 is refused with the reason and the v2 spelling") {
  const auto d = only_error(load(listener("inbound", "    proxy_protocol: v1\n")));
  CHECK(d.key == "listeners[0].proxy_protocol");
  CHECK(contains(d.message, "v1 is not supported"));
  CHECK(contains(d.message, "TLVs"));
  CHECK(contains(d.message, "use v2"));
}

TEST_CASE("a misspelt proxy_protocol key is an unknown key") {
  const auto d = only_error(load(listener("inbound", "    proxy_protocl: v2\n")));
  CHECK(d.key == "listeners[0].proxy_protocl");
  CHECK(contains(d.message, "proxy_protocol"));
}

}  // namespace
}  // namespace atls::config
