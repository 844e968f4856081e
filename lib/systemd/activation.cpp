#include "atls/systemd/activation.hpp"

#include <cstdlib>
#include <memory>
#include <span>

#include <sys/socket.h>
#include <systemd/sd-daemon.h>

namespace atls::systemd {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "atls.systemd"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::listen_fds_unreadable:
        return "cannot read the sockets systemd passed (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES)";
      case errc::duplicate_socket_name:
        return "systemd passed two sockets with the same name; give each socket unit's sockets a "
               "FileDescriptorName= of their own";
      case errc::not_a_listening_stream_socket:
        return "a socket systemd passed is not a listening stream socket (ListenStream=)";
    }
    return "unknown atls.systemd error";
  }
};

// The array of names from sd_listen_fds_with_names(): each name and the array are malloc'ed.
class fd_names {
 public:
  fd_names() = default;
  ~fd_names() {
    if (names_ == nullptr) {
      return;
    }
    for (char** n = names_; *n != nullptr; ++n) {
      std::free(*n);  // NOLINT(cppcoreguidelines-no-malloc): allocated by libsystemd
    }
    std::free(static_cast<void*>(names_));  // NOLINT(cppcoreguidelines-no-malloc)
  }
  fd_names(const fd_names&) = delete;
  fd_names& operator=(const fd_names&) = delete;
  fd_names(fd_names&&) = delete;
  fd_names& operator=(fd_names&&) = delete;

  char*** out() { return &names_; }
  // Null-terminated, with exactly as many names as descriptors (libsystemd fills in "unknown"
  // when LISTEN_FDNAMES is unset).
  [[nodiscard]] std::span<char*> first(int count) const {
    return {names_, names_ == nullptr ? 0 : static_cast<std::size_t>(count)};
  }

 private:
  char** names_ = nullptr;
};

}  // namespace

const boost::system::error_category& systemd_category() noexcept {
  static const category instance;
  return instance;
}

detailed_result<activated_sockets> take_activated_sockets() {
  fd_names names;
  // unset_environment = 1: a process we start must not take our sockets for its own.
  const int count = sd_listen_fds_with_names(1, names.out());
  if (count < 0) {
    return failure{errc::listen_fds_unreadable,
                   error_code(-count, boost::system::system_category()).message()};
  }
  activated_sockets out;
  int fd = SD_LISTEN_FDS_START;
  for (const char* name : names.first(count)) {
    const std::string where = "'" + std::string(name) + "' (fd " + std::to_string(fd) + ")";
    // Any family (inet, inet6, unix) as long as it is a listening stream socket: one that an
    // acceptor can adopt.
    if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
      return failure{errc::not_a_listening_stream_socket, where};
    }
    if (!out.emplace(name, fd).second) {
      return failure{errc::duplicate_socket_name, "'" + std::string(name) + "'"};
    }
    ++fd;
  }
  return out;
}

}  // namespace atls::systemd
