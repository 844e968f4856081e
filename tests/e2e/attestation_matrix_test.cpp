// Every role combination of attested TLS between two atlsd sidecars, in both modes and both
// models: the server attests, the client attests, or both, post-handshake or intra-handshake,
// background-check (the relying party's local verifier appraises swtpm evidence) or passport
// (each attester presents an EAR from the Veraison test server, which the relying party checks
// offline). A request crosses only when every attestation the policies ask for passed.
#include <chrono>
#include <string>

#include <doctest/doctest.h>

#include "e2e/attestation_configs.hpp"
#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "e2e/veraison_fixture.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

struct roles {
  bool server_attests = false;
  bool client_attests = false;
};

struct variant {
  bool intra = false;
  bool passport = false;
};

// Two machines with their own swtpm, a Veraison service that endorses both, and the files the
// relying parties trust: each AK (background-check) and Veraison's EAR key (passport).
class matrix {
 public:
  matrix()
      : p_(make_pki(server_dir_)),
        server_tik_(server_dir_, p_, "DNS:server.test", "serverAuth"),
        client_tik_(client_dir_, p_, "DNS:client.test", "clientAuth"),
        veraison_(server_dir_, {&server_tik_, &client_tik_}, server_dir_ / "ear.pem"),
        server_ak_(write_ak(server_dir_, server_tik_, "server-ak.pem")),
        client_ak_(write_ak(server_dir_, client_tik_, "client-ak.pem")) {}

  // Starts the pair, sends one request through it and checks what each side logged.
  void check(roles who, variant how) {
    loopback_server origin(http_responder("attested both ways\n"));
    const auto in_port = free_port();
    const auto out_port = free_port();
    atlsd in(server_dir_, "in", inbound_config(who, how, in_port, origin.port()));
    atlsd out(client_dir_, "out", outbound_config(who, how, out_port, in_port));
    if (how.passport) {
      // The first EAR is fetched at start-up; until then an attester has nothing to present.
      if (who.server_attests) {
        REQUIRE(in.wait_for_log("passport: new attestation result"));
      }
      if (who.client_attests) {
        REQUIRE(out.wait_for_log("passport: new attestation result"));
      }
    }
    // The passports' sessions are deleted after their EARs came back.
    REQUIRE(veraison_.server().wait_for_no_open_session());
    const auto asked = veraison_.server().requests();

    const auto fetched = curl_http(out_port);
    INFO(fetched.err);
    INFO(out.log());
    INFO(in.log());
    CHECK(fetched.out == "attested both ways\n");
    REQUIRE(out.wait_for_log("outcome=ok"));
    REQUIRE(in.wait_for_log("outcome=ok"));
    CHECK(contains(out.log(), "attestation=\"peer=affirming key=sha256:") == who.server_attests);
    CHECK(contains(in.log(), "attestation=\"peer=affirming key=sha256:" + client_tik_.tik_pin()) ==
          who.client_attests);
    if (how.passport) {
      CHECK(veraison_.server().requests() == asked);  // the relying parties called nobody
    }
  }

 private:
  [[nodiscard]] std::string mode_and_model(variant how) const {
    return std::string("    attestation:\n      mode: ") +
           (how.intra ? "intra-handshake" : "post-handshake") +
           "\n      model: " + (how.passport ? "passport" : "background-check") + "\n";
  }

  [[nodiscard]] std::string attester_block(variant how) const {
    return self_block(how.passport ? veraison_.block(8) : "");
  }

  // The relying party's rules for a peer whose AK is in `ak_file`.
  [[nodiscard]] std::string relying_block(variant how, const std::filesystem::path& ak_file,
                                          const std::string& more = "") const {
    if (how.passport) {
      return passport_peer_block({.ear_key = veraison_.ear_key(), .more = more});
    }
    return peer_block({.trusted_ak = trusted_pem(ak_file), .more = more});
  }

  // The server: its TIK when it attests, the PKI's file key otherwise. An attesting client is
  // RA + PKI (its TIK certificate checked against the CA) when both attest, and RA-only with
  // its TIK pinned when only the client does.
  [[nodiscard]] std::string inbound_config(roles who, variant how, std::uint16_t port,
                                           std::uint16_t origin) const {
    std::string tls = who.server_attests
                          ? tik_tls(server_tik_)
                          : "      cert: " + (p_ / "server.crt").string() +
                                "\n      key: " + (p_ / "server.key").string() + "\n";
    if (who.client_attests && who.server_attests) {
      tls += "      client_auth:\n        ca: " + (p_ / "ca.crt").string() + "\n";
    }
    std::string attestation = mode_and_model(how);
    if (who.server_attests) {
      attestation += attester_block(how);
    }
    if (who.client_attests) {
      const std::string pin =
          who.server_attests ? "" : "        pin: [" + client_tik_.tik_pin() + "]\n";
      attestation += relying_block(how, client_ak_, pin);
    }
    return header(who.server_attests ? server_tik_.config() : "") +
           "  - name: in\n    mode: inbound\n    listen: " + local(port) +
           "\n    upstream: " + local(origin) + "\n    tls:\n" + tls + attestation;
  }

  [[nodiscard]] std::string outbound_config(roles who, variant how, std::uint16_t port,
                                            std::uint16_t server) const {
    std::string attestation = mode_and_model(how);
    if (who.client_attests) {
      attestation += attester_block(how);
    }
    if (who.server_attests) {
      attestation += relying_block(how, server_ak_);
    }
    const std::string client_key = who.client_attests ? tik_tls(client_tik_) : "";
    return header(who.client_attests ? client_tik_.config() : "") +
           outbound("out", port, local(server), p_, "server.test", attestation, client_key);
  }

  const temp_dir server_dir_;
  const temp_dir client_dir_;
  const pki p_;
  const tpm_identity server_tik_;
  const tpm_identity client_tik_;
  veraison_fixture veraison_;
  const std::filesystem::path server_ak_;
  const std::filesystem::path client_ak_;
};

// One test case per role combination, so that each stays well inside the per-test time limit
// (under the sanitizers too); the subcases run the four mode × model variants.
void run_variants(roles who) {
  variant how;
  SUBCASE("post-handshake, background-check") {
    how = {.intra = false, .passport = false};
  }
  SUBCASE("post-handshake, passport") {
    how = {.intra = false, .passport = true};
  }
  SUBCASE("intra-handshake, background-check") {
    how = {.intra = true, .passport = false};
  }
  SUBCASE("intra-handshake, passport") {
    how = {.intra = true, .passport = true};
  }
  matrix pair;
  pair.check(who, how);
}

TEST_CASE("the server attests to the client, in each mode and model") {
  run_variants({.server_attests = true, .client_attests = false});
}

TEST_CASE("the client attests to the server, in each mode and model (RA-only, pinned)") {
  run_variants({.server_attests = false, .client_attests = true});
}

TEST_CASE("both sides attest to each other, in each mode and model (RA + PKI)") {
  run_variants({.server_attests = true, .client_attests = true});
}

}  // namespace
}  // namespace atls::test
