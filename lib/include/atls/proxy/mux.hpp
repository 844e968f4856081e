// Many workload connections over one attested TLS connection: HTTP/2 CONNECT tunnels (RFC 9113
// §8.5), the way Istio's ambient mesh carries HBONE. The attested connection is paid for once;
// every later workload connection to the same peer is one stream on it, with no handshake and no
// TPM operation. PROTOCOL-NOTES.md ("Multiplexing") says why the binding argument still holds.
//
// A tunnel drives libnghttp2 over a byte transport (a tls::stream or an attested_stream) from
// coroutines, and hands out streams that have the relay's leg interface (read_some, write,
// shutdown_send, close, reset, error_detail), so that a stream is relayed like a socket:
// END_STREAM is a half-close (a TCP FIN), RST_STREAM a reset.
//
// Flow control is HTTP/2's: a stream's window opens only as its reader takes the bytes, so a slow
// workload slows its own stream and no other. Received bytes wait in the stream, at most one
// stream window (stream_window) each.
//
// Concurrency: a tunnel, its streams and every coroutine that uses them run on one executor,
// which must not be run by several threads at once (a connection loop, net/event_loops.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>

#include "atls/common/result.hpp"
#include "atls/net/async_event.hpp"

using nghttp2_session = struct nghttp2_session;

namespace atls::proxy::mux {

enum class errc {
  tunnel_closed = 1,  // the tunnel's connection ended (detail: why)
  stream_reset,       // the peer reset the stream (RST_STREAM)
  refused,            // the peer answered CONNECT with another status than 200
  protocol_error,     // the peer broke HTTP/2
  no_more_streams,    // the tunnel takes no new stream (GOAWAY, or stream ids used up)
};

const boost::system::error_category& mux_category() noexcept;

inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), mux_category()};
}

// What a tunnel runs over. The stream must outlive tunnel::run().
class transport {
 public:
  transport() = default;
  virtual ~transport() = default;
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;
  transport(transport&&) = delete;
  transport& operator=(transport&&) = delete;

  virtual boost::asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
      boost::asio::mutable_buffer buffer) = 0;
  virtual boost::asio::awaitable<error_code> write(boost::asio::const_buffer buffer) = 0;
  [[nodiscard]] virtual const std::string& error_detail() const = 0;
};

// Any stream with the relay's read_some/write/error_detail as a transport.
template <class Stream>
class transport_over final : public transport {
 public:
  explicit transport_over(Stream& stream) : stream_(stream) {}
  boost::asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
      boost::asio::mutable_buffer buffer) override {
    return stream_.read_some(buffer);
  }
  boost::asio::awaitable<error_code> write(boost::asio::const_buffer buffer) override {
    return stream_.write(buffer);
  }
  [[nodiscard]] const std::string& error_detail() const override { return stream_.error_detail(); }

 private:
  Stream& stream_;
};

struct limits {
  // Streams the peer may open on our tunnel at once (SETTINGS_MAX_CONCURRENT_STREAMS).
  std::uint32_t max_streams = 256;
  // Bytes a stream's sender may have in flight to us (SETTINGS_INITIAL_WINDOW_SIZE), and the
  // whole tunnel's (the connection window). A stream holds at most stream_window unread.
  std::uint32_t stream_window = 256U * 1024;
  std::uint32_t tunnel_window = 16U * 1024 * 1024;
};

class tunnel;

// One tunnelled connection. Owned by its user; it keeps its tunnel's state alive, and ends the
// stream with RST_STREAM (CANCEL) when destroyed before it finished.
class stream {
 public:
  ~stream();
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;
  stream(stream&&) = delete;
  stream& operator=(stream&&) = delete;

  // At least one byte the peer sent; asio::error::eof after its END_STREAM.
  boost::asio::awaitable<std::tuple<error_code, std::size_t>> read_some(
      boost::asio::mutable_buffer buffer);
  // Completes once every byte is in a DATA frame on its way (back-pressure: a full flow-control
  // window waits). The buffer is not copied before that.
  boost::asio::awaitable<error_code> write(boost::asio::const_buffer buffer);
  // END_STREAM: the peer reads EOF. Completes once the frame carrying it has been produced.
  boost::asio::awaitable<error_code> shutdown_send();
  // RST_STREAM (CANCEL) if the stream is still open: the peer's side resets its connection.
  void close();
  void reset() { close(); }
  [[nodiscard]] const std::string& error_detail() const { return detail_; }

  // Inbound: answers the peer's CONNECT, with 200 (the upstream is connected; data may flow) or
  // an error status, which ends the stream.
  void accept();
  void refuse(unsigned status);

  // The peer's :authority, for a stream it opened (inbound).
  [[nodiscard]] const std::string& authority() const { return authority_; }
  [[nodiscard]] std::int32_t id() const { return id_; }

 private:
  friend class tunnel;  // and its callbacks, which fill and drain the stream
  explicit stream(std::shared_ptr<tunnel> owner);
  void fail(error_code ec, std::string detail);

  std::shared_ptr<tunnel> owner_;
  std::int32_t id_ = -1;
  std::string authority_;               // inbound: the peer's :authority
  std::string method_;                  // inbound: the peer's :method
  unsigned status_ = 0;                 // outbound: the peer's :status, once its answer arrived
  bool answered_ = false;               // inbound: accept() or refuse() was called
  bool refused_ = false;                // inbound: refuse() was called
  std::vector<std::uint8_t> received_;  // DATA not read yet
  std::size_t received_offset_ = 0;
  bool peer_ended_ = false;                 // the peer's END_STREAM arrived
  const std::uint8_t* outgoing_ = nullptr;  // write()'s buffer, until nghttp2 took it
  std::size_t outgoing_left_ = 0;
  bool end_requested_ = false;  // shutdown_send() was called
  bool end_sent_ = false;       // the frame with END_STREAM was produced
  bool closed_ = false;         // nghttp2 closed the stream (both ends, or a reset)
  error_code error_;
  std::string detail_;
  net::async_event changed_;
};

// One HTTP/2 connection carrying CONNECT streams.
class tunnel : public std::enable_shared_from_this<tunnel> {
 public:
  enum class role { client, server };

  // Throws std::bad_alloc when nghttp2 cannot allocate.
  static std::shared_ptr<tunnel> make(const boost::asio::any_io_executor& executor, role r,
                                      const limits& limits = {});
  ~tunnel();
  tunnel(const tunnel&) = delete;
  tunnel& operator=(const tunnel&) = delete;
  tunnel(tunnel&&) = delete;
  tunnel& operator=(tunnel&&) = delete;

  // Speaks HTTP/2 over `transport` until the connection ends: EOF or an error from it, a
  // protocol error, or go_away() once no stream is left. Returns why (no error: a clean end);
  // error_detail() says more. Every stream still open then fails with errc::tunnel_closed.
  // Once only.
  boost::asio::awaitable<error_code> run(transport& transport);

  // Client: a new stream to the peer, once it answered 200 to our CONNECT for `authority`.
  // `detail` says why it failed: errc::refused (the peer's status), no_more_streams,
  // tunnel_closed, or the stream's own error.
  boost::asio::awaitable<result<std::unique_ptr<stream>>> open(const std::string& authority,
                                                               std::string& detail);
  // Server: the next CONNECT from the peer; errc::tunnel_closed once the tunnel ended.
  boost::asio::awaitable<result<std::unique_ptr<stream>>> accept();

  // Takes no new stream (GOAWAY); run() ends once the open ones have finished.
  void go_away();
  // Ends the tunnel now: every stream fails with errc::tunnel_closed and `why`. For a tunnel
  // whose trust is gone (a refused re-attestation); run() must be cancelled too.
  void abort(const std::string& why);
  // Client: whether open() may be tried (the tunnel runs, no GOAWAY either way, stream ids and
  // the peer's concurrency limit left).
  [[nodiscard]] bool can_open() const;
  [[nodiscard]] std::size_t open_streams() const { return streams_.size(); }
  [[nodiscard]] bool ended() const { return ended_; }
  [[nodiscard]] bool role_is_server() const { return role_ == role::server; }
  [[nodiscard]] bool peer_going_away() const { return peer_going_away_; }
  [[nodiscard]] const std::string& error_detail() const { return detail_; }

  // Wakes when a stream opens or closes and when the tunnel ends.
  net::async_event& streams_changed() { return streams_changed_; }

  struct access;  // nghttp2's callbacks

 private:
  tunnel(const boost::asio::any_io_executor& executor, role r, const limits& limits);
  friend class stream;

  boost::asio::awaitable<error_code> read_loop(transport& transport);
  boost::asio::awaitable<error_code> write_loop(transport& transport);
  void wake_writer() { writer_wanted_.notify_all(); }
  void forget(stream& s);  // s is going away
  void end(const error_code& ec, const std::string& detail);

  boost::asio::any_io_executor executor_;
  role role_;
  limits limits_;
  nghttp2_session* h2_ = nullptr;
  std::map<std::int32_t, stream*> streams_;                   // open, by id
  std::vector<std::unique_ptr<stream>> incoming_;             // server: CONNECTs not accepted yet
  std::map<std::int32_t, std::unique_ptr<stream>> arriving_;  // server: headers still coming
  std::vector<std::uint8_t> out_;                             // frames being written
  net::async_event writer_wanted_;
  net::async_event incoming_changed_;
  net::async_event streams_changed_;
  bool running_ = false;
  bool going_away_ = false;       // go_away() was called
  bool peer_going_away_ = false;  // the peer's GOAWAY arrived
  bool ids_exhausted_ = false;
  bool protocol_failure_ = false;  // we sent GOAWAY with an error
  bool ended_ = false;
  error_code end_error_;
  std::string detail_;
};

}  // namespace atls::proxy::mux

template <>
struct boost::system::is_error_code_enum<atls::proxy::mux::errc> : std::true_type {};
