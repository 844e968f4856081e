// The local verifier as a relying party meets it: the Veraison vector appraises as Veraison
// appraises it, every tampered or untrusted piece of evidence is refused with its own reason,
// and the verifier policy file reports each mistake at its line.
#include "atls/verify/local_verifier.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>
#include <doctest/doctest.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "atls/attest/evidence.hpp"
#include "atls/config/verifier_policy.hpp"
#include "atls/verify/error.hpp"

#include "../../../lib/verify/detail/ecdsa_recover.hpp"
#include "support/evidence_builder.hpp"
#include "support/temp_dir.hpp"

namespace atls::verify {
namespace {

using attest::evidence_errc;
using test::evidence_builder;

constexpr std::uint16_t sha256_bank = 0x000b;

const clock::time_point now = clock::time_point(std::chrono::seconds(1'700'000'000));

pcr_values zero_pcrs(std::initializer_list<std::uint8_t> pcrs) {
  pcr_values out;
  for (const auto pcr : pcrs) {
    out.values[pcr] = bytes(32, 0);
  }
  return out;
}

// The Veraison vector's AK and its all-zero sha256 PCRs 0, 1, 2.
local_verifier_options vector_options() {
  local_verifier_options o;
  o.trusted_aks = {test::vector_ak()};
  o.reference = zero_pcrs({0, 1, 2});
  return o;
}

local_verifier_options options_for(const evidence_builder& b) {
  local_verifier_options o;
  o.trusted_aks = {b.ak_spki()};
  o.reference = zero_pcrs({0, 1, 2});
  return o;
}

result<attestation_result> appraise(const local_verifier_options& o,
                                    std::span<const std::uint8_t> evidence,
                                    std::span<const std::uint8_t> nonce = test::vector_nonce,
                                    std::string_view media_type = attest::parsec_tpm_media_type) {
  return appraise_parsec_tpm(o, evidence, media_type, nonce, now);
}

sha256_digest pin_of(std::span<const std::uint8_t> spki) {
  const auto digest = test::sha256(spki);
  sha256_digest out{};
  std::copy(digest.begin(), digest.end(), out.begin());
  return out;
}

// The affirming result Veraison's parsec-tpm scheme gives, for the attested key `key`.
void check_affirming(const result<attestation_result>& r, const bytes& key) {
  REQUIRE_MESSAGE(r.has_value(), r.error().message());
  CHECK(r->status == ear_status::affirming);
  CHECK(r->trust[trust_claim::instance_identity] == std::optional<std::int8_t>(2));
  CHECK(r->trust[trust_claim::hardware] == std::optional<std::int8_t>(2));
  CHECK(r->trust[trust_claim::executables] == std::optional<std::int8_t>(2));
  CHECK_FALSE(r->trust[trust_claim::configuration].has_value());
  CHECK(r->attested_key == std::optional<bytes>(key));
  REQUIRE(r->submodules.size() == 1);
  const auto& sub = r->submodules[0];
  CHECK(sub.name == "PARSEC_TPM");
  CHECK(sub.status == r->status);
  CHECK(sub.trust == r->trust);
  CHECK(sub.attested_key == r->attested_key);
}

// ---------------------------------------------------------------------------------------------
// The Veraison vector.

TEST_CASE("the Veraison vector with its AK, nonce and zero PCRs appraises as affirming") {
  const auto r = appraise(vector_options(), test::vector_cbor());
  const auto key = attest::spki_der(test::vector_evidence().pub_area);
  REQUIRE(key.has_value());
  check_affirming(r, *key);
  CHECK(r->nonce == std::optional<bytes>(test::vector_nonce));
  CHECK(r->issued_at == now);
  CHECK_FALSE(r->expires_at.has_value());
  CHECK(r->verifier.developer == "atlsd local verifier");
  CHECK(r->verifier.build.starts_with("atls "));
  CHECK(r->verifier.build.size() > 5);
  CHECK(r->raw_ear.empty());
}

// base64url without padding (RFC 4648 §5), as CoMID JSON writes digests.
bytes base64url(std::string_view text) {
  constexpr std::string_view alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  bytes out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const auto value = alphabet.find(c);
    REQUIRE(value != std::string_view::npos);
    buffer = (buffer << 6U) | static_cast<std::uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>(buffer >> static_cast<unsigned>(bits)));
    }
  }
  return out;
}

TEST_CASE("the vector appraises as affirming against comid-refval.json's sha256 values") {
  const auto text = test::read_binary_file(test::vectors_dir() + "comid-refval.json");
  const auto doc = boost::json::parse(std::string(text.begin(), text.end()));
  pcr_values reference;
  for (const auto& m : doc.at_pointer("/triples/reference-values/0/measurements").as_array()) {
    const auto index = m.at("key").at("value").to_number<std::uint8_t>();
    for (const auto& digest : m.at("value").at("digests").as_array()) {
      // CoMID hash algorithm 1 is sha-256 (IANA Named Information registry).
      if (digest.as_array().at(0).to_number<int>() == 1) {
        reference.values[index] = base64url(digest.as_array().at(1).as_string());
      }
    }
  }
  REQUIRE(reference.values.size() == 3);
  CHECK(reference.values.at(2).size() == 32);

  auto o = vector_options();
  o.reference = reference;
  check_affirming(appraise(o, test::vector_cbor()),
                  *attest::spki_der(test::vector_evidence().pub_area));
}

TEST_CASE("a nonce other than the vector's challenge is nonce_mismatch") {
  auto other = test::vector_nonce;
  other.back() ^= 1U;
  CHECK(appraise(vector_options(), test::vector_cbor(), other).error() ==
        evidence_errc::nonce_mismatch);
  CHECK(appraise(vector_options(), test::vector_cbor(), bytes{}).error() ==
        evidence_errc::nonce_mismatch);
}

TEST_CASE("a PCR value that differs from the reference gives a warning, not an error") {
  auto o = vector_options();
  auto reference = zero_pcrs({0, 1, 2});
  reference.values[1][31] = 1;
  o.reference = reference;
  const auto r = appraise(o, test::vector_cbor());
  REQUIRE_MESSAGE(r.has_value(), r.error().message());
  CHECK(r->status == ear_status::warning);
  CHECK(r->trust[trust_claim::executables] == std::optional<std::int8_t>(33));
  CHECK(r->trust[trust_claim::hardware] == std::optional<std::int8_t>(2));
  CHECK(r->trust[trust_claim::instance_identity] == std::optional<std::int8_t>(2));
  REQUIRE(r->submodules.size() == 1);
  CHECK(r->submodules[0].status == ear_status::warning);
  CHECK(r->attested_key.has_value());
}

TEST_CASE("a quoted PCR without a reference value is no_reference_values") {
  auto o = vector_options();
  o.reference = zero_pcrs({0, 2});
  CHECK(appraise(o, test::vector_cbor()).error() == verify_errc::no_reference_values);
  // More references than the quote covers is fine: only quoted PCRs are compared.
  o.reference = zero_pcrs({0, 1, 2, 3});
  CHECK(appraise(o, test::vector_cbor()).has_value());
}

TEST_CASE("reference values of another bank are no_reference_values") {
  auto o = vector_options();
  auto sha1 = zero_pcrs({0, 1, 2});
  sha1.bank = 0x0004;
  o.reference = sha1;
  CHECK(appraise(o, test::vector_cbor()).error() == verify_errc::no_reference_values);

  // And a quote of another bank against sha256 references.
  evidence_builder b;
  b.selections = {{.hash_alg = test::tpm_alg_sha384, .pcrs = {0, 1, 2}}};
  CHECK(appraise(options_for(b), b.cbor()).error() == verify_errc::no_reference_values);
  // A second, non-empty selection in another bank is not covered either.
  evidence_builder two;
  two.selections = {{.hash_alg = sha256_bank, .pcrs = {0, 1, 2}},
                    {.hash_alg = test::tpm_alg_sha1, .pcrs = {0}}};
  CHECK(appraise(options_for(two), two.cbor()).error() == verify_errc::no_reference_values);
}

TEST_CASE("a quote that selects no PCR is no_reference_values") {
  evidence_builder b;
  b.selections = {{.hash_alg = sha256_bank, .pcrs = {}}};
  CHECK(appraise(options_for(b), b.cbor()).error() == verify_errc::no_reference_values);
  b.selections = {};
  CHECK(appraise(options_for(b), b.cbor()).error() == verify_errc::no_reference_values);
}

TEST_CASE("evidence from an AK that is not trusted is unknown_attestation_key") {
  const auto other = test::generate_key();
  auto o = vector_options();
  o.trusted_aks = {test::spki_of(other.get())};
  CHECK(appraise(o, test::vector_cbor()).error() == verify_errc::unknown_attestation_key);
  o.trusted_aks = {};
  CHECK(appraise(o, test::vector_cbor()).error() == verify_errc::unknown_attestation_key);
}

TEST_CASE("the trusted AK is found among several, even after an unusable one") {
  const auto other = test::generate_key();
  const auto p384 = test::generate_key("P-384");
  auto o = vector_options();
  o.trusted_aks = {test::spki_of(other.get()), test::spki_of(p384.get()), bytes{0x30, 0x00},
                   test::vector_ak()};
  CHECK(appraise(o, test::vector_cbor()).has_value());
  // Without the right one, unusable keys do not turn "unknown key" into another error.
  o.trusted_aks.pop_back();
  CHECK(appraise(o, test::vector_cbor()).error() == verify_errc::unknown_attestation_key);
}

TEST_CASE("an AK pinned by the SHA-256 of its SPKI is recovered from the signatures") {
  auto o = vector_options();
  o.trusted_aks = {};
  o.trusted_ak_hashes = {pin_of(test::vector_ak())};
  check_affirming(appraise(o, test::vector_cbor()),
                  *attest::spki_der(test::vector_evidence().pub_area));

  evidence_builder b;
  auto pinned = options_for(b);
  pinned.trusted_aks = {};
  pinned.trusted_ak_hashes = {pin_of(test::spki_of(test::generate_key().get())),
                              pin_of(b.ak_spki())};
  check_affirming(appraise(pinned, b.cbor()), b.tik_spki());
}

TEST_CASE("a pinned hash of another key is unknown_attestation_key") {
  auto o = vector_options();
  o.trusted_aks = {};
  auto wrong = pin_of(test::vector_ak());
  wrong[0] ^= 1U;
  o.trusted_ak_hashes = {wrong};
  CHECK(appraise(o, test::vector_cbor()).error() == verify_errc::unknown_attestation_key);
}

TEST_CASE("a pinned AK still needs the right nonce and bindings") {
  evidence_builder b;
  b.quote_nonce[0] ^= 1U;
  auto o = options_for(b);
  o.trusted_aks = {};
  o.trusted_ak_hashes = {pin_of(b.ak_spki())};
  CHECK(appraise(o, b.cbor()).error() == evidence_errc::nonce_mismatch);
}

TEST_CASE("a certify of another key than pubArea is name_mismatch") {
  evidence_builder b;
  const auto other = test::generate_key();
  b.certified_name = test::tpm_name_of(test::make_pub_area(other.get()));
  CHECK(appraise(options_for(b), b.cbor()).error() == evidence_errc::name_mismatch);
}

TEST_CASE("the challenge must be in both the certify and the quote") {
  evidence_builder certify_only;
  certify_only.quote_nonce = bytes(8, 0x11);
  CHECK(appraise(options_for(certify_only), certify_only.cbor()).error() ==
        evidence_errc::nonce_mismatch);
  evidence_builder quote_only;
  quote_only.certify_nonce = bytes(8, 0x11);
  CHECK(appraise(options_for(quote_only), quote_only.cbor()).error() ==
        evidence_errc::nonce_mismatch);
}

TEST_CASE("swapped signatures verify with no trusted AK in place: unknown_attestation_key") {
  auto e = test::vector_evidence();
  std::swap(e.kat_sig, e.pat_sig);
  CHECK(appraise(vector_options(), attest::encode(e)).error() ==
        verify_errc::unknown_attestation_key);
  evidence_builder b;
  b.swap_signatures = true;
  CHECK(appraise(options_for(b), b.cbor()).error() == verify_errc::unknown_attestation_key);
  auto pinned = options_for(b);
  pinned.trusted_aks = {};
  pinned.trusted_ak_hashes = {pin_of(b.ak_spki())};
  CHECK(appraise(pinned, b.cbor()).error() == verify_errc::unknown_attestation_key);
}

TEST_CASE("a trusted AK's certify with another key's quote is bad_signature") {
  const auto other = test::generate_key();
  evidence_builder b;
  b.quote_signer = other.get();
  CHECK(appraise(options_for(b), b.cbor()).error() == evidence_errc::bad_signature);
  auto pinned = options_for(b);
  pinned.trusted_aks = {};
  pinned.trusted_ak_hashes = {pin_of(b.ak_spki())};
  CHECK(appraise(pinned, b.cbor()).error() == evidence_errc::bad_signature);
}

TEST_CASE("every truncation of the vector is truncated") {
  const auto& v = test::vector_cbor();
  std::size_t wrong = 0;
  for (std::size_t n = 0; n < v.size(); ++n) {
    const auto r = appraise(vector_options(), std::span(v).first(n));
    if (r || r.error() != evidence_errc::truncated) {
      ++wrong;
      INFO("prefix length " << n);
      CHECK_FALSE(r.has_value());
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE("a media type other than Parsec TPM is unsupported_media_type") {
  for (const std::string_view type :
       {"application/eat+cwt", "", "application/vnd.parallaxsecond.key-attestation.cca",
        "application/vnd.parallaxsecond.key-attestation.tpm; charset=utf-8"}) {
    CAPTURE(type);
    CHECK(appraise(vector_options(), test::vector_cbor(), test::vector_nonce, type).error() ==
          verify_errc::unsupported_media_type);
  }
}

TEST_CASE("an attested key that may exist outside the TPM is key_not_tpm_bound") {
  evidence_builder b;
  b.pub.attributes = test::tpm_key_attributes & ~test::tpma_fixed_tpm;
  CHECK(appraise(options_for(b), b.cbor()).error() == evidence_errc::key_not_tpm_bound);
  evidence_builder imported;
  imported.pub.attributes = test::tpm_key_attributes & ~test::tpma_sensitive_data_origin;
  CHECK(appraise(options_for(imported), imported.cbor()).error() ==
        evidence_errc::key_not_tpm_bound);
}

TEST_CASE("malformed TPM structures keep their own error whichever way the AK is trusted") {
  auto e = test::vector_evidence();
  e.cert_info[0] ^= 1U;  // magic
  auto pinned = vector_options();
  pinned.trusted_aks = {};
  pinned.trusted_ak_hashes = {pin_of(test::vector_ak())};
  CHECK(appraise(vector_options(), attest::encode(e)).error() == evidence_errc::bad_magic);
  CHECK(appraise(pinned, attest::encode(e)).error() == evidence_errc::bad_magic);
}

TEST_CASE("evidence built with PCR values appraises against those values") {
  evidence_builder b;
  b.pcr_values[0] = bytes(32, 0xa0);
  b.pcr_values[7] = bytes(32, 0x07);
  b.selections = {{.hash_alg = sha256_bank, .pcrs = {0, 7}}};
  auto o = options_for(b);
  pcr_values reference;
  reference.values = {{0, bytes(32, 0xa0)}, {7, bytes(32, 0x07)}};
  o.reference = reference;
  check_affirming(appraise(o, b.cbor()), b.tik_spki());
  // The digest covers the values in PCR order: swapping two values is a different runtime.
  reference.values = {{0, bytes(32, 0x07)}, {7, bytes(32, 0xa0)}};
  o.reference = reference;
  const auto swapped = appraise(o, b.cbor());
  REQUIRE(swapped.has_value());
  CHECK(swapped->trust[trust_claim::executables] == std::optional<std::int8_t>(33));
}

TEST_CASE("a pcr_digest reference must match the selection exactly") {
  evidence_builder b;
  auto o = options_for(b);
  o.reference = pcr_digest{.bank = sha256_bank, .pcrs = {0, 1, 2}, .digest = b.pcr_digest()};
  check_affirming(appraise(o, b.cbor()), b.tik_spki());

  o.reference = pcr_digest{.bank = sha256_bank, .pcrs = {0, 1}, .digest = b.pcr_digest()};
  CHECK(appraise(o, b.cbor()).error() == verify_errc::no_reference_values);
  o.reference = pcr_digest{.bank = 0x0004, .pcrs = {0, 1, 2}, .digest = b.pcr_digest()};
  CHECK(appraise(o, b.cbor()).error() == verify_errc::no_reference_values);

  auto other = b.pcr_digest();
  other[0] ^= 1U;
  o.reference = pcr_digest{.bank = sha256_bank, .pcrs = {0, 1, 2}, .digest = other};
  const auto r = appraise(o, b.cbor());
  REQUIRE(r.has_value());
  CHECK(r->status == ear_status::warning);
  CHECK(r->trust[trust_claim::executables] == std::optional<std::int8_t>(33));
}

TEST_CASE("failed appraisals leave the OpenSSL error queue empty") {
  ERR_clear_error();
  auto o = vector_options();
  o.trusted_aks = {test::spki_of(test::generate_key().get()), bytes{0x30, 0x00}};
  o.trusted_ak_hashes = {pin_of(bytes{1, 2, 3})};
  CHECK_FALSE(appraise(o, test::vector_cbor()).has_value());
  CHECK(ERR_peek_error() == 0);
}

// ---------------------------------------------------------------------------------------------
// ECDSA public-key recovery.

attest::ecdsa_signature parsed_signature(std::span<const std::uint8_t> tpmt) {
  auto s = attest::parse_signature(tpmt);
  REQUIRE(s.has_value());
  return *s;
}

bool contains(const std::vector<bytes>& keys, const bytes& key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

TEST_CASE("public-key recovery finds the signing key among its candidates") {
  for (int i = 0; i < 20; ++i) {
    const auto key = test::generate_key();
    const bytes message{'m', 's', 'g', static_cast<std::uint8_t>(i)};
    const auto sig = parsed_signature(test::sign_tpmt(key.get(), message));
    const auto candidates = detail::recover_p256_public_keys(test::sha256(message), sig.r, sig.s);
    REQUIRE(candidates.has_value());
    CHECK(candidates->size() >= 2);
    CHECK(candidates->size() <= 4);
    CHECK(contains(*candidates, test::spki_of(key.get())));
    // Another message gives other keys.
    const auto wrong = detail::recover_p256_public_keys(test::sha256(bytes{'x'}), sig.r, sig.s);
    REQUIRE(wrong.has_value());
    CHECK_FALSE(contains(*wrong, test::spki_of(key.get())));
  }
}

TEST_CASE("recovery from the vector's two signatures finds ak-pub.pem in both") {
  const auto e = test::vector_evidence();
  for (const auto& [data, tpmt] : {std::pair{e.cert_info, e.kat_sig}, {e.attest_info, e.pat_sig}}) {
    const auto sig = parsed_signature(tpmt);
    const auto candidates = detail::recover_p256_public_keys(test::sha256(data), sig.r, sig.s);
    REQUIRE(candidates.has_value());
    CHECK(contains(*candidates, test::vector_ak()));
  }
}

TEST_CASE("a signature component of zero or not below n yields no candidate") {
  const auto n = test::from_hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
  const auto one = bytes{1};
  const auto digest = test::sha256(bytes{'m'});
  ERR_clear_error();
  for (const auto& [r, s] : {std::pair{bytes{0}, one},
                             {one, bytes{0}},
                             {n, one},
                             {one, n},
                             {bytes(33, 0xff), one},
                             {bytes{}, one}}) {
    const auto candidates = detail::recover_p256_public_keys(digest, r, s);
    REQUIRE(candidates.has_value());
    CHECK(candidates->empty());
  }
  // n - 1 is in range: some x = n - 1 has a point or not, but it must not fail.
  auto below = n;
  below.back() -= 1;
  CHECK(detail::recover_p256_public_keys(digest, below, one).has_value());
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("same_public_key compares keys, and is_p256_spki recognises attestation keys") {
  const auto key = test::generate_key();
  CHECK(detail::same_public_key(test::spki_of(key.get()), test::spki_of(key.get())));
  CHECK_FALSE(
      detail::same_public_key(test::spki_of(key.get()), test::spki_of(test::generate_key().get())));
  CHECK_FALSE(detail::same_public_key(test::spki_of(key.get()), bytes{0x30, 0x00}));
  const auto uncompressed = test::spki_of(key.get());
  REQUIRE(EVP_PKEY_set_utf8_string_param(key.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                         OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED) == 1);
  const auto compressed = test::spki_of(key.get());
  CHECK(compressed.size() < uncompressed.size());
  CHECK(detail::same_public_key(uncompressed, compressed));
  CHECK(detail::is_p256_spki(compressed));
  CHECK(detail::is_p256_spki(test::spki_of(key.get())));
  CHECK_FALSE(detail::is_p256_spki(test::spki_of(test::generate_key("P-384").get())));
  CHECK_FALSE(detail::is_p256_spki(bytes{0x30, 0x00}));
}

// ---------------------------------------------------------------------------------------------
// The verifier interface.

template <class T>
T run(boost::asio::awaitable<T> task) {
  boost::asio::io_context io;
  auto future = boost::asio::co_spawn(io, std::move(task), boost::asio::use_future);
  io.run_for(std::chrono::seconds(10));
  REQUIRE(future.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
  return future.get();
}

TEST_CASE("local_verifier appraises like appraise_parsec_tpm and is named local") {
  local_verifier v(vector_options());
  CHECK(v.name() == "local");
  const auto r = run(v.appraise(test::vector_cbor(), std::string(attest::parsec_tpm_media_type),
                                test::vector_nonce));
  REQUIRE_MESSAGE(r.has_value(), r.error().message());
  CHECK(r->status == ear_status::affirming);
  CHECK(r->issued_at <= clock::now());
  CHECK(clock::now() - r->issued_at < std::chrono::minutes(1));

  const auto wrong =
      run(v.appraise(test::vector_cbor(), "application/eat+cwt", test::vector_nonce));
  CHECK(wrong.error() == verify_errc::unsupported_media_type);
  // Nonces outside 8..64 bytes are refused before the evidence is looked at.
  const auto short_nonce =
      run(v.appraise(test::vector_cbor(), std::string(attest::parsec_tpm_media_type), bytes(7)));
  CHECK(short_nonce.error() == boost::system::errc::invalid_argument);
}

TEST_CASE("local_verifier challenges are random and between 8 and 64 bytes") {
  local_verifier v(vector_options());
  const auto a = run(v.challenge(32));
  const auto b = run(v.challenge(32));
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  CHECK(a->size() == 32);
  CHECK(*a != *b);
  CHECK(run(v.challenge(8))->size() == 8);
  CHECK(run(v.challenge(64))->size() == 64);
  CHECK(run(v.challenge(7)).error() == boost::system::errc::invalid_argument);
  CHECK(run(v.challenge(65)).error() == boost::system::errc::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// The verifier policy file.

// Drops the newline that follows R"( so that line 1 of the YAML is the first line written out.
std::string yaml(std::string_view text) {
  if (!text.empty() && text.front() == '\n') {
    text.remove_prefix(1);
  }
  return std::string(text);
}

const std::string zero = std::string(64, '0');

std::string all_errors(const config::verifier_policy_result& r) {
  std::string out;
  for (const auto& d : r.errors) {
    out += to_string(d) + "\n";
  }
  return out;
}

// The policy in `text`, with ak.pem (the vector's AK) next to it in a temp dir.
struct policy_fixture {
  test::temp_dir dir;

  policy_fixture() {
    const auto pem = test::read_binary_file(test::vectors_dir() + "ak-pub.pem");
    (void)dir.write("ak.pem", std::string(pem.begin(), pem.end()));
  }
  [[nodiscard]] config::verifier_policy_result load(std::string_view text) const {
    return config::load_verifier_policy_text(yaml(text), "policy.yaml", dir.path());
  }
  // The one error the text must produce, as "file:line:col: key: message".
  [[nodiscard]] std::string only_error(std::string_view text) const {
    const auto r = load(text);
    INFO(all_errors(r));
    REQUIRE(r.errors.size() == 1);
    CHECK_FALSE(r.policy.has_value());
    return to_string(r.errors.front());
  }
};

const std::string good_policy = R"(
verifier:
  local:
    trusted_aks:
      - pem: ak.pem
      - spki_sha256: )" + std::string(64, 'a') +
                                R"(
    reference_values:
      bank: sha256
      pcrs: {0: )" + zero +
                                ", 1: " + zero + ", 2: " + std::string(63, '0') + R"(F}
accept:
  minimum_status: warning
  minimum_tiers: {executables: affirming, hardware: warning}
  required_submodules: [PARSEC_TPM]
  max_age: 5m
)";

TEST_CASE("a good verifier policy loads into verifier options and an appraisal policy") {
  const policy_fixture f;
  const auto r = f.load(good_policy);
  INFO(all_errors(r));
  REQUIRE(r.policy.has_value());
  const auto& local = r.policy->local;
  REQUIRE(local.trusted_aks.size() == 1);
  CHECK(local.trusted_aks[0] == test::vector_ak());
  REQUIRE(local.trusted_ak_hashes.size() == 1);
  CHECK(local.trusted_ak_hashes[0][0] == 0xaa);
  const auto* pcrs = std::get_if<pcr_values>(&local.reference);
  REQUIRE(pcrs != nullptr);
  CHECK(pcrs->bank == sha256_bank);
  CHECK(pcrs->values.size() == 3);
  CHECK(pcrs->values.at(2).back() == 0x0f);

  const auto& accept = r.policy->accept;
  CHECK(accept.minimum_status == ear_status::warning);
  CHECK(accept.minimum_tiers[static_cast<std::size_t>(trust_claim::executables)] ==
        ear_status::affirming);
  CHECK(accept.minimum_tiers[static_cast<std::size_t>(trust_claim::hardware)] ==
        ear_status::warning);
  CHECK_FALSE(accept.minimum_tiers[static_cast<std::size_t>(trust_claim::configuration)]);
  CHECK(accept.required_submodules == std::vector<std::string>{"PARSEC_TPM"});
  CHECK(accept.max_age == std::optional<std::chrono::seconds>(300));
}

TEST_CASE("a policy with a pcr_digest reference and defaults for accept loads") {
  const policy_fixture f;
  const auto r = f.load(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values:
      pcr_digest: {pcrs: [2, 0, 1], digest: 2ea9ab9198d1638007400cd2c3bef1cc745b864b76011a0e1bc52180ac6452d4}
accept: {}
)");
  INFO(all_errors(r));
  REQUIRE(r.policy.has_value());
  const auto* digest = std::get_if<pcr_digest>(&r.policy->local.reference);
  REQUIRE(digest != nullptr);
  CHECK(digest->pcrs == std::vector<std::uint8_t>{0, 1, 2});
  CHECK(digest->digest == test::sha256(bytes(96, 0)));
  CHECK(r.policy->accept.minimum_status == ear_status::affirming);
  CHECK_FALSE(r.policy->accept.max_age.has_value());
  // And the vector appraises under it.
  CHECK(appraise(r.policy->local, test::vector_cbor()).has_value());
}

TEST_CASE("verifier policy mistakes each get their own message at their line") {
  const policy_fixture f;
  SUBCASE("an unknown key, with a suggestion") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_ak: [{pem: ak.pem}]
    trusted_aks: [{pem: ak.pem}]
    reference_values: {pcrs: {0: )" +
                       zero + R"(}}
accept: {}
)") == "policy.yaml:3:5: verifier.local.trusted_ak: unknown key 'trusted_ak'; did you mean "
       "'trusted_aks'?");
  }
  SUBCASE("both pcrs and pcr_digest") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values:
      pcrs: {0: )" + zero +
                       R"(}
      pcr_digest: {pcrs: [0], digest: )" +
                       zero + R"(}
accept: {}
)") == "policy.yaml:6:7: verifier.local.reference_values.pcr_digest: set either 'pcrs' or "
       "'pcr_digest', not both: with the PCR values the digest is computed from them");
  }
  SUBCASE("neither pcrs nor pcr_digest") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values: {bank: sha256}
accept: {}
)")
              .find("verifier.local.reference_values: missing 'pcrs'") != std::string::npos);
  }
  SUBCASE("a value that is not hex") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values: {pcrs: {0: )" +
                       std::string(63, '0') + R"(g}}
accept: {}
)") == "policy.yaml:4:34: verifier.local.reference_values.pcrs.0: 'g' is not a hex digit "
       "(write the value as 64 hex digits, without 0x or separators)");
  }
  SUBCASE("a digest of the wrong length") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{spki_sha256: )" +
                       std::string(40, 'a') + R"(}]
    reference_values: {pcrs: {0: )" +
                       zero + R"(}}
accept: {}
)") == "policy.yaml:3:33: verifier.local.trusted_aks[0].spki_sha256: wrong digest length: an "
       "SPKI SHA-256 is 32 bytes (64 hex digits), got 40 hex digits");
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values: {pcrs: {0: )" +
                       std::string(96, '0') + R"(}}
accept: {}
)") == "policy.yaml:4:34: verifier.local.reference_values.pcrs.0: wrong digest length: a "
       "sha256 PCR value is 32 bytes (64 hex digits), got 96 hex digits");
  }
  SUBCASE("minimum_status contraindicated") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values: {pcrs: {0: )" +
                       zero + R"(}}
accept:
  minimum_status: contraindicated
)") == "policy.yaml:6:19: accept.minimum_status: 'contraindicated' as a minimum would accept "
       "results that contraindicate the attester: use affirming or warning");
  }
  SUBCASE("an unknown claim name") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values: {pcrs: {0: )" +
                       zero + R"(}}
accept:
  minimum_tiers: {executable: affirming}
)") == "policy.yaml:6:19: accept.minimum_tiers.executable: unknown key 'executable'; did you "
       "mean 'executables'?");
  }
  SUBCASE("a pem file that does not exist") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks:
      - pem: missing.pem
    reference_values: {pcrs: {0: )" +
                       zero + R"(}}
accept: {}
)") == "policy.yaml:4:14: verifier.local.trusted_aks[0].pem: cannot read " +
              (f.dir / "missing.pem").string() + ": No such file or directory");
  }
  SUBCASE("a pem file without a P-256 public key") {
    const auto p384 = test::generate_key("P-384");
    (void)f.dir.write("p384.pem", test::public_pem_of(p384.get()));
    (void)f.dir.write("junk.pem", "not a key\n");
    const auto r = f.load(R"(
verifier:
  local:
    trusted_aks: [{pem: p384.pem}, {pem: junk.pem}]
    reference_values: {pcrs: {0: )" +
                          zero + R"(}}
accept: {}
)");
    INFO(all_errors(r));
    REQUIRE(r.errors.size() == 2);
    CHECK(r.errors[0].message.find("is not an EC P-256 key") != std::string::npos);
    CHECK(r.errors[1].message.find("holds no PEM public key") != std::string::npos);
  }
  SUBCASE("an empty list of trusted AKs") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: []
    reference_values: {pcrs: {0: )" +
                       zero + R"(}}
accept: {}
)") == "policy.yaml:3:18: verifier.local.trusted_aks: list at least one trusted attestation "
       "key");
  }
  SUBCASE("a bank other than sha256") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values: {bank: sha384, pcrs: {0: )" +
                       zero + R"(}}
accept: {}
)")
              .find("'sha384' PCRs are not supported") != std::string::npos);
  }
  SUBCASE("a PCR index beyond 23") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values: {pcrs: {24: )" +
                       zero + R"(}}
accept: {}
)") == "policy.yaml:4:31: verifier.local.reference_values.pcrs.24: must be from 0 to 23");
  }
  SUBCASE("a max_age that is not whole seconds") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values: {pcrs: {0: )" +
                       zero + R"(}}
accept: {max_age: 1500ms}
)")
              .find("accept.max_age: must be a whole number of seconds") != std::string::npos);
  }
  SUBCASE("accept is missing") {
    CHECK(f.only_error(R"(
verifier:
  local:
    trusted_aks: [{pem: ak.pem}]
    reference_values: {pcrs: {0: )" +
                       zero + R"(}}
)") == "policy.yaml:1:1: missing required key 'accept'");
  }
}

TEST_CASE("every mistake in a verifier policy is reported in one run, in file order") {
  const policy_fixture f;
  const auto r = f.load(R"(
verifier:
  local:
    trusted_aks: [{pem: missing.pem}, {spki_sha256: xyz}]
    reference_values: {pcrs: {0: 00}}
accept:
  minimum_status: none
  colour: blue
)");
  INFO(all_errors(r));
  CHECK(r.errors.size() == 5);
  CHECK_FALSE(r.policy.has_value());
  for (std::size_t i = 1; i < r.errors.size(); ++i) {
    CHECK(r.errors[i - 1].where.line <= r.errors[i].where.line);
  }
}

TEST_CASE("a verifier policy file that cannot be read is one error naming the file") {
  const policy_fixture f;
  const auto r = config::load_verifier_policy_file(f.dir / "absent.yaml");
  REQUIRE(r.errors.size() == 1);
  CHECK(to_string(r.errors[0]) == (f.dir / "absent.yaml").string() +
                                      ": cannot read verifier policy: No such file or directory");

  // Relative pem paths resolve against the policy file's directory, not the working directory.
  const auto file = f.dir.write("policy.yaml", yaml(good_policy));
  const auto loaded = config::load_verifier_policy_file(file);
  INFO(all_errors(loaded));
  CHECK(loaded.policy.has_value());
}

}  // namespace
}  // namespace atls::verify
