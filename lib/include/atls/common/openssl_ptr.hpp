// Owning pointers for the OpenSSL objects the library creates (BoringSSL's API-CONVENTIONS:
// a unique_ptr with the type's own free function). Header-only, so that common itself does not
// link OpenSSL; its users already do.
#pragma once

#include <memory>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

namespace atls {

template <auto Free>
struct openssl_free {
  template <class T>
  void operator()(T* p) const noexcept {
    Free(p);
  }
};

using bio_ptr = std::unique_ptr<BIO, openssl_free<BIO_free>>;
using bn_ptr = std::unique_ptr<BIGNUM, openssl_free<BN_free>>;
using bn_ctx_ptr = std::unique_ptr<BN_CTX, openssl_free<BN_CTX_free>>;
using ec_group_ptr = std::unique_ptr<EC_GROUP, openssl_free<EC_GROUP_free>>;
using ec_point_ptr = std::unique_ptr<EC_POINT, openssl_free<EC_POINT_free>>;
using ecdsa_sig_ptr = std::unique_ptr<ECDSA_SIG, openssl_free<ECDSA_SIG_free>>;
using kdf_ptr = std::unique_ptr<EVP_KDF, openssl_free<EVP_KDF_free>>;
using kdf_ctx_ptr = std::unique_ptr<EVP_KDF_CTX, openssl_free<EVP_KDF_CTX_free>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, openssl_free<EVP_MD_CTX_free>>;
using param_bld_ptr = std::unique_ptr<OSSL_PARAM_BLD, openssl_free<OSSL_PARAM_BLD_free>>;
using param_ptr = std::unique_ptr<OSSL_PARAM, openssl_free<OSSL_PARAM_free>>;
using pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, openssl_free<EVP_PKEY_CTX_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_free<EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, openssl_free<X509_free>>;
using x509_pubkey_ptr = std::unique_ptr<X509_PUBKEY, openssl_free<X509_PUBKEY_free>>;

}  // namespace atls
