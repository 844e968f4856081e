// The TPM attester against a real TPM 2.0 implementation (swtpm), verified with OpenSSL alone.
#include "atls/attest/tpm.hpp"

#include <array>
#include <memory>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <doctest/doctest.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "atls/attest/evidence.hpp"

#include "support/swtpm.hpp"

namespace atls::attest {
namespace {

const pcr_selection pcrs_0_to_7{.hash_alg = 0x000B, .pcrs = {0, 1, 2, 3, 4, 5, 6, 7}};

bytes nonce_of(std::uint8_t fill) {
  return bytes(32, fill);
}

// ECDSA P-256/SHA-256 verification of a TPM signature with nothing but OpenSSL: the TPMT_SIGNATURE
// is sigAlg(2) hashAlg(2) r(TPM2B) s(TPM2B), big-endian.
bool openssl_verifies(const bytes& spki_der, const bytes& message, const bytes& tpm_signature) {
  if (tpm_signature.size() < 8) {
    return false;
  }
  std::size_t at = 4;
  const auto take = [&](bytes& out) {
    if (at + 2 > tpm_signature.size()) {
      return false;
    }
    const std::size_t n = (std::size_t{tpm_signature[at]} << 8) | tpm_signature[at + 1];
    at += 2;
    if (at + n > tpm_signature.size()) {
      return false;
    }
    out.assign(tpm_signature.begin() + static_cast<std::ptrdiff_t>(at),
               tpm_signature.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
    return true;
  };
  bytes r;
  bytes s;
  if (!take(r) || !take(s) || at != tpm_signature.size()) {
    return false;
  }
  ECDSA_SIG* sig = ECDSA_SIG_new();
  ECDSA_SIG_set0(sig, BN_bin2bn(r.data(), static_cast<int>(r.size()), nullptr),
                 BN_bin2bn(s.data(), static_cast<int>(s.size()), nullptr));
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  const unsigned char* p = spki_der.data();
  EVP_PKEY* key = d2i_PUBKEY(nullptr, &p, static_cast<long>(spki_der.size()));
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  const bool ok = key != nullptr &&
                  EVP_DigestVerifyInit(md, nullptr, EVP_sha256(), nullptr, key) == 1 &&
                  EVP_DigestVerify(md, der, static_cast<std::size_t>(der_len), message.data(),
                                   message.size()) == 1;
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(key);
  OPENSSL_free(der);
  return ok;
}

bool openssl_verifies_digest_signature(const bytes& spki_der, const bytes& digest,
                                       const bytes& der_signature) {
  const unsigned char* p = spki_der.data();
  EVP_PKEY* key = d2i_PUBKEY(nullptr, &p, static_cast<long>(spki_der.size()));
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(key, nullptr);
  const bool ok = ctx != nullptr && EVP_PKEY_verify_init(ctx) == 1 &&
                  EVP_PKEY_verify(ctx, der_signature.data(), der_signature.size(), digest.data(),
                                  digest.size()) == 1;
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(key);
  return ok;
}

TEST_CASE("provisioning creates the AK and TIK once and reuses them afterwards") {
  const test::temp_dir dir;
  test::swtpm simulator(dir);
  tpm device({.tcti = simulator.tcti()});

  CHECK(device.keys().error() == tpm_errc::not_provisioned);
  const auto first = device.provision();
  REQUIRE(first.has_value());
  CHECK(first->ak_created);
  CHECK(first->tik_created);
  const auto second = device.provision();
  REQUIRE(second.has_value());
  CHECK_FALSE(second->ak_created);
  CHECK_FALSE(second->tik_created);
  CHECK(second->keys.ak.spki_der == first->keys.ak.spki_der);
  CHECK(second->keys.tik.spki_der == first->keys.tik.spki_der);
  CHECK(first->keys.ak.handle == default_ak_handle);
  CHECK(first->keys.tik.handle == default_tik_handle);
  CHECK(first->keys.ak.name.size() == 34);  // nameAlg SHA-256 || digest

  // Another process (a fresh ESAPI context) sees the same persisted keys.
  tpm again({.tcti = simulator.tcti()});
  const auto keys = again.keys();
  REQUIRE(keys.has_value());
  CHECK(keys->tik.spki_der == first->keys.tik.spki_der);
}

TEST_CASE("certify and quote verify with OpenSSL alone against the AK public key") {
  const test::temp_dir dir;
  test::swtpm simulator(dir);
  tpm device({.tcti = simulator.tcti()});
  const auto report = device.provision();
  REQUIRE(report.has_value());
  const auto nonce = nonce_of(0x5a);

  const auto certified = device.certify(nonce);
  REQUIRE(certified.has_value());
  CHECK(openssl_verifies(report->keys.ak.spki_der, certified->attest, certified->signature));
  const auto quoted = device.quote(nonce, pcrs_0_to_7);
  REQUIRE(quoted.has_value());
  CHECK(openssl_verifies(report->keys.ak.spki_der, quoted->attest, quoted->signature));

  // And not against another key: the TIK is not the AK.
  CHECK_FALSE(openssl_verifies(report->keys.tik.spki_der, quoted->attest, quoted->signature));
}

TEST_CASE("the evidence carries the nonce asked for, and a different nonce does not verify") {
  const test::temp_dir dir;
  test::swtpm simulator(dir);
  tpm device({.tcti = simulator.tcti()});
  const auto report = device.provision();
  REQUIRE(report.has_value());
  const auto nonce = nonce_of(0x11);

  const auto evidence = device.evidence(nonce, pcrs_0_to_7);
  REQUIRE(evidence.has_value());
  const auto verified = verify(*evidence, report->keys.ak.spki_der, nonce);
  REQUIRE(verified.has_value());
  CHECK(verified->certify.extra_data == nonce);
  CHECK(verified->quote.extra_data == nonce);
  CHECK(verified->attested_key_spki == report->keys.tik.spki_der);
  CHECK(verify(*evidence, report->keys.ak.spki_der, nonce_of(0x12)).error() ==
        evidence_errc::nonce_mismatch);

  // kid = 0x01 || SHA-256(AK public area), the same in every evidence from this TPM.
  std::array<std::uint8_t, SHA256_DIGEST_LENGTH> ak_hash{};
  SHA256(report->keys.ak.public_area.data(), report->keys.ak.public_area.size(), ak_hash.data());
  REQUIRE(evidence->kid.size() == 33);
  CHECK(evidence->kid[0] == 0x01);
  CHECK(bytes(evidence->kid.begin() + 1, evidence->kid.end()) ==
        bytes(ak_hash.begin(), ak_hash.end()));

  // The encoded form decodes to the same evidence.
  const auto decoded = decode(encode(*evidence));
  REQUIRE(decoded.has_value());
  CHECK(decoded->attest_info == evidence->attest_info);
}

TEST_CASE("extending a PCR changes the quoted digest") {
  const test::temp_dir dir;
  test::swtpm simulator(dir);
  tpm device({.tcti = simulator.tcti()});
  REQUIRE(device.provision().has_value());
  const auto digest_now = [&] {
    auto quoted = device.quote(nonce_of(1), pcrs_0_to_7);
    REQUIRE(quoted.has_value());
    auto attest = parse_attest(quoted->attest);
    REQUIRE(attest.has_value());
    return std::get<quote_info>(attest->attested).pcr_digest;
  };
  const auto before = digest_now();
  CHECK(digest_now() == before);  // stable while nothing changes
  const std::array<std::uint8_t, 4> event{'b', 'o', 'o', 't'};
  const auto extended = device.extend_pcr(7, event);
  INFO((extended.has_value() ? std::string("ok") : extended.error().message()));
  REQUIRE(extended.has_value());
  CHECK(digest_now() != before);
  // A PCR outside the selection leaves the digest alone.
  const auto after = digest_now();
  REQUIRE(device.extend_pcr(16, event).has_value());
  CHECK(digest_now() == after);
}

TEST_CASE("the TIK signs a digest inside the TPM and OpenSSL verifies it with the TIK public key") {
  const test::temp_dir dir;
  test::swtpm simulator(dir);
  tpm device({.tcti = simulator.tcti()});
  const auto report = device.provision();
  REQUIRE(report.has_value());
  bytes digest(32);
  SHA256(reinterpret_cast<const unsigned char*>("transcript"), 10, digest.data());
  const auto signature = device.sign(digest);
  REQUIRE(signature.has_value());
  CHECK(openssl_verifies_digest_signature(report->keys.tik.spki_der, digest, *signature));
  CHECK_FALSE(openssl_verifies_digest_signature(report->keys.ak.spki_der, digest, *signature));
  CHECK(device.sign(bytes(31)).error() == tpm_errc::bad_argument);
}

TEST_CASE("a TPM that goes away gives a clear error, and the module recovers when it is back") {
  const test::temp_dir dir;
  test::swtpm simulator(dir);
  tpm device({.tcti = simulator.tcti()});
  REQUIRE(device.provision().has_value());
  REQUIRE(device.quote(nonce_of(2), pcrs_0_to_7).has_value());

  simulator.kill();
  const auto failed = device.quote(nonce_of(3), pcrs_0_to_7);
  REQUIRE_FALSE(failed.has_value());
  CHECK(failed.error().category() == tss2_category());
  INFO(failed.error().message());
  CHECK(failed.error().message().find("tcti") != std::string::npos);
  // Still down: the reconnect attempt fails the same clear way, without hanging.
  CHECK_FALSE(device.keys().has_value());

  simulator.start();  // same state: the persisted keys are still there
  const auto recovered = device.quote(nonce_of(4), pcrs_0_to_7);
  CHECK(recovered.has_value());
}

TEST_CASE("Asio code awaits TPM operations without blocking its thread") {
  const test::temp_dir dir;
  test::swtpm simulator(dir);
  tpm device({.tcti = simulator.tcti()});
  REQUIRE(device.provision().has_value());
  boost::asio::io_context io;
  bool done = false;
  int ticks = 0;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto evidence =
            co_await device.run([](tpm& t) { return t.evidence(nonce_of(9), pcrs_0_to_7); });
        CHECK(evidence.has_value());
        done = true;
      },
      [](const std::exception_ptr& e) { CHECK_FALSE(e); });
  // The io_context keeps serving other work while the TPM is busy.
  while (!done) {
    io.run_one_for(std::chrono::milliseconds(1));
    ++ticks;
    REQUIRE(ticks < 100000);
  }
  CHECK(done);
}

}  // namespace
}  // namespace atls::attest
