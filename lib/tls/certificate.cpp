#include "atls/tls/certificate.hpp"

#include <array>
#include <memory>
#include <string_view>
#include <utility>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "atls/tls/error.hpp"

namespace atls::tls {

namespace {

template <class T, void (*Free)(T*)>
struct openssl_deleter {
  void operator()(T* p) const { Free(p); }
};
using name_ptr = std::unique_ptr<X509_NAME, openssl_deleter<X509_NAME, X509_NAME_free>>;
using extension_ptr =
    std::unique_ptr<X509_EXTENSION, openssl_deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using request_ptr = std::unique_ptr<X509_REQ, openssl_deleter<X509_REQ, X509_REQ_free>>;
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509, X509_free>>;
using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO, BIO_free_all>>;
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_deleter<BIGNUM, BN_free>>;

failure fields_error(std::string detail) {
  return {errc::bad_certificate_fields, std::move(detail)};
}

// "/CN=a/O=b": each component is type=value; values cannot contain '/' in this form.
detailed_result<name_ptr> parse_subject(std::string_view text) {
  if (!text.starts_with('/') || text.size() < 2) {
    return fields_error("subject must look like /CN=name/O=organisation, got '" +
                        std::string(text) + "'");
  }
  name_ptr name(X509_NAME_new());
  if (!name) {
    return failure{errc::context_setup_failed, drain_openssl_errors()};
  }
  text.remove_prefix(1);
  while (!text.empty()) {
    const auto end = text.find('/');
    const auto component = text.substr(0, end);
    const auto eq = component.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == component.size()) {
      return fields_error("subject component '" + std::string(component) + "' is not TYPE=value");
    }
    const std::string type(component.substr(0, eq));
    const std::string value(component.substr(eq + 1));
    ERR_clear_error();
    if (X509_NAME_add_entry_by_txt(name.get(), type.c_str(), MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                   0) != 1) {
      return fields_error("subject component '" + std::string(component) +
                          "': " + drain_openssl_errors());
    }
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
  }
  return name;
}

detailed_result<extension_ptr> alt_names_extension(const std::string& names, X509V3_CTX* ctx) {
  ERR_clear_error();
  extension_ptr ext(X509V3_EXT_conf_nid(nullptr, ctx, NID_subject_alt_name, names.c_str()));
  if (!ext) {
    return fields_error("subjectAltName '" + names + "': " + drain_openssl_errors());
  }
  return ext;
}

// Signs a request or certificate with SHA-256 (the key's own method: the TPM for the TIK) and
// returns it as PEM.
template <class T, class Sign, class Write>
detailed_result<std::string> sign_as_pem(T* object, EVP_PKEY* key, Sign sign, Write write) {
  ERR_clear_error();
  if (sign(object, key, EVP_sha256()) <= 0) {
    return failure{errc::signing_failed, drain_openssl_errors()};
  }
  bio_ptr bio(BIO_new(BIO_s_mem()));
  char* data = nullptr;
  if (!bio || write(bio.get(), object) != 1) {
    return failure{errc::context_setup_failed, drain_openssl_errors()};
  }
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0) {
    return failure{errc::context_setup_failed, drain_openssl_errors()};
  }
  return std::string(data, static_cast<std::size_t>(len));
}

}  // namespace

detailed_result<std::string> certificate_request_pem(EVP_PKEY* key,
                                                     const certificate_fields& fields) {
  auto subject = parse_subject(fields.subject);
  if (!subject) {
    return subject.error();
  }
  request_ptr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1 ||
      X509_REQ_set_subject_name(req.get(), subject->get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), key) != 1) {
    return failure{errc::context_setup_failed, drain_openssl_errors()};
  }
  if (!fields.subject_alt_names.empty()) {
    X509V3_CTX ctx{};
    X509V3_set_ctx(&ctx, nullptr, nullptr, req.get(), nullptr, 0);
    auto ext = alt_names_extension(fields.subject_alt_names, &ctx);
    if (!ext) {
      return ext.error();
    }
    STACK_OF(X509_EXTENSION)* extensions = sk_X509_EXTENSION_new_null();
    const bool added = extensions != nullptr &&
                       sk_X509_EXTENSION_push(extensions, ext->get()) > 0 &&
                       X509_REQ_add_extensions(req.get(), extensions) == 1;
    sk_X509_EXTENSION_free(extensions);  // the extension itself stays owned by ext
    if (!added) {
      return failure{errc::context_setup_failed, drain_openssl_errors()};
    }
  }
  return sign_as_pem(req.get(), key, X509_REQ_sign, PEM_write_bio_X509_REQ);
}

detailed_result<std::string> self_signed_certificate_pem(EVP_PKEY* key,
                                                         const certificate_fields& fields) {
  auto subject = parse_subject(fields.subject);
  if (!subject) {
    return subject.error();
  }
  x509_ptr cert(X509_new());
  // RFC 5280 §4.1.2.2: positive, at most 20 octets; 128 random bits make collisions moot.
  std::array<unsigned char, 16> serial_bytes{};
  bignum_ptr serial;
  if (RAND_bytes(serial_bytes.data(), static_cast<int>(serial_bytes.size())) == 1) {
    serial_bytes[0] &= 0x7f;
    serial.reset(BN_bin2bn(serial_bytes.data(), static_cast<int>(serial_bytes.size()), nullptr));
  }
  const long seconds =
      static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(fields.validity).count());
  if (!cert || !serial || X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr ||
      X509_set_subject_name(cert.get(), subject->get()) != 1 ||
      X509_set_issuer_name(cert.get(), subject->get()) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), seconds) == nullptr ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return failure{errc::context_setup_failed, drain_openssl_errors()};
  }
  X509V3_CTX ctx{};
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  // A leaf for TLS: not a CA, signing only (ECDSA), server and client authentication.
  constexpr std::array<std::pair<const char*, const char*>, 4> leaf_extensions{{
      {"basicConstraints", "critical,CA:FALSE"},
      {"keyUsage", "critical,digitalSignature"},
      {"extendedKeyUsage", "serverAuth,clientAuth"},
      {"subjectKeyIdentifier", "hash"},
  }};
  for (const auto& [name, value] : leaf_extensions) {
    extension_ptr ext(X509V3_EXT_conf(nullptr, &ctx, name, value));
    if (!ext || X509_add_ext(cert.get(), ext.get(), -1) != 1) {
      return failure{errc::context_setup_failed, drain_openssl_errors()};
    }
  }
  if (!fields.subject_alt_names.empty()) {
    auto ext = alt_names_extension(fields.subject_alt_names, &ctx);
    if (!ext) {
      return ext.error();
    }
    if (X509_add_ext(cert.get(), ext->get(), -1) != 1) {
      return failure{errc::context_setup_failed, drain_openssl_errors()};
    }
  }
  return sign_as_pem(cert.get(), key, X509_sign, PEM_write_bio_X509);
}

}  // namespace atls::tls
