// Socket activation (sd_listen_fds_with_names(3)): the listening sockets that systemd (or
// systemd-socket-activate) opened and passed, by the name the socket unit gives each one
// (FileDescriptorName=, by default the unit's name). A listener takes one with
// `listen: systemd:NAME`.
#pragma once

#include <map>
#include <string>

#include <boost/system/error_category.hpp>

#include "atls/common/result.hpp"

namespace atls::systemd {

enum class errc {
  listen_fds_unreadable = 1,  // LISTEN_FDS, LISTEN_PID or LISTEN_FDNAMES is malformed
  duplicate_socket_name,
  not_a_listening_stream_socket,
};

const boost::system::error_category& systemd_category() noexcept;

inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), systemd_category()};
}

// Name to file descriptor.
using activated_sockets = std::map<std::string, int>;

// Takes the sockets passed to this process and unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES,
// so that no child inherits them. Empty when nothing was passed (LISTEN_PID names another
// process, or is unset: the daemon was not socket-activated). Each socket must be a listening
// stream socket, and each name unique. Fails with:
// - errc::listen_fds_unreadable: the variables are malformed (detail: the system's reason);
// - errc::duplicate_socket_name: two sockets share a name, as all of a socket unit's sockets do
//   without FileDescriptorName= (detail: the name);
// - errc::not_a_listening_stream_socket: a datagram socket, a socket not listening, or not a
//   socket at all (detail: the name and the descriptor).
// The descriptors belong to the caller (they are close-on-exec); on failure they stay open. Call
// once, at start-up, before any thread is started: it edits the environment.
[[nodiscard]] detailed_result<activated_sockets> take_activated_sockets();

}  // namespace atls::systemd

template <>
struct boost::system::is_error_code_enum<atls::systemd::errc> : std::true_type {};
