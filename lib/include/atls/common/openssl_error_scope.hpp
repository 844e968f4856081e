// Drops whatever OpenSSL pushes on the thread's error queue inside a scope. For code that turns
// OpenSSL failures on peer data into error values: the entries left behind would otherwise be
// taken later for the reason of an unrelated TLS failure (tls::drain_openssl_errors).
// Header-only, so that common itself does not link OpenSSL; its users already do.
#pragma once

#include <openssl/err.h>

namespace atls {

class openssl_error_scope {
 public:
  openssl_error_scope() noexcept { ERR_set_mark(); }
  ~openssl_error_scope() { ERR_pop_to_mark(); }
  openssl_error_scope(const openssl_error_scope&) = delete;
  openssl_error_scope& operator=(const openssl_error_scope&) = delete;
  openssl_error_scope(openssl_error_scope&&) = delete;
  openssl_error_scope& operator=(openssl_error_scope&&) = delete;
};

}  // namespace atls
