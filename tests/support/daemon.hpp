// The built atlsd, run as a child process with a config the test writes. Readiness comes from
// the daemon's own sd_notify("READY=1") on a NOTIFY_SOCKET the fixture owns, as under systemd.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/loopback.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"
#include <signal.h>

namespace atls::test {

class atlsd {
 public:
  // Writes the config to dir/<name>.yaml, starts atlsd and waits up to 20 s for READY=1. Throws
  // with the daemon's log when it exits or never gets ready.
  atlsd(const temp_dir& dir, std::string_view name, std::string_view config_yaml);
  ~atlsd();
  atlsd(const atlsd&) = delete;
  atlsd& operator=(const atlsd&) = delete;

  std::string log() const;
  // Polls the log until a whole line of it (written up to its newline) contains text. The log
  // is written in buffered chunks, so a line found before its end may still be growing.
  bool wait_for_log(std::string_view text,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // Sends sig (SIGHUP: reload) and returns at once.
  void signal(int sig) const;
  // Sends sig and waits for the exit code.
  std::optional<int> stop(int sig = SIGTERM,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20));
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  // The next sd_notify message, if one arrives in time.
  std::optional<std::string> next_notification(std::chrono::milliseconds timeout);

 private:
  std::filesystem::path log_;
  socket_fd notify_;
  std::optional<process> process_;
};

// The end of every fixture that runs atlsd: SIGTERM, a clean exit within 20 s (SIGKILL if not),
// and no sanitizer report in its log. Failures are test failures (CHECK), not exceptions.
void stop_and_check_clean_exit(process& daemon, const std::filesystem::path& log);

// The built atlsctl with args, to completion (30 s at most).
run_result atlsctl(std::vector<std::string> args);

// The PKI of tests/certs/README.md, generated fresh into dir/pki.
struct pki {
  std::filesystem::path dir;
  std::filesystem::path operator/(std::string_view name) const { return dir / name; }
};
pki make_pki(const temp_dir& dir);

}  // namespace atls::test
