#include "support/process.hpp"

#include <stdexcept>
#include <thread>

#include "support/temp_dir.hpp"
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace atls::test {

namespace {

std::vector<std::string> merged_environment(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const auto name = entry.substr(0, entry.find('='));
    if (!extra.contains(name)) {
      out.push_back(entry);
    }
  }
  for (const auto& [name, value] : extra) {
    out.push_back(name + "=" + value);
  }
  return out;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) {
    out.push_back(s.data());
  }
  out.push_back(nullptr);
  return out;
}

void redirect(posix_spawn_file_actions_t& actions, int fd, const std::filesystem::path& file,
              int flags) {
  const std::string path = file.empty() ? "/dev/null" : file.string();
  posix_spawn_file_actions_addopen(&actions, fd, path.c_str(), flags, 0644);
}

int decode(int status) {
  if (WIFEXITED(status)) {
    return WEXITSTATUS(status);
  }
  return 128 + WTERMSIG(status);
}

}  // namespace

process::process(const process_options& options) {
  auto argv = options.argv;
  auto env = merged_environment(options.env);
  auto c_argv = c_strings(argv);
  auto c_env = c_strings(env);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  redirect(actions, STDIN_FILENO, options.stdin_file, O_RDONLY);
  redirect(actions, STDOUT_FILENO, options.stdout_file, O_WRONLY | O_CREAT | O_TRUNC);
  redirect(actions, STDERR_FILENO, options.stderr_file, O_WRONLY | O_CREAT | O_TRUNC);
  const int rc = posix_spawnp(&pid_, c_argv[0], &actions, nullptr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw std::runtime_error("cannot start " + options.argv.at(0));
  }
}

process::~process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    (void)wait_for(std::chrono::seconds(5));
  }
}

void process::signal(int sig) const {
  ::kill(pid_, sig);
}

bool process::running() {
  if (status_) {
    return false;
  }
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    status_ = decode(status);
    return false;
  }
  return true;
}

std::optional<int> process::wait_for(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

run_result run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
               const std::filesystem::path& stdin_file) {
  const temp_dir dir;
  process child({.argv = std::move(argv),
                 .stdout_file = dir / "out",
                 .stderr_file = dir / "err",
                 .stdin_file = stdin_file});
  run_result result;
  if (const auto code = child.wait_for(timeout)) {
    result.exit_code = *code;
  } else {
    child.signal(SIGKILL);
    (void)child.wait_for(std::chrono::seconds(5));
  }
  result.out = read_file(dir / "out");
  result.err = read_file(dir / "err");
  return result;
}

}  // namespace atls::test
