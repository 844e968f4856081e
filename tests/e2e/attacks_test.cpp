// The attack suite (issue 10, item 1): every attack on attested TLS that atlsd claims to stop,
// mounted against a real atlsd relying party, which must refuse it and say why twice: in its
// audit log line (the outcome word and its reason) and in its metrics
// (atlsd_attestation_outcomes_total{listener, reason} from the admin listener's /metrics).
//
// The attacker is whatever each attack needs: another atlsd (a plain server, a server whose TIK
// certificate names another host), `openssl s_client`, a man in the middle that rewrites the
// ClientHello (hello_stripper.hpp), a Veraison service that issues forged EARs
// (veraison_faults), or atlsd's own listeners run in the test process with a rigged attester or
// TLS identity (attacker_sidecar.hpp) where the attack needs something no config allows.
// tests/README.md has the table: attack, test, expected reason.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "atls/attested/reason.hpp"
#include "atls/tls/code_points.hpp"

#include "e2e/admin_client.hpp"
#include "e2e/attacker_sidecar.hpp"
#include "e2e/attestation_configs.hpp"
#include "e2e/authenticator_replay.hpp"
#include "e2e/configs.hpp"
#include "e2e/hello_stripper.hpp"
#include "e2e/passport_forger.hpp"
#include "e2e/tpm_identity.hpp"
#include "e2e/veraison_fixture.hpp"
#include "support/daemon.hpp"
#include "support/loopback.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view intra_handshake = "      mode: intra-handshake\n";
constexpr std::string_view post_handshake = "      mode: post-handshake\n";

// The reasons the relying party's audit line gives (reason="..."), as far as the tests pin them.
constexpr std::string_view key_mismatch_why = "attested key is not the key the peer presents";
constexpr std::string_view bad_signature_why = "token signature does not verify with the key";
constexpr std::string_view alg_none_why = "token algorithm is not supported";
constexpr std::string_view expired_why = "attestation result has expired";

std::string mode_line(bool intra) {
  return std::string(intra ? intra_handshake : post_handshake);
}

// The first line of `log` that contains `part`, or "" when none does.
std::string line_with(const std::string& log, std::string_view part) {
  const auto at = log.find(part);
  if (at == std::string::npos) {
    return {};
  }
  const auto start = log.rfind('\n', at);
  const auto from = start == std::string::npos ? 0 : start + 1;
  return log.substr(from, log.find('\n', at) - from);
}

// How many attestation decisions `listener` of the daemon whose admin listener is on `admin`
// has counted under `reason` ("ok" for accepted).
double outcomes(std::uint16_t admin, std::string_view listener, std::string_view reason) {
  return scrape(admin)
      .value_of("atlsd_attestation_outcomes_total",
                {{"listener", std::string(listener)}, {"reason", std::string(reason)}})
      .value_or(0);
}

// How many connections `listener` closed with `outcome` (atlsd_connections_total).
double connections(std::uint16_t admin, std::string_view listener, std::string_view outcome) {
  return scrape(admin)
      .value_of("atlsd_connections_total",
                {{"listener", std::string(listener)}, {"outcome", std::string(outcome)}})
      .value_or(0);
}

// An inbound atlsd listener `in` (TLS key: the TIK of `tik`) that attests as `attestation` says.
std::string server_config(const tpm_identity& tik, std::uint16_t port, std::uint16_t origin,
                          const std::string& attestation) {
  return header(tik.config()) + attesting_inbound(port, origin, tik, {.attestation = attestation});
}

// The `trusted_aks` entries (inside the flow sequence's braces) for every AK in `pems`.
std::string trusted_aks(const std::vector<std::filesystem::path>& pems) {
  std::string out;
  for (const auto& pem : pems) {
    out += (out.empty() ? "" : "}, {") + trusted_pem(pem);
  }
  return out;
}

// The relying party of every attack: an outbound atlsd whose listener `out` relies on the
// server at `server_port` as `attestation` says (lines at indent 6: mode, model, peer), with
// an admin listener for its metrics. curl is the workload behind it.
struct relying_client {
  relying_client(const temp_dir& dir, const pki& p, std::uint16_t server_port,
                 const std::string& attestation, const std::string& server_name = "server.test")
      : daemon(
            dir, "out",
            header(admin_block(admin)) + outbound("out", port, local(server_port), p, server_name,
                                                  "    attestation:\n" + attestation)) {}

  // One request through the client, which must be refused: nothing comes back, the connection's
  // log line says "attestation <reason>", the audit line of the peer's attestation carries
  // outcome=<reason> and `why` (part of its reason="..."), and the metric counted exactly one
  // decision under <reason> and none accepted. Returns the audit line.
  std::string check_refused(std::string_view reason, std::string_view why = "") const {
    const auto fetched = curl_http(port);
    INFO(daemon.log());
    CHECK(fetched.out.empty());
    const auto closed = "outcome=rejected reason=\"attestation " + std::string(reason) + ": ";
    CHECK(daemon.wait_for_log(closed));
    const auto audit = "attestation listener=out ";
    REQUIRE(daemon.wait_for_log(audit));
    const auto line = line_with(daemon.log(), " outcome=" + std::string(reason) + " ");
    INFO(line);
    CHECK(contains(line, audit));
    CHECK(contains(line, " attester=peer round=0 "));
    CHECK(contains(line, " reason=\"" + std::string(why)));
    CHECK(outcomes(admin, "out", reason) == 1);
    CHECK(outcomes(admin, "out", "ok") == 0);
    return line;
  }

  const std::uint16_t admin = free_port();
  const std::uint16_t port = free_port();
  atlsd daemon;
};

// The server's machine under attack: a swtpm with its TIK certified as server.test by the test
// CA, an HTTP origin that only an accepted connection reaches, and the port its (honest or
// rigged) sidecar listens on.
struct server_machine {
  server_machine() : p(make_pki(dir)), tik(dir, p, "DNS:server.test", "serverAuth") {}

  [[nodiscard]] std::filesystem::path ak_pem() const { return write_ak(dir, tik, "ak.pem"); }

  // The attacker's sidecar on this machine, attesting with `attestation`, each listener rigged
  // by `change`.
  [[nodiscard]] std::unique_ptr<attacker_sidecar> rigged(
      const std::string& attestation, const attacker_sidecar::rig& change) const {
    return std::make_unique<attacker_sidecar>(
        dir, "attacker", server_config(tik, in_port, origin.port(), attestation), change);
  }

  const temp_dir dir;
  const pki p;
  const tpm_identity tik;
  loopback_server origin{http_responder("attested\n")};
  const std::uint16_t in_port = free_port();
};

// A rig that gives every listener a rigged_attester with `o`, kept in `out`.
attacker_sidecar::rig rig_attester(std::shared_ptr<rigged_attester>& out,
                                   rigged_attester::options o) {
  return [&out, o](proxy::listener_options& listener, const boost::asio::any_io_executor&) {
    out = std::make_shared<rigged_attester>(listener.attestation->self->attester, o);
    swap_attester(listener, out);
  };
}

// ---------------------------------------------------------------------------------------------
// Relay and replay.

TEST_CASE(
    "evidence relayed from another machine's TPM into a connection is refused as key_mismatch") {
  bool intra = false;
  SUBCASE("post-handshake") {
    intra = false;
  }
  SUBCASE("intra-handshake") {
    intra = true;
  }
  server_machine attacker;
  // The other machine: a genuine TPM whose AK the relying party trusts too. The attacker
  // commands it (compromised software on it) and has it quote whatever nonce the attacker is
  // asked, over the binder of the attacker's own connection; only its TIK is not the key that
  // signs that connection.
  const temp_dir other_dir;
  const tpm_identity other(other_dir, attacker.p, "DNS:other.test", "serverAuth");
  const auto other_ak = write_ak(attacker.dir, other, "other-ak.pem");
  std::shared_ptr<rigged_attester> rigged;
  const auto sidecar = attacker.rigged(
      mode_line(intra) + self_block(),
      rig_attester(rigged, {.evidence_from = tpm_attester_at(other.simulator.tcti())}));
  const relying_client client(
      attacker.dir, attacker.p, attacker.in_port,
      mode_line(intra) + peer_block({.trusted_ak = trusted_aks({attacker.ak_pem(), other_ak})}));

  const auto line = client.check_refused("key_mismatch", key_mismatch_why);
  // The evidence appraised (its nonce is this connection's binder): it names the other TIK.
  CHECK(contains(line, " status=affirming "));
  CHECK(contains(line, " key=sha256:" + other.tik_pin()));
  CHECK(rigged->asked() == 1);
  CHECK(attacker.origin.accepted() == 0);
}

TEST_CASE(
    "evidence replayed from an earlier connection, by the same machine with the same TPM key, "
    "is refused as wrong_nonce") {
  bool intra = false;
  SUBCASE("post-handshake") {
    intra = false;
  }
  SUBCASE("intra-handshake") {
    intra = true;
  }
  server_machine attacker;
  std::shared_ptr<rigged_attester> rigged;
  const auto sidecar = attacker.rigged(mode_line(intra) + self_block(),
                                       rig_attester(rigged, {.replay_first = true}));
  const relying_client client(
      attacker.dir, attacker.p, attacker.in_port,
      mode_line(intra) + peer_block({.trusted_ak = trusted_pem(attacker.ak_pem())}));

  // Connection 1 is honest, and accepted: the evidence is genuine and fresh.
  INFO(client.daemon.log());
  const auto first = curl_http(client.port);
  REQUIRE(first.out == "attested\n");
  REQUIRE(client.daemon.wait_for_log("outcome=ok"));
  CHECK(outcomes(client.admin, "out", "ok") == 1);

  // Connection 2 gets connection 1's evidence: genuine, the right TPM, the right key, but
  // bound to connection 1's binder.
  const auto fetched = curl_http(client.port);
  CHECK(fetched.out.empty());
  CHECK(client.daemon.wait_for_log("outcome=rejected reason=\"attestation wrong_nonce: "));
  const auto line = line_with(client.daemon.log(), " outcome=wrong_nonce ");
  INFO(line);
  CHECK(contains(line, "attestation listener=out "));
  CHECK(contains(line, " attester=peer round=0 "));
  CHECK(outcomes(client.admin, "out", "wrong_nonce") == 1);
  CHECK(outcomes(client.admin, "out", "ok") == 1);
  CHECK(rigged->asked() == 2);
  CHECK(attacker.origin.accepted() == 1);
}

TEST_CASE(
    "an exported authenticator replayed from an earlier connection is refused as "
    "bad_authenticator") {
  server_machine genuine;
  const atlsd in(genuine.dir, "in",
                 server_config(genuine.tik, genuine.in_port, genuine.origin.port(), self_block()));
  // The attacker's own connection to the genuine server: an authenticator that verifies there.
  auto captured = capture_authenticator(genuine.in_port, genuine.p);
  // The attacker passes TLS as server.test (a CA certificate for it), and answers the victim's
  // request with the genuine server's authenticator, TIK signature, evidence and all.
  const authenticator_replayer attacker(genuine.p, std::move(captured));
  const relying_client client(genuine.dir, genuine.p, attacker.port(),
                              peer_block({.trusted_ak = trusted_pem(genuine.ak_pem())}));

  // Its certificate_request_context is the attacker's request's, not the victim's.
  client.check_refused("bad_authenticator", "authenticator does not answer this request");
  CHECK(attacker.replayed() == 1);
  // The verdict told the attacker so.
  for (int i = 0; i < 100 && attacker.last_verdict() < 0; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  CHECK(attacker.last_verdict() == static_cast<int>(attested::reason::bad_authenticator));
  CHECK(genuine.origin.accepted() == 0);
}

TEST_CASE("evidence over a nonce other than this connection's binder is refused as wrong_nonce") {
  bool intra = false;
  SUBCASE("post-handshake") {
    intra = false;
  }
  SUBCASE("intra-handshake") {
    intra = true;
  }
  server_machine attacker;
  std::shared_ptr<rigged_attester> rigged;
  // The TPM quotes the binder with its last bit flipped: a nonce the attacker chose.
  const auto sidecar = attacker.rigged(mode_line(intra) + self_block(),
                                       rig_attester(rigged, {.nonce = [](attest::bytes nonce) {
                                                      nonce.back() ^= 0x01;
                                                      return nonce;
                                                    }}));
  const relying_client client(
      attacker.dir, attacker.p, attacker.in_port,
      mode_line(intra) + peer_block({.trusted_ak = trusted_pem(attacker.ak_pem())}));

  client.check_refused("wrong_nonce", "extraData differs from the expected challenge");
  CHECK(rigged->asked() == 1);
  CHECK(attacker.origin.accepted() == 0);
}

// ---------------------------------------------------------------------------------------------
// Tampering and trust.

TEST_CASE("evidence with a tampered quote byte is refused as verifier_refused") {
  rigged_attester::options tamper;
  std::string why = "signature does not verify with the attestation key";
  SUBCASE("a byte of the quoted PCR digest") {
    // The quote's TPMS_ATTEST ends with the TPMS_QUOTE_INFO's pcrDigest (TPM 2.0 Part 2
    // §10.12.1): the attacker claims other PCR values under the AK's signature.
    tamper.tamper = [](attest::parsec_tpm_evidence& e) { e.attest_info.back() ^= 0x01; };
  }
  SUBCASE("a byte of the quote's signature") {
    tamper.tamper = [](attest::parsec_tpm_evidence& e) { e.pat_sig.back() ^= 0x01; };
  }
  SUBCASE("a byte of the certified key's public area") {
    // The last byte of the TIK's ECC point, which the AK's certification covers by name.
    tamper.tamper = [](attest::parsec_tpm_evidence& e) { e.pub_area.back() ^= 0x01; };
    why = "certified name is not the name of pubArea";
  }
  server_machine attacker;
  std::shared_ptr<rigged_attester> rigged;
  const auto sidecar = attacker.rigged(self_block(), rig_attester(rigged, tamper));
  const relying_client client(attacker.dir, attacker.p, attacker.in_port,
                              peer_block({.trusted_ak = trusted_pem(attacker.ak_pem())}));

  client.check_refused("verifier_refused", why);
  CHECK(attacker.origin.accepted() == 0);
}

TEST_CASE(
    "evidence signed by an AK that is not in the trusted list is refused as verifier_refused") {
  server_machine server;
  const temp_dir trusted_dir;
  const tpm_identity trusted(trusted_dir, server.p, "DNS:server.test", "serverAuth");
  // An honest server: it is its AK that the relying party does not trust.
  const atlsd in(server.dir, "in",
                 server_config(server.tik, server.in_port, server.origin.port(), self_block()));
  const relying_client client(
      server.dir, server.p, server.in_port,
      peer_block({.trusted_ak = trusted_pem(write_ak(server.dir, trusted, "trusted-ak.pem"))}));

  client.check_refused("verifier_refused", "evidence is not signed by a trusted attestation key");
  CHECK(server.origin.accepted() == 0);
}

TEST_CASE("a TIK certificate whose key differs from the attested key is refused as key_mismatch") {
  bool intra = false;
  SUBCASE("post-handshake") {
    intra = false;
  }
  SUBCASE("intra-handshake") {
    intra = true;
  }
  server_machine attacker;
  std::shared_ptr<rigged_attester> rigged;
  // The certificate is the CA's for server.test, its key a software key; the TPM's evidence,
  // over this connection's binder, certifies the TIK. atlsd's config refuses this pairing
  // (`self` needs tls.key: tpm:tik), so the attacker rigs it.
  const auto sidecar = attacker.rigged(
      mode_line(intra) + self_block(),
      [&](proxy::listener_options& listener, const boost::asio::any_io_executor&) {
        rigged = std::make_shared<rigged_attester>(
            listener.attestation->self->attester,
            rigged_attester::options{.tls_key_file = attacker.p / "server.key"});
        swap_attester(listener, rigged);
        swap_tls_identity(listener, attacker.p / "server.crt", attacker.p / "server.key");
      });
  const relying_client client(
      attacker.dir, attacker.p, attacker.in_port,
      mode_line(intra) + peer_block({.trusted_ak = trusted_pem(attacker.ak_pem())}));

  const auto line = client.check_refused("key_mismatch", key_mismatch_why);
  CHECK(contains(line, " key=sha256:" + attacker.tik.tik_pin()));
  CHECK(attacker.origin.accepted() == 0);
}

// ---------------------------------------------------------------------------------------------
// Forged attestation results: the verifier's EAR in background-check mode, and passports.

TEST_CASE("an EAR that is forged, expired, signed with another key or unsigned is refused") {
  std::string reason = "verifier_refused";
  std::string why(bad_signature_why);
  const auto forge = [](veraison_faults& faults, std::string_view which) {
    if (which == "forged") {
      faults.tampered_ear = true;
    } else if (which == "expired") {
      faults.expired_ear = true;
    } else if (which == "another key") {
      faults.sign_with_wrong_key = true;
    } else {
      faults.unsigned_ear = true;
    }
  };
  std::string which;
  SUBCASE("payload changed after signing") {
    which = "forged";
  }
  SUBCASE("expired") {
    which = "expired";
    reason = "ear_expired";
    why = expired_why;
  }
  SUBCASE("signed with another key") {
    which = "another key";
  }
  SUBCASE("alg none") {
    which = "none";
    why = alg_none_why;
  }
  server_machine server;
  veraison_fixture veraison(server.dir, {&server.tik}, server.dir / "veraison-ear.pem");
  forge(veraison.server().faults(), which);
  const atlsd in(server.dir, "in",
                 server_config(server.tik, server.in_port, server.origin.port(), self_block()));
  const relying_client client(server.dir, server.p, server.in_port,
                              "      peer:\n        verifier: veraison\n" + veraison.block(8) +
                                  "        accept: {minimum_status: affirming}\n");

  client.check_refused(reason, why);
  CHECK(veraison.server().requests() > 0);
  CHECK(server.origin.accepted() == 0);
}

// Forged passports: the attester's own EAR, presented in the handshake or the authenticator.

// The attacker presents a passport forged as each subcase says, in mode `intra` or not.
void check_forged_passport(bool intra) {
  passport_forgery how = passport_forgery::none;
  std::string reason = "verifier_refused";
  std::string why(bad_signature_why);
  SUBCASE("genuine (the control): accepted") {
    how = passport_forgery::none;
  }
  SUBCASE("payload changed after signing") {
    how = passport_forgery::tampered;
  }
  SUBCASE("expired") {
    how = passport_forgery::expired;
    reason = "ear_expired";
    why = expired_why;
  }
  SUBCASE("signed with another key") {
    how = passport_forgery::another_key;
  }
  SUBCASE("alg none") {
    how = passport_forgery::alg_none;
    why = alg_none_why;
  }
  server_machine attacker;
  passport_issuer issuer(attacker.dir / "passport-key.pem");
  const std::string passport = mode_line(intra) + "      model: passport\n";
  // The config needs a Veraison for the passport it starts; the rig replaces that passport with
  // one whose "verifier" is the forger, so this one is never reached.
  const auto unused_veraison =
      "        veraison:\n          urls: [http://127.0.0.1:" + std::to_string(free_port()) +
      "]\n          ear_key: " + issuer.trusted_key_pem().string() + "\n";
  const auto sidecar = attacker.rigged(
      passport + self_block(unused_veraison),
      [&](proxy::listener_options& listener, const boost::asio::any_io_executor& executor) {
        issuer.rig(listener, executor, how);
      });
  for (int i = 0; i < 200 && !issuer.presenting(); ++i) {
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(issuer.presenting());
  const relying_client client(
      attacker.dir, attacker.p, attacker.in_port,
      passport + passport_peer_block({.ear_key = issuer.trusted_key_pem()}));

  if (how == passport_forgery::none) {
    CHECK(curl_http(client.port).out == "attested\n");
    CHECK(client.daemon.wait_for_log("outcome=ok"));
    CHECK(outcomes(client.admin, "out", "ok") == 1);
    return;
  }
  const auto line = client.check_refused(reason, why);
  CHECK(contains(line, " model=passport "));
  CHECK(attacker.origin.accepted() == 0);
}

TEST_CASE(
    "a passport that is forged, expired, signed with another key or unsigned is refused "
    "(post-handshake)") {
  check_forged_passport(false);
}

TEST_CASE(
    "a passport that is forged, expired, signed with another key or unsigned is refused "
    "(intra-handshake)") {
  check_forged_passport(true);
}

// ---------------------------------------------------------------------------------------------
// Downgrade.

TEST_CASE(
    "a server that does not attest, to a client whose policy requires it, is refused as "
    "attestation_required") {
  bool intra = false;
  SUBCASE("post-handshake") {
    intra = false;
  }
  SUBCASE("intra-handshake") {
    intra = true;
  }
  server_machine server;
  // A plain TLS server with the CA's certificate for server.test: what a downgrade leaves.
  const atlsd in(server.dir, "in",
                 header() + inbound("in", server.in_port, local(server.origin.port()), server.p));
  const relying_client client(
      server.dir, server.p, server.in_port,
      mode_line(intra) + peer_block({.trusted_ak = trusted_pem(server.ak_pem())}));

  const auto fetched = curl_http(client.port);
  INFO(client.daemon.log());
  CHECK(fetched.out.empty());
  CHECK(client.daemon.wait_for_log("outcome=rejected reason=\"attestation attestation_required: "));
  const auto line = line_with(client.daemon.log(), " outcome=attestation_required ");
  INFO(line);
  CHECK(contains(line, "attestation listener=out "));
  CHECK(outcomes(client.admin, "out", "attestation_required") == 1);
  CHECK(outcomes(client.admin, "out", "ok") == 0);
}

TEST_CASE(
    "a client that offers no attestation, to a server whose policy requires it, is refused "
    "with the attestation_required alert") {
  bool intra = false;
  SUBCASE("post-handshake") {
    intra = false;
  }
  SUBCASE("intra-handshake") {
    intra = true;
  }
  server_machine server;
  const auto admin = free_port();
  const atlsd in(
      server.dir, "in",
      header(admin_block(admin)) +
          inbound("in", server.in_port, local(server.origin.port()), server.p,
                  "    attestation:\n" + mode_line(intra) +
                      peer_block({.trusted_ak = trusted_pem(server.ak_pem()),
                                  .more = "        pin: [" + server.tik.tik_pin() + "]\n"})));
  const auto hello = run({"openssl", "s_client", "-connect", local(server.in_port), "-tls1_3",
                          "-servername", "server.test", "-CAfile", (server.p / "ca.crt").string()},
                         15s);
  INFO(hello.err);
  INFO(in.log());
  CHECK(hello.exit_code != 0);
  CHECK(contains(hello.err, "alert number 225"));
  CHECK(in.wait_for_log("outcome=rejected reason=\"attestation attestation_required: "));
  const auto line = line_with(in.log(), " outcome=attestation_required ");
  INFO(line);
  CHECK(contains(line, "attestation listener=in "));
  CHECK(outcomes(admin, "in", "attestation_required") == 1);
  CHECK(server.origin.accepted() == 0);
}

// A man in the middle strips the attestation offer from the ClientHello between an honest
// attesting server and a client that requires its attestation. The server, offered nothing,
// would serve plain TLS; but the ClientHello is in the transcript from which TLS 1.3 derives the
// handshake keys (RFC 8446 §7.1), so the client cannot even decrypt the server's
// EncryptedExtensions. The handshake fails as tampered (bad_record_mac), which is what the log
// and the metrics must say: no attestation was ever negotiated or decided.
void check_stripped_offer(bool intra) {
  server_machine server;
  const tls::attestation_code_points points;
  const atlsd in(server.dir, "in",
                 server_config(server.tik, server.in_port, server.origin.port(),
                               mode_line(intra) + self_block()));
  const hello_stripper mitm(server.in_port, intra ? points.remote_attestation_extension
                                                  : points.post_handshake_extension);
  const relying_client client(
      server.dir, server.p, mitm.port(),
      mode_line(intra) + peer_block({.trusted_ak = trusted_pem(server.ak_pem())}));

  const auto fetched = curl_http(client.port);
  INFO(client.daemon.log());
  INFO(in.log());
  CHECK(fetched.out.empty());
  CHECK(mitm.stripped() == 1);
  // The server saw a ClientHello without the offer and was refused by the client's alert.
  CHECK(in.wait_for_log("peer sent alert 20 (bad record mac)"));
  REQUIRE(client.daemon.wait_for_log("connection closed listener=out "));
  const auto closed = line_with(client.daemon.log(), "connection closed listener=out ");
  INFO(closed);
  CHECK(contains(closed, "outcome=error reason=\"tls handshake: "));
  CHECK(contains(closed, "bad record mac"));
  CHECK(connections(client.admin, "out", "error") == 1);
  CHECK(outcomes(client.admin, "out", "ok") == 0);
  CHECK(outcomes(client.admin, "out", "attestation_required") == 0);
  CHECK_FALSE(contains(client.daemon.log(), "attestation listener=out "));
  CHECK(server.origin.accepted() == 0);
}

TEST_CASE(
    "a man in the middle who strips the attestation offer from the ClientHello breaks the "
    "handshake (post-handshake)") {
  check_stripped_offer(false);
}

// The client must report the broken handshake, not blame the server for not attesting: the
// offer never reached it.
TEST_CASE(
    "a man in the middle who strips the attestation offer from the ClientHello breaks the "
    "handshake (intra-handshake)") {
  check_stripped_offer(true);
}

// ---------------------------------------------------------------------------------------------
// RA + PKI.

TEST_CASE(
    "a server with the right attestation but a certificate for another host name is refused "
    "in the TLS handshake") {
  bool intra = false;
  SUBCASE("post-handshake") {
    intra = false;
  }
  SUBCASE("intra-handshake") {
    intra = true;
  }
  const temp_dir dir;
  const auto p = make_pki(dir);
  // A genuine TPM and a genuine CA-issued TIK certificate, but for other.test.
  const tpm_identity tik(dir, p, "DNS:other.test", "serverAuth");
  loopback_server origin(http_responder("must not be seen\n"));
  const auto in_port = free_port();
  const atlsd in(dir, "in",
                 server_config(tik, in_port, origin.port(), mode_line(intra) + self_block()));
  const relying_client client(
      dir, p, in_port,
      mode_line(intra) + peer_block({.trusted_ak = trusted_pem(write_ak(dir, tik, "ak.pem"))}));

  const auto fetched = curl_http(client.port);
  INFO(client.daemon.log());
  INFO(in.log());
  CHECK(fetched.out.empty());
  CHECK(client.daemon.wait_for_log("outcome=rejected reason=\"tls handshake: "));
  const auto closed = line_with(client.daemon.log(), "connection closed listener=out ");
  INFO(closed);
  CHECK(contains(closed, "peer certificate rejected: hostname mismatch"));
  CHECK(connections(client.admin, "out", "rejected") == 1);
  // The certificate failed before any attestation was accepted.
  CHECK(outcomes(client.admin, "out", "ok") == 0);
  CHECK(origin.accepted() == 0);
}

}  // namespace
}  // namespace atls::test
