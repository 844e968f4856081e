// The CoMIDs `atlsctl veraison endorsements` writes and the local verifier reads: they have the
// shape of Veraison's parsec-tpm templates, read back to what was written, read Veraison's own
// documents, and every malformed document is refused with its own code and the JSON path of
// the fault.
#include "atls/verify/endorsements.hpp"

#include <functional>
#include <string>
#include <string_view>
#include <variant>

#include <boost/json.hpp>
#include <doctest/doctest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "atls/attest/evidence.hpp"
#include "atls/verify/jose.hpp"
#include "atls/verify/local_verifier.hpp"

#include "support/evidence_builder.hpp"

namespace atls::verify {
namespace {

namespace json = boost::json;

const clock::time_point now = clock::time_point(std::chrono::seconds(1'700'000'000));

// A machine with a fresh P-256 AK, a RAND UEID kid and three PCRs of different values.
machine_endorsements sample_machine() {
  const auto key = test::generate_key("P-256");
  machine_endorsements m;
  m.instance_id = bytes(33, 0x5a);
  m.instance_id[0] = 0x01;
  m.ak_spki = test::spki_of(key.get());
  m.reference.values[0] = bytes(32, 0);
  m.reference.values[3] = test::sha256(bytes{1, 2, 3});
  m.reference.values[7] = bytes(32, 0xff);
  return m;
}

endorsement_documents make(const machine_endorsements& m) {
  auto made = make_endorsements(m);
  REQUIRE(made.has_value());
  return *made;
}

// The vector's trust anchor, in the shape of Veraison's comid-parsec-tpm-ta.json (current
// releases: instance of type bytes), around the vector's AK and kid.
std::string veraison_trust_anchor(std::string_view instance_type = "bytes") {
  const auto pem = test::read_binary_file(test::vectors_dir() + "ak-pub.pem");
  json::object doc = json::parse(R"({
  "tag-identity": {"id": "EEE06F93-E982-4DBC-9585-620A816C2E59"},
  "entities": [{"name": "Parsec", "regid": "https://github.com/parallaxsecond",
                "roles": ["tagCreator", "creator", "maintainer"]}],
  "triples": {"attester-verification-keys": [{
    "environment": {
      "class": {"id": {"type": "uuid", "value": "CD1F0E55-26F9-460D-B9D8-F7FDE171787C"}},
      "instance": {"type": "bytes", "value": "AYiFVFnuuemzSkbrSMs58vaqadoEUioybRI9XFAfziEM"}
    },
    "verification-keys": [{"type": "pkix-base64-key", "value": ""}]
  }]}
})")
                         .as_object();
  auto& avk = doc["triples"].as_object()["attester-verification-keys"].as_array()[0].as_object();
  avk["environment"].as_object()["instance"].as_object()["type"] = instance_type;
  avk["verification-keys"].as_array()[0].as_object()["value"] = std::string(pem.begin(), pem.end());
  return json::serialize(doc);
}

std::string vector_reference_values() {
  const auto text = test::read_binary_file(test::vectors_dir() + "comid-refval.json");
  return {text.begin(), text.end()};
}

// The document with one change made to its JSON.
std::string mutated(const std::string& document, const std::function<void(json::object&)>& f) {
  auto value = json::parse(document);
  f(value.as_object());
  return json::serialize(value);
}

json::object& avk(json::object& root) {
  return root["triples"].as_object()["attester-verification-keys"].as_array()[0].as_object();
}

json::object& rv(json::object& root) {
  return root["triples"].as_object()["reference-values"].as_array()[0].as_object();
}

json::object& measurement(json::object& root, std::size_t i) {
  return rv(root)["measurements"].as_array()[i].as_object();
}

json::array& digests(json::object& root, std::size_t i) {
  return measurement(root, i)["value"].as_object()["digests"].as_array();
}

template <class T>
void check_refused(const detailed_result<T>& r, endorsements_errc code, std::string_view detail) {
  REQUIRE_FALSE(r.has_value());
  INFO(r.error().detail);
  CHECK(r.error().code == code);
  CHECK(r.error().detail.find(detail) != std::string::npos);
}

TEST_CASE("endorsements written for a machine read back to its AK, instance, class and PCRs") {
  auto m = sample_machine();
  m.class_id = *parse_uuid("01234567-89ab-cdef-0123-456789abcdef");
  const auto docs = make(m);
  const auto read = read_endorsements(docs.trust_anchor, docs.reference_values);
  REQUIRE(read.has_value());
  CHECK(read->class_id == m.class_id);
  CHECK(read->instance_id == m.instance_id);
  CHECK(read->ak_spki == m.ak_spki);
  CHECK(read->reference.bank == 0x000b);
  CHECK(read->reference.values == m.reference.values);
}

TEST_CASE("the written CoMIDs have the shape of Veraison's parsec-tpm templates") {
  const auto m = sample_machine();
  const auto docs = make(m);
  CHECK(docs.trust_anchor.ends_with("}\n"));
  CHECK(docs.reference_values.ends_with("}\n"));

  auto ta = json::parse(docs.trust_anchor).as_object();
  CHECK(ta.size() == 3);
  CHECK(ta.at("entities").at(0).at("roles") == json::array{"tagCreator"});
  const auto ta_tag = std::string(ta.at("tag-identity").at("id").as_string());
  REQUIRE(parse_uuid(ta_tag).has_value());
  CHECK(ta_tag[14] == '8');  // a UUIDv8 derived from the content
  auto& anchor = avk(ta);
  const auto& env = anchor.at("environment").as_object();
  CHECK(
      env.at("class") ==
      json::parse(R"({"id": {"type": "uuid", "value": "4484fcb6-f1aa-49a3-aa27-988a83a67f1e"}})"));
  CHECK(env.at("instance").at("type") == "bytes");
  // Standard base64 of the kid, as Go writes a []byte.
  CHECK(env.at("instance").at("value") == "AVpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa");
  const auto& keys = anchor.at("verification-keys").as_array();
  REQUIRE(keys.size() == 1);
  CHECK(keys[0].at("type") == "pkix-base64-key");
  const auto pem = std::string(keys[0].at("value").as_string());
  CHECK(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"));
  CHECK(pem.ends_with("\n-----END PUBLIC KEY-----"));

  auto refs = json::parse(docs.reference_values).as_object();
  const auto& rv_env = rv(refs).at("environment").as_object();
  CHECK(rv_env.size() == 1);
  CHECK(rv_env.at("class") == env.at("class"));
  const auto& list = rv(refs).at("measurements").as_array();
  REQUIRE(list.size() == 3);
  CHECK(list[1].at("key") == json::parse(R"({"type": "uint", "value": 3})"));
  // [alg-id, base64url], sha-256 only.
  CHECK(list[1].at("value") == json::parse(R"({"digests": [[1, ")" +
                                           base64url_encode(m.reference.values.at(3)) + R"("]]})"));
  CHECK(std::string(refs.at("tag-identity").at("id").as_string()) != ta_tag);
  // Digest pairs stay on one line, as in Veraison's templates.
  CHECK(docs.reference_values.find("[1, \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"]") !=
        std::string::npos);
}

TEST_CASE("endorsements are the same bytes for the same machine, and new tags when it changes") {
  const auto m = sample_machine();
  const auto first = make(m);
  CHECK(make(m).trust_anchor == first.trust_anchor);
  CHECK(make(m).reference_values == first.reference_values);

  const auto tag = [](const std::string& doc) {
    return std::string(json::parse(doc).at("tag-identity").at("id").as_string());
  };
  auto changed = m;
  changed.reference.values[7][0] = 0;
  CHECK(tag(make(changed).reference_values) != tag(first.reference_values));
  CHECK(tag(make(changed).trust_anchor) == tag(first.trust_anchor));
  auto other = m;
  other.instance_id[5] = 0;
  CHECK(tag(make(other).trust_anchor) != tag(first.trust_anchor));
  CHECK(tag(make(other).reference_values) != tag(first.reference_values));
}

TEST_CASE("the Veraison reference-value vector reads as Parsec's class with PCRs 0 to 2 zero") {
  const auto r = read_reference_values(vector_reference_values());
  REQUIRE(r.has_value());
  CHECK(to_string(r->class_id) == "cd1f0e55-26f9-460d-b9d8-f7fde171787c");
  CHECK(r->values.values.size() == 3);
  for (const std::uint8_t pcr : {0, 1, 2}) {
    CHECK(r->values.values.at(pcr) == bytes(32, 0));
  }
}

TEST_CASE("Veraison's own trust anchor and reference values accept the Veraison evidence vector") {
  for (const auto* type : {"bytes", "ueid"}) {
    CAPTURE(type);
    const auto read = read_endorsements(veraison_trust_anchor(type), vector_reference_values());
    REQUIRE(read.has_value());
    CHECK(read->ak_spki == test::vector_ak());
    CHECK(read->instance_id == test::vector_evidence().kid);
    const local_verifier_options options{.trusted_aks = {read->ak_spki},
                                         .reference = read->reference};
    const auto result = appraise_parsec_tpm(options, test::vector_cbor(),
                                            attest::parsec_tpm_media_type, test::vector_nonce, now);
    REQUIRE(result.has_value());
    CHECK(result->status == ear_status::affirming);
  }
}

TEST_CASE("what atls writes for the vector's machine accepts the vector evidence") {
  machine_endorsements m;
  m.instance_id = test::vector_evidence().kid;
  m.ak_spki = test::vector_ak();
  m.class_id = *parse_uuid("CD1F0E55-26F9-460D-B9D8-F7FDE171787C");
  for (const std::uint8_t pcr : {0, 1, 2}) {
    m.reference.values[pcr] = bytes(32, 0);
  }
  const auto docs = make(m);
  // Veraison's template, byte for byte where nothing is atls's own choice.
  const auto ta = json::parse(docs.trust_anchor);
  const auto theirs = json::parse(veraison_trust_anchor());
  CHECK(
      ta.at("triples").at("attester-verification-keys").at(0).at("environment").at("instance") ==
      theirs.at("triples").at("attester-verification-keys").at(0).at("environment").at("instance"));
  const auto their_pem = std::string(theirs.at("triples")
                                         .at("attester-verification-keys")
                                         .at(0)
                                         .at("verification-keys")
                                         .at(0)
                                         .at("value")
                                         .as_string());
  CHECK(std::string(ta.at("triples")
                        .at("attester-verification-keys")
                        .at(0)
                        .at("verification-keys")
                        .at(0)
                        .at("value")
                        .as_string()) +
            "\n" ==
        their_pem);
  const auto read = read_endorsements(docs.trust_anchor, docs.reference_values);
  REQUIRE(read.has_value());
  const auto result = appraise_parsec_tpm(
      {.trusted_aks = {read->ak_spki}, .reference = read->reference}, test::vector_cbor(),
      attest::parsec_tpm_media_type, test::vector_nonce, now);
  REQUIRE(result.has_value());
  CHECK(result->status == ear_status::affirming);
}

TEST_CASE("a trust anchor that is not strict JSON is refused as malformed_json") {
  const auto good = make(sample_machine()).trust_anchor;
  check_refused(read_trust_anchor("{"), endorsements_errc::malformed_json, "(top level)");
  check_refused(read_trust_anchor(good + "x"), endorsements_errc::malformed_json, "JSON");
  // A repeated member: two readers could see two different keys.
  auto twice = good;
  twice.insert(1, R"("lang": "en", "lang": "de",)");
  check_refused(read_trust_anchor(twice), endorsements_errc::malformed_json, "repeats a member");
  std::string large = good;
  large.insert(large.size() - 2, std::string(max_endorsement_size, ' '));
  check_refused(read_trust_anchor(large), endorsements_errc::malformed_json,
                "more than the 64 KiB");
}

TEST_CASE("a trust anchor cut short anywhere is refused") {
  const auto good = make(sample_machine()).trust_anchor;
  // Everything but the final newline.
  for (std::size_t n = 0; n + 1 < good.size(); ++n) {
    CAPTURE(n);
    const auto r = read_trust_anchor(std::string_view(good).substr(0, n));
    REQUIRE_FALSE(r.has_value());
  }
  CHECK(read_trust_anchor(std::string_view(good).substr(0, good.size() - 1)).has_value());
}

TEST_CASE("trust anchor mistakes are refused with their code and JSON path") {
  const auto good = make(sample_machine()).trust_anchor;
  using errc = endorsements_errc;
  const auto refuse = [&](const std::function<void(json::object&)>& change, errc code,
                          std::string_view detail) {
    check_refused(read_trust_anchor(mutated(good, change)), code, detail);
  };
  SUBCASE("an unknown member") {
    refuse([](json::object& d) { d["linked-tags"] = json::array{}; }, errc::bad_shape,
           "linked-tags: unknown member: atls reads only 'tag-identity', 'triples', 'lang', "
           "'entities' here");
  }
  SUBCASE("no triples") {
    refuse([](json::object& d) { d.erase("triples"); }, errc::bad_shape,
           "(top level): missing member 'triples'");
  }
  SUBCASE("reference values where the trust anchor should be") {
    refuse(
        [](json::object& d) {
          auto& t = d["triples"].as_object();
          // A copy first: inserting may move the member the reference would point to.
          const json::value triple = t["attester-verification-keys"];
          t.erase("attester-verification-keys");
          t["reference-values"] = triple;
        },
        errc::bad_shape, "triples.reference-values: unknown member");
  }
  SUBCASE("two trust anchors") {
    refuse(
        [](json::object& d) {
          auto& list = d["triples"].as_object()["attester-verification-keys"].as_array();
          const json::value copy = list[0];
          list.push_back(copy);
        },
        errc::bad_shape,
        "triples.attester-verification-keys: expected exactly 1 trust anchor, found 2");
  }
  SUBCASE("an entity with an unknown role") {
    refuse([](json::object& d) { d["entities"].at(0).as_object()["roles"] = json::array{"owner"}; },
           errc::bad_value, "entities[0].roles[0]: unknown role 'owner'");
  }
  SUBCASE("a class id that is an OID") {
    refuse(
        [](json::object& d) {
          avk(d)["environment"].as_object()["class"].as_object()["id"].as_object()["type"] = "oid";
        },
        errc::unsupported,
        "triples.attester-verification-keys[0].environment.class.id.type: a class id of type "
        "'oid': atls reads only 'uuid'");
  }
  SUBCASE("a class id that is not a UUID") {
    refuse(
        [](json::object& d) {
          avk(d)["environment"].as_object()["class"].as_object()["id"].as_object()["value"] =
              "4484fcb6-f1aa-49a3-aa27-988a83a67f1";
        },
        errc::bad_value,
        "environment.class.id.value: '4484fcb6-f1aa-49a3-aa27-988a83a67f1' is not a UUID");
  }
  SUBCASE("a class with a vendor") {
    refuse(
        [](json::object& d) {
          avk(d)["environment"].as_object()["class"].as_object()["vendor"] = "ACME";
        },
        errc::bad_shape, "environment.class.vendor: unknown member: atls reads only 'id' here");
  }
  SUBCASE("an instance that is a UUID") {
    refuse(
        [](json::object& d) {
          auto& i = avk(d)["environment"].as_object()["instance"].as_object();
          i["type"] = "uuid";
          i["value"] = "76443127-0D10-43D0-9D76-D2FF094D0FAF";
        },
        errc::unsupported, "environment.instance.type: an instance of type 'uuid'");
  }
  SUBCASE("an instance in base64url") {
    refuse(
        [](json::object& d) {
          avk(d)["environment"].as_object()["instance"].as_object()["value"] =
              "AYiFVFnuuemzSkbrSMs58vaqadoEUioybRI9XFAfziE";
        },
        errc::bad_value, "environment.instance.value: not standard padded base64");
  }
  SUBCASE("an instance that is not a RAND UEID of 33 bytes") {
    refuse(
        [](json::object& d) {
          avk(d)["environment"].as_object()["instance"].as_object()["value"] =
              "AloAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        },
        errc::bad_value, "33 bytes starting with 0x01; this is 33 bytes starting with 0x02");
    refuse(
        [](json::object& d) {
          avk(d)["environment"].as_object()["instance"].as_object()["value"] = "AQID";
        },
        errc::bad_value, "this is 3 bytes starting with 0x01");
  }
  SUBCASE("no instance") {
    refuse([](json::object& d) { avk(d)["environment"].as_object().erase("instance"); },
           errc::bad_shape,
           "triples.attester-verification-keys[0].environment: missing member 'instance'");
  }
  SUBCASE("two keys") {
    refuse(
        [](json::object& d) {
          auto& keys = avk(d)["verification-keys"].as_array();
          const json::value copy = keys[0];
          keys.push_back(copy);
        },
        errc::bad_shape, "verification-keys: expected exactly 1 key");
  }
  SUBCASE("a COSE key") {
    refuse(
        [](json::object& d) {
          avk(d)["verification-keys"].as_array()[0].as_object()["type"] = "cose-key";
        },
        errc::unsupported, "verification-keys[0].type: a key of type 'cose-key'");
  }
  SUBCASE("a key that is not PEM") {
    refuse(
        [](json::object& d) {
          auto& v = avk(d)["verification-keys"].as_array()[0].as_object()["value"];
          v = "text before\n" + std::string(v.as_string());
        },
        errc::bad_value, "verification-keys[0].value: expected one PEM block");
  }
  SUBCASE("a P-384 key") {
    refuse(
        [](json::object& d) {
          const auto key = test::generate_key("P-384");
          avk(d)["verification-keys"].as_array()[0].as_object()["value"] =
              test::public_pem_of(key.get());
        },
        errc::bad_value, "verification-keys[0].value: not an EC P-256 public key");
  }
  SUBCASE("a P-256 key with a compressed point") {
    refuse(
        [](json::object& d) {
          const auto key = test::generate_key("P-256");
          REQUIRE(
              EVP_PKEY_set_utf8_string_param(key.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                             OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED) == 1);
          avk(d)["verification-keys"].as_array()[0].as_object()["value"] =
              test::public_pem_of(key.get());
        },
        errc::bad_value, "with a named curve and an uncompressed point");
  }
}

TEST_CASE("reference value mistakes are refused with their code and JSON path") {
  const auto good = make(sample_machine()).reference_values;
  using errc = endorsements_errc;
  const auto refuse = [&](const std::function<void(json::object&)>& change, errc code,
                          std::string_view detail) {
    check_refused(read_reference_values(mutated(good, change)), code, detail);
  };
  SUBCASE("an instance in the environment") {
    refuse(
        [](json::object& d) {
          rv(d)["environment"].as_object()["instance"] =
              json::parse(R"({"type": "bytes", "value": "AQID"})");
        },
        errc::bad_shape,
        "triples.reference-values[0].environment.instance: reference values belong to a class");
  }
  SUBCASE("no measurements") {
    refuse([](json::object& d) { rv(d)["measurements"] = json::array{}; }, errc::bad_shape,
           "triples.reference-values[0].measurements: expected 1 to 24 measurements");
  }
  SUBCASE("a measurement key that is not a uint") {
    refuse(
        [](json::object& d) {
          measurement(d, 1)["key"] = json::parse(R"({"type": "text", "value": "PCR3"})");
        },
        errc::unsupported, "measurements[1].key.type: a measurement key of type 'text'");
  }
  SUBCASE("PCR 24") {
    refuse([](json::object& d) { measurement(d, 2)["key"].as_object()["value"] = 24; },
           errc::bad_value, "measurements[2].key.value: 24 is out of range (0 to 23)");
  }
  SUBCASE("a negative PCR") {
    refuse([](json::object& d) { measurement(d, 2)["key"].as_object()["value"] = -1; },
           errc::bad_value, "measurements[2].key.value: must not be negative");
  }
  SUBCASE("a PCR written as a fraction") {
    refuse([](json::object& d) { measurement(d, 2)["key"].as_object()["value"] = 1.0; },
           errc::bad_shape, "measurements[2].key.value: expected an integer, found a number");
  }
  SUBCASE("a PCR listed twice") {
    refuse([](json::object& d) { measurement(d, 2)["key"].as_object()["value"] = 0; },
           errc::bad_value, "measurements[2].key.value: PCR 0 is listed twice");
  }
  SUBCASE("an algorithm by name") {
    refuse([](json::object& d) { digests(d, 0)[0].as_array()[0] = "sha-256"; }, errc::unsupported,
           "digests[0][0]: write the algorithm as its number");
  }
  SUBCASE("an unknown algorithm") {
    refuse([](json::object& d) { digests(d, 0)[0].as_array()[0] = 5; }, errc::unsupported,
           "measurements[0].value.digests[0][0]: hash algorithm 5");
  }
  SUBCASE("a digest of the wrong length") {
    refuse([](json::object& d) { digests(d, 1)[0].as_array()[1] = base64url_encode(bytes(31, 7)); },
           errc::bad_value,
           "measurements[1].value.digests[0][1]: a sha-256 digest is 32 bytes; "
           "this one is 31");
  }
  SUBCASE("a digest in padded standard base64") {
    refuse(
        [](json::object& d) {
          digests(d, 0)[0].as_array()[1] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        },
        errc::bad_value, "digests[0][1]: not unpadded base64url");
  }
  SUBCASE("a digest that is not a pair") {
    refuse([](json::object& d) { digests(d, 0)[0].as_array().push_back(1); }, errc::bad_shape,
           "digests[0]: expected exactly 2 elements");
  }
  SUBCASE("the same algorithm twice") {
    refuse(
        [](json::object& d) {
          const json::value copy = digests(d, 0)[0];
          digests(d, 0).push_back(copy);
        },
        errc::bad_value, "digests[1][0]: sha-256 is listed twice for PCR 0");
  }
  SUBCASE("no sha-256 digest") {
    refuse(
        [](json::object& d) {
          digests(d, 0)[0] = json::array{7, base64url_encode(bytes(48, 1))};
        },
        errc::unsupported, "measurements[0].value.digests: PCR 0 has no sha-256 digest");
  }
  SUBCASE("a raw value next to the digests") {
    refuse([](json::object& d) { measurement(d, 0)["value"].as_object()["raw-value"] = "AA"; },
           errc::bad_shape, "measurements[0].value.raw-value: unknown member");
  }
}

TEST_CASE("a trust anchor and reference values of different classes are class_mismatch") {
  const auto docs = make(sample_machine());
  const auto r = read_endorsements(docs.trust_anchor, vector_reference_values());
  check_refused(r, endorsements_errc::class_mismatch,
                "comid-trust-anchor.json names class 4484fcb6-f1aa-49a3-aa27-988a83a67f1e, "
                "comid-reference-values.json names class cd1f0e55-26f9-460d-b9d8-f7fde171787c");
  // A fault inside either document names that document first.
  check_refused(read_endorsements(docs.trust_anchor, "[]"), endorsements_errc::bad_shape,
                "comid-reference-values.json: (top level): expected an object, found an array");
  check_refused(read_endorsements("{}", docs.reference_values), endorsements_errc::bad_shape,
                "comid-trust-anchor.json: (top level): missing member");
}

TEST_CASE("endorsements are not made from a bad kid, key or PCR values") {
  using errc = endorsements_errc;
  auto m = sample_machine();
  m.instance_id[0] = 0x02;
  check_refused(make_endorsements(m), errc::bad_value, "instance id");
  m = sample_machine();
  m.ak_spki = test::spki_of(test::generate_key("P-384").get());
  check_refused(make_endorsements(m), errc::bad_value, "attestation key");
  m = sample_machine();
  m.reference.values.clear();
  check_refused(make_endorsements(m), errc::bad_value, "at least one PCR");
  m = sample_machine();
  m.reference.values[24] = bytes(32, 0);
  check_refused(make_endorsements(m), errc::bad_value, "PCR 24 is above 23");
  m = sample_machine();
  m.reference.values[3].pop_back();
  check_refused(make_endorsements(m), errc::bad_value, "PCR 3 is 31 bytes");
  m = sample_machine();
  m.reference.bank = 0x000c;
  check_refused(make_endorsements(m), errc::bad_value, "sha256 bank");
}

TEST_CASE("UUIDs are written in lower case and read in either case, and nothing else") {
  const auto id = parse_uuid("CD1F0E55-26F9-460D-b9d8-f7fde171787c");
  REQUIRE(id.has_value());
  CHECK(to_string(*id) == "cd1f0e55-26f9-460d-b9d8-f7fde171787c");
  CHECK(to_string(atlsd_tpm_class_id) == "4484fcb6-f1aa-49a3-aa27-988a83a67f1e");
  for (const auto* bad :
       {"", "cd1f0e5526f9460db9d8f7fde171787c", "{cd1f0e55-26f9-460d-b9d8-f7fde171787c}",
        "cd1f0e55-26f9-460d-b9d8-f7fde171787g", "cd1f0e55-26f9-460d-b9d8+f7fde171787c",
        "urn:uuid:cd1f0e55-26f9-460d-b9d8-f7fde171787c"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_uuid(bad).has_value());
  }
}

}  // namespace
}  // namespace atls::verify
