#include "atls/net/endpoint.hpp"

#include <doctest/doctest.h>

namespace atls::net {
namespace {

TEST_CASE("host:port, [v6]:port and unix:/path parse and print back the same") {
  for (const char* text :
       {"127.0.0.1:8443", "backend.example:443", "[::1]:9000", "0.0.0.0:1", "unix:/run/app.sock"}) {
    const auto parsed = parse_endpoint(text);
    REQUIRE(parsed.has_value());
    CHECK(to_string(*parsed) == text);
  }
  const auto v6 = parse_endpoint("[::1]:9000");
  CHECK(std::get<tcp_endpoint>(*v6) == tcp_endpoint{"::1", 9000});
}

TEST_CASE("malformed addresses are rejected with the reason") {
  CHECK(parse_endpoint("").error() == errc::empty);
  CHECK(parse_endpoint("localhost").error() == errc::missing_port);
  CHECK(parse_endpoint("localhost:").error() == errc::bad_port);
  CHECK(parse_endpoint("localhost:65536").error() == errc::bad_port);
  CHECK(parse_endpoint("localhost:80x").error() == errc::bad_port);
  CHECK(parse_endpoint("localhost:0").error() == errc::bad_port);
  CHECK(parse_endpoint(":80").error() == errc::bad_host);
  CHECK(parse_endpoint("bad host:80").error() == errc::bad_host);
  CHECK(parse_endpoint("[::1:80").error() == errc::bad_host);
  CHECK(parse_endpoint("[::1]").error() == errc::missing_port);
  CHECK(parse_endpoint("[not-v6]:80").error() == errc::bad_host);
  CHECK(parse_endpoint("unix:relative.sock").error() == errc::unix_path_not_absolute);
  CHECK(parse_endpoint("unix:/" + std::string(200, 'a')).error() == errc::unix_path_too_long);
}

TEST_CASE("port 0 is accepted only where the caller allows it") {
  CHECK(parse_endpoint("127.0.0.1:0", true).has_value());
  CHECK_FALSE(parse_endpoint("127.0.0.1:0", false).has_value());
}

TEST_CASE("only addresses that stay on this host count as loopback") {
  CHECK(is_loopback(*parse_endpoint("127.0.0.1:1")));
  CHECK(is_loopback(*parse_endpoint("127.1.2.3:1")));
  CHECK(is_loopback(*parse_endpoint("[::1]:1")));
  CHECK(is_loopback(*parse_endpoint("localhost:1")));
  CHECK(is_loopback(*parse_endpoint("unix:/run/x.sock")));
  CHECK_FALSE(is_loopback(*parse_endpoint("0.0.0.0:1")));
  CHECK_FALSE(is_loopback(*parse_endpoint("[::]:1")));
  CHECK_FALSE(is_loopback(*parse_endpoint("10.0.0.1:1")));
  CHECK_FALSE(is_loopback(*parse_endpoint("example.com:1")));
}

TEST_CASE("a listen address may name a socket that systemd passed, and prints back the same") {
  for (const char* text : {"systemd:web", "systemd:atlsd.socket", "systemd:atlsd@a-1.socket",
                           "systemd:with space", "systemd:x"}) {
    const auto parsed = parse_listen_endpoint(text);
    REQUIRE(parsed.has_value());
    CHECK(to_string(*parsed) == text);
  }
  CHECK(std::get<systemd_socket>(*parse_listen_endpoint("systemd:web")) == systemd_socket{"web"});
  const auto longest = "systemd:" + std::string(255, 'n');
  CHECK(parse_listen_endpoint(longest).has_value());
  // Every other form parses as it does for parse_endpoint.
  CHECK(parse_listen_endpoint("127.0.0.1:8443").value() ==
        parse_endpoint("127.0.0.1:8443").value());
  CHECK(parse_listen_endpoint("unix:/run/a.sock").value() ==
        parse_endpoint("unix:/run/a.sock").value());
  CHECK(parse_listen_endpoint("127.0.0.1:0", true).has_value());
  CHECK(parse_listen_endpoint("localhost:0").error() == errc::bad_port);
}

TEST_CASE("a systemd socket name that systemd itself would refuse is rejected") {
  for (const std::string& name :
       {std::string(), std::string(256, 'n'), std::string("a:b"), std::string("tab\there"),
        std::string("new\nline"), std::string("del\x7f"), std::string("caf\xc3\xa9")}) {
    CAPTURE(name);
    CHECK(parse_listen_endpoint("systemd:" + name).error() == errc::bad_systemd_name);
    CHECK_FALSE(valid_systemd_socket_name(name));
  }
}

TEST_CASE("a systemd socket is refused where an address is connected to") {
  CHECK(parse_endpoint("systemd:web").error() == errc::systemd_socket_not_for_connecting);
  CHECK(parse_endpoint("systemd:").error() == errc::systemd_socket_not_for_connecting);
}

TEST_CASE("a systemd socket does not count as loopback: its address is unknown until bind") {
  CHECK_FALSE(is_loopback(*parse_listen_endpoint("systemd:local")));
}

}  // namespace
}  // namespace atls::net
