// EC_KEY_METHOD is deprecated in OpenSSL 3.0 in favour of providers. It stays here because it
// replaces the signing of this one key and nothing else: a provider would register algorithms
// that the TLS library context could then pick for unrelated work (FACTS.md), and would need a key
// manager, encoders and matching of its own. Deprecation warnings are silenced in this file only.
#define OPENSSL_SUPPRESS_DEPRECATED

#include "atls/attest/tik_key.hpp"

#include <array>
#include <atomic>
#include <cstring>
#include <thread>

#include <openssl/async.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

namespace atls::attest {

namespace {

// What an EC_KEY carries to its signing callback.
struct tpm_binding {
  std::shared_ptr<tpm> device;
};

void free_binding(void* /*parent*/, void* binding, CRYPTO_EX_DATA* /*data*/, int /*index*/,
                  long /*argl*/, void* /*argp*/) {
  delete static_cast<tpm_binding*>(binding);
}

// EC_KEY_dup copies ex_data pointers; each copy needs a binding of its own to free.
int dup_binding(CRYPTO_EX_DATA* /*to*/, const CRYPTO_EX_DATA* /*from*/, void** binding,
                int /*index*/, long /*argl*/, void* /*argp*/) {
  auto*& slot = *reinterpret_cast<tpm_binding**>(binding);
  if (slot != nullptr) {
    slot = new (std::nothrow) tpm_binding(*slot);
  }
  return slot != nullptr ? 1 : 0;
}

int binding_index() {
  static const int index = EC_KEY_get_ex_new_index(0, nullptr, nullptr, dup_binding, free_binding);
  return index;
}

// Signs inside the TPM. In an ASYNC job with a wake-up callback, the job pauses while the TPM
// works, and the TPM worker wakes it; anywhere else the caller waits.
result<bytes> sign_in_tpm(tpm& device, std::span<const std::uint8_t> digest) {
  ASYNC_JOB* job = ASYNC_get_current_job();
  ASYNC_callback_fn wake = nullptr;
  void* wake_arg = nullptr;
  if (job == nullptr ||
      ASYNC_WAIT_CTX_get_callback(ASYNC_get_wait_ctx(job), &wake, &wake_arg) != 1 ||
      wake == nullptr) {
    return device.sign(digest);
  }
  struct pending {
    std::atomic<bool> done{false};
    result<bytes> signature;
  };
  auto op = std::make_shared<pending>();
  device.post([op, wake, wake_arg, owned = bytes(digest.begin(), digest.end())](tpm& t) {
    op->signature = t.sign(owned);
    op->done.store(true, std::memory_order_release);
    wake(wake_arg);
  });
  // A resume before the TPM answered is harmless: pause again. Where OpenSSL forbids pausing,
  // ASYNC_pause_job returns at once and this waits in a yield loop instead.
  while (!op->done.load(std::memory_order_acquire)) {
    ASYNC_pause_job();
    if (!op->done.load(std::memory_order_acquire)) {
      std::this_thread::yield();
    }
  }
  return std::move(op->signature);
}

// EC_KEY_METHOD sign: DER ECDSA-Sig-Value of a SHA-256 digest, made by the TPM.
int tik_sign(int /*type*/, const unsigned char* digest, int digest_len, unsigned char* signature,
             unsigned int* signature_len, const BIGNUM* /*kinv*/, const BIGNUM* /*r*/,
             EC_KEY* key) {
  const auto* binding = static_cast<const tpm_binding*>(EC_KEY_get_ex_data(key, binding_index()));
  if (binding == nullptr) {
    ERR_raise_data(ERR_LIB_EC, ERR_R_PASSED_INVALID_ARGUMENT, "key is not bound to a TPM");
    return 0;
  }
  if (digest_len != SHA256_DIGEST_LENGTH) {
    // The TIK's scheme is ECDSA with SHA-256, and TLS 1.3 pairs P-256 with SHA-256 only.
    ERR_raise_data(ERR_LIB_EC, ERR_R_PASSED_INVALID_ARGUMENT,
                   "the TPM key signs SHA-256 digests only, not %d-byte digests", digest_len);
    return 0;
  }
  auto der =
      sign_in_tpm(*binding->device, {digest, static_cast<std::size_t>(SHA256_DIGEST_LENGTH)});
  if (!der) {
    ERR_raise_data(ERR_LIB_EC, ERR_R_OPERATION_FAIL, "signing in the TPM failed: %s",
                   der.error().message().c_str());
    return 0;
  }
  if (der->size() > static_cast<std::size_t>(ECDSA_size(key))) {
    ERR_raise_data(ERR_LIB_EC, ERR_R_INTERNAL_ERROR, "TPM signature longer than ECDSA_size");
    return 0;
  }
  std::memcpy(signature, der->data(), der->size());
  *signature_len = static_cast<unsigned int>(der->size());
  return 1;
}

// EC_KEY_METHOD sign_sig, for callers of ECDSA_do_sign: the same signature, parsed.
ECDSA_SIG* tik_sign_sig(const unsigned char* digest, int digest_len, const BIGNUM* kinv,
                        const BIGNUM* r, EC_KEY* key) {
  std::array<unsigned char, 80> der{};  // ECDSA_size() of P-256 is 72
  unsigned int len = 0;
  if (tik_sign(0, digest, digest_len, der.data(), &len, kinv, r, key) != 1) {
    return nullptr;
  }
  const unsigned char* p = der.data();
  return d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(len));
}

const EC_KEY_METHOD* tik_method() {
  // Process-lifetime, like OpenSSL's own methods. Everything but signing is the default's.
  static EC_KEY_METHOD* const method = [] {
    EC_KEY_METHOD* m = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
    if (m != nullptr) {
      EC_KEY_METHOD_set_sign(m, tik_sign, nullptr, tik_sign_sig);
    }
    return m;
  }();
  return method;
}

}  // namespace

result<std::shared_ptr<EVP_PKEY>> tik_private_key(std::shared_ptr<tpm> device) {
  auto keys = device->keys();
  if (!keys) {
    return keys.error();
  }
  const auto& spki = keys->tik.spki_der;
  const unsigned char* p = spki.data();
  std::unique_ptr<EC_KEY, decltype(&EC_KEY_free)> ec(
      d2i_EC_PUBKEY(nullptr, &p, static_cast<long>(spki.size())), EC_KEY_free);
  if (!ec || p != spki.data() + spki.size()) {
    return make_error_code(tpm_errc::bad_argument);
  }
  auto* binding = new (std::nothrow) tpm_binding{std::move(device)};
  const EC_KEY_METHOD* method = tik_method();
  if (binding == nullptr || method == nullptr || EC_KEY_set_method(ec.get(), method) != 1 ||
      EC_KEY_set_ex_data(ec.get(), binding_index(), binding) != 1) {
    delete binding;
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  std::shared_ptr<EVP_PKEY> pkey(EVP_PKEY_new(), EVP_PKEY_free);
  if (!pkey || EVP_PKEY_assign_EC_KEY(pkey.get(), ec.get()) != 1) {
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  (void)ec.release();  // owned by pkey now
  return pkey;
}

}  // namespace atls::attest
