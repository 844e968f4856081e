#include "atls/verify/ear.hpp"

#include <array>
#include <fstream>
#include <iterator>
#include <string>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include "atls/verify/appraisal_policy.hpp"
#include "atls/verify/error.hpp"

#include "support/jws_signer.hpp"

namespace atls::verify {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

const std::string vectors_dir = ATLS_SOURCE_DIR "/../shared/vectors/";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

verification_key vector_key() {
  auto key = parse_jwk(read_text(vectors_dir + "ear-verification-key.jwk.json"));
  REQUIRE(key.has_value());
  return *key;
}

template <class T>
error_code error_of(const result<T>& r) {
  return r ? error_code{} : r.error();
}

error_code code(verify_errc e) {
  return make_error_code(e);
}

bytes bytes_of(std::string_view text) {
  return {text.begin(), text.end()};
}

// EAR claims as Veraison's parsec-tpm scheme writes them, for editing in tests.
json::object valid_claims() {
  return json::object{
      {"eat_profile", "tag:github.com,2023:veraison/ear"},
      {"iat", 1700000000},
      {"ear.verifier-id", json::object{{"build", "v0.0.2501"}, {"developer", "Veraison Project"}}},
      {"eat_nonce", "3q2-796tvu8"},  // de ad be ef de ad be ef
      {"submods",
       json::object{
           {"PARSEC_TPM",
            json::object{
                {"ear.status", "affirming"},
                {"ear.trustworthiness-vector",
                 json::object{{"instance-identity", 2}, {"executables", 2}, {"hardware", 2}}},
                {"ear.appraisal-policy-id", "policy:PARSEC_TPM"},
                {"ear.veraison.key-attestation", json::object{{"akpub", "YWtwdWIK"}}},
            }},
       }},
  };
}

json::object& submod(json::object& claims, std::string_view name = "PARSEC_TPM") {
  return claims.at("submods").as_object().at(name).as_object();
}

// Signs claims with a fresh ES256 key and verifies them as a relying party would.
class ear_issuer {
 public:
  ear_issuer() : key_(test::generate_signing_key(jws_algorithm::es256)) {
    auto verifier = parse_jwk(test::public_jwk(key_.get(), jws_algorithm::es256));
    REQUIRE(verifier.has_value());
    verifier_ = *verifier;
  }

  [[nodiscard]] std::string sign(const json::object& claims) const {
    return test::sign_jwt(key_.get(), jws_algorithm::es256, json::serialize(claims));
  }
  [[nodiscard]] result<attestation_result> verify(const json::object& claims,
                                                  const ear_expectations& expected = {}) const {
    return verify_ear(sign(claims), verifier_, expected);
  }

 private:
  test::unique_pkey key_;
  verification_key verifier_;
};

const std::array<std::uint8_t, 8> vector_nonce{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef};

// ---------------------------------------------------------------------------------------------
// The Veraison vectors.

TEST_CASE("the Veraison EAR vector decodes to the documented attestation result") {
  const auto token = read_text(vectors_dir + "ear-valid-0.jwt");
  const auto ear = verify_ear(token, vector_key());
  INFO(error_of(ear).message());
  REQUIRE(ear.has_value());
  CHECK(ear->status == ear_status::affirming);
  CHECK(ear->issued_at == clock::time_point{1666091373s});
  CHECK_FALSE(ear->expires_at.has_value());
  CHECK_FALSE(ear->nonce.has_value());
  CHECK(ear->verifier.build == "rrtrap-v1.0.0");
  CHECK(ear->verifier.developer == "Acme Inc.");
  REQUIRE(ear->submodules.size() == 1);
  const auto& sub = ear->submodules[0];
  CHECK(sub.name == "test");
  CHECK(sub.status == ear_status::affirming);
  CHECK(sub.policy_id == "policy://test/01234");
  CHECK(sub.trust == trust_vector{});  // the vector has no trust vector
  REQUIRE(sub.attested_key.has_value());
  CHECK(*sub.attested_key == bytes_of("akpub\n"));
  CHECK(ear->attested_key == sub.attested_key);
  CHECK(ear->trust == trust_vector{});
  CHECK(ear->raw_ear == token);
}

TEST_CASE("the Veraison EAR vector is too old for a policy with a maximum age") {
  const auto ear = verify_ear(read_text(vectors_dir + "ear-valid-0.jwt"), vector_key());
  REQUIRE(ear.has_value());
  const appraisal_policy fresh{.max_age = std::chrono::hours(24)};
  CHECK(error_of(check(fresh, *ear, clock::now())) == code(verify_errc::result_too_old));
  // Without a maximum age the same result passes: signature verification alone accepts it.
  CHECK(check(appraisal_policy{}, *ear, clock::now()).has_value());
}

TEST_CASE("the HS256 and alg-none EAR vectors are refused before any signature check") {
  for (const char* name : {"ear-invalid-hs256.jwt", "ear-invalid-alg-none.jwt"}) {
    CAPTURE(name);
    CHECK(error_of(verify_ear(read_text(vectors_dir + name), vector_key())) ==
          code(verify_errc::unsupported_algorithm));
  }
}

TEST_CASE("a valid EAR from a parsec-tpm verifier decodes every claim") {
  const ear_issuer issuer;
  const auto ear = issuer.verify(valid_claims(), {.nonce = vector_nonce});
  INFO(error_of(ear).message());
  REQUIRE(ear.has_value());
  CHECK(ear->status == ear_status::affirming);
  CHECK(ear->trust[trust_claim::instance_identity] == trustworthy_instance);
  CHECK(ear->trust[trust_claim::hardware] == genuine_hardware);
  CHECK(ear->trust[trust_claim::executables] == approved_runtime);
  CHECK_FALSE(ear->trust[trust_claim::configuration].has_value());
  CHECK(ear->nonce == bytes(vector_nonce.begin(), vector_nonce.end()));
  CHECK(ear->submodules.at(0).policy_id == "policy:PARSEC_TPM");
  CHECK(ear->verifier.developer == "Veraison Project");
}

// ---------------------------------------------------------------------------------------------
// Claim negatives.

TEST_CASE("an EAR of another profile, or of none, is refused") {
  const ear_issuer issuer;
  auto claims = valid_claims();
  claims["eat_profile"] = "tag:github.com,2022:veraison/ear";
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::wrong_profile));
  claims["eat_profile"] = "";
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::wrong_profile));
  claims["eat_profile"] = 1;
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
  claims.erase("eat_profile");
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::missing_claim));
}

TEST_CASE("an EAR without iat as an integer NumericDate is refused") {
  const ear_issuer issuer;
  auto claims = valid_claims();
  claims.erase("iat");
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::missing_claim));
  for (const json::value& bad :
       {json::value("1700000000"), json::value(1700000000.0), json::value(1.5), json::value(-1),
        json::value(nullptr), json::value(true), json::value(std::int64_t{1} << 33),
        json::value(std::uint64_t{18446744073709551615U})}) {
    CAPTURE(json::serialize(bad));
    claims["iat"] = bad;
    CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
  }
  claims["iat"] = (std::int64_t{1} << 33) - 1;  // the largest accepted, in the year 2242
  CHECK(issuer.verify(claims).has_value());
}

TEST_CASE("exp, when present, is an integer NumericDate and becomes expires_at") {
  const ear_issuer issuer;
  auto claims = valid_claims();
  claims["exp"] = 1700000300;
  const auto ear = issuer.verify(claims);
  REQUIRE(ear.has_value());
  CHECK(ear->expires_at == clock::time_point{1700000300s});
  claims["exp"] = "1700000300";
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
}

TEST_CASE("ear.verifier-id must carry a string build and developer") {
  const ear_issuer issuer;
  auto claims = valid_claims();
  claims.erase("ear.verifier-id");
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::missing_claim));
  claims["ear.verifier-id"] = "veraison";
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
  claims["ear.verifier-id"] = json::object{{"build", "b"}};
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::missing_claim));
  claims["ear.verifier-id"] = json::object{{"build", 1}, {"developer", "d"}};
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
}

TEST_CASE("a submodule status other than the four EAR values is refused") {
  const ear_issuer issuer;
  for (const json::value& bad : {json::value("Affirming"), json::value("ok"), json::value(""),
                                 json::value(2), json::value(nullptr)}) {
    CAPTURE(json::serialize(bad));
    auto claims = valid_claims();
    submod(claims)["ear.status"] = bad;
    CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
  }
  auto claims = valid_claims();
  submod(claims).erase("ear.status");
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::missing_claim));
}

TEST_CASE("trust vector values outside -128..127 or under unknown names are refused") {
  const ear_issuer issuer;
  const auto with_vector = [](json::object vector) {
    auto claims = valid_claims();
    submod(claims)["ear.trustworthiness-vector"] = std::move(vector);
    return claims;
  };
  for (const json::value& bad : {json::value(128), json::value(-129), json::value(2.0),
                                 json::value("2"), json::value(nullptr)}) {
    CAPTURE(json::serialize(bad));
    CHECK(error_of(issuer.verify(with_vector({{"executables", bad}}))) ==
          code(verify_errc::malformed_claims));
  }
  CHECK(error_of(issuer.verify(with_vector({{"executable", 2}}))) ==
        code(verify_errc::malformed_claims));
  CHECK(error_of(issuer.verify(with_vector({{"Executables", 2}}))) ==
        code(verify_errc::malformed_claims));
  auto claims = valid_claims();
  submod(claims)["ear.trustworthiness-vector"] = json::array{2, 2};
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));

  // The extremes themselves are values.
  const auto edge = issuer.verify(with_vector({{"executables", 127}, {"hardware", -128}}));
  REQUIRE(edge.has_value());
  CHECK(edge->trust[trust_claim::executables] == 127);
  CHECK(edge->trust[trust_claim::hardware] == -128);
}

TEST_CASE("an EAR without submodules is refused") {
  const ear_issuer issuer;
  auto claims = valid_claims();
  claims["submods"] = json::object{};
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::missing_claim));
  claims["submods"] = json::array{};
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
  claims["submods"] = json::object{{"PARSEC_TPM", "affirming"}};
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
  claims.erase("submods");
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::missing_claim));
}

TEST_CASE("the overall status is the worst submodule status") {
  const ear_issuer issuer;
  struct row {
    std::array<const char*, 3> statuses;
    ear_status overall;
  };
  for (const auto& [statuses, overall] : {
           row{{"affirming", "affirming", "affirming"}, ear_status::affirming},
           row{{"affirming", "warning", "affirming"}, ear_status::warning},
           row{{"warning", "affirming", "none"}, ear_status::none},
           row{{"none", "contraindicated", "affirming"}, ear_status::contraindicated},
           row{{"contraindicated", "warning", "none"}, ear_status::contraindicated},
       }) {
    auto claims = valid_claims();
    json::object submods;
    for (std::size_t i = 0; i < statuses.size(); ++i) {
      submods["sub" + std::to_string(i)] = json::object{{"ear.status", statuses[i]}};
    }
    claims["submods"] = std::move(submods);
    const auto ear = issuer.verify(claims);
    REQUIRE(ear.has_value());
    CAPTURE(to_string(overall));
    CHECK(ear->status == overall);
    CHECK(ear->submodules.size() == 3);
  }
}

TEST_CASE("trust vector and attested key come from the first submodule as written") {
  const ear_issuer issuer;
  auto claims = valid_claims();
  // "zeta" sorts after "alpha" but comes first in the text.
  claims["submods"] = json::object{
      {"zeta", json::object{{"ear.status", "warning"},
                            {"ear.trustworthiness-vector", json::object{{"executables", 33}}},
                            {"ear.veraison.key-attestation", json::object{{"akpub", "emV0YQ=="}}}}},
      {"alpha", json::object{{"ear.status", "affirming"},
                             {"ear.trustworthiness-vector", json::object{{"executables", 2}}},
                             {"ear.veraison.key-attestation", json::object{{"akpub", "YWxwaGE"}}}}},
  };
  const auto ear = issuer.verify(claims);
  REQUIRE(ear.has_value());
  CHECK(ear->submodules.at(0).name == "zeta");
  CHECK(ear->submodules.at(1).name == "alpha");
  CHECK(ear->trust[trust_claim::executables] == unrecognized_runtime);
  CHECK(ear->attested_key == bytes_of("zeta"));
  CHECK(ear->submodules.at(1).attested_key == bytes_of("alpha"));
  CHECK(ear->status == ear_status::warning);
}

TEST_CASE("the key attestation's akpub must be base64 of a non-empty key") {
  const ear_issuer issuer;
  for (const json::value& bad :
       {json::value(json::object{{"akpub", "not base64!"}}),
        json::value(json::object{{"akpub", ""}}), json::value(json::object{{"akpub", 7}}),
        json::value("YWtwdWIK")}) {
    CAPTURE(json::serialize(bad));
    auto claims = valid_claims();
    submod(claims)["ear.veraison.key-attestation"] = bad;
    CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
  }
  auto claims = valid_claims();
  submod(claims)["ear.veraison.key-attestation"] = json::object{};
  CHECK(error_of(issuer.verify(claims)) == code(verify_errc::missing_claim));
  submod(claims).erase("ear.veraison.key-attestation");
  const auto without = issuer.verify(claims);
  REQUIRE(without.has_value());
  CHECK_FALSE(without->attested_key.has_value());
}

TEST_CASE("unknown claims are ignored") {
  const ear_issuer issuer;
  auto claims = valid_claims();
  claims["ear.raw-evidence"] = "AAAA";
  claims["x-future-claim"] = json::object{{"nested", json::array{1, 2, 3}}};
  submod(claims)["ear.veraison.annotated-evidence"] = json::object{{"k", "v"}};
  submod(claims)["ear.veraison.policy-claims"] = json::object{};
  CHECK(issuer.verify(claims).has_value());
}

TEST_CASE("claims with a repeated member name are refused") {
  const auto valid = json::serialize(valid_claims());
  CHECK(decode_ear_claims(valid).has_value());
  // The same claims with a second, contradicting ear.status in the submodule.
  auto twice = valid;
  const auto at = twice.find(R"("ear.status":"affirming")");
  REQUIRE(at != std::string::npos);
  twice.insert(at, R"("ear.status":"contraindicated",)");
  CHECK(error_of(decode_ear_claims(twice)) == code(verify_errc::malformed_claims));
  auto iat_twice = valid;
  iat_twice.insert(1, R"("iat":1,)");
  CHECK(error_of(decode_ear_claims(iat_twice)) == code(verify_errc::malformed_claims));
}

TEST_CASE("claims that are not one JSON object are malformed") {
  for (const char* bad : {"", "[]", "null", "\"claims\"", "{", "{} {}", "{\"iat\":1,}"}) {
    CAPTURE(bad);
    CHECK(error_of(decode_ear_claims(bad)) == code(verify_errc::malformed_claims));
  }
  CHECK(error_of(decode_ear_claims(std::string(max_token_size + 1, ' '))) ==
        code(verify_errc::malformed_claims));
}

// ---------------------------------------------------------------------------------------------
// Nonces.

TEST_CASE("an expected nonce must equal the EAR's eat_nonce") {
  const ear_issuer issuer;
  const auto claims = valid_claims();
  CHECK(issuer.verify(claims, {.nonce = vector_nonce}).has_value());

  auto other = vector_nonce;
  other.back() ^= 0x01U;
  CHECK(error_of(issuer.verify(claims, {.nonce = other})) == code(verify_errc::nonce_mismatch));
  // A prefix or an extension of the nonce is not the nonce.
  const std::span<const std::uint8_t> whole = vector_nonce;
  CHECK(error_of(issuer.verify(claims, {.nonce = whole.first(7)})) ==
        code(verify_errc::nonce_mismatch));
  const std::array<std::uint8_t, 9> longer{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0x00};
  CHECK(error_of(issuer.verify(claims, {.nonce = longer})) == code(verify_errc::nonce_mismatch));
}

TEST_CASE("an EAR without eat_nonce fails when a nonce is expected") {
  const ear_issuer issuer;
  auto claims = valid_claims();
  claims.erase("eat_nonce");
  CHECK(issuer.verify(claims).has_value());
  CHECK(error_of(issuer.verify(claims, {.nonce = vector_nonce})) ==
        code(verify_errc::nonce_mismatch));
}

TEST_CASE("eat_nonce is 8 to 64 bytes of base64 in either alphabet, padded or not") {
  const ear_issuer issuer;
  auto claims = valid_claims();
  claims["eat_nonce"] = "3q2+796tvu8=";  // standard alphabet, padded, as older Veraison sends
  CHECK(issuer.verify(claims, {.nonce = vector_nonce}).has_value());
  claims["eat_nonce"] = "3q2-796tvu8=";
  CHECK(issuer.verify(claims, {.nonce = vector_nonce}).has_value());
  claims["eat_nonce"] = "3q2+796tvu8";
  CHECK(issuer.verify(claims, {.nonce = vector_nonce}).has_value());
  claims["eat_nonce"] = base64url_encode(bytes(64, 0x5a));
  CHECK(issuer.verify(claims).has_value());
  for (const json::value& bad :
       {json::value(base64url_encode(bytes(7, 0x5a))),
        json::value(base64url_encode(bytes(65, 0x5a))), json::value("3q2-796tvu8=="),
        json::value("3q2+796_vu8"), json::value("not a nonce"),
        json::value(json::array{"3q2-796tvu8"}), json::value(12345678)}) {
    CAPTURE(json::serialize(bad));
    claims["eat_nonce"] = bad;
    CHECK(error_of(issuer.verify(claims)) == code(verify_errc::malformed_claims));
  }
}

// ---------------------------------------------------------------------------------------------
// The attestation result vocabulary.

TEST_CASE("tier_of maps claim values to AR4SI tiers at every boundary") {
  struct row {
    int value;
    ear_status tier;
  };
  for (const auto& [value, tier] : {
           row{0, ear_status::none},
           row{1, ear_status::none},
           row{-1, ear_status::none},
           row{2, ear_status::affirming},
           row{31, ear_status::affirming},
           row{-2, ear_status::affirming},
           row{-32, ear_status::affirming},
           row{32, ear_status::warning},
           row{95, ear_status::warning},
           row{-33, ear_status::warning},
           row{-96, ear_status::warning},
           row{96, ear_status::contraindicated},
           row{127, ear_status::contraindicated},
           row{-97, ear_status::contraindicated},
           row{-128, ear_status::contraindicated},
       }) {
    CAPTURE(value);
    CHECK(tier_of(static_cast<std::int8_t>(value)) == tier);
  }
}

TEST_CASE("at_least orders affirming over warning over none over contraindicated") {
  const std::array order{ear_status::contraindicated, ear_status::none, ear_status::warning,
                         ear_status::affirming};
  for (std::size_t i = 0; i < order.size(); ++i) {
    for (std::size_t j = 0; j < order.size(); ++j) {
      CAPTURE(to_string(order[i]));
      CAPTURE(to_string(order[j]));
      CHECK(at_least(order[i], order[j]) == (i >= j));
    }
  }
}

TEST_CASE("statuses and claim names round-trip through their EAR spellings") {
  for (const auto s : {ear_status::none, ear_status::affirming, ear_status::warning,
                       ear_status::contraindicated}) {
    CHECK(parse_ear_status(to_string(s)) == s);
  }
  CHECK(to_string(ear_status::contraindicated) == "contraindicated");
  CHECK_FALSE(parse_ear_status("AFFIRMING").has_value());
  for (std::size_t i = 0; i < trust_claim_count; ++i) {
    const auto c = static_cast<trust_claim>(i);
    CHECK(parse_trust_claim(to_string(c)) == c);
  }
  CHECK(to_string(trust_claim::instance_identity) == "instance-identity");
  CHECK(to_string(trust_claim::sourced_data) == "sourced-data");
  CHECK_FALSE(parse_trust_claim("instance_identity").has_value());
}

TEST_CASE("to_json shows status, tiers, the key's digest and both forms of the times") {
  const auto token = read_text(vectors_dir + "ear-valid-0.jwt");
  auto ear = verify_ear(token, vector_key());
  REQUIRE(ear.has_value());
  const auto doc = json::parse(to_json(*ear)).as_object();
  CHECK(doc.at("status") == "affirming");
  CHECK(doc.at("iat") == 1666091373);
  CHECK(doc.at("issued_at") == "2022-10-18T11:09:33Z");
  CHECK(doc.at("exp").is_null());
  CHECK(doc.at("nonce").is_null());
  CHECK(doc.at("attested_key").at("spki") == "616b7075620a");
  CHECK(doc.at("attested_key").at("sha256") ==
        "dcb3e41de45c502f0d04417f3f51281e202539e33e47d8ec992481c706830553");
  CHECK(doc.at("verifier").at("build") == "rrtrap-v1.0.0");
  CHECK(doc.at("submods").at("test").at("policy_id") == "policy://test/01234");
  CHECK(doc.at("raw_ear").as_string() == token);

  ear->trust.set(trust_claim::executables, 33);
  ear->trust.set(trust_claim::hardware, -2);
  ear->expires_at = clock::time_point{1666091373s + 300s};
  ear->nonce = bytes(vector_nonce.begin(), vector_nonce.end());
  ear->raw_ear.clear();
  const auto more = json::parse(to_json(*ear)).as_object();
  CHECK(more.at("trust_vector").at("executables").at("value") == 33);
  CHECK(more.at("trust_vector").at("executables").at("tier") == "warning");
  CHECK(more.at("trust_vector").at("hardware").at("tier") == "affirming");
  CHECK_FALSE(more.at("trust_vector").as_object().contains("configuration"));
  CHECK(more.at("expires_at") == "2022-10-18T11:14:33Z");
  CHECK(more.at("exp") == 1666091673);
  CHECK(more.at("nonce") == "deadbeefdeadbeef");
  CHECK_FALSE(more.contains("raw_ear"));
}

}  // namespace
}  // namespace atls::verify
