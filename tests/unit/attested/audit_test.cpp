// The audit line of an attestation decision, in both formats: what an operator greps for and
// what a log pipeline parses.
#include "atls/attested/audit.hpp"

#include <string>

#include <boost/json.hpp>
#include <doctest/doctest.h>

namespace atls::attested {
namespace {

namespace json = boost::json;

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

const std::string key_hash = "07bef2206a89b8ddd31002970520c9aae135576c12aaa5fe72c96de3b217157d";
const std::string ear_hash = "d75c7d5abfc3b40ffe10a6f88e944df66c57b19ddc919c1ee49911beab59690c";

verify::attestation_result affirming_result() {
  verify::attestation_result r;
  r.status = verify::ear_status::affirming;
  r.trust.set(verify::trust_claim::instance_identity, 2);
  r.trust.set(verify::trust_claim::hardware, 2);
  r.trust.set(verify::trust_claim::executables, 33);
  r.attested_key = verify::bytes{0x30, 0x59};
  r.raw_ear = "header.claims.signature";
  return r;
}

audit_record accepted_record(const verify::attestation_result& result) {
  return {.listener = "api-in",
          .connection = 7,
          .peer = "10.0.0.5:51234",
          .mode = mode::post_handshake,
          .model = model::passport,
          .attester = attester_side::peer,
          .verifier = "veraison https://v.example",
          .round = 2,
          .outcome = reason::accepted,
          .result = &result};
}

TEST_CASE("an accepted attestation's text line names the peer, how, who appraised and the result") {
  const auto result = affirming_result();
  const auto line = format_text(accepted_record(result));
  CHECK(line.starts_with("attestation listener=api-in id=7 peer=10.0.0.5:51234 "));
  CHECK(contains(line, " mode=post-handshake model=passport attester=peer round=2 "));
  CHECK(contains(line, " verifier=\"veraison https://v.example\" outcome=accepted "));
  CHECK(
      contains(line, " status=affirming trust=\"instance-identity=2 executables=33 hardware=2\""));
  // SHA-256 of the DER key 30 59, and of the EAR's text as presented.
  CHECK(contains(line, " key=sha256:" + key_hash));
  CHECK(contains(line, " ear=sha256:" + ear_hash));
  CHECK_FALSE(contains(line, "reason="));
}

TEST_CASE("a refusal's text line gives the reason word and quotes a detail a peer could shape") {
  audit_record record{.listener = "in",
                      .connection = 1,
                      .peer = "127.0.0.1:1",
                      .verifier = "local",
                      .outcome = reason::wrong_nonce,
                      .detail = "evidence said \"x\"\nid=2 outcome=accepted"};
  const auto line = format_text(record);
  CHECK(contains(line,
                 " outcome=wrong_nonce reason=\"evidence said \\\"x\\\" id=2 outcome=accepted\""));
  CHECK(line.find('\n') == std::string::npos);
  CHECK_FALSE(contains(line, "status="));
}

TEST_CASE("the JSON form carries the same fields, with tiers and nulls for what is absent") {
  const auto result = affirming_result();
  const auto doc = json::parse(format_json(accepted_record(result))).as_object();
  CHECK(doc.at("event") == "attestation");
  CHECK(doc.at("listener") == "api-in");
  CHECK(doc.at("id").to_number<int>() == 7);
  CHECK(doc.at("model") == "passport");
  CHECK(doc.at("outcome") == "accepted");
  CHECK(doc.at("reason").is_null());
  CHECK(doc.at("status") == "affirming");
  const auto& trust = doc.at("trust").as_object();
  CHECK(trust.at("executables").at("value").to_number<int>() == 33);
  CHECK(trust.at("executables").at("tier") == "warning");
  CHECK(trust.at("hardware").at("tier") == "affirming");
  CHECK_FALSE(trust.contains("configuration"));
  CHECK(doc.at("key_sha256").as_string() == key_hash);
  CHECK(doc.at("ear_sha256").as_string() == ear_hash);

  const auto refused = json::parse(format_json({.listener = "in",
                                                .outcome = reason::not_pinned,
                                                .detail = "not one of ours"}))
                           .as_object();
  CHECK(refused.at("outcome") == "not_pinned");
  CHECK(refused.at("reason") == "not one of ours");
  CHECK(refused.at("status").is_null());
  CHECK(refused.at("verifier").is_null());
}

}  // namespace
}  // namespace atls::attested
