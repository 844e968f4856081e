// A private swtpm (TPM 2.0 simulator) per test: fresh state in the test's directory, on free
// loopback ports, stopped at the end. Can be killed and restarted on the same state to test
// recovery.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace atls::test {

class swtpm {
 public:
  explicit swtpm(const temp_dir& dir);
  ~swtpm();
  swtpm(const swtpm&) = delete;
  swtpm& operator=(const swtpm&) = delete;

  // The tpm2-tss TCTI configuration string for this instance.
  std::string tcti() const;
  void kill();    // SIGKILL, as a crash would
  void start();   // on the same state and ports
  void freeze();  // SIGSTOP: a TPM that hangs; commands wait, none fails
  void thaw();    // SIGCONT

 private:
  void choose_ports();

  std::filesystem::path state_;
  std::uint16_t port_ = 0;
  std::optional<process> process_;
};

}  // namespace atls::test
