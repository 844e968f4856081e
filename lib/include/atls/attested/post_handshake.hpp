// Post-handshake attestation (RFC 9261 Exported Authenticators with draft-fossati-seat-expat)
// on a framed TLS stream (tls/attestation_framing.hpp, PROTOCOL-NOTES.md "Transport"):
//
//  1. negotiation: the client offers in its ClientHello (will it attest, does it want the server
//     to), the server answers in EncryptedExtensions. A relying party whose policy requires
//     attestation refuses a peer that cannot give it: the server with the attestation_required
//     alert in the handshake, the client after it (OpenSSL gives a client no hook to alert on an
//     absent extension), closing before any byte;
//  2. the exchange: each relying party sends an authenticator request asking for evidence, the
//     attester answers with an authenticator whose first certificate carries a CMW bound to the
//     binder Hash(public key ‖ TLS-Exporter(label, request context, 32)), the relying party
//     appraises it and sends a verdict;
//  3. the relay: workload bytes travel in data frames, once every exchange has been accepted;
//     a relying party may ask again at any time (re-attestation), between data frames.
//
// Binding: the binder comes from this connection's exporter, which only its two endpoints know,
// and from the key whose signature the authenticator carries. Evidence replayed from another
// connection carries another binder (wrong_nonce); evidence about another key fails the key check
// (key_mismatch). When the peer authenticated with a certificate in the handshake, the
// authenticator's key must be that certificate's key, so that attestation and identity name
// the same endpoint.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>

#include "atls/attested/settings.hpp"
#include "atls/common/result.hpp"
#include "atls/net/async_event.hpp"
#include "atls/tls/attestation_framing.hpp"
#include "atls/tls/stream.hpp"
#include "atls/verify/attestation_result.hpp"

using SSL_CTX = struct ssl_ctx_st;

namespace atls::attested {

using bytes = std::vector<std::uint8_t>;

// Registers the offer extension on ctx (once, before connections are made from it). A connection
// without a post_handshake_negotiation attached is unaffected: it neither offers nor answers.
// Fails with tls::errc::context_setup_failed.
[[nodiscard]] result<void> install_post_handshake(SSL_CTX* ctx,
                                                  const tls::attestation_code_points& points);

// Who does what on one connection, once the handshake is done.
struct negotiated_roles {
  bool framed = false;        // both sides agreed: every byte travels in frames
  bool peer_attests = false;  // we send requests and appraise (we are the relying party)
  bool we_attest = false;     // we answer requests with evidence
};

// The offer of one connection: attach before its handshake, read after it. Lives as long as the
// handshake; the stream is borrowed.
class post_handshake_negotiation {
 public:
  post_handshake_negotiation(tls::stream& stream, const settings& settings, bool is_server);
  ~post_handshake_negotiation();
  post_handshake_negotiation(const post_handshake_negotiation&) = delete;
  post_handshake_negotiation& operator=(const post_handshake_negotiation&) = delete;
  post_handshake_negotiation(post_handshake_negotiation&&) = delete;
  post_handshake_negotiation& operator=(post_handshake_negotiation&&) = delete;

  // After a successful handshake: the roles, or tls::errc::attestation_required when our policy
  // requires the peer to attest and it did not agree to.
  [[nodiscard]] result<negotiated_roles> roles() const;

  // Why the handshake was refused on our side, when it was (our alert); empty otherwise.
  [[nodiscard]] const error_code& refusal() const { return refusal_; }

  // The extension callbacks' view; not for other callers.
  struct callbacks;

 private:
  tls::stream& stream_;
  SSL* ssl_;
  const settings& settings_;
  bool is_server_;
  bytes sent_;  // our offer or answer, alive while OpenSSL writes it
  std::optional<tls::post_handshake_offer> peer_offer_;
  error_code refusal_;
};

// A TLS stream after a negotiated handshake, speaking frames. Same interface as tls::stream for
// the relay (read_some, write, shutdown_send, close, error_detail), plus the attestation
// exchanges. One reader and one writer may be active at once, as on tls::stream; control frames
// that the reader must answer wait for the writer's frame to finish.
class attested_stream {
 public:
  attested_stream(tls::stream& tls, const settings& settings, negotiated_roles roles);

  // Runs the first exchange in each direction that the roles call for, and completes when every
  // one has been accepted. Fails with the reason's error (reason_of names it); error_detail()
  // says more. No data frame may arrive before: one that does is malformed_frame.
  boost::asio::awaitable<error_code> establish();

  // A new request to the attesting peer (re-attestation); the answer is handled by the reader
  // (read_some), which fails the connection if it is refused. Fails when a previous request is
  // still unanswered or the write fails.
  boost::asio::awaitable<error_code> reattest();
  // Whether a request we sent is still unanswered.
  [[nodiscard]] bool awaiting_answer() const { return pending_request_.has_value(); }
  // Whether a round can still be held: it needs both directions, and TLS 1.3 sends nothing after
  // a close_notify. Once either side has sent one, no request is answered: a request of ours
  // still waiting is dropped when the peer's close_notify arrives, and a request that reaches us
  // after ours is ignored.
  [[nodiscard]] bool can_reattest() const { return !we_closed_ && !peer_closed_; }

  // From now on the peer's answers, including one already on its way, are judged by `next.peer`
  // (a reloaded policy). `next` must keep this stream's mode, binder and code points, which
  // belong to the channel; it is borrowed, and must outlive the stream (earlier settings too: an
  // answer being judged when this is called finishes under them).
  void judge_by(const settings& next) { settings_ = &next; }

  // Called on the reader's executor for each re-attestation round (the first exchange is
  // establish()'s) that does not close the connection: accepted (no error; peer_result() has
  // been updated), or deferred because the verifier could not be reached within the policy's
  // verifier_grace (the verifier's error, and what the audit line should say).
  using round_callback = std::function<void(const error_code& deferred, const std::string& detail)>;
  void on_reattestation(round_callback callback) { on_reattestation_ = std::move(callback); }

  boost::asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
      boost::asio::mutable_buffer buffer);
  boost::asio::awaitable<error_code> write(boost::asio::const_buffer buffer);
  boost::asio::awaitable<error_code> shutdown_send();
  void close();
  [[nodiscard]] const std::string& error_detail() const { return detail_; }

  // The peer's last accepted attestation result, when it attests.
  [[nodiscard]] const std::optional<verify::attestation_result>& peer_result() const {
    return peer_result_;
  }
  // The peer's last result that the verifier gave and our policy refused (status, trust vector),
  // for the audit line of that refusal.
  [[nodiscard]] const std::optional<verify::attestation_result>& refused_result() const {
    return refused_result_;
  }
  // How many exchanges were accepted in each direction.
  [[nodiscard]] std::size_t peer_attestations() const { return peer_accepted_; }
  [[nodiscard]] std::size_t own_attestations() const { return own_accepted_; }

 private:
  boost::asio::awaitable<error_code> send_request();
  // Background check: has the verifier open its session for the pending request's binder while
  // the peer produces its evidence.
  void prepare_appraisal() const;
  // Copies `payload` once, behind its header, into out_: it must stay valid only until the
  // copy, which happens before the first suspension after the wait for an earlier write.
  boost::asio::awaitable<error_code> send_frame(tls::frame_type type,
                                                std::span<const std::uint8_t> payload);
  // The next frame from the peer, or an error (eof included).
  boost::asio::awaitable<result<tls::frame>> next_frame();
  // Handles a control frame; data frames are the caller's.
  boost::asio::awaitable<error_code> handle(tls::frame& frame);
  boost::asio::awaitable<error_code> answer_request(const bytes& request);
  // Answers `request` with the empty authenticator, then fails with `ec`.
  boost::asio::awaitable<error_code> decline(const bytes& request, error_code ec, std::string why);
  // Our evidence over this connection's binder for `context`, or our passport, as a CMW;
  // `why` says what failed.
  boost::asio::awaitable<result<bytes>> our_cmw(const bytes& context, std::string& why);
  boost::asio::awaitable<error_code> judge_authenticator(const bytes& authenticator);
  // The relying party's decision on one authenticator; detail says why it refused.
  struct pending_request;
  boost::asio::awaitable<result<verify::attestation_result>> decide(const pending_request& request,
                                                                    const bytes& authenticator,
                                                                    std::string& detail);
  error_code take_verdict(const bytes& payload);
  error_code fail(error_code ec, std::string detail);

  tls::stream& tls_;
  const settings* settings_;
  negotiated_roles roles_;
  tls::authenticator_session session_;
  tls::frame_reader reader_;
  std::vector<std::uint8_t> read_buffer_;
  bytes data_;  // payload of the data frame being delivered
  std::size_t data_offset_ = 0;
  bool writing_ = false;
  bool we_closed_ = false;    // shutdown_send() sent our close_notify
  bool peer_closed_ = false;  // the peer's close_notify arrived
  net::async_event written_;
  bytes out_;  // the frame being written

  // Our request, until its authenticator arrives. The evidence must be bound to the handshake
  // certificate's key (decide() accepts no other), so its binder is known when the request is
  // sent: derived once, it lets the verifier prepare and is what the appraisal checks.
  struct pending_request {
    bytes encoded;
    bytes context;
    std::optional<bytes> handshake_key;  // the peer certificate's SPKI, when it sent one
    std::optional<bytes> binder;         // for handshake_key
  };
  std::optional<pending_request> pending_request_;
  std::optional<bytes> answered_context_;  // the context we answered, until its verdict
  std::optional<verify::attestation_result> peer_result_;
  std::optional<verify::attestation_result> refused_result_;
  std::size_t peer_accepted_ = 0;
  std::size_t own_accepted_ = 0;
  std::chrono::steady_clock::time_point peer_accepted_at_;  // the last accepted round
  round_callback on_reattestation_;
  std::string detail_;
};

}  // namespace atls::attested
