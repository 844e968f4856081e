// atlsctl: the operator's command-line tool. Errors go to stderr with a non-zero exit.
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "atls/app/assemble.hpp"
#include "atls/attest/evidence.hpp"
#include "atls/attest/tik_key.hpp"
#include "atls/attest/tpm.hpp"
#include "atls/config/verifier_policy.hpp"
#include "atls/tls/certificate.hpp"
#include "atls/verify/appraisal_policy.hpp"
#include "atls/verify/ear.hpp"
#include "atls/verify/endorsements.hpp"
#include "atls/verify/jose.hpp"
#include "atls/verify/local_verifier.hpp"

namespace {

namespace attest = atls::attest;
namespace json = boost::json;

constexpr std::string_view usage = R"(usage: atlsctl COMMAND [ARGS]

  config check FILE                 validate a config as atlsd would load it
  tpm provision                     create the AK and TIK in the TPM (idempotent)
  tpm show [--json]                 print the AK and TIK: handles, TPM names, public keys (PEM)
  tpm csr --subject /CN=NAME [--san DNS:NAME,URI:URI] [--out FILE]
                                    a certificate signing request for the TIK, signed in the TPM
  tpm self-signed --subject /CN=NAME [--san ...] [--days N] [--out FILE]
                                    a self-signed certificate for the TIK
  tpm extend --pcr N --data HEX     extend sha256 PCR N (0 to 23) with SHA-256 of the bytes HEX
  evidence collect --nonce HEX [--pcrs sha256:0,1,2,...] --out FILE
                                    write Parsec TPM evidence for the nonce to FILE
  evidence dump FILE                print decoded evidence (claims, nonce, PCR digest) as JSON
  evidence verify --policy FILE --nonce HEX EVIDENCE_FILE
                                    appraise evidence with the local verifier and a verifier
                                    policy (config/README.md), print the result as JSON; exit 0
                                    only when the policy accepts it
  veraison endorsements [--pcrs sha256:0,1,2,...] [--class-id UUID] --out DIR
                                    write what a Veraison operator registers for this machine:
                                    DIR/comid-trust-anchor.json (the AK under instance
                                    base64(kid)) and DIR/comid-reference-values.json (the PCRs'
                                    current values), CoMID JSON for cocli (config/README.md)
  ear verify --jwk KEY.json [--alg ALG] [--nonce HEX] [--max-age SECONDS] TOKEN_FILE
                                    verify an EAR (a Veraison attestation result JWT) and print
                                    it as JSON: the signature with KEY (ALG pinned, else the JWK's
                                    alg or its curve's), the claims, eat_nonce == HEX when given,
                                    exp not passed, iat at most 60 s ahead and, with --max-age,
                                    at most SECONDS old. The status is printed, not judged.
  --version

TPM commands take --tcti STRING (else $ATLS_TCTI, else device:/dev/tpmrm0), and
--ak-handle / --tik-handle (default 0x81000100 / 0x81000101).
)";

// Arguments after the command words: "--flag value" pairs and bare "--switch"es.
struct options {
  std::map<std::string, std::string, std::less<>> values;
  std::vector<std::string> positional;
  [[nodiscard]] bool has(std::string_view name) const { return values.contains(name); }
};

constexpr std::string_view switches[] = {"--json"};

std::optional<options> parse_options(const std::vector<std::string_view>& args) {
  options out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto arg = args[i];
    if (!arg.starts_with("--")) {
      out.positional.emplace_back(arg);
      continue;
    }
    if (std::find(std::begin(switches), std::end(switches), arg) != std::end(switches)) {
      out.values.emplace(std::string(arg), "");
      continue;
    }
    if (i + 1 >= args.size()) {
      std::cerr << "atlsctl: " << arg << " needs a value\n";
      return std::nullopt;
    }
    out.values.emplace(std::string(arg), std::string(args[++i]));
  }
  return out;
}

std::optional<std::vector<std::uint8_t>> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) {
    return std::nullopt;
  }
  std::vector<std::uint8_t> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const auto* first = hex.data() + 2 * i;
    if (std::from_chars(first, first + 2, out[i], 16).ptr != first + 2) {
      return std::nullopt;
    }
  }
  return out;
}

std::string to_hex(const std::vector<std::uint8_t>& data) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const auto b : data) {
    out += digits[b >> 4];
    out += digits[b & 0xf];
  }
  return out;
}

std::optional<std::uint32_t> parse_handle(std::string_view text) {
  if (text.starts_with("0x") || text.starts_with("0X")) {
    text.remove_prefix(2);
  }
  std::uint32_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  if (ec != std::errc{} || end != text.data() + text.size() || (value >> 24) != 0x81) {
    return std::nullopt;
  }
  return value;
}

// "sha256:0,1,2" (the only bank the attester quotes today).
std::optional<attest::pcr_selection> parse_pcrs(std::string_view text) {
  constexpr std::string_view bank = "sha256:";
  if (!text.starts_with(bank)) {
    return std::nullopt;
  }
  text.remove_prefix(bank.size());
  attest::pcr_selection out{.hash_alg = 0x000B, .pcrs = {}};
  while (!text.empty()) {
    const auto comma = text.find(',');
    const auto item = text.substr(0, comma);
    unsigned index = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), index);
    if (ec != std::errc{} || end != item.data() + item.size() || index > 23) {
      return std::nullopt;
    }
    out.pcrs.push_back(static_cast<std::uint8_t>(index));
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
  }
  std::sort(out.pcrs.begin(), out.pcrs.end());
  out.pcrs.erase(std::unique(out.pcrs.begin(), out.pcrs.end()), out.pcrs.end());
  if (out.pcrs.empty()) {
    return std::nullopt;
  }
  return out;
}

std::string pem_of(const std::vector<std::uint8_t>& spki_der) {
  const unsigned char* p = spki_der.data();
  EVP_PKEY* key = d2i_PUBKEY(nullptr, &p, static_cast<long>(spki_der.size()));
  BIO* bio = BIO_new(BIO_s_mem());
  std::string out;
  if (key != nullptr && bio != nullptr && PEM_write_bio_PUBKEY(bio, key) == 1) {
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio, &data);
    out.assign(data, static_cast<std::size_t>(len));
  }
  BIO_free(bio);
  EVP_PKEY_free(key);
  return out;
}

int fail(const std::string& what, const atls::error_code& ec) {
  std::cerr << "atlsctl: " << what << ": " << ec.message() << "\n";
  return 1;
}

std::optional<attest::tpm_options> tpm_options_from(const options& opts) {
  attest::tpm_options out;
  // Read before any TPM worker thread exists.
  const char* env = std::getenv("ATLS_TCTI");  // NOLINT(concurrency-mt-unsafe)
  if (opts.has("--tcti")) {
    out.tcti = opts.values.find("--tcti")->second;
  } else if (env != nullptr && *env != '\0') {
    out.tcti = env;
  }
  for (const auto& [flag, into] :
       {std::pair{"--ak-handle", &out.ak_handle}, std::pair{"--tik-handle", &out.tik_handle}}) {
    if (const auto it = opts.values.find(flag); it != opts.values.end()) {
      const auto handle = parse_handle(it->second);
      if (!handle) {
        std::cerr << "atlsctl: " << flag << " must be a persistent handle (0x81xxxxxx)\n";
        return std::nullopt;
      }
      *into = *handle;
    }
  }
  return out;
}

json::object key_json(const attest::key_info& key) {
  std::ostringstream handle;
  handle << "0x" << std::hex << key.handle;
  return {{"handle", handle.str()},
          {"name", to_hex(key.name)},
          {"public_key_pem", pem_of(key.spki_der)}};
}

void print_keys(const attest::tpm_keys& keys, bool as_json) {
  if (as_json) {
    std::cout << json::serialize(
                     json::object{{"ak", key_json(keys.ak)}, {"tik", key_json(keys.tik)}})
              << "\n";
    return;
  }
  for (const auto& [label, key] : {std::pair{"AK (attestation key)", &keys.ak},
                                   std::pair{"TIK (TLS identity key)", &keys.tik}}) {
    std::cout << label << "\n  handle: 0x" << std::hex << key->handle << std::dec
              << "\n  name:   " << to_hex(key->name) << "\n"
              << pem_of(key->spki_der);
  }
}

int tpm_provision(const options& opts) {
  const auto tpm_opts = tpm_options_from(opts);
  if (!tpm_opts) {
    return 2;
  }
  attest::tpm device(*tpm_opts);
  const auto report = device.provision();
  if (!report) {
    return fail("tpm provision (" + tpm_opts->tcti + ")", report.error());
  }
  std::cout << (report->ak_created ? "created" : "reused existing") << " AK at 0x" << std::hex
            << report->keys.ak.handle << "\n"
            << (report->tik_created ? "created" : "reused existing") << " TIK at 0x"
            << report->keys.tik.handle << std::dec << "\n";
  return 0;
}

int tpm_show(const options& opts) {
  const auto tpm_opts = tpm_options_from(opts);
  if (!tpm_opts) {
    return 2;
  }
  attest::tpm device(*tpm_opts);
  const auto keys = device.keys();
  if (!keys) {
    return fail("tpm show (" + tpm_opts->tcti + ")", keys.error());
  }
  print_keys(*keys, opts.has("--json"));
  return 0;
}

// Writes text to --out, or to stdout without it.
int write_output(const options& opts, const std::string& text, std::string_view what) {
  const auto out_it = opts.values.find("--out");
  if (out_it == opts.values.end()) {
    std::cout << text;
    return 0;
  }
  std::ofstream out(out_it->second, std::ios::trunc);
  out << text;
  if (!out) {
    std::cerr << "atlsctl: cannot write " << out_it->second << "\n";
    return 1;
  }
  std::cerr << "wrote " << what << " to " << out_it->second << "\n";
  return 0;
}

enum class certificate_kind { request, self_signed };

int tpm_certificate(const options& opts, certificate_kind kind) {
  const auto tpm_opts = tpm_options_from(opts);
  if (!tpm_opts) {
    return 2;
  }
  atls::tls::certificate_fields fields;
  if (const auto it = opts.values.find("--subject"); it != opts.values.end()) {
    fields.subject = it->second;
  } else {
    std::cerr << "atlsctl: --subject /CN=NAME is required\n";
    return 2;
  }
  if (const auto it = opts.values.find("--san"); it != opts.values.end()) {
    fields.subject_alt_names = it->second;
  }
  if (const auto it = opts.values.find("--days"); it != opts.values.end()) {
    unsigned days = 0;
    const auto& text = it->second;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), days);
    if (ec != std::errc{} || end != text.data() + text.size() || days == 0 || days > 36500) {
      std::cerr << "atlsctl: --days must be 1 to 36500\n";
      return 2;
    }
    fields.validity = std::chrono::days(days);
  }
  auto device = std::make_shared<attest::tpm>(*tpm_opts);
  const auto key = attest::tik_private_key(device);
  if (!key) {
    return fail("the TIK (" + tpm_opts->tcti + ")", key.error());
  }
  const auto pem = kind == certificate_kind::request
                       ? atls::tls::certificate_request_pem(key->get(), fields)
                       : atls::tls::self_signed_certificate_pem(key->get(), fields);
  if (!pem) {
    std::cerr << "atlsctl: " << atls::to_string(pem.error()) << "\n";
    return 1;
  }
  return write_output(opts, *pem,
                      kind == certificate_kind::request ? "a CSR" : "a self-signed certificate");
}

// --pcrs, else PCRs 0 to 7: the pre-OS measurements (firmware, boot loader) of a PC client
// platform, in the TCG PC Client Platform Firmware Profile.
std::optional<attest::pcr_selection> pcrs_from(const options& opts) {
  const auto it = opts.values.find("--pcrs");
  auto pcrs =
      parse_pcrs(it == opts.values.end() ? "sha256:0,1,2,3,4,5,6,7" : std::string_view(it->second));
  if (!pcrs) {
    std::cerr << "atlsctl: --pcrs must look like sha256:0,1,2 (indices 0 to 23)\n";
  }
  return pcrs;
}

int evidence_collect(const options& opts) {
  const auto tpm_opts = tpm_options_from(opts);
  if (!tpm_opts) {
    return 2;
  }
  const auto nonce_it = opts.values.find("--nonce");
  const auto out_it = opts.values.find("--out");
  if (nonce_it == opts.values.end() || out_it == opts.values.end()) {
    std::cerr << "atlsctl: evidence collect needs --nonce HEX and --out FILE\n";
    return 2;
  }
  const auto nonce = from_hex(nonce_it->second);
  if (!nonce || nonce->empty() || nonce->size() > 64) {
    std::cerr << "atlsctl: --nonce must be 1 to 64 bytes of hex\n";
    return 2;
  }
  const auto pcrs = pcrs_from(opts);
  if (!pcrs) {
    return 2;
  }
  attest::tpm device(*tpm_opts);
  const auto evidence = device.evidence(*nonce, *pcrs);
  if (!evidence) {
    return fail("evidence collect (" + tpm_opts->tcti + ")", evidence.error());
  }
  const auto encoded = attest::encode(*evidence);
  std::ofstream out(out_it->second, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(encoded.data()),
            static_cast<std::streamsize>(encoded.size()));
  if (!out) {
    std::cerr << "atlsctl: cannot write " << out_it->second << "\n";
    return 1;
  }
  std::cerr << "wrote " << encoded.size() << " bytes of " << attest::parsec_tpm_media_type << " to "
            << out_it->second << "\n";
  return 0;
}

// `tpm extend`: what a changed boot component would do to a PCR, for demos and tests of
// reference values.
int tpm_extend(const options& opts) {
  const auto tpm_opts = tpm_options_from(opts);
  if (!tpm_opts) {
    return 2;
  }
  const auto pcr_it = opts.values.find("--pcr");
  const auto data_it = opts.values.find("--data");
  if (pcr_it == opts.values.end() || data_it == opts.values.end()) {
    std::cerr << "atlsctl: tpm extend needs --pcr N and --data HEX\n";
    return 2;
  }
  unsigned index = 0;
  const auto& text = pcr_it->second;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), index);
  if (ec != std::errc{} || end != text.data() + text.size() || index > 23) {
    std::cerr << "atlsctl: --pcr must be 0 to 23\n";
    return 2;
  }
  const auto data = from_hex(data_it->second);
  if (!data || data->empty() || data->size() > 1024) {
    std::cerr << "atlsctl: --data must be 1 to 1024 bytes of hex\n";
    return 2;
  }
  attest::tpm device(*tpm_opts);
  if (const auto extended = device.extend_pcr(index, *data); !extended) {
    return fail("tpm extend (" + tpm_opts->tcti + ")", extended.error());
  }
  std::cout << "extended sha256 PCR " << index << " with SHA-256 of " << data->size()
            << " byte(s)\n";
  return 0;
}

// Writes text to dir/name whole or not at all (a temporary file renamed over it), so that a
// half-written CoMID is never registered or read.
bool write_file_atomically(const std::filesystem::path& dir, std::string_view name,
                           const std::string& text) {
  const auto path = dir / name;
  auto temporary = path;
  temporary += ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::cerr << "atlsctl: cannot write " << temporary.string() << "\n";
      return false;
    }
  }
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    std::cerr << "atlsctl: cannot write " << path.string() << ": " << ec.message() << "\n";
    return false;
  }
  return true;
}

// `veraison endorsements`: the trust anchor and the reference values of this machine as
// Veraison's parsec-tpm scheme wants them registered. The kid is the one the attester puts in
// evidence (attest::tpm::evidence derives it), taken from fresh evidence rather than derived a
// second time here; the same evidence then checks the documents: read back as the local
// verifier reads them, they must appraise it as affirming, or nothing is written.
int veraison_endorsements(const options& opts) {
  namespace verify = atls::verify;
  const auto tpm_opts = tpm_options_from(opts);
  if (!tpm_opts) {
    return 2;
  }
  const auto out_it = opts.values.find("--out");
  if (out_it == opts.values.end()) {
    std::cerr << "atlsctl: veraison endorsements needs --out DIR\n";
    return 2;
  }
  const auto pcrs = pcrs_from(opts);
  if (!pcrs) {
    return 2;
  }
  verify::machine_endorsements endorsements;
  if (const auto it = opts.values.find("--class-id"); it != opts.values.end()) {
    const auto class_id = verify::parse_uuid(it->second);
    if (!class_id) {
      std::cerr << "atlsctl: --class-id must be a UUID (8-4-4-4-12 hex digits)\n";
      return 2;
    }
    endorsements.class_id = *class_id;
  }

  const std::string what = "veraison endorsements (" + tpm_opts->tcti + ")";
  attest::tpm device(*tpm_opts);
  const auto keys = device.keys();
  if (!keys) {
    return fail(what, keys.error());
  }
  endorsements.ak_spki = keys->ak.spki_der;
  // The PCRs are read and then quoted; anything extended in between (a boot service, IMA) makes
  // the two disagree, and then both are taken again.
  constexpr int attempts = 3;
  std::optional<verify::endorsement_documents> documents;
  for (int attempt = 0; attempt < attempts && !documents; ++attempt) {
    auto values = device.read_pcrs(*pcrs);
    if (!values) {
      return fail(what + ": reading PCRs", values.error());
    }
    endorsements.reference = {.bank = pcrs->hash_alg, .values = std::move(*values)};
    verify::bytes nonce(32);
    if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
      std::cerr << "atlsctl: " << what << ": no random bytes for a nonce\n";
      return 1;
    }
    const auto evidence = device.evidence(nonce, *pcrs);
    if (!evidence) {
      return fail(what + ": evidence", evidence.error());
    }
    endorsements.instance_id = evidence->kid;
    auto made = verify::make_endorsements(endorsements);
    if (!made) {
      std::cerr << "atlsctl: " << what << ": " << atls::to_string(made.error()) << "\n";
      return 1;
    }
    const auto read = verify::read_endorsements(made->trust_anchor, made->reference_values);
    if (!read) {
      std::cerr << "atlsctl: " << what << ": " << atls::to_string(read.error()) << "\n";
      return 1;
    }
    const verify::local_verifier_options local{.trusted_aks = {read->ak_spki},
                                               .reference = read->reference};
    const auto result =
        verify::appraise_parsec_tpm(local, attest::encode(*evidence), attest::parsec_tpm_media_type,
                                    nonce, verify::clock::now());
    if (!result) {
      return fail(what + ": checking the endorsements against fresh evidence", result.error());
    }
    if (result->status == verify::ear_status::affirming) {
      documents = std::move(*made);
    }
  }
  if (!documents) {
    std::cerr << "atlsctl: " << what << ": the PCRs changed between reading and quoting them, "
              << attempts << " times; try again when the machine is idle\n";
    return 1;
  }

  const std::filesystem::path dir(out_it->second);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::cerr << "atlsctl: cannot create " << dir.string() << ": " << ec.message() << "\n";
    return 1;
  }
  if (!write_file_atomically(dir, verify::trust_anchor_file_name, documents->trust_anchor) ||
      !write_file_atomically(dir, verify::reference_values_file_name,
                             documents->reference_values)) {
    return 1;
  }
  std::cerr << "wrote " << (dir / verify::trust_anchor_file_name).string() << " and "
            << (dir / verify::reference_values_file_name).string() << " (class "
            << verify::to_string(endorsements.class_id) << ", "
            << endorsements.reference.values.size() << " sha256 PCRs)\n";
  return 0;
}

int evidence_dump(const options& opts) {
  if (opts.positional.size() != 1) {
    std::cerr << "atlsctl: evidence dump needs one FILE\n";
    return 2;
  }
  std::ifstream in(opts.positional[0], std::ios::binary);
  if (!in) {
    std::cerr << "atlsctl: cannot read " << opts.positional[0] << "\n";
    return 1;
  }
  // The format caps evidence far below this; reading more would only feed the decoder junk.
  constexpr std::size_t limit = 1 << 20;
  std::vector<std::uint8_t> data;
  data.resize(limit + 1);
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size()));
  data.resize(static_cast<std::size_t>(in.gcount()));
  if (data.size() > limit) {
    std::cerr << "atlsctl: " << opts.positional[0] << " is larger than 1 MiB\n";
    return 1;
  }
  const auto evidence = attest::decode(data);
  if (!evidence) {
    return fail("evidence dump " + opts.positional[0], evidence.error());
  }
  std::cout << attest::to_json(*evidence) << "\n";
  return 0;
}

// `evidence verify`: the local verifier and the appraisal policy of a verifier policy file, as a
// relying party would apply them. The result is printed whenever there is one (a warning the
// policy refuses is still worth reading); the exit code says whether the policy accepts it.
int evidence_verify(const options& opts) {
  namespace verify = atls::verify;
  const auto policy_it = opts.values.find("--policy");
  const auto nonce_it = opts.values.find("--nonce");
  if (policy_it == opts.values.end() || nonce_it == opts.values.end() ||
      opts.positional.size() != 1) {
    std::cerr << "atlsctl: evidence verify needs --policy FILE, --nonce HEX and one "
                 "EVIDENCE_FILE\n";
    return 2;
  }
  const auto nonce = from_hex(nonce_it->second);
  if (!nonce || nonce->size() < verify::min_nonce_size || nonce->size() > verify::max_nonce_size) {
    std::cerr << "atlsctl: --nonce must be 8 to 64 bytes of hex\n";
    return 2;
  }
  const auto loaded = atls::config::load_verifier_policy_file(policy_it->second);
  for (const auto& error : loaded.errors) {
    std::cerr << to_string(error) << "\n";
  }
  if (!loaded.policy) {
    std::cerr << "atlsctl: evidence verify: " << loaded.errors.size() << " error(s) in "
              << policy_it->second << "\n";
    return 1;
  }

  const auto& path = opts.positional[0];
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "atlsctl: evidence verify: cannot read " << path << "\n";
    return 1;
  }
  // The decoder refuses anything over 64 KiB; one byte more than that is enough to tell.
  constexpr std::size_t limit = std::size_t{64} * 1024;
  std::vector<std::uint8_t> evidence(limit + 1);
  in.read(reinterpret_cast<char*>(evidence.data()), static_cast<std::streamsize>(evidence.size()));
  evidence.resize(static_cast<std::size_t>(in.gcount()));

  const auto now = verify::clock::now();
  const auto result = verify::appraise_parsec_tpm(loaded.policy->local, evidence,
                                                  attest::parsec_tpm_media_type, *nonce, now);
  if (!result) {
    return fail("evidence verify", result.error());
  }
  std::cout << verify::to_json(*result) << "\n";
  if (const auto accepted = verify::check(loaded.policy->accept, *result, now); !accepted) {
    return fail("evidence verify", accepted.error());
  }
  return 0;
}

// `ear verify`: what a relying party checks before it looks at the claims. Exit 0 (and the
// result on stdout) only for a genuine, well-formed, fresh EAR; the status and trust vector are
// for the reader, because judging them needs a policy this command does not take.
int ear_verify(const options& opts) {
  namespace verify = atls::verify;
  const auto jwk_it = opts.values.find("--jwk");
  if (jwk_it == opts.values.end() || opts.positional.size() != 1) {
    std::cerr << "atlsctl: ear verify needs --jwk KEY.json and one TOKEN_FILE\n";
    return 2;
  }
  std::optional<verify::jws_algorithm> pinned;
  if (const auto it = opts.values.find("--alg"); it != opts.values.end()) {
    pinned = verify::parse_jws_algorithm(it->second);
    if (!pinned) {
      std::cerr << "atlsctl: --alg must be ES256, ES384, ES512, PS256, PS384, PS512, RS256, "
                   "RS384, RS512 or EdDSA\n";
      return 2;
    }
  }
  std::optional<std::vector<std::uint8_t>> nonce;
  if (const auto it = opts.values.find("--nonce"); it != opts.values.end()) {
    nonce = from_hex(it->second);
    if (!nonce || nonce->size() < 8 || nonce->size() > 64) {
      std::cerr << "atlsctl: --nonce must be 8 to 64 bytes of hex\n";
      return 2;
    }
  }
  std::optional<std::chrono::seconds> max_age;
  if (const auto it = opts.values.find("--max-age"); it != opts.values.end()) {
    std::uint32_t seconds = 0;
    const auto& text = it->second;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (ec != std::errc{} || end != text.data() + text.size()) {
      std::cerr << "atlsctl: --max-age must be a number of seconds\n";
      return 2;
    }
    max_age = std::chrono::seconds(seconds);
  }

  // Both inputs are bounded by what the parsers accept; one byte more tells "too large" apart.
  const auto read = [](const std::string& path, std::size_t limit) -> std::optional<std::string> {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::cerr << "atlsctl: ear verify: cannot read " << path << "\n";
      return std::nullopt;
    }
    std::string text(limit + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<std::size_t>(in.gcount()));
    if (text.size() > limit) {
      std::cerr << "atlsctl: ear verify: " << path << " is larger than " << limit << " bytes\n";
      return std::nullopt;
    }
    return text;
  };
  const auto jwk = read(jwk_it->second, verify::max_jwk_size);
  // A token file usually ends with a newline, which is not part of the token.
  auto token = read(opts.positional[0], verify::max_token_size + 2);
  if (!jwk || !token) {
    return 1;
  }
  while (!token->empty() && (token->back() == '\n' || token->back() == '\r')) {
    token->pop_back();
  }

  const auto key = verify::parse_jwk(*jwk, pinned);
  if (!key) {
    return fail("ear verify: " + jwk_it->second, key.error());
  }
  verify::ear_expectations expected;
  if (nonce) {
    expected.nonce = *nonce;
  }
  const auto ear = verify::verify_ear(*token, *key, expected);
  if (!ear) {
    return fail("ear verify", ear.error());
  }
  // Only the time rules: contraindicated is the weakest minimum, so no status is refused.
  const verify::appraisal_policy freshness{.minimum_status = verify::ear_status::contraindicated,
                                           .max_age = max_age};
  if (const auto fresh = verify::check(freshness, *ear, verify::clock::now()); !fresh) {
    return fail("ear verify", fresh.error());
  }
  std::cout << verify::to_json(*ear) << "\n";
  return 0;
}

int config_check(std::string_view file) {
  // Nothing is served: the verifier clients are built, never run.
  boost::asio::io_context idle;
  const auto assembled = atls::app::assemble(file, idle.get_executor());
  for (const auto& error : assembled.errors) {
    std::cerr << to_string(error) << "\n";
  }
  if (!assembled.errors.empty()) {
    std::cerr << "atlsctl: " << assembled.errors.size() << " error(s) in " << file << "\n";
    return 1;
  }
  std::cout << file << ": OK (" << assembled.config->listeners.size() << " listener(s))\n";
  return 0;
}

int dispatch(const std::vector<std::string_view>& args) {
  if (args.size() == 1 && args[0] == "--version") {
    std::cout << "atlsctl " ATLS_VERSION "\n";
    return 0;
  }
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << usage;
    return 0;
  }
  if (args.size() < 2) {
    std::cerr << usage;
    return 2;
  }
  const auto rest = std::vector<std::string_view>(args.begin() + 2, args.end());
  const auto opts = parse_options(rest);
  if (!opts) {
    return 2;
  }
  const auto command = std::string(args[0]) + " " + std::string(args[1]);
  if (command == "config check" && opts->positional.size() == 1 && opts->values.empty()) {
    return config_check(opts->positional[0]);
  }
  if (command == "tpm provision" && opts->positional.empty()) {
    return tpm_provision(*opts);
  }
  if (command == "tpm show" && opts->positional.empty()) {
    return tpm_show(*opts);
  }
  if (command == "tpm csr" && opts->positional.empty()) {
    return tpm_certificate(*opts, certificate_kind::request);
  }
  if (command == "tpm self-signed" && opts->positional.empty()) {
    return tpm_certificate(*opts, certificate_kind::self_signed);
  }
  if (command == "tpm extend" && opts->positional.empty()) {
    return tpm_extend(*opts);
  }
  if (command == "veraison endorsements" && opts->positional.empty()) {
    return veraison_endorsements(*opts);
  }
  if (command == "evidence collect" && opts->positional.empty()) {
    return evidence_collect(*opts);
  }
  if (command == "evidence dump") {
    return evidence_dump(*opts);
  }
  if (command == "evidence verify") {
    return evidence_verify(*opts);
  }
  if (command == "ear verify") {
    return ear_verify(*opts);
  }
  std::cerr << usage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // tpm2-tss logs its own errors to stderr; atlsctl reports each failure once, with the decoded
  // response code. TSS2_LOG=all+ERROR (or finer) brings the library's lines back.
  setenv("TSS2_LOG", "all+NONE", 0);  // NOLINT(concurrency-mt-unsafe): no thread exists yet
  try {
    return dispatch(std::vector<std::string_view>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::cerr << "atlsctl: " << e.what() << "\n";
    return 1;
  }
}
