#include "atls/tls/error.hpp"

#include <array>

#include <openssl/err.h>

namespace atls::tls {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "atls.tls"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::certificate_unusable:
        return "certificate chain cannot be used";
      case errc::private_key_unusable:
        return "private key cannot be used";
      case errc::key_does_not_match_certificate:
        return "private key does not match the certificate";
      case errc::ca_unusable:
        return "CA bundle cannot be used";
      case errc::bad_server_name:
        return "server name is neither a DNS name nor an IP address";
      case errc::context_setup_failed:
        return "TLS context setup failed";
      case errc::handshake_failed:
        return "TLS handshake failed";
      case errc::peer_rejected:
        return "peer certificate rejected";
      case errc::handshake_eof:
        return "peer closed the connection during the TLS handshake";
      case errc::truncated:
        return "peer closed the connection without close_notify";
      case errc::protocol_error:
        return "TLS protocol error";
      case errc::peer_alert:
        return "peer sent a fatal alert";
      case errc::bad_certificate_fields:
        return "certificate subject or subjectAltName cannot be parsed";
      case errc::signing_failed:
        return "the private key could not sign";
      case errc::malformed_attestation_extension:
        return "malformed attestation extension";
      case errc::malformed_cmw:
        return "malformed CMW record";
      case errc::no_common_attestation_scheme:
        return "no attestation scheme in common with the peer";
      case errc::attestation_required:
        return "attestation required but not negotiated";
      case errc::no_evidence:
        return "the attester presented no evidence or attestation result";
      case errc::malformed_authenticator:
        return "malformed exported authenticator or authenticator request";
      case errc::authenticator_context_mismatch:
        return "authenticator does not answer this request";
      case errc::authenticator_context_reused:
        return "certificate_request_context already used on this connection";
      case errc::bad_authenticator_signature:
        return "authenticator CertificateVerify does not verify";
      case errc::bad_authenticator_finished:
        return "authenticator Finished does not match this connection";
      case errc::unrequested_extension:
        return "authenticator carries an extension the request did not ask for";
      case errc::malformed_frame:
        return "malformed post-handshake attestation frame";
    }
    return "unknown atls.tls error";
  }
};

}  // namespace

const boost::system::error_category& tls_category() noexcept {
  static const category instance;
  return instance;
}

std::string drain_openssl_errors() {
  std::string out;
  const char* data = nullptr;
  int flags = 0;
  while (const unsigned long code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    if (!out.empty()) {
      out += "; ";
    }
    out += text.data();
    // The detail a failing callback attached, e.g. the TPM's decoded response code.
    if ((flags & ERR_TXT_STRING) != 0 && data != nullptr && *data != '\0') {
      out += " (";
      out += data;
      out += ")";
    }
  }
  return out;
}

}  // namespace atls::tls
