// ECDSA P-256 public-key recovery (SEC 1 v2, §4.1.6): the keys that could have made a
// signature. Parsec TPM evidence carries no AK, so an AK pinned only by the hash of its SPKI is
// found by recovering the candidates from the evidence's two signatures and hashing them.
// Recovery is not verification: every candidate must still be checked by a normal ECDSA
// verification before anything is trusted.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "atls/common/result.hpp"

namespace atls::verify::detail {

using bytes = std::vector<std::uint8_t>;

// The candidate public keys Q = r^-1 (sR - eG) of a P-256 ECDSA signature (r, s) over the
// message digest `digest` (SHA-256 of the signed bytes, 32 bytes), for each point R whose x is
// r or r + n (when below p) and each parity of y. Each key is a DER SubjectPublicKeyInfo with
// the named curve and the uncompressed point, as i2d_PUBKEY writes it. r and s are big-endian
// (leading zero octets allowed). A signature outside the curve's range (r or s zero, or not
// below n) and an x without a point yield no candidates, not an error. Fails only with
// errc::not_enough_memory when OpenSSL cannot allocate; leaves the thread's OpenSSL error queue
// as it found it.
[[nodiscard]] result<std::vector<bytes>> recover_p256_public_keys(
    std::span<const std::uint8_t> digest, std::span<const std::uint8_t> r,
    std::span<const std::uint8_t> s);

// Whether two DER SPKIs are the same public key, whatever their point encoding (compressed or
// not). False when either does not parse.
[[nodiscard]] bool same_public_key(std::span<const std::uint8_t> a,
                                   std::span<const std::uint8_t> b);

// Whether `der` is exactly one DER SPKI of a named-curve P-256 key (a usable attestation key).
[[nodiscard]] bool is_p256_spki(std::span<const std::uint8_t> der);

}  // namespace atls::verify::detail
