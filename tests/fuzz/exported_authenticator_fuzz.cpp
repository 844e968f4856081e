// libFuzzer target for the RFC 9261 codecs: authenticator requests and authenticators
// (lib/tls/exported_authenticator.cpp). Build and run: see README.md next to this file.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

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

}  // namespace
}  // namespace atls::tls

// The entry point's name is libFuzzer's.
extern "C" int LLVMFuzzerTestOneInput(  // NOLINT(readability-identifier-naming)
    const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input(data, size);
  atls::tls::request(input);
  atls::tls::authenticator_message(input);
  return 0;
}
