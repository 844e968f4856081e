#include "atls/attested/post_handshake.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include <boost/asio/error.hpp>
#include <openssl/ssl.h>

#include "atls/attested/appraisal.hpp"
#include "atls/attested/reason.hpp"
#include "atls/common/openssl_error_scope.hpp"
#include "atls/tls/early_binder.hpp"
#include "atls/tls/exported_authenticator.hpp"
#include "atls/verify/error.hpp"

namespace atls::attested {

namespace asio = boost::asio;

// ---------------------------------------------------------------------------------------------
// Negotiation.

namespace {

int negotiation_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

}  // namespace

struct post_handshake_negotiation::callbacks {
  static post_handshake_negotiation* of(SSL* ssl) {
    return static_cast<post_handshake_negotiation*>(SSL_get_ex_data(ssl, negotiation_index()));
  }

  // What we say in our ClientHello, or in EncryptedExtensions answering the client's offer.
  static tls::post_handshake_offer ours(const post_handshake_negotiation& n) {
    const bool can_attest = n.settings_.self.has_value();
    const bool wants = n.settings_.peer.has_value();
    if (!n.is_server_ || !n.peer_offer_) {
      return {.will_attest = can_attest, .wants_attestation = wants};
    }
    // The server asks only what the client can give, and attests only when asked.
    return {.will_attest = can_attest && n.peer_offer_->wants_attestation,
            .wants_attestation = wants && n.peer_offer_->will_attest};
  }

  // The relying party's rule: a peer that will not attest is refused when the policy requires.
  static bool peer_falls_short(const post_handshake_negotiation& n,
                               const std::optional<tls::post_handshake_offer>& peer) {
    const auto& rp = n.settings_.peer;
    return rp && rp->required && (!peer || !peer->will_attest);
  }

  static int add(SSL* ssl, unsigned int /*type*/, unsigned int context, const unsigned char** out,
                 size_t* outlen, X509* /*x*/, size_t /*chainidx*/, int* /*al*/, void* /*arg*/) {
    auto* n = of(ssl);
    if (n == nullptr) {
      return 0;  // a connection without attestation: plain TLS
    }
    if (context == SSL_EXT_TLS1_3_ENCRYPTED_EXTENSIONS && !n->peer_offer_) {
      return 0;
    }
    n->sent_ = tls::encode_post_handshake_offer(ours(*n));
    *out = n->sent_.data();
    *outlen = n->sent_.size();
    return 1;
  }

  static int parse(SSL* ssl, unsigned int /*type*/, unsigned int context, const unsigned char* in,
                   size_t inlen, X509* /*x*/, size_t /*chainidx*/, int* al, void* /*arg*/) {
    auto* n = of(ssl);
    if (n == nullptr) {
      return 1;  // not ours to judge: ignore, as for any unknown extension
    }
    if (context == SSL_EXT_CLIENT_HELLO) {
      return 1;  // judged in on_client_hello, which sees an absent offer too
    }
    auto offer = tls::decode_post_handshake_offer({in, inlen});
    if (!offer) {
      n->refusal_ = offer.error();
      *al = SSL_AD_DECODE_ERROR;
      return 0;
    }
    n->peer_offer_ = *offer;
    if (peer_falls_short(*n, n->peer_offer_)) {
      n->refusal_ = tls::errc::attestation_required;
      // Encrypted, and OpenSSL cannot send the draft's alert number: a standard one it can.
      *al = SSL_AD_HANDSHAKE_FAILURE;
      return 0;
    }
    return 1;
  }

  static int on_client_hello(SSL* ssl, int* al, void* /*arg*/) {
    auto* n = of(ssl);
    if (n == nullptr) {
      return SSL_CLIENT_HELLO_SUCCESS;
    }
    const auto* points = &n->settings_.code_points;
    const unsigned char* data = nullptr;
    size_t size = 0;
    if (SSL_client_hello_get0_ext(ssl, points->post_handshake_extension, &data, &size) == 1) {
      auto offer = tls::decode_post_handshake_offer({data, size});
      if (!offer) {
        n->refusal_ = offer.error();
        *al = SSL_AD_DECODE_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
      }
      n->peer_offer_ = *offer;
    }
    if (peer_falls_short(*n, n->peer_offer_)) {
      n->refusal_ = tls::errc::attestation_required;
      *al = points->attestation_required_alert;
      // OpenSSL drops alert numbers it does not know (tls1_alert_code), so the stream frames this
      // one itself; before the ServerHello it is a plaintext record.
      n->stream_.send_on_handshake_failure(
          {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, points->attestation_required_alert},
          "the client does not offer the attestation the policy requires");
      return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
  }
};

result<void> install_post_handshake(SSL_CTX* ctx, const tls::attestation_code_points& points) {
  const openssl_error_scope scope;
  // The callbacks take everything else (alerts, policy) from the connection's negotiation.
  const unsigned int contexts =
      SSL_EXT_TLS1_3_ONLY | SSL_EXT_CLIENT_HELLO | SSL_EXT_TLS1_3_ENCRYPTED_EXTENSIONS;
  using cb = post_handshake_negotiation::callbacks;
  if (SSL_CTX_add_custom_ext(ctx, points.post_handshake_extension, contexts, &cb::add, nullptr,
                             nullptr, &cb::parse, nullptr) != 1) {
    return make_error_code(tls::errc::context_setup_failed);
  }
  SSL_CTX_set_client_hello_cb(ctx, &cb::on_client_hello, nullptr);
  return {};
}

post_handshake_negotiation::post_handshake_negotiation(tls::stream& stream,
                                                       const settings& settings, bool is_server)
    : stream_(stream), ssl_(stream.native_handle()), settings_(settings), is_server_(is_server) {
  SSL_set_ex_data(ssl_, negotiation_index(), this);
}

post_handshake_negotiation::~post_handshake_negotiation() {
  SSL_set_ex_data(ssl_, negotiation_index(), nullptr);
}

result<negotiated_roles> post_handshake_negotiation::roles() const {
  if (callbacks::peer_falls_short(*this, peer_offer_)) {
    return make_error_code(tls::errc::attestation_required);
  }
  if (!peer_offer_) {
    return negotiated_roles{};
  }
  const auto mine = callbacks::ours(*this);
  // The server's answer is what both act on: the client's offer bounds it.
  const auto& server = is_server_ ? mine : *peer_offer_;
  const auto& client = is_server_ ? *peer_offer_ : mine;
  negotiated_roles roles{.framed = true};
  if (is_server_) {
    roles.peer_attests = server.wants_attestation;
    roles.we_attest = server.will_attest;
  } else {
    roles.peer_attests = client.wants_attestation && server.will_attest;
    roles.we_attest = client.will_attest && server.wants_attestation;
  }
  return roles;
}

// ---------------------------------------------------------------------------------------------
// The framed stream.

namespace {

tls::authenticator_request_kind request_kind(SSL* ssl) {
  return SSL_is_server(ssl) == 1 ? tls::authenticator_request_kind::certificate_request
                                 : tls::authenticator_request_kind::client_certificate_request;
}

}  // namespace

attested_stream::attested_stream(tls::stream& tls, const settings& settings, negotiated_roles roles)
    : tls_(tls),
      settings_(&settings),
      roles_(roles),
      read_buffer_(tls::max_data_frame_size + tls::frame_header_size),
      written_(tls.socket().get_executor()) {}

error_code attested_stream::fail(error_code ec, std::string detail) {
  detail_ = std::move(detail);
  return ec;
}

asio::awaitable<error_code> attested_stream::establish() {
  if (roles_.peer_attests) {
    if (auto ec = co_await send_request()) {
      co_return ec;
    }
  }
  while ((roles_.peer_attests && peer_accepted_ == 0) || (roles_.we_attest && own_accepted_ == 0)) {
    auto frame = co_await next_frame();
    if (!frame) {
      co_return frame.error();
    }
    if (frame->type == tls::frame_type::data) {
      co_return fail(tls::errc::malformed_frame, "workload data before attestation completed");
    }
    if (auto ec = co_await handle(*frame)) {
      co_return ec;
    }
  }
  co_return error_code{};
}

asio::awaitable<error_code> attested_stream::reattest() {
  if (!roles_.peer_attests) {
    co_return error_code{};
  }
  if (pending_request_) {
    co_return fail(tls::errc::no_evidence, "the peer did not answer the previous request in time");
  }
  co_return co_await send_request();
}

asio::awaitable<error_code> attested_stream::send_request() {
  SSL* ssl = tls_.native_handle();
  auto context = tls::make_request_context();
  if (!context) {
    co_return fail(context.error(), "no random request context");
  }
  auto request =
      tls::make_request(request_kind(ssl), *context,
                        {.request_attestation = true, .code_points = settings_->code_points});
  if (!request) {
    co_return fail(request.error(), "cannot encode the authenticator request");
  }
  pending_request pending{.encoded = std::move(*request),
                          .context = bytes(context->begin(), context->end())};
  if (X509* peer = SSL_get0_peer_certificate(ssl); peer != nullptr) {
    if (auto key = tls::certificate_spki_der(peer)) {
      if (auto binder = tls::attestation_binder(ssl, pending.context, *key, settings_->binder)) {
        pending.binder = std::move(*binder);
      }
      pending.handshake_key = std::move(*key);
    }
  }
  // send_frame may wait for an earlier write, and the peer's close_notify during that wait drops
  // the pending request: the frame is sent from a copy.
  const bytes encoded = pending.encoded;
  pending_request_ = std::move(pending);
  prepare_appraisal();
  co_return co_await send_frame(tls::frame_type::authenticator_request, encoded);
}

void attested_stream::prepare_appraisal() const {
  const auto& rp = *settings_->peer;
  if (rp.model != model::background_check || !rp.verifier || !pending_request_->binder) {
    return;
  }
  // The verifier can open its session now, in parallel with the peer's TPM, and the appraisal
  // costs one round trip.
  rp.verifier->prepare(*pending_request_->binder);
}

asio::awaitable<error_code> attested_stream::send_frame(tls::frame_type type,
                                                        std::span<const std::uint8_t> payload) {
  while (writing_) {
    const bool woken = co_await written_.wait();
    if (!woken) {
      co_return error_code{asio::error::operation_aborted};
    }
  }
  if (we_closed_ && type != tls::frame_type::data) {
    // An answer or verdict that our close_notify overtook while it was prepared: TLS can carry
    // nothing after it, and the peer stops expecting one when the close_notify arrives.
    co_return error_code{};
  }
  auto header = tls::encode_frame_header(type, payload.size());
  if (!header) {
    co_return fail(header.error(), "frame too large");
  }
  writing_ = true;
  // out_ keeps its capacity from frame to frame: one copy per frame and no allocation.
  out_.clear();
  out_.reserve(tls::frame_header_size + tls::max_data_frame_size);
  out_.insert(out_.end(), header->begin(), header->end());
  out_.insert(out_.end(), payload.begin(), payload.end());
  auto ec = co_await tls_.write(asio::buffer(out_));
  writing_ = false;
  written_.notify_all();
  if (ec) {
    detail_ = tls_.error_detail();
  }
  co_return ec;
}

asio::awaitable<result<tls::frame>> attested_stream::next_frame() {
  for (;;) {
    auto next = reader_.next();
    if (!next) {
      co_return fail(next.error(), "the peer broke the attestation framing");
    }
    if (*next) {
      co_return std::move(**next);
    }
    auto [ec, n] = co_await tls_.read_some(asio::buffer(read_buffer_));
    if (ec == asio::error::eof && reader_.buffered() > 0) {
      co_return fail(tls::errc::malformed_frame, "the stream ended inside a frame");
    }
    if (ec == asio::error::eof) {
      peer_closed_ = true;
      pending_request_.reset();  // its answer can no longer come
    }
    if (ec) {
      detail_ = tls_.error_detail();
      co_return ec;
    }
    reader_.feed({read_buffer_.data(), n});
  }
}

asio::awaitable<error_code> attested_stream::handle(tls::frame& frame) {
  switch (frame.type) {
    case tls::frame_type::authenticator_request:
      if (!roles_.we_attest) {
        co_return fail(tls::errc::malformed_frame, "an authenticator request we did not agree to");
      }
      if (we_closed_) {
        // Crossed our close_notify; the peer drops it when that arrives.
        co_return error_code{};
      }
      co_return co_await answer_request(frame.payload);
    case tls::frame_type::authenticator:
      if (!pending_request_) {
        co_return fail(tls::errc::malformed_frame, "an authenticator nobody asked for");
      }
      co_return co_await judge_authenticator(frame.payload);
    case tls::frame_type::verdict:
      co_return take_verdict(frame.payload);
    case tls::frame_type::data:
      break;
  }
  co_return fail(tls::errc::malformed_frame, "unexpected data frame");
}

asio::awaitable<error_code> attested_stream::answer_request(const bytes& request) {
  SSL* ssl = tls_.native_handle();
  auto decoded = tls::decode_request(request);
  if (!decoded) {
    co_return fail(decoded.error(), "the authenticator request does not parse");
  }
  const auto& attester = *settings_->self->attester;
  // What we attest with comes first: a request is answered once, so the context is spent only
  // when there is something to answer with.
  std::string why;
  auto collecting = our_cmw(decoded->context, why);
  auto cmw = co_await std::move(collecting);
  if (!cmw) {
    co_return co_await decline(request, cmw.error(), why);
  }
  X509* leaf = SSL_get_certificate(ssl);
  STACK_OF(X509)* extra = nullptr;
  SSL_get0_chain_certs(ssl, &extra);
  std::vector<X509*> chain{leaf};
  for (int i = 0; i < sk_X509_num(extra); ++i) {
    chain.push_back(sk_X509_value(extra, i));
  }
  auto prepared = tls::prepare_authenticator(ssl, request, chain, *cmw, session_,
                                             {.code_points = settings_->code_points});
  if (!prepared) {
    co_return co_await decline(request, prepared.error(), "preparing the authenticator");
  }
  if (prepared->leaf_spki_der != attester.tls_public_key()) {
    co_return co_await decline(
        request, tls::errc::certificate_unusable,
        "the certificate's key is not the attested TLS key (tls.key must be tpm:tik)");
  }
  const auto& to_sign = *prepared;
  auto sign = [&to_sign](EVP_PKEY* key) { return tls::sign_prepared(to_sign, key); };
  auto signing = settings_->self->attester->with_tls_key(sign);
  auto signature = co_await std::move(signing);
  if (!signature) {
    co_return co_await decline(request, signature.error(), "signing the authenticator");
  }
  auto authenticator = tls::finish_authenticator(ssl, *prepared, *signature);
  if (!authenticator) {
    co_return co_await decline(request, authenticator.error(), "finishing the authenticator");
  }
  answered_context_ = decoded->context;
  co_return co_await send_frame(tls::frame_type::authenticator, *authenticator);
}

asio::awaitable<error_code> attested_stream::decline(const bytes& request, error_code ec,
                                                     std::string why) {
  // RFC 9261 §6: the empty authenticator tells the relying party that nothing is coming, so it
  // logs no_evidence at once instead of a bare close or its deadline.
  if (auto empty = tls::make_empty_authenticator(tls_.native_handle(), request)) {
    auto sending = send_frame(tls::frame_type::authenticator, *empty);
    co_await std::move(sending);
  }
  co_return fail(ec, why);
}

asio::awaitable<result<bytes>> attested_stream::our_cmw(const bytes& context, std::string& why) {
  const auto& self = *settings_->self;
  if (self.model == model::passport) {
    auto ear = self.passport ? self.passport->current() : std::nullopt;
    if (!ear) {
      why = "no EAR from the verifier yet, or the last one expired";
      co_return make_error_code(errc::no_passport);
    }
    why = "wrapping our attestation result";
    co_return wrap_passport(*ear);
  }
  auto binder = tls::attestation_binder(tls_.native_handle(), context,
                                        self.attester->tls_public_key(), settings_->binder);
  if (!binder) {
    why = "cannot derive the attestation binder";
    co_return binder.error();
  }
  auto collecting = self.attester->evidence(std::move(*binder));
  auto evidence = co_await std::move(collecting);
  if (!evidence) {
    why = "collecting evidence: " + evidence.error().message();
    co_return evidence.error();
  }
  why = "wrapping evidence";
  co_return wrap_evidence(*evidence);
}

asio::awaitable<error_code> attested_stream::judge_authenticator(const bytes& authenticator) {
  const pending_request request = std::move(*pending_request_);
  pending_request_.reset();
  const auto& context = request.context;

  std::string detail;
  auto deciding = decide(request, authenticator, detail);
  auto decision = co_await std::move(deciding);
  const auto why = decision ? reason::accepted : reason_of(decision.error());
  // A verifier outage is not the peer's doing: within the grace, the round is deferred without a
  // verdict (the attester takes the next request as superseding it), and the connection keeps
  // the result it has, which is at most verifier_grace older than it would otherwise be.
  const auto since_accepted = std::chrono::steady_clock::now() - peer_accepted_at_;
  if (why == reason::verifier_unreachable && peer_accepted_ > 0 &&
      since_accepted < settings_->peer->verifier_grace) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        settings_->peer->verifier_grace - since_accepted);
    if (on_reattestation_) {
      on_reattestation_(decision.error(), decision.error().message() +
                                              "; deferred: the connection keeps its last "
                                              "result for up to " +
                                              std::to_string(left.count()) + " ms more");
    }
    co_return error_code{};
  }
  auto verdict =
      tls::encode_verdict({.context = context, .reason = static_cast<std::uint16_t>(why)});
  if (verdict) {
    if (auto ec = co_await send_frame(tls::frame_type::verdict, *verdict); ec && decision) {
      co_return ec;
    }
  }
  if (!decision) {
    co_return fail(decision.error(), detail);
  }
  peer_result_ = std::move(*decision);
  ++peer_accepted_;
  peer_accepted_at_ = std::chrono::steady_clock::now();
  if (peer_accepted_ > 1 && on_reattestation_) {
    on_reattestation_({}, {});
  }
  co_return error_code{};
}

asio::awaitable<result<verify::attestation_result>> attested_stream::decide(
    const pending_request& request, const bytes& authenticator, std::string& detail) {
  SSL* ssl = tls_.native_handle();
  auto verified = tls::verify_authenticator(ssl, request.encoded, authenticator, session_,
                                            {.code_points = settings_->code_points});
  if (!verified) {
    detail = verified.error() == tls::errc::no_evidence
                 ? "the peer declined to attest (an empty authenticator)"
                 : "authenticator: " + verified.error().message();
    co_return verified.error();
  }
  if (!verified->cmw) {
    detail = "the authenticator carries no evidence";
    co_return make_error_code(tls::errc::no_evidence);
  }
  // Attestation and identity must name the same endpoint: the key certified in the handshake.
  if (SSL_get0_peer_certificate(ssl) != nullptr &&
      (!request.handshake_key || *request.handshake_key != verified->leaf_spki_der)) {
    detail = "the authenticator's key is not the key of the handshake certificate";
    co_return make_error_code(verify::verify_errc::attested_key_mismatch);
  }
  // Without a handshake certificate, the binder is for the authenticator's own key.
  auto binder = request.binder
                    ? result<bytes>(*request.binder)
                    : tls::attestation_binder(ssl, request.context, verified->leaf_spki_der,
                                              settings_->binder);
  if (!binder) {
    detail = "cannot derive the attestation binder";
    co_return binder.error();
  }
  auto appraising = appraise_peer(*settings_->peer, *verified->cmw, std::move(*binder),
                                  verified->leaf_spki_der, &refused_result_);
  auto appraised = co_await std::move(appraising);
  // The appraisal's error says all there is to say ("status is below the policy's minimum");
  // a detail would only repeat it.
  co_return appraised;
}

error_code attested_stream::take_verdict(const bytes& payload) {
  auto verdict = tls::decode_verdict(payload);
  if (!verdict) {
    return fail(verdict.error(), "the verdict does not parse");
  }
  if (!answered_context_ || *answered_context_ != verdict->context) {
    return fail(tls::errc::malformed_frame, "a verdict on a request we did not answer");
  }
  answered_context_.reset();
  if (verdict->reason != static_cast<std::uint16_t>(reason::accepted)) {
    const auto named = reason_from_wire(verdict->reason);
    return fail(
        errc::refused_by_peer,
        // errc::refused_by_peer's message already says who refused what.
        "its verdict said " +
            std::string(named ? to_string(*named) : "reason " + std::to_string(verdict->reason)));
  }
  ++own_accepted_;
  return {};
}

// ---------------------------------------------------------------------------------------------
// The relay's interface.

asio::awaitable<std::tuple<error_code, std::size_t>> attested_stream::read_some(
    asio::mutable_buffer buffer) {
  for (;;) {
    if (data_offset_ < data_.size()) {
      const auto n = std::min(buffer.size(), data_.size() - data_offset_);
      std::memcpy(buffer.data(), data_.data() + data_offset_, n);
      data_offset_ += n;
      co_return std::tuple{error_code{}, n};
    }
    auto frame = co_await next_frame();
    if (!frame) {
      co_return std::tuple{frame.error(), std::size_t{0}};
    }
    if (frame->type == tls::frame_type::data) {
      data_ = std::move(frame->payload);
      data_offset_ = 0;
      continue;
    }
    if (auto ec = co_await handle(*frame)) {
      co_return std::tuple{ec, std::size_t{0}};
    }
  }
}

asio::awaitable<error_code> attested_stream::write(asio::const_buffer buffer) {
  const auto* data = static_cast<const std::uint8_t*>(buffer.data());
  std::size_t left = buffer.size();
  while (left > 0) {
    const auto n = std::min(left, tls::max_data_frame_size);
    if (auto ec = co_await send_frame(tls::frame_type::data, {data, n})) {
      co_return ec;
    }
    data += n;
    left -= n;
  }
  co_return error_code{};
}

asio::awaitable<error_code> attested_stream::shutdown_send() {
  while (writing_) {
    const bool woken = co_await written_.wait();
    if (!woken) {
      co_return error_code{asio::error::operation_aborted};
    }
  }
  we_closed_ = true;
  const auto ec = co_await tls_.shutdown_send();
  co_return ec;
}

void attested_stream::close() {
  tls_.close();
}

}  // namespace atls::attested
