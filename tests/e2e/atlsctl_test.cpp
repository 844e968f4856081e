// atlsctl's TPM and evidence commands against swtpm, as an operator runs them.
#include <chrono>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include "support/process.hpp"
#include "support/swtpm.hpp"
#include "support/temp_dir.hpp"

namespace atls::test {
namespace {

using namespace std::chrono_literals;

run_result atlsctl(std::vector<std::string> args) {
  args.insert(args.begin(), ATLSCTL_BINARY);
  return run(std::move(args), 30s);
}

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

}  // namespace
}  // namespace atls::test
