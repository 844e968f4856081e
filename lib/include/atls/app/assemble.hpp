// From a config file to ready-to-bind listeners: the step that atlsd start-up, `atlsd --check`
// and `atlsctl config check` share, so that a check passes exactly when start-up would.
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

#include "atls/config/config.hpp"
#include "atls/proxy/server.hpp"

namespace atls::app {

struct assembled {
  std::optional<config::daemon_config> config;     // set when the file parsed and validated
  std::vector<proxy::listener_options> listeners;  // complete only when errors is empty
  std::vector<config::diagnostic> errors;          // each points at the file, line and key
};

// Loads and validates the config, then builds every listener's TLS context, which reads the
// certificate, key and CA files. Problems with those files are reported at the config key that
// names them.
[[nodiscard]] assembled assemble(const std::filesystem::path& config_file);

// The same for a config already loaded.
[[nodiscard]] std::vector<config::diagnostic> build_listeners(
    const config::daemon_config& config, std::vector<proxy::listener_options>& out);

}  // namespace atls::app
