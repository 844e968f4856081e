#include "atls/tls/attestation_framing.hpp"

#include <utility>

namespace atls::tls {

namespace {

constexpr std::uint8_t will_attest_flag = 0x01;
constexpr std::uint8_t wants_attestation_flag = 0x02;
constexpr std::uint8_t known_flags = will_attest_flag | wants_attestation_flag;
constexpr std::size_t max_context_size = 255;

// The most a frame of this type may carry, or nullopt for a type byte we do not know.
std::optional<std::size_t> payload_cap(std::uint8_t type) {
  switch (type) {
    case static_cast<std::uint8_t>(frame_type::data):
      return max_data_frame_size;
    case static_cast<std::uint8_t>(frame_type::authenticator_request):
      return max_request_frame_size;
    case static_cast<std::uint8_t>(frame_type::authenticator):
      return max_authenticator_frame_size;
    case static_cast<std::uint8_t>(frame_type::verdict):
      return 1 + max_context_size + 2;
    default:
      return std::nullopt;
  }
}

}  // namespace

bytes encode_post_handshake_offer(const post_handshake_offer& offer) {
  std::uint8_t flags = 0;
  if (offer.will_attest) {
    flags |= will_attest_flag;
  }
  if (offer.wants_attestation) {
    flags |= wants_attestation_flag;
  }
  return {post_handshake_version, flags};
}

result<post_handshake_offer> decode_post_handshake_offer(
    std::span<const std::uint8_t> extension_data) {
  if (extension_data.size() != 2 || extension_data[0] != post_handshake_version ||
      (extension_data[1] & ~known_flags) != 0) {
    return errc::malformed_attestation_extension;
  }
  return post_handshake_offer{
      .will_attest = (extension_data[1] & will_attest_flag) != 0,
      .wants_attestation = (extension_data[1] & wants_attestation_flag) != 0};
}

result<std::array<std::uint8_t, frame_header_size>> encode_frame_header(frame_type type,
                                                                        std::size_t payload_size) {
  const auto cap = payload_cap(static_cast<std::uint8_t>(type));
  // An empty frame of any type means nothing, and refusing it keeps one encoding per meaning.
  if (!cap || payload_size == 0 || payload_size > *cap) {
    return errc::malformed_frame;
  }
  return std::array<std::uint8_t, frame_header_size>{
      static_cast<std::uint8_t>(type), static_cast<std::uint8_t>(payload_size >> 16),
      static_cast<std::uint8_t>(payload_size >> 8), static_cast<std::uint8_t>(payload_size)};
}

result<bytes> encode_frame(const frame& value) {
  auto header = encode_frame_header(value.type, value.payload.size());
  if (!header) {
    return header.error();
  }
  bytes out;
  out.reserve(frame_header_size + value.payload.size());
  out.assign(header->begin(), header->end());
  out.insert(out.end(), value.payload.begin(), value.payload.end());
  return out;
}

result<bytes> encode_verdict(const verdict& value) {
  if (value.context.empty() || value.context.size() > max_context_size) {
    return errc::malformed_frame;
  }
  bytes out;
  out.push_back(static_cast<std::uint8_t>(value.context.size()));
  out.insert(out.end(), value.context.begin(), value.context.end());
  out.push_back(static_cast<std::uint8_t>(value.reason >> 8));
  out.push_back(static_cast<std::uint8_t>(value.reason));
  return out;
}

result<verdict> decode_verdict(std::span<const std::uint8_t> payload) {
  if (payload.empty()) {
    return errc::malformed_frame;
  }
  const std::size_t context_size = payload[0];
  // Exactly length ‖ context ‖ reason: nothing missing, nothing after.
  if (context_size == 0 || payload.size() != 1 + context_size + 2) {
    return errc::malformed_frame;
  }
  verdict out;
  out.context.assign(payload.begin() + 1,
                     payload.begin() + 1 + static_cast<std::ptrdiff_t>(context_size));
  out.reason =
      static_cast<std::uint16_t>((payload[1 + context_size] << 8) | payload[2 + context_size]);
  return out;
}

void frame_reader::feed(std::span<const std::uint8_t> received) {
  if (failed_) {
    return;
  }
  // Drop what next() has handed out before growing, so the buffer holds only pending bytes.
  if (consumed_ > 0) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(consumed_));
    consumed_ = 0;
  }
  buffer_.insert(buffer_.end(), received.begin(), received.end());
}

result<std::optional<frame>> frame_reader::next() {
  if (failed_) {
    return errc::malformed_frame;
  }
  const std::span<const std::uint8_t> pending(buffer_.data() + consumed_,
                                              buffer_.size() - consumed_);
  if (pending.size() < frame_header_size) {
    return std::optional<frame>();
  }
  const std::size_t size =
      (std::size_t{pending[1]} << 16) | (std::size_t{pending[2]} << 8) | std::size_t{pending[3]};
  const auto cap = payload_cap(pending[0]);
  if (!cap || size == 0 || size > *cap) {
    failed_ = true;
    return errc::malformed_frame;
  }
  if (pending.size() - frame_header_size < size) {
    return std::optional<frame>();
  }
  frame out;
  out.type = static_cast<frame_type>(pending[0]);
  const auto body = pending.subspan(frame_header_size, size);
  out.payload.assign(body.begin(), body.end());
  consumed_ += frame_header_size + size;
  return std::optional<frame>(std::move(out));
}

}  // namespace atls::tls
