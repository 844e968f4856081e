// The CoMIDs of Veraison's parsec-tpm scheme for one machine (atls/verify/endorsements.hpp):
// written from what the TPM reports, and read back strictly for the local verifier. The shapes
// follow veraison/services scheme/parsec-tpm/test/corim/src/comid-parsec-tpm-{ta,refval}.json
// and the JSON decoders of veraison/corim's comid package (PROTOCOL-NOTES.md).
#include "atls/verify/endorsements.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <boost/json.hpp>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/x509.h>

#include "atls/common/hex.hpp"
#include "atls/common/openssl_error_scope.hpp"
#include "atls/common/openssl_ptr.hpp"
#include "atls/verify/jose.hpp"

#include "detail/strict_json.hpp"

namespace atls::verify {

namespace {

namespace json = boost::json;
using errc = endorsements_errc;
using names = std::initializer_list<std::string_view>;

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "atls.verify.endorsements"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::malformed_json:
        return "endorsement is not a single strict JSON document of at most 64 KiB";
      case errc::bad_shape:
        return "endorsement does not have the shape of a parsec-tpm CoMID";
      case errc::bad_value:
        return "endorsement holds an invalid value";
      case errc::unsupported:
        return "endorsement uses a CoMID choice that atls does not read";
      case errc::class_mismatch:
        return "trust anchor and reference values name different classes";
    }
    return "unknown endorsements error";
  }
};

constexpr std::uint16_t tpm_alg_sha256 = 0x000b;
constexpr std::size_t sha256_size = 32;
constexpr std::uint8_t max_pcr = 23;
// A kid: UEID type RAND (0x01) followed by 32 bytes, as attest::decode requires it.
constexpr std::size_t kid_size = 33;
constexpr std::uint8_t ueid_type_rand = 0x01;

// IANA "Named Information Hash Algorithm" ids, as CoMID digests carry them, with their sizes.
struct digest_algorithm {
  std::int64_t id;
  std::string_view name;
  std::size_t size;
};
constexpr digest_algorithm sha256_alg{1, "sha-256", 32};
constexpr std::array<digest_algorithm, 3> digest_algorithms{
    {sha256_alg, {7, "sha-384", 48}, {8, "sha-512", 64}}};

constexpr std::string_view pem_header = "-----BEGIN PUBLIC KEY-----\n";
constexpr std::string_view pem_footer = "\n-----END PUBLIC KEY-----";

// ---------------------------------------------------------------------------------------------
// Encodings

// Standard base64 with padding (RFC 4648 §4): how Go's encoding/json writes the []byte of a
// "bytes" or "ueid" instance, which is what Veraison decodes.
std::string base64_std_encode(std::span<const std::uint8_t> data) {
  auto out = base64url_encode(data);
  std::replace(out.begin(), out.end(), '-', '+');
  std::replace(out.begin(), out.end(), '_', '/');
  out.append((4 - out.size() % 4) % 4, '=');
  return out;
}

// Only the canonical encoding: the standard alphabet, padded, zero trailing bits. The lenient
// decoder accepts more, so anything that does not re-encode to the same text is refused.
std::optional<bytes> base64_std_decode(std::string_view text) {
  auto out = base64_decode_lenient(text);
  if (!out || base64_std_encode(*out) != text) {
    return std::nullopt;
  }
  return out;
}

// The DER SPKI of a P-256 key in the form the local verifier compares (named curve,
// uncompressed point), or nothing for anything else.
std::optional<bytes> canonical_p256_spki(std::span<const std::uint8_t> der) {
  // A malformed key is an answer here, not an error for a later TLS failure to report.
  const openssl_error_scope errors;
  const unsigned char* cursor = der.data();
  const pkey_ptr key(d2i_PUBKEY(nullptr, &cursor, static_cast<long>(der.size())));
  if (!key || cursor != der.data() + der.size() || EVP_PKEY_is_a(key.get(), "EC") != 1) {
    return std::nullopt;
  }
  std::array<char, 64> group{};
  std::size_t group_size = 0;
  if (EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME, group.data(),
                                     group.size(), &group_size) != 1 ||
      std::string_view(group.data(), group_size) != SN_X9_62_prime256v1) {
    return std::nullopt;
  }
  if (EVP_PKEY_set_utf8_string_param(key.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                     OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) != 1) {
    return std::nullopt;
  }
  const int size = i2d_PUBKEY(key.get(), nullptr);
  if (size <= 0) {
    return std::nullopt;
  }
  bytes out(static_cast<std::size_t>(size));
  unsigned char* write = out.data();
  if (i2d_PUBKEY(key.get(), &write) != size) {
    return std::nullopt;
  }
  return out;
}

// RFC 7468 §13 "PUBLIC KEY", 64 characters a line, without a newline after the footer, as
// Veraison's own trust anchors are written.
std::string pem_of(std::span<const std::uint8_t> der) {
  const auto body = base64_std_encode(der);
  std::string out(pem_header);
  for (std::size_t i = 0; i < body.size(); i += 64) {
    out.append(body, i, 64);
    out += '\n';
  }
  out.pop_back();
  out += pem_footer;
  return out;
}

// The inverse of pem_of, plus one newline after the footer (which Go's pem.Decode also
// allows). Headers, blank lines and text around the block are refused: Go's decoder would
// skip text before the block, and a reader that skips text can be shown a different key than
// a person reading the file sees.
std::optional<bytes> der_of_pem(std::string_view pem) {
  if (pem.ends_with('\n')) {
    pem.remove_suffix(1);
  }
  if (!pem.starts_with(pem_header) || !pem.ends_with(pem_footer) ||
      pem.size() < pem_header.size() + pem_footer.size()) {
    return std::nullopt;
  }
  pem.remove_prefix(pem_header.size());
  pem.remove_suffix(pem_footer.size());
  std::string body;
  body.reserve(pem.size());
  for (const char c : pem) {
    if (c != '\n') {
      body += c;
    }
  }
  return base64_std_decode(body);
}

// ---------------------------------------------------------------------------------------------
// Writing

// Two-space indentation like the Veraison templates; arrays of scalars (a digest, roles) stay
// on one line, as they do there.
void pretty(const json::value& v, std::string& out, std::size_t indent) {
  const auto scalar = [](const json::value& e) { return !e.is_object() && !e.is_array(); };
  if (const auto* o = v.if_object(); o != nullptr && !o->empty()) {
    out += "{\n";
    std::size_t i = 0;
    for (const auto& member : *o) {
      out.append(indent + 2, ' ');
      out += json::serialize(json::string(member.key()));
      out += ": ";
      pretty(member.value(), out, indent + 2);
      out += ++i < o->size() ? ",\n" : "\n";
    }
    out.append(indent, ' ');
    out += '}';
    return;
  }
  if (const auto* a = v.if_array();
      a != nullptr && !a->empty() && !std::all_of(a->begin(), a->end(), scalar)) {
    out += "[\n";
    std::size_t i = 0;
    for (const auto& item : *a) {
      out.append(indent + 2, ' ');
      pretty(item, out, indent + 2);
      out += ++i < a->size() ? ",\n" : "\n";
    }
    out.append(indent, ' ');
    out += ']';
    return;
  }
  if (const auto* a = v.if_array(); a != nullptr) {
    out += '[';
    for (std::size_t i = 0; i < a->size(); ++i) {
      out += i == 0 ? "" : ", ";
      out += json::serialize((*a)[i]);
    }
    out += ']';
    return;
  }
  out += json::serialize(v);
}

// A tag id that is a function of what the tag says (RFC 9562 §5.8, UUIDv8 from SHA-256, as in
// its Appendix B.2): rerunning the command for an unchanged machine gives the same tags, and
// two machines or two PCR states never share one.
uuid derived_tag_id(std::string_view domain, const bytes& content) {
  bytes input(domain.begin(), domain.end());
  input.push_back(0);
  input.insert(input.end(), content.begin(), content.end());
  std::array<std::uint8_t, 32> digest{};
  unsigned int size = 0;
  (void)EVP_Digest(input.data(), input.size(), digest.data(), &size, EVP_sha256(), nullptr);
  uuid out{};
  std::copy_n(digest.begin(), out.size(), out.begin());
  out[6] = static_cast<std::uint8_t>((out[6] & 0x0fU) | 0x80U);  // version 8
  out[8] = static_cast<std::uint8_t>((out[8] & 0x3fU) | 0x80U);  // variant 10
  return out;
}

json::object type_value(std::string_view type, json::value value) {
  json::object out;
  out["type"] = type;
  out["value"] = std::move(value);
  return out;
}

// Built member by member: Boost.JSON's initializer lists guess between arrays and objects, and
// a nested one-element array is easy to get wrong that way.
json::object comid(const uuid& tag_id, std::string_view triple, json::object entry) {
  json::object identity;
  identity["id"] = to_string(tag_id);
  // Who made the tag: atlsd's tool, on the operator's behalf. Not "creator" or "maintainer",
  // which would claim authorship of the measured firmware.
  json::array roles;
  roles.emplace_back("tagCreator");
  json::object entity;
  entity["name"] = "atlsd";
  entity["roles"] = std::move(roles);
  json::array entities;
  entities.emplace_back(std::move(entity));
  json::array entries;
  entries.emplace_back(std::move(entry));
  json::object triples;
  triples[triple] = std::move(entries);

  json::object out;
  out["tag-identity"] = std::move(identity);
  out["entities"] = std::move(entities);
  out["triples"] = std::move(triples);
  return out;
}

std::string pretty_document(const json::object& document) {
  std::string out;
  pretty(document, out, 0);
  out += '\n';
  return out;
}

failure bad_input(std::string detail) {
  return {make_error_code(errc::bad_value), std::move(detail)};
}

// ---------------------------------------------------------------------------------------------
// Reading: each step names the JSON path of what it refuses.

failure fail(errc e, std::string_view where, std::string_view message) {
  return {make_error_code(e), (where.empty() ? std::string("(top level)") : std::string(where)) +
                                  ": " + std::string(message)};
}

std::string member_path(std::string_view parent, std::string_view name) {
  return parent.empty() ? std::string(name) : std::string(parent) + "." + std::string(name);
}

std::string item_path(std::string_view parent, std::size_t index) {
  return std::string(parent) + "[" + std::to_string(index) + "]";
}

std::string_view kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return "a number";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "a value";
}

bool among(names set, std::string_view word) {
  return std::find(set.begin(), set.end(), word) != set.end();
}

std::string listed(names set) {
  std::string out;
  for (const auto name : set) {
    out += (out.empty() ? "'" : ", '") + std::string(name) + "'";
  }
  return out;
}

// The object at `where`, with every required member and no member outside the two lists.
detailed_result<const json::object*> open_object(const json::value& v, std::string_view where,
                                                 names required, names optional = {}) {
  const auto* o = v.if_object();
  if (o == nullptr) {
    return fail(errc::bad_shape, where, "expected an object, found " + std::string(kind_name(v)));
  }
  for (const auto& member : *o) {
    if (!among(required, member.key()) && !among(optional, member.key())) {
      std::string known = listed(required);
      if (optional.size() != 0) {
        known += ", " + listed(optional);
      }
      return fail(errc::bad_shape, member_path(where, member.key()),
                  "unknown member: atls reads only " + known + " here");
    }
  }
  for (const auto name : required) {
    if (!o->contains(name)) {
      return fail(errc::bad_shape, where, "missing member '" + std::string(name) + "'");
    }
  }
  return o;
}

detailed_result<const json::array*> open_array(const json::value& v, std::string_view where,
                                               std::size_t min, std::size_t max,
                                               std::string_view what) {
  const auto* a = v.if_array();
  if (a == nullptr) {
    return fail(errc::bad_shape, where, "expected an array, found " + std::string(kind_name(v)));
  }
  if (a->size() < min || a->size() > max) {
    const auto count = min == max ? "exactly " + std::to_string(min)
                                  : std::to_string(min) + " to " + std::to_string(max);
    return fail(
        errc::bad_shape, where,
        "expected " + count + " " + std::string(what) + ", found " + std::to_string(a->size()));
  }
  return a;
}

detailed_result<std::string_view> get_string(const json::value& v, std::string_view where) {
  const auto* s = v.if_string();
  if (s == nullptr) {
    return fail(errc::bad_shape, where, "expected a string, found " + std::string(kind_name(v)));
  }
  return std::string_view(*s);
}

// An integer written as one (not 1.0), in 0..max.
detailed_result<std::uint64_t> get_uint(const json::value& v, std::string_view where,
                                        std::uint64_t max) {
  std::optional<std::uint64_t> n;
  if (const auto* u = v.if_uint64()) {
    n = *u;
  } else if (const auto* i = v.if_int64(); i != nullptr && *i >= 0) {
    n = static_cast<std::uint64_t>(*i);
  } else if (v.is_int64()) {
    return fail(errc::bad_value, where, "must not be negative");
  } else {
    return fail(errc::bad_shape, where, "expected an integer, found " + std::string(kind_name(v)));
  }
  if (*n > max) {
    return fail(errc::bad_value, where,
                std::to_string(*n) + " is out of range (0 to " + std::to_string(max) + ")");
  }
  return *n;
}

// A CoMID type choice, {"type": T, "value": V}, with T among `types`; `what` names it in
// messages. Returns the value.
detailed_result<const json::value*> open_typed(const json::value& v, std::string_view where,
                                               names types, std::string_view what) {
  const auto o = open_object(v, where, {"type", "value"});
  if (!o) {
    return o.error();
  }
  const auto type = get_string((*o)->at("type"), member_path(where, "type"));
  if (!type) {
    return type.error();
  }
  if (!among(types, *type)) {
    return fail(errc::unsupported, member_path(where, "type"),
                std::string(what) + " of type '" + std::string(*type) + "': atls reads only " +
                    listed(types));
  }
  return &(*o)->at("value");
}

// environment.class: only its id, a UUID. Veraison looks reference values up by the whole
// class, so a vendor or model here would have to match too; atls writes neither.
detailed_result<uuid> read_class(const json::value& v, std::string_view where) {
  const auto o = open_object(v, where, {"id"});
  if (!o) {
    return o.error();
  }
  const auto id_path = member_path(where, "id");
  const auto value = open_typed((*o)->at("id"), id_path, {"uuid"}, "a class id");
  if (!value) {
    return value.error();
  }
  const auto text = get_string(**value, member_path(id_path, "value"));
  if (!text) {
    return text.error();
  }
  const auto id = parse_uuid(*text);
  if (!id) {
    return fail(errc::bad_value, member_path(id_path, "value"),
                "'" + std::string(*text) + "' is not a UUID (8-4-4-4-12 hex digits)");
  }
  return *id;
}

// The text as one strict JSON document, and its one triple of kind `triple`: the rest of a CoMID
// (tag identity, language, entities) is checked for shape and otherwise not used.
detailed_result<const json::value*> the_triple(const json::value& document, std::string_view triple,
                                               std::string_view what) {
  const auto root = open_object(document, "", {"tag-identity", "triples"}, {"lang", "entities"});
  if (!root) {
    return root.error();
  }
  const auto identity =
      open_object((*root)->at("tag-identity"), "tag-identity", {"id"}, {"version"});
  if (!identity) {
    return identity.error();
  }
  const auto tag_id = get_string((*identity)->at("id"), "tag-identity.id");
  if (!tag_id) {
    return tag_id.error();
  }
  if (tag_id->empty()) {
    return fail(errc::bad_value, "tag-identity.id", "must not be empty");
  }
  if (const auto* version = (*identity)->if_contains("version")) {
    if (const auto v = get_uint(*version, "tag-identity.version", UINT64_MAX); !v) {
      return v.error();
    }
  }
  if (const auto* lang = (*root)->if_contains("lang")) {
    if (const auto s = get_string(*lang, "lang"); !s) {
      return s.error();
    }
  }
  if (const auto* entities = (*root)->if_contains("entities")) {
    const auto list = open_array(*entities, "entities", 1, 16, "entities");
    if (!list) {
      return list.error();
    }
    for (std::size_t i = 0; i < (*list)->size(); ++i) {
      const auto where = item_path("entities", i);
      const auto entity = open_object((**list)[i], where, {"name", "roles"}, {"regid"});
      if (!entity) {
        return entity.error();
      }
      for (const auto* member : {"name", "regid"}) {
        if (const auto* m = (*entity)->if_contains(member)) {
          const auto s = get_string(*m, member_path(where, member));
          if (!s) {
            return s.error();
          }
          if (s->empty()) {
            return fail(errc::bad_value, member_path(where, member), "must not be empty");
          }
        }
      }
      const auto roles_path = member_path(where, "roles");
      const auto roles = open_array((*entity)->at("roles"), roles_path, 1, 3, "roles");
      if (!roles) {
        return roles.error();
      }
      for (std::size_t r = 0; r < (*roles)->size(); ++r) {
        const auto role = get_string((**roles)[r], item_path(roles_path, r));
        if (!role) {
          return role.error();
        }
        if (!among({"tagCreator", "creator", "maintainer"}, *role)) {
          return fail(errc::bad_value, item_path(roles_path, r),
                      "unknown role '" + std::string(*role) +
                          "' (CoMID roles: 'tagCreator', 'creator', 'maintainer')");
        }
      }
    }
  }
  const auto triples = open_object((*root)->at("triples"), "triples", {triple});
  if (!triples) {
    return triples.error();
  }
  const auto where = member_path("triples", triple);
  // One machine, one triple: a second would be another machine's (or another class's), and
  // which one this file stands for would be a guess.
  const auto list = open_array((*triples)->at(triple), where, 1, 1, what);
  if (!list) {
    return list.error();
  }
  return &(**list)[0];
}

detailed_result<json::value> parse_document(std::string_view text) {
  if (text.size() > max_endorsement_size) {
    return fail(errc::malformed_json, "",
                "the document is " + std::to_string(text.size()) +
                    " bytes, more than the 64 KiB an endorsement may have");
  }
  auto document = detail::parse_json_strict(text, max_endorsement_size);
  if (!document) {
    return fail(errc::malformed_json, "",
                "not one JSON document (RFC 8259), or an object repeats a member");
  }
  return std::move(*document);
}

failure in_document(std::string_view name, failure f) {
  f.detail = std::string(name) + ": " + f.detail;
  return f;
}

}  // namespace

const boost::system::error_category& endorsements_category() noexcept {
  static const category instance;
  return instance;
}

std::string to_string(const uuid& id) {
  std::string out = to_hex(id);
  for (const std::size_t at : {20, 16, 12, 8}) {
    out.insert(at, 1, '-');
  }
  return out;
}

std::string instance_id_of(std::span<const std::uint8_t> kid) {
  return base64_std_encode(kid);
}

std::optional<uuid> parse_uuid(std::string_view text) {
  if (text.size() != 36) {
    return std::nullopt;
  }
  uuid out{};
  std::size_t byte = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') {
        return std::nullopt;
      }
      ++i;
      continue;
    }
    const int high = hex_digit(text[i]);
    const int low = hex_digit(text[i + 1]);
    if (high < 0 || low < 0) {
      return std::nullopt;
    }
    out[byte++] = static_cast<std::uint8_t>(high * 16 + low);
    i += 2;
  }
  return out;
}

detailed_result<endorsement_documents> make_endorsements(const machine_endorsements& e) {
  if (e.instance_id.size() != kid_size || e.instance_id[0] != ueid_type_rand) {
    return bad_input("instance id: expected the evidence's kid, 0x01 followed by 32 bytes");
  }
  const auto ak = canonical_p256_spki(e.ak_spki);
  if (!ak) {
    return bad_input("attestation key: expected the DER SubjectPublicKeyInfo of a P-256 key");
  }
  if (e.reference.bank != tpm_alg_sha256) {
    return bad_input("reference values: only the sha256 bank is supported");
  }
  if (e.reference.values.empty()) {
    return bad_input("reference values: at least one PCR is needed");
  }

  json::array measurements;
  bytes refval_content(e.class_id.begin(), e.class_id.end());
  refval_content.insert(refval_content.end(), e.instance_id.begin(), e.instance_id.end());
  for (const auto& [index, value] : e.reference.values) {
    if (index > max_pcr) {
      return bad_input("reference values: PCR " + std::to_string(index) + " is above 23");
    }
    if (value.size() != sha256_size) {
      return bad_input("reference values: PCR " + std::to_string(index) + " is " +
                       std::to_string(value.size()) + " bytes, not 32");
    }
    refval_content.push_back(index);
    refval_content.insert(refval_content.end(), value.begin(), value.end());
    // Only sha-256: the quote covers the sha256 bank, and a digest of another bank that no
    // quote covers would only look like a claim about it.
    json::array digest;
    digest.emplace_back(sha256_alg.id);
    digest.emplace_back(base64url_encode(value));
    json::array digests;
    digests.emplace_back(std::move(digest));
    json::object mval;
    mval["digests"] = std::move(digests);
    json::object measurement;
    measurement["key"] = type_value("uint", static_cast<std::uint64_t>(index));
    measurement["value"] = std::move(mval);
    measurements.emplace_back(std::move(measurement));
  }
  json::object klass;
  klass["id"] = type_value("uuid", json::string(to_string(e.class_id)));

  // Instance type "bytes": what Veraison's parsec-tpm scheme requires since v0.0.2603, whose
  // evidence handler looks the trust anchor up as a bytes instance of the kid.
  json::object ta_env;
  ta_env["class"] = klass;
  ta_env["instance"] = type_value("bytes", json::string(instance_id_of(e.instance_id)));
  json::array keys;
  keys.emplace_back(type_value("pkix-base64-key", json::string(pem_of(*ak))));
  json::object ta_triple;
  ta_triple["environment"] = std::move(ta_env);
  ta_triple["verification-keys"] = std::move(keys);

  json::object rv_env;
  rv_env["class"] = std::move(klass);
  json::object rv_triple;
  rv_triple["environment"] = std::move(rv_env);
  rv_triple["measurements"] = std::move(measurements);

  bytes ta_content(e.class_id.begin(), e.class_id.end());
  ta_content.insert(ta_content.end(), e.instance_id.begin(), e.instance_id.end());
  ta_content.insert(ta_content.end(), ak->begin(), ak->end());
  return endorsement_documents{
      .trust_anchor =
          pretty_document(comid(derived_tag_id("atlsd comid trust anchor v1", ta_content),
                                "attester-verification-keys", std::move(ta_triple))),
      .reference_values =
          pretty_document(comid(derived_tag_id("atlsd comid reference values v1", refval_content),
                                "reference-values", std::move(rv_triple)))};
}

detailed_result<trust_anchor> read_trust_anchor(std::string_view text) {
  const auto document = parse_document(text);
  if (!document) {
    return document.error();
  }
  const auto triple = the_triple(*document, "attester-verification-keys", "trust anchor");
  if (!triple) {
    return triple.error();
  }
  const std::string where = "triples.attester-verification-keys[0]";
  const auto avk = open_object(**triple, where, {"environment", "verification-keys"});
  if (!avk) {
    return avk.error();
  }
  const auto env_path = member_path(where, "environment");
  const auto env = open_object((*avk)->at("environment"), env_path, {"class", "instance"});
  if (!env) {
    return env.error();
  }
  trust_anchor out;
  const auto class_id = read_class((*env)->at("class"), member_path(env_path, "class"));
  if (!class_id) {
    return class_id.error();
  }
  out.class_id = *class_id;

  // "bytes" is what current Veraison requires; "ueid" is what it required up to v0.0.2602.
  // Both carry the kid as standard base64.
  const auto instance_path = member_path(env_path, "instance");
  const auto instance =
      open_typed((*env)->at("instance"), instance_path, {"bytes", "ueid"}, "an instance");
  if (!instance) {
    return instance.error();
  }
  const auto instance_value_path = member_path(instance_path, "value");
  const auto instance_text = get_string(**instance, instance_value_path);
  if (!instance_text) {
    return instance_text.error();
  }
  auto kid = base64_std_decode(*instance_text);
  if (!kid) {
    return fail(errc::bad_value, instance_value_path,
                "not standard padded base64 (RFC 4648 §4), as Veraison reads an instance");
  }
  if (kid->size() != kid_size || (*kid)[0] != ueid_type_rand) {
    return fail(errc::bad_value, instance_value_path,
                "the instance is base64(kid), 33 bytes starting with 0x01; this is " +
                    std::to_string(kid->size()) + " bytes" +
                    (kid->empty() ? std::string()
                                  : " starting with 0x" + to_hex(std::span(kid->data(), 1))));
  }
  out.instance_id = std::move(*kid);

  const auto keys_path = member_path(where, "verification-keys");
  const auto keys = open_array((*avk)->at("verification-keys"), keys_path, 1, 1,
                               "key (Veraison's parsec-tpm scheme takes exactly one AK)");
  if (!keys) {
    return keys.error();
  }
  const auto key_path = item_path(keys_path, 0);
  const auto key = open_typed((**keys)[0], key_path, {"pkix-base64-key"}, "a key");
  if (!key) {
    return key.error();
  }
  const auto pem_path = member_path(key_path, "value");
  const auto pem = get_string(**key, pem_path);
  if (!pem) {
    return pem.error();
  }
  const auto der = der_of_pem(*pem);
  if (!der) {
    return fail(errc::bad_value, pem_path,
                "expected one PEM block \"-----BEGIN PUBLIC KEY-----\" ... \"-----END PUBLIC "
                "KEY-----\" of standard base64, with nothing around it");
  }
  auto spki = canonical_p256_spki(*der);
  // Anything but the canonical form is refused: Go's x509 parser in Veraison refuses
  // compressed points and explicit curve parameters, so such a key would verify here only.
  if (!spki || *spki != *der) {
    return fail(errc::bad_value, pem_path,
                "not an EC P-256 public key with a named curve and an uncompressed point: "
                "Parsec TPM attestation keys are ECDSA P-256");
  }
  out.ak_spki = std::move(*spki);
  return out;
}

detailed_result<reference_values> read_reference_values(std::string_view text) {
  const auto document = parse_document(text);
  if (!document) {
    return document.error();
  }
  const auto triple = the_triple(*document, "reference-values", "reference-value triple");
  if (!triple) {
    return triple.error();
  }
  const std::string where = "triples.reference-values[0]";
  const auto rv = open_object(**triple, where, {"environment", "measurements"});
  if (!rv) {
    return rv.error();
  }
  const auto env_path = member_path(where, "environment");
  // Veraison refuses an instance here (reference values belong to a class); say so rather
  // than call it unknown.
  if (const auto* env = (*rv)->at("environment").if_object();
      env != nullptr && env->contains("instance")) {
    return fail(errc::bad_shape, member_path(env_path, "instance"),
                "reference values belong to a class: Veraison refuses an instance here");
  }
  const auto env = open_object((*rv)->at("environment"), env_path, {"class"});
  if (!env) {
    return env.error();
  }
  reference_values out;
  const auto class_id = read_class((*env)->at("class"), member_path(env_path, "class"));
  if (!class_id) {
    return class_id.error();
  }
  out.class_id = *class_id;
  out.values.bank = tpm_alg_sha256;

  const auto list_path = member_path(where, "measurements");
  const auto list = open_array((*rv)->at("measurements"), list_path, 1, max_pcr + 1,
                               "measurements (one per PCR)");
  if (!list) {
    return list.error();
  }
  for (std::size_t i = 0; i < (*list)->size(); ++i) {
    const auto m_path = item_path(list_path, i);
    const auto m = open_object((**list)[i], m_path, {"key", "value"});
    if (!m) {
      return m.error();
    }
    const auto key_path = member_path(m_path, "key");
    const auto key = open_typed((*m)->at("key"), key_path, {"uint"}, "a measurement key");
    if (!key) {
      return key.error();
    }
    const auto pcr = get_uint(**key, member_path(key_path, "value"), max_pcr);
    if (!pcr) {
      return pcr.error();
    }
    const auto index = static_cast<std::uint8_t>(*pcr);
    if (out.values.values.contains(index)) {
      return fail(errc::bad_value, member_path(key_path, "value"),
                  "PCR " + std::to_string(index) + " is listed twice");
    }
    const auto value_path = member_path(m_path, "value");
    const auto value = open_object((*m)->at("value"), value_path, {"digests"});
    if (!value) {
      return value.error();
    }
    const auto digests_path = member_path(value_path, "digests");
    const auto digests =
        open_array((*value)->at("digests"), digests_path, 1, digest_algorithms.size(), "digests");
    if (!digests) {
      return digests.error();
    }
    std::optional<bytes> sha256;
    std::vector<std::int64_t> seen;
    seen.reserve(digest_algorithms.size());
    for (std::size_t d = 0; d < (*digests)->size(); ++d) {
      const auto d_path = item_path(digests_path, d);
      const auto pair = open_array((**digests)[d], d_path, 2, 2, "elements ([alg-id, base64url])");
      if (!pair) {
        return pair.error();
      }
      const auto& alg_value = (**pair)[0];
      if (alg_value.is_string()) {
        return fail(errc::unsupported, item_path(d_path, 0),
                    "write the algorithm as its number (1 for sha-256), not '" +
                        std::string(alg_value.get_string()) + "'");
      }
      const auto alg_id = get_uint(alg_value, item_path(d_path, 0), UINT64_MAX);
      if (!alg_id) {
        return alg_id.error();
      }
      const digest_algorithm* alg = nullptr;
      for (const auto& candidate : digest_algorithms) {
        if (static_cast<std::uint64_t>(candidate.id) == *alg_id) {
          alg = &candidate;
        }
      }
      if (alg == nullptr) {
        return fail(errc::unsupported, item_path(d_path, 0),
                    "hash algorithm " + std::to_string(*alg_id) +
                        ": atls reads 1 (sha-256), 7 (sha-384) and 8 (sha-512)");
      }
      if (std::find(seen.begin(), seen.end(), alg->id) != seen.end()) {
        return fail(errc::bad_value, item_path(d_path, 0),
                    std::string(alg->name) + " is listed twice for PCR " + std::to_string(index));
      }
      seen.push_back(alg->id);
      const auto encoded = get_string((**pair)[1], item_path(d_path, 1));
      if (!encoded) {
        return encoded.error();
      }
      auto digest = base64url_decode(*encoded);
      if (!digest) {
        return fail(errc::bad_value, item_path(d_path, 1),
                    "not unpadded base64url (RFC 4648 §5), as CoMID digests are written");
      }
      if (digest->size() != alg->size) {
        return fail(errc::bad_value, item_path(d_path, 1),
                    "a " + std::string(alg->name) + " digest is " + std::to_string(alg->size) +
                        " bytes; this one is " + std::to_string(digest->size()));
      }
      if (alg->id == sha256_alg.id) {
        sha256 = std::move(*digest);
      }
    }
    if (!sha256) {
      return fail(errc::unsupported, digests_path,
                  "PCR " + std::to_string(index) +
                      " has no sha-256 digest (alg 1): the local verifier compares the sha256 "
                      "bank, which atlsd quotes");
    }
    out.values.values.emplace(index, std::move(*sha256));
  }
  return out;
}

detailed_result<machine_endorsements> read_endorsements(std::string_view trust_anchor_json,
                                                        std::string_view reference_values_json) {
  auto anchor = read_trust_anchor(trust_anchor_json);
  if (!anchor) {
    return in_document(trust_anchor_file_name, anchor.error());
  }
  auto reference = read_reference_values(reference_values_json);
  if (!reference) {
    return in_document(reference_values_file_name, reference.error());
  }
  // Veraison finds the reference values through the trust anchor's class
  // (GetReferenceValueIDs), so values of another class would never be compared.
  if (anchor->class_id != reference->class_id) {
    return failure{make_error_code(errc::class_mismatch),
                   std::string(trust_anchor_file_name) + " names class " +
                       to_string(anchor->class_id) + ", " +
                       std::string(reference_values_file_name) + " names class " +
                       to_string(reference->class_id) +
                       ": Veraison looks reference values up by the trust anchor's class"};
  }
  return machine_endorsements{.class_id = anchor->class_id,
                              .instance_id = std::move(anchor->instance_id),
                              .ak_spki = std::move(anchor->ak_spki),
                              .reference = std::move(reference->values)};
}

}  // namespace atls::verify
