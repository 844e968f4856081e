// libFuzzer target for the PROXY protocol v2 header codec (lib/proxy/proxy_protocol.cpp): the
// writer's round trip over headers built from the input, and the strict decoder over the raw
// input. Build and run: see README.md next to this file.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>

#include <boost/asio/ip/address.hpp>

#include "atls/proxy/proxy_protocol.hpp"

#include <fuzzer/FuzzedDataProvider.h>

namespace atls::proxy::pp2 {
namespace {

namespace asio = boost::asio;

void require(bool condition) {
  if (!condition) {
    std::abort();
  }
}

// Long enough to cross the 255-byte limit now and then.
constexpr std::size_t longest_text = 300;

asio::ip::address any_address(FuzzedDataProvider& in, bool v6) {
  if (!v6) {
    return asio::ip::address_v4(in.ConsumeIntegral<std::uint32_t>());
  }
  asio::ip::address_v6::bytes_type raw{};
  for (auto& b : raw) {
    b = in.ConsumeIntegral<std::uint8_t>();
  }
  return asio::ip::address_v6(raw);
}

// The encoder's rules, restated from the header file, to judge its verdict.
bool follows_the_rules(const header& h) {
  const auto fits = [](const std::string& text) { return text.size() <= max_value_size; };
  if (!fits(h.alpn) || !fits(h.authority)) {
    return false;
  }
  if (h.endpoints &&
      h.endpoints->source.address().is_v4() != h.endpoints->destination.address().is_v4()) {
    return false;
  }
  if (h.tls && (h.tls->version.empty() || !fits(h.tls->version) || !fits(h.tls->cipher) ||
                (h.tls->client & client_ssl) == 0 || (h.tls->client & 0xF8U) != 0)) {
    return false;
  }
  return !(h.attestation && h.attestation->status == attestation_status::unattested &&
           (h.attestation->key_sha256 || h.attestation->ear_sha256));
}

std::optional<sha256_digest> maybe_digest(FuzzedDataProvider& in) {
  if (!in.ConsumeBool()) {
    return std::nullopt;
  }
  sha256_digest out{};
  for (auto& b : out) {
    b = in.ConsumeIntegral<std::uint8_t>();
  }
  return out;
}

// encode(h) either succeeds exactly when the rules allow it, and then decodes back to h, or
// refuses.
void writer_round_trip(FuzzedDataProvider& in) {
  header h;
  // One draw in four is AF_UNSPEC, one mixes the families (which the encoder must refuse).
  const int shape = in.ConsumeIntegralInRange<int>(0, 3);
  if (shape != 0) {
    const bool ipv6 = in.ConsumeBool();
    const bool mixed = shape == 3;
    h.endpoints = addresses{
        .source = {any_address(in, ipv6), in.ConsumeIntegral<std::uint16_t>()},
        .destination = {any_address(in, ipv6 != mixed), in.ConsumeIntegral<std::uint16_t>()}};
  }
  h.alpn = in.ConsumeRandomLengthString(longest_text);
  h.authority = in.ConsumeRandomLengthString(longest_text);
  if (in.ConsumeBool()) {
    h.tls = tls_info{.client = in.ConsumeIntegral<std::uint8_t>(),
                     .verify = in.ConsumeIntegral<std::uint32_t>(),
                     .version = in.ConsumeRandomLengthString(longest_text),
                     .cipher = in.ConsumeRandomLengthString(longest_text)};
  }
  if (in.ConsumeBool()) {
    attestation_info a;
    a.status = static_cast<attestation_status>(in.ConsumeIntegralInRange<int>(0, 4));
    a.key_sha256 = maybe_digest(in);
    a.ear_sha256 = maybe_digest(in);
    h.attestation = a;
  }

  const auto encoded = encode(h);
  require(encoded.has_value() == follows_the_rules(h));
  if (!encoded) {
    return;
  }
  require(header_size(std::span(*encoded).first(fixed_size)).value() == encoded->size());
  const auto decoded = decode(*encoded);
  require(decoded.has_value() && *decoded == h);
}

// Whatever the decoder accepts is exactly what the encoder writes for it.
void decoder_is_canonical(std::span<const std::uint8_t> input) {
  const auto decoded = decode(input);
  if (!decoded) {
    return;
  }
  require(header_size(input).value() == input.size());
  const auto encoded = encode(*decoded);
  require(encoded.has_value());
  require(encoded->size() == input.size() &&
          std::equal(encoded->begin(), encoded->end(), input.begin()));
}

}  // namespace
}  // namespace atls::proxy::pp2

// The entry point's name is libFuzzer's.
extern "C" int LLVMFuzzerTestOneInput(  // NOLINT(readability-identifier-naming)
    const std::uint8_t* data, std::size_t size) {
  atls::proxy::pp2::decoder_is_canonical(std::span(data, size));
  FuzzedDataProvider in(data, size);
  atls::proxy::pp2::writer_round_trip(in);
  return 0;
}
