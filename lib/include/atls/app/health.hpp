// Readiness of what attested connections depend on: the TPM (when a listener keeps its key there
// or attests), every verifier a relying party calls, and every passport an attester presents.
// Each is probed in the background, so that /readyz answers from memory and a probe that hangs
// (a TPM that stopped answering) shows as a failure instead of a slow health check.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "atls/admin/admin_server.hpp"
#include "atls/attest/tpm.hpp"
#include "atls/proxy/server.hpp"

namespace atls::app {

// One line of /readyz: `name` such as "tpm swtpm:…", "verifier veraison http://…" or
// "passport api-in".
using readiness_check = admin::readiness_check;

struct health_options {
  std::chrono::milliseconds probe_every{std::chrono::seconds(5)};
  // A probe that has not completed after this long counts as failed (it may still complete,
  // and the next probe waits for it rather than piling up).
  std::chrono::milliseconds probe_timeout{std::chrono::seconds(3)};
};

class health_monitor {
 public:
  // Starts probing on `executor` at once: tpm (when not null) with one TPM2_GetRandom, each
  // distinct verifier of the listeners' relying parties with verifier::probe(), and each
  // passport by its state. Probing stops when the monitor is destroyed; a probe in flight then
  // completes into nothing.
  [[nodiscard]] static std::shared_ptr<health_monitor> start(
      const boost::asio::any_io_executor& executor, const std::shared_ptr<attest::tpm>& tpm,
      const std::vector<proxy::listener_options>& listeners, health_options options);

  ~health_monitor();
  health_monitor(const health_monitor&) = delete;
  health_monitor& operator=(const health_monitor&) = delete;
  health_monitor(health_monitor&&) = delete;
  health_monitor& operator=(health_monitor&&) = delete;

  // The latest outcome of each check, in a stable order. Before a check's first probe completes
  // it reports not ok ("not probed yet"). Safe from any thread.
  [[nodiscard]] std::vector<readiness_check> checks() const;

  class impl;

 private:
  explicit health_monitor(std::shared_ptr<impl> state);
  std::shared_ptr<impl> impl_;
};

}  // namespace atls::app
