#include "atls/tls/stream.hpp"

#include <new>
#include <string>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "atls/tls/error.hpp"

namespace atls::tls {

namespace asio = boost::asio;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

bool is_ip_literal(const std::string& name) {
  boost::system::error_code ec;
  (void)asio::ip::make_address(name, ec);
  return !ec;
}

}  // namespace

stream::stream(socket_type socket, context ctx)
    : socket_(std::move(socket)),
      context_(std::move(ctx)),
      flushed_(socket_.get_executor()),
      key_done_(socket_.get_executor(), asio::steady_timer::time_point::max()) {
  ssl_ = SSL_new(context_.native_handle());
  if (ssl_ == nullptr) {
    throw std::bad_alloc();
  }
  BIO* internal_bio = nullptr;
  // Default pair buffers (17 KiB each way) hold one full TLS record; writes stall at that bound,
  // which is the back-pressure the relay relies on.
  if (BIO_new_bio_pair(&internal_bio, 0, &network_bio_, 0) != 1) {
    SSL_free(ssl_);
    throw std::bad_alloc();
  }
  SSL_set_bio(ssl_, internal_bio, internal_bio);
  // Only for the handshake, the one place an external key signs; application data then flows
  // without the cost of entering a job per call.
  if (context_.has_external_key() && (SSL_set_async_callback(ssl_, &stream::on_key_done) != 1 ||
                                      SSL_set_async_callback_arg(ssl_, this) != 1)) {
    SSL_free(ssl_);
    BIO_free(network_bio_);
    throw std::bad_alloc();
  }
  // Only for try_send_pending(): Asio's asynchronous operations ignore this flag.
  error_code ignored;
  socket_.non_blocking(true, ignored);

  if (context_.role() == role::server) {
    SSL_set_accept_state(ssl_);
    return;
  }
  SSL_set_connect_state(ssl_);
  const std::string& name = context_.server_name();
  bool ok = false;
  if (is_ip_literal(name)) {
    // RFC 6066 §3: SNI carries host names only, never IP literals.
    ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str()) == 1;
  } else {
    ok =
        SSL_set_tlsext_host_name(ssl_, name.c_str()) == 1 && SSL_set1_host(ssl_, name.c_str()) == 1;
  }
  if (!ok) {
    SSL_free(ssl_);
    BIO_free(network_bio_);
    throw std::bad_alloc();
  }
}

stream::~stream() {
  SSL_free(ssl_);
  BIO_free(network_bio_);
}

error_code stream::fail(errc code) {
  detail_ = drain_openssl_errors();
  return code;
}

asio::awaitable<error_code> stream::fill() {
  char* room = nullptr;
  const auto capacity = BIO_nwrite0(network_bio_, &room);
  if (capacity <= 0) {
    // SSL asked for input while its input buffer is full: cannot happen with record-sized
    // buffers unless the peer violates framing.
    detail_ = "TLS input buffer full";
    co_return errc::protocol_error;
  }
  auto [ec, n] = co_await socket_.async_read_some(
      asio::buffer(room, static_cast<std::size_t>(capacity)), use_tuple);
  if (ec) {
    co_return ec;
  }
  BIO_nwrite(network_bio_, &room, static_cast<int>(n));
  co_return error_code{};
}

asio::awaitable<error_code> stream::flush() {
  while (BIO_ctrl_pending(network_bio_) > 0) {
    if (write_error_) {
      co_return write_error_;
    }
    if (flushing_) {
      // The other direction is sending; its loop drains what we queued too.
      if (!co_await flushed_.wait()) {
        co_return asio::error::operation_aborted;
      }
      continue;
    }
    char* data = nullptr;
    const auto size = BIO_nread0(network_bio_, &data);
    if (size <= 0) {
      break;
    }
    flushing_ = true;
    // Zero-copy: bytes stay in the pair's ring buffer until the socket took them. SSL may append
    // meanwhile, which never moves bytes already queued.
    auto [ec, written] = co_await asio::async_write(
        socket_, asio::buffer(data, static_cast<std::size_t>(size)), use_tuple);
    flushing_ = false;
    flushed_.notify_all();
    if (ec) {
      write_error_ = ec;
      co_return ec;
    }
    BIO_nread(network_bio_, &data, static_cast<int>(written));
  }
  co_return write_error_;
}

void stream::try_send_pending() {
  while (!flushing_ && !write_error_ && BIO_ctrl_pending(network_bio_) > 0) {
    char* data = nullptr;
    const auto size = BIO_nread0(network_bio_, &data);
    if (size <= 0) {
      return;
    }
    error_code ec;
    const auto n = socket_.write_some(asio::buffer(data, static_cast<std::size_t>(size)), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      return;  // the next flush sends it first
    }
    if (ec) {
      write_error_ = ec;
      return;
    }
    BIO_nread(network_bio_, &data, static_cast<int>(n));
  }
}

int stream::on_key_done(SSL* /*ssl*/, void* self) {
  auto* s = static_cast<stream*>(self);
  // The stream outlives the paused job (wait_for_key() ignores cancellation), and the pending
  // timer wait keeps its io_context running, so both are alive when this runs.
  asio::post(s->socket_.get_executor(), [s] {
    s->key_done_pending_ = true;
    s->key_done_.cancel();
  });
  return 1;
}

asio::awaitable<void> stream::wait_for_key() {
  while (!key_done_pending_) {
    key_done_.expires_at(asio::steady_timer::time_point::max());
    // No cancellation slot: the paused job refers to this stream, so it must wait for the key,
    // which the TPM's own command timeouts bound.
    auto [ec] = co_await key_done_.async_wait(
        asio::bind_cancellation_slot(asio::cancellation_slot(), use_tuple));
    (void)ec;
  }
  key_done_pending_ = false;
}

error_code stream::use_async_handshake() {
  if (!context_.has_external_key() && (SSL_set_async_callback(ssl_, &stream::on_key_done) != 1 ||
                                       SSL_set_async_callback_arg(ssl_, this) != 1)) {
    return fail(errc::context_setup_failed);
  }
  async_handshake_ = true;
  return {};
}

void stream::send_on_handshake_failure(std::vector<std::uint8_t> record, std::string detail) {
  failure_record_ = std::move(record);
  failure_detail_ = std::move(detail);
}

bool stream::note_received_alert() {
  // OpenSSL reports a received alert as reason SSL_AD_REASON_OFFSET + alert number, including
  // descriptions it does not know (rec_layer_s3.c keeps them as they came).
  const auto reason = static_cast<int>(ERR_GET_REASON(ERR_peek_error()));
  if (reason < SSL_AD_REASON_OFFSET || reason > SSL_AD_REASON_OFFSET + 255) {
    return false;
  }
  received_alert_ = static_cast<std::uint8_t>(reason - SSL_AD_REASON_OFFSET);
  return true;
}

asio::awaitable<error_code> stream::handshake() {
  if (context_.has_external_key() || async_handshake_) {
    SSL_set_mode(ssl_, SSL_MODE_ASYNC);
  }
  // OpenSSL resumes a paused job correctly only on the thread that started it.
  std::thread::id job_thread;
  for (;;) {
    if (job_thread != std::thread::id() && job_thread != std::this_thread::get_id()) {
      // Resuming here would switch to the job's stack with another thread's dispatcher; refuse
      // rather than crash. The job and its SSL object stay paused until the stream is freed.
      detail_ =
          "handshake paused for the private key resumed on another thread: the "
          "connection's executor must be single-threaded";
      co_return errc::handshake_failed;
    }
    // The error queue is per thread and SSL_get_error() reads it: clear it before every call and
    // read it before the next co_await, after which we may run on another thread.
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_);
    const int status = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
    job_thread = std::thread::id();
    if (status == SSL_ERROR_WANT_ASYNC) {
      // Before anything that can fail or be cancelled (even the flush): the paused job and the
      // key's completion refer to this stream, so it must not end before the key is done. What
      // the handshake wrote so far goes out with the rest once it resumes.
      job_thread = std::this_thread::get_id();
      co_await wait_for_key();
      continue;
    }
    error_code failed;
    if (status == SSL_ERROR_SSL || status == SSL_ERROR_SYSCALL) {
      const long verify = SSL_get_verify_result(ssl_);
      const unsigned long reason = ERR_GET_REASON(ERR_peek_error());
      const bool alerted = note_received_alert();
      failed = fail(errc::handshake_failed);
      if (alerted) {
        detail_ = "peer sent alert " + std::to_string(*received_alert_) + " (" +
                  SSL_alert_desc_string_long(*received_alert_) + ")";
      } else if (verify == X509_V_ERR_APPLICATION_VERIFICATION) {
        failed = errc::peer_rejected;
        detail_ = "certificate names not in allow_dns/allow_uris";
      } else if (verify != X509_V_OK) {
        failed = errc::peer_rejected;
        detail_ = X509_verify_cert_error_string(verify);
      } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        failed = errc::peer_rejected;
        detail_ = "no client certificate";
      }
    } else if (status == SSL_ERROR_WANT_RETRY_VERIFY && !failure_record_.empty()) {
      // A verify callback stopped the handshake to end it with an alert of its own.
      ERR_clear_error();
      failed = errc::handshake_failed;
    }
    if (failed && !failure_record_.empty()) {
      detail_ = failure_detail_;
    }
    // Send whatever the handshake produced, including the alert that reports a failure.
    if (auto ec = co_await flush(); ec && !failed) {
      detail_ = "sending handshake: " + ec.message();
      co_return ec;
    }
    if (failed && !failure_record_.empty()) {
      // The alert OpenSSL could not send; a write error changes nothing, the handshake failed.
      auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(failure_record_), use_tuple);
      (void)ec;
      (void)n;
      co_return failed;
    }
    switch (status) {
      case SSL_ERROR_NONE:
        SSL_clear_mode(ssl_, SSL_MODE_ASYNC);
        co_return error_code{};
      case SSL_ERROR_WANT_WRITE:
        continue;
      case SSL_ERROR_WANT_READ: {
        auto ec = co_await fill();
        if (ec == asio::error::eof) {
          detail_.clear();
          co_return errc::handshake_eof;
        }
        if (ec) {
          detail_ = "receiving handshake: " + ec.message();
          co_return ec;
        }
        continue;
      }
      default:
        co_return failed ? failed : fail(errc::handshake_failed);
    }
  }
}

asio::awaitable<std::tuple<error_code, std::size_t>> stream::read_some(
    asio::mutable_buffer buffer) {
  for (;;) {
    ERR_clear_error();
    std::size_t n = 0;
    const int r = SSL_read_ex(ssl_, buffer.data(), buffer.size(), &n);
    if (r == 1) {
      co_return std::tuple{error_code{}, n};
    }
    const int status = SSL_get_error(ssl_, r);
    switch (status) {
      case SSL_ERROR_ZERO_RETURN:
        co_return std::tuple{error_code{asio::error::eof}, std::size_t{0}};
      case SSL_ERROR_WANT_WRITE: {
        // A KeyUpdate answer found the output buffer full of the writer's records. Rare: then,
        // and only then, the reader waits for the socket to take output.
        const auto before = BIO_ctrl_pending(network_bio_);
        try_send_pending();
        if (BIO_ctrl_pending(network_bio_) == before) {
          if (auto ec = co_await flush()) {
            co_return std::tuple{ec, std::size_t{0}};
          }
        }
        continue;
      }
      case SSL_ERROR_WANT_READ: {
        // Reading may have queued a KeyUpdate answer. The reader never waits for the socket to
        // take output: if both ends of a relay did, each would stop reading while its peer's
        // writes wait for it to read, and the pair would deadlock.
        try_send_pending();
        auto ec = co_await fill();
        if (ec == asio::error::eof) {
          detail_ = "TCP closed without TLS close_notify";
          co_return std::tuple{error_code{errc::truncated}, std::size_t{0}};
        }
        if (ec) {
          co_return std::tuple{ec, std::size_t{0}};
        }
        continue;
      }
      default: {
        // OpenSSL reports a received alert as reason SSL_AD_REASON_OFFSET + alert number. In
        // TLS 1.3 this is how a client learns that the server refused its certificate.
        const auto reason = static_cast<int>(ERR_GET_REASON(ERR_peek_error()));
        if (status == SSL_ERROR_SSL && reason >= SSL_AD_REASON_OFFSET) {
          note_received_alert();
          ERR_clear_error();
          detail_ = SSL_alert_desc_string_long(reason - SSL_AD_REASON_OFFSET);
          co_return std::tuple{error_code{errc::peer_alert}, std::size_t{0}};
        }
        const auto failed = fail(errc::protocol_error);
        try_send_pending();  // our fatal alert, if SSL queued one
        co_return std::tuple{failed, std::size_t{0}};
      }
    }
  }
}

asio::awaitable<error_code> stream::write(asio::const_buffer buffer) {
  const auto* data = static_cast<const unsigned char*>(buffer.data());
  std::size_t left = buffer.size();
  while (left > 0) {
    ERR_clear_error();
    std::size_t n = 0;
    const int r = SSL_write_ex(ssl_, data, left, &n);
    if (r == 1) {
      data += n;
      left -= n;
      continue;
    }
    const int status = SSL_get_error(ssl_, r);
    if (status != SSL_ERROR_WANT_WRITE) {
      co_return fail(errc::protocol_error);
    }
    if (auto ec = co_await flush()) {
      co_return ec;
    }
  }
  co_return co_await flush();
}

asio::awaitable<error_code> stream::shutdown_send() {
  for (;;) {
    ERR_clear_error();
    const int r = SSL_shutdown(ssl_);
    // 0: our close_notify is queued and the peer's has not arrived; 1: both directions closed.
    if (r >= 0) {
      break;
    }
    if (SSL_get_error(ssl_, r) != SSL_ERROR_WANT_WRITE) {
      co_return fail(errc::protocol_error);
    }
    if (auto ec = co_await flush()) {
      co_return ec;
    }
  }
  if (auto ec = co_await flush()) {
    co_return ec;
  }
  error_code ec;
  socket_.shutdown(socket_type::shutdown_send, ec);
  co_return ec;
}

void stream::close() {
  error_code ignored;
  socket_.close(ignored);
}

std::string stream::session_summary() const {
  std::string out = std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
  const unsigned char* alpn = nullptr;
  unsigned int alpn_size = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_size);
  if (alpn != nullptr) {
    out += " alpn=";
    out.append(reinterpret_cast<const char*>(alpn), alpn_size);
  }
  return out;
}

}  // namespace atls::tls
