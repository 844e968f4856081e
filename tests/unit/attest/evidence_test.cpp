#include "atls/attest/evidence.hpp"

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <utility>
#include <variant>

#include <boost/json.hpp>
#include <doctest/doctest.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "support/evidence_builder.hpp"

namespace atls::attest {
namespace {

// ---------------------------------------------------------------------------------------------
// Fixtures: the Veraison vector, its AK and its challenge, and evidence by hand
// (tests/support/evidence_builder.hpp).

using test::certify_attested;
using test::from_hex;
using test::generate_key;
using test::make_attest;
using test::make_pub_area;
using test::pkey_ptr;
using test::pub_area_options;
using test::quote_attested;
using test::sha256;
using test::sign_tpmt;
using test::spki_of;
using test::tpm_key_attributes;
using test::tpm_out;
using test::vector_ak;
using test::vector_cbor;
using test::vector_evidence;

const bytes& challenge = test::vector_nonce;

// ---------------------------------------------------------------------------------------------
// CBOR by hand, for shapes our encoder never produces.

struct cbor_out {
  bytes out;

  cbor_out& head(std::uint8_t major, std::uint64_t n) {
    const auto type = static_cast<std::uint8_t>(major << 5U);
    if (n < 24) {
      out.push_back(type | static_cast<std::uint8_t>(n));
    } else if (n <= 0xff) {
      out.insert(out.end(), {static_cast<std::uint8_t>(type | 24U), static_cast<std::uint8_t>(n)});
    } else {
      out.insert(out.end(), {static_cast<std::uint8_t>(type | 25U),
                             static_cast<std::uint8_t>(n >> 8U), static_cast<std::uint8_t>(n)});
    }
    return *this;
  }
  cbor_out& map(std::uint64_t pairs) { return head(5, pairs); }
  cbor_out& text(std::string_view s) {
    head(3, s.size());
    out.insert(out.end(), s.begin(), s.end());
    return *this;
  }
  cbor_out& bstr(std::span<const std::uint8_t> b) {
    head(2, b.size());
    out.insert(out.end(), b.begin(), b.end());
    return *this;
  }
  cbor_out& raw(std::initializer_list<std::uint8_t> b) {
    out.insert(out.end(), b);
    return *this;
  }
};

// A map entry: a key and a text or byte-string value.
using entry = std::pair<std::string, std::variant<std::string, bytes>>;
using entries = std::vector<entry>;

void put_map(cbor_out& c, const entries& map) {
  c.map(map.size());
  for (const auto& [key, value] : map) {
    c.text(key);
    if (const auto* text = std::get_if<std::string>(&value)) {
      c.text(*text);
    } else {
      c.bstr(std::get<bytes>(value));
    }
  }
}

entries kat_entries(const parsec_tpm_evidence& e) {
  return {{"tpmVer", std::string("2.0")},
          {"sig", e.kat_sig},
          {"kid", e.kid},
          {"pubArea", e.pub_area},
          {"certInfo", e.cert_info}};
}

entries pat_entries(const parsec_tpm_evidence& e) {
  return {{"tpmVer", std::string("2.0")},
          {"sig", e.pat_sig},
          {"kid", e.kid},
          {"attestInfo", e.attest_info}};
}

bytes container(const entries& kat, const entries& pat) {
  cbor_out c;
  c.map(2).text("kat");
  put_map(c, kat);
  c.text("pat");
  put_map(c, pat);
  return c.out;
}

// doctest cannot print a result<parsec_tpm_evidence>, so compare outside the assertion.
bool decodes_to(std::span<const std::uint8_t> cbor, const parsec_tpm_evidence& expected) {
  const auto decoded = decode(cbor);
  return decoded.has_value() && *decoded == expected;
}

// ---------------------------------------------------------------------------------------------
// Evidence signed by a test AK, for checks the vector cannot reach (its pubArea is fixed by its
// signature).

// Evidence for a fresh TIK, signed by a fresh AK; each field can be replaced afterwards.
struct test_evidence {
  pkey_ptr ak = generate_key("P-256");
  pkey_ptr tik = generate_key("P-256");
  parsec_tpm_evidence evidence;

  explicit test_evidence(const pub_area_options& pub = {}) {
    evidence.kid = bytes(33, 0x5a);
    evidence.kid[0] = 0x01;
    evidence.pub_area = make_pub_area(tik.get(), pub);
    set_cert_info(make_attest(0x8017, challenge, certify_attested(name())));
    set_attest_info(make_attest(0x8018, challenge, quote_attested()));
  }
  [[nodiscard]] bytes name() const {
    tpm_out t;
    t.u16(0x000b).raw(sha256(evidence.pub_area));
    return t.out;
  }
  void set_cert_info(bytes b) {
    evidence.cert_info = std::move(b);
    evidence.kat_sig = sign_tpmt(ak.get(), evidence.cert_info);
  }
  void set_attest_info(bytes b) {
    evidence.attest_info = std::move(b);
    evidence.pat_sig = sign_tpmt(ak.get(), evidence.attest_info);
  }
  [[nodiscard]] result<verified_evidence> verify_with(std::span<const std::uint8_t> nonce) const {
    return verify(evidence, spki_of(ak.get()), nonce);
  }
};

// ---------------------------------------------------------------------------------------------
// The Veraison vector.

TEST_CASE("the Veraison vector decodes with the documented fields") {
  const auto e = vector_evidence();
  CHECK(e.kid == from_hex("0188855459eeb9e9b34a46eb48cb39f2f6aa69da04522a326d123d5c501fce210c"));
  CHECK(e.pub_area.size() == 88);
  CHECK(e.cert_info.size() == 149);
  CHECK(e.attest_info.size() == 121);

  const auto certify = parse_attest(e.cert_info);
  REQUIRE(certify.has_value());
  CHECK(certify->type == 0x8017);
  CHECK(certify->extra_data == challenge);
  CHECK(certify->safe);
  const auto quote = parse_attest(e.attest_info);
  REQUIRE(quote.has_value());
  CHECK(quote->type == 0x8018);
  CHECK(quote->extra_data == challenge);
  // Both come from the same TPM, 3 ms apart, in the same boot.
  CHECK(quote->clock - certify->clock == 3);
  CHECK(quote->reset_count == certify->reset_count);
  CHECK(quote->restart_count == certify->restart_count);
  CHECK(quote->firmware_version == certify->firmware_version);
  CHECK(quote->qualified_signer == certify->qualified_signer);

  for (const auto& sig : {e.kat_sig, e.pat_sig}) {
    const auto s = parse_signature(sig);
    REQUIRE(s.has_value());
    CHECK(s->hash_alg == 0x000b);
    CHECK(s->r.size() == 32);
    CHECK(s->s.size() == 32);
  }

  const auto key = parse_ecc_public(e.pub_area);
  REQUIRE(key.has_value());
  CHECK(key->name_alg == 0x000b);
  CHECK(key->object_attributes == tpm_key_attributes);
  CHECK(key->curve == 0x0003);
  CHECK(key->x.size() == 32);
  CHECK(key->y.size() == 32);

  // The certified name is the TPM name of pubArea.
  const auto name = tpm_name(e.pub_area);
  REQUIRE(name.has_value());
  CHECK(std::get<certify_info>(certify->attested).name == *name);
}

TEST_CASE("the Veraison vector re-encodes byte-identically") {
  CHECK(encode(vector_evidence()) == vector_cbor());
}

TEST_CASE("the Veraison vector verifies with its AK and challenge") {
  const auto e = vector_evidence();
  const auto v = verify(e, vector_ak(), challenge);
  REQUIRE_MESSAGE(v.has_value(), v.error().message());
  CHECK(v->certify == *parse_attest(e.cert_info));
  CHECK(v->quote == *parse_attest(e.attest_info));
  CHECK(v->attested_key_spki == *spki_der(e.pub_area));
}

TEST_CASE("a different challenge is nonce_mismatch") {
  const auto e = vector_evidence();
  bytes other = challenge;
  other.back() ^= 1U;
  CHECK(verify(e, vector_ak(), other).error() == evidence_errc::nonce_mismatch);
  CHECK(verify(e, vector_ak(), std::span(challenge).first(7)).error() ==
        evidence_errc::nonce_mismatch);
  bytes longer = challenge;
  longer.push_back(0);
  CHECK(verify(e, vector_ak(), longer).error() == evidence_errc::nonce_mismatch);
}

TEST_CASE("an empty expected challenge is nonce_mismatch even when extraData is empty") {
  test_evidence t;
  t.set_cert_info(make_attest(0x8017, {}, certify_attested(t.name())));
  t.set_attest_info(make_attest(0x8018, {}, quote_attested()));
  CHECK(t.verify_with({}).error() == evidence_errc::nonce_mismatch);
}

TEST_CASE("certify and quote must both carry the challenge") {
  bytes other = challenge;
  other[0] ^= 0x80U;
  test_evidence t;
  REQUIRE(t.verify_with(challenge).has_value());
  t.set_attest_info(make_attest(0x8018, other, quote_attested()));
  CHECK(t.verify_with(challenge).error() == evidence_errc::nonce_mismatch);
  CHECK(t.verify_with(other).error() == evidence_errc::nonce_mismatch);
}

TEST_CASE("a different attestation key is bad_signature") {
  const auto other = generate_key("P-256");
  CHECK(verify(vector_evidence(), spki_of(other.get()), challenge).error() ==
        evidence_errc::bad_signature);
}

TEST_CASE("an attestation key that is not a named P-256 key is unsupported_algorithm") {
  const auto e = vector_evidence();
  const auto p384 = generate_key("P-384");
  CHECK(verify(e, spki_of(p384.get()), challenge).error() == evidence_errc::unsupported_algorithm);
  const pkey_ptr ed25519(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  REQUIRE(ed25519);
  CHECK(verify(e, spki_of(ed25519.get()), challenge).error() ==
        evidence_errc::unsupported_algorithm);
  CHECK(verify(e, {}, challenge).error() == evidence_errc::unsupported_algorithm);
  bytes trailing = vector_ak();
  trailing.push_back(0);
  CHECK(verify(e, trailing, challenge).error() == evidence_errc::unsupported_algorithm);
  const bytes truncated(vector_ak().begin(), vector_ak().end() - 1);
  CHECK(verify(e, truncated, challenge).error() == evidence_errc::unsupported_algorithm);
}

TEST_CASE("the quote selects sha256 PCRs 0, 1 and 2 with the digest of three zero PCRs") {
  const auto quote = parse_attest(vector_evidence().attest_info);
  REQUIRE(quote.has_value());
  const auto& info = std::get<quote_info>(quote->attested);
  REQUIRE(info.selections.size() == 1);
  CHECK(info.selections[0].hash_alg == 0x000b);
  CHECK(info.selections[0].pcrs == std::vector<std::uint8_t>{0, 1, 2});
  CHECK(info.pcr_digest == sha256(bytes(96, 0)));
  CHECK(info.pcr_digest ==
        from_hex("2ea9ab9198d1638007400cd2c3bef1cc745b864b76011a0e1bc52180ac6452d4"));
}

TEST_CASE("the attested key's SPKI parses as the P-256 point of pubArea") {
  const auto e = vector_evidence();
  const auto der = spki_der(e.pub_area);
  REQUIRE(der.has_value());
  const unsigned char* cursor = der->data();
  const pkey_ptr key(d2i_PUBKEY(nullptr, &cursor, static_cast<long>(der->size())));
  REQUIRE(key);
  CHECK(cursor == der->data() + der->size());
  CHECK(EVP_PKEY_is_a(key.get(), "EC") == 1);
  std::array<char, 32> group{};
  std::size_t group_size = 0;
  REQUIRE(EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME, group.data(),
                                         group.size(), &group_size) == 1);
  CHECK(std::string_view(group.data(), group_size) == "prime256v1");
  std::array<std::uint8_t, 65> point{};
  std::size_t point_size = 0;
  REQUIRE(EVP_PKEY_get_octet_string_param(key.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                          point.size(), &point_size) == 1);
  const auto pub = parse_ecc_public(e.pub_area);
  REQUIRE(pub.has_value());
  CHECK(bytes(point.begin() + 1, point.begin() + 33) == pub->x);
  CHECK(bytes(point.begin() + 33, point.end()) == pub->y);
}

TEST_CASE("to_json shows the fields a Veraison operator needs") {
  const auto e = vector_evidence();
  const auto doc = boost::json::parse(to_json(e)).as_object();
  CHECK(doc.at("media_type").as_string() == parsec_tpm_media_type);
  CHECK(doc.at("kid").as_string() ==
        "0188855459eeb9e9b34a46eb48cb39f2f6aa69da04522a326d123d5c501fce210c");
  CHECK(doc.at("nonce").as_string() == "deadbeefdeadbeef");
  const auto& quote = doc.at("quote").as_object();
  const auto& selection = quote.at("pcr_selections").as_array().at(0).as_object();
  CHECK(selection.at("hash").as_string() == "sha256");
  CHECK(selection.at("pcrs") == boost::json::array{0, 1, 2});
  CHECK(quote.at("pcr_digest").as_string() ==
        "2ea9ab9198d1638007400cd2c3bef1cc745b864b76011a0e1bc52180ac6452d4");
  const auto& key = doc.at("attested_key").as_object();
  CHECK(key.at("name") == doc.at("certify").at("name"));
  CHECK(key.at("spki_der").as_string().size() == 2 * spki_der(e.pub_area)->size());
  CHECK(doc.at("certify").at("clock_info").at("clock").to_number<std::uint64_t>() == 450737100);
}

TEST_CASE("to_json reports unparsable parts instead of failing") {
  const auto doc = boost::json::parse(to_json(parsec_tpm_evidence{})).as_object();
  CHECK(doc.at("certify").as_object().contains("error"));
  CHECK(doc.at("quote").as_object().contains("error"));
  CHECK(doc.at("attested_key").as_object().contains("error"));
  CHECK(doc.at("nonce").as_object().contains("error"));
}

// ---------------------------------------------------------------------------------------------
// Tampering with the vector.

TEST_CASE("every truncation of the vector is truncated") {
  const auto& v = vector_cbor();
  std::size_t wrong = 0;
  for (std::size_t n = 0; n < v.size(); ++n) {
    const auto r = decode(std::span(v).first(n));
    if (r || r.error() != evidence_errc::truncated) {
      ++wrong;
      INFO("prefix length " << n);
      CHECK_FALSE(r.has_value());
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE("a byte appended to the vector is trailing_bytes") {
  for (const std::uint8_t extra : {0x00, 0xa0, 0xff}) {
    bytes v = vector_cbor();
    v.push_back(extra);
    CHECK(decode(v).error() == evidence_errc::trailing_bytes);
  }
}

TEST_CASE("no single-bit flip of the vector yields evidence that verifies") {
  const auto& v = vector_cbor();
  std::size_t decoded = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    for (unsigned bit = 0; bit < 8; ++bit) {
      bytes flipped = v;
      flipped[i] ^= static_cast<std::uint8_t>(1U << bit);
      const auto e = decode(flipped);
      if (!e) {
        continue;
      }
      ++decoded;
      const auto r = verify(*e, vector_ak(), challenge);
      if (r) {
        INFO("byte " << i << " bit " << bit);
        CHECK_FALSE(r.has_value());
      }
    }
  }
  // Most flips land in the TPM structures, which only verify() can judge.
  CHECK(decoded > v.size());
}

TEST_CASE("replaying the vector's parts into other evidence does not verify") {
  const auto e = vector_evidence();
  // The quote's signature does not cover the certify, and the other way round.
  auto swapped = e;
  std::swap(swapped.kat_sig, swapped.pat_sig);
  CHECK(verify(swapped, vector_ak(), challenge).error() == evidence_errc::bad_signature);
  // A certify in the quote's place (both validly signed) is the wrong type.
  auto both_certify = e;
  both_certify.attest_info = e.cert_info;
  both_certify.pat_sig = e.kat_sig;
  CHECK(verify(both_certify, vector_ak(), challenge).error() == evidence_errc::wrong_attest_type);
  auto both_quote = e;
  both_quote.cert_info = e.attest_info;
  both_quote.kat_sig = e.pat_sig;
  CHECK(verify(both_quote, vector_ak(), challenge).error() == evidence_errc::wrong_attest_type);
}

TEST_CASE("a pubArea other than the certified one is name_mismatch") {
  auto e = vector_evidence();
  // Still a well-formed TPMT_PUBLIC: only objectAttributes changes (noDA added).
  e.pub_area[6] |= 0x04U;
  REQUIRE(parse_ecc_public(e.pub_area).has_value());
  CHECK(verify(e, vector_ak(), challenge).error() == evidence_errc::name_mismatch);
}

// ---------------------------------------------------------------------------------------------
// The CBOR container.

TEST_CASE("evidence round-trips through encode and decode") {
  test_evidence t;
  CHECK(decodes_to(encode(t.evidence), t.evidence));
  // Lengths on both sides of every CBOR length boundary.
  for (const std::size_t n : {0U, 23U, 24U, 255U, 256U, 4096U}) {
    auto e = t.evidence;
    e.pub_area = bytes(n, 0x42);
    CHECK(decodes_to(encode(e), e));
  }
}

TEST_CASE("keys may come in any order") {
  const auto e = vector_evidence();
  auto kat = kat_entries(e);
  auto pat = pat_entries(e);
  std::reverse(kat.begin(), kat.end());
  std::reverse(pat.begin(), pat.end());
  cbor_out c;
  c.map(2).text("pat");
  put_map(c, pat);
  c.text("kat");
  put_map(c, kat);
  CHECK(decodes_to(c.out, e));
}

TEST_CASE("duplicate keys are duplicate_field") {
  const auto e = vector_evidence();
  auto kat = kat_entries(e);
  kat.push_back({"kid", e.kid});
  CHECK(decode(container(kat, pat_entries(e))).error() == evidence_errc::duplicate_field);
  auto pat = pat_entries(e);
  pat.insert(pat.begin(), {"tpmVer", std::string("2.0")});
  CHECK(decode(container(kat_entries(e), pat)).error() == evidence_errc::duplicate_field);

  cbor_out c;
  c.map(3).text("kat");
  put_map(c, kat_entries(e));
  c.text("pat");
  put_map(c, pat_entries(e));
  c.text("kat");
  put_map(c, kat_entries(e));
  CHECK(decode(c.out).error() == evidence_errc::duplicate_field);
}

TEST_CASE("unknown keys are unexpected_field") {
  const auto e = vector_evidence();
  auto kat = kat_entries(e);
  kat.push_back({"alg", bytes{}});
  CHECK(decode(container(kat, pat_entries(e))).error() == evidence_errc::unexpected_field);
  // A key of the other map is unknown here: pubArea belongs to kat only.
  auto pat = pat_entries(e);
  pat.push_back({"pubArea", e.pub_area});
  CHECK(decode(container(kat_entries(e), pat)).error() == evidence_errc::unexpected_field);
  // Keys compare exactly: no case folding.
  auto kid_upper = kat_entries(e);
  kid_upper[2].first = "KID";
  CHECK(decode(container(kid_upper, pat_entries(e))).error() == evidence_errc::unexpected_field);

  cbor_out c;
  c.map(3).text("kat");
  put_map(c, kat_entries(e));
  c.text("pat");
  put_map(c, pat_entries(e));
  c.text("cca");
  put_map(c, {});
  CHECK(decode(c.out).error() == evidence_errc::unexpected_field);
}

TEST_CASE("absent keys are missing_field") {
  const auto e = vector_evidence();
  for (std::size_t i = 0; i < 5; ++i) {
    auto kat = kat_entries(e);
    kat.erase(kat.begin() + static_cast<std::ptrdiff_t>(i));
    CAPTURE(i);
    CHECK(decode(container(kat, pat_entries(e))).error() == evidence_errc::missing_field);
  }
  cbor_out c;
  c.map(1).text("kat");
  put_map(c, kat_entries(e));
  CHECK(decode(c.out).error() == evidence_errc::missing_field);
  CHECK(decode(bytes{0xa0}).error() == evidence_errc::missing_field);
}

TEST_CASE("a kid that differs between kat and pat, or is not a RAND UEID, is kid_mismatch") {
  const auto e = vector_evidence();
  auto pat = pat_entries(e);
  auto other = e.kid;
  other.back() ^= 1U;
  pat[2].second = other;
  CHECK(decode(container(kat_entries(e), pat)).error() == evidence_errc::kid_mismatch);

  for (const auto& kid : {bytes(33, 0x02), bytes(32, 0x01), bytes(34, 0x01), bytes{}}) {
    auto kat = kat_entries(e);
    auto pat2 = pat_entries(e);
    kat[2].second = kid;
    pat2[2].second = kid;
    CHECK(decode(container(kat, pat2)).error() == evidence_errc::kid_mismatch);
    auto bad = e;
    bad.kid = kid;
    CHECK(verify(bad, vector_ak(), challenge).error() == evidence_errc::kid_mismatch);
  }
}

TEST_CASE("tpmVer other than \"2.0\" is bad_tpm_version") {
  const auto e = vector_evidence();
  for (const char* version : {"2.1", "1.2", "", "2.0 "}) {
    auto kat = kat_entries(e);
    kat[0].second = std::string(version);
    CHECK(decode(container(kat, pat_entries(e))).error() == evidence_errc::bad_tpm_version);
  }
  // As a byte string it is not even the right CBOR type.
  auto kat = kat_entries(e);
  kat[0].second = bytes{'2', '.', '0'};
  CHECK(decode(container(kat, pat_entries(e))).error() == evidence_errc::malformed_cbor);
}

TEST_CASE("oversized lengths are oversized, whatever the input holds") {
  const auto e = vector_evidence();
  auto kat = kat_entries(e);
  kat[3].second = bytes(4097, 0);
  CHECK(decode(container(kat, pat_entries(e))).error() == evidence_errc::oversized);
  // A declared length of 2^64 - 1 with nothing behind it.
  CHECK(decode(bytes{0xa1, 0x63, 'k', 'a', 't', 0xa1, 0x63, 's', 'i', 'g', 0x5b, 0xff, 0xff, 0xff,
                     0xff, 0xff, 0xff, 0xff, 0xff})
            .error() == evidence_errc::oversized);
  CHECK(decode(bytes{0xa1, 0x7a, 0x7f, 0xff, 0xff, 0xff}).error() == evidence_errc::oversized);
  // The whole input is bounded before anything is read.
  bytes big = vector_cbor();
  big.resize(64 * 1024 + 1);
  CHECK(decode(big).error() == evidence_errc::oversized);
}

TEST_CASE("CBOR outside the format's strict subset is malformed_cbor") {
  // Not a map at the top.
  CHECK(decode(bytes{0x82, 0xa0, 0xa0}).error() == evidence_errc::malformed_cbor);
  CHECK(decode(bytes{0x00}).error() == evidence_errc::malformed_cbor);
  // A tag around the map (CBOR sequence / self-describe tag 55799).
  CHECK(decode(bytes{0xd9, 0xd9, 0xf7, 0xa0}).error() == evidence_errc::malformed_cbor);
  // Indefinite-length map and byte string.
  CHECK(decode(bytes{0xbf, 0xff}).error() == evidence_errc::malformed_cbor);
  CHECK(decode(bytes{0xa1, 0x63, 'k', 'a', 't', 0xa1, 0x63, 's', 'i', 'g', 0x5f, 0xff}).error() ==
        evidence_errc::malformed_cbor);
  // A float or an integer where a key belongs.
  CHECK(decode(bytes{0xa1, 0xf9, 0x00, 0x00, 0xa0}).error() == evidence_errc::malformed_cbor);
  CHECK(decode(bytes{0xa1, 0x01, 0xa0}).error() == evidence_errc::malformed_cbor);
  // Reserved additional information 28.
  CHECK(decode(bytes{0xbc}).error() == evidence_errc::malformed_cbor);
  // Non-shortest lengths: a map count, a key length and a byte-string length.
  CHECK(decode(bytes{0xb8, 0x02}).error() == evidence_errc::malformed_cbor);
  CHECK(decode(bytes{0xa1, 0x78, 0x03, 'k', 'a', 't'}).error() == evidence_errc::malformed_cbor);
  CHECK(decode(bytes{0xa1, 0x63, 'k', 'a', 't', 0xa1, 0x63, 's', 'i', 'g', 0x59, 0x00, 0xff})
            .error() == evidence_errc::malformed_cbor);
  CHECK(decode(bytes{0xa1, 0x63, 'k', 'a', 't', 0xa1, 0x63, 's', 'i', 'g', 0x5a, 0x00, 0x00, 0xff,
                     0xff})
            .error() == evidence_errc::malformed_cbor);
  // kat as an array instead of a map.
  CHECK(decode(bytes{0xa1, 0x63, 'k', 'a', 't', 0x80}).error() == evidence_errc::malformed_cbor);
  CHECK(decode(bytes{}).error() == evidence_errc::truncated);
}

// ---------------------------------------------------------------------------------------------
// The TPM structures.

TEST_CASE("TPMS_ATTEST must start with TPM_GENERATED_VALUE") {
  auto info = vector_evidence().cert_info;
  info[3] ^= 1U;
  CHECK(parse_attest(info).error() == evidence_errc::bad_magic);
}

TEST_CASE("TPMS_ATTEST of a type other than certify or quote is wrong_attest_type") {
  auto info = vector_evidence().cert_info;
  info[5] = 0x19;  // TPM_ST_ATTEST_TIME
  CHECK(parse_attest(info).error() == evidence_errc::wrong_attest_type);
}

TEST_CASE("TPMS_ATTEST truncations, extensions and oversized buffers are rejected") {
  for (const auto& info : {vector_evidence().cert_info, vector_evidence().attest_info}) {
    for (std::size_t n = 0; n < info.size(); ++n) {
      CAPTURE(n);
      CHECK(parse_attest(std::span(info).first(n)).error() == evidence_errc::truncated);
    }
    auto longer = info;
    longer.push_back(0);
    CHECK(parse_attest(longer).error() == evidence_errc::trailing_bytes);
  }
  // qualifiedSigner declares 67 bytes, one more than any TPM2B_NAME holds.
  auto info = vector_evidence().cert_info;
  info[6] = 0x00;
  info[7] = 0x43;
  CHECK(parse_attest(info).error() == evidence_errc::oversized);
}

TEST_CASE("TPML_PCR_SELECTION beyond its bounds is oversized") {
  const bytes digest(32, 0);
  const auto quote = [&](std::uint32_t count, std::uint8_t size_of_select) {
    tpm_out t;
    t.u32(count);
    for (std::uint32_t i = 0; i < std::min<std::uint32_t>(count, 2); ++i) {
      t.u16(0x000b).u8(size_of_select).raw(bytes(size_of_select, 0xff));
    }
    return make_attest(0x8018, challenge, tpm_out{t}.tpm2b(digest).out);
  };
  CHECK(parse_attest(quote(1, 4)).has_value());
  CHECK(parse_attest(quote(1, 5)).error() == evidence_errc::oversized);
  CHECK(parse_attest(quote(17, 3)).error() == evidence_errc::oversized);
  CHECK(parse_attest(quote(0xffffffff, 3)).error() == evidence_errc::oversized);
  const auto all = parse_attest(quote(1, 4));
  CHECK(std::get<quote_info>(all->attested).selections[0].pcrs.size() == 32);
}

TEST_CASE("TPMS_CLOCK_INFO.safe other than 0 or 1 is malformed_tpm") {
  CHECK(parse_attest(make_attest(0x8018, challenge, quote_attested(), 0))->safe == false);
  CHECK(parse_attest(make_attest(0x8018, challenge, quote_attested(), 2)).error() ==
        evidence_errc::malformed_tpm);
}

TEST_CASE("signatures other than ECDSA with SHA-256 are unsupported_algorithm") {
  auto e = vector_evidence();
  auto rsassa = e.kat_sig;
  rsassa[1] = 0x14;
  CHECK(parse_signature(rsassa).error() == evidence_errc::unsupported_algorithm);
  auto sha384 = e.kat_sig;
  sha384[3] = 0x0c;
  REQUIRE(parse_signature(sha384).has_value());
  e.kat_sig = sha384;
  CHECK(verify(e, vector_ak(), challenge).error() == evidence_errc::unsupported_algorithm);
}

TEST_CASE("ECDSA components that are empty or wider than P-256 are rejected") {
  const auto sig = [](const bytes& r, const bytes& s) {
    return tpm_out{}.u16(0x0018).u16(0x000b).tpm2b(r).tpm2b(s).out;
  };
  CHECK(parse_signature(sig({}, bytes(32, 1))).error() == evidence_errc::malformed_tpm);
  CHECK(parse_signature(sig(bytes(32, 1), {})).error() == evidence_errc::malformed_tpm);
  CHECK(parse_signature(sig(bytes(67, 1), bytes(32, 1))).error() == evidence_errc::oversized);

  // A 33-byte r is not a P-256 signature, even when the extra byte is a leading zero.
  auto e = vector_evidence();
  auto parsed = parse_signature(e.kat_sig);
  REQUIRE(parsed.has_value());
  parsed->r.insert(parsed->r.begin(), 0);
  e.kat_sig = sig(parsed->r, parsed->s);
  CHECK(verify(e, vector_ak(), challenge).error() == evidence_errc::bad_signature);
}

TEST_CASE("r and s without their leading zero octets still verify") {
  test_evidence t;
  bool had_zero = false;
  for (int attempt = 0; attempt < 10000 && !had_zero; ++attempt) {
    t.evidence.kat_sig =
        sign_tpmt(t.ak.get(), t.evidence.cert_info, {.strip_leading_zeros = true}, &had_zero);
  }
  REQUIRE(had_zero);
  const auto parsed = parse_signature(t.evidence.kat_sig);
  REQUIRE(parsed.has_value());
  CHECK((parsed->r.size() < 32 || parsed->s.size() < 32));
  CHECK(t.verify_with(challenge).has_value());
}

TEST_CASE("evidence built by a test AK verifies, and each binding is checked") {
  test_evidence t;
  REQUIRE(t.verify_with(challenge).has_value());

  SUBCASE("the certified name must be pubArea's") {
    bytes other = t.name();
    other.back() ^= 1U;
    t.set_cert_info(make_attest(0x8017, challenge, certify_attested(other)));
    CHECK(t.verify_with(challenge).error() == evidence_errc::name_mismatch);
  }
  SUBCASE("pubArea's nameAlg must be SHA-256") {
    test_evidence sha1({.name_alg = 0x0004});
    CHECK(sha1.verify_with(challenge).error() == evidence_errc::unsupported_algorithm);
  }
  SUBCASE("the attested key must be fixedTPM") {
    test_evidence imported({.attributes = tpm_key_attributes & ~0x00000002U});
    CHECK(imported.verify_with(challenge).error() == evidence_errc::key_not_tpm_bound);
  }
  SUBCASE("the attested key must be sensitiveDataOrigin") {
    test_evidence imported({.attributes = tpm_key_attributes & ~0x00000020U});
    CHECK(imported.verify_with(challenge).error() == evidence_errc::key_not_tpm_bound);
  }
  SUBCASE("an attested key without a signing scheme is fine") {
    test_evidence any_scheme({.scheme = 0x0010});
    CHECK(any_scheme.verify_with(challenge).has_value());
  }
  SUBCASE("the certify signature covers certInfo") {
    t.evidence.kat_sig = sign_tpmt(t.ak.get(), t.evidence.attest_info);
    CHECK(t.verify_with(challenge).error() == evidence_errc::bad_signature);
  }
}

TEST_CASE("TPMT_PUBLIC other than an ECC key with known schemes is unsupported_algorithm") {
  const auto pub = vector_evidence().pub_area;
  auto rsa = pub;
  rsa[1] = 0x01;
  CHECK(parse_ecc_public(rsa).error() == evidence_errc::unsupported_algorithm);
  auto unknown_scheme = pub;
  unknown_scheme[13] = 0x99;  // TPMT_ECC_SCHEME.scheme, after symmetric NULL
  CHECK(parse_ecc_public(unknown_scheme).error() == evidence_errc::unsupported_algorithm);
  auto unknown_symmetric = pub;
  unknown_symmetric[11] = 0x99;  // TPMT_SYM_DEF_OBJECT.algorithm
  CHECK(parse_ecc_public(unknown_symmetric).error() == evidence_errc::unsupported_algorithm);
  auto unknown_kdf = pub;
  unknown_kdf[19] = 0x99;  // TPMT_KDF_SCHEME.scheme, after the curve
  CHECK(parse_ecc_public(unknown_kdf).error() == evidence_errc::unsupported_algorithm);
}

TEST_CASE("TPMT_PUBLIC union members are parsed by their selectors") {
  // ECDAA carries a count after its hash (TPMS_SCHEME_ECDAA).
  tpm_out ecdaa;
  ecdaa.u16(0x0023).u16(0x000b).u32(tpm_key_attributes).tpm2b(bytes(32, 7));
  ecdaa.u16(0x0006).u16(128).u16(0x0043);     // AES-128-CFB symmetric
  ecdaa.u16(0x001a).u16(0x000b).u16(1);       // ECDAA, SHA-256, count
  ecdaa.u16(0x0003).u16(0x0020).u16(0x000b);  // P-256, KDF1_SP800_56A with SHA-256
  ecdaa.tpm2b(bytes(32, 1)).tpm2b(bytes(32, 2));
  const auto parsed = parse_ecc_public(ecdaa.out);
  REQUIRE(parsed.has_value());
  CHECK(parsed->x == bytes(32, 1));
  CHECK(parsed->y == bytes(32, 2));
  auto longer = ecdaa.out;
  longer.push_back(0);
  CHECK(parse_ecc_public(longer).error() == evidence_errc::trailing_bytes);
  for (std::size_t n = 0; n < ecdaa.out.size(); ++n) {
    CAPTURE(n);
    CHECK(parse_ecc_public(std::span(ecdaa.out).first(n)).error() == evidence_errc::truncated);
  }
}

TEST_CASE("spki_der refuses other curves and points off the curve") {
  const auto key = generate_key("P-256");
  CHECK(spki_der(make_pub_area(key.get(), {.curve = 0x0004})).error() ==
        evidence_errc::unsupported_algorithm);
  auto off_curve = make_pub_area(key.get());
  off_curve.back() ^= 1U;
  CHECK(spki_der(off_curve).error() == evidence_errc::malformed_tpm);
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("short coordinates are left-padded to 32 bytes") {
  // A TPM2B_ECC_PARAMETER may omit leading zero octets. About one key in 256 has an x that
  // starts with one.
  pkey_ptr key;
  bytes pub;
  result<ecc_public_key> parsed = evidence_errc::truncated;
  for (int attempt = 0; attempt < 5000; ++attempt) {
    key = generate_key("P-256");
    pub = make_pub_area(key.get());
    parsed = parse_ecc_public(pub);
    REQUIRE(parsed.has_value());
    if (parsed->x[0] == 0) {
      break;
    }
  }
  REQUIRE(parsed->x[0] == 0);
  tpm_out t;
  t.raw(std::span(pub).first(pub.size() - 68));
  bytes x = parsed->x;
  while (x[0] == 0) {
    x.erase(x.begin());
  }
  t.tpm2b(x).tpm2b(parsed->y);
  const auto padded = spki_der(t.out);
  REQUIRE(padded.has_value());
  CHECK(*padded == spki_of(key.get()));
}

TEST_CASE("failures leave the OpenSSL error queue empty") {
  ERR_clear_error();
  const auto other = generate_key("P-256");
  CHECK_FALSE(verify(vector_evidence(), spki_of(other.get()), challenge).has_value());
  CHECK_FALSE(verify(vector_evidence(), bytes{0x30, 0x00}, challenge).has_value());
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("every evidence_errc has its own message in atls.attest.evidence") {
  CHECK(std::string_view(evidence_category().name()) == "atls.attest.evidence");
  std::vector<std::string> seen;
  for (int v = static_cast<int>(evidence_errc::truncated);
       v <= static_cast<int>(evidence_errc::key_not_tpm_bound); ++v) {
    const auto message = make_error_code(static_cast<evidence_errc>(v)).message();
    CAPTURE(v);
    CHECK(message.find("unknown") == std::string::npos);
    CHECK(std::find(seen.begin(), seen.end(), message) == seen.end());
    seen.push_back(message);
  }
  const error_code ec = evidence_errc::bad_signature;
  CHECK(ec == evidence_errc::bad_signature);
  CHECK(ec != evidence_errc::nonce_mismatch);
}

}  // namespace
}  // namespace atls::attest
