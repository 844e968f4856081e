// libFuzzer target for the post-handshake parsers: RFC 9261 authenticator requests and
// authenticators (lib/tls/exported_authenticator.cpp), and the framing they travel in
// (lib/tls/attestation_framing.cpp). Build and run: see README.md next to this file.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <utility>

#include "atls/tls/attestation_framing.hpp"
#include "atls/tls/exported_authenticator.hpp"

namespace atls::tls {
namespace {

void check(bool ok) {
  if (!ok) {
    std::abort();
  }
}

void request(std::span<const std::uint8_t> input) {
  const auto decoded = decode_request(input);
  if (!decoded) {
    check(decoded.error() == errc::malformed_authenticator);
    return;
  }
  // What decode accepts is well-formed: a context of 1..255 bytes, signature_algorithms with at
  // least one scheme, no extension twice.
  check(!decoded->context.empty() && decoded->context.size() <= 255);
  check(!requested_signature_schemes(*decoded).empty());
  for (const auto& e : decoded->extensions) {
    check(find_extension(decoded->extensions, e.type) == &e);
  }
  // Round trip: byte for byte, since every length is explicit and checked.
  const auto encoded = encode_request(*decoded);
  check(encoded.has_value() && encoded->size() == input.size() &&
        std::equal(encoded->begin(), encoded->end(), input.begin()));
}

void authenticator_message(std::span<const std::uint8_t> input) {
  const auto decoded = decode_authenticator(input);
  if (!decoded) {
    check(decoded.error() == errc::malformed_authenticator);
    return;
  }
  check(decoded->certificate.has_value() == decoded->certificate_verify.has_value());
  check(decoded->finished.size() >= min_finished_size &&
        decoded->finished.size() <= max_finished_size);
  if (decoded->certificate) {
    const auto& entries = decoded->certificate->entries;
    check(!entries.empty() && entries.size() <= max_certificates);
    for (const auto& entry : entries) {
      check(!entry.cert_data.empty() && entry.cert_data.size() <= max_certificate_size);
      check(entry.extensions.size() <= max_extensions);
    }
  }
  const auto encoded = encode_authenticator(*decoded);
  check(encoded.has_value() && encoded->size() == input.size() &&
        std::equal(encoded->begin(), encoded->end(), input.begin()));
}

// The framing: the offer and a verdict round-trip; the stream, fed in chunks whose sizes the
// input's first byte sets, yields the same frames as when fed whole, each re-encoding to the
// bytes it came from, and never buffers more than one frame plus one chunk.
void framing(std::span<const std::uint8_t> input) {
  if (const auto offer = decode_post_handshake_offer(input)) {
    const auto again = encode_post_handshake_offer(*offer);
    check(std::equal(again.begin(), again.end(), input.begin(), input.end()));
  }
  if (const auto decoded = decode_verdict(input)) {
    const auto again = encode_verdict(*decoded);
    check(again && std::equal(again->begin(), again->end(), input.begin(), input.end()));
  }
  if (input.empty()) {
    return;
  }
  const std::size_t chunk = 1 + input[0] % 64;
  const auto stream = input.subspan(1);
  frame_reader whole;
  whole.feed(stream);
  frame_reader pieces;
  std::size_t offset = 0;
  std::size_t position = 0;  // where the next frame starts in stream
  bool pieces_failed = false;
  for (;;) {
    auto next_whole = whole.next();
    std::optional<frame> next_piece;
    while (!pieces_failed) {
      auto got = pieces.next();
      if (!got) {
        pieces_failed = true;
        break;
      }
      if (*got) {
        next_piece = std::move(**got);
        break;
      }
      if (offset == stream.size()) {
        break;
      }
      const std::size_t n = std::min(chunk, stream.size() - offset);
      pieces.feed(stream.subspan(offset, n));
      offset += n;
      check(pieces.buffered() <= frame_header_size + max_authenticator_frame_size + chunk);
    }
    if (!next_whole) {
      check(pieces_failed);
      return;
    }
    if (!*next_whole) {
      check(!next_piece && !pieces_failed);
      return;
    }
    check(next_piece && *next_piece == **next_whole);
    const auto encoded = encode_frame(**next_whole);
    check(encoded.has_value() && encoded->size() <= stream.size() - position &&
          std::equal(encoded->begin(), encoded->end(),
                     stream.begin() + static_cast<std::ptrdiff_t>(position)));
    position += encoded->size();
  }
}

}  // namespace
}  // namespace atls::tls

// The entry point's name is libFuzzer's.
extern "C" int LLVMFuzzerTestOneInput(  // NOLINT(readability-identifier-naming)
    const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input(data, size);
  atls::tls::request(input);
  atls::tls::authenticator_message(input);
  atls::tls::framing(input);
  return 0;
}
