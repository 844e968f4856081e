// The running daemon between READY=1 and its exit: reloads (SIGHUP, or a changed file under
// watch_config), the drain (SIGTERM, SIGINT), and what /readyz reports. The composition root
// (daemon/atlsd.cpp) builds and binds everything, then hands it to a supervisor.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "atls/admin/admin_server.hpp"
#include "atls/attest/tpm.hpp"
#include "atls/config/config.hpp"
#include "atls/proxy/server.hpp"
#include "atls/systemd/watchdog.hpp"

namespace atls::app {

// Sets the level of spdlog's default logger to the config's.
void apply_log_level(config::log_level level);

struct supervised {
  std::filesystem::path config_file;
  config::daemon_config running;          // as loaded; a reload replaces it
  std::shared_ptr<attest::tpm> tpm;       // null when no listener uses one
  proxy::server& server;                  // bound and started
  systemd::watchdog* watchdog = nullptr;  // when systemd asked for one; cancelled at the end
};

class supervisor {
 public:
  // Everything runs on `io`, the daemon's main loop, which must outlive the supervisor, as must
  // the server and the watchdog.
  supervisor(boost::asio::io_context& io, supervised what);
  ~supervisor();
  supervisor(const supervisor&) = delete;
  supervisor& operator=(const supervisor&) = delete;
  supervisor(supervisor&&) = delete;
  supervisor& operator=(supervisor&&) = delete;

  // With an admin listener in the config: starts the readiness probes for `listeners` (those
  // just bound). Call before start().
  void watch_health(const std::vector<proxy::listener_options>& listeners);
  // The admin listener, bound; stopped at the end of the drain. Its readiness handler should
  // call readiness().
  void adopt_admin(std::unique_ptr<admin::admin_server> admin);

  // Installs the signal handling and, with watch_config, the file watch. Call before READY=1,
  // so that a SIGTERM right after it drains instead of meeting the default action. io.run()
  // returns once a drain is over.
  void start();

  // /readyz: "listeners" (not draining) and every probe's latest outcome; sets atlsd_ready.
  // On io's thread.
  [[nodiscard]] std::vector<admin::readiness_check> readiness() const;

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace atls::app
