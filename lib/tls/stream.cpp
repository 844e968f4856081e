#include "atls/tls/stream.hpp"

#include <cerrno>
#include <cstdint>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "atls/tls/error.hpp"

#include <sys/socket.h>

namespace atls::tls {

namespace asio = boost::asio;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

bool is_ip_literal(const std::string& name) {
  boost::system::error_code ec;
  (void)asio::ip::make_address(name, ec);
  return !ec;
}

bool would_block(int error) {
  return error == EAGAIN || error == EWOULDBLOCK;
}

// One method table for every stream; OpenSSL keeps a pointer to it in each BIO.
BIO_METHOD* stream_bio_method(int (*read)(BIO*, char*, int), int (*write)(BIO*, const char*, int),
                              long (*ctrl)(BIO*, int, long, void*)) {
  static BIO_METHOD* const method = [&] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "atls socket");
    if (m == nullptr || BIO_meth_set_read(m, read) != 1 || BIO_meth_set_write(m, write) != 1 ||
        BIO_meth_set_ctrl(m, ctrl) != 1 || BIO_meth_set_create(m, [](BIO* bio) {
                                             BIO_set_init(bio, 1);
                                             return 1;
                                           }) != 1) {
      BIO_meth_free(m);
      return static_cast<BIO_METHOD*>(nullptr);
    }
    return m;
  }();
  return method;
}

}  // namespace

stream::stream(socket_type socket, context ctx)
    : socket_(std::move(socket)),
      context_(std::move(ctx)),
      key_done_(socket_.get_executor(), asio::steady_timer::time_point::max()) {
  ssl_ = SSL_new(context_.native_handle());
  if (ssl_ == nullptr) {
    throw std::bad_alloc();
  }
  BIO_METHOD* method = stream_bio_method(&stream::bio_read, &stream::bio_write, &stream::bio_ctrl);
  BIO* bio = method == nullptr ? nullptr : BIO_new(method);
  if (bio == nullptr) {
    SSL_free(ssl_);
    throw std::bad_alloc();
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);
  // Whole records in one read where the socket has them, instead of a header and a body.
  SSL_set_read_ahead(ssl_, 1);
  // Only for the handshake, the one place an external key signs; application data then flows
  // without the cost of entering a job per call.
  if (context_.has_external_key()) {
    if (SSL_set_async_callback(ssl_, &stream::on_key_done) != 1 ||
        SSL_set_async_callback_arg(ssl_, this) != 1) {
      SSL_free(ssl_);
      throw std::bad_alloc();
    }
    register_for_wakes();
  }
  // The BIO's reads and writes must never block; Asio's asynchronous operations ignore the flag.
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
    throw std::bad_alloc();
  }
}

stream::~stream() {
  unregister_for_wakes();
  SSL_free(ssl_);
}

int stream::bio_read(BIO* bio, char* data, int size) {
  auto* self = static_cast<stream*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  for (;;) {
    const auto n = ::recv(self->socket_.native_handle(), data, static_cast<std::size_t>(size), 0);
    if (n > 0) {
      return static_cast<int>(n);
    }
    if (n == 0) {
      self->eof_ = true;
      return 0;
    }
    if (errno == EINTR) {
      continue;
    }
    if (would_block(errno)) {
      BIO_set_retry_read(bio);
    } else {
      self->io_error_ = error_code(errno, boost::system::system_category());
    }
    return -1;
  }
}

int stream::bio_write(BIO* bio, const char* data, int size) {
  auto* self = static_cast<stream*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  return self->send_to_socket(bio, data, static_cast<std::size_t>(size));
}

int stream::send_to_socket(BIO* bio, const char* data, std::size_t size) {
  std::size_t sent = 0;
  // Bytes a read left behind go out first, or the peer would see records out of order.
  while (overflow_.empty() && sent < size) {
    const auto n = ::send(socket_.native_handle(), data + sent, size - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) {
      continue;
    }
    if (!would_block(errno)) {
      io_error_ = error_code(errno, boost::system::system_category());
      return -1;
    }
    break;
  }
  if (sent == size) {
    return static_cast<int>(size);
  }
  if (reading_) {
    overflow_.insert(overflow_.end(), data + sent, data + size);
    return static_cast<int>(size);
  }
  if (sent > 0) {
    return static_cast<int>(sent);
  }
  BIO_set_retry_write(bio);
  return -1;
}

long stream::bio_ctrl(BIO* bio, int command, long /*number*/, void* /*pointer*/) {
  switch (command) {
    case BIO_CTRL_FLUSH:
      return 1;  // every write already went to the socket or to overflow_
    case BIO_CTRL_EOF:
      return static_cast<stream*>(BIO_get_data(bio))->eof_ ? 1 : 0;
    case BIO_CTRL_WPENDING:
      return static_cast<long>(static_cast<stream*>(BIO_get_data(bio))->overflow_.size());
    default:
      return 0;
  }
}

error_code stream::fail(errc code) {
  detail_ = drain_openssl_errors();
  return code;
}

error_code stream::io_failure(errc otherwise) {
  if (io_error_) {
    detail_ = io_error_.message();
    return io_error_;
  }
  if (eof_) {
    detail_ = "TCP closed without TLS close_notify";
    ERR_clear_error();
    return errc::truncated;
  }
  return fail(otherwise);
}

void stream::send_overflow_now() {
  while (!overflow_.empty() && !io_error_) {
    const auto n =
        ::send(socket_.native_handle(), overflow_.data(), overflow_.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      if (!would_block(errno)) {
        io_error_ = error_code(errno, boost::system::system_category());
      }
      return;
    }
    overflow_.erase(overflow_.begin(), overflow_.begin() + n);
  }
}

asio::awaitable<error_code> stream::wait_writable() {
  for (;;) {
    send_overflow_now();
    if (io_error_) {
      co_return io_error_;
    }
    auto [ec] = co_await socket_.async_wait(socket_type::wait_write, use_tuple);
    if (ec) {
      co_return ec;
    }
    if (overflow_.empty()) {
      co_return error_code{};
    }
  }
}

asio::awaitable<std::tuple<error_code>> stream::wait_readable() {
  return socket_.async_wait(socket_type::wait_read, use_tuple);
}

namespace {

// The streams whose handshake an external key may wake, each with a generation. The TPM worker
// can wake a stream after it is gone: a signature that completed while the job was not paused
// (the job polls for it) still calls the wake-up. Such a late call must find nothing; looking
// the stream up, rather than trusting the pointer, is what makes it safe.
struct wakeable_streams {
  std::mutex mutex;
  std::unordered_map<const void*, std::uint64_t> live;
  std::uint64_t next = 0;
};

wakeable_streams& wakeable() {
  static wakeable_streams registry;
  return registry;
}

}  // namespace

void stream::register_for_wakes() {
  auto& r = wakeable();
  const std::lock_guard lock(r.mutex);
  r.live[this] = ++r.next;
}

void stream::unregister_for_wakes() noexcept {
  auto& r = wakeable();
  const std::lock_guard lock(r.mutex);
  r.live.erase(this);
}

int stream::on_key_done(SSL* /*ssl*/, void* self) {
  auto& r = wakeable();
  std::optional<asio::any_io_executor> executor;
  std::uint64_t generation = 0;
  {
    const std::lock_guard lock(r.mutex);
    const auto found = r.live.find(self);
    if (found == r.live.end()) {
      return 1;  // a late wake-up for a stream that has ended
    }
    generation = found->second;
    // The stream cannot end while the registry's lock is held (its destructor takes it).
    executor = static_cast<stream*>(self)->socket_.get_executor();
  }
  asio::post(*executor, [self, generation] {
    auto& registry = wakeable();
    const std::lock_guard lock(registry.mutex);
    const auto found = registry.live.find(self);
    if (found == registry.live.end() || found->second != generation) {
      return;
    }
    auto* s = static_cast<stream*>(self);
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
  if (!context_.has_external_key()) {
    if (SSL_set_async_callback(ssl_, &stream::on_key_done) != 1 ||
        SSL_set_async_callback_arg(ssl_, this) != 1) {
      return fail(errc::context_setup_failed);
    }
    register_for_wakes();
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
      // Before anything that can fail or be cancelled: the paused job and the key's completion
      // refer to this stream, so it must not end before the key is done.
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
      } else if (io_error_) {
        detail_ = "handshake: " + io_error_.message();
        co_return io_error_;
      } else if (eof_) {
        detail_.clear();
        co_return errc::handshake_eof;
      }
    } else if (status == SSL_ERROR_WANT_RETRY_VERIFY && !failure_record_.empty()) {
      // A verify callback stopped the handshake to end it with an alert of its own.
      ERR_clear_error();
      failed = errc::handshake_failed;
    }
    if (failed && !failure_record_.empty()) {
      detail_ = failure_detail_;
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
        if (auto ec = co_await wait_writable()) {
          detail_ = "sending handshake: " + ec.message();
          co_return ec;
        }
        continue;
      case SSL_ERROR_WANT_READ:
        if (auto [ec] = co_await wait_readable(); ec) {
          detail_ = "receiving handshake: " + ec.message();
          co_return ec;
        }
        continue;
      default:
        co_return failed ? failed : fail(errc::handshake_failed);
    }
  }
}

std::tuple<error_code, std::size_t> stream::try_read_some(asio::mutable_buffer buffer) {
  ERR_clear_error();
  std::size_t n = 0;
  // Whatever SSL has to send while reading (a KeyUpdate answer, an alert) must not block us.
  reading_ = true;
  const int r = SSL_read_ex(ssl_, buffer.data(), buffer.size(), &n);
  reading_ = false;
  if (r == 1) {
    send_overflow_now();
    return {error_code{}, n};
  }
  const int status = SSL_get_error(ssl_, r);
  switch (status) {
    case SSL_ERROR_ZERO_RETURN:
      return {error_code{asio::error::eof}, 0};
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:  // cannot happen while reading_: overflow_ takes everything
      send_overflow_now();
      return {error_code{asio::error::would_block}, 0};
    case SSL_ERROR_SYSCALL:
      return {io_failure(errc::protocol_error), 0};
    default: {
      // OpenSSL reports a received alert as reason SSL_AD_REASON_OFFSET + alert number. In
      // TLS 1.3 this is how a client learns that the server refused its certificate.
      const auto reason = static_cast<int>(ERR_GET_REASON(ERR_peek_error()));
      if (status == SSL_ERROR_SSL && reason >= SSL_AD_REASON_OFFSET) {
        note_received_alert();
        ERR_clear_error();
        detail_ = SSL_alert_desc_string_long(reason - SSL_AD_REASON_OFFSET);
        return {error_code{errc::peer_alert}, 0};
      }
      if (eof_ || io_error_) {
        return {io_failure(errc::protocol_error), 0};
      }
      const auto failed = fail(errc::protocol_error);
      send_overflow_now();  // our fatal alert, if SSL produced one
      return {failed, 0};
    }
  }
}

asio::awaitable<std::tuple<error_code, std::size_t>> stream::read_some(
    asio::mutable_buffer buffer) {
  for (;;) {
    auto [ec, n] = try_read_some(buffer);
    if (ec != asio::error::would_block) {
      co_return std::tuple{ec, n};
    }
    if (auto [wait] = co_await wait_readable(); wait) {
      co_return std::tuple{wait, std::size_t{0}};
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
    if (status == SSL_ERROR_SYSCALL) {
      co_return io_failure(errc::protocol_error);
    }
    if (status != SSL_ERROR_WANT_WRITE) {
      co_return fail(errc::protocol_error);
    }
    if (auto ec = co_await wait_writable()) {
      co_return ec;
    }
  }
  co_return error_code{};
}

asio::awaitable<error_code> stream::shutdown_send() {
  for (;;) {
    ERR_clear_error();
    const int r = SSL_shutdown(ssl_);
    // 0: our close_notify is sent and the peer's has not arrived; 1: both directions closed.
    if (r >= 0) {
      break;
    }
    const int status = SSL_get_error(ssl_, r);
    if (status == SSL_ERROR_SYSCALL) {
      co_return io_failure(errc::protocol_error);
    }
    if (status != SSL_ERROR_WANT_WRITE) {
      co_return fail(errc::protocol_error);
    }
    if (auto ec = co_await wait_writable()) {
      co_return ec;
    }
  }
  while (!overflow_.empty()) {
    if (auto ec = co_await wait_writable()) {
      co_return ec;
    }
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
