// The verifier policy: which Parsec TPM evidence the local verifier trusts (attestation keys,
// reference PCR values) and which attestation results the relying party accepts. Loaded from
// YAML by `atlsctl evidence verify --policy FILE`; the same two maps will be embedded per
// listener. The file format is documented in config/README.md, "Verifier policy".
#pragma once

#include <filesystem>
#include <optional>
#include <string_view>
#include <vector>

#include "atls/config/config.hpp"
#include "atls/verify/appraisal_policy.hpp"
#include "atls/verify/local_verifier.hpp"

namespace atls::config {

struct verifier_policy {
  verify::local_verifier_options local;  // verifier.local
  verify::appraisal_policy accept;       // accept
};

struct verifier_policy_result {
  std::optional<verifier_policy> policy;  // set only when errors is empty
  std::vector<diagnostic> errors;
};

// Parses and validates a verifier policy file with the daemon config's rules: every problem is
// reported ("file:line:col: key: message"), unknown keys are errors, and nothing falls back to
// a default on a typo. Unlike the daemon config, it reads the files it names (trusted AKs' PEM
// files, or the CoMIDs of an endorsements directory), so a missing or unusable file is reported
// here, at its key.
[[nodiscard]] verifier_policy_result load_verifier_policy_file(const std::filesystem::path& path);

// The same over text already in memory; file_name is used in diagnostics, and relative paths
// are resolved against base_dir.
[[nodiscard]] verifier_policy_result load_verifier_policy_text(
    std::string_view yaml, std::string_view file_name, const std::filesystem::path& base_dir);

}  // namespace atls::config
