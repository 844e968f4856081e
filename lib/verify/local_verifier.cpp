#include "atls/verify/local_verifier.hpp"

#include <utility>

#include <openssl/err.h>
#include <openssl/rand.h>

namespace atls::verify {

namespace {

bool valid_nonce_size(std::size_t size) {
  return size >= min_nonce_size && size <= max_nonce_size;
}

}  // namespace

local_verifier::local_verifier(local_verifier_options options) : options_(std::move(options)) {}

boost::asio::awaitable<result<attestation_result>> local_verifier::appraise(bytes evidence,
                                                                            std::string media_type,
                                                                            bytes expected_nonce) {
  // The interface's bound on nonces: a short one is guessable, and the format's TPM2B_DATA
  // extraData holds at most a digest's size.
  if (!valid_nonce_size(expected_nonce.size())) {
    co_return make_error_code(boost::system::errc::invalid_argument);
  }
  co_return appraise_parsec_tpm(options_, evidence, media_type, expected_nonce, clock::now());
}

boost::asio::awaitable<result<bytes>> local_verifier::challenge(std::size_t size) {
  if (!valid_nonce_size(size)) {
    co_return make_error_code(boost::system::errc::invalid_argument);
  }
  bytes nonce(size);
  // RAND_bytes fails only when the DRBG cannot be seeded; a nonce that is not random would
  // make evidence replayable, so there is no fallback.
  ERR_set_mark();
  const bool ok = RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) == 1;
  ERR_pop_to_mark();
  if (!ok) {
    co_return make_error_code(boost::system::errc::resource_unavailable_try_again);
  }
  co_return nonce;
}

}  // namespace atls::verify
