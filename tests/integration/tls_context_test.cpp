// Loading a listener's certificate, key and CA files: what an operator sees when one is wrong.
#include <chrono>
#include <filesystem>
#include <string>

#include <doctest/doctest.h>

#include "atls/tls/context.hpp"
#include "atls/tls/error.hpp"

#include "support/daemon.hpp"
#include "support/process.hpp"
#include <sys/stat.h>

namespace atls::tls {
namespace {

using namespace std::chrono_literals;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A FIFO where a file should be: reading it would wait for a writer that never comes.
std::filesystem::path fifo(const test::temp_dir& dir, const std::string& name) {
  const auto path = dir.path() / name;
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  return path;
}

TEST_CASE("a certificate, key or CA file that is a FIFO is refused at once, naming it") {
  const test::temp_dir dir;
  const auto p = test::make_pki(dir);
  const auto started = std::chrono::steady_clock::now();
  SUBCASE("the certificate chain") {
    const auto path = fifo(dir, "server.crt");
    const auto r = context::make_server({.cert_chain = path, .private_key = p / "server.key"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == errc::certificate_unusable);
    CHECK(r.error().detail == "cannot read " + path.string() + ": not a regular file");
  }
  SUBCASE("the private key") {
    const auto path = fifo(dir, "server.key");
    const auto r = context::make_server({.cert_chain = p / "server.crt", .private_key = path});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == errc::private_key_unusable);
    CHECK(r.error().detail == "cannot read " + path.string() + ": not a regular file");
  }
  SUBCASE("the CA bundle") {
    const auto path = fifo(dir, "ca.crt");
    const auto r = context::make_client({.ca = path, .server_name = "server.test"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == errc::ca_unusable);
    CHECK(r.error().detail == "cannot read " + path.string() + ": not a regular file");
  }
  CHECK(std::chrono::steady_clock::now() - started < 5s);
}

TEST_CASE("a certificate file larger than 1 MiB is refused without being parsed") {
  const test::temp_dir dir;
  const auto p = test::make_pki(dir);
  const auto big = dir.write("big.crt", std::string(1024 * 1024 + 1, 'A'));
  const auto r = context::make_server({.cert_chain = big, .private_key = p / "server.key"});
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == errc::certificate_unusable);
  CHECK(contains(r.error().detail, "larger than 1 MiB"));
}

TEST_CASE("an encrypted private key is refused, never prompted for") {
  const test::temp_dir dir;
  const auto p = test::make_pki(dir);
  const auto encrypted = dir.path() / "encrypted.key";
  const auto made = test::run({"openssl", "pkey", "-in", (p / "server.key").string(), "-aes256",
                               "-passout", "pass:secret", "-out", encrypted.string()},
                              10s);
  REQUIRE(made.exit_code == 0);
  const auto r = context::make_server({.cert_chain = p / "server.crt", .private_key = encrypted});
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == errc::private_key_unusable);
  CHECK(contains(r.error().detail, encrypted.string()));
}

TEST_CASE("a CA file with no certificate in it is refused, naming it") {
  const test::temp_dir dir;
  const auto p = test::make_pki(dir);
  SUBCASE("empty") {
    const auto path = dir.write("empty.crt", "");
    const auto r = context::make_client({.ca = path, .server_name = "server.test"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == errc::ca_unusable);
    CHECK(contains(r.error().detail, path.string()));
  }
  SUBCASE("a private key instead") {
    const auto r = context::make_client({.ca = p / "ca.key", .server_name = "server.test"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == errc::ca_unusable);
    CHECK(contains(r.error().detail, (p / "ca.key").string()));
  }
}

}  // namespace
}  // namespace atls::tls
