// Loading the verifier policy (atls/config/verifier_policy.hpp) with the daemon config's
// checker (detail/checker.hpp): every problem reported at its line, unknown keys refused.
#include "atls/config/verifier_policy.hpp"

#include <algorithm>
#include <array>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <yaml-cpp/yaml.h>

#include "atls/common/hex.hpp"
#include "atls/common/openssl_ptr.hpp"
#include "atls/verify/endorsements.hpp"

#include "detail/checker.hpp"
#include "detail/verifier_policy.hpp"

namespace atls::config {

namespace detail {

namespace {

namespace fs = std::filesystem;
using bytes = std::vector<std::uint8_t>;

constexpr std::string_view verifier_keys[] = {"local"};
constexpr std::string_view local_keys[] = {"trusted_aks", "reference_values", "endorsements"};
constexpr std::string_view trusted_ak_keys[] = {"pem", "spki_sha256"};
constexpr std::string_view reference_keys[] = {"bank", "pcrs", "pcr_digest"};
constexpr std::string_view pcr_digest_keys[] = {"pcrs", "digest"};
constexpr std::string_view accept_keys[] = {"minimum_status", "minimum_tiers",
                                            "required_submodules", "max_age"};
// The EAR spelling of the AR4SI claims, in the order of verify::trust_claim.
constexpr std::string_view claim_names[] = {"instance-identity", "configuration", "executables",
                                            "file-system",       "hardware",      "runtime-opaque",
                                            "storage-opaque",    "sourced-data"};
static_assert(std::size(claim_names) == verify::trust_claim_count);
// The statuses a minimum may name; none and contraindicated are refused with their own message.
constexpr std::string_view minimum_statuses[] = {"affirming", "warning"};
// PCR banks a TPM may have, so that an unsupported one gets a clearer message than "unknown".
constexpr std::string_view other_banks[] = {"sha1", "sha384", "sha512", "sm3_256"};
// TPM 2.0 PC Client platforms have 24 PCRs (TCG PC Client Platform TPM Profile, PCR banks).
constexpr std::uint64_t max_pcr = 23;
constexpr std::uint16_t tpm_alg_sha256 = 0x000b;
constexpr std::size_t sha256_size = 32;

// A file a policy names, read the way a config file is (regular files only, without blocking,
// at most 1 MiB); what is wrong with it is reported at the key that names it.
std::optional<std::string> read_named(checker_base& c, const value_ref& v, const fs::path& path,
                                      std::string_view hint = {}) {
  std::vector<diagnostic> why;
  auto text = detail::read_file(path, path.string(), why);
  for (auto& d : why) {
    c.error(v.mark, v.path, std::move(d.message) + std::string(hint));
  }
  return text;
}

// The DER SPKI of the P-256 public key in a PEM file ("-----BEGIN PUBLIC KEY-----", as
// `atlsctl tpm show` and `tpm2_readpublic -f pem` write it). The key is re-encoded, so the SPKI
// is in the form the verifier compares (named curve, uncompressed point).
std::optional<bytes> load_ak_pem(checker_base& c, const value_ref& v, const file_ref& file) {
  const auto where = file.path.string();
  const auto text = read_named(c, v, file.path);
  if (!text) {
    return std::nullopt;
  }
  const bio_ptr bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())));
  if (!bio) {
    c.error(v.mark, v.path, "cannot read " + where + ": out of memory");
    return std::nullopt;
  }
  // OpenSSL's reasons would only repeat what the message says; keep the queue clean.
  ERR_set_mark();
  const pkey_ptr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  std::array<char, 64> group{};
  std::size_t group_size = 0;
  const bool p256 = key && EVP_PKEY_is_a(key.get(), "EC") == 1 &&
                    EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME,
                                                   group.data(), group.size(), &group_size) == 1 &&
                    std::string_view(group.data(), group_size) == SN_X9_62_prime256v1;
  bytes der;
  if (p256) {
    // The verifier compares keys in uncompressed form (see ecdsa_recover.hpp).
    (void)EVP_PKEY_set_utf8_string_param(key.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                         OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED);
    const int size = i2d_PUBKEY(key.get(), nullptr);
    if (size > 0) {
      der.resize(static_cast<std::size_t>(size));
      unsigned char* cursor = der.data();
      if (i2d_PUBKEY(key.get(), &cursor) != size) {
        der.clear();
      }
    }
  }
  ERR_pop_to_mark();
  if (!key) {
    c.error(v.mark, v.path,
            where + " holds no PEM public key (expected -----BEGIN PUBLIC KEY-----)");
    return std::nullopt;
  }
  if (!p256) {
    c.error(v.mark, v.path,
            where + " is not an EC P-256 key: Parsec TPM attestation keys are ECDSA P-256");
    return std::nullopt;
  }
  if (der.empty()) {
    c.error(v.mark, v.path, "cannot encode the key in " + where);
    return std::nullopt;
  }
  return der;
}

void check_trusted_ak(checker_base& c, const value_ref& item, verify::local_verifier_options& out) {
  const auto m = c.open_mapping(item, trusted_ak_keys);
  if (!m) {
    return;
  }
  const auto* pem = m->find("pem");
  const auto* pin = m->find("spki_sha256");
  if (pem != nullptr && pin != nullptr) {
    c.error(pin->key_mark, pin->value.path,
            "an entry is either 'pem' or 'spki_sha256', not both: list the key twice to "
            "give both");
    return;
  }
  if (pem != nullptr) {
    if (const auto file = c.get_file(pem->value)) {
      if (auto der = load_ak_pem(c, pem->value, *file)) {
        out.trusted_aks.push_back(std::move(*der));
      }
    }
    return;
  }
  if (pin != nullptr) {
    if (const auto digest = c.get_hex(pin->value, sha256_size, "an SPKI SHA-256")) {
      verify::sha256_digest d{};
      std::copy(digest->begin(), digest->end(), d.begin());
      out.trusted_ak_hashes.push_back(d);
    }
    return;
  }
  // An empty mapping (or one whose only keys were unknown, already reported).
  if (m->self.node.size() == 0) {
    c.error(item.mark, item.path, "expected 'pem: FILE' or 'spki_sha256: HEX'");
  }
}

std::optional<std::uint8_t> get_pcr_index(checker_base& c, const value_ref& v) {
  const auto n = c.get_integer(v, 0, max_pcr);
  if (!n) {
    return std::nullopt;
  }
  return static_cast<std::uint8_t>(*n);
}

// `pcrs: {0: HEX, 1: HEX}`: the value of each PCR the quote may select.
std::optional<verify::pcr_values> check_pcr_values(checker_base& c, const value_ref& v) {
  if (!v.node.IsMap()) {
    c.error(v.mark, v.path, "expected a mapping of PCR index to value, e.g. {0: <64 hex digits>}");
    return std::nullopt;
  }
  const auto errors_before = c.error_count();
  verify::pcr_values out;
  for (const auto& kv : v.node) {
    const YAML::Node& key = kv.first;
    const YAML::Node& value = kv.second;
    const std::string name = key.IsScalar() ? key.Scalar() : std::string("?");
    const auto path = join(v.path, name);
    const auto index = get_pcr_index(c, value_ref{key, path, key.Mark(), key.Mark()});
    const auto digest = c.get_hex(value_ref{value, path, value_mark(value, key.Mark()), key.Mark()},
                                  sha256_size, "a sha256 PCR value");
    if (!index || !digest) {
      continue;
    }
    if (!out.values.emplace(*index, *digest).second) {
      c.error(key.Mark(), path, "PCR " + std::to_string(*index) + " is listed twice");
    }
  }
  if (c.error_count() != errors_before) {
    return std::nullopt;
  }
  if (out.values.empty()) {
    c.error(v.mark, v.path, "list at least one PCR");
    return std::nullopt;
  }
  return out;
}

// `pcr_digest: {pcrs: [0, 1, 2], digest: HEX}`: the quote's pcrDigest for exactly that selection.
std::optional<verify::pcr_digest> check_pcr_digest(checker_base& c, const value_ref& v) {
  const auto errors_before = c.error_count();
  const auto m = c.open_mapping(v, pcr_digest_keys);
  if (!m) {
    return std::nullopt;
  }
  verify::pcr_digest out;
  if (const auto r = c.require(*m, "pcrs")) {
    if (const auto items = c.get_list(*r)) {
      for (const auto& item : *items) {
        const auto index = get_pcr_index(c, item);
        if (!index) {
          continue;
        }
        if (std::find(out.pcrs.begin(), out.pcrs.end(), *index) != out.pcrs.end()) {
          c.error(item.mark, item.path, "PCR " + std::to_string(*index) + " is listed twice");
          continue;
        }
        out.pcrs.push_back(*index);
      }
      if (items->empty()) {
        c.error(r->mark, r->path, "list at least one PCR");
      }
    }
  }
  // The TPM digests the selection in ascending order whatever order the list is written in.
  std::sort(out.pcrs.begin(), out.pcrs.end());
  if (const auto r = c.require(*m, "digest")) {
    if (auto digest = c.get_hex(*r, sha256_size, "a sha256 pcrDigest")) {
      out.digest = std::move(*digest);
    }
  }
  if (c.error_count() != errors_before) {
    return std::nullopt;
  }
  return out;
}

using reference = std::variant<verify::pcr_values, verify::pcr_digest>;

std::optional<reference> check_reference_values(checker_base& c, const value_ref& v) {
  const auto errors_before = c.error_count();
  const auto m = c.open_mapping(v, reference_keys);
  if (!m) {
    return std::nullopt;
  }
  if (const auto* bank = m->find("bank")) {
    const auto& node = bank->value.node;
    if (node.IsScalar() && contains(other_banks, node.Scalar())) {
      c.error(bank->value.mark, bank->value.path,
              "'" + node.Scalar() +
                  "' PCRs are not supported: the local verifier compares sha256 PCRs only");
    } else {
      constexpr std::string_view banks[] = {"sha256"};
      (void)c.get_choice(bank->value, banks);
    }
  }
  const auto* pcrs = m->find("pcrs");
  const auto* digest = m->find("pcr_digest");
  if (pcrs != nullptr && digest != nullptr) {
    c.error(digest->key_mark, digest->value.path,
            "set either 'pcrs' or 'pcr_digest', not both: with the PCR values the digest is "
            "computed from them");
    return std::nullopt;
  }
  if (pcrs == nullptr && digest == nullptr) {
    c.error(m->self.owner, m->self.path,
            "missing 'pcrs' (the expected PCR values) or 'pcr_digest' (the expected digest of a "
            "PCR selection)");
    return std::nullopt;
  }
  std::optional<reference> out;
  if (pcrs != nullptr) {
    if (auto values = check_pcr_values(c, pcrs->value)) {
      values->bank = tpm_alg_sha256;
      out = std::move(*values);
    }
  } else if (auto d = check_pcr_digest(c, digest->value)) {
    d->bank = tpm_alg_sha256;
    out = std::move(*d);
  }
  if (c.error_count() != errors_before) {
    return std::nullopt;
  }
  return out;
}

// `endorsements: DIR`: the trust anchor and reference values that `atlsctl veraison
// endorsements` wrote for Veraison, read as the local verifier's AK and PCR values, so that the
// local verifier accepts exactly what Veraison would be given.
void check_endorsements(checker_base& c, const value_ref& v, verify::local_verifier_options& out) {
  const auto dir = c.get_file(v);
  if (!dir) {
    return;
  }
  std::error_code ec;
  if (!fs::is_directory(dir->path, ec)) {
    c.error(v.mark, v.path,
            dir->path.string() +
                " is not a directory: name the directory that 'atlsctl veraison endorsements "
                "--out DIR' wrote");
    return;
  }
  const std::string_view hint =
      " (the directory should hold what 'atlsctl veraison endorsements' wrote)";
  const auto anchor = read_named(c, v, dir->path / verify::trust_anchor_file_name, hint);
  const auto values = read_named(c, v, dir->path / verify::reference_values_file_name, hint);
  if (!anchor || !values) {
    return;
  }
  auto endorsements = verify::read_endorsements(*anchor, *values);
  if (!endorsements) {
    // The detail starts with the file's name and then names the JSON path.
    c.error(v.mark, v.path, dir->path.string() + "/" + endorsements.error().detail);
    return;
  }
  out.trusted_aks.push_back(std::move(endorsements->ak_spki));
  out.reference = std::move(endorsements->reference);
}

// A minimum for ear.status or a claim's tier: affirming or warning. "none" and
// "contraindicated" would accept results that say nothing, or say the attester is bad.
std::optional<verify::ear_status> get_minimum(checker_base& c, const value_ref& v) {
  if (v.node.IsScalar() && (v.node.Scalar() == "contraindicated" || v.node.Scalar() == "none")) {
    c.error(v.mark, v.path,
            "'" + v.node.Scalar() + "' as a minimum would accept results that " +
                (v.node.Scalar() == "none" ? "make no claim" : "contraindicate the attester") +
                ": use affirming or warning");
    return std::nullopt;
  }
  const auto i = c.get_choice(v, minimum_statuses);
  if (!i) {
    return std::nullopt;
  }
  return *i == 0 ? verify::ear_status::affirming : verify::ear_status::warning;
}

}  // namespace

std::optional<verify::local_verifier_options> check_local_verifier(checker_base& c,
                                                                   const value_ref& v) {
  const auto errors_before = c.error_count();
  const auto m = c.open_mapping(v, local_keys);
  if (!m) {
    return std::nullopt;
  }
  verify::local_verifier_options out;
  const auto* endorsements = m->find("endorsements");
  const bool explicit_values =
      m->find("trusted_aks") != nullptr || m->find("reference_values") != nullptr;
  // One source of truth: with both, a reader could not tell which AK or PCR values the verifier
  // would use.
  if (endorsements != nullptr && explicit_values) {
    c.error(endorsements->key_mark, endorsements->value.path,
            "'endorsements' brings its own attestation key and reference values: remove "
            "'trusted_aks' and 'reference_values', or this key");
    return std::nullopt;
  }
  if (endorsements != nullptr) {
    check_endorsements(c, endorsements->value, out);
    if (c.error_count() != errors_before) {
      return std::nullopt;
    }
    return out;
  }
  if (!explicit_values) {
    c.error(m->self.owner, m->self.path,
            "missing 'trusted_aks' and 'reference_values', or 'endorsements' (a directory "
            "written by 'atlsctl veraison endorsements')");
    return std::nullopt;
  }
  if (const auto r = c.require(*m, "trusted_aks")) {
    if (const auto items = c.get_list(*r)) {
      if (items->empty()) {
        c.error(r->mark, r->path, "list at least one trusted attestation key");
      }
      for (const auto& item : *items) {
        check_trusted_ak(c, item, out);
      }
    }
  }
  if (const auto r = c.require(*m, "reference_values")) {
    if (auto reference = check_reference_values(c, *r)) {
      out.reference = std::move(*reference);
    }
  }
  if (c.error_count() != errors_before) {
    return std::nullopt;
  }
  return out;
}

std::optional<verify::appraisal_policy> check_appraisal_policy(checker_base& c,
                                                               const value_ref& v) {
  const auto errors_before = c.error_count();
  const auto m = c.open_mapping(v, accept_keys);
  if (!m) {
    return std::nullopt;
  }
  verify::appraisal_policy out;
  if (const auto* e = m->find("minimum_status")) {
    if (const auto s = get_minimum(c, e->value)) {
      out.minimum_status = *s;
    }
  }
  if (const auto* e = m->find("minimum_tiers")) {
    // Claim names are the keys, so a misspelt claim is an unknown key with a suggestion.
    if (const auto tiers = c.open_mapping(e->value, claim_names)) {
      for (const auto& claim : tiers->entries) {
        const auto index = static_cast<std::size_t>(
            std::find(std::begin(claim_names), std::end(claim_names), claim.name) -
            std::begin(claim_names));
        if (const auto s = get_minimum(c, claim.value)) {
          out.minimum_tiers[index] = *s;
        }
      }
    }
  }
  if (const auto* e = m->find("required_submodules")) {
    if (const auto items = c.get_list(e->value)) {
      for (const auto& item : *items) {
        auto name = c.get_nonempty_string(item);
        if (!name) {
          continue;
        }
        if (std::find(out.required_submodules.begin(), out.required_submodules.end(), *name) !=
            out.required_submodules.end()) {
          c.error(item.mark, item.path, "'" + *name + "' is listed twice");
          continue;
        }
        out.required_submodules.push_back(std::move(*name));
      }
    }
  }
  if (const auto* e = m->find("max_age")) {
    if (const auto d = c.get_duration(e->value, false)) {
      if (d->count() % 1000 != 0) {
        c.error(e->value.mark, e->value.path,
                "must be a whole number of seconds: EAR timestamps have one-second resolution");
      } else {
        out.max_age = std::chrono::duration_cast<std::chrono::seconds>(*d);
      }
    }
  }
  if (c.error_count() != errors_before) {
    return std::nullopt;
  }
  return out;
}

}  // namespace detail

namespace {

constexpr std::string_view root_keys[] = {"verifier", "accept"};

std::optional<verifier_policy> check_root(detail::checker_base& c, const YAML::Node& root) {
  const detail::value_ref self{root, "", root.Mark(), root.Mark()};
  if (root.IsNull()) {
    c.error(YAML::Mark::null_mark(), "",
            "the verifier policy is empty: it needs 'verifier' and 'accept'");
    return std::nullopt;
  }
  const auto m = c.open_mapping(self, root_keys);
  if (!m) {
    return std::nullopt;
  }
  std::optional<verify::local_verifier_options> local;
  std::optional<verify::appraisal_policy> accept;
  if (const auto v = c.require(*m, "verifier")) {
    if (const auto verifier = c.open_mapping(*v, detail::verifier_keys)) {
      if (const auto l = c.require(*verifier, "local")) {
        local = detail::check_local_verifier(c, *l);
      }
    }
  }
  // Required even though every key in it has a default: the acceptance rules are the point of
  // the file, and a policy without them is more likely cut short than meant.
  if (const auto v = c.require(*m, "accept")) {
    accept = detail::check_appraisal_policy(c, *v);
  }
  if (!local || !accept) {
    return std::nullopt;
  }
  return verifier_policy{.local = std::move(*local), .accept = std::move(*accept)};
}

}  // namespace

verifier_policy_result load_verifier_policy_file(const std::filesystem::path& path) {
  verifier_policy_result result;
  constexpr std::string_view what = "verifier policy";
  const auto text = detail::read_file(path, what, result.errors);
  if (!text) {
    return result;
  }
  const auto base_dir = detail::base_dir_of(path, what, result.errors);
  if (!base_dir) {
    return result;
  }
  return load_verifier_policy_text(*text, path.string(), *base_dir);
}

verifier_policy_result load_verifier_policy_text(std::string_view yaml, std::string_view file_name,
                                                 const std::filesystem::path& base_dir) {
  verifier_policy_result result;
  const auto document = detail::parse_document(yaml, file_name, "verifier policy", result.errors);
  if (!document) {
    return result;
  }
  detail::checker_base c(file_name, base_dir);
  std::optional<verifier_policy> policy;
  try {
    policy = check_root(c, *document);
  } catch (const YAML::Exception& e) {
    // As in config.cpp: a bug in the checker, still reported as a diagnostic.
    c.error(e.mark, "", std::string("internal error while reading the verifier policy: ") + e.msg);
  }
  result.errors = c.take_errors();
  if (!result.errors.empty()) {
    detail::sort_by_position(result.errors);
    return result;
  }
  result.policy = std::move(policy);
  return result;
}

}  // namespace atls::config
