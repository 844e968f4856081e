// libFuzzer target for the early-attestation wire codecs: every remoteAttestation decoder (the
// ClientHello lists, the chosen schemes, the Certificate's cmw_payload), the CMW record decoder
// (CBOR and JSON), choose_scheme, and the handshake transcript's message state machine. Build
// and run: see README.md next to this file.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <variant>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "atls/tls/cmw.hpp"
#include "atls/tls/early_binder.hpp"
#include "atls/tls/remote_attestation.hpp"

namespace atls::tls {
namespace {

bool same_bytes(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

void require(bool condition) {
  if (!condition) {
    std::abort();
  }
}

// The remoteAttestation encoding is canonical (fixed-width integers, exact lengths, no
// alternatives), so whatever decodes must re-encode to the very input bytes.
void client_hello(std::span<const std::uint8_t> input) {
  const auto decoded = decode_client_hello(input);
  if (!decoded) {
    return;
  }
  const auto encoded = encode_client_hello(*decoded);
  require(encoded.has_value() && same_bytes(*encoded, input));
  require(decode_client_hello(*encoded).value() == *decoded);
  // A choice is always a scheme of both lists.
  const auto chosen =
      choose_scheme(decoded->server_attester_schemes, decoded->client_attester_schemes);
  if (chosen) {
    const auto& a = decoded->server_attester_schemes;
    const auto& b = decoded->client_attester_schemes;
    require(std::find(a.begin(), a.end(), *chosen) != a.end() &&
            std::find(b.begin(), b.end(), *chosen) != b.end());
  }
}

void chosen_scheme(std::span<const std::uint8_t> input) {
  const auto ee = decode_encrypted_extensions(input);
  const auto cr = decode_certificate_request(input);
  // The two messages carry the same structure.
  require(ee.has_value() == cr.has_value());
  if (!ee) {
    return;
  }
  require(*ee == *cr);
  const auto encoded = encode_encrypted_extensions(*ee);
  require(encoded.has_value() && same_bytes(*encoded, input));
  require(encode_certificate_request(*cr).value() == *encoded);
}

void cmw(std::span<const std::uint8_t> input) {
  const auto record = decode_cmw(input);
  if (!record) {
    return;
  }
  // CBOR: shortest heads only and nothing trailing, so the encoding is the input itself.
  const auto cbor = encode_cbor(*record);
  require(cbor.has_value());
  require(decode_cmw(*cbor).value() == *record);
  if (input[0] != '[') {
    require(same_bytes(*cbor, input));
  }
  // JSON is not canonical (whitespace, escapes), so only the value must survive; a CoAP
  // Content-Format has no JSON form at all.
  const auto json = encode_json(*record);
  require(json.has_value() == std::holds_alternative<std::string>(record->type));
  if (json) {
    const std::span<const std::uint8_t> text(reinterpret_cast<const std::uint8_t*>(json->data()),
                                             json->size());
    require(decode_cmw(text).value() == *record);
  }
}

void certificate(std::span<const std::uint8_t> input) {
  const auto payload = decode_certificate(input);
  if (!payload) {
    return;
  }
  const auto encoded = encode_certificate(*payload);
  require(encoded.has_value() && same_bytes(*encoded, input));
  // What the Certificate carries is a CMW: reach its decoder through the real framing too.
  cmw(*payload);
}

// The input as a run of handshake messages (type, uint24 length, body): whatever order and
// shapes the fuzzer makes, the state machine either completes with a hash or reports failure.
void transcript(std::span<const std::uint8_t> input) {
  handshake_transcript t;
  while (input.size() >= 4) {
    const std::size_t size =
        4 + ((std::size_t{input[1]} << 16U) | (std::size_t{input[2]} << 8U) | input[3]);
    const auto message = input.first(std::min(size, input.size()));
    t.observe(SSL3_RT_HANDSHAKE, message);
    input = input.subspan(message.size());
  }
  const auto hash = t.hash(EVP_sha256());
  require(hash.has_value() == t.complete());
  require(!hash || hash->size() == 32);
}

}  // namespace
}  // namespace atls::tls

// The entry point's name is libFuzzer's.
extern "C" int LLVMFuzzerTestOneInput(  // NOLINT(readability-identifier-naming)
    const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input(data, size);
  atls::tls::client_hello(input);
  atls::tls::chosen_scheme(input);
  atls::tls::certificate(input);
  atls::tls::cmw(input);
  atls::tls::transcript(input);
  return 0;
}
