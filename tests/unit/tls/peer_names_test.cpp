#include "atls/tls/peer_names.hpp"

#include <doctest/doctest.h>

namespace atls::tls {
namespace {

const peer_names client{.dns = {"client.test"},
                        .uris = {"spiffe://test.example/ns/default/sa/client"}};

TEST_CASE("without allow-lists any certificate that chains is accepted") {
  CHECK(names_allowed({}, client));
  CHECK(names_allowed({}, {}));
}

TEST_CASE("a DNS name matches exactly, ignoring ASCII case") {
  CHECK(names_allowed({.allow_dns = {"client.test"}}, client));
  CHECK(names_allowed({.allow_dns = {"CLIENT.Test"}}, client));
  CHECK_FALSE(names_allowed({.allow_dns = {"other.test"}}, client));
  CHECK_FALSE(names_allowed({.allow_dns = {"client.test."}}, client));
  CHECK_FALSE(names_allowed({.allow_dns = {"test"}}, client));
}

TEST_CASE("a URI matches exactly or below a /* prefix") {
  CHECK(names_allowed({.allow_uris = {"spiffe://test.example/ns/default/sa/client"}}, client));
  CHECK(names_allowed({.allow_uris = {"spiffe://test.example/ns/default/*"}}, client));
  CHECK(names_allowed({.allow_uris = {"spiffe://test.example/*"}}, client));
  CHECK_FALSE(names_allowed({.allow_uris = {"spiffe://test.example/ns/other/*"}}, client));
  // A prefix never matches across a segment boundary or the bare prefix itself.
  CHECK_FALSE(names_allowed({.allow_uris = {"spiffe://test.example/ns/def/*"}}, client));
  CHECK_FALSE(names_allowed({.allow_uris = {"spiffe://test.example/ns/default/*"}},
                            {.uris = {"spiffe://test.example/ns/default/"}}));
  // URIs compare case-sensitively: SPIFFE IDs are case-sensitive in their path.
  CHECK_FALSE(
      names_allowed({.allow_uris = {"spiffe://test.example/ns/default/sa/CLIENT"}}, client));
}

TEST_CASE("a certificate without SANs fails any allow-list") {
  CHECK_FALSE(names_allowed({.allow_dns = {"client.test"}}, {}));
  CHECK_FALSE(names_allowed({.allow_uris = {"spiffe://test.example/*"}}, {}));
}

TEST_CASE("a DNS allow-list does not accept a URI with the same text, nor the reverse") {
  CHECK_FALSE(names_allowed({.allow_dns = {"spiffe://test.example/ns/default/sa/client"}}, client));
  CHECK_FALSE(names_allowed({.allow_uris = {"client.test"}}, client));
}

}  // namespace
}  // namespace atls::tls
