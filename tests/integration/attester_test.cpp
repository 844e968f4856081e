// The attester interface: what the handshake code will ask of the TPM, and why a relying party
// must check the attested key against the key that signed the handshake.
#include "atls/attest/attester.hpp"

#include <array>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "support/replay_attester.hpp"
#include "support/swtpm.hpp"

namespace atls::attest {
namespace {

const pcr_selection pcrs_0_to_7{.hash_alg = 0x000B, .pcrs = {0, 1, 2, 3, 4, 5, 6, 7}};

// Runs the attester's evidence() on an io_context, as the handshake code will.
result<evidence_bundle> collect(attester& a, const bytes& nonce) {
  boost::asio::io_context io;
  auto done = boost::asio::co_spawn(
      io, [&a, nonce] { return a.evidence(nonce); }, boost::asio::use_future);
  io.run();
  return done.get();
}

// A provisioned swtpm and a TPM attester on it.
struct tpm_host {
  explicit tpm_host(const test::temp_dir& dir) : simulator(dir) {
    device = std::make_shared<tpm>(tpm_options{.tcti = simulator.tcti()});
    const auto provisioned = device->provision();
    REQUIRE(provisioned.has_value());
    ak_spki = provisioned->keys.ak.spki_der;
    auto opened = tpm_attester::open(device, pcrs_0_to_7);
    REQUIRE(opened.has_value());
    attester = std::move(*opened);
  }
  test::swtpm simulator;
  std::shared_ptr<tpm> device;
  bytes ak_spki;
  std::unique_ptr<tpm_attester> attester;
};

bool signs_and_verifies(EVP_PKEY* signer, const bytes& spki_der) {
  const std::array<unsigned char, 5> message{'h', 'e', 'l', 'l', 'o'};
  std::array<unsigned char, 80> signature{};
  std::size_t signature_len = signature.size();
  EVP_MD_CTX* sign = EVP_MD_CTX_new();
  bool ok =
      EVP_DigestSignInit(sign, nullptr, EVP_sha256(), nullptr, signer) == 1 &&
      EVP_DigestSign(sign, signature.data(), &signature_len, message.data(), message.size()) == 1;
  EVP_MD_CTX_free(sign);
  const unsigned char* p = spki_der.data();
  EVP_PKEY* public_key = d2i_PUBKEY(nullptr, &p, static_cast<long>(spki_der.size()));
  EVP_MD_CTX* verify = EVP_MD_CTX_new();
  ok = ok && public_key != nullptr &&
       EVP_DigestVerifyInit(verify, nullptr, EVP_sha256(), nullptr, public_key) == 1 &&
       EVP_DigestVerify(verify, signature.data(), signature_len, message.data(), message.size()) ==
           1;
  EVP_MD_CTX_free(verify);
  EVP_PKEY_free(public_key);
  return ok;
}

TEST_CASE("the TPM attester's evidence verifies under its AK and vouches for its own TLS key") {
  const test::temp_dir dir;
  tpm_host host(dir);
  const bytes nonce(32, 0x42);

  const auto bundle = collect(*host.attester, nonce);
  REQUIRE(bundle.has_value());
  CHECK(bundle->media_type == parsec_tpm_media_type);
  const auto decoded = decode(bundle->data);
  REQUIRE(decoded.has_value());
  const auto verified = verify(*decoded, host.ak_spki, nonce);
  REQUIRE(verified.has_value());
  CHECK(verified->attested_key_spki == host.attester->tls_public_key());
  // Evidence for one nonce is not evidence for another.
  CHECK(verify(*decoded, host.ak_spki, bytes(32, 0x43)).error() == evidence_errc::nonce_mismatch);
}

TEST_CASE("the TPM attester answers every challenge on one TPM connection, not only the first") {
  const test::temp_dir dir;
  tpm_host host(dir);
  for (std::uint8_t round = 1; round <= 3; ++round) {
    const bytes nonce(32, round);
    const auto bundle = collect(*host.attester, nonce);
    REQUIRE_MESSAGE(bundle.has_value(), "round " << int{round});
    const auto decoded = decode(bundle->data);
    REQUIRE(decoded.has_value());
    CHECK(verify(*decoded, host.ak_spki, nonce).has_value());
  }
}

TEST_CASE("the TPM attester's TLS key signs inside the TPM for its public key") {
  const test::temp_dir dir;
  tpm_host host(dir);
  CHECK(signs_and_verifies(host.attester->tls_key().get(), host.attester->tls_public_key()));
}

TEST_CASE("relayed evidence verifies under the victim's AK but vouches for the victim's TLS key") {
  const test::temp_dir victim_dir;
  tpm_host victim(victim_dir);
  const bytes nonce(32, 0x07);
  auto genuine = collect(*victim.attester, nonce);
  REQUIRE(genuine.has_value());

  test::replay_attester relay(*genuine);
  const auto relayed = collect(relay, nonce);
  REQUIRE(relayed.has_value());
  const auto decoded = decode(relayed->data);
  REQUIRE(decoded.has_value());
  const auto verified = verify(*decoded, victim.ak_spki, nonce);
  // Signatures and nonce alone accept it: this is the diversion attack.
  REQUIRE(verified.has_value());
  // The key check catches it: the relay signs TLS with a key the evidence does not name.
  CHECK(verified->attested_key_spki != relay.tls_public_key());
  CHECK(verified->attested_key_spki == victim.attester->tls_public_key());
  CHECK(signs_and_verifies(relay.tls_key().get(), relay.tls_public_key()));
}

}  // namespace
}  // namespace atls::attest
