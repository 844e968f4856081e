// The audit record of one attestation decision on a connection: who attested to whom, how, who
// appraised it, what the result said and, on refusal, why. One record per decision (the first
// exchange and every re-attestation), written the moment it is made, so that an operator can
// answer "what did this peer prove, and when" without reading the connection's end. Text for
// people and grep, JSON for log pipelines; the same fields in both.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "atls/attested/reason.hpp"
#include "atls/attested/settings.hpp"
#include "atls/verify/attestation_result.hpp"

namespace atls::attested {

enum class audit_format : std::uint8_t { text, json };

// Who attested in the exchange this record is about.
enum class attester_side : std::uint8_t {
  peer,  // the peer attested, this sidecar was the relying party
  self,  // this sidecar attested, the peer judged (the outcome is the peer's verdict)
};

struct audit_record {
  std::string_view listener;
  std::uint64_t connection = 0;  // the id of the connection's other log lines
  std::string_view peer;         // the remote address
  attested::mode mode = mode::post_handshake;
  attested::model model = model::background_check;
  attester_side attester = attester_side::peer;
  // Who appraised: the verifier's name ("local", "veraison https://…"), or for a passport the
  // EAR's verifier-id as it names itself.
  std::string verifier;
  unsigned round = 0;  // 0: at connection set-up; 1, 2, …: re-attestations
  attested::reason outcome = reason::accepted;
  std::string detail;  // on refusal: what exactly failed
  // The result the decision was about, when there was one (there is none for evidence that never
  // reached a verifier, or for our own attestation, of which only the verdict comes back).
  const verify::attestation_result* result = nullptr;
};

// "attestation listener=api-in id=7 peer=10.0.0.5:51234 mode=post-handshake model=passport
// attester=peer round=0 verifier=\"…\" outcome=accepted status=affirming
// trust=\"instance-identity=2 hardware=2 executables=2\" key=sha256:<hex> ear=sha256:<hex>",
// with reason=\"…\" instead of the result fields' absence on refusal. Values that may hold
// spaces or quotes are quoted and escaped.
[[nodiscard]] std::string format_text(const audit_record& record);

// One JSON object on one line, with "event":"attestation" and the same fields; the trust vector
// as {"claim": {"value": n, "tier": "affirming"}}; absent values are null.
[[nodiscard]] std::string format_json(const audit_record& record);

[[nodiscard]] inline std::string format(const audit_record& record, audit_format how) {
  return how == audit_format::json ? format_json(record) : format_text(record);
}

}  // namespace atls::attested
