// HTTP/2 CONNECT tunnels over a byte transport: libnghttp2 as a sans-I/O state machine
// (mem_recv, mem_send) driven by one reading and one writing coroutine.
#include "atls/proxy/mux.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <new>
#include <string_view>
#include <utility>
#include <variant>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nghttp2/nghttp2.h>

namespace atls::proxy::mux {

namespace asio = boost::asio;
// Found by ordinary lookup only, which clang-tidy 14 does not count as a use.
using asio::experimental::awaitable_operators::operator||;  // NOLINT(misc-unused-using-decls)

namespace {

class category final : public boost::system::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "atls.mux"; }
  [[nodiscard]] std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::tunnel_closed:
        return "the tunnel's connection ended";
      case errc::stream_reset:
        return "the peer reset the tunnelled stream";
      case errc::refused:
        return "the peer refused the tunnelled stream";
      case errc::protocol_error:
        return "the peer broke the HTTP/2 protocol";
      case errc::no_more_streams:
        return "the tunnel takes no new stream";
    }
    return "unknown mux error";
  }
};

// Frames gathered before one write to the transport: a few TLS records' worth, so that small
// frames (WINDOW_UPDATE, HEADERS of several streams) share records and system calls.
constexpr std::size_t write_batch = std::size_t{64} * 1024;
constexpr std::size_t read_chunk = std::size_t{16} * 1024;
// An :authority longer than this is refused: it is only logged, and a DNS name fits in 253.
constexpr std::size_t max_authority = 1024;
// nghttp2's reasons are kept for the log (which quotes them), this long at most.
constexpr std::size_t max_detail = 200;

nghttp2_nv header(std::string_view name, std::string_view value) {
  // nghttp2 takes non-const pointers but, with NO_COPY flags unset, only reads and copies them.
  return nghttp2_nv{
      .name = const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>(name.data())),
      .value = const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>(value.data())),
      .namelen = name.size(),
      .valuelen = value.size(),
      .flags = NGHTTP2_NV_FLAG_NONE,
  };
}

}  // namespace

const boost::system::error_category& mux_category() noexcept {
  static const category instance;
  return instance;
}

// ---------------------------------------------------------------------------------------------
// nghttp2's callbacks. `user` is the tunnel; streams are found by id in tunnel::streams_.

struct tunnel::access {
  static tunnel& of(void* user) { return *static_cast<tunnel*>(user); }

  static stream* find(tunnel& t, std::int32_t id) {
    const auto it = t.streams_.find(id);
    return it == t.streams_.end() ? nullptr : it->second;
  }

  static int on_begin_headers(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                              void* user) {
    auto& t = of(user);
    if (t.role_ != role::server || frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;
    }
    const auto id = frame->hd.stream_id;
    std::unique_ptr<stream> s(new stream(t.shared_from_this()));
    s->id_ = id;
    t.streams_[id] = s.get();
    t.arriving_[id] = std::move(s);
    return 0;
  }

  static int on_header(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                       const std::uint8_t* name, std::size_t name_size, const std::uint8_t* value,
                       std::size_t value_size, std::uint8_t /*flags*/, void* user) {
    auto& t = of(user);
    auto* s = find(t, frame->hd.stream_id);
    if (s == nullptr || frame->hd.type != NGHTTP2_HEADERS) {
      return 0;
    }
    const std::string_view n(reinterpret_cast<const char*>(name), name_size);
    const std::string_view v(reinterpret_cast<const char*>(value), value_size);
    if (t.role_ == role::server) {
      if (n == ":method") {
        s->method_ = v;
      } else if (n == ":authority") {
        if (v.size() > max_authority) {
          return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // nghttp2 resets the stream
        }
        s->authority_ = v;
      }
      return 0;
    }
    if (n == ":status" && v.size() == 3 &&
        std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      s->status_ = static_cast<unsigned>((v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0'));
    }
    return 0;
  }

  static int on_frame_recv(nghttp2_session* /*session*/, const nghttp2_frame* frame, void* user) {
    auto& t = of(user);
    switch (frame->hd.type) {
      case NGHTTP2_GOAWAY:
        t.peer_going_away_ = true;
        t.streams_changed_.notify_all();
        return 0;
      case NGHTTP2_HEADERS:
      case NGHTTP2_DATA:
        break;
      default:
        return 0;
    }
    auto* s = find(t, frame->hd.stream_id);
    if (s == nullptr) {
      return 0;
    }
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      s->peer_ended_ = true;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && t.role_ == role::server &&
        frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      const auto it = t.arriving_.find(frame->hd.stream_id);
      if (it != t.arriving_.end()) {
        auto arrived = std::move(it->second);
        t.arriving_.erase(it);
        if (arrived->method_ != "CONNECT") {
          // Only tunnels are served here: an ordinary request is a peer that is not atlsd.
          arrived->refuse(405);
          return 0;  // `arrived` resets the stream as it goes
        }
        t.incoming_.push_back(std::move(arrived));
        t.incoming_changed_.notify_all();
        t.streams_changed_.notify_all();
      }
      return 0;
    }
    s->changed_.notify_all();
    return 0;
  }

  static int on_data_chunk_recv(nghttp2_session* session, std::uint8_t /*flags*/,
                                std::int32_t stream_id, const std::uint8_t* data, std::size_t size,
                                void* user) {
    auto& t = of(user);
    auto* s = find(t, stream_id);
    if (s == nullptr || s->error_) {
      // Nobody will read it: give the tunnel's window back at once.
      nghttp2_session_consume_connection(session, size);
      return 0;
    }
    s->received_.insert(s->received_.end(), data, data + size);
    s->changed_.notify_all();
    return 0;
  }

  static int on_stream_close(nghttp2_session* /*session*/, std::int32_t stream_id,
                             std::uint32_t error_code, void* user) {
    auto& t = of(user);
    auto* s = find(t, stream_id);
    if (s == nullptr) {
      return 0;
    }
    s->closed_ = true;
    if (error_code != NGHTTP2_NO_ERROR) {
      s->fail(make_error_code(errc::stream_reset),
              "reset by the peer (HTTP/2 error " + std::to_string(error_code) + ")");
    }
    t.streams_.erase(stream_id);
    s->changed_.notify_all();
    t.streams_changed_.notify_all();
    t.arriving_.erase(stream_id);  // a request that never completed; `s` may be gone now
    return 0;
  }

  // The data provider of every stream: DATA comes straight from the buffer write() lent.
  static ssize_t read_data(nghttp2_session* /*session*/, std::int32_t stream_id, std::uint8_t* out,
                           std::size_t size, std::uint32_t* flags, nghttp2_data_source* /*source*/,
                           void* user) {
    auto& t = of(user);
    auto* s = find(t, stream_id);
    if (s == nullptr) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // its owner is gone: the stream is reset
    }
    if (s->outgoing_left_ > 0) {
      const auto n = std::min(size, s->outgoing_left_);
      std::memcpy(out, s->outgoing_, n);
      s->outgoing_ += n;
      s->outgoing_left_ -= n;
      if (s->outgoing_left_ == 0) {
        s->outgoing_ = nullptr;
        s->changed_.notify_all();
      }
      return static_cast<ssize_t>(n);
    }
    if (s->end_requested_) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      s->end_sent_ = true;
      s->changed_.notify_all();
      return 0;
    }
    return NGHTTP2_ERR_DEFERRED;
  }

  static int on_frame_send(nghttp2_session* /*session*/, const nghttp2_frame* frame, void* user) {
    auto& t = of(user);
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR &&
        !t.protocol_failure_) {
      t.protocol_failure_ = true;
      if (t.detail_.empty()) {
        t.detail_ = "sent GOAWAY (HTTP/2 error " + std::to_string(frame->goaway.error_code) + ")";
      }
    }
    return 0;
  }

  static int on_error(nghttp2_session* /*session*/, int /*code*/, const char* message,
                      std::size_t size, void* user) {
    auto& t = of(user);
    t.detail_.assign(message, std::min(size, max_detail));
    return 0;
  }
};

// ---------------------------------------------------------------------------------------------

stream::stream(std::shared_ptr<tunnel> owner)
    : owner_(std::move(owner)), changed_(owner_->executor_) {}

stream::~stream() {
  close();
  owner_->forget(*this);
}

void stream::fail(error_code ec, std::string detail) {
  if (!error_) {
    error_ = ec;
    detail_ = std::move(detail);
  }
  changed_.notify_all();
}

asio::awaitable<std::tuple<error_code, std::size_t>> stream::read_some(
    asio::mutable_buffer buffer) {
  for (;;) {
    if (received_offset_ < received_.size()) {
      const auto n = std::min(buffer.size(), received_.size() - received_offset_);
      std::memcpy(buffer.data(), received_.data() + received_offset_, n);
      received_offset_ += n;
      if (received_offset_ == received_.size()) {
        received_.clear();
        received_offset_ = 0;
      }
      if (!owner_->ended_) {
        // The window opens only as the reader takes bytes: a slow workload stalls its stream.
        nghttp2_session_consume(owner_->h2_, id_, n);
        owner_->wake_writer();
      }
      co_return std::tuple{error_code{}, n};
    }
    if (peer_ended_) {
      co_return std::tuple{error_code(asio::error::eof), std::size_t{0}};
    }
    if (error_) {
      co_return std::tuple{error_, std::size_t{0}};
    }
    if (closed_) {  // closed without END_STREAM from the peer: not a clean end
      co_return std::tuple{make_error_code(errc::stream_reset), std::size_t{0}};
    }
    if (!co_await changed_.wait()) {
      co_return std::tuple{error_code(asio::error::operation_aborted), std::size_t{0}};
    }
  }
}

asio::awaitable<error_code> stream::write(asio::const_buffer buffer) {
  if (error_) {
    co_return error_;
  }
  if (end_requested_ || closed_) {
    co_return error_code(asio::error::broken_pipe);
  }
  if (buffer.size() == 0) {
    co_return error_code{};
  }
  outgoing_ = static_cast<const std::uint8_t*>(buffer.data());
  outgoing_left_ = buffer.size();
  nghttp2_session_resume_data(owner_->h2_, id_);
  owner_->wake_writer();
  bool waited = true;
  while (outgoing_left_ > 0 && !error_ && !closed_ && waited) {
    waited = co_await changed_.wait();
  }
  const bool done = outgoing_left_ == 0;
  // The buffer is the caller's: nghttp2 must never read it after this returns.
  outgoing_ = nullptr;
  outgoing_left_ = 0;
  if (done) {
    co_return error_code{};
  }
  // One named result, not a conditional in co_return: GCC 12 miscompiled that shape here.
  error_code failed = error_;
  if (!failed) {
    failed =
        waited ? make_error_code(errc::stream_reset) : error_code(asio::error::operation_aborted);
  }
  co_return failed;
}

asio::awaitable<error_code> stream::shutdown_send() {
  if (error_) {
    co_return error_;
  }
  if (!end_requested_) {
    end_requested_ = true;
    nghttp2_session_resume_data(owner_->h2_, id_);
    owner_->wake_writer();
  }
  while (!end_sent_ && !error_ && !closed_) {
    if (!co_await changed_.wait()) {
      co_return error_code(asio::error::operation_aborted);
    }
  }
  error_code failed = error_;
  if (!failed && !end_sent_) {
    failed = make_error_code(errc::stream_reset);
  }
  co_return failed;
}

void stream::close() {
  if (closed_ || id_ < 0 || owner_->ended_) {
    return;
  }
  closed_ = true;
  // After refuse(), the answer has said it all; a reset could overtake it (nghttp2 sends
  // RST_STREAM ahead of queued HEADERS), and the peer resets the stream itself.
  if (!refused_) {
    nghttp2_submit_rst_stream(owner_->h2_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_CANCEL);
  }
  owner_->forget(*this);
  owner_->wake_writer();
  fail(error_code(asio::error::operation_aborted), "closed");
}

void stream::accept() {
  if (answered_ || owner_->ended_ || closed_) {
    return;
  }
  answered_ = true;
  nghttp2_data_provider provider{};
  provider.read_callback = &tunnel::access::read_data;
  const std::array headers{header(":status", "200")};
  nghttp2_submit_response(owner_->h2_, id_, headers.data(), headers.size(), &provider);
  owner_->wake_writer();
}

void stream::refuse(unsigned status) {
  if (answered_ || owner_->ended_ || closed_) {
    return;
  }
  answered_ = true;
  refused_ = true;
  end_requested_ = true;
  const auto code = std::to_string(std::clamp(status, 400U, 599U));
  const std::array headers{header(":status", code)};
  nghttp2_submit_response(owner_->h2_, id_, headers.data(), headers.size(), nullptr);
  owner_->wake_writer();
}

// ---------------------------------------------------------------------------------------------

namespace {

struct callbacks_deleter {
  void operator()(nghttp2_session_callbacks* p) const { nghttp2_session_callbacks_del(p); }
};
struct option_deleter {
  void operator()(nghttp2_option* p) const { nghttp2_option_del(p); }
};

}  // namespace

std::shared_ptr<tunnel> tunnel::make(const asio::any_io_executor& executor, role r,
                                     const limits& limits) {
  return std::shared_ptr<tunnel>(new tunnel(executor, r, limits));
}

tunnel::tunnel(const asio::any_io_executor& executor, role r, const mux::limits& limits)
    : executor_(executor),
      role_(r),
      limits_(limits),
      writer_wanted_(executor),
      incoming_changed_(executor),
      streams_changed_(executor) {
  nghttp2_session_callbacks* raw_callbacks = nullptr;
  if (nghttp2_session_callbacks_new(&raw_callbacks) != 0) {
    throw std::bad_alloc();
  }
  const std::unique_ptr<nghttp2_session_callbacks, callbacks_deleter> callbacks(raw_callbacks);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks.get(),
                                                          &access::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(callbacks.get(), &access::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks.get(), &access::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks.get(),
                                                            &access::on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks.get(), &access::on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(callbacks.get(), &access::on_frame_send);
  nghttp2_session_callbacks_set_error_callback2(callbacks.get(), &access::on_error);

  nghttp2_option* raw_option = nullptr;
  if (nghttp2_option_new(&raw_option) != 0) {
    throw std::bad_alloc();
  }
  const std::unique_ptr<nghttp2_option, option_deleter> option(raw_option);
  // Windows open as readers take bytes (stream::read_some), not as frames arrive.
  nghttp2_option_set_no_auto_window_update(option.get(), 1);

  const int rv = role_ == role::client
                     ? nghttp2_session_client_new2(&h2_, callbacks.get(), this, option.get())
                     : nghttp2_session_server_new2(&h2_, callbacks.get(), this, option.get());
  if (rv != 0) {
    throw std::bad_alloc();
  }
}

tunnel::~tunnel() {
  nghttp2_session_del(h2_);
}

bool tunnel::can_open() const {
  if (role_ != role::client || !running_ || ended_ || going_away_ || peer_going_away_ ||
      ids_exhausted_) {
    return false;
  }
  const auto peer_limit =
      nghttp2_session_get_remote_settings(h2_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  return streams_.size() < peer_limit;
}

void tunnel::go_away() {
  if (going_away_ || ended_) {
    return;
  }
  going_away_ = true;
  nghttp2_submit_goaway(h2_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h2_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
  wake_writer();
  streams_changed_.notify_all();
  incoming_changed_.notify_all();
}

void tunnel::abort(const std::string& why) {
  if (!ended_) {
    end(make_error_code(errc::tunnel_closed), why);
    wake_writer();
  }
}

void tunnel::forget(stream& s) {
  const auto it = streams_.find(s.id_);
  if (it != streams_.end() && it->second == &s) {
    streams_.erase(it);
    streams_changed_.notify_all();
    wake_writer();
  }
}

void tunnel::end(const error_code& ec, const std::string& detail) {
  ended_ = true;
  end_error_ = ec;
  const auto open = std::exchange(streams_, {});
  for (const auto& [id, s] : open) {
    s->fail(make_error_code(errc::tunnel_closed),
            detail.empty() ? std::string("the tunnel ended") : "the tunnel ended: " + detail);
  }
  // Streams never handed out hold this tunnel: let them go (their destructors see ended_).
  auto unclaimed = std::exchange(incoming_, {});
  auto partial = std::exchange(arriving_, {});
  unclaimed.clear();
  partial.clear();
  incoming_changed_.notify_all();
  streams_changed_.notify_all();
}

asio::awaitable<error_code> tunnel::run(transport& transport) {
  running_ = true;
  std::vector<nghttp2_settings_entry> settings{
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits_.stream_window},
  };
  if (role_ == role::client) {
    settings.push_back({NGHTTP2_SETTINGS_ENABLE_PUSH, 0});
  }
  nghttp2_submit_settings(h2_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  nghttp2_session_set_local_window_size(h2_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<std::int32_t>(limits_.tunnel_window));
  auto finished = co_await (read_loop(transport) || write_loop(transport));
  auto ec = std::visit([](const error_code& e) { return e; }, finished);
  if (!ec && protocol_failure_) {
    ec = make_error_code(errc::protocol_error);
  }
  if (!ended_) {
    end(ec, detail_);
  }
  co_return ec;
}

asio::awaitable<error_code> tunnel::read_loop(transport& transport) {
  std::vector<std::uint8_t> buffer(read_chunk);
  for (;;) {
    auto [ec, n] = co_await transport.read_some(asio::buffer(buffer));
    if (ec == asio::error::eof) {
      if (streams_.empty() && incoming_.empty() && (peer_going_away_ || going_away_)) {
        co_return error_code{};
      }
      if (detail_.empty()) {
        detail_ = "the peer closed the connection with streams open";
      }
      co_return make_error_code(errc::tunnel_closed);
    }
    if (ec) {
      if (detail_.empty()) {
        detail_ = transport.error_detail().empty() ? ec.message()
                                                   : ec.message() + ": " + transport.error_detail();
      }
      co_return ec;
    }
    const auto used = nghttp2_session_mem_recv(h2_, buffer.data(), n);
    if (used < 0) {
      if (detail_.empty()) {
        detail_ = nghttp2_strerror(static_cast<int>(used));
      }
      co_return make_error_code(errc::protocol_error);
    }
    wake_writer();
  }
}

asio::awaitable<error_code> tunnel::write_loop(transport& transport) {
  for (;;) {
    if (ended_) {  // abort()
      co_return make_error_code(errc::tunnel_closed);
    }
    out_.clear();
    while (out_.size() < write_batch) {
      const std::uint8_t* frames = nullptr;
      const auto n = nghttp2_session_mem_send(h2_, &frames);
      if (n < 0) {
        if (detail_.empty()) {
          detail_ = nghttp2_strerror(static_cast<int>(n));
        }
        co_return make_error_code(errc::protocol_error);
      }
      if (n == 0) {
        break;
      }
      out_.insert(out_.end(), frames, frames + n);
    }
    if (!out_.empty()) {
      if (auto ec = co_await transport.write(asio::buffer(out_))) {
        if (detail_.empty()) {
          detail_ = transport.error_detail().empty()
                        ? ec.message()
                        : ec.message() + ": " + transport.error_detail();
        }
        co_return ec;
      }
      continue;
    }
    if (nghttp2_session_want_read(h2_) == 0 && nghttp2_session_want_write(h2_) == 0) {
      co_return error_code{};  // both sides said GOAWAY and nothing is left, or a fatal error
    }
    if (going_away_ && streams_.empty() && incoming_.empty()) {
      co_return error_code{};
    }
    if (!co_await writer_wanted_.wait()) {
      co_return error_code(asio::error::operation_aborted);
    }
  }
}

asio::awaitable<result<std::unique_ptr<stream>>> tunnel::open(const std::string& authority,
                                                              std::string& detail) {
  if (!can_open()) {
    detail = ended_ ? detail_ : "the tunnel is full or going away";
    const auto why = ended_ ? errc::tunnel_closed : errc::no_more_streams;
    co_return make_error_code(why);
  }
  std::unique_ptr<stream> s(new stream(shared_from_this()));
  nghttp2_data_provider provider{};
  provider.read_callback = &access::read_data;
  const std::array headers{header(":method", "CONNECT"), header(":authority", authority)};
  const auto id =
      nghttp2_submit_request(h2_, nullptr, headers.data(), headers.size(), &provider, nullptr);
  if (id < 0) {
    if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
      ids_exhausted_ = true;
    }
    detail = nghttp2_strerror(id);
    co_return make_error_code(errc::no_more_streams);
  }
  s->id_ = id;
  streams_[id] = s.get();
  streams_changed_.notify_all();
  wake_writer();
  while (s->status_ == 0 && !s->error_ && !s->closed_) {
    if (!co_await s->changed_.wait()) {
      co_return error_code(asio::error::operation_aborted);
    }
  }
  // The answer decides, even when a reset followed it in the same read: a refusal is a refusal,
  // and after a 200 the stream's own reads report the reset.
  if (s->status_ == 200) {
    co_return s;
  }
  if (s->status_ != 0) {
    detail = "the peer answered " + std::to_string(s->status_);
    co_return make_error_code(errc::refused);
  }
  detail = s->error_ ? s->detail_ : std::string("the peer closed the stream without an answer");
  const auto failed = s->error_ ? s->error_ : make_error_code(errc::refused);
  co_return failed;
}

asio::awaitable<result<std::unique_ptr<stream>>> tunnel::accept() {
  for (;;) {
    if (!incoming_.empty()) {
      auto s = std::move(incoming_.front());
      incoming_.erase(incoming_.begin());
      co_return s;
    }
    if (ended_ || going_away_) {
      co_return make_error_code(errc::tunnel_closed);
    }
    if (!co_await incoming_changed_.wait()) {
      co_return error_code(asio::error::operation_aborted);
    }
  }
}

}  // namespace atls::proxy::mux
