// The framing that carries post-handshake attestation on the TLS stream: the offer that
// switches it on, frames, verdicts, and a reader that cuts frames out of whatever chunks the
// stream delivers without letting a peer make it buffer without bound.
#include "atls/tls/attestation_framing.hpp"

#include <algorithm>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

namespace atls::tls {
namespace {

bytes framed(frame_type type, const bytes& payload) {
  const auto encoded = encode_frame({.type = type, .payload = payload});
  REQUIRE(encoded.has_value());
  return *encoded;
}

TEST_CASE("the post-handshake offer is a version byte and two flags, both ways") {
  for (const bool attest : {false, true}) {
    for (const bool want : {false, true}) {
      const post_handshake_offer offer{.will_attest = attest, .wants_attestation = want};
      const auto encoded = encode_post_handshake_offer(offer);
      CHECK(encoded.size() == 2);
      CHECK(encoded[0] == post_handshake_version);
      const auto decoded = decode_post_handshake_offer(encoded);
      REQUIRE(decoded.has_value());
      CHECK(*decoded == offer);
    }
  }
  CHECK(encode_post_handshake_offer({.will_attest = true}) == bytes{1, 0x01});
  CHECK(encode_post_handshake_offer({.wants_attestation = true}) == bytes{1, 0x02});
}

TEST_CASE("an offer of another version, unknown flags or another length is refused") {
  for (const bytes& bad : {bytes{}, bytes{1}, bytes{1, 0, 0}, bytes{2, 0x01}, bytes{0, 0x01},
                           bytes{1, 0x04}, bytes{1, 0x83}}) {
    const auto decoded = decode_post_handshake_offer(bad);
    REQUIRE_FALSE(decoded.has_value());
    CHECK(decoded.error() == errc::malformed_attestation_extension);
  }
}

TEST_CASE("a frame is a type byte, a 24-bit length and the payload") {
  CHECK(framed(frame_type::data, {'h', 'i'}) == bytes{0, 0, 0, 2, 'h', 'i'});
  CHECK(framed(frame_type::authenticator_request, {7}) == bytes{1, 0, 0, 1, 7});
  const auto big = framed(frame_type::authenticator, bytes(0x012345, 0xAB));
  CHECK(bytes(big.begin(), big.begin() + 4) == bytes{2, 0x01, 0x23, 0x45});
}

TEST_CASE("frames that are empty or over their type's cap are not written") {
  for (const auto type : {frame_type::data, frame_type::authenticator_request,
                          frame_type::authenticator, frame_type::verdict}) {
    CHECK(encode_frame({.type = type, .payload = {}}).error() == errc::malformed_frame);
  }
  CHECK(encode_frame({.type = frame_type::data, .payload = bytes(max_data_frame_size, 1)})
            .has_value());
  CHECK(encode_frame({.type = frame_type::data, .payload = bytes(max_data_frame_size + 1, 1)})
            .error() == errc::malformed_frame);
  CHECK(encode_frame({.type = frame_type::authenticator_request,
                      .payload = bytes(max_request_frame_size + 1, 1)})
            .error() == errc::malformed_frame);
  CHECK(encode_frame({.type = frame_type::authenticator,
                      .payload = bytes(max_authenticator_frame_size + 1, 1)})
            .error() == errc::malformed_frame);
  CHECK(encode_frame({.type = static_cast<frame_type>(9), .payload = {1}}).error() ==
        errc::malformed_frame);
}

TEST_CASE("a verdict names the request it answers and why it was refused") {
  const verdict refused{.context = bytes(32, 0x5A), .reason = 0x1234};
  const auto payload = encode_verdict(refused);
  REQUIRE(payload.has_value());
  CHECK(payload->size() == 1 + 32 + 2);
  CHECK(payload->front() == 32);
  CHECK(payload->back() == 0x34);
  const auto decoded = decode_verdict(*payload);
  REQUIRE(decoded.has_value());
  CHECK(*decoded == refused);

  const auto accepted = decode_verdict(bytes{1, 9, 0, 0});
  REQUIRE(accepted.has_value());
  CHECK(accepted->reason == verdict_accepted);
}

TEST_CASE("a verdict that is truncated, extended or without a context is refused") {
  const auto payload = encode_verdict({.context = bytes(8, 1), .reason = 3});
  REQUIRE(payload.has_value());
  for (std::size_t n = 0; n < payload->size(); ++n) {
    CHECK(
        decode_verdict(bytes(payload->begin(), payload->begin() + static_cast<long>(n))).error() ==
        errc::malformed_frame);
  }
  auto extended = *payload;
  extended.push_back(0);
  CHECK(decode_verdict(extended).error() == errc::malformed_frame);
  CHECK(decode_verdict(bytes{0, 0, 0}).error() == errc::malformed_frame);
  CHECK(encode_verdict({.context = {}, .reason = 0}).error() == errc::malformed_frame);
  CHECK(encode_verdict({.context = bytes(256, 1), .reason = 0}).error() == errc::malformed_frame);
}

TEST_CASE("the reader yields the same frames whatever chunks the stream arrives in") {
  bytes stream;
  const std::vector<frame> sent{
      {.type = frame_type::authenticator_request, .payload = bytes(40, 1)},
      {.type = frame_type::data, .payload = {'G', 'E', 'T'}},
      {.type = frame_type::authenticator, .payload = bytes(3000, 2)},
      {.type = frame_type::verdict, .payload = {1, 9, 0, 0}},
  };
  for (const auto& f : sent) {
    const auto encoded = framed(f.type, f.payload);
    stream.insert(stream.end(), encoded.begin(), encoded.end());
  }
  for (const std::size_t chunk :
       {std::size_t{1}, std::size_t{3}, std::size_t{4}, std::size_t{1000}, stream.size()}) {
    CAPTURE(chunk);
    frame_reader reader;
    std::vector<frame> received;
    for (std::size_t offset = 0; offset < stream.size(); offset += chunk) {
      const auto end = std::min(stream.size(), offset + chunk);
      reader.feed(std::span(stream).subspan(offset, end - offset));
      for (;;) {
        auto next = reader.next();
        REQUIRE(next.has_value());
        if (!*next) {
          break;
        }
        received.push_back(std::move(**next));
      }
    }
    CHECK(received == sent);
    CHECK(reader.buffered() == 0);
  }
}

TEST_CASE("a frame header over its cap is refused before its payload is buffered") {
  frame_reader reader;
  // An authenticator_request announcing 16 MiB - 1: refused on its four header bytes.
  reader.feed(bytes{1, 0xFF, 0xFF, 0xFF});
  const auto next = reader.next();
  REQUIRE_FALSE(next.has_value());
  CHECK(next.error() == errc::malformed_frame);
  // The reader stays failed: the connection must end, nothing after is trusted.
  reader.feed(framed(frame_type::data, {1}));
  CHECK(reader.next().error() == errc::malformed_frame);
}

TEST_CASE("unknown frame types and empty frames break the stream") {
  for (const bytes& header : {bytes{4, 0, 0, 1, 0}, bytes{0xFF, 0, 0, 1, 0}, bytes{0, 0, 0, 0},
                              bytes{3, 0, 0, 0}, bytes{0, 0, 0x40, 0x01}}) {
    frame_reader reader;
    reader.feed(header);
    CHECK(reader.next().error() == errc::malformed_frame);
  }
}

TEST_CASE("an incomplete frame waits for more bytes without failing") {
  frame_reader reader;
  const auto encoded = framed(frame_type::data, bytes(100, 7));
  reader.feed(std::span(encoded).first(50));
  const auto partial = reader.next();
  REQUIRE(partial.has_value());
  CHECK_FALSE(partial->has_value());
  CHECK(reader.buffered() == 50);
  reader.feed(std::span(encoded).subspan(50));
  const auto whole = reader.next();
  REQUIRE(whole.has_value());
  REQUIRE(whole->has_value());
  CHECK((*whole)->payload == bytes(100, 7));
}

}  // namespace
}  // namespace atls::tls
