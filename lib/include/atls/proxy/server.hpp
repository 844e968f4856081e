// The sidecar's data plane: listeners that accept connections and relay them to an upstream,
// terminating TLS (inbound) or originating it (outbound).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "atls/attest/tpm.hpp"
#include "atls/attested/audit.hpp"
#include "atls/attested/settings.hpp"
#include "atls/common/result.hpp"
#include "atls/net/endpoint.hpp"
#include "atls/net/event_loops.hpp"
#include "atls/tls/context.hpp"

namespace atls::proxy {

enum class mode {
  inbound,   // TLS from the network, plaintext to the local workload
  outbound,  // plaintext from the local workload, TLS to the network
};

// What an inbound listener sends its upstream before the first workload byte.
enum class proxy_protocol_version : std::uint8_t {
  none,
  // A PROXY protocol v2 header (proxy/proxy_protocol.hpp) with the client's address, its TLS and
  // what it proved by attestation, sent once the handshake and attestation have succeeded.
  v2,
};

struct timeouts {
  std::chrono::milliseconds connect{std::chrono::seconds(10)};
  std::chrono::milliseconds handshake{std::chrono::seconds(10)};
  std::chrono::milliseconds idle{std::chrono::minutes(5)};  // zero: no limit
};

struct listener_options {
  std::string name;
  proxy::mode mode = mode::inbound;
  net::endpoint_spec listen;
  net::endpoint_spec upstream;
  tls::context tls;  // a server context for inbound, a client context for outbound
  proxy::timeouts timeouts;
  // Beyond this many open connections, new ones wait in the kernel's accept backlog.
  std::size_t max_connections = 1024;
  std::size_t buffer_size = std::size_t{16} * 1024;  // per direction
  // Set: connections are attested as these settings say (the tls context must have been
  // prepared for the mode: attested::install_post_handshake). Unset: plain TLS.
  std::shared_ptr<const attested::settings> attestation;
  proxy_protocol_version proxy_protocol = proxy_protocol_version::none;  // inbound only
  // The form of the attestation audit lines (attested/audit.hpp), one per decision.
  attested::audit_format audit = attested::audit_format::text;
  // Set when this listener's handshakes use the TPM (its key is there, or it attests): while the
  // TPM is saturated(), new connections are refused at once with outcome `tpm_busy` instead of
  // queueing into a handshake timeout.
  std::shared_ptr<const attest::tpm> handshake_tpm;
  // Multiplexing (proxy/mux.hpp, PROTOCOL-NOTES.md "Multiplexing"). Outbound: every workload
  // connection becomes an HTTP/2 CONNECT stream on a tunnel to the upstream, one attested
  // connection per connection loop, set up on first use and closed after timeouts.idle without a
  // stream. Inbound: a client that negotiates ALPN "h2" is such a tunnel, and each of its streams
  // reaches the upstream as a connection of its own; other clients are served as usual. The TLS
  // context must offer (outbound) or accept (inbound) "h2".
  bool multiplex = false;
};

// What a reload did, by listener name.
struct reload_report {
  std::vector<std::string> added;    // bound and accepting
  std::vector<std::string> removed;  // no longer accepting; their connections drain
  std::vector<std::string> kept;     // same name and address: new settings for new connections
};

class server {
 public:
  // Listeners and bookkeeping run on strands of io, which may run on any number of threads;
  // each connection runs on one of the connection loops, which must outlive the server.
  server(boost::asio::io_context& io, net::event_loops& connection_loops);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  server(server&&) = delete;
  server& operator=(server&&) = delete;

  // Binds every listener, or none: on failure the ones already bound are closed again. The
  // detail names the listener and the address. Call before start(), from one thread.
  //
  // A TCP listener sets SO_REUSEPORT as well as SO_REUSEADDR, so that a new atlsd (same user)
  // can bind the port while this one drains. A unix listener first removes a stale socket file.
  // A `systemd:NAME` listener adopts the socket of that name from `activated` (name to
  // descriptor, as systemd/activation.hpp collects them) as it is, address and options included;
  // a name missing there fails with net::errc::systemd_socket_not_passed. The descriptors stay
  // the caller's: the listener adopts a duplicate (so a later bind may adopt the same socket
  // again), and drain closes only that. Sockets in `activated` that no listener names are
  // logged as a warning.
  [[nodiscard]] detailed_result<void> bind(std::vector<listener_options> listeners,
                                           const std::map<std::string, int>& activated = {});

  // Starts accepting on every bound listener.
  void start();

  // Reload: listeners are matched by name. One with the same name and address keeps its socket
  // and its open connections, which finish under the settings they started with; the connections
  // it accepts next get the new settings. A listener whose name is gone, or whose address
  // changed, stops accepting, and its connections may finish within `drain_timeout`, after
  // which they are aborted; the new one is bound in its place. Every new socket is bound before
  // anything changes, so a failure (the detail names the listener and address) leaves the
  // running listeners as they were. Call after start(); any executor.
  [[nodiscard]] boost::asio::awaitable<detailed_result<reload_report>> reconfigure(
      std::vector<listener_options> listeners, std::chrono::milliseconds drain_timeout);

  // Graceful stop: accepting ends at once; open connections may finish within `timeout`, after
  // which they are aborted. Completes when no connection is left. Any executor.
  boost::asio::awaitable<void> drain(std::chrono::milliseconds timeout);

  [[nodiscard]] std::size_t open_connections() const;

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace atls::proxy
