#include "support/replay_attester.hpp"

#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/x509.h>

namespace atls::test {

replay_attester::replay_attester(attest::evidence_bundle evidence)
    : replayed_(std::move(evidence)), key_(EVP_EC_gen("P-256"), EVP_PKEY_free) {
  unsigned char* der = nullptr;
  const int len = key_ ? i2d_PUBKEY(key_.get(), &der) : -1;
  if (len <= 0) {
    throw std::runtime_error("cannot make a P-256 key");
  }
  public_key_.assign(der, der + len);
  OPENSSL_free(der);
}

boost::asio::awaitable<result<attest::evidence_bundle>> replay_attester::evidence(
    attest::bytes /*nonce*/) {
  co_return replayed_;
}

}  // namespace atls::test
