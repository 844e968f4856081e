// Endorsements of one machine for Veraison's parsec-tpm scheme: the trust anchor (the AK public
// key under the instance id base64(kid), in a class) and the reference values (the PCR values of
// that class), as the two CoMID JSON documents that Veraison's tooling (cocli) compiles into a
// CoRIM. `atlsctl veraison endorsements` writes them with make_endorsements(); the local verifier
// reads them back with read_endorsements() (verifier.local `endorsements: DIR`), so an operator
// registers with Veraison exactly what atlsd's own verifier was shown to accept.
//
// The readers take operator-supplied files: pure functions over text, no I/O, sizes bounded, and
// every member they walk through is checked (shape, type, length); anything else is refused with
// an endorsements_errc and a detail that names the JSON path, e.g.
// "triples.reference-values[0].measurements[1].value.digests[0]: ...". The JSON shapes, and why
// the class and tag ids are what they are, are in PROTOCOL-NOTES.md ("Veraison endorsements").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <boost/system/error_category.hpp>

#include "atls/common/result.hpp"
#include "atls/verify/local_verifier.hpp"

namespace atls::verify {

enum class endorsements_errc {
  malformed_json = 1,  // larger than max_endorsement_size, not one RFC 8259 JSON document, or an
                       // object with a repeated member
  bad_shape,           // a member missing, unknown or of the wrong JSON type, or a list with the
                       // wrong number of entries
  bad_value,           // a value of the right type that is wrong: a UUID, base64, PEM key, PCR
                       // index, digest length or instance id; a PCR or algorithm listed twice
  unsupported,         // valid CoMID that atls does not read: a class id other than a UUID, an
                       // instance other than bytes/ueid, a key other than pkix-base64-key, a
                       // digest algorithm other than sha-256/384/512, or a PCR without sha-256
  class_mismatch,      // the trust anchor and the reference values name different classes, so
                       // Veraison would never appraise the one with the other
};

const boost::system::error_category& endorsements_category() noexcept;

inline error_code make_error_code(endorsements_errc e) noexcept {
  return {static_cast<int>(e), endorsements_category()};
}

// A UUID in network byte order (RFC 9562 §4), as CoMID class ids and tag ids carry it.
using uuid = std::array<std::uint8_t, 16>;

// The class of every atlsd TPM unless the operator names another (`--class-id`): a random
// UUIDv4 picked for atlsd, 4484fcb6-f1aa-49a3-aa27-988a83a67f1e.
inline constexpr uuid atlsd_tpm_class_id = {0x44, 0x84, 0xfc, 0xb6, 0xf1, 0xaa, 0x49, 0xa3,
                                            0xaa, 0x27, 0x98, 0x8a, 0x83, 0xa6, 0x7f, 0x1e};

// Lower-case 8-4-4-4-12 hex (RFC 9562 §4).
[[nodiscard]] std::string to_string(const uuid& id);
// 8-4-4-4-12 hex digits in either case, nothing else (no braces, no urn:uuid:).
[[nodiscard]] std::optional<uuid> parse_uuid(std::string_view text);

// Veraison's instance id of the machine whose evidence carries `kid`: the kid in standard base64
// with padding (RFC 4648 §4), as Go's encoding/json writes a []byte. The trust anchor's CoMID
// names the machine by it, and Veraison's parsec-tpm scheme looks the trust anchor up by it.
// Encodes any bytes and cannot fail; whether `kid` has the kid's form is the caller's check
// (make_endorsements refuses other sizes).
[[nodiscard]] std::string instance_id_of(std::span<const std::uint8_t> kid);

// The names of the two documents in the directory `atlsctl veraison endorsements` writes.
inline constexpr std::string_view trust_anchor_file_name = "comid-trust-anchor.json";
inline constexpr std::string_view reference_values_file_name = "comid-reference-values.json";
// Far above a real document (about 1 KiB for the trust anchor, 4 KiB for 24 PCRs).
inline constexpr std::size_t max_endorsement_size = std::size_t{64} * 1024;
// The CoRIM profile Veraison's parsec-tpm scheme registers; the CoRIM that wraps these CoMIDs
// must name it.
inline constexpr std::string_view parsec_tpm_corim_profile =
    "tag:github.com/parallaxsecond,2023-03-03:tpm";

// What Veraison registers for one machine, and all the local verifier needs of it.
struct machine_endorsements {
  uuid class_id = atlsd_tpm_class_id;
  bytes instance_id;     // the evidence's kid: 0x01 (UEID type RAND) || 32 bytes
  bytes ak_spki;         // the AK: DER SubjectPublicKeyInfo, EC P-256, uncompressed point
  pcr_values reference;  // sha256 bank, PCRs 0..23
};

struct endorsement_documents {
  std::string trust_anchor;      // trust_anchor_file_name
  std::string reference_values;  // reference_values_file_name
};

// The two CoMIDs, pretty-printed JSON ending in a newline. Deterministic: the same input gives
// the same bytes (tag ids are derived from the content, see PROTOCOL-NOTES.md). Fails with
// bad_value (detail names the field) for an instance id that is not 0x01 || 32 bytes, an AK that
// is not a P-256 SPKI, or reference values that are empty, not in the sha256 bank, for a PCR
// above 23 or not 32 bytes long.
[[nodiscard]] detailed_result<endorsement_documents> make_endorsements(
    const machine_endorsements& endorsements);

struct trust_anchor {
  uuid class_id{};
  bytes instance_id;  // 0x01 || 32 bytes
  bytes ak_spki;      // re-encoded as the verifier compares it: named curve, uncompressed
};

struct reference_values {
  uuid class_id{};
  pcr_values values;  // the sha-256 digests; other algorithms are checked and dropped
};

// One CoMID with exactly one attester-verification-keys triple: class id of type uuid, instance
// of type bytes (current Veraison) or ueid (releases up to v0.0.2602) holding base64(kid), and
// exactly one key of type pkix-base64-key (a PEM "PUBLIC KEY", EC P-256, named curve,
// uncompressed point, as Go's x509 parser in Veraison accepts it). Fails as the enum says.
[[nodiscard]] detailed_result<trust_anchor> read_trust_anchor(std::string_view json);

// One CoMID with exactly one reference-values triple: class id of type uuid, no instance, and
// one measurement per PCR (key type uint, 0..23, each once) whose value holds only digests
// [alg-id, base64url] (1 sha-256, 7 sha-384, 8 sha-512, each at most once and of its length),
// among them a sha-256 one. Fails as the enum says.
[[nodiscard]] detailed_result<reference_values> read_reference_values(std::string_view json);

// Both documents, which must name the same class (class_mismatch otherwise). The detail of a
// failure starts with the name of the document it is in.
[[nodiscard]] detailed_result<machine_endorsements> read_endorsements(
    std::string_view trust_anchor_json, std::string_view reference_values_json);

}  // namespace atls::verify

template <>
struct boost::system::is_error_code_enum<atls::verify::endorsements_errc> : std::true_type {};
