// The TPM 2.0 behind this sidecar, through tpm2-tss ESAPI: the attestation key (AK), the TLS
// identity key (TIK), and the operations evidence needs. This module is the only place that
// includes tss2 headers.
//
// Threading: every TPM command runs on one worker thread that owns the ESAPI context, in the
// order submitted; callers block (the command line) or await run() (Asio code) without ever
// running TPM I/O on their own thread. Called on the worker (inside run()), the synchronous
// methods execute inline. If the TPM connection breaks, the next command reconnects.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_category.hpp>

#include "atls/attest/evidence.hpp"
#include "atls/common/result.hpp"

namespace atls::attest {

enum class tpm_errc {
  connect_failed = 1,  // the TCTI could not be loaded or the TPM did not answer
  handle_occupied,     // a persistent handle holds an object that is not the expected key
  not_provisioned,     // the AK or TIK is missing: run `atlsctl tpm provision`
  bad_argument,        // a nonce, digest or PCR selection the TPM cannot take
  stopped,             // the worker is shutting down
};

const boost::system::error_category& tpm_category() noexcept;

inline error_code make_error_code(tpm_errc e) noexcept {
  return {static_cast<int>(e), tpm_category()};
}

// TSS2 return codes as error codes: value is the TSS2_RC, message is Tss2_RC_Decode's text.
const boost::system::error_category& tss2_category() noexcept;

// Owner-hierarchy persistent handles (TPM 2.0 Part 2 §7.5); the TCG reserves 0x8101xxxx for EKs.
inline constexpr std::uint32_t default_ak_handle = 0x81000100;
inline constexpr std::uint32_t default_tik_handle = 0x81000101;

struct tpm_options {
  std::string tcti = "device:/dev/tpmrm0";  // tpm2-tss TCTI loader syntax: "swtpm:port=2321"
  std::uint32_t ak_handle = default_ak_handle;
  std::uint32_t tik_handle = default_tik_handle;
  // saturated() from this many commands queued or running. Commands are never refused here;
  // callers that can turn work away (new handshakes) ask first.
  std::size_t queue_limit = 64;
};

struct key_info {
  std::uint32_t handle = 0;
  bytes public_area;  // marshalled TPMT_PUBLIC
  bytes name;         // TPM name: nameAlg || SHA-256(public_area)
  bytes spki_der;     // the public key as DER SubjectPublicKeyInfo
};

struct tpm_keys {
  key_info ak;
  key_info tik;
};

struct provision_report {
  tpm_keys keys;
  bool ak_created = false;  // false: an existing AK was found and reused
  bool tik_created = false;
};

// A TPMS_ATTEST and the AK's TPMT_SIGNATURE over it, both marshalled.
struct signed_attest {
  bytes attest;
  bytes signature;
};

class tpm {
 public:
  // Starts the worker and connects lazily on the first command. Never fails: connection errors
  // surface from the commands, so that a TPM that is down at start-up is picked up later.
  explicit tpm(tpm_options options);
  ~tpm();  // finishes queued commands, then stops the worker
  tpm(const tpm&) = delete;
  tpm& operator=(const tpm&) = delete;
  tpm(tpm&&) = delete;
  tpm& operator=(tpm&&) = delete;

  [[nodiscard]] const tpm_options& options() const { return options_; }

  // Creates the AK (a restricted ECDSA P-256 signing key, primary in the endorsement hierarchy)
  // and the TIK (an ECDSA P-256 signing key, fixedTPM|fixedParent|sensitiveDataOrigin, under an
  // ECC storage primary) and persists them, unless they already exist. Idempotent. Fails with
  // tpm_errc::handle_occupied when a handle holds a different kind of object.
  [[nodiscard]] result<provision_report> provision();
  // The persisted keys. Fails with tpm_errc::not_provisioned.
  [[nodiscard]] result<tpm_keys> keys();
  // TPM2_Certify of the TIK by the AK, with the nonce as qualifyingData (at most 64 bytes).
  [[nodiscard]] result<signed_attest> certify(std::span<const std::uint8_t> nonce);
  // TPM2_Quote by the AK over the selected PCRs, with the nonce as qualifyingData.
  [[nodiscard]] result<signed_attest> quote(std::span<const std::uint8_t> nonce,
                                            const pcr_selection& pcrs);
  // Parsec TPM evidence for the nonce: certify + quote + the TIK's public area, with
  // kid = 0x01 || SHA-256(AK public area).
  [[nodiscard]] result<parsec_tpm_evidence> evidence(std::span<const std::uint8_t> nonce,
                                                     const pcr_selection& pcrs);
  // ECDSA P-256 signature by the TIK over a SHA-256 digest, as DER ECDSA-Sig-Value (what
  // OpenSSL's verify and TLS CertificateVerify expect).
  [[nodiscard]] result<bytes> sign(std::span<const std::uint8_t> sha256_digest);
  // TPM2_PCR_Read of the selected PCRs: index -> value, as long as the bank's digest. Fails with
  // tpm_errc::bad_argument for a selection quote() would refuse, or when the TPM does not return
  // every selected PCR.
  [[nodiscard]] result<std::map<std::uint8_t, bytes>> read_pcrs(const pcr_selection& pcrs);
  // PCR_Extend of one PCR's SHA-256 bank with SHA-256(data).
  [[nodiscard]] result<void> extend_pcr(std::uint32_t index, std::span<const std::uint8_t> data);
  // TPM2_GetRandom: n bytes (1 to 32) from the TPM's generator. One minimal TPM round trip, with
  // no key and no crypto worth measuring: the benchmark's transport baseline. Fails with
  // tpm_errc::bad_argument for n outside 1..32.
  [[nodiscard]] result<bytes> random(std::size_t n);

  // Commands queued or running, in the order they will run (first come, first served).
  [[nodiscard]] std::size_t queued() const;
  // queued() has reached options().queue_limit: a new handshake would wait behind a full queue
  // and likely time out, so it is better refused now. Safe from any thread.
  [[nodiscard]] bool saturated() const;

  // Queues fn on the worker and returns at once; fn runs there, its TPM calls inline. For code
  // that can neither block nor await, such as an OpenSSL callback inside a TLS handshake.
  void post(std::function<void(tpm&)> fn);

  // Runs fn on the TPM worker and completes on the awaiting coroutine's executor, so that Asio
  // threads never wait for the TPM: co_await tpm.run([&](tpm& t) { return t.quote(...); }).
  template <class Fn>
  auto run(Fn fn) -> boost::asio::awaitable<std::invoke_result_t<Fn, tpm&>>;

 private:
  struct worker;
  struct session;
  // Queues a job for the worker thread; jobs run one at a time, in order.
  void submit(std::function<void(session&)> job);
  template <class T>
  result<T> call(std::string_view operation, std::function<result<T>(session&)> job);

  tpm_options options_;
  std::unique_ptr<worker> worker_;
};

template <class Fn>
auto tpm::run(Fn fn) -> boost::asio::awaitable<std::invoke_result_t<Fn, tpm&>> {
  using value = std::invoke_result_t<Fn, tpm&>;
  auto executor = co_await boost::asio::this_coro::executor;
  // fn runs as one job on the worker (its TPM calls execute inline there), and its result is
  // posted back to the awaiting coroutine's executor. Named, not a temporary inside co_await:
  // GCC 12 destroys such capturing temporaries twice.
  auto initiation = [this, fn = std::move(fn), executor](auto completion) mutable {
    // The queue holds std::function, which must be copyable; Asio handlers are move-only.
    struct job_state {
      Fn fn;
      decltype(completion) handler;
    };
    auto state = std::make_shared<job_state>(job_state{std::move(fn), std::move(completion)});
    submit([this, state, executor](session&) {
      auto outcome = state->fn(*this);
      boost::asio::post(executor, [state, outcome = std::move(outcome)]() mutable {
        std::move(state->handler)(std::move(outcome));
      });
    });
  };
  auto done = boost::asio::async_initiate<const boost::asio::use_awaitable_t<>, void(value)>(
      std::move(initiation), boost::asio::use_awaitable);
  co_return co_await std::move(done);
}

}  // namespace atls::attest

template <>
struct boost::system::is_error_code_enum<atls::attest::tpm_errc> : std::true_type {};
