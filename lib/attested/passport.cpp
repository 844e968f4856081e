#include "atls/attested/passport.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "atls/attested/appraisal.hpp"
#include "atls/verify/error.hpp"

namespace atls::attested {

namespace asio = boost::asio;
using verify::clock;

namespace {

// Veraison mints nonces of 8 to 64 bytes; 32 is what its own clients ask for.
constexpr std::size_t nonce_size = 32;

}  // namespace

class passport::impl {
 public:
  impl(const asio::any_io_executor& executor, std::shared_ptr<attest::attester> attester,
       std::shared_ptr<verify::verifier> verifier, passport_options options)
      : timer_(executor),
        attester_(std::move(attester)),
        verifier_(std::move(verifier)),
        options_(options) {}

  std::optional<std::string> current() const {
    const std::scoped_lock lock(mutex_);
    if (!status_.result ||
        (status_.result->expires_at && clock::now() >= *status_.result->expires_at)) {
      return std::nullopt;
    }
    return status_.result->raw_ear;
  }

  passport::status state() const {
    const std::scoped_lock lock(mutex_);
    return status_;
  }

  // Called by the owner's destructor, on any thread: the loop ends at its next step.
  void stop() noexcept {
    stopping_ = true;
    try {
      asio::post(timer_.get_executor(), [this, keep = self_.lock()] {
        if (keep) {
          timer_.cancel();
        }
      });
    } catch (const std::exception& e) {
      // Out of memory: the loop still sees stopping_ when its timer next fires.
      spdlog::warn("passport: cannot wake the refresh loop to stop it: {}", e.what());
    }
  }

  static asio::awaitable<void> run(std::shared_ptr<impl> self) {
    auto retry = self->options_.first_retry;
    while (!self->stopping_) {
      auto fetching = self->fetch();
      auto fetched = co_await std::move(fetching);
      if (self->stopping_) {
        break;
      }
      std::chrono::milliseconds wait{};
      if (fetched) {
        wait = self->store(std::move(*fetched));
        retry = self->options_.first_retry;
      } else {
        self->record_failure(fetched.error());
        wait = retry;
        retry = std::min(retry * 2, self->options_.max_retry);
      }
      self->timer_.expires_after(wait);
      boost::system::error_code ignored;
      co_await self->timer_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
  }

  std::weak_ptr<impl> self_;

 private:
  // One round: a nonce from the verifier, evidence over it, the verifier's signed result.
  asio::awaitable<result<verify::attestation_result>> fetch() {
    auto challenging = verifier_->challenge(nonce_size);
    auto nonce = co_await std::move(challenging);
    if (!nonce) {
      co_return nonce.error();
    }
    auto collecting = attester_->evidence(*nonce);
    auto evidence = co_await std::move(collecting);
    if (!evidence) {
      co_return evidence.error();
    }
    auto appraising =
        verifier_->appraise(std::move(evidence->data), evidence->media_type, std::move(*nonce));
    auto appraised = co_await std::move(appraising);
    if (!appraised) {
      co_return appraised.error();
    }
    // A result nobody signed is no passport; one about another key would be refused by every
    // relying party (it checks the EAR's key against the handshake's).
    if (appraised->raw_ear.empty()) {
      co_return make_error_code(verify::verify_errc::bad_response);
    }
    if (appraised->attested_key != attester_->tls_public_key()) {
      co_return make_error_code(verify::verify_errc::attested_key_mismatch);
    }
    // The verifier's clock or ours is off; either way no relying party would take it.
    if (appraised->expires_at && *appraised->expires_at <= clock::now()) {
      co_return make_error_code(verify::verify_errc::result_expired);
    }
    co_return appraised;
  }

  // Keeps `result` as the passport and says when to fetch the next.
  std::chrono::milliseconds store(verify::attestation_result result) {
    const auto now = clock::now();
    auto wait = options_.refresh_every;
    if (result.expires_at) {
      const auto half_life =
          std::chrono::duration_cast<std::chrono::milliseconds>(*result.expires_at - now) / 2;
      wait = std::clamp(half_life, options_.first_retry, options_.refresh_every);
    }
    spdlog::info("passport: new attestation result from {}: status={} key=sha256:{} valid {}",
                 verifier_->name(), verify::to_string(result.status),
                 key_fingerprint(attester_->tls_public_key()),
                 result.expires_at ? "until its exp" : "without exp (relying parties' max_age)");
    const std::scoped_lock lock(mutex_);
    status_.result = std::move(result);
    status_.last_error.clear();
    ++status_.fetched;
    return wait;
  }

  void record_failure(const error_code& error) {
    const bool have = current().has_value();
    spdlog::warn("passport: cannot obtain an attestation result from {}: {}; {}", verifier_->name(),
                 error.message(),
                 have ? "the current one stays in use until it expires"
                      : "connections that need it are refused meanwhile");
    const std::scoped_lock lock(mutex_);
    status_.last_error = error.message();
  }

  asio::steady_timer timer_;
  std::shared_ptr<attest::attester> attester_;
  std::shared_ptr<verify::verifier> verifier_;
  passport_options options_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  passport::status status_;
};

std::shared_ptr<passport> passport::start(const asio::any_io_executor& executor,
                                          std::shared_ptr<attest::attester> attester,
                                          std::shared_ptr<verify::verifier> verifier,
                                          passport_options options) {
  auto state = std::make_shared<impl>(executor, std::move(attester), std::move(verifier), options);
  state->self_ = state;
  auto loop = [state]() { return impl::run(state); };
  asio::co_spawn(executor, std::move(loop), [](const std::exception_ptr& e) {
    if (e) {
      spdlog::error("passport: the refresh loop failed: {}", describe_escaped(e));
    }
  });
  return std::shared_ptr<passport>(new passport(std::move(state)));
}

passport::passport(std::shared_ptr<impl> state) : impl_(std::move(state)) {}

passport::~passport() {
  impl_->stop();
}

std::optional<std::string> passport::current() const {
  return impl_->current();
}

passport::status passport::state() const {
  return impl_->state();
}

}  // namespace atls::attested
