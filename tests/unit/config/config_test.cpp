// The config loader as an operator meets it: each mistake gets its own message, pointing at the
// line and key to fix, and every mistake in a file is reported in one run.
#include "atls/config/config.hpp"

#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <doctest/doctest.h>

#include "atls/net/endpoint.hpp"

#include "support/temp_dir.hpp"
#include "unit/config/config_checks.hpp"
#include <sys/stat.h>

// Inside the namespace under test, so its names need no qualification.
namespace atls::config {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Drops the newline that follows R"( so that line 1 of the YAML is the first line written out.
std::string yaml(std::string_view text) {
  if (!text.empty() && text.front() == '\n') {
    text.remove_prefix(1);
  }
  return std::string(text);
}

load_result load(std::string_view text) {
  return checks::load_as_file(yaml(text));
}

using checks::all_errors;
using checks::contains;
using checks::error_for;
using checks::only_error;

// A root-level tpm section to append to a config whose listeners use tpm:tik, which needs one.
// Appended rather than prepended, so that the line numbers tests check stay where they are.
constexpr std::string_view with_tpm = "tpm: {tcti: \"swtpm:host=127.0.0.1,port=2321\"}\n";

const daemon_config& valid(const load_result& r) {
  INFO(all_errors(r));
  REQUIRE(r.errors.empty());
  REQUIRE(r.config.has_value());
  return *r.config;
}

const net::tcp_endpoint& tcp(const net::endpoint_spec& spec) {
  REQUIRE(std::holds_alternative<net::tcp_endpoint>(spec));
  return std::get<net::tcp_endpoint>(spec);
}

}  // namespace

TEST_CASE("the shipped example config is valid") {
  const fs::path path = ATLS_SOURCE_DIR "/config/atlsd.example.yaml";
  const auto r = load_file(path);
  const auto& c = valid(r);

  CHECK(c.log_level == log_level::info);
  CHECK(c.drain_timeout == 30s);
  CHECK(c.threads == 2);
  REQUIRE(c.listeners.size() == 3);

  const auto& in = c.listeners[0];
  CHECK(in.name == "web-in");
  CHECK(in.mode == listener_mode::inbound);
  CHECK(in.where.file == path.string());
  CHECK(in.where.line > 0);
  CHECK(tcp(in.listen) == net::tcp_endpoint{"0.0.0.0", 8443});
  CHECK(tcp(in.upstream) == net::tcp_endpoint{"127.0.0.1", 8080});
  CHECK_FALSE(in.allow_non_loopback);
  REQUIRE(std::holds_alternative<inbound_tls>(in.tls));
  const auto& in_tls = std::get<inbound_tls>(in.tls);
  CHECK(in_tls.cert.path == "/etc/atlsd/server.crt");
  CHECK(in_tls.cert.key == "listeners[0].tls.cert");
  CHECK(in_tls.cert.where.line > in.where.line);
  CHECK(std::get<config::file_ref>(in_tls.key).path == "/etc/atlsd/server.key");
  REQUIRE(in_tls.client_auth.has_value());
  CHECK(in_tls.client_auth->ca.path == "/etc/atlsd/clients-ca.crt");
  CHECK(in_tls.client_auth->ca.key == "listeners[0].tls.client_auth.ca");
  CHECK(in_tls.client_auth->allow_dns == std::vector<std::string>{"client.example.org"});
  CHECK(in_tls.client_auth->allow_uris ==
        std::vector<std::string>{"spiffe://example.org/ns/prod/sa/frontend",
                                 "spiffe://example.org/ns/batch/*"});
  CHECK(in.timeouts.connect == 10s);
  CHECK(in.timeouts.handshake == 10s);
  CHECK(in.timeouts.idle == 5min);
  CHECK(in.max_connections == 1024);
  CHECK(in.buffer_size == 16 * 1024);

  const auto& out = c.listeners[1];
  CHECK(out.name == "db-out");
  CHECK(out.mode == listener_mode::outbound);
  CHECK(tcp(out.listen) == net::tcp_endpoint{"127.0.0.1", 15432});
  CHECK(tcp(out.upstream) == net::tcp_endpoint{"db.example.org", 5432});
  REQUIRE(std::holds_alternative<outbound_tls>(out.tls));
  const auto& out_tls = std::get<outbound_tls>(out.tls);
  CHECK(out_tls.server.ca.path == "/etc/atlsd/db-ca.crt");
  CHECK(out_tls.server_name == "db.example.org");
  CHECK(out_tls.server.allow_dns.empty());
  CHECK(out_tls.server.allow_uris ==
        std::vector<std::string>{"spiffe://example.org/ns/prod/sa/postgres"});
  REQUIRE(out_tls.cert.has_value());
  REQUIRE(out_tls.key.has_value());
  CHECK(out_tls.cert->path == "/etc/atlsd/client.crt");
  CHECK(std::get<config::file_ref>(*out_tls.key).path == "/etc/atlsd/client.key");
  CHECK(out.timeouts.connect == 10s);
  CHECK(out.timeouts.idle == 30min);
  CHECK_FALSE(in.attestation.has_value());
  CHECK_FALSE(out.attestation.has_value());

  const auto& attested = c.listeners[2];
  CHECK(attested.name == "api-attested");
  CHECK(std::holds_alternative<tpm_key_ref>(std::get<inbound_tls>(attested.tls).key));
  REQUIRE(attested.attestation.has_value());
  const auto& a = *attested.attestation;
  CHECK(a.mode == attestation_mode::post_handshake);
  CHECK(a.model == attestation_model::background_check);
  REQUIRE(a.self.has_value());
  CHECK(a.self->pcrs.pcrs == std::vector<std::uint8_t>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK_FALSE(a.peer.has_value());
}

TEST_CASE("a minimal config gets the documented defaults") {
  const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    listen: "[::]:8443"
    upstream: unix:/run/app.sock
    tls:
      cert: server.crt
      key: /abs/server.key
)");
  const auto& c = valid(r);
  CHECK(c.log_level == log_level::info);
  CHECK(c.drain_timeout == 30s);
  CHECK(c.threads == usable_cores());
  CHECK(c.tpm.queue_limit == 64);
  REQUIRE(c.listeners.size() == 1);
  const auto& l = c.listeners[0];
  CHECK(l.where.line == 2);
  CHECK(tcp(l.listen) == net::tcp_endpoint{"::", 8443});
  CHECK(std::get<net::unix_endpoint>(l.upstream).path == "/run/app.sock");
  CHECK(l.timeouts.connect == 10s);
  CHECK(l.timeouts.handshake == 10s);
  CHECK(l.timeouts.idle == 5min);
  CHECK(l.max_connections == 1024);
  CHECK(l.buffer_size == 16 * 1024);
  const auto& tls = std::get<inbound_tls>(l.tls);
  CHECK_FALSE(tls.client_auth.has_value());
  CHECK(tls.cert.path == "/etc/atlsd/server.crt");
  CHECK(tls.cert.where.line == 7);
  CHECK(tls.cert.where.column == 13);
  CHECK(std::get<config::file_ref>(tls.key).path == "/abs/server.key");
}

TEST_CASE("every optional key is read when set") {
  const auto r = load(R"(
log:
  level: debug
drain_timeout: 1500ms
threads: 64
listeners:
  - name: out_1.a-b
    mode: outbound
    listen: unix:/run/atlsd/out.sock
    upstream: 10.0.0.7:443
    allow_non_loopback: false
    tls:
      ca: ca.crt
      server_name: 10.0.0.7
      allow_dns: [a.example, B.example]
      allow_uris: []
    timeouts: {connect: 1s, handshake: 2m, idle: 0s}
    max_connections: 1000000
    buffer_size: 16MiB
)");
  const auto& c = valid(r);
  CHECK(c.log_level == log_level::debug);
  CHECK(c.drain_timeout == 1500ms);
  CHECK(c.threads == 64);
  const auto& l = c.listeners.at(0);
  CHECK(l.name == "out_1.a-b");
  const auto& tls = std::get<outbound_tls>(l.tls);
  CHECK(tls.server_name == "10.0.0.7");
  CHECK(tls.server.allow_dns == std::vector<std::string>{"a.example", "B.example"});
  CHECK(tls.server.allow_uris.empty());
  CHECK_FALSE(tls.cert.has_value());
  CHECK_FALSE(tls.key.has_value());
  CHECK(l.timeouts.connect == 1s);
  CHECK(l.timeouts.handshake == 2min);
  CHECK(l.timeouts.idle == 0ms);
  CHECK(l.max_connections == 1'000'000);
  CHECK(l.buffer_size == 16 * 1024 * 1024);
}

TEST_CASE("a listener key of tpm:tik names the TPM's TLS identity key, with the tpm section") {
  const auto r = load(R"(
tpm:
  tcti: swtpm:host=127.0.0.1,port=2321
  ak_handle: 0x81000200
  tik_handle: "0x81000201"
  queue_limit: 8
listeners:
  - name: in
    mode: inbound
    listen: 127.0.0.1:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: tik.crt
      key: tpm:tik
  - name: out
    mode: outbound
    listen: 127.0.0.1:15432
    upstream: db.example.org:5432
    tls:
      ca: ca.crt
      server_name: db.example.org
      cert: tik.crt
      key: tpm:tik
)");
  const auto& c = valid(r);
  CHECK(c.tpm.tcti == "swtpm:host=127.0.0.1,port=2321");
  CHECK(c.tpm.ak_handle == 0x81000200);
  CHECK(c.tpm.tik_handle == 0x81000201);
  CHECK(c.tpm.queue_limit == 8);
  const auto& in = std::get<inbound_tls>(c.listeners.at(0).tls);
  REQUIRE(std::holds_alternative<tpm_key_ref>(in.key));
  CHECK(std::get<tpm_key_ref>(in.key).key == "listeners[0].tls.key");
  CHECK(std::get<tpm_key_ref>(in.key).where.line == 13);
  const auto& out = std::get<outbound_tls>(c.listeners.at(1).tls);
  REQUIRE(out.key.has_value());
  CHECK(std::holds_alternative<tpm_key_ref>(*out.key));
}

TEST_CASE("a tpm section without keys is the kernel's resource manager at the default handles") {
  const auto r = load(R"(
tpm: {}
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: tik.crt, key: tpm:tik}}
)");
  const auto& c = valid(r);
  CHECK(c.tpm.tcti == "device:/dev/tpmrm0");
  CHECK(c.tpm.ak_handle == 0x81000100);
  CHECK(c.tpm.tik_handle == 0x81000101);
}

TEST_CASE(
    "a listener that keeps its key in the TPM, or attests, without a tpm section is refused") {
  for (const std::string_view tls :
       {"{cert: tik.crt, key: tpm:tik}",
        "{ca: ca.crt, server_name: s.test, cert: c.crt, key: tpm:tik}"}) {
    const bool inbound = tls.find("server_name") == std::string_view::npos;
    const auto r = load(std::string(R"(
listeners:
  - {name: plain, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: s.crt, key: s.key}}
  - name: attests
    mode: )") + (inbound ? "inbound" : "outbound") +
                        R"(
    listen: 127.0.0.1:8444
    upstream: 127.0.0.1:8081
    tls: )" + std::string(tls) +
                        R"(
    attestation: {self: {}}
)");
    const auto d = only_error(r);
    CHECK(d.key == "listeners[1].tls.key");
    CHECK(d.where.line == 8);
    CHECK(contains(d.message, "the TLS key is in the TPM, but no TPM is configured"));
    CHECK(contains(d.message, "add a 'tpm' section"));
  }
}

TEST_CASE("a TPM key other than tpm:tik is rejected, and ./tpm:x stays a file") {
  const auto r = load(R"(
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: tik.crt, key: "tpm:ak"}}
  - {name: in2, mode: inbound, listen: 127.0.0.1:8444, upstream: 127.0.0.1:8080,
     tls: {cert: tik.crt, key: ./tpm:ak}}
)");
  const auto d = error_for(r, "listeners[0].tls.key");
  CHECK(contains(d.message, "unknown TPM key 'tpm:ak'"));
  CHECK(contains(d.message, "'tpm:tik'"));
  CHECK(r.errors.size() == 1);
}

TEST_CASE("TPM handles outside the persistent range, or shared by AK and TIK, are rejected") {
  const auto r = load(R"(
tpm:
  ak_handle: 0x80000001
  tik_handle: 0x81000100
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: a.crt, key: a.key}}
)");
  const auto bad = error_for(r, "tpm.ak_handle");
  CHECK(contains(bad.message, "'0x80000001' is not an owner persistent handle"));
  CHECK(bad.where.line == 2);
  // The rejected AK handle falls back to its default, which the TIK now repeats.
  const auto same = error_for(r, "tpm.tik_handle");
  CHECK(contains(same.message, "different handles"));

  const auto junk = load(R"(
tpm: {tik_handle: 0x81zz, tcti: ""}
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: a.crt, key: a.key}}
)");
  CHECK(contains(error_for(junk, "tpm.tik_handle").message, "not an owner persistent handle"));
  CHECK(error_for(junk, "tpm.tcti").where.line == 1);
}

TEST_CASE("a TPM queue limit of zero, or beyond 4096, is rejected") {
  for (const auto* limit : {"0", "4097", "-1", "many"}) {
    CAPTURE(limit);
    const auto r = load(std::string("tpm: {queue_limit: ") + limit + R"(}
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: a.crt, key: a.key}}
)");
    CHECK(error_for(r, "tpm.queue_limit").where.line == 1);
  }
}

TEST_CASE("an unknown key is reported with its line and key path") {
  const auto d = only_error(load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: server.crt
      key: server.key
      colour: blue
)"));
  CHECK(d.where.file == "test.yaml");
  CHECK(d.where.line == 9);
  CHECK(d.where.column == 7);
  CHECK(d.key == "listeners[0].tls.colour");
  CHECK(d.message == "unknown key 'colour'");
}

TEST_CASE("a misspelt key gets a did-you-mean suggestion") {
  const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    lsiten: 0.0.0.0:8443
    upsteam: 127.0.0.1:8080
    tls:
      cert: server.crt
      key: server.key
)");
  const auto listen = error_for(r, "listeners[0].lsiten");
  CHECK(listen.where.line == 4);
  CHECK(listen.message == "unknown key 'lsiten'; did you mean 'listen'?");
  const auto upstream = error_for(r, "listeners[0].upsteam");
  CHECK(upstream.where.line == 5);
  CHECK(upstream.message == "unknown key 'upsteam'; did you mean 'upstream'?");
  // The keys it probably meant are still missing.
  CHECK(contains(all_errors(r), "missing required key 'listen'"));
  CHECK(contains(all_errors(r), "missing required key 'upstream'"));
}

TEST_CASE("an unknown key unlike any known key gets no suggestion") {
  const auto d = only_error(load(R"(
foo: 1
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
)"));
  CHECK(d.where.line == 1);
  CHECK(d.key == "foo");
  CHECK(d.message == "unknown key 'foo'");
}

TEST_CASE("a value of the wrong type says what was expected") {
  const auto r = load(R"(
log: info
threads: two
listeners:
  - name: [in]
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    allow_non_loopback: 1
    tls: server.crt
    timeouts:
)");
  CHECK(error_for(r, "log").message == "expected a mapping");
  CHECK(error_for(r, "log").where.line == 1);
  CHECK(error_for(r, "threads").message == "expected an integer");
  CHECK(error_for(r, "listeners[0].name").message == "expected a string");
  CHECK(error_for(r, "listeners[0].name").where.line == 4);
  CHECK(error_for(r, "listeners[0].allow_non_loopback").message == "expected true or false");
  CHECK(error_for(r, "listeners[0].tls").message == "expected a mapping");
  CHECK(error_for(r, "listeners[0].tls").where.line == 9);
  // An empty value points at its key, not at whatever follows it.
  CHECK(error_for(r, "listeners[0].timeouts").message == "expected a mapping");
  CHECK(error_for(r, "listeners[0].timeouts").where.line == 10);
  CHECK(r.errors.size() == 6);
}

TEST_CASE("listeners must be a list") {
  const auto d = only_error(load("listeners: {name: in}\n"));
  CHECK(d.key == "listeners");
  CHECK(d.message == "expected a list");
  CHECK(d.where.line == 1);
}

TEST_CASE("YAML 1.1 yes and no are not accepted as booleans") {
  const auto d = only_error(load(R"(
listeners:
  - name: out
    mode: outbound
    listen: 0.0.0.0:15432
    upstream: db.example:5432
    allow_non_loopback: yes
    tls: {ca: ca.crt, server_name: db.example}
)"));
  // The non-loopback error is not added on top: the opt-in key itself is what is wrong.
  CHECK(d.key == "listeners[0].allow_non_loopback");
  CHECK(d.message == "expected true or false");
  CHECK(d.where.line == 6);
}

TEST_CASE("a missing required key points at the mapping that lacks it") {
  const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    upstream: 127.0.0.1:8080
    tls:
      cert: server.crt
)");
  const auto listen = error_for(r, "listeners[0]");
  CHECK(listen.message == "missing required key 'listen'");
  CHECK(listen.where.line == 2);
  const auto key = error_for(r, "listeners[0].tls");
  CHECK(key.message == "missing required key 'key'");
  CHECK(key.where.line == 5);
  CHECK(r.errors.size() == 2);
}

TEST_CASE("a config without listeners is rejected") {
  SUBCASE("the key is missing") {
    const auto d = only_error(load("threads: 2\n"));
    CHECK(d.key.empty());
    CHECK(d.message == "missing required key 'listeners'");
    CHECK(d.where.line == 1);
  }
  SUBCASE("the list is empty") {
    const auto d = only_error(load("threads: 2\nlisteners: []\n"));
    CHECK(d.key == "listeners");
    CHECK(d.message == "at least one listener is required");
    CHECK(d.where.line == 2);
  }
  SUBCASE("the file is empty") {
    const auto d = only_error(load("# nothing here\n"));
    CHECK(d.message == "the config is empty: it needs at least 'listeners'");
    CHECK(d.where.line == 1);
  }
}

TEST_CASE("an invalid mode is reported once and tls is not checked against either mode") {
  const auto d = only_error(load(R"(
listeners:
  - name: in
    mode: inbond
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      ca: ca.crt
      cert: server.crt
)"));
  CHECK(d.key == "listeners[0].mode");
  CHECK(d.where.line == 3);
  CHECK(d.where.column == 11);
  CHECK(d.message == "'inbond' is not one of: inbound, outbound; did you mean 'inbound'?");
}

TEST_CASE("an invalid log level lists the allowed levels") {
  const auto d = only_error(load(R"(
log:
  level: verbose
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
)"));
  CHECK(d.key == "log.level");
  CHECK(d.where.line == 2);
  CHECK(d.message == "'verbose' is not one of: trace, debug, info, warn, error");
}

TEST_CASE("an invalid endpoint is reported with the reason and the text") {
  const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    listen: localhost
    upstream: unix:run/app.sock
    tls: {cert: a, key: b}
)");
  const auto listen = error_for(r, "listeners[0].listen");
  CHECK(listen.where.line == 4);
  CHECK(listen.where.column == 13);
  CHECK(listen.message ==
        "invalid address 'localhost': " + net::make_error_code(net::errc::missing_port).message());
  const auto upstream = error_for(r, "listeners[0].upstream");
  CHECK(upstream.message == "invalid address 'unix:run/app.sock': " +
                                net::make_error_code(net::errc::unix_path_not_absolute).message());
  CHECK(r.errors.size() == 2);
}

TEST_CASE("port 0 and ports above 65535 are rejected") {
  const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:0
    upstream: 127.0.0.1:65536
    tls: {cert: a, key: b}
)");
  const auto bad_port = net::make_error_code(net::errc::bad_port).message();
  CHECK(error_for(r, "listeners[0].listen").message == "invalid address '0.0.0.0:0': " + bad_port);
  CHECK(error_for(r, "listeners[0].listen").where.line == 4);
  CHECK(error_for(r, "listeners[0].upstream").message ==
        "invalid address '127.0.0.1:65536': " + bad_port);
  CHECK(r.errors.size() == 2);
}

TEST_CASE("a duration without a unit is rejected") {
  const auto d = only_error(load(R"(
drain_timeout: 30s
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
    timeouts:
      connect: 10
)"));
  CHECK(d.key == "listeners[0].timeouts.connect");
  CHECK(d.where.line == 9);
  CHECK(d.where.column == 16);
  CHECK(d.message == "duration needs a unit (ms, s, m, h), e.g. 10s");
}

TEST_CASE("a malformed duration says what is wrong with it") {
  const auto r = load(R"(
drain_timeout: 1.5s
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
    timeouts: {connect: 10sec, handshake: -1s, idle: [1s]}
)");
  CHECK(error_for(r, "drain_timeout").message ==
        "a duration must be a whole number of its unit, e.g. 1500ms instead of 1.5s");
  CHECK(error_for(r, "listeners[0].timeouts.connect").message ==
        "unknown duration unit 'sec' (use ms, s, m or h)");
  CHECK(error_for(r, "listeners[0].timeouts.handshake").message ==
        "a duration is a whole number followed by a unit (ms, s, m, h), e.g. 10s");
  CHECK(error_for(r, "listeners[0].timeouts.idle").message == "expected a duration, e.g. 10s");
  CHECK(r.errors.size() == 4);
}

TEST_CASE("an invalid size is rejected") {
  SUBCASE("unknown unit") {
    const auto d = only_error(load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
    buffer_size: 16KB
)"));
    CHECK(d.key == "listeners[0].buffer_size");
    CHECK(d.where.line == 7);
    CHECK(d.message ==
          "unknown size unit 'KB' (use B, KiB, MiB or GiB; k, M and G mean the same binary "
          "multiples)");
  }
  SUBCASE("no unit") {
    const auto d = only_error(load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
    buffer_size: 16384
)"));
    CHECK(d.message == "size needs a unit (B, KiB, MiB, GiB), e.g. 16KiB");
  }
}

TEST_CASE("a value out of range is rejected with the range") {
  const auto r = load(R"(
drain_timeout: 0s
threads: 65
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
    timeouts: {connect: 0ms, handshake: 169h, idle: 0s}
    max_connections: 0
    buffer_size: 512B
  - name: in2
    mode: inbound
    listen: 0.0.0.0:8444
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
    max_connections: -5
    buffer_size: 17M
)");
  CHECK(error_for(r, "drain_timeout").message == "must be longer than 0s");
  CHECK(error_for(r, "threads").message == "must be from 1 to 64");
  CHECK(error_for(r, "threads").where.line == 2);
  CHECK(error_for(r, "listeners[0].timeouts.connect").message == "must be longer than 0s");
  CHECK(error_for(r, "listeners[0].timeouts.handshake").message == "must be at most 168h");
  CHECK(error_for(r, "listeners[0].max_connections").message == "must be from 1 to 1000000");
  CHECK(error_for(r, "listeners[0].buffer_size").message == "must be from 1KiB to 16MiB");
  CHECK(error_for(r, "listeners[1].max_connections").message == "must be from 1 to 1000000");
  CHECK(error_for(r, "listeners[1].buffer_size").message == "must be from 1KiB to 16MiB");
  CHECK(error_for(r, "listeners[1].buffer_size").where.line == 18);
  // idle: 0s is allowed: it turns the idle limit off.
  CHECK(r.errors.size() == 8);
}

TEST_CASE("an integer too large for any type is out of range, not a crash") {
  const auto d = only_error(load(R"(
threads: 99999999999999999999999999
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
)"));
  CHECK(d.message == "must be from 1 to 64");
}

TEST_CASE("a listener name with characters outside A-Z a-z 0-9 _ . - is rejected") {
  const auto d = only_error(load(R"(
listeners:
  - name: web in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
)"));
  CHECK(d.key == "listeners[0].name");
  CHECK(d.message == "'web in' is not a valid name: use 1 to 64 of A-Z a-z 0-9 _ . -");
}

TEST_CASE("a duplicate listener name is reported on the second, with the first's line") {
  const auto d = only_error(load(R"(
listeners:
  - name: web
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
  - name: web
    mode: inbound
    listen: 0.0.0.0:8444
    upstream: 127.0.0.1:8081
    tls: {cert: a, key: b}
)"));
  CHECK(d.key == "listeners[1].name");
  CHECK(d.where.line == 7);
  CHECK(d.message == "duplicate listener name 'web' (first used on line 2)");
}

TEST_CASE("two listeners on the same listen address are rejected") {
  const auto d = only_error(load(R"(
listeners:
  - name: a
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
  - name: b
    mode: outbound
    listen: unix:/run/b.sock
    upstream: b.example:443
    tls: {ca: ca.crt, server_name: b.example}
  - name: c
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8081
    tls: {cert: a, key: b}
)"));
  CHECK(d.key == "listeners[2].listen");
  CHECK(d.where.line == 14);
  CHECK(d.message == "listen address '0.0.0.0:8443' is already used by listener 'a' (line 4)");
}

TEST_CASE("an outbound listener beyond loopback needs allow_non_loopback") {
  const std::string head = R"(
listeners:
  - name: out
    mode: outbound
    upstream: db.example:5432
    tls: {ca: ca.crt, server_name: db.example}
)";
  SUBCASE("without the opt-in it is an error naming the opt-in") {
    const auto d = only_error(load(head + "    listen: 0.0.0.0:15432\n"));
    CHECK(d.key == "listeners[0].listen");
    CHECK(d.where.line == 6);
    CHECK(contains(d.message, "non-loopback address '0.0.0.0:15432'"));
    CHECK(contains(d.message, "plaintext relay"));
    CHECK(contains(d.message, "allow_non_loopback: true"));
  }
  SUBCASE("a name that is not localhost counts as non-loopback") {
    const auto d = only_error(load(head + "    listen: myhost:15432\n"));
    CHECK(d.key == "listeners[0].listen");
  }
  SUBCASE("allow_non_loopback: false is the same as leaving it out") {
    const auto r = load(head + "    listen: 10.1.2.3:15432\n    allow_non_loopback: false\n");
    CHECK(error_for(r, "listeners[0].listen").where.line == 6);
  }
  SUBCASE("with the opt-in it is accepted") {
    const auto r = load(head + "    listen: 0.0.0.0:15432\n    allow_non_loopback: true\n");
    CHECK(valid(r).listeners.at(0).allow_non_loopback);
  }
  SUBCASE("loopback addresses and unix sockets need no opt-in") {
    for (const auto* listen : {"127.0.0.1:1", "127.8.9.10:1", "\"[::1]:1\"", "localhost:1",
                               "unix:/run/atlsd/out.sock"}) {
      CAPTURE(listen);
      const auto r = load(head + "    listen: " + listen + "\n");
      CHECK(valid(r).listeners.size() == 1);
    }
  }
}

TEST_CASE("allow_non_loopback on an inbound listener is rejected") {
  const auto d = only_error(load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    allow_non_loopback: true
    tls: {cert: a, key: b}
)"));
  CHECK(d.key == "listeners[0].allow_non_loopback");
  CHECK(d.where.line == 6);
  CHECK(contains(d.message, "applies only to outbound listeners"));
}

TEST_CASE("a listener whose upstream is its own listen address is rejected") {
  const auto d = only_error(load(R"(
listeners:
  - name: loop
    mode: outbound
    listen: 127.0.0.1:9000
    upstream: 127.0.0.1:9000
    tls: {ca: ca.crt, server_name: localhost}
)"));
  CHECK(d.key == "listeners[0].upstream");
  CHECK(d.where.line == 5);
  CHECK(d.message ==
        "upstream is the same address as listen: the listener would connect to itself");
}

TEST_CASE("an outbound client certificate needs its key, and the key its certificate") {
  SUBCASE("cert without key") {
    const auto d = only_error(load(R"(
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:9000
    upstream: db.example:5432
    tls:
      ca: ca.crt
      server_name: db.example
      cert: client.crt
)"));
    CHECK(d.key == "listeners[0].tls.cert");
    CHECK(d.where.line == 9);
    CHECK(d.message == "'cert' is set without 'key': a client certificate needs its private key");
  }
  SUBCASE("key without cert") {
    const auto d = only_error(load(R"(
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:9000
    upstream: db.example:5432
    tls:
      ca: ca.crt
      key: client.key
      server_name: db.example
)"));
    CHECK(d.key == "listeners[0].tls.key");
    CHECK(d.where.line == 8);
    CHECK(d.message == "'key' is set without 'cert': a private key needs its client certificate");
  }
}

TEST_CASE("allow_uris entries must be URIs with at most a final /* wildcard") {
  const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: a
      key: b
      client_auth:
        ca: ca.crt
        allow_uris:
          - spiffe://example.org/ns/prod/sa/web
          - spiffe://example.org/ns/*
          - example.org/ns/prod
          - spiffe://example.org/ns*
          - spiffe://*
          - spiffe://example.org/*/sa/web
          - ""
          - spiffe:///ns/x
          - spiffe://example.org/a b
)");
  const std::string bad_star =
      "'*' is only allowed as the whole last path segment, e.g. spiffe://example.org/ns/*";
  const std::string key = "listeners[0].tls.client_auth.allow_uris";
  CHECK(contains(error_for(r, key + "[2]").message, "is not a URI"));
  CHECK(error_for(r, key + "[2]").where.line == 14);
  CHECK(error_for(r, key + "[3]").message == bad_star);
  CHECK(error_for(r, key + "[4]").message == bad_star);
  CHECK(error_for(r, key + "[5]").message == bad_star);
  CHECK(error_for(r, key + "[6]").message == "must not be empty");
  CHECK(error_for(r, key + "[7]").message == "'spiffe:///ns/x' has nothing after '://'");
  CHECK(error_for(r, key + "[8]").message == "must not contain spaces or control characters");
  CHECK(r.errors.size() == 7);
}

TEST_CASE("allow_dns entries must be exact DNS names") {
  const auto r = load(R"(
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:9000
    upstream: db.example:5432
    tls:
      ca: ca.crt
      server_name: db.example
      allow_dns: [db.example, "*.example", "", bad..name, [nested]]
)");
  const std::string key = "listeners[0].tls.allow_dns";
  CHECK(error_for(r, key + "[1]").message ==
        "wildcards are not supported in allow_dns: list each DNS name exactly");
  CHECK(error_for(r, key + "[1]").where.line == 9);
  CHECK(error_for(r, key + "[2]").message == "must not be empty");
  CHECK(contains(error_for(r, key + "[3]").message, "is not a valid DNS name"));
  CHECK(error_for(r, key + "[4]").message == "expected a string");
  CHECK(r.errors.size() == 4);
}

TEST_CASE("server_name must be one DNS name or IP address") {
  const std::string head = R"(
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:9000
    upstream: db.example:5432
    tls:
      ca: ca.crt
)";
  SUBCASE("names and addresses are accepted") {
    for (const auto* name : {"db.example", "10.0.0.1", "\"::1\"", "localhost"}) {
      CAPTURE(name);
      const auto r = load(head + "      server_name: " + name + "\n");
      CHECK(valid(r).listeners.size() == 1);
    }
  }
  SUBCASE("wildcards, brackets and junk are rejected") {
    for (const auto* name :
         {"\"*.example\"", "\"[::1]\"", "\"db example\"", "\"\"", "a..b", "db_1.example"}) {
      CAPTURE(name);
      const auto d = only_error(load(head + "      server_name: " + name + "\n"));
      CHECK(d.key == "listeners[0].tls.server_name");
      CHECK(d.where.line == 8);
    }
  }
  SUBCASE("it is required") {
    const auto d = only_error(load(head));
    CHECK(d.key == "listeners[0].tls");
    CHECK(d.message == "missing required key 'server_name'");
  }
}

TEST_CASE("a key of the other mode is unknown, with a hint where it belongs") {
  SUBCASE("server_name and ca on an inbound listener") {
    const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: a
      key: b
      ca: ca.crt
      server_name: x.example
)");
    CHECK(error_for(r, "listeners[0].tls.ca").message ==
          "unknown key 'ca': it applies to outbound listeners only (to verify client "
          "certificates, put it under tls.client_auth)");
    CHECK(error_for(r, "listeners[0].tls.ca").where.line == 9);
    CHECK(error_for(r, "listeners[0].tls.server_name").message ==
          "unknown key 'server_name': it applies to outbound listeners only");
    CHECK(r.errors.size() == 2);
  }
  SUBCASE("client_auth on an outbound listener") {
    const auto d = only_error(load(R"(
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:9000
    upstream: db.example:5432
    tls:
      ca: ca.crt
      server_name: db.example
      client_auth: {ca: ca.crt}
)"));
    CHECK(d.key == "listeners[0].tls.client_auth");
    CHECK(d.where.line == 9);
    CHECK(contains(d.message, "unknown key 'client_auth': it applies to inbound listeners only"));
  }
  SUBCASE("client_auth needs its ca") {
    const auto d = only_error(load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: a
      key: b
      client_auth:
        allow_dns: [a.example]
)"));
    CHECK(d.key == "listeners[0].tls.client_auth");
    CHECK(d.where.line == 9);
    CHECK(d.message == "missing required key 'ca'");
  }
}

TEST_CASE("a key given twice in one mapping is rejected") {
  const auto d = only_error(load(R"(
threads: 2
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a, key: b}
threads: 4
)"));
  CHECK(d.key == "threads");
  CHECK(d.where.line == 8);
  CHECK(d.message == "duplicate key 'threads' (first set on line 1)");
}

TEST_CASE("a YAML syntax error is reported at its line and column") {
  SUBCASE("an unclosed flow sequence") {
    const auto d = only_error(load(R"(
threads: 2
listeners: [
  {name: a}
)"));
    CHECK(d.key.empty());
    CHECK(d.where.line == 4);
    CHECK(d.where.column == 1);
    CHECK(d.message == "YAML syntax error: end of sequence flow not found");
  }
  SUBCASE("a bad indent") {
    const auto d = only_error(load(R"(
threads: 2
listeners:
  - name: a
     mode: inbound
)"));
    CHECK(d.where.line == 4);
    CHECK(contains(d.message, "YAML syntax error: "));
  }
  SUBCASE("a tab used for indentation is named as the cause") {
    const auto d = only_error(load("log:\n\tlevel: info\n"));
    CHECK(d.where.line == 2);
    CHECK(contains(d.message, "YAML does not allow tabs for indentation"));
  }
  // yaml-cpp 0.7 loops forever on a token that cannot start a node (found by config_fuzz):
  // such a file must be refused, not exhaust memory.
  SUBCASE("a stray comma at the top is refused, not loaded forever") {
    const auto d = only_error(load(","));
    CHECK(d.where.line == 1);
    CHECK(d.message == "YAML syntax error: unexpected ','");
  }
  SUBCASE("a stray comma after a document is refused at its line") {
    const auto d = only_error(load("[a]\n,"));
    CHECK(d.where.line == 2);
    CHECK(d.message == "YAML syntax error: unexpected ','");
  }
}

TEST_CASE("a config must be a single YAML mapping") {
  SUBCASE("a second document") {
    const auto d = only_error(load("threads: 2\n---\nthreads: 3\n"));
    CHECK(d.where.line == 3);
    CHECK(contains(d.message, "single YAML document"));
  }
  SUBCASE("a list at the top") {
    const auto d = only_error(load("- a\n- b\n"));
    CHECK(d.key.empty());
    CHECK(d.message == "expected a mapping");
  }
}

TEST_CASE("several mistakes in one file are all reported, in file order") {
  const auto r = load(R"(
log:
  levle: info
threads: 0
listeners:
  - name: a
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: a}
  - name: a
    mode: outbound
    listen: 0.0.0.0:9000
    upstream: db.example
    tls: {ca: ca.crt, server_name: db.example, cert: c.crt}
    timeouts: {idle: 5}
)");
  INFO(all_errors(r));
  CHECK_FALSE(r.config.has_value());
  REQUIRE(r.errors.size() == 8);
  CHECK(r.errors[0].key == "log.levle");
  CHECK(r.errors[0].message == "unknown key 'levle'; did you mean 'level'?");
  CHECK(r.errors[1].key == "threads");
  CHECK(r.errors[2].key == "listeners[0].tls");            // missing key
  CHECK(r.errors[3].key == "listeners[1].name");           // duplicate
  CHECK(r.errors[4].key == "listeners[1].listen");         // outbound beyond loopback
  CHECK(r.errors[5].key == "listeners[1].upstream");       // no port
  CHECK(r.errors[6].key == "listeners[1].tls.cert");       // no key
  CHECK(r.errors[7].key == "listeners[1].timeouts.idle");  // no unit
  for (std::size_t i = 1; i < r.errors.size(); ++i) {
    CHECK(r.errors[i - 1].where.line <= r.errors[i].where.line);
  }
}

TEST_CASE("relative file paths are resolved against the config file's directory") {
  const test::temp_dir dir;
  fs::create_directory(dir.path() / "etc");
  const auto path = dir.write("etc/atlsd.yaml", yaml(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: certs/server.crt
      key: ../keys/./server.key
      client_auth:
        ca: /abs/ca.crt
)"));
  const auto r = load_file(path);
  const auto& tls = std::get<inbound_tls>(valid(r).listeners.at(0).tls);
  CHECK(tls.cert.path == dir.path() / "etc/certs/server.crt");
  CHECK(std::get<file_ref>(tls.key).path == dir.path() / "keys/server.key");
  CHECK(tls.client_auth->ca.path == "/abs/ca.crt");
  CHECK(tls.cert.where.file == path.string());
  CHECK(tls.cert.where.line == 7);
  CHECK(std::get<file_ref>(tls.key).key == "listeners[0].tls.key");
  // The files need not exist: they are loaded when the TLS contexts are built.
  CHECK_FALSE(fs::exists(tls.cert.path));
}

TEST_CASE("a config path relative to the working directory still resolves files next to it") {
  const test::temp_dir dir;
  dir.write("atlsd.yaml",
            "listeners: [{name: a, mode: inbound, listen: '0.0.0.0:1', "
            "upstream: '127.0.0.1:2', tls: {cert: s.crt, key: s.key}}]\n");
  const auto saved = fs::current_path();
  fs::current_path(dir.path());
  const auto r = load_file("atlsd.yaml");
  fs::current_path(saved);
  const auto& tls = std::get<inbound_tls>(valid(r).listeners.at(0).tls);
  CHECK(tls.cert.path.is_absolute());
  CHECK(tls.cert.path == dir.path() / "s.crt");
  CHECK(tls.cert.where.file == "atlsd.yaml");
}

TEST_CASE("a config file that cannot be read is one error naming the file") {
  const test::temp_dir dir;
  SUBCASE("missing") {
    const auto path = dir.path() / "absent.yaml";
    const auto d = only_error(load_file(path));
    CHECK(d.where.file == path.string());
    CHECK(d.where.line == 0);
    CHECK(contains(d.message, "cannot read config"));
    CHECK(to_string(d) == path.string() + ": " + d.message);
  }
  SUBCASE("a directory") {
    const auto d = only_error(load_file(dir.path()));
    CHECK(d.message == "cannot read config: it is a directory");
  }
  SUBCASE("too large") {
    const auto path = dir.write("big.yaml", std::string(1024 * 1024 + 1, '#'));
    const auto d = only_error(load_file(path));
    CHECK(contains(d.message, "larger than 1 MiB"));
  }
}

// ---------------------------------------------------------------------------------------------
// attestation

namespace {

// sha256("test") and sha256("") as an operator would paste them from sha256sum.
constexpr std::string_view pin_a =
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
constexpr std::string_view pin_b =
    "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";

// An inbound listener on tpm:tik with the given attestation block, indented as a listener key.
load_result load_inbound_attested(std::string_view attestation) {
  return load(std::string(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tik.crt, key: tpm:tik}
    attestation:
)") + std::string(attestation) +
              std::string(with_tpm));
}

}  // namespace

TEST_CASE("a full background-check attestation block is read into the listener's settings") {
  const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tik.crt, key: tpm:tik}
    attestation:
      mode: post-handshake
      model: background-check
      reattest_every: 10m
      binder:
        label: EXPORTER-atls attestation
        key_encoding: raw-public-key
      self:
        pcrs: [16, 0, 7]
      peer:
        required: false
        verifier: local
        local:
          trusted_aks:
            - spki_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
          reference_values:
            pcrs:
              0: 0000000000000000000000000000000000000000000000000000000000000000
        accept:
          minimum_status: warning
          required_submodules: [PARSEC_TPM]
          max_age: 300s
        pin:
          - 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
          - E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855
)" + std::string(with_tpm));
  const auto& l = valid(r).listeners.at(0);
  REQUIRE(l.attestation.has_value());
  const auto& a = *l.attestation;
  CHECK(a.where.line == 7);
  CHECK(a.mode == attestation_mode::post_handshake);
  CHECK(a.model == attestation_model::background_check);
  CHECK(a.reattest_every == 10min);
  CHECK(a.binder_label == "EXPORTER-atls attestation");
  CHECK(a.binder_key == binder_key_encoding::raw_public_key);

  REQUIRE(a.self.has_value());
  CHECK(a.self->where.line == 14);
  CHECK(a.self->pcrs.hash_alg == 0x000B);
  // Stored ascending, as a quote selects them.
  CHECK(a.self->pcrs.pcrs == std::vector<std::uint8_t>{0, 7, 16});
  CHECK_FALSE(a.self->veraison.has_value());

  REQUIRE(a.peer.has_value());
  const auto& p = *a.peer;
  CHECK(p.where.line == 16);
  CHECK_FALSE(p.required);
  CHECK(p.verifier == verifier_kind::local);
  REQUIRE(p.local.has_value());
  CHECK(p.local->trusted_aks.empty());
  REQUIRE(p.local->trusted_ak_hashes.size() == 1);
  CHECK(p.local->trusted_ak_hashes[0][0] == 0x9f);
  REQUIRE(std::holds_alternative<verify::pcr_values>(p.local->reference));
  CHECK(std::get<verify::pcr_values>(p.local->reference).values.size() == 1);
  CHECK_FALSE(p.veraison.has_value());
  CHECK(p.passport_keys.empty());
  CHECK(p.accept.minimum_status == verify::ear_status::warning);
  CHECK(p.accept.required_submodules == std::vector<std::string>{"PARSEC_TPM"});
  CHECK(p.accept.max_age == std::chrono::seconds(300));
  REQUIRE(p.pinned_keys.size() == 2);
  CHECK(p.pinned_keys[0][0] == 0x9f);
  CHECK(p.pinned_keys[0][31] == 0x08);
  CHECK(p.pinned_keys[1][0] == 0xe3);
  CHECK(p.pinned_keys[1][31] == 0x55);
}

TEST_CASE(
    "a passport attestation block names this sidecar's EAR issuer and the peer's EAR signers") {
  const auto r = load(R"(
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:15432
    upstream: db.example.org:5432
    tls: {ca: ca.crt, server_name: db.example.org, cert: tik.crt, key: tpm:tik}
    attestation:
      mode: intra-handshake
      model: passport
      self:
        veraison:
          urls: [https://v.example:8443, http://10.0.0.5/veraison]
          ca: veraison-ca.pem
          token: /run/secrets/veraison-token
          ear_key: ear.pem
          request_timeout: 2s
      peer:
        passport_keys: [ear-signer.pem, /abs/other-signer.pem]
)" + std::string(with_tpm));
  const auto& a = valid(r).listeners.at(0).attestation.value();
  CHECK(a.mode == attestation_mode::intra_handshake);
  CHECK(a.model == attestation_model::passport);
  CHECK(a.reattest_every == 0ms);

  REQUIRE(a.self.has_value());
  REQUIRE(a.self->veraison.has_value());
  const auto& v = *a.self->veraison;
  CHECK(v.where.line == 11);
  CHECK(v.urls == std::vector<std::string>{"https://v.example:8443", "http://10.0.0.5/veraison"});
  REQUIRE(v.ca.has_value());
  CHECK(v.ca->path == "/etc/atlsd/veraison-ca.pem");
  CHECK(v.ca->key == "listeners[0].attestation.self.veraison.ca");
  CHECK(v.ca->where.line == 13);
  REQUIRE(v.token.has_value());
  CHECK(v.token->path == "/run/secrets/veraison-token");
  REQUIRE(v.ear_key.has_value());
  CHECK(v.ear_key->path == "/etc/atlsd/ear.pem");
  CHECK_FALSE(v.trust_discovered_key);
  CHECK(v.request_timeout == 2s);

  REQUIRE(a.peer.has_value());
  const auto& p = *a.peer;
  CHECK_FALSE(p.local.has_value());
  CHECK_FALSE(p.veraison.has_value());
  REQUIRE(p.passport_keys.size() == 2);
  CHECK(p.passport_keys[0].path == "/etc/atlsd/ear-signer.pem");
  CHECK(p.passport_keys[0].key == "listeners[0].attestation.peer.passport_keys[0]");
  CHECK(p.passport_keys[0].where.line == 18);
  CHECK(p.passport_keys[1].path == "/abs/other-signer.pem");
  // Outbound: the server's certificate is checked against tls.ca, so no pin is needed.
  CHECK(p.pinned_keys.empty());
  // Named files are not opened at load: none of them exists.
  CHECK_FALSE(fs::exists(v.ca->path));
}

TEST_CASE("a peer appraised by Veraison is read with the client's settings") {
  const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: server.crt, key: server.key, client_auth: {ca: clients-ca.crt}}
    attestation:
      peer:
        verifier: veraison
        veraison: {urls: ["https://[::1]:8443/"], trust_discovered_key: true}
)");
  const auto& p = valid(r).listeners.at(0).attestation.value().peer.value();
  CHECK(p.verifier == verifier_kind::veraison);
  CHECK_FALSE(p.local.has_value());
  REQUIRE(p.veraison.has_value());
  CHECK(p.veraison->urls == std::vector<std::string>{"https://[::1]:8443/"});
  CHECK(p.veraison->trust_discovered_key);
  CHECK_FALSE(p.veraison->ear_key.has_value());
  CHECK_FALSE(p.veraison->ca.has_value());
  CHECK_FALSE(p.veraison->token.has_value());
  CHECK(p.veraison->request_timeout == 5s);
  // RA + PKI: client certificates are CA-checked, so pins are optional.
  CHECK(p.pinned_keys.empty());
}

TEST_CASE("an attestation block gets the documented defaults") {
  SUBCASE("self") {
    const auto r = load_inbound_attested("      self: {}\n");
    const auto& a = valid(r).listeners.at(0).attestation.value();
    CHECK(a.mode == attestation_mode::post_handshake);
    CHECK(a.model == attestation_model::background_check);
    CHECK(a.reattest_every == 0ms);
    CHECK(a.binder_label == "Attestation");
    CHECK(a.binder_key == binder_key_encoding::spki_der);
    CHECK_FALSE(a.peer.has_value());
    REQUIRE(a.self.has_value());
    CHECK(a.self->pcrs.hash_alg == 0x000B);
    CHECK(a.self->pcrs.pcrs == std::vector<std::uint8_t>{0, 1, 2, 3, 4, 5, 6, 7});
    CHECK_FALSE(a.self->veraison.has_value());
  }
  SUBCASE("peer") {
    const auto r = load_inbound_attested(R"(      binder: {}
      peer:
        local:
          trusted_aks: [{spki_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}]
          reference_values: {pcr_digest: {pcrs: [0], digest: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}}
        pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
)");
    const auto& a = valid(r).listeners.at(0).attestation.value();
    CHECK(a.binder_label == "Attestation");
    CHECK(a.binder_key == binder_key_encoding::spki_der);
    CHECK_FALSE(a.self.has_value());
    const auto& p = a.peer.value();
    CHECK(p.required);
    CHECK(p.verifier == verifier_kind::local);
    CHECK(p.local.has_value());
    const verify::appraisal_policy defaults;
    CHECK(p.accept.minimum_status == defaults.minimum_status);
    CHECK(p.accept.minimum_tiers == defaults.minimum_tiers);
    CHECK(p.accept.required_submodules.empty());
    CHECK_FALSE(p.accept.max_age.has_value());
    CHECK(p.accept.allowed_clock_skew == defaults.allowed_clock_skew);
  }
  SUBCASE("a listener without the block is plain TLS") {
    const auto r = load(R"(
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: tik.crt, key: tpm:tik}}
)" + std::string(with_tpm));
    CHECK_FALSE(valid(r).listeners.at(0).attestation.has_value());
  }
}

TEST_CASE("an attestation block needs self, peer or both") {
  const auto d = only_error(load_inbound_attested("      mode: post-handshake\n"));
  CHECK(d.key == "listeners[0].attestation");
  CHECK(d.where.line == 7);
  CHECK(contains(d.message, "needs 'self'"));
  CHECK(contains(d.message, "'peer'"));
}

TEST_CASE("reattest_on_reload is off unless set, and needs a post-handshake relying party") {
  const std::string peer = R"(      peer:
        local:
          trusted_aks: [{spki_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}]
          reference_values: {pcr_digest: {pcrs: [0], digest: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}}
        pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
)";
  SUBCASE("off by default") {
    const auto r = load_inbound_attested(peer);
    CHECK_FALSE(valid(r).listeners.at(0).attestation.value().reattest_on_reload);
  }
  SUBCASE("set") {
    const auto r = load_inbound_attested("      reattest_on_reload: true\n" + peer);
    CHECK(valid(r).listeners.at(0).attestation.value().reattest_on_reload);
  }
  SUBCASE("an attester alone has no policy to re-check") {
    const auto d =
        only_error(load_inbound_attested("      reattest_on_reload: true\n      self: {}\n"));
    CHECK(d.key == "listeners[0].attestation.reattest_on_reload");
    CHECK(contains(d.message, "reattest_on_reload needs 'peer'"));
  }
  SUBCASE("intra-handshake attestation cannot be repeated on an open connection") {
    const auto d = only_error(load_inbound_attested(
        "      mode: intra-handshake\n      reattest_on_reload: true\n" + peer));
    CHECK(d.key == "listeners[0].attestation.reattest_on_reload");
    CHECK(contains(d.message, "needs mode post-handshake"));
  }
  SUBCASE("not a boolean") {
    const auto d =
        only_error(load_inbound_attested("      reattest_on_reload: sometimes\n" + peer));
    CHECK(d.key == "listeners[0].attestation.reattest_on_reload");
  }
}

TEST_CASE("a listener that attests needs the TPM's TLS identity key") {
  SUBCASE("inbound with a key file") {
    const auto d = only_error(load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: server.crt, key: server.key}
    attestation:
      self: {}
)"));
    CHECK(d.key == "listeners[0].attestation.self");
    CHECK(d.where.line == 8);
    CHECK(contains(d.message, "a listener that attests without a TPM key"));
    CHECK(contains(d.message, "tls.key: tpm:tik"));
  }
  SUBCASE("outbound without a client certificate") {
    const auto d = only_error(load(R"(
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:15432
    upstream: db.example.org:5432
    tls: {ca: ca.crt, server_name: db.example.org}
    attestation:
      self: {}
)"));
    CHECK(d.key == "listeners[0].attestation.self");
    CHECK(contains(d.message, "a listener that attests without a TPM key"));
    CHECK(contains(d.message, "set tls.cert and tls.key: tpm:tik"));
  }
  SUBCASE("outbound with a client key file") {
    const auto d = only_error(load(R"(
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:15432
    upstream: db.example.org:5432
    tls: {ca: ca.crt, server_name: db.example.org, cert: c.crt, key: c.key}
    attestation: {self: {}}
)"));
    CHECK(d.key == "listeners[0].attestation.self");
  }
  SUBCASE("a wrong tls.key is the one error, not also the attestation rule") {
    const auto d = only_error(load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tik.crt, key: "tpm:ak"}
    attestation: {self: {}}
)"));
    CHECK(d.key == "listeners[0].tls.key");
  }
}

TEST_CASE("an inbound listener whose clients are not CA-checked must pin the attested keys") {
  constexpr std::string_view local = R"(
        local:
          trusted_aks: [{spki_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}]
          reference_values: {pcrs: {0: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}}
)";
  SUBCASE("RA-only without pin is refused at peer") {
    const auto d = only_error(load_inbound_attested("      peer:" + std::string(local)));
    CHECK(d.key == "listeners[0].attestation.peer");
    CHECK(d.where.line == 8);
    CHECK(contains(d.message, "without tls.client_auth"));
    CHECK(contains(d.message, "'pin'"));
  }
  SUBCASE("an empty pin list is refused at pin") {
    const auto d =
        only_error(load_inbound_attested("      peer:" + std::string(local) + "        pin: []\n"));
    CHECK(d.key == "listeners[0].attestation.peer.pin");
    CHECK(d.where.line == 12);
  }
  SUBCASE("required: false does not lift the rule") {
    const auto d = only_error(
        load_inbound_attested("      peer:" + std::string(local) + "        required: false\n"));
    CHECK(d.key == "listeners[0].attestation.peer");
  }
  SUBCASE("RA-only with a pin is accepted") {
    const auto r = load_inbound_attested("      peer:" + std::string(local) + "        pin: [" +
                                         std::string(pin_a) + "]\n");
    CHECK(valid(r).listeners.at(0).attestation->peer->pinned_keys.size() == 1);
  }
  SUBCASE("RA + PKI needs no pin") {
    const auto r = load(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: s.crt, key: s.key, client_auth: {ca: ca.crt}}
    attestation:
      peer:)" + std::string(local));
    CHECK(valid(r).listeners.at(0).attestation->peer->pinned_keys.empty());
  }
  SUBCASE("outbound checks the server against tls.ca and needs no pin") {
    const auto r = load(R"(
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:15432
    upstream: db.example.org:5432
    tls: {ca: ca.crt, server_name: db.example.org}
    attestation:
      peer:)" + std::string(local));
    CHECK(valid(r).listeners.at(0).attestation->peer.has_value());
  }
}

TEST_CASE("re-attestation on an open connection needs mode post-handshake") {
  SUBCASE("refused with intra-handshake") {
    const auto d = only_error(load_inbound_attested(R"(      mode: intra-handshake
      reattest_every: 10m
      self: {}
)"));
    CHECK(d.key == "listeners[0].attestation.reattest_every");
    CHECK(d.where.line == 9);
    CHECK(contains(d.message, "post-handshake"));
  }
  SUBCASE("0s means never and is fine with intra-handshake") {
    const auto r = load_inbound_attested(R"(      mode: intra-handshake
      reattest_every: 0s
      self: {}
)");
    CHECK(valid(r).listeners.at(0).attestation->reattest_every == 0ms);
  }
}

TEST_CASE("model passport needs EAR keys and an EAR issuer, and has no verifier to call") {
  SUBCASE("missing passport_keys and self.veraison") {
    const auto r = load_inbound_attested(R"(      model: passport
      self: {}
      peer: {pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]}
)");
    const auto self = error_for(r, "listeners[0].attestation.self");
    CHECK(self.where.line == 9);
    CHECK(contains(self.message, "model passport needs 'veraison'"));
    const auto peer = error_for(r, "listeners[0].attestation.peer");
    CHECK(peer.where.line == 10);
    CHECK(contains(peer.message, "model passport needs 'passport_keys'"));
    CHECK(r.errors.size() == 2);
  }
  SUBCASE("verifier, local and veraison are refused, without checking what is in them") {
    const auto r = load_inbound_attested(R"(      model: passport
      peer:
        passport_keys: [ear.pem]
        pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
        verifier: veraison
        local:
          trusted_aks: [{pem: /nonexistent/ak.pem}]
          reference_values: {pcrs: {0: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}}
        veraison: {urls: [ftp://v.example]}
)");
    CHECK(contains(error_for(r, "listeners[0].attestation.peer.verifier").message,
                   "applies to model background-check only"));
    CHECK(error_for(r, "listeners[0].attestation.peer.local").where.line == 13);
    CHECK(error_for(r, "listeners[0].attestation.peer.veraison").where.line == 16);
    CHECK(r.errors.size() == 3);
  }
  SUBCASE("an empty passport_keys list is refused") {
    const auto d = only_error(load_inbound_attested(R"(      model: passport
      peer: {passport_keys: [], pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]}
)"));
    CHECK(d.key == "listeners[0].attestation.peer.passport_keys");
    CHECK(contains(d.message, "at least one"));
  }
}

TEST_CASE(
    "a verifier outage during re-attestation is waited out for a minute unless verifier_grace "
    "says") {
  const auto with_grace = [](std::string_view grace) {
    return load_inbound_attested(std::string(R"(      peer:
        local:
          trusted_aks: [{spki_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}]
          reference_values: {pcr_digest: {pcrs: [0], digest: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}}
        pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
)") + std::string(grace));
  };
  const auto grace_of = [](const load_result& r) {
    return valid(r).listeners.at(0).attestation.value().peer.value().verifier_grace;
  };
  CHECK(grace_of(with_grace("")) == 1min);
  CHECK(grace_of(with_grace("        verifier_grace: 0s\n")) == 0ms);
  CHECK(grace_of(with_grace("        verifier_grace: 90s\n")) == 90s);
  const auto too_long = only_error(with_grace("        verifier_grace: 25h\n"));
  CHECK(too_long.key == "listeners[0].attestation.peer.verifier_grace");
  CHECK(contains(too_long.message, "at most 24h"));
  const auto passport = only_error(load_inbound_attested(R"(      model: passport
      peer:
        passport_keys: [ear.pem]
        pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
        verifier_grace: 10s
)"));
  CHECK(passport.key == "listeners[0].attestation.peer.verifier_grace");
  CHECK(contains(passport.message, "applies to model background-check only"));
}

TEST_CASE("a passport is refreshed every minute unless refresh_every says otherwise") {
  const auto load = [](std::string_view refresh) {
    return load_inbound_attested(
        "      model: passport\n      self:\n        veraison: {urls: [https://v.example], "
        "ear_key: ear.pem}\n" +
        std::string(refresh));
  };
  SUBCASE("default") {
    CHECK(valid(load("")).listeners.at(0).attestation->self->refresh_every == 1min);
  }
  SUBCASE("set") {
    CHECK(valid(load("        refresh_every: 30s\n"))
              .listeners.at(0)
              .attestation->self->refresh_every == 30s);
  }
  SUBCASE("below one second or above a day") {
    for (const auto* value : {"500ms", "25h"}) {
      const auto d = only_error(load("        refresh_every: " + std::string(value) + "\n"));
      CHECK(d.key == "listeners[0].attestation.self.refresh_every");
      CHECK(contains(d.message, "from 1s to 24h"));
    }
  }
  SUBCASE("with background-check there is no passport to refresh") {
    const auto d = only_error(load_inbound_attested("      self:\n        refresh_every: 30s\n"));
    CHECK(d.key == "listeners[0].attestation.self.refresh_every");
    CHECK(contains(d.message, "applies to model passport only"));
  }
}

TEST_CASE("model background-check needs the named verifier's settings and refuses passport keys") {
  const std::string local = R"(
        local:
          trusted_aks: [{spki_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}]
          reference_values: {pcrs: {0: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}}
)";
  const std::string veraison = "        veraison: {urls: [https://v.example], ear_key: ear.pem}\n";
  const std::string pin = "        pin: [" + std::string(pin_a) + "]\n";
  SUBCASE("verifier local without local") {
    const auto d = only_error(load_inbound_attested("      peer:\n" + pin));
    CHECK(d.key == "listeners[0].attestation.peer");
    CHECK(contains(d.message, "verifier local needs 'local'"));
  }
  SUBCASE("verifier local with veraison settings") {
    const auto d =
        only_error(load_inbound_attested("      peer:\n" + pin + local.substr(1) + veraison));
    CHECK(d.key == "listeners[0].attestation.peer.veraison");
    CHECK(contains(d.message, "needs 'verifier: veraison'"));
  }
  SUBCASE("veraison settings without verifier: veraison are not taken as a hint") {
    const auto d = only_error(load_inbound_attested("      peer:\n" + pin + veraison));
    CHECK(d.key == "listeners[0].attestation.peer.veraison");
  }
  SUBCASE("verifier veraison without veraison") {
    const auto d =
        only_error(load_inbound_attested("      peer:\n        verifier: veraison\n" + pin));
    CHECK(d.key == "listeners[0].attestation.peer");
    CHECK(contains(d.message, "verifier veraison needs 'veraison'"));
  }
  SUBCASE("verifier veraison with local settings") {
    const auto d = only_error(load_inbound_attested("      peer:\n        verifier: veraison\n" +
                                                    pin + veraison + local.substr(1)));
    CHECK(d.key == "listeners[0].attestation.peer.local");
    CHECK(contains(d.message, "needs 'verifier: local'"));
  }
  SUBCASE("passport_keys") {
    const auto d = only_error(load_inbound_attested("      peer:\n" + pin + local.substr(1) +
                                                    "        passport_keys: [ear.pem]\n"));
    CHECK(d.key == "listeners[0].attestation.peer.passport_keys");
    CHECK(contains(d.message, "applies to model passport only"));
  }
  SUBCASE("self.veraison") {
    const auto d = only_error(load_inbound_attested(
        "      self:\n        veraison: {urls: [https://v.example], ear_key: ear.pem}\n"));
    CHECK(d.key == "listeners[0].attestation.self.veraison");
    CHECK(d.where.line == 9);
    CHECK(contains(d.message, "applies to model passport only"));
  }
}

TEST_CASE("Veraison settings need http(s) URLs and a pinned or explicitly discovered EAR key") {
  const auto check = [](std::string_view veraison) {
    return load_inbound_attested(
        "      model: passport\n      self:\n        veraison: " + std::string(veraison) + "\n");
  };
  const std::string at = "listeners[0].attestation.self.veraison";
  SUBCASE("no URL") {
    const auto d = only_error(check("{urls: [], ear_key: ear.pem}"));
    CHECK(d.key == at + ".urls");
    CHECK(contains(d.message, "at least one URL"));
  }
  SUBCASE("urls missing") {
    CHECK(only_error(check("{ear_key: ear.pem}")).message == "missing required key 'urls'");
  }
  SUBCASE("not http or https") {
    const auto d = only_error(check("{urls: [https://ok.example, ftp://v.example], ear_key: e}"));
    CHECK(d.key == at + ".urls[1]");
    CHECK(contains(d.message, "is not an http:// or https:// URL"));
  }
  SUBCASE("no host") {
    CHECK(contains(only_error(check("{urls: [https:///x], ear_key: e}")).message, "no host"));
  }
  SUBCASE("a port run into the path") {
    CHECK(contains(only_error(check("{urls: ['https://v.example:8443v'], ear_key: e}")).message,
                   "has a port that is not a number"));
    CHECK(contains(only_error(check("{urls: ['https://[::1]:x/'], ear_key: e}")).message,
                   "has a port that is not a number"));
  }
  SUBCASE("a query") {
    CHECK(contains(only_error(check("{urls: ['https://v.example/?a=b'], ear_key: e}")).message,
                   "no query"));
  }
  SUBCASE("neither ear_key nor trust_discovered_key") {
    const auto d = only_error(check("{urls: [https://v.example], trust_discovered_key: false}"));
    CHECK(d.key == at);
    CHECK(contains(d.message, "missing 'ear_key'"));
  }
  SUBCASE("both ear_key and trust_discovered_key") {
    const auto d =
        only_error(check("{urls: [https://v.example], ear_key: e, trust_discovered_key: true}"));
    CHECK(d.key == at + ".trust_discovered_key");
    CHECK(contains(d.message, "not both"));
  }
  SUBCASE("a request_timeout of zero") {
    const auto d =
        only_error(check("{urls: [https://v.example], ear_key: e, request_timeout: 0s}"));
    CHECK(d.key == at + ".request_timeout");
  }
}

TEST_CASE("an unknown attestation key or enum value is refused, with a suggestion") {
  SUBCASE("a misspelt key") {
    const auto r = load_inbound_attested("      reatest_every: 10m\n      self: {}\n");
    const auto d = only_error(r);
    CHECK(d.key == "listeners[0].attestation.reatest_every");
    CHECK(d.where.line == 8);
    CHECK(d.message == "unknown key 'reatest_every'; did you mean 'reattest_every'?");
  }
  SUBCASE("an unknown key inside peer") {
    const auto r = load_inbound_attested("      peer: {pins: [" + std::string(pin_a) + "]}\n");
    CHECK(error_for(r, "listeners[0].attestation.peer.pins").message ==
          "unknown key 'pins'; did you mean 'pin'?");
  }
  SUBCASE("enum values are exact strings") {
    const auto r = load_inbound_attested(R"(      mode: post_handshake
      model: Passport
      binder: {key_encoding: spki_der}
      self: {}
      peer:
        verifier: Local
        pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
)");
    CHECK(error_for(r, "listeners[0].attestation.mode").message ==
          "'post_handshake' is not one of: post-handshake, intra-handshake; did you mean "
          "'post-handshake'?");
    CHECK(contains(error_for(r, "listeners[0].attestation.model").message,
                   "'Passport' is not one of: background-check, passport"));
    CHECK(contains(error_for(r, "listeners[0].attestation.binder.key_encoding").message,
                   "is not one of: spki-der, raw-public-key"));
    CHECK(contains(error_for(r, "listeners[0].attestation.peer.verifier").message,
                   "is not one of: local, veraison"));
    // With the model and the verifier unknown, the rules that depend on them are skipped.
    CHECK(r.errors.size() == 4);
  }
  SUBCASE("a block that is not a mapping") {
    const auto d = only_error(load_inbound_attested("        true\n"));
    CHECK(d.key == "listeners[0].attestation");
    CHECK(d.message == "expected a mapping");
  }
}

TEST_CASE("a pin that is not one SHA-256 in hex is refused") {
  const auto check = [](std::string_view pins) {
    return load_inbound_attested("      peer:\n        passport_keys: [k.pem]\n        pin: " +
                                 std::string(pins) + "\n      model: passport\n");
  };
  SUBCASE("not hex") {
    const auto d = only_error(check("[" + std::string(pin_a.substr(0, 63)) + "g]"));
    CHECK(d.key == "listeners[0].attestation.peer.pin[0]");
    CHECK(d.where.line == 10);
    CHECK(contains(d.message, "'g' is not a hex digit"));
  }
  SUBCASE("0x prefix") {
    const auto d = only_error(check("[0x" + std::string(pin_a) + "]"));
    CHECK(contains(d.message, "'x' is not a hex digit"));
  }
  SUBCASE("too short") {
    const auto d = only_error(check("[" + std::string(pin_a.substr(2)) + "]"));
    CHECK(contains(d.message, "32 bytes (64 hex digits), got 62"));
  }
  SUBCASE("the same key twice, in either case") {
    std::string upper(pin_a);
    for (auto& c : upper) {
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    const auto d = only_error(check("[" + std::string(pin_a) + ", " + upper + "]"));
    CHECK(d.key == "listeners[0].attestation.peer.pin[1]");
    CHECK(contains(d.message, "listed twice"));
  }
  SUBCASE("not a list") {
    CHECK(only_error(check(std::string(pin_a))).message == "expected a list");
  }
}

TEST_CASE("self pcrs are distinct sha256 PCR indices from 0 to 23") {
  const auto check = [](std::string_view pcrs) {
    return load_inbound_attested("      self: {pcrs: " + std::string(pcrs) + "}\n");
  };
  SUBCASE("out of range") {
    const auto d = only_error(check("[0, 24]"));
    CHECK(d.key == "listeners[0].attestation.self.pcrs[1]");
    CHECK(d.message == "must be from 0 to 23");
  }
  SUBCASE("negative") {
    CHECK(only_error(check("[-1]")).message == "must be from 0 to 23");
  }
  SUBCASE("listed twice") {
    const auto d = only_error(check("[7, 0, 7]"));
    CHECK(d.key == "listeners[0].attestation.self.pcrs[2]");
    CHECK(d.message == "PCR 7 is listed twice");
  }
  SUBCASE("empty") {
    const auto d = only_error(check("[]"));
    CHECK(d.key == "listeners[0].attestation.self.pcrs");
    CHECK(d.message == "list at least one PCR");
  }
  SUBCASE("a range is not a list") {
    CHECK(only_error(check("0-7")).message == "expected a list");
  }
  SUBCASE("all 24") {
    const auto r = check(
        "[23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]");
    const auto& pcrs = valid(r).listeners.at(0).attestation->self->pcrs.pcrs;
    REQUIRE(pcrs.size() == 24);
    CHECK(pcrs.front() == 0);
    CHECK(pcrs.back() == 23);
  }
}

TEST_CASE("a binder label is 1 to 64 printable ASCII characters") {
  const auto check = [](std::string_view label) {
    return load_inbound_attested("      self: {}\n      binder: {label: " + std::string(label) +
                                 "}\n");
  };
  CHECK(valid(check(std::string(64, 'a'))).listeners.at(0).attestation->binder_label ==
        std::string(64, 'a'));
  const std::string at = "listeners[0].attestation.binder.label";
  CHECK(only_error(check("''")).key == at);
  CHECK(only_error(check(std::string(65, 'a'))).key == at);
  CHECK(contains(only_error(check("\"tab\\there\"")).message, "printable ASCII"));
  CHECK(only_error(check("\"caf\u00e9\"")).key == at);
  CHECK(only_error(check("[Attestation]")).message == "expected a string");
}

TEST_CASE("peer.local and peer.accept are checked as in the verifier policy") {
  const auto r = load_inbound_attested(R"(      peer:
        local:
          trusted_aks: []
          reference_values: {bank: sha1, pcrs: {0: 00}}
        accept:
          minimum_status: none
          max_age: 1500ms
          minimum_tiers: {hardwear: affirming}
        pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
)");
  const std::string at = "listeners[0].attestation.peer.";
  CHECK(contains(error_for(r, at + "local.trusted_aks").message, "at least one"));
  CHECK(contains(error_for(r, at + "local.reference_values.bank").message, "not supported"));
  CHECK(contains(error_for(r, at + "accept.minimum_status").message, "'none' as a minimum"));
  CHECK(contains(error_for(r, at + "accept.max_age").message, "whole number of seconds"));
  CHECK(contains(error_for(r, at + "accept.minimum_tiers.hardwear").message,
                 "did you mean 'hardware'?"));
  // A local block with errors is still "set": no second error saying it is missing.
  CHECK_FALSE(contains(all_errors(r), "needs 'local'"));
}

// A config whose inbound listener trusts the attestation key in `ak_file` (relative to `dir`).
std::filesystem::path write_config_trusting_ak(const test::temp_dir& dir,
                                               const std::string& ak_file) {
  return dir.write("atlsd.yaml", yaml(R"(
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tik.crt, key: tpm:tik}
    attestation:
      peer:
        local:
          trusted_aks: [{pem: )" + ak_file +
                                      R"(}]
          reference_values: {pcrs: {0: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}}
        pin: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
)" + std::string(with_tpm)));
}

TEST_CASE("trusted_aks PEM files are read at load, other attestation files are not") {
  const test::temp_dir dir;
  const auto d = only_error(load_file(write_config_trusting_ak(dir, "missing-ak.pem")));
  CHECK(d.key == "listeners[0].attestation.peer.local.trusted_aks[0].pem");
  CHECK(contains(d.message, "cannot read " + (dir.path() / "missing-ak.pem").string()));
}

TEST_CASE("a trusted AK file that is too large or not a regular file is refused at its key") {
  const test::temp_dir dir;
  const auto config = [&](const std::string& ak) { return write_config_trusting_ak(dir, ak); };
  SUBCASE("larger than 1 MiB: not read to the end") {
    dir.write("big.pem", std::string(1024 * 1024 + 1, 'A'));
    const auto d = only_error(load_file(config("big.pem")));
    CHECK(d.key == "listeners[0].attestation.peer.local.trusted_aks[0].pem");
    CHECK(contains(d.message, "big.pem: larger than 1 MiB"));
  }
  SUBCASE("a FIFO: refused without waiting for a writer") {
    const auto fifo = dir.path() / "ak.pem";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const auto d = only_error(load_file(config("ak.pem")));
    CHECK(d.key == "listeners[0].attestation.peer.local.trusted_aks[0].pem");
    CHECK(contains(d.message, "cannot read " + fifo.string() + ": not a regular file"));
  }
  SUBCASE("a directory") {
    std::filesystem::create_directory(dir.path() / "ak.d");
    const auto d = only_error(load_file(config("ak.d")));
    CHECK(contains(d.message, "ak.d: it is a directory"));
  }
}

TEST_CASE("a diagnostic prints as file:line:column: key: message") {
  CHECK(to_string({{"a.yaml", 3, 7}, "listeners[1].tls.cert", "must not be empty"}) ==
        "a.yaml:3:7: listeners[1].tls.cert: must not be empty");
  CHECK(to_string({{"a.yaml", 1, 1}, "", "YAML syntax error: x"}) ==
        "a.yaml:1:1: YAML syntax error: x");
}

TEST_CASE("parse_duration accepts a whole number with ms, s, m or h") {
  CHECK(parse_duration("0s") == 0ms);
  CHECK(parse_duration("0ms") == 0ms);
  CHECK(parse_duration("500ms") == 500ms);
  CHECK(parse_duration("10s") == 10s);
  CHECK(parse_duration("5m") == 5min);
  CHECK(parse_duration("1h") == 1h);
  CHECK(parse_duration("007s") == 7s);
  CHECK(parse_duration("9223372036854775807ms") ==
        std::chrono::milliseconds(std::numeric_limits<std::int64_t>::max()));
}

TEST_CASE("parse_duration rejects missing units, garbage and overflow") {
  for (const auto* text :
       {"", "10", "s", "-1s", "+1s", "1.5s", "10 s", " 10s", "10s ", "10sec", "10S", "1d", "10ss",
        "1h30m", "0x10s", "9223372036854775808ms", "2562047788016h", "99999999999999999999999s"}) {
    CAPTURE(text);
    CHECK_FALSE(parse_duration(text).has_value());
  }
  // The largest whole number of hours that fits in int64 milliseconds.
  CHECK(parse_duration("2562047788015h").has_value());
}

TEST_CASE("parse_size accepts binary units") {
  CHECK(parse_size("0B") == 0u);
  CHECK(parse_size("512B") == 512u);
  CHECK(parse_size("16KiB") == 16u * 1024);
  CHECK(parse_size("16k") == 16u * 1024);
  CHECK(parse_size("16K") == 16u * 1024);
  CHECK(parse_size("1MiB") == 1024u * 1024);
  CHECK(parse_size("1M") == 1024u * 1024);
  CHECK(parse_size("2GiB") == 2ull * 1024 * 1024 * 1024);
  CHECK(parse_size("2G") == 2ull * 1024 * 1024 * 1024);
  CHECK(parse_size("18446744073709551615B") == std::numeric_limits<std::uint64_t>::max());
}

TEST_CASE("parse_size rejects missing units, garbage and overflow") {
  for (const auto* text :
       {"", "16", "KiB", "-1KiB", "1.5MiB", "16 KiB", "16KB", "16kb", "16kib", "16Ki", "1T",
        "16KiBx", "18446744073709551616B", "17179869184G", "99999999999999999999999B"}) {
    CAPTURE(text);
    CHECK_FALSE(parse_size(text).has_value());
  }
  CHECK(parse_size("17179869183G").has_value());
}

TEST_CASE("alpn lists the application protocols of either side, most preferred first") {
  const auto r = load(R"(
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: s.crt, key: s.key, alpn: [h2, http/1.1]}}
  - {name: out, mode: outbound, listen: 127.0.0.1:8444, upstream: s.test:443,
     tls: {ca: ca.crt, server_name: s.test, alpn: [http/1.1]}}
)");
  const auto& c = valid(r);
  CHECK(std::get<inbound_tls>(c.listeners.at(0).tls).alpn ==
        std::vector<std::string>{"h2", "http/1.1"});
  CHECK(std::get<outbound_tls>(c.listeners.at(1).tls).alpn == std::vector<std::string>{"http/1.1"});
}

TEST_CASE(
    "an alpn list that is empty, repeats a name or holds a name TLS cannot carry is refused") {
  const auto refused = [](std::string_view list, std::string_view key, std::string_view message) {
    const auto r = load(std::string(R"(
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: s.crt, key: s.key, alpn: )") +
                        std::string(list) + "}}\n");
    const auto d = only_error(r);
    CHECK(d.key == key);
    CHECK(contains(d.message, message));
  };
  refused("[]", "listeners[0].tls.alpn", "at least one protocol");
  refused("[h2, h2]", "listeners[0].tls.alpn[1]", "'h2' is listed twice");
  refused("[\"http 1.1\"]", "listeners[0].tls.alpn[0]",
          "printable ASCII characters without spaces");
  refused("[" + std::string(256, 'a') + "]", "listeners[0].tls.alpn[0]", "1 to 255");
  refused("[\"\"]", "listeners[0].tls.alpn[0]", "");
  refused("h2", "listeners[0].tls.alpn", "");
}

TEST_CASE("multiplex is off unless set, and either side may turn it on") {
  const auto r = load(R"(
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080, multiplex: true,
     tls: {cert: s.crt, key: s.key, alpn: [http/1.1]}}
  - {name: out, mode: outbound, listen: 127.0.0.1:8444, upstream: s.test:443, multiplex: true,
     tls: {ca: ca.crt, server_name: s.test}}
  - {name: plain, mode: outbound, listen: 127.0.0.1:8445, upstream: s.test:443,
     tls: {ca: ca.crt, server_name: s.test}}
)");
  const auto& c = valid(r);
  CHECK(c.listeners.at(0).multiplex);
  CHECK(c.listeners.at(1).multiplex);
  CHECK_FALSE(c.listeners.at(2).multiplex);
}

TEST_CASE("a multiplexing listener refuses an alpn that would confuse a tunnel with h2") {
  const auto outbound = load(R"(
listeners:
  - {name: out, mode: outbound, listen: 127.0.0.1:8444, upstream: s.test:443, multiplex: true,
     tls: {ca: ca.crt, server_name: s.test, alpn: [http/1.1]}}
)");
  const auto out_error = only_error(outbound);
  CHECK(out_error.key == "listeners[0].multiplex");
  CHECK(contains(out_error.message, "negotiates ALPN h2 for its tunnels itself"));
  const auto inbound = load(R"(
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080, multiplex: true,
     tls: {cert: s.crt, key: s.key, alpn: [h2, http/1.1]}}
)");
  const auto in_error = only_error(inbound);
  CHECK(in_error.key == "listeners[0].multiplex");
  CHECK(contains(in_error.message, "remove h2 from tls.alpn"));
  CHECK_FALSE(load(R"(
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080, multiplex: yes-please,
     tls: {cert: s.crt, key: s.key}}
)")
                  .errors.empty());
}

TEST_CASE("the admin endpoints are off unless configured, and on loopback by default") {
  const std::string listener = R"(
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: s.crt, key: s.key}}
)";
  CHECK_FALSE(valid(load(listener)).admin.has_value());
  const auto on_loaded = load("admin: {}\n" + listener);
  const auto& on = valid(on_loaded);
  REQUIRE(on.admin.has_value());
  CHECK(net::to_string(on.admin->listen) == "127.0.0.1:9901");
  CHECK(on.admin->probe_every == 5s);
  const auto set_loaded =
      load("admin: {listen: \"unix:/run/atlsd/admin.sock\", probe_every: 1s}\n" + listener);
  const auto& set = valid(set_loaded);
  CHECK(net::to_string(set.admin->listen) == "unix:/run/atlsd/admin.sock");
  CHECK(set.admin->probe_every == 1s);
  CHECK(valid(load("admin: {listen: 0.0.0.0:9901, allow_non_loopback: true}\n" + listener))
            .admin.has_value());
}

TEST_CASE("an admin listener on a routable address, or probing too often, is refused") {
  const std::string listener = R"(
listeners:
  - {name: in, mode: inbound, listen: 127.0.0.1:8443, upstream: 127.0.0.1:8080,
     tls: {cert: s.crt, key: s.key}}
)";
  const auto exposed = only_error(load("admin: {listen: 0.0.0.0:9901}\n" + listener));
  CHECK(exposed.key == "admin.listen");
  CHECK(contains(exposed.message, "for this host only"));
  const auto fast = only_error(load("admin: {probe_every: 10ms}\n" + listener));
  CHECK(fast.key == "admin.probe_every");
  const auto typo = only_error(load("admin: {listne: 127.0.0.1:1}\n" + listener));
  CHECK(contains(typo.message, "unknown key 'listne'"));
}

}  // namespace atls::config
