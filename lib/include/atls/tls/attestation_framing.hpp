// How post-handshake attestation travels on the TLS stream (RFC 9261 leaves the transport of
// requests and authenticators to the application, §4, §5). Codecs only, over bytes; the engine
// that runs the exchange comes with the handshake work of issue 5.
//
// Negotiation: the client offers post-handshake attestation in a ClientHello extension
// (attestation_code_points::post_handshake_extension) and the server accepts it by echoing the
// extension in EncryptedExtensions. Only then are both streams framed; a peer that knows nothing
// of atlsd never sees a frame, and a stripped offer is visible to the side whose policy needs
// attestation (it sees no echo, or no offer) so it can refuse.
//
// Framing: once negotiated, every byte of both directions is in a frame,
//   struct { uint8 type; uint24 length; opaque payload[length]; } Frame;
// so that a re-attestation request can arrive at any time between workload bytes. Workload
// bytes travel only in data frames, and a relying party forwards none before the first
// verdict it sends is "accepted".
//
// Every decoder parses untrusted bytes: pure, lengths checked before reading, no trailing bytes,
// caps enforced, failing with errc::malformed_attestation_extension (the offer) or
// errc::malformed_frame (frames).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "atls/common/result.hpp"
#include "atls/tls/error.hpp"

namespace atls::tls {

using bytes = std::vector<std::uint8_t>;

// ---------------------------------------------------------------------------------------------
// The offer: extension_data = uint8 version ‖ uint8 flags, in ClientHello and (echoed with the
// server's own flags) in EncryptedExtensions. Unknown flag bits and other versions are refused
// rather than ignored: the two ends must agree on what the framed stream carries.

inline constexpr std::uint8_t post_handshake_version = 1;

struct post_handshake_offer {
  bool will_attest = false;        // this side can answer authenticator requests with evidence
  bool wants_attestation = false;  // this side will send a request and wait for the answer

  bool operator==(const post_handshake_offer&) const = default;
};

[[nodiscard]] bytes encode_post_handshake_offer(const post_handshake_offer& offer);
// Fails with errc::malformed_attestation_extension: not exactly two bytes, another version,
// or flag bits other than the two defined.
[[nodiscard]] result<post_handshake_offer> decode_post_handshake_offer(
    std::span<const std::uint8_t> extension_data);

// ---------------------------------------------------------------------------------------------
// Frames.

enum class frame_type : std::uint8_t {
  data = 0,                   // workload bytes, 1..max_data_frame_size
  authenticator_request = 1,  // an RFC 9261 request, as tls::make_request encodes it
  authenticator = 2,          // an RFC 9261 authenticator, or the empty authenticator
  verdict = 3,                // the relying party's outcome for one request
};

// A data frame holds at most one TLS record's worth of plaintext, so framing never makes the
// relay buffer more than it already does.
inline constexpr std::size_t max_data_frame_size = 16384;
// A request is a context of at most 255 bytes and a few extensions.
inline constexpr std::size_t max_request_frame_size = 4096;
// tls::max_authenticator_size.
inline constexpr std::size_t max_authenticator_frame_size = std::size_t{1024} * 1024;
inline constexpr std::size_t frame_header_size = 4;

struct frame {
  frame_type type = frame_type::data;
  bytes payload;

  bool operator==(const frame&) const = default;
};

// The header and payload. Fails with errc::malformed_frame for a payload its type does not
// allow (empty, or over the type's cap).
[[nodiscard]] result<bytes> encode_frame(const frame& value);

// The header alone, for a writer that puts the payload after it in its own buffer. Fails like
// encode_frame for a size its type does not allow.
[[nodiscard]] result<std::array<std::uint8_t, frame_header_size>> encode_frame_header(
    frame_type type, std::size_t payload_size);

// The relying party's outcome for the request with this context: reason 0 is accepted,
// anything else the error value (category and code) that refused it, so that the attester's log
// says why. Payload: uint8 context length ‖ context ‖ uint16 reason.
struct verdict {
  bytes context;             // the request's certificate_request_context, 1..255 bytes
  std::uint16_t reason = 0;  // verdict_accepted, or a verdict_reason code
  bool operator==(const verdict&) const = default;
};

inline constexpr std::uint16_t verdict_accepted = 0;

[[nodiscard]] result<bytes> encode_verdict(const verdict& value);
// Fails with errc::malformed_frame.
[[nodiscard]] result<verdict> decode_verdict(std::span<const std::uint8_t> payload);

// Cuts frames out of a byte stream as it arrives. next() checks a header as soon as its four
// bytes are in, so a frame over its cap is refused before its payload is buffered; a caller
// that calls next() after each feed() of one read therefore buffers at most one frame plus one
// read, whatever the peer sends.
class frame_reader {
 public:
  // Appends bytes received from the TLS stream.
  void feed(std::span<const std::uint8_t> received);
  // The next complete frame, or nullopt when more bytes are needed. Fails with
  // errc::malformed_frame for an unknown type or a length its type does not allow; the reader
  // is then unusable (the connection must end).
  [[nodiscard]] result<std::optional<frame>> next();
  // Bytes received and not yet returned as frames.
  [[nodiscard]] std::size_t buffered() const noexcept { return buffer_.size() - consumed_; }

 private:
  bytes buffer_;
  std::size_t consumed_ = 0;
  bool failed_ = false;
};

}  // namespace atls::tls
