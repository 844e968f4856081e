#include "atls/attested/audit.hpp"

#include <array>

#include <boost/json.hpp>
#include <openssl/sha.h>

#include "atls/attested/appraisal.hpp"
#include "atls/common/hex.hpp"
#include "atls/common/log_quote.hpp"

namespace atls::attested {

namespace json = boost::json;

namespace {

std::string_view to_string(mode m) {
  return m == mode::intra_handshake ? "intra-handshake" : "post-handshake";
}

std::string_view to_string(model m) {
  return m == model::passport ? "passport" : "background-check";
}

std::string_view to_string(attester_side side) {
  return side == attester_side::self ? "self" : "peer";
}

// The claims the result carries, in the EAR's order: "instance-identity=2 hardware=2".
std::string trust_summary(const verify::trust_vector& trust) {
  std::string out;
  for (std::size_t i = 0; i < verify::trust_claim_count; ++i) {
    const auto claim = static_cast<verify::trust_claim>(i);
    if (const auto value = trust[claim]) {
      out += std::string(out.empty() ? "" : " ") + std::string(verify::to_string(claim)) + "=" +
             std::to_string(*value);
    }
  }
  return out;
}

std::string ear_fingerprint(std::string_view ear) {
  std::array<std::uint8_t, SHA256_DIGEST_LENGTH> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(ear.data()), ear.size(), digest.data());
  return to_hex(digest);
}

}  // namespace

std::string format_text(const audit_record& record) {
  std::string out = "attestation listener=" + std::string(record.listener) +
                    " id=" + std::to_string(record.connection) +
                    " peer=" + std::string(record.peer) +
                    " mode=" + std::string(to_string(record.mode)) +
                    " model=" + std::string(to_string(record.model)) +
                    " attester=" + std::string(to_string(record.attester)) +
                    " round=" + std::to_string(record.round) +
                    " verifier=" + quote_for_log(record.verifier.empty() ? "-" : record.verifier) +
                    " outcome=" + std::string(to_string(record.outcome));
  if (const auto* r = record.result) {
    out += " status=" + std::string(verify::to_string(r->status)) +
           " trust=" + quote_for_log(trust_summary(r->trust));
    if (r->attested_key) {
      out += " key=sha256:" + key_fingerprint(*r->attested_key);
    }
    if (!r->raw_ear.empty()) {
      out += " ear=sha256:" + ear_fingerprint(r->raw_ear);
    }
  }
  if (record.outcome != reason::accepted) {
    out += " reason=" + quote_for_log(record.detail);
  }
  return out;
}

std::string format_json(const audit_record& record) {
  json::object out{
      {"event", "attestation"},
      {"listener", record.listener},
      {"id", record.connection},
      {"peer", record.peer},
      {"mode", to_string(record.mode)},
      {"model", to_string(record.model)},
      {"attester", to_string(record.attester)},
      {"round", record.round},
      {"verifier", record.verifier.empty() ? json::value(nullptr) : json::value(record.verifier)},
      {"outcome", to_string(record.outcome)},
      {"reason",
       record.outcome == reason::accepted ? json::value(nullptr) : json::value(record.detail)},
      {"status", nullptr},
      {"trust", nullptr},
      {"key_sha256", nullptr},
      {"ear_sha256", nullptr},
  };
  if (const auto* r = record.result) {
    out["status"] = verify::to_string(r->status);
    json::object trust;
    for (std::size_t i = 0; i < verify::trust_claim_count; ++i) {
      const auto claim = static_cast<verify::trust_claim>(i);
      if (const auto value = r->trust[claim]) {
        trust[verify::to_string(claim)] =
            json::object{{"value", *value}, {"tier", verify::to_string(verify::tier_of(*value))}};
      }
    }
    out["trust"] = std::move(trust);
    if (r->attested_key) {
      out["key_sha256"] = key_fingerprint(*r->attested_key);
    }
    if (!r->raw_ear.empty()) {
      out["ear_sha256"] = ear_fingerprint(r->raw_ear);
    }
  }
  return json::serialize(out);
}

}  // namespace atls::attested
