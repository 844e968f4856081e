// libFuzzer target for the Parsec TPM evidence codec: the CBOR container, the TPM parsers, the
// SPKI builder, the JSON dump and verify; and the local verifier's appraisal of the same input,
// with the AK trusted by SPKI and by a pinned hash (ECDSA key recovery). Build and run: see
// README.md next to this file.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include <boost/json.hpp>
#include <openssl/evp.h>

#include "atls/attest/evidence.hpp"
#include "atls/verify/local_verifier.hpp"

namespace atls::attest {
namespace {

// The AK and challenge of the Veraison vector (../shared/vectors), so that inputs grown from
// that seed get past the signature checks into the name, attribute and SPKI checks.
constexpr std::array<std::uint8_t, 91> ak_spki_der{
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0xda, 0x50, 0x75, 0xc6, 0xd7,
    0x08, 0x59, 0xe3, 0xc8, 0xb7, 0xf5, 0xb0, 0xb7, 0xeb, 0x3c, 0x61, 0xba, 0x7e, 0xe6, 0x38, 0xbc,
    0xb7, 0x6a, 0x73, 0x18, 0x32, 0x92, 0x38, 0x6e, 0xf1, 0x4c, 0x62, 0xb9, 0x80, 0xe6, 0x24, 0x70,
    0xb0, 0x87, 0xcf, 0x88, 0xb8, 0x2f, 0xfc, 0x86, 0xcf, 0x21, 0x26, 0x04, 0xed, 0x66, 0x64, 0x56,
    0x4d, 0xb8, 0x9c, 0xf5, 0xe1, 0x7d, 0x09, 0xdb, 0x8f, 0x97, 0x41};
constexpr std::array<std::uint8_t, 8> challenge{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef};

// The vector's reference values: sha256 PCRs 0, 1 and 2, all zero.
verify::pcr_values vector_pcrs() {
  verify::pcr_values out;
  for (const std::uint8_t pcr : {0, 1, 2}) {
    out.values[pcr] = verify::bytes(32, 0);
  }
  return out;
}

const verify::local_verifier_options& options_by_spki() {
  static const verify::local_verifier_options options = [] {
    verify::local_verifier_options o;
    o.trusted_aks = {verify::bytes(ak_spki_der.begin(), ak_spki_der.end())};
    o.reference = vector_pcrs();
    return o;
  }();
  return options;
}

const verify::local_verifier_options& options_by_hash() {
  static const verify::local_verifier_options options = [] {
    verify::local_verifier_options o;
    verify::sha256_digest pin{};
    unsigned int size = 0;
    if (EVP_Digest(ak_spki_der.data(), ak_spki_der.size(), pin.data(), &size, EVP_sha256(),
                   nullptr) != 1) {
      std::abort();
    }
    o.trusted_ak_hashes = {pin};
    o.reference = vector_pcrs();
    return o;
  }();
  return options;
}

// The appraisal of the raw input, once with the AK as an SPKI and once pinned by hash: both
// must reach the same verdict, and an accepted result must be evidence that attest::verify
// accepts, for the key it certifies.
void appraise(std::span<const std::uint8_t> input) {
  const auto now = verify::clock::time_point(std::chrono::seconds(1'700'000'000));
  const auto by_spki =
      verify::appraise_parsec_tpm(options_by_spki(), input, parsec_tpm_media_type, challenge, now);
  const auto by_hash =
      verify::appraise_parsec_tpm(options_by_hash(), input, parsec_tpm_media_type, challenge, now);
  if (by_spki.has_value() != by_hash.has_value()) {
    std::abort();
  }
  if (!by_spki) {
    if (by_spki.error() != by_hash.error()) {
      std::abort();
    }
    return;
  }
  if (by_spki->attested_key != by_hash->attested_key || by_spki->status != by_hash->status ||
      by_spki->trust != by_hash->trust) {
    std::abort();
  }
  const auto evidence = decode(input);
  const auto verified = evidence ? verify(*evidence, ak_spki_der, challenge)
                                 : result<verified_evidence>(evidence.error());
  if (!verified || by_spki->attested_key != verified->attested_key_spki) {
    std::abort();
  }
}

// Results are discarded on purpose: the fuzzer looks for crashes, leaks and UB, not outcomes.
void exercise_tpm_parsers(std::span<const std::uint8_t> data) {
  (void)parse_attest(data);
  (void)parse_signature(data);
  (void)parse_ecc_public(data);
  (void)tpm_name(data);
  (void)spki_der(data);
}

void run(std::span<const std::uint8_t> input) {
  // The TPM parsers straight on the input, so that they are reached without a CBOR frame.
  exercise_tpm_parsers(input);
  appraise(input);

  const auto evidence = decode(input);
  if (!evidence) {
    return;
  }
  exercise_tpm_parsers(evidence->kat_sig);
  exercise_tpm_parsers(evidence->pub_area);
  exercise_tpm_parsers(evidence->cert_info);
  exercise_tpm_parsers(evidence->pat_sig);
  exercise_tpm_parsers(evidence->attest_info);

  // The dump must always be JSON, whatever the evidence holds.
  boost::system::error_code ec;
  (void)boost::json::parse(to_json(*evidence), ec);
  if (ec) {
    std::abort();
  }

  const auto verified = verify(*evidence, ak_spki_der, challenge);
  if (verified) {
    // Anything that verifies is bound to the attested key it reports.
    const auto spki = spki_der(evidence->pub_area);
    if (!spki || *spki != verified->attested_key_spki) {
      std::abort();
    }
  }

  // Round trip: what decode accepted, encode writes in a form decode reads back identically.
  // Decode admits only shortest lengths and the fixed tpmVer, so the two encodings differ at most
  // in key order and are exactly as long.
  const auto encoded = encode(*evidence);
  const auto again = decode(encoded);
  if (!again || *again != *evidence || encoded.size() != input.size()) {
    std::abort();
  }
}

}  // namespace
}  // namespace atls::attest

// The entry point's name is libFuzzer's.
extern "C" int LLVMFuzzerTestOneInput(  // NOLINT(readability-identifier-naming)
    const std::uint8_t* data, std::size_t size) {
  atls::attest::run({data, size});
  return 0;
}
