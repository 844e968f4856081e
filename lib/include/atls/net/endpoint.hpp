// Where to listen or connect: "host:port", "[v6]:port" or "unix:/absolute/path".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

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

using endpoint_spec = std::variant<tcp_endpoint, unix_endpoint>;

// Parses a spec. Port 0 is allowed (the kernel picks one) only when allow_port_zero is set.
// Fails with net::errc. Pure: no name resolution happens here.
[[nodiscard]] result<endpoint_spec> parse_endpoint(std::string_view text,
                                                   bool allow_port_zero = false);

// The canonical text form, which parse_endpoint() accepts again.
std::string to_string(const endpoint_spec& spec);

// True for unix sockets, 127.0.0.0/8, ::1 and "localhost": addresses that only this host reaches.
bool is_loopback(const endpoint_spec& spec);

// A socket address for logs: "1.2.3.4:5", "[::1]:5", "unix:/path" or "unix" for unnamed peers.
std::string to_string(const boost::asio::generic::stream_protocol::endpoint& endpoint);

}  // namespace atls::net

template <>
struct boost::system::is_error_code_enum<atls::net::errc> : std::true_type {};
