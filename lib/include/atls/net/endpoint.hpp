// Where to listen or connect: "host:port", "[v6]:port" or "unix:/absolute/path"; where to listen
// also "systemd:NAME", a socket the service manager passed (socket activation).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/system/error_category.hpp>

#include "atls/common/result.hpp"

namespace atls::net {

enum class errc {
  empty = 1,
  missing_port,
  bad_port,
  bad_host,
  unix_path_not_absolute,
  unix_path_too_long,
  bad_systemd_name,
  systemd_socket_not_for_connecting,
  systemd_socket_not_passed,
  systemd_socket_not_listening,
};

const boost::system::error_category& net_category() noexcept;

inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), net_category()};
}

struct tcp_endpoint {
  std::string host;  // a name, an IPv4 literal, or an IPv6 literal without brackets
  std::uint16_t port = 0;
  friend bool operator==(const tcp_endpoint&, const tcp_endpoint&) = default;
};

struct unix_endpoint {
  std::string path;
  friend bool operator==(const unix_endpoint&, const unix_endpoint&) = default;
};

// A listening socket that systemd passed (sd_listen_fds_with_names(3)), by the name the socket
// unit gives it: FileDescriptorName=, which defaults to the unit's name ("atlsd.socket"). Only
// the name is known before bind; the address is whatever the socket unit bound.
struct systemd_socket {
  std::string name;  // 1 to 255 printable ASCII characters other than ':' (systemd.socket(5))
  friend bool operator==(const systemd_socket&, const systemd_socket&) = default;
};

using endpoint_spec = std::variant<tcp_endpoint, unix_endpoint, systemd_socket>;

// Parses a spec to connect to. Port 0 is allowed (the kernel picks one) only when
// allow_port_zero is set. "systemd:NAME" fails with errc::systemd_socket_not_for_connecting: a
// passed socket can only be listened on. Fails with net::errc. Pure: no name resolution happens
// here.
[[nodiscard]] result<endpoint_spec> parse_endpoint(std::string_view text,
                                                   bool allow_port_zero = false);

// Parses a spec to listen on: parse_endpoint()'s forms and "systemd:NAME" (errc::bad_systemd_name
// when NAME breaks systemd's rules). The "systemd:" prefix always means a passed socket, as
// "unix:" always means a path, so a host named "systemd" needs its IP address instead.
[[nodiscard]] result<endpoint_spec> parse_listen_endpoint(std::string_view text,
                                                          bool allow_port_zero = false);

// True for a name that systemd accepts in FileDescriptorName= and LISTEN_FDNAMES, with the empty
// name excluded: 1 to 255 characters from 0x20 to 0x7e, none of them ':' (the separator of
// LISTEN_FDNAMES).
bool valid_systemd_socket_name(std::string_view name);

// The canonical text form, which parse_endpoint() accepts again.
std::string to_string(const endpoint_spec& spec);

// True for unix sockets, 127.0.0.0/8, ::1 and "localhost": addresses that only this host reaches.
// False for a systemd socket: its address is not known before bind, so it is not known to stay
// on this host (the config's loopback rule for outbound listeners then asks for
// allow_non_loopback: true, the operator's word for what the socket unit binds).
bool is_loopback(const endpoint_spec& spec);

// The socket address to bind for a tcp or unix spec; a systemd socket has none of its own (it
// is adopted) and fails with errc::systemd_socket_not_for_connecting. A host name is resolved
// once, passively, blocking. Fails with the resolver's error, or host_not_found.
[[nodiscard]] result<boost::asio::generic::stream_protocol::endpoint> resolve_listen_address(
    const boost::asio::any_io_executor& executor, const endpoint_spec& spec);

// A unix socket file left by a previous run makes bind() fail with EADDRINUSE: removes it. Only
// a socket is ever removed, never a regular file that happens to have the name.
void remove_stale_socket(const endpoint_spec& spec);

// True for IPv4 and IPv6 addresses.
[[nodiscard]] bool is_inet(const boost::asio::generic::stream_protocol::endpoint& endpoint);

// A socket address for logs: "1.2.3.4:5", "[::1]:5", "unix:/path" or "unix" for unnamed peers.
std::string to_string(const boost::asio::generic::stream_protocol::endpoint& endpoint);

}  // namespace atls::net

template <>
struct boost::system::is_error_code_enum<atls::net::errc> : std::true_type {};
