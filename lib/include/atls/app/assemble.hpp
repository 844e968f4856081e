// From a config file to ready-to-bind listeners: the step that atlsd start-up, `atlsd --check`
// and `atlsctl config check` share, so that a check passes exactly when start-up would.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "atls/attest/tpm.hpp"
#include "atls/config/config.hpp"
#include "atls/proxy/server.hpp"

namespace atls::app {

struct assembled {
  std::optional<config::daemon_config> config;     // set when the file parsed and validated
  std::vector<proxy::listener_options> listeners;  // complete only when errors is empty
  std::vector<config::diagnostic> errors;          // each points at the file, line and key
  std::shared_ptr<attest::tpm> tpm;  // opened when a listener's key is in the TPM; else null
};

// Loads and validates the config, then builds every listener's TLS context, which reads the
// certificate, key and CA files. Problems with those files are reported at the config key that
// names them. Verifier clients (Veraison) run their network I/O on io, which must run while the
// listeners serve; a check that never serves may pass an executor nobody runs.
[[nodiscard]] assembled assemble(const std::filesystem::path& config_file,
                                 const boost::asio::any_io_executor& io);

// For a reload: assemble() against the running daemon. The listeners' TPM keys come from
// `running_tpm` (a TPM allows one client at a time, and the running one has it). Settings that
// only a restart can change (threads, tpm, admin) are errors at their key when the file changes
// them, so that a reload never half-applies a file.
[[nodiscard]] assembled reassemble(const std::filesystem::path& config_file,
                                   const config::daemon_config& running,
                                   std::shared_ptr<attest::tpm> running_tpm,
                                   const boost::asio::any_io_executor& io);

// The same for a config already loaded. A listener whose key is tpm:tik loads the TIK from tpm,
// which is opened (from config.tpm) on first use when null.
[[nodiscard]] std::vector<config::diagnostic> build_listeners(
    const config::daemon_config& config, std::vector<proxy::listener_options>& out,
    std::shared_ptr<attest::tpm>& tpm, const boost::asio::any_io_executor& io);

}  // namespace atls::app
