#include "atls/net/endpoint.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <sys/socket.h>
#include <sys/un.h>

namespace atls::net {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "atls.net"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::empty:
        return "address is empty";
      case errc::missing_port:
        return "address needs a port (host:port) or the unix: prefix";
      case errc::bad_port:
        return "port must be a number from 1 to 65535";
      case errc::bad_host:
        return "host is empty or malformed";
      case errc::unix_path_not_absolute:
        return "unix socket path must be absolute (unix:/path)";
      case errc::unix_path_too_long:
        return "unix socket path is longer than the kernel allows (107 bytes)";
      case errc::bad_systemd_name:
        return "systemd socket name must be 1 to 255 printable ASCII characters other than ':' "
               "(FileDescriptorName= of the socket unit)";
      case errc::systemd_socket_not_for_connecting:
        return "a systemd: socket is one that systemd passed to listen on; it cannot be connected "
               "to";
      case errc::systemd_socket_not_passed:
        return "systemd passed no socket of this name (LISTEN_FDNAMES; FileDescriptorName= of the "
               "socket unit)";
      case errc::systemd_socket_not_listening:
        return "the socket systemd passed under this name is not a listening stream socket";
    }
    return "unknown atls.net error";
  }
};

constexpr std::string_view unix_prefix = "unix:";
constexpr std::string_view systemd_prefix = "systemd:";
// FDNAME_MAX in systemd's fd-util.h.
constexpr std::size_t systemd_name_max = 255;

bool valid_hostname(std::string_view host) {
  if (host.empty() || host.size() > 253) {
    return false;
  }
  for (const char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_';
    if (!ok) {
      return false;
    }
  }
  return true;
}

}  // namespace

const boost::system::error_category& net_category() noexcept {
  static const category instance;
  return instance;
}

bool valid_systemd_socket_name(std::string_view name) {
  if (name.empty() || name.size() > systemd_name_max) {
    return false;
  }
  // systemd's fdname_is_valid(): no control characters, nothing beyond ASCII, and no ':', which
  // separates the names in LISTEN_FDNAMES.
  return std::ranges::all_of(name, [](char c) { return c >= ' ' && c < 0x7f && c != ':'; });
}

result<endpoint_spec> parse_listen_endpoint(std::string_view text, bool allow_port_zero) {
  if (!text.starts_with(systemd_prefix)) {
    return parse_endpoint(text, allow_port_zero);
  }
  std::string name(text.substr(systemd_prefix.size()));
  if (!valid_systemd_socket_name(name)) {
    return errc::bad_systemd_name;
  }
  return endpoint_spec{systemd_socket{std::move(name)}};
}

result<endpoint_spec> parse_endpoint(std::string_view text, bool allow_port_zero) {
  if (text.empty()) {
    return errc::empty;
  }
  if (text.starts_with(systemd_prefix)) {
    return errc::systemd_socket_not_for_connecting;
  }
  if (text.starts_with(unix_prefix)) {
    std::string path(text.substr(unix_prefix.size()));
    if (path.empty() || path.front() != '/') {
      return errc::unix_path_not_absolute;
    }
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      return errc::unix_path_too_long;
    }
    return endpoint_spec{unix_endpoint{std::move(path)}};
  }

  std::string_view host;
  std::string_view port_text;
  if (text.front() == '[') {
    // RFC 3986 form for IPv6 literals: [addr]:port
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      return errc::bad_host;
    }
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (rest.size() < 2 || rest.front() != ':') {
      return errc::missing_port;
    }
    port_text = rest.substr(1);
    boost::system::error_code ec;
    (void)boost::asio::ip::make_address_v6(std::string(host), ec);
    if (ec) {
      return errc::bad_host;
    }
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return errc::missing_port;
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (!valid_hostname(host)) {
      return errc::bad_host;
    }
  }

  unsigned port = 0;
  const auto* first = port_text.data();
  const auto* last = first + port_text.size();
  const auto [end, ec] = std::from_chars(first, last, port);
  if (port_text.empty() || ec != std::errc{} || end != last || port > 65535 ||
      (port == 0 && !allow_port_zero)) {
    return errc::bad_port;
  }
  return endpoint_spec{tcp_endpoint{std::string(host), static_cast<std::uint16_t>(port)}};
}

std::string to_string(const endpoint_spec& spec) {
  if (const auto* u = std::get_if<unix_endpoint>(&spec)) {
    return std::string(unix_prefix) + u->path;
  }
  if (const auto* s = std::get_if<systemd_socket>(&spec)) {
    return std::string(systemd_prefix) + s->name;
  }
  const auto& t = std::get<tcp_endpoint>(spec);
  if (t.host.find(':') != std::string::npos) {
    return "[" + t.host + "]:" + std::to_string(t.port);
  }
  return t.host + ":" + std::to_string(t.port);
}

bool is_loopback(const endpoint_spec& spec) {
  if (std::holds_alternative<unix_endpoint>(spec)) {
    return true;
  }
  if (std::holds_alternative<systemd_socket>(spec)) {
    return false;
  }
  const auto& host = std::get<tcp_endpoint>(spec).host;
  if (host == "localhost") {
    return true;
  }
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(host, ec);
  return !ec && address.is_loopback();
}

std::string to_string(const boost::asio::generic::stream_protocol::endpoint& endpoint) {
  const auto* addr = endpoint.data();
  switch (addr->sa_family) {
    case AF_INET: {
      boost::asio::ip::tcp::endpoint tcp;
      std::memcpy(tcp.data(), addr, sizeof(sockaddr_in));
      return tcp.address().to_string() + ":" + std::to_string(tcp.port());
    }
    case AF_INET6: {
      boost::asio::ip::tcp::endpoint tcp;
      std::memcpy(tcp.data(), addr, sizeof(sockaddr_in6));
      return "[" + tcp.address().to_string() + "]:" + std::to_string(tcp.port());
    }
    case AF_UNIX: {
      const auto* un = reinterpret_cast<const sockaddr_un*>(addr);
      const auto path_len = endpoint.size() > offsetof(sockaddr_un, sun_path)
                                ? endpoint.size() - offsetof(sockaddr_un, sun_path)
                                : 0;
      const std::string path(un->sun_path, strnlen(un->sun_path, path_len));
      return path.empty() ? "unix" : "unix:" + path;
    }
    default:
      return "family-" + std::to_string(addr->sa_family);
  }
}

result<boost::asio::generic::stream_protocol::endpoint> resolve_listen_address(
    const boost::asio::any_io_executor& executor, const endpoint_spec& spec) {
  using generic = boost::asio::generic::stream_protocol::endpoint;
  if (const auto* u = std::get_if<unix_endpoint>(&spec)) {
    return generic{boost::asio::local::stream_protocol::endpoint(u->path)};
  }
  const auto* tcp = std::get_if<tcp_endpoint>(&spec);
  if (tcp == nullptr) {
    return {boost::system::in_place_error,
            make_error_code(errc::systemd_socket_not_for_connecting)};
  }
  boost::asio::ip::tcp::resolver resolver(executor);
  error_code ec;
  const auto results = resolver.resolve(tcp->host, std::to_string(tcp->port),
                                        boost::asio::ip::tcp::resolver::passive, ec);
  // The generic endpoint converts from anything, so the error must be placed explicitly.
  if (ec) {
    return {boost::system::in_place_error, ec};
  }
  if (results.empty()) {
    return {boost::system::in_place_error, boost::asio::error::host_not_found};
  }
  return generic{results.begin()->endpoint()};
}

void remove_stale_socket(const endpoint_spec& spec) {
  if (const auto* u = std::get_if<unix_endpoint>(&spec)) {
    std::error_code ec;
    if (std::filesystem::is_socket(u->path, ec)) {
      std::filesystem::remove(u->path, ec);
    }
  }
}

bool is_inet(const boost::asio::generic::stream_protocol::endpoint& endpoint) {
  const auto family = endpoint.data()->sa_family;
  return family == AF_INET || family == AF_INET6;
}

}  // namespace atls::net
