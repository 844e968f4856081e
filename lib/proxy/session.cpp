// One connection from accept to close: TLS handshake, upstream connect, relay, log line.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include "atls/attest/tpm.hpp"
#include "atls/attested/appraisal.hpp"
#include "atls/attested/audit.hpp"
#include "atls/attested/early_attestation.hpp"
#include "atls/attested/post_handshake.hpp"
#include "atls/attested/reason.hpp"
#include "atls/common/log_quote.hpp"
#include "atls/metrics/atlsd_metrics.hpp"
#include "atls/net/alongside.hpp"
#include "atls/proxy/mux.hpp"
#include "atls/proxy/proxy_protocol.hpp"
#include "atls/tls/error.hpp"
#include "atls/tls/stream.hpp"
#include "atls/verify/error.hpp"

#include "detail/listener_state.hpp"
#include "detail/plain_stream.hpp"
#include "detail/relay_buffer.hpp"

namespace atls::proxy::detail {

namespace asio = boost::asio;
// Found by ordinary lookup only, which clang-tidy 14 does not count as a use.
using asio::experimental::awaitable_operators::operator||;  // NOLINT(misc-unused-using-decls)
using socket_type = asio::generic::stream_protocol::socket;
using clock = std::chrono::steady_clock;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

std::string describe(const error_code& ec, const std::string& detail) {
  return detail.empty() ? ec.message() : ec.message() + ": " + detail;
}

std::string peer_of(const socket_type& socket) {
  error_code ec;
  const auto endpoint = socket.remote_endpoint(ec);
  return ec ? "unknown" : net::to_string(endpoint);
}

std::optional<asio::ip::tcp::endpoint> ip_endpoint(
    const asio::generic::stream_protocol::endpoint& endpoint) {
  const auto* addr = endpoint.data();
  asio::ip::tcp::endpoint out;
  if (addr->sa_family == AF_INET && endpoint.size() >= sizeof(sockaddr_in)) {
    std::memcpy(out.data(), addr, sizeof(sockaddr_in));
    return out;
  }
  if (addr->sa_family == AF_INET6 && endpoint.size() >= sizeof(sockaddr_in6)) {
    std::memcpy(out.data(), addr, sizeof(sockaddr_in6));
    return out;
  }
  return std::nullopt;
}

// The client and the address it reached, for the PROXY header. Nothing for a unix socket: its
// clients are unnamed, so the header says AF_UNSPEC.
std::optional<pp2::addresses> addresses_of(const socket_type& socket) {
  error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  if (ec) {
    return std::nullopt;
  }
  const auto local = socket.local_endpoint(ec);
  if (ec) {
    return std::nullopt;
  }
  auto source = ip_endpoint(remote);
  auto destination = ip_endpoint(local);
  if (!source || !destination) {
    return std::nullopt;
  }
  // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; workloads match and log a.b.c.d.
  const auto s = source->address();
  const auto d = destination->address();
  if (s.is_v6() && d.is_v6() && s.to_v6().is_v4_mapped() && d.to_v6().is_v4_mapped()) {
    source->address(asio::ip::make_address_v4(asio::ip::v4_mapped, s.to_v6()));
    destination->address(asio::ip::make_address_v4(asio::ip::v4_mapped, d.to_v6()));
  }
  return pp2::addresses{.source = *source, .destination = *destination};
}

pp2::sha256_digest sha256_of(const void* data, std::size_t size) {
  pp2::sha256_digest out{};
  SHA256(static_cast<const unsigned char*>(data), size, out.data());
  return out;
}

// What the peer proved, for the PROXY header: its accepted result, or null when it did not
// attest.
pp2::attestation_info proof_of(const verify::attestation_result* peer) {
  pp2::attestation_info out;
  if (peer == nullptr) {
    return out;
  }
  switch (peer->status) {
    case verify::ear_status::none:
      out.status = pp2::attestation_status::none;
      break;
    case verify::ear_status::affirming:
      out.status = pp2::attestation_status::affirming;
      break;
    case verify::ear_status::warning:
      out.status = pp2::attestation_status::warning;
      break;
    case verify::ear_status::contraindicated:
      out.status = pp2::attestation_status::contraindicated;
      break;
  }
  if (peer->attested_key) {
    out.key_sha256 = sha256_of(peer->attested_key->data(), peer->attested_key->size());
  }
  if (!peer->raw_ear.empty()) {
    out.ear_sha256 = sha256_of(peer->raw_ear.data(), peer->raw_ear.size());
  }
  return out;
}

// The TLS facts of the PROXY header, from a completed server handshake.
void describe_tls(SSL* ssl, pp2::header& out) {
  if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) {
    out.authority = sni;
  }
  const unsigned char* alpn = nullptr;
  unsigned int alpn_size = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_size);
  if (alpn != nullptr) {
    out.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_size);
  }
  const bool has_cert = SSL_get0_peer_certificate(ssl) != nullptr;
  const bool resumed = SSL_session_reused(ssl) == 1;
  pp2::tls_info tls;
  tls.client = pp2::client_ssl;
  if (has_cert) {
    // A resumed session's certificate was presented on an earlier connection (section 2.2.6).
    tls.client = static_cast<std::uint8_t>(tls.client | pp2::client_cert_sess |
                                           (resumed ? 0 : pp2::client_cert_conn));
  }
  // A handshake that got this far accepted the client's certificate (fail closed), but it was
  // verified only if the listener checks a chain (client_auth). An RA-only listener takes a
  // certificate that attestation vouches for, and the intra-handshake engine then reports
  // X509_V_OK without any chain: only 0xE0 may claim something for that client.
  const bool checks_chain = SSL_CTX_get_verify_mode(SSL_get_SSL_CTX(ssl)) != SSL_VERIFY_NONE;
  tls.verify = has_cert && checks_chain && SSL_get_verify_result(ssl) == X509_V_OK ? 0U : 1U;
  tls.version = SSL_get_version(ssl);
  if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl)) {
    tls.cipher = SSL_CIPHER_get_name(cipher);
  }
  out.tls = std::move(tls);
}

std::string format_duration(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) {
    return std::to_string(d.count() / 1000) + "s";
  }
  return std::to_string(d.count()) + "ms";
}

// Whether the handshake agreed on ALPN "h2": for a multiplexing listener, a tunnel.
bool negotiated_tunnel(SSL* ssl) {
  const unsigned char* alpn = nullptr;
  unsigned int alpn_size = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_size);
  return alpn != nullptr &&
         std::string_view(reinterpret_cast<const char*>(alpn), alpn_size) == "h2";
}

// Completes only when the awaiting coroutine is cancelled: a branch of `||` that must not end it.
// Shaped as a loop on a plain flag: with GCC 12, destroying the finished frame of the
// `for (;;) { if (!co_await ...) co_return; }` form hit an illegal instruction.
asio::awaitable<void> until_cancelled(net::async_event& event) {
  bool waiting = true;
  while (waiting) {
    waiting = co_await event.wait();
  }
}

// What a pump of a plain leg reads into while it waits (see session::read_burst): enough for a
// typical request or response, held for the connection's life. Other legs need none.
constexpr std::size_t first_read_size = 512;
template <class From>
using first_read_space = std::conditional_t<std::is_same_v<From, plain_stream>,
                                            std::array<char, first_read_size>, std::array<char, 0>>;

// A fatal internal_error alert as a plaintext TLS record (RFC 8446 §5.1, §6.2): what a client
// that sent its ClientHello is told when it is refused before the handshake starts.
constexpr std::array<std::uint8_t, 7> internal_error_alert{0x15, 0x03, 0x03, 0x00,
                                                           0x02, 0x02, 0x50};

}  // namespace

// What every connection an inbound tunnel carries shares with it: the tunnel's TLS, its peer's
// attestation, and the facts of its PROXY header.
struct tunnel_facts {
  std::uint64_t connection = 0;  // the tunnel's id
  std::string peer;
  std::string tls_summary;
  std::string attestation_summary;
  pp2::header header;  // endpoints, TLS and the peer's proof as the tunnel last knew them
  // The listener had max_connections sessions open when the stream arrived: it is refused.
  bool over_capacity = false;
};

asio::awaitable<void> run_stream_session(std::shared_ptr<listener_state> listener,
                                         std::shared_ptr<const listener_options> options,
                                         std::shared_ptr<session_control> control,
                                         tunnel_facts facts, std::unique_ptr<mux::stream> stream);

namespace {

// One connection from accept to close, in one of three roles: a connection of its own; the
// attested connection of an outbound tunnel (multiplexing), which its own session sets up and
// carries while workload connections ride on it as streams; or one stream of an inbound tunnel,
// relayed to the upstream as a connection.
class session {
 public:
  session(std::shared_ptr<listener_state> listener, std::shared_ptr<const listener_options> options,
          std::shared_ptr<session_control> control, socket_type client)
      : listener_(std::move(listener)),
        settings_(std::move(options)),
        options_(*settings_),
        control_(std::move(control)),
        client_(std::move(client)),
        peer_(peer_of(client_)),
        endpoints_(options_.proxy_protocol == proxy_protocol_version::none ? std::nullopt
                                                                           : addresses_of(client_)),
        timer_(client_.get_executor()) {}

  // An outbound tunnel's session: its peer is the upstream.
  session(std::shared_ptr<listener_state> listener, std::shared_ptr<session_control> control,
          std::shared_ptr<tunnel_handle> handle)
      : listener_(std::move(listener)),
        settings_(handle->options),
        options_(*settings_),
        control_(std::move(control)),
        client_(control_->executor),
        peer_(net::to_string(options_.upstream)),
        timer_(control_->executor),
        tunnel_(std::move(handle)) {}

  // One stream of an inbound tunnel.
  session(std::shared_ptr<listener_state> listener, std::shared_ptr<const listener_options> options,
          std::shared_ptr<session_control> control, tunnel_facts facts,
          std::unique_ptr<mux::stream> stream)
      : listener_(std::move(listener)),
        settings_(std::move(options)),
        options_(*settings_),
        control_(std::move(control)),
        client_(control_->executor),
        peer_(facts.peer),
        timer_(control_->executor),
        tls_summary_(facts.tls_summary + " tunnel=" + std::to_string(facts.connection)),
        attestation_summary_(facts.attestation_summary),
        stream_(std::move(stream)),
        via_(std::make_unique<const tunnel_facts>(std::move(facts))) {}

  ~session() { control_->policy_changed = nullptr; }
  session(const session&) = delete;
  session& operator=(const session&) = delete;
  session(session&&) = delete;
  session& operator=(session&&) = delete;

  asio::awaitable<void> run() {
    // Called on this strand by a reload: wakes follow_reloads, or the watchdog, which follows
    // reloads for a relay without a coroutine of its own for them (relay_bounded).
    control_->policy_changed = [this] {
      policy_changed_.notify_all();
      timer_.cancel();
    };
    // The watchdog runs in this coroutine, the connection beside it (see net::alongside).
    auto watched =
        net::alongside(control_->executor, watch(), serve(), net::ends::with_first, [this] {
          served_ = true;
          timer_.cancel();
        });
    co_await std::move(watched);
    if (outcome_.empty()) {
      record("aborted", control_->aborting ? "drain timeout" : "cancelled");
    }
    end_tunnel();
    log_close();
  }

 private:
  // Not a coroutine itself: a frame of its own would be held for the connection's life.
  asio::awaitable<void> serve() {
    if (tunnel_) {
      return serve_outbound_tunnel();
    }
    if (stream_) {
      return serve_tunnel_stream();
    }
    return options_.mode == mode::inbound ? serve_inbound() : serve_outbound();
  }

  // TLS from the network is authenticated before the workload sees a single byte.
  asio::awaitable<void> serve_inbound() {
    if (tpm_saturated()) {
      co_await refuse_with_alert();
      co_return;
    }
    set_deadline(options_.timeouts.handshake, "handshake");
    tls::stream client(std::move(client_), options_.tls);
    std::unique_ptr<attested::attested_stream> attested;
    if (!co_await secure(client, /*is_server=*/true, attested)) {
      co_return;
    }
    if (options_.multiplex && negotiated_tunnel(client.native_handle())) {
      co_await serve_inbound_tunnel(client, attested);
      co_return;
    }
    auto upstream = co_await reach_upstream();
    if (!upstream) {
      co_return;
    }
    plain_stream workload(std::move(*upstream));
    if (!co_await describe_to_workload(workload, client)) {
      co_return;
    }
    if (attested) {
      co_await relay_attested(*attested, workload, /*network_first=*/true);
    } else {
      co_await relay_bounded(client, workload);
    }
  }

  // The PROXY header of a connection of its own. Apart from serve_inbound so that the header
  // is not held in its frame for the life of the relay.
  asio::awaitable<bool> describe_to_workload(plain_stream& workload, tls::stream& client) {
    pp2::header header{.endpoints = endpoints_, .attestation = peer_proof_};
    describe_tls(client.native_handle(), header);
    const bool sent = co_await send_proxy_header(workload, header);
    co_return sent;
  }

  asio::awaitable<void> serve_outbound() {
    if (options_.multiplex) {
      co_await serve_outbound_stream();
      co_return;
    }
    // Without a TPM slot, the workload's connection closes before any byte.
    plain_stream workload(std::move(client_));
    std::optional<tls::stream> remote;
    std::unique_ptr<attested::attested_stream> attested;
    if (!co_await secure_upstream(remote, attested)) {
      co_return;
    }
    if (attested) {
      co_await relay_attested(*attested, workload, /*network_first=*/false);
    } else {
      co_await relay_bounded(workload, *remote);
    }
  }

  // Outbound, for a connection or a tunnel: the upstream connected, its TLS handshake and the
  // attestation the settings ask for. False when the connection must end (the outcome is
  // recorded). `attested` borrows `remote`.
  asio::awaitable<bool> secure_upstream(std::optional<tls::stream>& remote,
                                        std::unique_ptr<attested::attested_stream>& attested) {
    if (tpm_saturated()) {
      co_return false;
    }
    auto upstream = co_await reach_upstream();
    if (!upstream) {
      co_return false;
    }
    set_deadline(options_.timeouts.handshake, "handshake");
    remote.emplace(std::move(*upstream), options_.tls);
    const bool secured = co_await secure(*remote, /*is_server=*/false, attested);
    co_return secured;
  }

  // The client learns of a refusal before the handshake from a TLS alert rather than a bare
  // close. Its ClientHello is read and dropped after the alert, briefly: closing with unread
  // input would reset the connection, and the reset could overtake the alert.
  asio::awaitable<void> refuse_with_alert() {
    set_deadline(std::chrono::seconds(1), "refusal");
    auto [ec, n] =
        co_await asio::async_write(client_, asio::buffer(internal_error_alert), use_tuple);
    (void)n;
    error_code ignored;
    client_.shutdown(socket_type::shutdown_send, ignored);
    std::array<char, 512> discard{};
    while (!ec) {
      std::tie(ec, n) = co_await client_.async_read_some(asio::buffer(discard), use_tuple);
    }
  }

  // A handshake that needs the TPM would wait behind a full queue and most likely time out:
  // refuse it now, so that the client can retry elsewhere and the TPM catches up.
  bool tpm_saturated() {
    const auto& tpm = options_.handshake_tpm;
    if (!tpm || !tpm->saturated()) {
      return false;
    }
    record("tpm_busy", "the TPM's queue is full (" + std::to_string(tpm->queued()) +
                           " commands; tpm.queue_limit " +
                           std::to_string(tpm->options().queue_limit) + ")");
    return true;
  }

  // The TLS handshake and the attestation the settings ask for, either mode, either side: false
  // when the connection must end (the outcome is recorded). `attested` is set when the stream is
  // framed (post-handshake attestation); it borrows `tls`.
  asio::awaitable<bool> secure(tls::stream& tls, bool is_server,
                               std::unique_ptr<attested::attested_stream>& attested) {
    std::optional<attested::post_handshake_negotiation> negotiation;
    std::optional<attested::early_attestation> early;
    if (is_post_handshake()) {
      negotiation.emplace(tls, *options_.attestation, is_server);
    } else if (options_.attestation) {
      early.emplace(tls, *options_.attestation);
    }
    const auto handshake_started = clock::now();
    auto handshake_ec = co_await tls.handshake();
    observe_handshake(clock::now() - handshake_started);
    if (early) {
      refused_result_ = &early->refused_result();
      const bool passed = early_outcome(*early, handshake_ec);
      refused_result_ = nullptr;  // `early` ends with this call
      if (!passed) {
        co_return false;
      }
    }
    if (handshake_ec) {
      record_handshake_failure(handshake_ec, tls.error_detail(), negotiation);
      co_return false;
    }
    tls_summary_ = tls.session_summary();
    const bool attested_ok = co_await attest(tls, negotiation, attested);
    co_return attested_ok;
  }

  // Intra-handshake attestation: false when the engine refused (the outcome is recorded).
  bool early_outcome(const attested::early_attestation& early, const error_code& handshake) {
    auto outcome = early.outcome(handshake);
    if (!outcome) {
      record_attestation_failure(outcome.error(), early.detail());
      return false;
    }
    if (handshake) {
      return true;
    }
    const auto* peer = early.peer_result() ? &*early.peer_result() : nullptr;
    peer_proof_ = proof_of(peer);
    if (peer != nullptr) {
      audit(attested::attester_side::peer, attested::reason::accepted, {}, peer);
      result_deadline_ = deadline_of(*peer);
    }
    if (early.attested()) {
      // The handshake completed, so the relying party accepted what we sent.
      audit(attested::attester_side::self, attested::reason::accepted, {}, nullptr);
    }
    const auto summary = summarize(peer, early.attested() ? "sent" : nullptr);
    attestation_summary_ = summary.empty() ? "none" : summary;
    return true;
  }

  // When a result accepted inside the handshake stops being acceptable: at accept.max_age past
  // its iat, or at its own exp if that comes first. Unset when the policy sets neither.
  [[nodiscard]] std::optional<std::chrono::steady_clock::time_point> deadline_of(
      const verify::attestation_result& result) const {
    const auto& peer = options_.attestation->peer;
    std::optional<verify::clock::time_point> end = result.expires_at;
    if (peer && peer->accept.max_age) {
      const auto aged = result.issued_at + *peer->accept.max_age;
      end = end ? std::min(*end, aged) : aged;
    }
    if (!end) {
      return std::nullopt;
    }
    return std::chrono::steady_clock::now() +
           std::chrono::duration_cast<std::chrono::steady_clock::duration>(*end -
                                                                           verify::clock::now());
  }

  // Intra-handshake attestation happens once per connection, so the result's age bounds the
  // connection's life: past it, the peer would be trusted on stale evidence. The watchdog ends
  // the connection then (watch()).
  void record_result_expired() {
    record_attestation_failure(
        make_error_code(verify::verify_errc::result_too_old),
        "the connection outlived the peer's attestation result (accept.max_age or the "
        "result's exp); the peer must connect again to attest again");
  }

  // The relay of a connection attested inside the handshake, or not attested at all. Nothing
  // here can attest again, so what follow_reloads would do is a check the watchdog makes when
  // a reload wakes it, and the result's expiry is one of its deadlines: an idle connection
  // holds the relay's coroutines and nothing else.
  template <class Client, class Upstream>
  asio::awaitable<void> relay_bounded(Client& client, Upstream& upstream) {
    watchdog_keeps_trust_ = true;  // relay() wakes the watchdog
    return relay(client, upstream);
  }

  [[nodiscard]] bool is_post_handshake() const {
    return options_.attestation && options_.attestation->mode == attested::mode::post_handshake;
  }

  // Post-handshake attestation, before any workload byte: false when the connection must end
  // (the outcome is recorded). `out` is set when the stream is framed.
  asio::awaitable<bool> attest(tls::stream& tls,
                               std::optional<attested::post_handshake_negotiation>& negotiation,
                               std::unique_ptr<attested::attested_stream>& out) {
    if (!negotiation) {
      co_return true;
    }
    auto roles = negotiation->roles();
    if (!roles) {
      record_attestation_failure(roles.error(), "the peer did not offer attestation");
      co_return false;
    }
    if (!roles->framed) {
      attestation_summary_ = "none";
      co_return true;
    }
    set_deadline(options_.timeouts.handshake, "attestation");
    out = std::make_unique<attested::attested_stream>(tls, *options_.attestation, *roles);
    refused_result_ = &out->refused_result();
    const auto started = clock::now();
    auto establishing = out->establish();
    const auto established = co_await std::move(establishing);
    metrics::process().attestation_duration.with({options_.name}).observe(clock::now() - started);
    if (established) {
      record_attestation_failure(established, out->error_detail());
      co_return false;
    }
    const auto* peer = roles->peer_attests && out->peer_result() ? &*out->peer_result() : nullptr;
    peer_proof_ = proof_of(peer);
    if (peer != nullptr) {
      audit(attested::attester_side::peer, attested::reason::accepted, {}, peer);
    }
    if (roles->we_attest) {
      audit(attested::attester_side::self, attested::reason::accepted, {}, nullptr);
    }
    const auto summary = summarize(peer, roles->we_attest ? "accepted" : nullptr);
    attestation_summary_ = summary.empty() ? "framed" : summary;
    co_return true;
  }

  // Inbound with proxy_protocol: the PROXY v2 header, the first bytes the workload receives. The
  // upstream is connected only once the client is authenticated and attested, so the header
  // states facts, never claims still to be checked. False when the connection must end (the
  // outcome is recorded). Re-attestation sends no second header: the header describes the
  // connection as it was set up.
  asio::awaitable<bool> send_proxy_header(plain_stream& workload, const pp2::header& header) {
    if (options_.proxy_protocol == proxy_protocol_version::none) {
      co_return true;
    }
    const auto encoded = pp2::encode(header);
    if (!encoded) {
      record("error", "proxy protocol header: " + encoded.error().message());
      co_return false;
    }
    const auto bytes = asio::buffer(*encoded);
    if (auto ec = co_await workload.write(bytes)) {
      record("error", "upstream " + net::to_string(options_.upstream) +
                          ": proxy protocol header: " + ec.message());
      co_return false;
    }
    co_return true;
  }

  // The log line's attestation field, either mode: what the peer proved, and what became of
  // our own attestation (`self`: null when we did not attest).
  static std::string summarize(const verify::attestation_result* peer, const char* self) {
    std::string out;
    if (peer != nullptr) {
      out += "peer=" + std::string(verify::to_string(peer->status));
      if (peer->attested_key) {
        out += " key=sha256:" + attested::key_fingerprint(*peer->attested_key);
      }
    }
    if (self != nullptr) {
      out += std::string(out.empty() ? "" : " ") + "self=" + self;
    }
    return out;
  }

  // One audit line per attestation decision (attested/audit.hpp): accepted or refused, by us
  // (the peer attested) or by the peer (we attested).
  void audit(attested::attester_side side, attested::reason outcome, std::string detail,
             const verify::attestation_result* result) const {
    if (!options_.attestation) {
      return;
    }
    const auto& settings = *options_.attestation;
    const bool peer_side = side == attested::attester_side::peer;
    const auto model = peer_side && settings.peer    ? settings.peer->model
                       : !peer_side && settings.self ? settings.self->model
                                                     : attested::model::background_check;
    // Who appraised: our verifier, or for a passport the verifier that signed it. Our own
    // attestation was appraised by the peer's, which we do not know.
    std::string verifier;
    if (peer_side && settings.peer && settings.peer->verifier) {
      verifier = settings.peer->verifier->name();
    } else if (peer_side && result != nullptr && !result->verifier.developer.empty()) {
      verifier = "passport from " + result->verifier.developer;
    }
    metrics::process()
        .attestation_outcomes
        .with({options_.name, outcome == attested::reason::accepted ? std::string_view("ok")
                                                                    : attested::to_string(outcome)})
        .inc();
    const attested::audit_record record{
        .listener = options_.name,
        .connection = control_->id,
        .peer = peer_,
        .mode = settings.mode,
        .model = model,
        .attester = side,
        .verifier = std::move(verifier),
        .round = audit_round_,
        .outcome = outcome,
        .detail = std::move(detail),
        .result = result,
    };
    spdlog::log(outcome == attested::reason::accepted ? spdlog::level::info : spdlog::level::warn,
                "{}", attested::format(record, options_.audit));
  }

  // Whose attestation a failure is about: ours when the peer refused it or we had nothing to
  // send (no passport, the TPM failed us), the peer's otherwise.
  static attested::attester_side side_of_failure(const error_code& ec) {
    const bool ours = ec == attested::errc::refused_by_peer || ec == attested::errc::no_passport ||
                      ec.category() == attest::tpm_category();
    return ours ? attested::attester_side::self : attested::attester_side::peer;
  }

  void record_attestation_failure(const error_code& ec, const std::string& detail) {
    const auto why = attested::reason_of(ec);
    if (outcome_.empty()) {  // the first failure decides; what follows is its consequence
      const auto side = side_of_failure(ec);
      // What the verifier said, when our policy is what refused it.
      const auto* refused = side == attested::attester_side::peer && refused_result_ != nullptr &&
                                    refused_result_->has_value()
                                ? &**refused_result_
                                : nullptr;
      audit(side, why, describe(ec, detail), refused);
      if (relaying_) {  // a live connection that attestation now closes
        metrics::process()
            .reattestation_closes.with({options_.name, attested::to_string(why)})
            .inc();
      }
    }
    record(why == attested::reason::internal ? "error" : "rejected",
           "attestation " + std::string(attested::to_string(why)) + ": " + describe(ec, detail));
  }

  // One audit line per re-attestation round that does not close the connection.
  void audit_reattestations(attested::attested_stream& network) {
    network.on_reattestation(
        [this, &network](const error_code& deferred, const std::string& detail) {
          if (deferred) {
            audit(attested::attester_side::peer, attested::reason_of(deferred), detail, nullptr);
            return;
          }
          audit(attested::attester_side::peer, attested::reason::accepted, {},
                network.peer_result() ? &*network.peer_result() : nullptr);
        });
  }

  // The relay on a framed stream. As the relying party, it asks the peer again on its period and
  // when a reload asks for it; a refused answer fails the reader, which ends the relay.
  template <class Workload>
  asio::awaitable<void> relay_attested(attested::attested_stream& network, Workload& workload,
                                       bool network_first) {
    audit_reattestations(network);
    auto relaying = network_first ? relay(network, workload) : relay(workload, network);
    const auto period = options_.attestation->reattest_every;
    if (network.peer_attestations() == 0 || period.count() == 0) {
      co_await (std::move(relaying) || follow_reloads(network));
      co_return;
    }
    co_await (std::move(relaying) || reattest_periodically(network, period) ||
              follow_reloads(network));
  }

  // Completes only when a request cannot be sent (the outcome is recorded). `period` > 0.
  asio::awaitable<void> reattest_periodically(attested::attested_stream& network,
                                              std::chrono::milliseconds period) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (;;) {
      timer.expires_after(period);
      auto [ec] = co_await timer.async_wait(use_tuple);
      if (ec) {
        co_return;  // the relay ended
      }
      if (!network.can_reattest()) {
        // One direction has ended (a close_notify went one way), so no round can complete: the
        // rest of the stream runs under the last accepted round (PROTOCOL-NOTES.md, post-handshake
        // exchange, "half-closed connection"). Wait for the relay to end without asking again.
        spdlog::debug("listener={} id={} half-closed: no further re-attestation rounds",
                      options_.name, control_->id);
        timer.expires_at(asio::steady_timer::time_point::max());
        auto [ended] = co_await timer.async_wait(use_tuple);
        (void)ended;
        co_return;
      }
      if (network.awaiting_answer()) {
        // The attester is still at the last request (a quote from a busy or hardware TPM can
        // take a while): it has the handshake timeout, or one period if that is longer.
        const auto allowed = std::max(period, options_.timeouts.handshake);
        if (clock::now() - requested_at_ < allowed) {
          continue;
        }
        record_attestation_failure(make_error_code(tls::errc::no_evidence),
                                   "the peer did not answer round " + std::to_string(audit_round_) +
                                       " within " + format_duration(allowed));
        co_return;
      }
      ++audit_round_;
      requested_at_ = clock::now();
      if (auto failed = co_await network.reattest()) {
        record_attestation_failure(failed, network.error_detail());
        co_return;
      }
    }
  }

  // A reload with reattest_on_reload hands the session its new settings (session_control). A
  // peer that attested after the handshake is asked again, and its answer judged by the new
  // rules on this connection's binder; a connection that cannot attest again in place (set up
  // without the peer attesting) closes if the new rules require it to. Completes only when the
  // connection must close (the outcome is recorded), or when the relay ends.
  asio::awaitable<void> follow_reloads(attested::attested_stream& network) {
    for (;;) {
      while (!policy_to_check()) {
        if (!co_await policy_changed_.wait()) {
          co_return;  // the relay ended
        }
      }
      const auto* rules = take_reloaded_rules();
      if (rules == nullptr || !rules->peer) {
        continue;
      }
      if (network.peer_attestations() == 0) {
        if (closes_without_attestation(*rules)) {
          co_return;
        }
        continue;
      }
      // The channel's own parameters (mode, binder, code points, our side) stay as negotiated.
      auto merged = std::make_shared<attested::settings>(*options_.attestation);
      merged->peer = rules->peer;
      judged_by_.push_back(merged);  // an answer being judged may still use the previous ones
      network.judge_by(*merged);
      spdlog::debug("listener={} id={} re-checking the peer under the reloaded policy",
                    options_.name, control_->id);
      if (network.awaiting_answer()) {
        continue;  // the answer on its way is judged by the new rules
      }
      if (!network.can_reattest()) {
        continue;  // half-closed: see reattest_periodically
      }
      ++audit_round_;
      requested_at_ = clock::now();
      if (auto failed = co_await network.reattest()) {
        record_attestation_failure(failed, network.error_detail());
        co_return;
      }
    }
  }

  // A reload has set a policy this connection has not been checked under.
  [[nodiscard]] bool policy_to_check() const {
    return control_->policy != nullptr && control_->policy != checked_policy_;
  }

  // Marks the reloaded policy as checked, and returns its attestation rules (none: null).
  const attested::settings* take_reloaded_rules() {
    checked_policy_ = control_->policy;
    return checked_policy_->attestation.get();
  }

  // For a connection whose peer has not attested: true, with the outcome recorded, when the
  // reloaded `rules` require the peer to.
  bool closes_without_attestation(const attested::settings& rules) {
    if (!rules.peer || !rules.peer->required) {
      return false;
    }
    record_attestation_failure(
        make_error_code(tls::errc::attestation_required),
        "the reloaded policy requires the peer to attest, and this connection was set up "
        "without its attestation; the peer must connect again");
    return true;
  }

  // A reload, checked by the watchdog where it keeps trust (watchdog_keeps_trust_): true when the
  // connection must close (the outcome is recorded).
  bool reload_closes_connection() {
    if (!watchdog_keeps_trust_ || !policy_to_check()) {
      return false;
    }
    const auto* rules = take_reloaded_rules();
    return rules != nullptr && closes_without_attestation(*rules);
  }

  // ----- Multiplexing (listener_options::multiplex; PROTOCOL-NOTES.md "Multiplexing") -----

  // Outbound: the workload's connection as a stream on this loop's tunnel to the upstream. The
  // first connection waits while the tunnel is set up and attested; later ones pay for nothing
  // but the stream.
  asio::awaitable<void> serve_outbound_stream() {
    plain_stream workload(std::move(client_));
    // The tunnel's own connect, handshake and attestation have their own deadlines; a connection
    // waits for them at most as long.
    set_deadline(options_.timeouts.connect + 2 * options_.timeouts.handshake, "tunnel");
    auto stream = co_await open_stream();
    if (!stream) {
      co_return;  // recorded
    }
    co_await relay(workload, *stream);
  }

  // A stream on a tunnel of this loop that takes one, set up first if there is none. Null when
  // none could be had (the outcome is recorded).
  asio::awaitable<std::unique_ptr<mux::stream>> open_stream() {
    const auto authority = net::to_string(options_.upstream);
    for (int attempt = 0;; ++attempt) {
      auto handle = find_tunnel();
      while (handle->state == tunnel_handle::phase::connecting) {
        if (!co_await handle->changed.wait()) {
          co_return nullptr;
        }
      }
      if (handle->state != tunnel_handle::phase::ready) {
        record(handle->failure_outcome.empty() ? "error" : handle->failure_outcome,
               "tunnel " + std::to_string(handle->connection) + " to " + authority + ": " +
                   handle->failure);
        co_return nullptr;
      }
      std::string detail;
      auto tunnel = handle->tunnel;  // the stream keeps it; the handle may drop it
      auto opened = co_await tunnel->open(authority, detail);
      if (opened) {
        tls_summary_ = handle->tls_summary + " tunnel=" + std::to_string(handle->connection);
        attestation_summary_ = handle->attestation_summary;
        co_return std::move(*opened);
      }
      const auto& ec = opened.error();
      // Full, or ended while this connection waited: once more, on another tunnel.
      if (attempt == 0 && (ec == mux::errc::no_more_streams || ec == mux::errc::tunnel_closed)) {
        continue;
      }
      record("error", "tunnel " + std::to_string(handle->connection) + " to " + authority + ": " +
                          describe(ec, detail));
      co_return nullptr;
    }
  }

  // This loop's tunnel that can take a stream, or the one being set up; a new one otherwise.
  std::shared_ptr<tunnel_handle> find_tunnel() {
    std::shared_ptr<tunnel_handle> connecting;
    for (auto& handle : listener_->tunnels_on(control_->executor)) {
      if (handle->state == tunnel_handle::phase::closed || handle->retiring) {
        continue;
      }
      if (handle->options != settings_) {
        // Set up under settings a reload has since replaced: it carries no new connection.
        handle->retiring = true;
        handle->changed.notify_all();
        continue;
      }
      if (handle->state == tunnel_handle::phase::connecting) {
        connecting = handle;
      } else if (handle->tunnel->can_open()) {
        return handle;
      }
    }
    if (connecting) {
      return connecting;
    }
    auto handle = std::make_shared<tunnel_handle>(settings_, control_->executor);
    listener_->add_tunnel(handle);
    listener_->start_tunnel(handle);
    return handle;
  }

  // The session of an outbound tunnel: the connection, its handshake and attestation as for any
  // outbound connection, then HTTP/2 over it until it closes.
  asio::awaitable<void> serve_outbound_tunnel() {
    auto& handle = *tunnel_;
    handle.connection = control_->id;
    spdlog::debug("listener={} id={} opening a tunnel to {}", options_.name, control_->id, peer_);
    std::optional<tls::stream> remote;
    std::unique_ptr<attested::attested_stream> attested;
    if (!co_await secure_upstream(remote, attested)) {
      co_return;
    }
    if (!negotiated_tunnel(remote->native_handle())) {
      record("error",
             "the peer does not take tunnels (no ALPN h2): set multiplex: true on its listener");
      co_return;
    }
    handle.tunnel = mux::tunnel::make(control_->executor, mux::tunnel::role::client);
    handle.tls_summary = tls_summary_;
    handle.attestation_summary = attestation_summary_;
    handle.state = tunnel_handle::phase::ready;
    handle.changed.notify_all();
    if (attested) {
      co_await carry(*handle.tunnel, *attested, handle);
    } else {
      co_await carry(*handle.tunnel, *remote, handle);
    }
  }

  // Inbound: a client that negotiated a tunnel. Each CONNECT becomes a session of its own (see
  // serve_tunnel_stream) on this loop.
  asio::awaitable<void> serve_inbound_tunnel(tls::stream& client,
                                             std::unique_ptr<attested::attested_stream>& attested) {
    auto handle = std::make_shared<tunnel_handle>(settings_, control_->executor);
    handle->connection = control_->id;
    handle->state = tunnel_handle::phase::ready;
    handle->tunnel = mux::tunnel::make(control_->executor, mux::tunnel::role::server);
    listener_->add_tunnel(handle);  // so that drain and reload can retire it
    tunnel_ = handle;
    carried_ = std::make_unique<tunnel_facts>();
    auto& carried = *carried_;
    carried.connection = control_->id;
    carried.peer = peer_;
    carried.tls_summary = tls_summary_;
    carried.attestation_summary = attestation_summary_;
    carried.header.endpoints = endpoints_;
    describe_tls(client.native_handle(), carried.header);
    // h2 is the tunnel's protocol, not the workload's: a PROXY header must not claim it.
    carried.header.alpn.clear();
    if (attested) {
      co_await carry(*handle->tunnel, *attested, *handle);
    } else {
      co_await carry(*handle->tunnel, client, *handle);
    }
  }

  // HTTP/2 over the tunnel's connection, while its attestation stays acceptable (re-attestation,
  // reloads, the result's age, as for a connection of its own). When attestation fails, every
  // stream on the tunnel fails with it.
  template <class Network>
  asio::awaitable<void> carry(mux::tunnel& tunnel, Network& network, tunnel_handle& handle) {
    relaying_ = true;
    carrying_ = true;  // the tunnel's own idle rule applies (close_when_idle)
    phase_ = "tunnel";
    timer_.cancel();
    if constexpr (std::is_same_v<Network, attested::attested_stream>) {
      attested_network_ = &network;
      audit_reattestations(network);
    }
    mux::transport_over<Network> transport(network);
    if (tunnel.role_is_server()) {
      co_await (run_tunnel(tunnel, transport, network) || accept_streams(tunnel) ||
                close_when_idle(tunnel, handle) || keep_trusted(tunnel, network));
    } else {
      co_await (run_tunnel(tunnel, transport, network) || close_when_idle(tunnel, handle) ||
                keep_trusted(tunnel, network));
    }
    attested_network_ = nullptr;
  }

  template <class Network>
  asio::awaitable<void> run_tunnel(mux::tunnel& tunnel, mux::transport& transport,
                                   Network& network) {
    const auto ec = co_await tunnel.run(transport);
    if (!ec) {
      auto shut = co_await network.shutdown_send();
      (void)shut;  // the peer has said GOAWAY too: it may be gone already
      record("ok", "closed");
      co_return;
    }
    if (attestation_failure(ec)) {
      record_attestation_failure(ec, network.error_detail());
      co_return;
    }
    record(ec == tls::errc::truncated ? "truncated" : "error",
           "tunnel: " + describe(ec, tunnel.error_detail()));
  }

  // Completes only when the tunnel must close for its attestation (the outcome is recorded),
  // after failing every stream on it with the reason.
  template <class Network>
  asio::awaitable<void> keep_trusted(mux::tunnel& tunnel, Network& network) {
    if constexpr (std::is_same_v<Network, attested::attested_stream>) {
      const auto period = options_.attestation->reattest_every;
      if (network.peer_attestations() == 0 || period.count() == 0) {
        co_await follow_reloads(network);
      } else {
        co_await (reattest_periodically(network, period) || follow_reloads(network));
      }
    } else {
      // As for relay_bounded: the watchdog checks reloads and the result's expiry, and ends the
      // tunnel when they require it (end_for_trust).
      watchdog_keeps_trust_ = true;
      timer_.cancel();
      co_await until_cancelled(policy_changed_);
    }
    if (!outcome_.empty()) {
      tunnel.abort(outcome_ + ": " + reason_);
    }
  }

  // Inbound: every CONNECT the peer sends, as a session of its own on this loop. Never completes
  // by itself: after GOAWAY the tunnel still carries the streams it has.
  asio::awaitable<void> accept_streams(mux::tunnel& tunnel) {
    for (;;) {
      auto next = co_await tunnel.accept();
      if (!next) {
        co_await until_cancelled(tunnel.streams_changed());
        co_return;
      }
      auto facts = *carried_;
      if (attested_network_ != nullptr && attested_network_->peer_result()) {
        // The proof as of this stream: a re-attestation since the tunnel opened updated it.
        facts.header.attestation = proof_of(&*attested_network_->peer_result());
      } else {
        facts.header.attestation = peer_proof_;
      }
      auto control = std::make_shared<session_control>(next_connection_id(), control_->executor);
      stream_controls_.push_back(control);
      std::erase_if(stream_controls_, [](const auto& c) { return c.expired(); });
      // A stream is a connection to the upstream like any other, so it counts against
      // max_connections: otherwise one peer's tunnels could open max_streams upstream
      // connections each, past the limit the operator set.
      const bool admitted = listener_->admit_session(control, settings_->max_connections);
      facts.over_capacity = !admitted;
      asio::co_spawn(
          control_->executor,
          run_stream_session(listener_, settings_, control, std::move(facts), std::move(*next)),
          asio::bind_cancellation_slot(
              control->cancel.slot(), [listener = listener_, name = options_.name, id = control->id,
                                       admitted](const std::exception_ptr& e) {
                if (e) {
                  spdlog::error("listener={} id={} session failed: {}", name, id,
                                describe_escaped(e));
                }
                if (admitted) {
                  listener->finish_session(id);
                }
              }));
    }
  }

  // GOAWAY once the tunnel has carried no stream for timeouts.idle, or at once when it has none
  // and is retiring (drain, removal, a reload); the tunnel then closes by itself. Never completes
  // by itself.
  asio::awaitable<void> close_when_idle(mux::tunnel& tunnel, tunnel_handle& handle) {
    asio::steady_timer idle(co_await asio::this_coro::executor);
    bool idle_expired = false;
    for (;;) {
      const bool empty = tunnel.open_streams() == 0;
      if (empty && (handle.retiring || idle_expired || tunnel.peer_going_away())) {
        handle.retiring = true;
        tunnel.go_away();
        co_await until_cancelled(tunnel.streams_changed());
        co_return;
      }
      if (empty && options_.timeouts.idle.count() > 0) {
        idle.expires_after(options_.timeouts.idle);
        auto woke = co_await (idle.async_wait(use_tuple) || tunnel.streams_changed().wait() ||
                              handle.changed.wait());
        idle_expired =
            woke.index() == 0 && !std::get<0>(std::get<0>(woke)) && tunnel.open_streams() == 0;
      } else {
        auto woke = co_await (tunnel.streams_changed().wait() || handle.changed.wait());
        (void)woke;
      }
      const auto state = co_await asio::this_coro::cancellation_state;
      if (state.cancelled() != asio::cancellation_type::none) {
        co_return;
      }
    }
  }

  // Inbound: one stream of a tunnel, relayed to the upstream like a connection of its own. The
  // peer learns from the CONNECT's answer whether the upstream could be reached.
  asio::awaitable<void> serve_tunnel_stream() {
    if (via_->over_capacity) {
      // 503: the peer's workload connection closes at once instead of waiting on a stream
      // nobody serves.
      record("at_capacity", "max_connections (" + std::to_string(options_.max_connections) +
                                ") reached: the stream was refused");
      stream_->refuse(503);
      co_return;
    }
    auto upstream = co_await reach_upstream();
    if (!upstream) {
      stream_->refuse(502);
      co_return;
    }
    stream_->accept();
    plain_stream workload(std::move(*upstream));
    if (!co_await send_proxy_header(workload, via_->header)) {
      co_return;
    }
    co_await relay(*stream_, workload);
  }

  // At the end of a session that carried a tunnel: no connection may wait for it any more, and
  // the inbound connections it carried end with it (as aborted, when drain aborted it).
  void end_tunnel() {
    if (!tunnel_) {
      return;
    }
    tunnel_->state = tunnel_handle::phase::closed;
    tunnel_->failure = reason_;
    tunnel_->failure_outcome = outcome_ == "ok" ? "error" : outcome_;
    if (tunnel_->tunnel) {
      tunnel_->tunnel->abort(outcome_ + ": " + reason_);
    }
    tunnel_->changed.notify_all();
    for (const auto& weak : stream_controls_) {
      if (auto control = weak.lock(); control && control_->aborting) {
        control->aborting = true;
        control->cancel.emit(asio::cancellation_type::terminal);
      }
    }
  }

  // The upstream, connected under the connect deadline; nothing when it cannot be reached (the
  // outcome is recorded).
  asio::awaitable<std::optional<socket_type>> reach_upstream() {
    set_deadline(options_.timeouts.connect, "connect");
    auto upstream = co_await connect_upstream();
    std::optional<socket_type> out;
    if (upstream) {
      out.emplace(std::move(*upstream));
    } else {
      record("error",
             "upstream " + net::to_string(options_.upstream) + ": " + upstream.error().message());
    }
    co_return out;
  }

  asio::awaitable<result<socket_type>> connect_upstream() {
    auto executor = co_await asio::this_coro::executor;
    if (const auto* path = std::get_if<net::unix_endpoint>(&options_.upstream)) {
      const asio::generic::stream_protocol::endpoint endpoint{
          asio::local::stream_protocol::endpoint(path->path)};
      socket_type socket(executor, endpoint.protocol());
      auto [ec] = co_await socket.async_connect(endpoint, use_tuple);
      if (ec) {
        co_return ec;
      }
      co_return socket;
    }
    const auto& tcp = std::get<net::tcp_endpoint>(options_.upstream);
    asio::ip::tcp::resolver resolver(executor);
    // Named, not a temporary in the co_await expression: see the GCC 12 note in server.cpp.
    const auto port = std::to_string(tcp.port);
    auto [resolve_ec, results] = co_await resolver.async_resolve(tcp.host, port, use_tuple);
    if (resolve_ec) {
      co_return resolve_ec;
    }
    error_code last = asio::error::host_not_found;
    for (const auto& entry : results) {
      const asio::generic::stream_protocol::endpoint endpoint{entry.endpoint()};
      socket_type socket(executor);
      socket.open(endpoint.protocol(), last);
      if (last) {
        continue;
      }
      auto [ec] = co_await socket.async_connect(endpoint, use_tuple);
      if (!ec) {
        error_code ignored;
        socket.set_option(asio::ip::tcp::no_delay(true), ignored);
        co_return socket;
      }
      last = ec;
    }
    co_return last;
  }

  // Both directions at once. Each ends on its own at EOF (passing the half-close on); an error in
  // either closes both legs, so that the other direction ends too.
  template <class Client, class Upstream>
  asio::awaitable<void> relay(Client& client, Upstream& upstream) {
    relaying_ = true;
    last_activity_ = clock::now();
    phase_ = "idle";
    timer_.cancel();  // the watchdog switches to the idle rule
    abort_legs_ = [&client, &upstream] {
      abort_leg(client);
      abort_leg(upstream);
    };
    auto& relayed = metrics::process().relayed_bytes;
    auto& to_upstream = relayed.with({options_.name, "client_to_upstream"});
    auto& to_client = relayed.with({options_.name, "upstream_to_client"});
    auto both = net::alongside(
        control_->executor,
        pump(client, upstream, bytes_from_client_, to_upstream, "client", "upstream"),
        pump(upstream, client, bytes_to_client_, to_client, "upstream", "client"),
        net::ends::with_both);
    co_await std::move(both);
    abort_legs_ = nullptr;
    record("ok", "closed");
  }

  template <class From, class To>
  asio::awaitable<void> pump(From& from, To& to, std::uint64_t& counter, metrics::counter& relayed,
                             std::string_view from_name, std::string_view to_name) {
    detail::relay_buffer buffer(options_.buffer_size);
    first_read_space<From> first{};
    bool drained = false;
    for (;;) {
      auto [ec, data] = read_now(from, buffer, drained);
      if (nothing_yet(ec)) {
        if constexpr (std::is_same_v<From, detail::plain_stream>) {
          buffer.release();
          auto [read_ec, n] = co_await from.read_some(asio::buffer(first));
          std::tie(ec, data) = after_first_read(from, buffer, first, read_ec, n, drained);
        } else if constexpr (waits_without_buffer<From>) {
          buffer.release();
          auto [wait] = co_await from.wait_readable();
          if (!wait) {
            continue;
          }
          ec = wait;
          data = asio::const_buffer();
        } else {
          auto [read_ec, n] = co_await from.read_some(buffer.get());
          ec = read_ec;
          data = asio::const_buffer(buffer.data(), n);
        }
      }
      if (ec == asio::error::eof) {
        buffer.release();
        (from_name == "client" ? client_ended_ : upstream_ended_) = true;
        if (auto shut = co_await to.shutdown_send()) {
          // A side that ended its own sending and has since gone away entirely (closed, reset)
          // finished the exchange: its half-close has nobody left to reach.
          const bool to_ended = to_name == "client" ? client_ended_ : upstream_ended_;
          if (to_ended && gone(shut)) {
            spdlog::debug("listener={} id={} {} already gone at half-close: {}", options_.name,
                          control_->id, to_name, shut.message());
            co_return;
          }
          fail_relay(std::string(to_name) + " half-close", shut, to.error_detail());
        }
        co_return;
      }
      if (ec) {
        fail_relay(std::string(from_name) + " read", ec, from.error_detail());
        co_return;
      }
      last_activity_ = clock::now();
      if (auto wec = co_await to.write(data)) {
        fail_relay(std::string(to_name) + " write", wec, to.error_detail());
        co_return;
      }
      counter += data.size();
      relayed.inc(static_cast<double>(data.size()));
      last_activity_ = clock::now();
    }
  }

  // A relay that fails mid-stream must not look finished to either end: a plaintext leg is
  // reset (a FIN would pass a truncated stream off as complete), a TLS leg closes without
  // close_notify, which its peer reads as truncation.
  template <class Leg>
  static void abort_leg(Leg& leg) {
    if constexpr (requires { leg.reset(); }) {
      leg.reset();
    } else {
      leg.close();
    }
  }

  // How a pump reads (see pump()). A leg that can say it has nothing to read gives the lent
  // buffer back while it waits, so an idle connection holds none; the attested stream and a
  // tunnel's stream, whose reads can carry more than the workload's bytes, keep it.
  //
  // A plain leg waits by reading into `first` rather than with a readiness wait: Asio re-arms
  // epoll (an epoll_ctl) for every readiness wait, but not for a read, and once a read found
  // the socket drained it goes straight to epoll for the next one. A small message then costs
  // one recv and never touches the lent buffer; a larger burst continues in it. `drained` says
  // that the last read left nothing behind, so that the next one starts by waiting.
  //
  // These are plain functions and the waits are the pump's own co_awaits: a coroutine of their
  // own would hold a frame for as long as the connection is idle.
  template <class From>
  static constexpr bool waits_without_buffer = std::is_same_v<From, detail::plain_stream> ||
                                               requires(From& from, detail::relay_buffer& buffer) {
    from.try_read_some(buffer.get());
  };

  // EAGAIN from a non-blocking read: nothing to read yet (Linux's try_again is the same value).
  static bool nothing_yet(const error_code& ec) { return ec == asio::error::would_block; }

  // What `from` has without waiting; nothing_yet() when the pump must wait.
  template <class From>
  static std::tuple<error_code, asio::const_buffer> read_now(From& from,
                                                             detail::relay_buffer& buffer,
                                                             bool& drained) {
    if constexpr (!waits_without_buffer<From>) {
      return {asio::error::would_block, asio::const_buffer()};
    } else {
      if (drained) {
        return {asio::error::would_block, asio::const_buffer()};
      }
      auto [ec, n] = from.try_read_some(buffer.get());
      if constexpr (std::is_same_v<From, detail::plain_stream>) {
        drained = !nothing_yet(ec) && n < buffer.get().size();
      }
      return {ec, asio::const_buffer(buffer.data(), n)};
    }
  }

  // After a plain leg's wait read `n` bytes into `first`: they alone, or, when they filled it,
  // they and what else has arrived, in the lent buffer.
  template <class First>
  static std::tuple<error_code, asio::const_buffer> after_first_read(detail::plain_stream& from,
                                                                     detail::relay_buffer& buffer,
                                                                     First& first, error_code ec,
                                                                     std::size_t n, bool& drained) {
    if (ec || n < first.size()) {
      drained = true;
      return {ec, asio::const_buffer(first.data(), n)};
    }
    auto space = buffer.get();
    std::memcpy(space.data(), first.data(), n);
    auto [more_ec, more] = from.try_read_some(space + n);
    // An error here (EOF included) comes back from the next read, after these bytes.
    const std::size_t total = n + (more_ec ? 0 : more);
    drained = nothing_yet(more_ec) || total < space.size();
    return {error_code{}, asio::const_buffer(buffer.data(), total)};
  }

  void fail_relay(const std::string& what, const error_code& ec, const std::string& detail) {
    // A TLS peer that drops TCP without close_notify may have had its stream cut by an attacker:
    // never pass that on as a clean half-close.
    // A fatal alert before the peer sent any data is its verdict on our handshake (TLS 1.3
    // clients learn of a refused certificate only here).
    if (attestation_failure(ec)) {
      record_attestation_failure(ec, detail);
      if (abort_legs_) {
        abort_legs_();
      }
      return;
    }
    const bool refused =
        ec == tls::errc::peer_alert && bytes_to_client_ == 0 && options_.mode == mode::outbound;
    const auto* outcome = ec == tls::errc::truncated ? "truncated" : refused ? "rejected" : "error";
    record(outcome, what + ": " + describe(ec, detail));
    if (abort_legs_) {
      abort_legs_();
    }
  }

  void record_handshake_failure(
      const error_code& ec, const std::string& detail,
      const std::optional<attested::post_handshake_negotiation>& negotiation) {
    if (negotiation && negotiation->refusal()) {
      record_attestation_failure(negotiation->refusal(), "refused in the handshake");
      return;
    }
    record(ec == tls::errc::peer_rejected ? "rejected" : "error",
           "tls handshake: " + describe(ec, detail));
  }

  static bool gone(const error_code& ec) {
    return ec == asio::error::not_connected || ec == asio::error::broken_pipe ||
           ec == asio::error::connection_reset;
  }

  // An error from a re-attestation on a live connection, rather than from the transport.
  static bool attestation_failure(const error_code& ec) {
    return attested::reason_of(ec) != attested::reason::internal;
  }

  // Phases before relaying have a fixed deadline; the watchdog enforces it.
  void set_deadline(std::chrono::milliseconds timeout, const char* phase) {
    phase_ = phase;
    phase_timeout_ = timeout;
    deadline_ = clock::now() + timeout;
    timer_.cancel();
  }

  [[nodiscard]] clock::time_point current_deadline() const {
    if (!relaying_) {
      return deadline_;
    }
    auto deadline = clock::time_point::max();
    if (options_.timeouts.idle.count() != 0 && !carrying_) {
      deadline = last_activity_ + options_.timeouts.idle;
    }
    if (watchdog_keeps_trust_ && result_deadline_) {
      deadline = std::min(deadline, *result_deadline_);
    }
    return deadline;
  }

  [[nodiscard]] bool result_expired() const {
    return watchdog_keeps_trust_ && result_deadline_ && clock::now() >= *result_deadline_;
  }

  // The connection's trust ended (the outcome is recorded): a tunnel fails its streams with the
  // reason, as keep_trusted does; the watchdog's return then ends the relay.
  void end_for_trust() {
    if (tunnel_ && tunnel_->tunnel) {
      tunnel_->tunnel->abort(outcome_ + ": " + reason_);
    }
  }

  asio::awaitable<void> watch() {
    for (;;) {
      if (served_) {
        co_return;
      }
      if (reload_closes_connection()) {
        end_for_trust();
        co_return;
      }
      if (result_expired()) {
        record_result_expired();
        end_for_trust();
        co_return;
      }
      const auto deadline = current_deadline();
      if (clock::now() >= deadline) {
        const auto limit = relaying_ ? options_.timeouts.idle : phase_timeout_;
        record("timeout", std::string(phase_) + " timeout (" + format_duration(limit) + ")");
        co_return;
      }
      timer_.expires_at(deadline);
      auto [ec] = co_await timer_.async_wait(use_tuple);
      (void)ec;  // expired, or cancelled by set_deadline(): either way re-evaluate
      const auto state = co_await asio::this_coro::cancellation_state;
      if (state.cancelled() != asio::cancellation_type::none) {
        co_return;
      }
    }
  }

  // The first verdict wins: later errors are consequences of it (closed sockets, cancellation).
  void record(std::string_view outcome, std::string reason) {
    if (!outcome_.empty()) {
      return;
    }
    if (control_->aborting) {
      outcome_ = "aborted";
      reason_ = "drain timeout";
      return;
    }
    outcome_ = outcome;
    reason_ = std::move(reason);
  }

  void observe_handshake(clock::duration took) const {
    metrics::process().handshake_duration.with({options_.name}).observe(took);
  }

  void log_close() const {
    metrics::process().connections.with({options_.name, outcome_}).inc();
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started_);
    const auto level = outcome_ == "ok" ? spdlog::level::info : spdlog::level::warn;
    spdlog::log(level,
                "connection closed listener={} id={} peer={} upstream={} tls={} attestation={} "
                "client_to_upstream={} upstream_to_client={} duration_ms={} outcome={} reason={}",
                options_.name, control_->id, peer_, net::to_string(options_.upstream),
                quote_for_log(tls_summary_.empty() ? "-" : tls_summary_),
                quote_for_log(attestation_summary_.empty() ? "-" : attestation_summary_),
                bytes_from_client_, bytes_to_client_, elapsed.count(), outcome_,
                quote_for_log(reason_));
  }

  std::shared_ptr<listener_state> listener_;
  std::shared_ptr<const listener_options> settings_;  // as they were when the connection came
  const listener_options& options_;
  std::shared_ptr<session_control> control_;
  socket_type client_;
  std::string peer_;
  std::optional<pp2::addresses> endpoints_;
  asio::steady_timer timer_;
  net::async_event policy_changed_{control_->executor};  // see run()
  std::string tls_summary_;
  std::string attestation_summary_;
  std::optional<std::chrono::steady_clock::time_point> result_deadline_;  // see deadline_of
  // The attestation object's record of a result our policy refused, while that object lives
  // (see secure() and attest()).
  const std::optional<verify::attestation_result>* refused_result_ = nullptr;
  unsigned audit_round_ = 0;        // 0 at set-up, then one more per re-attestation
  clock::time_point requested_at_;  // when the last re-attestation request was sent
  // The last reloaded settings this connection was checked under, and every relying-party
  // setting its stream has been told to judge by since (see follow_reloads).
  std::shared_ptr<const listener_options> checked_policy_;
  std::vector<std::shared_ptr<const attested::settings>> judged_by_;
  pp2::attestation_info peer_proof_;  // unattested until the peer's result is accepted

  const clock::time_point started_ = clock::now();
  const char* phase_ = "accept";
  std::chrono::milliseconds phase_timeout_{0};
  clock::time_point deadline_ = clock::time_point::max();
  bool relaying_ = false;
  bool served_ = false;  // serve() ended: the watchdog ends too (see run())
  // relay_bounded, and a tunnel whose peer did not attest after the handshake: no coroutine
  // follows reloads or the result's expiry for them; the watchdog does (watch()).
  bool watchdog_keeps_trust_ = false;
  bool carrying_ = false;  // relaying_ for a tunnel: its streams, not its bytes, make it busy
  clock::time_point last_activity_;
  std::function<void()> abort_legs_;

  // Multiplexing: the tunnel this session carries (outbound: set up for it; inbound: accepted),
  // while it does; what its streams share with it; their sessions (inbound).
  std::shared_ptr<tunnel_handle> tunnel_;
  const attested::attested_stream* attested_network_ = nullptr;
  // Tunnel facts are behind pointers: a connection of its own, the common case, holds neither.
  std::unique_ptr<tunnel_facts> carried_;
  std::vector<std::weak_ptr<session_control>> stream_controls_;
  // One stream of an inbound tunnel, and the tunnel's facts, for a session in that role.
  std::unique_ptr<mux::stream> stream_;
  std::unique_ptr<const tunnel_facts> via_;

  bool client_ended_ = false;    // the client's sending ended cleanly (EOF read from it)
  bool upstream_ended_ = false;  // the same for the upstream
  std::uint64_t bytes_from_client_ = 0;
  std::uint64_t bytes_to_client_ = 0;
  std::string outcome_;
  std::string reason_;
};

}  // namespace

asio::awaitable<void> run_session(std::shared_ptr<listener_state> listener,
                                  std::shared_ptr<const listener_options> options,
                                  std::shared_ptr<session_control> control, socket_type client) {
  session s(std::move(listener), std::move(options), std::move(control), std::move(client));
  co_await s.run();
}

asio::awaitable<void> run_tunnel_session(std::shared_ptr<listener_state> listener,
                                         std::shared_ptr<session_control> control,
                                         std::shared_ptr<tunnel_handle> handle) {
  session s(std::move(listener), std::move(control), std::move(handle));
  co_await s.run();
}

asio::awaitable<void> run_stream_session(std::shared_ptr<listener_state> listener,
                                         std::shared_ptr<const listener_options> options,
                                         std::shared_ptr<session_control> control,
                                         tunnel_facts facts, std::unique_ptr<mux::stream> stream) {
  session s(std::move(listener), std::move(options), std::move(control), std::move(facts),
            std::move(stream));
  co_await s.run();
}

}  // namespace atls::proxy::detail
