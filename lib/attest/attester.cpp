#include "atls/attest/attester.hpp"

#include <utility>

#include "atls/attest/tik_key.hpp"

namespace atls::attest {

namespace asio = boost::asio;

tpm_attester::tpm_attester(std::shared_ptr<tpm> device, pcr_selection pcrs,
                           std::shared_ptr<EVP_PKEY> key, bytes public_key)
    : device_(std::move(device)),
      pcrs_(std::move(pcrs)),
      tls_key_(std::move(key)),
      tls_public_key_(std::move(public_key)) {}

result<std::unique_ptr<tpm_attester>> tpm_attester::open(std::shared_ptr<tpm> device,
                                                         pcr_selection pcrs) {
  auto keys = device->keys();
  if (!keys) {
    return keys.error();
  }
  auto key = tik_private_key(device);
  if (!key) {
    return key.error();
  }
  return std::unique_ptr<tpm_attester>(new tpm_attester(
      std::move(device), std::move(pcrs), std::move(*key), std::move(keys->tik.spki_der)));
}

asio::awaitable<result<evidence_bundle>> tpm_attester::evidence(bytes nonce) {
  auto collect = [nonce = std::move(nonce), pcrs = pcrs_](tpm& t) -> result<evidence_bundle> {
    auto collected = t.evidence(nonce, pcrs);
    if (!collected) {
      return collected.error();
    }
    return evidence_bundle{.data = encode(*collected),
                           .media_type = std::string(parsec_tpm_media_type)};
  };
  // Named before co_await: GCC 12 destroys capturing temporaries in a co_await twice.
  auto pending = device_->run(std::move(collect));
  co_return co_await std::move(pending);
}

asio::awaitable<result<bytes>> attester::with_tls_key(
    std::function<result<bytes>(EVP_PKEY*)> sign) {
  co_return sign(tls_key().get());
}

asio::awaitable<result<bytes>> tpm_attester::with_tls_key(
    std::function<result<bytes>(EVP_PKEY*)> sign) {
  // On the worker, the TIK's signing runs its TPM command inline (tik_key.cpp).
  auto run_on_worker = [sign = std::move(sign), key = tls_key_](tpm& /*device*/) {
    return sign(key.get());
  };
  auto pending = device_->run(std::move(run_on_worker));
  co_return co_await std::move(pending);
}

}  // namespace atls::attest
