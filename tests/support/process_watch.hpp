// What a long-running test watches in a daemon from outside: its open file descriptors and
// resident memory (read from /proc, as an operator's monitoring would), and the lines of its log
// at warning level or above. Header-only: the soak and data-integrity tests share it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <sys/types.h>

namespace atls::test {

// One look at a process: open descriptors (entries of /proc/PID/fd) and VmRSS in KiB.
struct process_sample {
  std::size_t fds = 0;
  std::uint64_t rss_kib = 0;
};

// nullopt when the process is gone or /proc cannot be read (a process of another user).
inline std::optional<process_sample> sample_process(pid_t pid) {
  const std::filesystem::path proc = "/proc/" + std::to_string(pid);
  process_sample out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(proc / "fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    ++out.fds;
  }
  if (ec) {
    return std::nullopt;
  }
  std::ifstream status(proc / "status");
  std::string line;
  bool found = false;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) {
      std::istringstream(line.substr(6)) >> out.rss_kib;  // "VmRSS:   12345 kB"
      found = true;
      break;
    }
  }
  if (!found) {
    return std::nullopt;
  }
  return out;
}

// The lines of an atlsd log (pattern "%Y-%m-%dT%H:%M:%S.%e %l %v") whose level is warning,
// error or critical, except those containing one of `expected` (what the test provoked).
inline std::vector<std::string> problem_lines(std::string_view log,
                                              const std::vector<std::string>& expected = {}) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < log.size()) {
    auto end = log.find('\n', start);
    if (end == std::string_view::npos) {
      end = log.size();
    }
    const auto line = log.substr(start, end - start);
    start = end + 1;
    const auto level_at = line.find(' ');
    if (level_at == std::string_view::npos) {
      continue;
    }
    const auto level = line.substr(level_at + 1, line.find(' ', level_at + 1) - level_at - 1);
    if (level != "warning" && level != "error" && level != "critical") {
      continue;
    }
    bool provoked = false;
    for (const auto& text : expected) {
      provoked = provoked || line.find(text) != std::string_view::npos;
    }
    if (!provoked) {
      out.emplace_back(line);
    }
  }
  return out;
}

// How many lines of `log` contain `text`.
inline std::size_t count_lines_with(std::string_view log, std::string_view text) {
  std::size_t count = 0;
  std::size_t start = 0;
  while (start < log.size()) {
    auto end = log.find('\n', start);
    if (end == std::string_view::npos) {
      end = log.size();
    }
    if (log.substr(start, end - start).find(text) != std::string_view::npos) {
      ++count;
    }
    start = end + 1;
  }
  return count;
}

}  // namespace atls::test
