#include "atls/attested/early_attestation.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string_view>
#include <system_error>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <openssl/async.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "atls/attested/appraisal.hpp"
#include "atls/attested/reason.hpp"
#include "atls/common/hex.hpp"
#include "atls/common/openssl_error_scope.hpp"
#include "atls/common/openssl_ptr.hpp"
#include "atls/tls/error.hpp"

namespace atls::attested {

namespace asio = boost::asio;

namespace {

int state_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

using cipher_ctx_ptr = std::unique_ptr<EVP_CIPHER_CTX, openssl_free<EVP_CIPHER_CTX_free>>;

// Alert descriptions OpenSSL 3.0 sends itself (tls1_alert_code() and tls13_alert_code()); for
// any other it sends nothing at all, and we frame the alert ourselves.
bool openssl_sends(std::uint8_t description) {
  static constexpr std::array<std::uint8_t, 28> known{0,  10, 20, 21,  22,  30,  40,  42, 43, 44,
                                                      45, 46, 47, 48,  49,  50,  51,  60, 70, 71,
                                                      80, 86, 90, 100, 109, 110, 116, 120};
  return std::ranges::find(known, description) != known.end();
}

// A fatal alert as a TLSPlaintext record (RFC 8446 §5.1, §6): what a peer still without write
// keys sends: the server before its ServerHello, the client during the server's flight (its
// handshake keys start after the server's Finished; OpenSSL servers accept plaintext alerts
// until then, ENC_READ_STATE_ALLOW_PLAIN_ALERTS).
std::vector<std::uint8_t> plaintext_alert(std::uint8_t description) {
  return {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description};
}

// A fatal alert as the first TLSCiphertext record under `secret` (RFC 8446 §5.2, §5.3, §7.3):
// what the server sends after its Finished, under SERVER_TRAFFIC_SECRET_0 with sequence number
// 0 (a server that sends no tickets and no 0.5-RTT data has sent nothing under it yet). Empty
// when the cipher suite is not one of RFC 8446's AEADs or OpenSSL fails.
std::vector<std::uint8_t> encrypted_alert(const SSL* ssl, std::span<const std::uint8_t> secret,
                                          std::uint8_t description) {
  const openssl_error_scope scope;
  const SSL_CIPHER* suite = SSL_get_current_cipher(ssl);
  if (suite == nullptr || secret.empty()) {
    return {};
  }
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(suite);
  const EVP_CIPHER* aead = nullptr;
  switch (SSL_CIPHER_get_id(suite) & 0xFFFFU) {
    case 0x1301:
      aead = EVP_aes_128_gcm();
      break;
    case 0x1302:
      aead = EVP_aes_256_gcm();
      break;
    case 0x1303:
      aead = EVP_chacha20_poly1305();
      break;
    default:
      return {};
  }
  constexpr std::size_t iv_size = 12;
  constexpr std::size_t tag_size = 16;
  const auto key_size = static_cast<std::size_t>(EVP_CIPHER_get_key_length(aead));
  auto key = tls::hkdf_expand_label(md, secret, "key", {}, key_size);
  auto iv = tls::hkdf_expand_label(md, secret, "iv", {}, iv_size);
  if (!key || !iv) {
    return {};
  }
  // TLSInnerPlaintext: the alert, then its content type; the header is the AEAD's data.
  const std::array<std::uint8_t, 3> inner{0x02, description, 0x15};
  std::vector<std::uint8_t> record{0x17, 0x03, 0x03, 0x00, inner.size() + tag_size};
  record.reserve(5 + inner.size() + tag_size);
  record.resize(5 + inner.size() + tag_size);
  cipher_ctx_ptr ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  const bool ok = ctx &&
                  EVP_EncryptInit_ex(ctx.get(), aead, nullptr, key->data(), iv->data()) == 1 &&
                  EVP_EncryptUpdate(ctx.get(), nullptr, &n, record.data(), 5) == 1 &&
                  EVP_EncryptUpdate(ctx.get(), record.data() + 5, &n, inner.data(),
                                    static_cast<int>(inner.size())) == 1 &&
                  EVP_EncryptFinal_ex(ctx.get(), record.data() + 5 + n, &n) == 1 &&
                  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, static_cast<int>(tag_size),
                                      record.data() + 5 + inner.size()) == 1;
  OPENSSL_cleanse(key->data(), key->size());
  if (!ok) {
    return {};
  }
  return record;
}

// Runs `work` on `executor` while the calling OpenSSL ASYNC job is paused, and returns once it
// has completed (true) or when it cannot wait for it (false: no job, no wake-up callback, the
// job cannot pause here, or `work` threw). The job's wait-context callback, which tls::stream
// set, wakes the handshake loop that resumes us. `work` keeps its results in state it owns
// (shared), because after a false return it may still be running.
bool run_while_paused(const asio::any_io_executor& executor,
                      std::function<asio::awaitable<void>()> work) {
  ASYNC_JOB* job = ASYNC_get_current_job();
  ASYNC_callback_fn wake = nullptr;
  void* wake_arg = nullptr;
  if (job == nullptr ||
      ASYNC_WAIT_CTX_get_callback(ASYNC_get_wait_ctx(job), &wake, &wake_arg) != 1 ||
      wake == nullptr) {
    return false;
  }
  struct pending {
    bool done = false;
    bool threw = false;
  };
  auto op = std::make_shared<pending>();
  // Posted, not spawned here: the coroutine must start on the executor's own stack, not on the
  // job's, and only after the job has paused.
  asio::post(executor, [executor, op, wake, wake_arg, work = std::move(work)]() mutable {
    asio::co_spawn(executor, std::move(work), [op, wake, wake_arg](const std::exception_ptr& e) {
      op->threw = static_cast<bool>(e);
      op->done = true;
      wake(wake_arg);
    });
  });
  // The stream resumes the job only after a wake-up, and only our work wakes it while we are
  // paused; a return without `done` means pausing is blocked here, and waiting would deadlock
  // (the work runs on this very thread). A few spurious returns are tolerated.
  for (int attempts = 0; !op->done; ++attempts) {
    if (attempts == 4) {
      return false;
    }
    ASYNC_pause_job();
  }
  return !op->threw;
}

bool offered(const std::vector<tls::attestation_scheme>& list,
             const tls::attestation_scheme& scheme) {
  return std::ranges::find(list, scheme) != list.end();
}

}  // namespace

tls::attestation_scheme scheme_for(model m) {
  switch (m) {
    case model::background_check:
      return tls::attestation_scheme::evidence_media_type(
          std::string(attest::parsec_tpm_media_type));
    case model::passport:
      return tls::attestation_scheme::result_from({});
  }
  return tls::attestation_scheme::evidence_media_type(std::string(attest::parsec_tpm_media_type));
}

struct early_attestation::callbacks {
  static early_attestation* of(const SSL* ssl) {
    return static_cast<early_attestation*>(SSL_get_ex_data(ssl, state_index()));
  }

  // Ends the handshake with one of the draft's alerts, which OpenSSL 3.0 would not send.
  // `encrypted`: the server after its Finished.
  static void refuse_with(early_attestation& e, SSL* ssl, std::uint8_t description, bool encrypted,
                          int* al) {
    *al = description;
    if (openssl_sends(description)) {
      return;
    }
    auto record =
        encrypted ? encrypted_alert(ssl, e.app_secret_, description) : plaintext_alert(description);
    if (record.empty()) {
      // No way to frame it: a standard alert says at least that the handshake failed.
      *al = SSL_AD_HANDSHAKE_FAILURE;
      return;
    }
    e.stream_.send_on_handshake_failure(std::move(record), e.detail_);
  }

  // ClientHello (server): what the client offers and what we require, decided before anything
  // is sent, so that a refusal is a plaintext alert and the CertificateRequest can be asked for.
  static int on_client_hello(SSL* ssl, int* al, void* /*arg*/) noexcept {
    auto* e = of(ssl);
    if (e == nullptr) {
      return SSL_CLIENT_HELLO_SUCCESS;
    }
    try {
      return judge_client_hello(*e, ssl, al) ? SSL_CLIENT_HELLO_SUCCESS : SSL_CLIENT_HELLO_ERROR;
    } catch (...) {
      e->fail(tls::errc::handshake_failed, "out of memory judging the ClientHello");
      *al = SSL_AD_INTERNAL_ERROR;
      return SSL_CLIENT_HELLO_ERROR;
    }
  }

  static bool judge_client_hello(early_attestation& e, SSL* ssl, int* al) {
    const auto& points = e.settings_.code_points;
    // Called again for the second ClientHello after a HelloRetryRequest.
    e.offer_.reset();
    e.server_scheme_.reset();
    e.client_scheme_.reset();
    const unsigned char* data = nullptr;
    size_t size = 0;
    if (SSL_client_hello_get0_ext(ssl, points.remote_attestation_extension, &data, &size) == 1) {
      auto offer = tls::decode_client_hello({data, size});
      if (!offer) {
        e.fail(offer.error(), "malformed remoteAttestation in ClientHello");
        *al = SSL_AD_DECODE_ERROR;
        return false;
      }
      e.offer_ = std::move(*offer);
    }
    const auto unsupported = [&](std::string detail) {
      e.fail(tls::errc::no_common_attestation_scheme, std::move(detail));
      refuse_with(e, ssl, points.unsupported_attestation_schemes_alert, false, al);
      return false;
    };
    if (e.offer_) {
      const auto& offer = *e.offer_;
      if (offer.server_attester_schemes.empty() && offer.client_attester_schemes.empty()) {
        // The draft, "Server Hello": both lists empty leave nothing to negotiate.
        return unsupported("the client offered no attestation scheme");
      }
      // Asked to attest: we do when we can, in a scheme the client accepts. A server that does
      // not attest ignores the request; the client's policy decides whether that is enough.
      if (!offer.server_attester_schemes.empty() && e.settings_.self) {
        const std::array ours{scheme_for(e.settings_.self->model)};
        e.server_scheme_ = tls::choose_scheme(offer.server_attester_schemes, ours);
        if (!e.server_scheme_) {
          return unsupported("the client accepts none of our attestation schemes");
        }
      }
      if (!offer.client_attester_schemes.empty() && e.settings_.peer) {
        const std::array ours{scheme_for(e.settings_.peer->model)};
        e.client_scheme_ = tls::choose_scheme(offer.client_attester_schemes, ours);
        if (!e.client_scheme_ && e.settings_.peer->required) {
          return unsupported("the client attests in no scheme we accept");
        }
      }
    }
    if (e.settings_.peer && e.settings_.peer->required && !e.client_scheme_) {
      e.fail(tls::errc::attestation_required,
             e.offer_ ? "the client offers no attestation" : "no remoteAttestation in ClientHello");
      refuse_with(e, ssl, points.attestation_required_alert, false, al);
      return false;
    }
    if (e.client_scheme_) {
      // The client attests in its Certificate: ask for one (RFC 8446 §4.3.2). The draft makes
      // X.509 mandatory, so a client without a certificate fails (certificate_required).
      SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, &verify);
    }
    return true;
  }

  static int add(SSL* ssl, unsigned int /*type*/, unsigned int context, const unsigned char** out,
                 size_t* outlen, X509* x, size_t chainidx, int* al, void* /*arg*/) noexcept {
    auto* e = of(ssl);
    if (e == nullptr) {
      return 0;  // plain TLS: nothing to say
    }
    try {
      auto data = extension_for(*e, ssl, context, x, chainidx, al);
      if (!data) {
        return *al == 0 ? 0 : -1;
      }
      e->sent_ = std::move(*data);
      *out = e->sent_.data();
      *outlen = e->sent_.size();
      return 1;
    } catch (...) {
      e->fail(tls::errc::handshake_failed, "out of memory writing remoteAttestation");
      *al = SSL_AD_INTERNAL_ERROR;
      return -1;
    }
  }

  // The extension_data to send in `context`; nullopt with *al = 0 to send nothing, with *al set
  // to fail the handshake.
  static std::optional<tls::bytes> extension_for(early_attestation& e, SSL* ssl,
                                                 unsigned int context, X509* x, size_t chainidx,
                                                 int* al) {
    const auto nothing = [al] {
      *al = 0;
      return std::nullopt;
    };
    const auto broken = [&](error_code ec, std::string detail) -> std::optional<tls::bytes> {
      e.fail(ec, std::move(detail));
      *al = SSL_AD_INTERNAL_ERROR;
      return std::nullopt;
    };
    result<tls::bytes> encoded = make_error_code(tls::errc::handshake_failed);
    switch (context) {
      case SSL_EXT_CLIENT_HELLO: {
        tls::client_hello_attestation offer;
        if (e.settings_.peer) {
          offer.server_attester_schemes.push_back(scheme_for(e.settings_.peer->model));
        }
        if (e.settings_.self) {
          offer.client_attester_schemes.push_back(scheme_for(e.settings_.self->model));
        }
        if (offer.server_attester_schemes.empty() && offer.client_attester_schemes.empty()) {
          return nothing();
        }
        encoded = tls::encode_client_hello(offer);
        e.offer_ = std::move(offer);
        break;
      }
      case SSL_EXT_TLS1_3_ENCRYPTED_EXTENSIONS:
        if (!e.server_scheme_) {
          return nothing();
        }
        encoded = tls::encode_encrypted_extensions(*e.server_scheme_);
        break;
      case SSL_EXT_TLS1_3_CERTIFICATE_REQUEST:
        if (!e.client_scheme_) {
          return nothing();
        }
        encoded = tls::encode_certificate_request(*e.client_scheme_);
        break;
      case SSL_EXT_TLS1_3_CERTIFICATE: {
        const auto& scheme = e.is_server_ ? e.server_scheme_ : e.client_scheme_;
        if (!scheme || chainidx != 0 || !e.settings_.self) {
          return nothing();
        }
        auto cmw = our_cmw(e, ssl, x, *scheme);
        if (!cmw) {
          // Our own failure (TPM, no passport): internal_error, the peer did nothing wrong.
          *al = SSL_AD_INTERNAL_ERROR;
          return std::nullopt;
        }
        encoded = tls::encode_certificate(*cmw);
        e.attested_ = encoded.has_value();
        break;
      }
      default:
        return nothing();
    }
    if (!encoded) {
      return broken(encoded.error(), "cannot encode remoteAttestation");
    }
    return std::move(*encoded);
  }

  // The binder of this connection for the attester whose leaf is `leaf`.
  static result<tls::bytes> binder_for(const early_attestation& e, const SSL* ssl, const X509* leaf,
                                       tls::bytes& spki) {
    const SSL_CIPHER* suite = SSL_get_current_cipher(ssl);
    const EVP_MD* md = suite == nullptr ? nullptr : SSL_CIPHER_get_handshake_digest(suite);
    auto key = tls::certificate_spki_der(leaf);
    if (!key) {
      return key.error();
    }
    spki = std::move(*key);
    auto transcript = e.transcript_.hash(ssl);
    if (!transcript) {
      return transcript.error();
    }
    return tls::early_attestation_binder(md, *transcript, spki);
  }

  // Our CMW for the certificate `leaf`: evidence over the binder, or our passport.
  static std::optional<tls::bytes> our_cmw(early_attestation& e, SSL* ssl, const X509* leaf,
                                           const tls::attestation_scheme& scheme) {
    const openssl_error_scope scope;
    if (scheme.mechanism() == tls::attestation_mechanism::result) {
      // Passport model: the EAR the background loop keeps fresh (attested/passport.hpp).
      const auto& holder = e.settings_.self->passport;
      auto ear = holder ? holder->current() : std::nullopt;
      if (!ear) {
        e.fail(errc::no_passport, "no EAR from the verifier yet, or the last one expired");
        return std::nullopt;
      }
      auto wrapped = wrap_passport(*ear);
      if (!wrapped) {
        e.fail(wrapped.error(), "cannot wrap our attestation result");
        return std::nullopt;
      }
      return std::move(*wrapped);
    }
    tls::bytes spki;
    auto binder = binder_for(e, ssl, leaf, spki);
    if (!binder) {
      e.fail(binder.error(), "cannot compute our attestation binder");
      return std::nullopt;
    }
    auto attester = e.settings_.self->attester;
    if (!attester) {
      e.fail(tls::errc::handshake_failed, "no attester configured");
      return std::nullopt;
    }
    auto slot = std::make_shared<std::optional<result<attest::evidence_bundle>>>();
    const bool waited =
        run_while_paused(e.stream_.socket().get_executor(),
                         [attester, slot, nonce = std::move(*binder)]() -> asio::awaitable<void> {
                           auto got = co_await attester->evidence(nonce);
                           slot->emplace(std::move(got));
                         });
    if (!waited || !*slot) {
      e.fail(tls::errc::handshake_failed, "cannot pause the handshake for evidence");
      return std::nullopt;
    }
    if (!**slot) {
      e.fail((**slot).error(), "evidence: " + (**slot).error().message());
      return std::nullopt;
    }
    auto wrapped = wrap_evidence(***slot);
    if (!wrapped) {
      e.fail(wrapped.error(), "cannot wrap our evidence");
      return std::nullopt;
    }
    return std::move(*wrapped);
  }

  static int parse(SSL* ssl, unsigned int /*type*/, unsigned int context, const unsigned char* in,
                   size_t inlen, X509* x, size_t chainidx, int* al, void* /*arg*/) noexcept {
    auto* e = of(ssl);
    if (e == nullptr || context == SSL_EXT_CLIENT_HELLO) {
      // Without state: not ours to judge. ClientHello: judged in on_client_hello, which also
      // sees an absent extension.
      return 1;
    }
    try {
      return judge(*e, ssl, context, {in, inlen}, x, chainidx, al) ? 1 : 0;
    } catch (...) {
      e->fail(tls::errc::handshake_failed, "out of memory reading remoteAttestation");
      *al = SSL_AD_INTERNAL_ERROR;
      return 0;
    }
  }

  static bool judge(early_attestation& e, SSL* ssl, unsigned int context,
                    std::span<const std::uint8_t> data, X509* x, size_t chainidx, int* al) {
    const auto refuse = [&](error_code ec, std::string detail, int alert) {
      e.fail(ec, std::move(detail));
      *al = alert;
      return false;
    };
    const auto& points = e.settings_.code_points;
    switch (context) {
      case SSL_EXT_TLS1_3_ENCRYPTED_EXTENSIONS:
      case SSL_EXT_TLS1_3_CERTIFICATE_REQUEST: {
        const bool ee = context == SSL_EXT_TLS1_3_ENCRYPTED_EXTENSIONS;
        auto chosen =
            ee ? tls::decode_encrypted_extensions(data) : tls::decode_certificate_request(data);
        if (!chosen) {
          return refuse(chosen.error(), "malformed remoteAttestation from the server",
                        SSL_AD_DECODE_ERROR);
        }
        const auto* list = !e.offer_ ? nullptr
                           : ee      ? &e.offer_->server_attester_schemes
                                     : &e.offer_->client_attester_schemes;
        if (list == nullptr || list->empty()) {
          return refuse(tls::errc::malformed_attestation_extension,
                        "remoteAttestation the client did not ask for",
                        SSL_AD_UNSUPPORTED_EXTENSION);
        }
        if (!offered(*list, *chosen)) {
          return refuse(tls::errc::malformed_attestation_extension,
                        "the server chose a scheme the client did not offer",
                        SSL_AD_ILLEGAL_PARAMETER);
        }
        (ee ? e.server_scheme_ : e.client_scheme_) = std::move(*chosen);
        return true;
      }
      case SSL_EXT_TLS1_3_CERTIFICATE:
        break;
      default:
        return true;
    }
    // Certificate: the peer's CMW.
    if (chainidx != 0) {
      // The draft: only in the first CertificateEntry.
      return refuse(tls::errc::malformed_attestation_extension,
                    "remoteAttestation in a CertificateEntry other than the first",
                    SSL_AD_ILLEGAL_PARAMETER);
    }
    const auto& scheme = e.is_server_ ? e.client_scheme_ : e.server_scheme_;
    if (!scheme || !e.settings_.peer) {
      return refuse(tls::errc::malformed_attestation_extension,
                    "remoteAttestation in a Certificate that was not asked to carry it",
                    SSL_AD_UNSUPPORTED_EXTENSION);
    }
    auto cmw = tls::decode_certificate(data);
    if (!cmw) {
      return refuse(cmw.error(), "malformed remoteAttestation in Certificate", SSL_AD_DECODE_ERROR);
    }
    e.peer_cmw_seen_ = true;
    const auto failed = [&](error_code ec, std::string detail) {
      e.fail(ec, std::move(detail));
      // The server reads the client's Certificate after its own Finished: encrypted.
      refuse_with(e, ssl, points.attestation_failed_alert, e.is_server_, al);
      return false;
    };
    tls::bytes spki;
    auto binder = [&] {
      const openssl_error_scope scope;
      return binder_for(e, ssl, x, spki);
    }();
    if (!binder) {
      return failed(binder.error(), "cannot compute the peer's attestation binder");
    }
    const relying_party* rp = &*e.settings_.peer;
    auto slot = std::make_shared<std::optional<result<verify::attestation_result>>>();
    auto refused = std::make_shared<std::optional<verify::attestation_result>>();
    const bool waited = run_while_paused(
        e.stream_.socket().get_executor(),
        [rp, slot, refused, cmw = std::move(*cmw), binder = std::move(*binder),
         spki]() -> asio::awaitable<void> {
          auto appraised = co_await appraise_peer(*rp, cmw, binder, spki, refused.get());
          slot->emplace(std::move(appraised));
        });
    e.refused_result_ = std::move(*refused);
    if (!waited || !*slot) {
      return failed(tls::errc::handshake_failed, "cannot pause the handshake for appraisal");
    }
    if (!**slot) {
      const auto ec = (**slot).error();
      // The appraisal's error says all there is to say; a detail would only repeat it.
      return failed(ec, "");
    }
    e.peer_result_ = std::move(***slot);
    return true;
  }

  // The peer's chain, after the Certificate's extensions were read: the context's own checks,
  // then whether the attestation the policy needs came with it.
  static int verify(int preverify_ok, X509_STORE_CTX* store) noexcept {
    auto* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    SSL_CTX* ctx = SSL_get_SSL_CTX(ssl);
    const SSL_verify_cb context_check = SSL_CTX_get_verify_callback(ctx);
    auto* e = of(ssl);
    const int depth = X509_STORE_CTX_get_error_depth(store);
    if (e == nullptr) {
      return context_check != nullptr ? context_check(preverify_ok, store) : preverify_ok;
    }
    try {
      if (e->is_server_ && SSL_CTX_get_verify_mode(ctx) == SSL_VERIFY_NONE) {
        // A listener without client CAs (RA-only): the attestation alone identifies the client,
        // which is safe only against pinned keys (PROTOCOL.md §1: otherwise the diversion
        // attack). The appraisal checks the pins; here, only that there are some.
        if (e->settings_.peer && e->settings_.peer->pinned_keys.empty()) {
          e->fail(errc::attester_not_pinned,
                  "no client CA and no pinned keys: an attested client cannot be identified");
          X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
          return 0;
        }
        X509_STORE_CTX_set_error(store, X509_V_OK);
        return depth == 0 ? attestation_present(*e, ssl, store) : 1;
      }
      const int ok = context_check != nullptr ? context_check(preverify_ok, store) : preverify_ok;
      if (ok != 1 || depth != 0) {
        return ok;
      }
      return attestation_present(*e, ssl, store);
    } catch (...) {
      return 0;
    }
  }

  static int attestation_present(early_attestation& e, SSL* ssl, X509_STORE_CTX* store) {
    const auto& points = e.settings_.code_points;
    const auto& scheme = e.is_server_ ? e.client_scheme_ : e.server_scheme_;
    std::uint8_t alert = 0;
    if (scheme && !e.peer_cmw_seen_) {
      e.fail(tls::errc::no_evidence, "the peer's Certificate carries no remoteAttestation");
      alert = points.attestation_failed_alert;
    } else if (!scheme && e.settings_.peer && e.settings_.peer->required) {
      e.fail(tls::errc::attestation_required, "the server did not agree to attest");
      alert = points.attestation_required_alert;
    } else {
      return 1;
    }
    if (!e.is_server_ && !openssl_sends(alert)) {
      // The client's alerts are still plaintext; stop the handshake here (retry-verify) so that
      // the stream sends the draft's alert instead of OpenSSL's.
      e.stream_.send_on_handshake_failure(plaintext_alert(alert), e.detail_);
      SSL_set_retry_verify(ssl);
      return 1;
    }
    // The server is past its Finished and OpenSSL sends its own alert for a refused chain
    // (handshake_failure for X509_V_ERR_APPLICATION_VERIFICATION).
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }

  static void keylog(const SSL* ssl, const char* line) noexcept {
    auto* e = of(ssl);
    if (e == nullptr || !e->is_server_ || line == nullptr) {
      return;
    }
    constexpr std::string_view label = "SERVER_TRAFFIC_SECRET_0 ";
    const std::string_view text(line);
    if (!text.starts_with(label)) {
      return;
    }
    // "SERVER_TRAFFIC_SECRET_0 <client random hex> <secret hex>"
    const auto space = text.find(' ', label.size());
    if (space == std::string_view::npos) {
      return;
    }
    const auto hex = text.substr(space + 1);
    try {
      std::vector<std::uint8_t> secret;
      secret.reserve(hex.size() / 2);
      for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        const int hi = hex_digit(hex[i]);
        const int lo = hex_digit(hex[i + 1]);
        if (hi < 0 || lo < 0) {
          return;
        }
        secret.push_back(static_cast<std::uint8_t>((hi << 4) | lo));
      }
      e->app_secret_ = std::move(secret);
    } catch (...) {
      // Without the secret the refusal falls back to handshake_failure.
    }
  }
};

result<void> install_early_attestation(SSL_CTX* ctx, const tls::attestation_code_points& points) {
  const openssl_error_scope scope;
  const unsigned int contexts = SSL_EXT_TLS1_3_ONLY | SSL_EXT_CLIENT_HELLO |
                                SSL_EXT_TLS1_3_ENCRYPTED_EXTENSIONS |
                                SSL_EXT_TLS1_3_CERTIFICATE_REQUEST | SSL_EXT_TLS1_3_CERTIFICATE;
  using cb = early_attestation::callbacks;
  if (SSL_CTX_add_custom_ext(ctx, points.remote_attestation_extension, contexts, &cb::add, nullptr,
                             nullptr, &cb::parse, nullptr) != 1) {
    return make_error_code(tls::errc::context_setup_failed);
  }
  SSL_CTX_set_client_hello_cb(ctx, &cb::on_client_hello, nullptr);
  SSL_CTX_set_keylog_callback(ctx, &cb::keylog);
  return {};
}

early_attestation::early_attestation(tls::stream& stream, const settings& settings)
    : stream_(stream), settings_(settings), is_server_(SSL_is_server(stream.native_handle()) == 1) {
  SSL* ssl = stream_.native_handle();
  if (auto ec = stream_.use_async_handshake()) {
    throw std::system_error(ec, stream_.error_detail());
  }
  if (SSL_set_ex_data(ssl, state_index(), this) != 1) {
    throw std::bad_alloc();
  }
  transcript_.attach(ssl);
  if (!is_server_) {
    // Clients verify the server's chain through the context's callback, then ours.
    SSL_set_verify(ssl, SSL_get_verify_mode(ssl), &callbacks::verify);
  }
}

early_attestation::~early_attestation() {
  SSL* ssl = stream_.native_handle();
  SSL_set_ex_data(ssl, state_index(), nullptr);
  SSL_set_msg_callback(ssl, nullptr);
  OPENSSL_cleanse(app_secret_.data(), app_secret_.size());
}

void early_attestation::fail(error_code ec, std::string detail) {
  // The first failure is the cause; later ones follow from it.
  if (!error_) {
    error_ = ec;
    detail_ = std::move(detail);
  }
}

bool early_attestation::peer_attests() const {
  return is_server_ ? client_scheme_.has_value() : server_scheme_.has_value();
}

result<void> early_attestation::outcome(const error_code& handshake) const {
  if (error_) {
    return error_;
  }
  if (!handshake && settings_.peer && settings_.peer->required && !peer_result_) {
    return make_error_code(peer_attests() ? tls::errc::no_evidence
                                          : tls::errc::attestation_required);
  }
  return {};
}

}  // namespace atls::attested
