// Every role combination of attested TLS between two atlsd sidecars, in both modes and both
// models: the server attests, the client attests, or both, post-handshake or intra-handshake,
// background-check (the relying party's local verifier appraises swtpm evidence) or passport
// (each attester presents an EAR from the Veraison test server, which the relying party checks
// offline). A request crosses only when every attestation the policies ask for passed.
#include <chrono>
#include <fstream>
#include <optional>
#include <string>

#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/pem.h>

#include "atls/common/openssl_ptr.hpp"
#include "atls/verify/jose.hpp"

#include "e2e/configs.hpp"
#include "e2e/tpm_identity.hpp"
#include "support/daemon.hpp"
#include "support/evidence_builder.hpp"
#include "support/loopback.hpp"
#include "support/veraison_server.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

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
        client_tik_(client_dir_, p_, "DNS:client.test", "clientAuth") {
    const auto server = server_tik_.veraison_endorsement(server_dir_);
    const auto client = client_tik_.veraison_endorsement(client_dir_);
    verify::pcr_values zeros;
    for (std::uint8_t index = 0; index < 8; ++index) {
      zeros.values[index] = verify::bytes(32, 0);
    }
    verifier_.emplace(veraison_server_options{
        .trust_anchors = {{server.instance_id, server.ak_spki_der},
                          {client.instance_id, client.ak_spki_der}},
        .reference = zeros,
        .check_nonce = true,
    });
    const auto published = verify::parse_jwk(verifier_->ear_key_jwk());
    REQUIRE(published.has_value());
    std::ofstream(server_dir_ / "ear.pem") << public_pem_of(published->key.get());
    std::ofstream(server_dir_ / "server-ak.pem") << server_tik_.ak_public_pem;
    std::ofstream(server_dir_ / "client-ak.pem") << client_tik_.ak_public_pem;
  }

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
    const auto asked = verifier_->requests();

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
      CHECK(verifier_->requests() == asked);  // the relying parties called nobody
    }
  }

 private:
  [[nodiscard]] std::string mode_and_model(variant how) const {
    return std::string("    attestation:\n      mode: ") +
           (how.intra ? "intra-handshake" : "post-handshake") +
           "\n      model: " + (how.passport ? "passport" : "background-check") + "\n";
  }

  [[nodiscard]] std::string self_block(variant how) const {
    std::string out = "      self:\n        pcrs: [0, 1, 2, 3, 4, 5, 6, 7]\n";
    if (how.passport) {
      out += "        veraison:\n          urls: [" + verifier_->base_url() +
             "]\n          ear_key: " + (server_dir_ / "ear.pem").string() + "\n";
    }
    return out;
  }

  // The relying party's rules for a peer whose AK is in `ak_file`.
  [[nodiscard]] std::string peer_block(variant how, const std::string& ak_file,
                                       const std::string& more = "") const {
    if (how.passport) {
      return "      peer:\n        passport_keys: [" + (server_dir_ / "ear.pem").string() +
             "]\n        accept: {minimum_status: affirming, max_age: 5m}\n" + more;
    }
    std::string pcrs;
    for (int i = 0; i < 8; ++i) {
      pcrs += std::string(i == 0 ? "" : ", ") + std::to_string(i) + ": " + std::string(64, '0');
    }
    return "      peer:\n        verifier: local\n        local:\n          trusted_aks: [{pem: " +
           (server_dir_ / ak_file).string() + "}]\n          reference_values: {bank: sha256, " +
           "pcrs: {" + pcrs + "}}\n        accept: {minimum_status: affirming}\n" + more;
  }

  // The server: its TIK when it attests, the PKI's file key otherwise. An attesting client is
  // RA + PKI (its TIK certificate checked against the CA) when both attest, and RA-only with
  // its TIK pinned when only the client does.
  [[nodiscard]] std::string inbound_config(roles who, variant how, std::uint16_t port,
                                           std::uint16_t origin) const {
    std::string tls = who.server_attests
                          ? "      cert: " + server_tik_.cert.string() + "\n      key: tpm:tik\n"
                          : "      cert: " + (p_ / "server.crt").string() +
                                "\n      key: " + (p_ / "server.key").string() + "\n";
    if (who.client_attests && who.server_attests) {
      tls += "      client_auth:\n        ca: " + (p_ / "ca.crt").string() + "\n";
    }
    std::string attestation = mode_and_model(how);
    if (who.server_attests) {
      attestation += self_block(how);
    }
    if (who.client_attests) {
      const std::string pin =
          who.server_attests ? "" : "        pin: [" + client_tik_.tik_pin() + "]\n";
      attestation += peer_block(how, "client-ak.pem", pin);
    }
    return header(who.server_attests ? server_tik_.config() : "") +
           "  - name: in\n    mode: inbound\n    listen: " + local(port) +
           "\n    upstream: " + local(origin) + "\n    tls:\n" + tls + attestation;
  }

  [[nodiscard]] std::string outbound_config(roles who, variant how, std::uint16_t port,
                                            std::uint16_t server) const {
    std::string attestation = mode_and_model(how);
    if (who.client_attests) {
      attestation += self_block(how);
    }
    if (who.server_attests) {
      attestation += peer_block(how, "server-ak.pem");
    }
    const std::string client_key =
        who.client_attests ? "      cert: " + client_tik_.cert.string() + "\n      key: tpm:tik\n"
                           : "";
    return header(who.client_attests ? client_tik_.config() : "") +
           outbound("out", port, local(server), p_, "server.test", attestation, client_key);
  }

  const temp_dir server_dir_;
  const temp_dir client_dir_;
  const pki p_;
  const tpm_identity server_tik_;
  const tpm_identity client_tik_;
  std::optional<veraison_server> verifier_;
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
