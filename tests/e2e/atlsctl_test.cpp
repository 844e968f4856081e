// atlsctl's TPM and evidence commands against swtpm, as an operator runs them.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include "atls/attest/evidence.hpp"
#include "atls/verify/endorsements.hpp"
#include "atls/verify/error.hpp"
#include "atls/verify/jose.hpp"

#include "support/daemon.hpp"
#include "support/evidence_builder.hpp"
#include "support/process.hpp"
#include "support/swtpm.hpp"
#include "support/temp_dir.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

TEST_CASE("atlsctl tpm provision creates the keys once and then says it reuses them") {
  const temp_dir dir;
  swtpm simulator(dir);
  const auto first = atlsctl({"tpm", "provision", "--tcti", simulator.tcti()});
  INFO(first.err);
  CHECK(first.exit_code == 0);
  CHECK(first.out == "created AK at 0x81000100\ncreated TIK at 0x81000101\n");
  const auto second = atlsctl({"tpm", "provision", "--tcti", simulator.tcti()});
  CHECK(second.exit_code == 0);
  CHECK(second.out == "reused existing AK at 0x81000100\nreused existing TIK at 0x81000101\n");
}

TEST_CASE("atlsctl tpm show prints both public keys, names and handles") {
  const temp_dir dir;
  swtpm simulator(dir);
  REQUIRE(atlsctl({"tpm", "provision", "--tcti", simulator.tcti()}).exit_code == 0);

  const auto text = atlsctl({"tpm", "show", "--tcti", simulator.tcti()});
  CHECK(text.exit_code == 0);
  CHECK(text.out.find("AK (attestation key)\n  handle: 0x81000100") != std::string::npos);
  CHECK(text.out.find("TIK (TLS identity key)\n  handle: 0x81000101") != std::string::npos);

  const auto shown = atlsctl({"tpm", "show", "--json", "--tcti", simulator.tcti()});
  REQUIRE(shown.exit_code == 0);
  const auto doc = boost::json::parse(shown.out).as_object();
  for (const char* key : {"ak", "tik"}) {
    const auto& k = doc.at(key).as_object();
    CHECK(k.at("name").as_string().size() == 68);  // 34 bytes in hex
    CHECK(
        std::string(k.at("public_key_pem").as_string()).starts_with("-----BEGIN PUBLIC KEY-----"));
  }
  CHECK(doc.at("ak").at("handle").as_string() == "0x81000100");
  CHECK(doc.at("ak").at("public_key_pem") != doc.at("tik").at("public_key_pem"));
}

TEST_CASE("atlsctl evidence collect writes evidence that evidence dump decodes") {
  const temp_dir dir;
  swtpm simulator(dir);
  REQUIRE(atlsctl({"tpm", "provision", "--tcti", simulator.tcti()}).exit_code == 0);
  const auto file = (dir / "evidence.cbor").string();
  const auto collected =
      atlsctl({"evidence", "collect", "--tcti", simulator.tcti(), "--nonce",
               "00112233445566778899aabbccddeeff", "--pcrs", "sha256:0,1,2", "--out", file});
  INFO(collected.err);
  REQUIRE(collected.exit_code == 0);

  const auto dumped = atlsctl({"evidence", "dump", file});
  INFO(dumped.err);
  REQUIRE(dumped.exit_code == 0);
  CHECK(dumped.out.find("00112233445566778899aabbccddeeff") != std::string::npos);
  const auto doc = boost::json::parse(dumped.out);
  CHECK(doc.is_object());
}

// The TIK's public key as `atlsctl tpm show --json` prints it.
std::string tik_public_pem(const swtpm& simulator) {
  const auto shown = atlsctl({"tpm", "show", "--json", "--tcti", simulator.tcti()});
  REQUIRE(shown.exit_code == 0);
  return std::string(boost::json::parse(shown.out).at("tik").at("public_key_pem").as_string());
}

TEST_CASE("atlsctl tpm csr makes a request for the TIK that openssl verifies") {
  const temp_dir dir;
  swtpm simulator(dir);
  REQUIRE(atlsctl({"tpm", "provision", "--tcti", simulator.tcti()}).exit_code == 0);
  const auto csr = dir / "tik.csr";
  const auto made =
      atlsctl({"tpm", "csr", "--tcti", simulator.tcti(), "--subject", "/CN=web.example/O=Example",
               "--san", "DNS:web.example,URI:spiffe://example.org/web", "--out", csr.string()});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);

  // -verify checks the request's signature, which only the TPM could have made, against the
  // public key inside it; that key must be the TIK.
  const auto checked =
      run({"openssl", "req", "-in", csr.string(), "-verify", "-noout", "-subject", "-text"}, 15s);
  INFO(checked.err);
  CHECK(checked.exit_code == 0);
  CHECK(checked.err.find("verify OK") != std::string::npos);
  CHECK(checked.out.find("subject=CN = web.example, O = Example") != std::string::npos);
  CHECK(checked.out.find("DNS:web.example, URI:spiffe://example.org/web") != std::string::npos);
  const auto key = run({"openssl", "req", "-in", csr.string(), "-pubkey", "-noout"}, 15s);
  CHECK(key.out == tik_public_pem(simulator));
}

TEST_CASE("atlsctl tpm self-signed makes a TLS leaf certificate for the TIK") {
  const temp_dir dir;
  swtpm simulator(dir);
  REQUIRE(atlsctl({"tpm", "provision", "--tcti", simulator.tcti()}).exit_code == 0);
  const auto made = atlsctl({"tpm", "self-signed", "--tcti", simulator.tcti(), "--subject",
                             "/CN=web.example", "--san", "DNS:web.example", "--days", "7"});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  const auto cert = dir / "self.crt";
  std::ofstream(cert) << made.out;

  const auto verified = run(
      {"openssl", "verify", "-CAfile", cert.string(), "-purpose", "sslserver", cert.string()}, 15s);
  INFO(verified.err);
  CHECK(verified.out == cert.string() + ": OK\n");
  const auto text = run({"openssl", "x509", "-in", cert.string(), "-noout", "-text"}, 15s);
  CHECK(text.out.find("CA:FALSE") != std::string::npos);
  CHECK(text.out.find("DNS:web.example") != std::string::npos);
  const auto key = run({"openssl", "x509", "-in", cert.string(), "-pubkey", "-noout"}, 15s);
  CHECK(key.out == tik_public_pem(simulator));
  const auto end = run({"openssl", "x509", "-in", cert.string(), "-noout", "-checkend",
                        std::to_string(6 * 24 * 3600)},
                       15s);
  CHECK(end.exit_code == 0);  // still valid in six days
}

TEST_CASE("atlsctl tpm csr rejects a malformed subject or subjectAltName and says which") {
  const temp_dir dir;
  swtpm simulator(dir);
  REQUIRE(atlsctl({"tpm", "provision", "--tcti", simulator.tcti()}).exit_code == 0);
  const auto bare = atlsctl({"tpm", "csr", "--tcti", simulator.tcti(), "--subject", "CN=x"});
  CHECK(bare.exit_code != 0);
  CHECK(bare.out.empty());
  CHECK(bare.err.find("subject must look like /CN=name") != std::string::npos);
  const auto san =
      atlsctl({"tpm", "csr", "--tcti", simulator.tcti(), "--subject", "/CN=x", "--san", "FOO:bar"});
  CHECK(san.exit_code != 0);
  CHECK(san.err.find("subjectAltName 'FOO:bar'") != std::string::npos);
  const auto missing = atlsctl({"tpm", "csr", "--tcti", simulator.tcti()});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("--subject") != std::string::npos);
}

TEST_CASE("atlsctl reports an unreachable TPM on stderr with a non-zero exit") {
  const temp_dir dir;
  swtpm simulator(dir);
  const auto tcti = simulator.tcti();
  simulator.kill();
  const auto result = atlsctl({"tpm", "show", "--tcti", tcti});
  CHECK(result.exit_code == 1);
  CHECK(result.out.empty());
  CHECK(result.err.find("atlsctl: tpm show (" + tcti + "): ") == 0);
  CHECK(result.err.find("tcti") != std::string::npos);  // the decoded TSS2 response code
}

TEST_CASE("atlsctl evidence dump rejects a file that is not evidence") {
  const temp_dir dir;
  const auto file = dir.write("junk.cbor", "not cbor at all");
  const auto result = atlsctl({"evidence", "dump", file.string()});
  CHECK(result.exit_code == 1);
  CHECK(result.err.find("atlsctl: evidence dump") == 0);
}

TEST_CASE("atlsctl takes the TCTI from ATLS_TCTI when --tcti is absent") {
  const temp_dir dir;
  swtpm simulator(dir);
  process child({.argv = {ATLSCTL_BINARY, "tpm", "provision"},
                 .env = {{"ATLS_TCTI", simulator.tcti()}},
                 .stdout_file = dir / "out",
                 .stderr_file = dir / "err"});
  CHECK(child.wait_for(30s) == 0);
  CHECK(read_file(dir / "out").find("created AK") != std::string::npos);
}

// The Veraison EAR vectors (../shared/vectors/README.md) through `atlsctl ear verify`.
const std::string ear_vectors = ATLS_SOURCE_DIR "/../shared/vectors/";

TEST_CASE("atlsctl ear verify prints the Veraison vector's attestation result as JSON") {
  const auto result =
      atlsctl({"ear", "verify", "--jwk", ear_vectors + "ear-verification-key.jwk.json",
               ear_vectors + "ear-valid-0.jwt"});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(result.err.empty());
  const auto doc = boost::json::parse(result.out);
  CHECK(doc.at("status") == "affirming");
  CHECK(doc.at("iat") == 1666091373);
  CHECK(doc.at("attested_key").at("spki") == "616b7075620a");  // "akpub\n"
  // Pinning the algorithm the key implies changes nothing.
  CHECK(atlsctl({"ear", "verify", "--jwk", ear_vectors + "ear-verification-key.jwk.json", "--alg",
                 "ES256", ear_vectors + "ear-valid-0.jwt"})
            .exit_code == 0);
}

TEST_CASE("atlsctl ear verify refuses an alg-none token and says why") {
  const auto result =
      atlsctl({"ear", "verify", "--jwk", ear_vectors + "ear-verification-key.jwk.json",
               ear_vectors + "ear-invalid-alg-none.jwt"});
  CHECK(result.exit_code == 1);
  CHECK(result.out.empty());
  CHECK(result.err == "atlsctl: ear verify: " +
                          make_error_code(verify::verify_errc::unsupported_algorithm).message() +
                          "\n");
}

TEST_CASE("atlsctl ear verify with --max-age refuses the 2022 vector as too old") {
  const auto result =
      atlsctl({"ear", "verify", "--jwk", ear_vectors + "ear-verification-key.jwk.json", "--max-age",
               "3600", ear_vectors + "ear-valid-0.jwt"});
  CHECK(result.exit_code == 1);
  CHECK(result.out.empty());
  CHECK(result.err == "atlsctl: ear verify: " +
                          make_error_code(verify::verify_errc::result_too_old).message() + "\n");
  // A nonce the vector does not carry, and an algorithm its key cannot verify.
  CHECK(atlsctl({"ear", "verify", "--jwk", ear_vectors + "ear-verification-key.jwk.json", "--nonce",
                 "deadbeefdeadbeef", ear_vectors + "ear-valid-0.jwt"})
            .exit_code == 1);
  CHECK(atlsctl({"ear", "verify", "--jwk", ear_vectors + "ear-verification-key.jwk.json", "--alg",
                 "ES384", ear_vectors + "ear-valid-0.jwt"})
            .exit_code == 1);
  CHECK(atlsctl({"ear", "verify", "--jwk", ear_vectors + "ear-verification-key.jwk.json", "--alg",
                 "HS256", ear_vectors + "ear-valid-0.jwt"})
            .exit_code == 2);
}

// `atlsctl evidence verify` with the Veraison evidence vector and a policy file next to its AK.
const std::string evidence_vectors = ATLS_SOURCE_DIR "/../shared/vectors/";

std::filesystem::path write_vector_policy(const temp_dir& dir) {
  (void)dir.write("ak.pem", read_file(evidence_vectors + "ak-pub.pem"));
  const std::string zero(64, '0');
  const std::string pcrs = "{0: " + zero + ", 1: " + zero + ", 2: " + zero + "}";
  return dir.write("policy.yaml", R"(verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values:
      bank: sha256
      pcrs: )" + pcrs + R"(
accept:
  minimum_status: affirming
  minimum_tiers: {executables: affirming, hardware: affirming}
  required_submodules: [PARSEC_TPM]
  max_age: 300s
)");
}

TEST_CASE("atlsctl evidence verify accepts the Veraison vector under a matching policy") {
  const temp_dir dir;
  const auto policy = write_vector_policy(dir);
  const auto result = atlsctl({"evidence", "verify", "--policy", policy.string(), "--nonce",
                               "DEADBEEFDEADBEEF", evidence_vectors + "parsec-tpm-evidence.cbor"});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(result.err.empty());
  const auto doc = boost::json::parse(result.out);
  CHECK(doc.at("status") == "affirming");
  CHECK(doc.at("nonce") == "deadbeefdeadbeef");
}

TEST_CASE("atlsctl evidence verify refuses a wrong nonce and says why") {
  const temp_dir dir;
  const auto policy = write_vector_policy(dir);
  const auto result = atlsctl({"evidence", "verify", "--policy", policy.string(), "--nonce",
                               "deadbeefdeadbeee", evidence_vectors + "parsec-tpm-evidence.cbor"});
  CHECK(result.exit_code == 1);
  CHECK(result.out.empty());
  CHECK(result.err == "atlsctl: evidence verify: " +
                          make_error_code(attest::evidence_errc::nonce_mismatch).message() + "\n");
}

TEST_CASE("atlsctl evidence verify prints a result the policy refuses, and exits 1") {
  const temp_dir dir;
  auto text = read_file(write_vector_policy(dir));
  // PCR 2 as its last digit 1: the vector then appraises as a warning.
  const auto pcr2 = text.find("2: ") + 3;
  text[pcr2 + 63] = '1';
  const auto policy = dir.write("warning.yaml", text);
  const auto result = atlsctl({"evidence", "verify", "--policy", policy.string(), "--nonce",
                               "deadbeefdeadbeef", evidence_vectors + "parsec-tpm-evidence.cbor"});
  CHECK(result.exit_code == 1);
  CHECK(boost::json::parse(result.out).at("status") == "warning");
  CHECK(result.err == "atlsctl: evidence verify: " +
                          make_error_code(verify::verify_errc::status_not_acceptable).message() +
                          "\n");
}

TEST_CASE("atlsctl evidence verify reports a broken policy file at its line") {
  const temp_dir dir;
  const auto policy = dir.write("policy.yaml", "verifier:\n  local:\n    trusted_akz: []\n");
  const auto result = atlsctl({"evidence", "verify", "--policy", policy.string(), "--nonce",
                               "deadbeefdeadbeef", evidence_vectors + "parsec-tpm-evidence.cbor"});
  CHECK(result.exit_code == 1);
  CHECK(result.out.empty());
  CHECK(result.err.find(policy.string() + ":3:5: verifier.local.trusted_akz: unknown key") !=
        std::string::npos);
  CHECK(atlsctl({"evidence", "verify", "--policy", policy.string(),
                 evidence_vectors + "parsec-tpm-evidence.cbor"})
            .exit_code == 2);
}

// ---------------------------------------------------------------------------------------------
// Provisioning a real Veraison: `atlsctl veraison endorsements`, and the local verifier fed
// with nothing but what it wrote.

// The kid the attester puts in evidence, read from `evidence dump`.
bytes kid_of_fresh_evidence(const swtpm& simulator, const temp_dir& dir) {
  const auto file = (dir / "kid-evidence.cbor").string();
  REQUIRE(atlsctl({"evidence", "collect", "--tcti", simulator.tcti(), "--nonce", "0123456789abcdef",
                   "--out", file})
              .exit_code == 0);
  const auto dumped = atlsctl({"evidence", "dump", file});
  REQUIRE(dumped.exit_code == 0);
  return from_hex(std::string(boost::json::parse(dumped.out).at("kid").as_string()));
}

// SHA-256(old || SHA-256(data)): TPM2_PCR_Extend of the sha256 bank with the digest of data,
// computed here apart from the TPM.
bytes extended(const bytes& old, const bytes& data) {
  auto input = old;
  const auto digest = sha256(data);
  input.insert(input.end(), digest.begin(), digest.end());
  return sha256(input);
}

TEST_CASE("atlsctl veraison endorsements writes the AK under base64(kid) and the PCRs' values") {
  const temp_dir dir;
  swtpm simulator(dir);
  REQUIRE(atlsctl({"tpm", "provision", "--tcti", simulator.tcti()}).exit_code == 0);
  const auto extend =
      atlsctl({"tpm", "extend", "--tcti", simulator.tcti(), "--pcr", "3", "--data", "0a0b0c"});
  INFO(extend.err);
  REQUIRE(extend.exit_code == 0);
  CHECK(extend.out == "extended sha256 PCR 3 with SHA-256 of 3 byte(s)\n");

  const auto out = dir / "endorsements";
  const auto made = atlsctl({"veraison", "endorsements", "--tcti", simulator.tcti(), "--pcrs",
                             "sha256:0,1,2,3", "--out", out.string()});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  CHECK(made.out.empty());
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(out)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  CHECK(names ==
        std::vector<std::string>{"comid-reference-values.json", "comid-trust-anchor.json"});

  const auto ta = boost::json::parse(read_file(out / "comid-trust-anchor.json"));
  const auto& avk = ta.at("triples").at("attester-verification-keys").as_array();
  REQUIRE(avk.size() == 1);
  const auto& env = avk[0].at("environment");
  CHECK(env.at("class").at("id").at("type") == "uuid");
  CHECK(env.at("class").at("id").at("value") == "4484fcb6-f1aa-49a3-aa27-988a83a67f1e");
  CHECK(env.at("instance").at("type") == "bytes");
  CHECK(std::string(env.at("instance").at("value").as_string()) ==
        verify::instance_id_of(kid_of_fresh_evidence(simulator, dir)));
  // The expectation above comes from the function atlsctl itself uses, so pin that function to
  // what Veraison decodes: the standard alphabet ('+', '/') and padding, not base64url.
  CHECK(verify::instance_id_of(bytes{0x01, 0xfb, 0xff, 0xfb, 0xef}) == "Afv/++8=");
  const auto& keys = avk[0].at("verification-keys").as_array();
  REQUIRE(keys.size() == 1);
  CHECK(keys[0].at("type") == "pkix-base64-key");
  const auto shown = atlsctl({"tpm", "show", "--json", "--tcti", simulator.tcti()});
  REQUIRE(shown.exit_code == 0);
  CHECK(std::string(keys[0].at("value").as_string()) + "\n" ==
        std::string(boost::json::parse(shown.out).at("ak").at("public_key_pem").as_string()));

  const auto rv = boost::json::parse(read_file(out / "comid-reference-values.json"));
  const auto& triple = rv.at("triples").at("reference-values").at(0);
  CHECK(triple.at("environment").as_object().size() == 1);
  CHECK(triple.at("environment").at("class") == env.at("class"));
  const auto& measurements = triple.at("measurements").as_array();
  REQUIRE(measurements.size() == 4);
  const bytes zero(32, 0);
  for (std::size_t pcr = 0; pcr < 4; ++pcr) {
    CAPTURE(pcr);
    const auto expected = pcr == 3 ? extended(zero, from_hex("0a0b0c")) : zero;
    CHECK(measurements[pcr].at("key") == boost::json::value{{"type", "uint"}, {"value", pcr}});
    CHECK(measurements[pcr].at("value").at("digests") ==
          boost::json::parse("[[1, \"" + verify::base64url_encode(expected) + "\"]]"));
  }

  // Written again for the same machine, the files are the same; with another class, both say so.
  const auto again = atlsctl(
      {"veraison", "endorsements", "--tcti", simulator.tcti(), "--pcrs", "sha256:0,1,2,3",
       "--class-id", "01234567-89AB-CDEF-0123-456789ABCDEF", "--out", (dir / "other").string()});
  REQUIRE(again.exit_code == 0);
  for (const auto* name : {"comid-trust-anchor.json", "comid-reference-values.json"}) {
    CHECK(read_file(dir / "other" / name).find("\"01234567-89ab-cdef-0123-456789abcdef\"") !=
          std::string::npos);
  }
  REQUIRE(atlsctl({"veraison", "endorsements", "--tcti", simulator.tcti(), "--pcrs",
                   "sha256:0,1,2,3", "--out", out.string()})
              .exit_code == 0);
  CHECK(boost::json::parse(read_file(out / "comid-trust-anchor.json")) == ta);
  CHECK(boost::json::parse(read_file(out / "comid-reference-values.json")) == rv);
}

TEST_CASE(
    "the local verifier given only atlsctl's endorsements accepts this TPM until a PCR changes") {
  const temp_dir dir;
  swtpm simulator(dir);
  REQUIRE(atlsctl({"tpm", "provision", "--tcti", simulator.tcti()}).exit_code == 0);
  const auto made = atlsctl({"veraison", "endorsements", "--tcti", simulator.tcti(), "--out",
                             (dir / "endorsements").string()});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  const auto policy = dir.write("policy.yaml", R"(verifier:
  local:
    endorsements: endorsements
accept:
  minimum_status: affirming
  required_submodules: [PARSEC_TPM]
)");
  const std::string nonce = "00112233445566778899aabbccddeeff";
  const auto collect_and_verify = [&](const std::string& name) {
    const auto evidence = (dir / name).string();
    // The default PCR selection, 0 to 7, as `veraison endorsements` read them.
    REQUIRE(atlsctl({"evidence", "collect", "--tcti", simulator.tcti(), "--nonce", nonce, "--out",
                     evidence})
                .exit_code == 0);
    return atlsctl({"evidence", "verify", "--policy", policy.string(), "--nonce", nonce, evidence});
  };

  const auto accepted = collect_and_verify("before.cbor");
  INFO(accepted.err);
  CHECK(accepted.exit_code == 0);
  CHECK(boost::json::parse(accepted.out).at("status") == "affirming");

  REQUIRE(atlsctl({"tpm", "extend", "--tcti", simulator.tcti(), "--pcr", "7", "--data",
                   "6368616e676564"})
              .exit_code == 0);
  const auto refused = collect_and_verify("after.cbor");
  CHECK(refused.exit_code == 1);
  const auto result = boost::json::parse(refused.out);
  CHECK(result.at("status") == "warning");
  CHECK(refused.err == "atlsctl: evidence verify: " +
                           make_error_code(verify::verify_errc::status_not_acceptable).message() +
                           "\n");
}

TEST_CASE("atlsctl veraison endorsements and tpm extend refuse bad arguments before the TPM") {
  const temp_dir dir;
  const auto tcti = std::string("swtpm:host=127.0.0.1,port=1");
  const auto no_out = atlsctl({"veraison", "endorsements", "--tcti", tcti});
  CHECK(no_out.exit_code == 2);
  CHECK(no_out.err == "atlsctl: veraison endorsements needs --out DIR\n");
  const auto bad_class = atlsctl({"veraison", "endorsements", "--tcti", tcti, "--class-id",
                                  "not-a-uuid", "--out", (dir / "x").string()});
  CHECK(bad_class.exit_code == 2);
  CHECK(bad_class.err == "atlsctl: --class-id must be a UUID (8-4-4-4-12 hex digits)\n");
  CHECK(atlsctl({"veraison", "endorsements", "--tcti", tcti, "--pcrs", "sha1:0", "--out",
                 (dir / "x").string()})
            .exit_code == 2);
  CHECK_FALSE(std::filesystem::exists(dir / "x"));
  const auto pcr = atlsctl({"tpm", "extend", "--tcti", tcti, "--pcr", "24", "--data", "00"});
  CHECK(pcr.exit_code == 2);
  CHECK(pcr.err == "atlsctl: --pcr must be 0 to 23\n");
  const auto data = atlsctl({"tpm", "extend", "--tcti", tcti, "--pcr", "7", "--data", "0g"});
  CHECK(data.exit_code == 2);
  CHECK(data.err == "atlsctl: --data must be 1 to 1024 bytes of hex\n");
}

}  // namespace
}  // namespace atls::test
