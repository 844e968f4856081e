// Child processes for tests: the daemon under test, curl, openssl. Output goes to files so that
// a failing test can show it, and the destructor kills whatever is still running.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace atls::test {

struct process_options {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // added to (or replacing in) the parent's environment
  std::filesystem::path stdout_file;       // empty: /dev/null
  std::filesystem::path stderr_file;       // empty: /dev/null
  std::filesystem::path stdin_file;        // empty: /dev/null
};

class process {
 public:
  explicit process(const process_options& options);
  ~process();
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) const;

  // The exit code (128 + signal number when killed by a signal), or nothing on timeout.
  std::optional<int> wait_for(std::chrono::milliseconds timeout);
  bool running();

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

struct run_result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a command to completion (killed after timeout, exit_code -1) and collects its output.
run_result run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
               const std::filesystem::path& stdin_file = {});

}  // namespace atls::test
