// verifier.local `endorsements: DIR`: the directory `atlsctl veraison endorsements` writes is
// the whole of the local verifier's trust (AK and reference values), given instead of
// trusted_aks and reference_values, never with them; every problem with it is reported at its
// key, naming the file and the JSON path.
#include <filesystem>
#include <string>
#include <string_view>
#include <variant>

#include <doctest/doctest.h>

#include "atls/attest/evidence.hpp"
#include "atls/config/verifier_policy.hpp"
#include "atls/verify/endorsements.hpp"
#include "atls/verify/local_verifier.hpp"

#include "support/evidence_builder.hpp"
#include "support/temp_dir.hpp"

namespace atls::config {
namespace {

// The endorsements of the Veraison vector's machine (its AK and kid, sha256 PCRs 0 to 2 zero),
// as `atlsctl veraison endorsements` would write them, in dir/name.
verify::endorsement_documents write_vector_endorsements(const test::temp_dir& dir,
                                                        std::string_view name) {
  verify::machine_endorsements m;
  m.instance_id = test::vector_evidence().kid;
  m.ak_spki = test::vector_ak();
  for (const std::uint8_t pcr : {0, 1, 2}) {
    m.reference.values[pcr] = verify::bytes(32, 0);
  }
  auto docs = verify::make_endorsements(m);
  REQUIRE(docs.has_value());
  std::filesystem::create_directories(dir / name);
  const auto sub = std::string(name) + "/";
  (void)dir.write(sub + std::string(verify::trust_anchor_file_name), docs->trust_anchor);
  (void)dir.write(sub + std::string(verify::reference_values_file_name), docs->reference_values);
  return *docs;
}

// R"( leaves a newline first; line 1 of the policy is the line after it.
verifier_policy_result load(const test::temp_dir& dir, std::string_view text) {
  if (!text.empty() && text.front() == '\n') {
    text.remove_prefix(1);
  }
  return load_verifier_policy_text(text, "policy.yaml", dir.path());
}

std::string all_errors(const verifier_policy_result& r) {
  std::string out;
  for (const auto& d : r.errors) {
    out += to_string(d) + "\n";
  }
  return out;
}

std::string only_error(const verifier_policy_result& r) {
  INFO(all_errors(r));
  REQUIRE(r.errors.size() == 1);
  CHECK_FALSE(r.policy.has_value());
  return to_string(r.errors.front());
}

constexpr std::string_view endorsements_policy = R"(
verifier:
  local:
    endorsements: endo
accept: {minimum_status: affirming}
)";

TEST_CASE("a verifier policy with endorsements takes its AK and PCR values from the CoMIDs") {
  const test::temp_dir dir;
  (void)write_vector_endorsements(dir, "endo");
  const auto r = load(dir, endorsements_policy);
  INFO(all_errors(r));
  REQUIRE(r.policy.has_value());
  const auto& local = r.policy->local;
  REQUIRE(local.trusted_aks.size() == 1);
  CHECK(local.trusted_aks[0] == test::vector_ak());
  CHECK(local.trusted_ak_hashes.empty());
  const auto* pcrs = std::get_if<verify::pcr_values>(&local.reference);
  REQUIRE(pcrs != nullptr);
  CHECK(pcrs->bank == 0x000b);
  CHECK(pcrs->values.size() == 3);
  CHECK(pcrs->values.at(2) == verify::bytes(32, 0));

  const auto result =
      verify::appraise_parsec_tpm(local, test::vector_cbor(), attest::parsec_tpm_media_type,
                                  test::vector_nonce, verify::clock::now());
  REQUIRE(result.has_value());
  CHECK(result->status == verify::ear_status::affirming);
}

TEST_CASE(
    "endorsements together with trusted_aks or reference_values is an error at endorsements") {
  const test::temp_dir dir;
  (void)write_vector_endorsements(dir, "endo");
  CHECK(only_error(load(dir, R"(
verifier:
  local:
    trusted_aks: [{spki_sha256: 291d6fed800af919b749f867ed2812df37ab3f9022c740e1472f49302f8c7098}]
    endorsements: endo
accept: {}
)")) == "policy.yaml:4:5: verifier.local.endorsements: 'endorsements' brings its own "
        "attestation key and reference values: remove 'trusted_aks' and 'reference_values', or "
        "this key");
  CHECK(only_error(load(dir, R"(
verifier:
  local:
    endorsements: endo
    reference_values: {pcrs: {0: 0000000000000000000000000000000000000000000000000000000000000000}}
accept: {}
)")) == "policy.yaml:3:5: verifier.local.endorsements: 'endorsements' brings its own "
        "attestation key and reference values: remove 'trusted_aks' and 'reference_values', or "
        "this key");
}

TEST_CASE("a local verifier with neither endorsements nor trusted AKs and values says so once") {
  const test::temp_dir dir;
  CHECK(only_error(load(dir, R"(
verifier:
  local: {}
accept: {}
)")) == "policy.yaml:2:3: verifier.local: missing 'trusted_aks' and 'reference_values', or "
        "'endorsements' (a directory written by 'atlsctl veraison endorsements')");
}

TEST_CASE("an endorsements directory that is absent, a file or incomplete is reported at its key") {
  const test::temp_dir dir;
  SUBCASE("absent") {
    CHECK(only_error(load(dir, endorsements_policy)) ==
          "policy.yaml:3:19: verifier.local.endorsements: " + (dir / "endo").string() +
              " is not a directory: name the directory that 'atlsctl veraison endorsements "
              "--out DIR' wrote");
  }
  SUBCASE("a file") {
    (void)dir.write("endo", "{}");
    CHECK(only_error(load(dir, endorsements_policy)).find("is not a directory") !=
          std::string::npos);
  }
  SUBCASE("without the reference values") {
    (void)write_vector_endorsements(dir, "endo");
    std::filesystem::remove(dir / "endo" / verify::reference_values_file_name);
    CHECK(only_error(load(dir, endorsements_policy)) ==
          "policy.yaml:3:19: verifier.local.endorsements: cannot read " +
              (dir / "endo" / verify::reference_values_file_name).string() +
              ": No such file or directory (the directory should hold what 'atlsctl veraison "
              "endorsements' wrote)");
  }
}

TEST_CASE("a broken CoMID in the endorsements directory is reported with its file and JSON path") {
  const test::temp_dir dir;
  auto docs = write_vector_endorsements(dir, "endo");
  const auto at = docs.reference_values.find("\"uint\"");
  REQUIRE(at != std::string::npos);
  docs.reference_values.replace(at, 6, "\"text\"");
  (void)dir.write("endo/" + std::string(verify::reference_values_file_name), docs.reference_values);
  CHECK(only_error(load(dir, endorsements_policy)) ==
        "policy.yaml:3:19: verifier.local.endorsements: " + (dir / "endo").string() +
            "/comid-reference-values.json: triples.reference-values[0].measurements[0].key.type: "
            "a measurement key of type 'text': atls reads only 'uint'");
}

}  // namespace
}  // namespace atls::config
