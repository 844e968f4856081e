// A TLS 1.3 connection driven from C++20 coroutines.
//
// Why not asio::ssl::stream: it cannot send close_notify without waiting for the peer's (so TLS
// half-close, RFC 8446 §6.1, is impossible), and its engine does not understand
// SSL_ERROR_WANT_ASYNC or WANT_RETRY_VERIFY, which the TPM-backed handshake needs.
//
// The SSL object reads and writes the non-blocking socket itself, through a BIO of ours: records
// go from the kernel into OpenSSL's record buffer and back with no intermediate copy, and an idle
// connection holds no buffer (SSL_MODE_RELEASE_BUFFERS). A memory BIO pair cost a copy of every
// byte each way and 34 KiB per connection for as long as it lived.
//
// Concurrency: one reader and one writer may be active at the same time (the two directions of a
// relay), both on the socket's executor, which must be a strand when the io_context runs on
// several threads. Every other call happens while neither is active. Only the write side ever
// waits for the socket to accept output; the read side never does (see read_some()).
//
// With an external key (a TPM key, context::has_external_key()), or after use_async_handshake()
// (intra-handshake attestation, whose callbacks pause for evidence and appraisal), the handshake
// runs as an OpenSSL ASYNC job that pauses while that work runs. OpenSSL can resume such a job
// only on the thread that started it, so the socket's executor must then be run by exactly one
// thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include "atls/common/result.hpp"
#include "atls/tls/context.hpp"
#include "atls/tls/error.hpp"

using SSL = struct ssl_st;
using BIO = struct bio_st;

namespace atls::tls {

class stream {
 public:
  using socket_type = boost::asio::generic::stream_protocol::socket;

  // Takes the connected socket. The role, trust and (for clients) the server name come from ctx,
  // which the stream keeps alive. Throws std::bad_alloc if OpenSSL cannot allocate.
  stream(socket_type socket, context ctx);
  ~stream();
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;
  stream(stream&&) = delete;
  stream& operator=(stream&&) = delete;

  // Runs the handshake to completion. Fails with errc::handshake_failed, peer_rejected,
  // handshake_eof, or the socket's error; error_detail() then says why, and received_alert()
  // names the peer's fatal alert when one ended it. While an external key signs (or a callback
  // paused the handshake, see use_async_handshake), cancellation waits for that work: the
  // paused job refers to this stream.
  boost::asio::awaitable<error_code> handshake();

  // Runs the handshake as an OpenSSL ASYNC job even without an external key, so that handshake
  // callbacks may pause it (ASYNC_pause_job) and wake it through the job's wait-context
  // callback, which posts to this stream's executor. Call before handshake(). Fails with
  // errc::context_setup_failed when OpenSSL refuses the callback.
  [[nodiscard]] error_code use_async_handshake();

  // For OpenSSL callbacks during handshake(): when this handshake fails, write `record` (a
  // complete TLS record, normally a fatal alert) to the socket after whatever OpenSSL produced,
  // and report `detail`. OpenSSL 3.0 sends no alert whose description it does not know, such as
  // the private-use alerts of the attestation drafts (tls1_alert_code() maps them to -1), so
  // their sender frames the record itself. A handshake that stopped at SSL_ERROR_WANT_RETRY_VERIFY
  // (a verify callback's SSL_set_retry_verify) counts as failed once a record is set.
  void send_on_handshake_failure(std::vector<std::uint8_t> record, std::string detail);

  // The description of the fatal alert the peer sent, once one ended the handshake or a read.
  [[nodiscard]] std::optional<std::uint8_t> received_alert() const { return received_alert_; }

  // Reads at least one byte of application data. Returns asio::error::eof once the peer's
  // close_notify arrived (its write side is closed; ours stays open), errc::truncated when TCP
  // closed without one, errc::protocol_error on a fatal alert.
  boost::asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
      boost::asio::mutable_buffer buffer);

  // What read_some() does, without waiting: fails with asio::error::would_block when no whole
  // record has arrived yet. With wait_readable(), lets a caller hold no buffer while idle.
  std::tuple<error_code, std::size_t> try_read_some(boost::asio::mutable_buffer buffer);

  // Completes when the socket has bytes to read (or an error or EOF to report). The socket's
  // own operation, not a coroutine around it: an idle relay waits here, and a frame would be
  // held for as long as it does.
  boost::asio::awaitable<std::tuple<error_code>> wait_readable();

  // Encrypts and sends the whole buffer; completes once the bytes are handed to the socket, so
  // a slow peer slows the caller (back-pressure).
  boost::asio::awaitable<error_code> write(boost::asio::const_buffer buffer);

  // Half-close: sends close_notify, then a TCP FIN. Reading stays possible.
  boost::asio::awaitable<error_code> shutdown_send();

  // Closes the socket at once; pending operations complete with an error.
  void close();

  socket_type& socket() { return socket_; }
  SSL* native_handle() { return ssl_; }  // borrowed

  // Human detail of the last failure (OpenSSL's reasons, the verify result). Never secret.
  [[nodiscard]] const std::string& error_detail() const { return detail_; }

  // "TLSv1.3 TLS_AES_128_GCM_SHA256" once the handshake is done, with " alpn=h2" when an
  // application protocol was negotiated.
  [[nodiscard]] std::string session_summary() const;

 private:
  // OpenSSL's BIO callbacks: the socket, read and written without blocking.
  static int bio_read(BIO* bio, char* data, int size);
  static int bio_write(BIO* bio, const char* data, int size);
  static long bio_ctrl(BIO* bio, int command, long number, void* pointer);
  int send_to_socket(BIO* bio, const char* data, std::size_t size);

  // Waits until the socket takes output, sending what a read left in overflow_ first.
  boost::asio::awaitable<error_code> wait_writable();
  void send_overflow_now();  // what the socket takes of overflow_ without waiting
  // The error of an SSL call that stopped on the socket (errc::truncated at EOF on a read).
  error_code io_failure(errc otherwise);
  error_code fail(errc code);  // records the detail for a failed SSL call
  // Records the peer's alert when the error queue's first entry is one; true if it was.
  bool note_received_alert();
  // Until the external key's operation that paused the handshake has finished.
  boost::asio::awaitable<void> wait_for_key();
  static int on_key_done(SSL* ssl, void* self);  // OpenSSL's async callback, on the key's thread
  // on_key_done() wakes only streams registered here, so that a late wake-up is harmless.
  void register_for_wakes();
  void unregister_for_wakes() noexcept;

  socket_type socket_;
  context context_;
  SSL* ssl_ = nullptr;
  // Output that SSL produced while reading (a KeyUpdate answer, an alert) and the socket did not
  // take at once. The reader never waits for output, or both ends of a relay could stop reading
  // while their writes wait for each other; the writer sends this first. Normally empty.
  std::vector<std::uint8_t> overflow_;
  bool reading_ = false;  // inside SSL_read: output goes to overflow_ rather than blocking
  bool eof_ = false;      // the socket reported end of stream
  error_code io_error_;   // the socket's last hard error
  std::string detail_;
  boost::asio::steady_timer key_done_;  // cancelled when the external key has finished
  bool key_done_pending_ = false;
  bool async_handshake_ = false;  // use_async_handshake() was called
  std::vector<std::uint8_t> failure_record_;
  std::string failure_detail_;
  std::optional<std::uint8_t> received_alert_;
};

}  // namespace atls::tls
