#include "atls/app/health.hpp"

#include <atomic>
#include <functional>
#include <mutex>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "atls/attested/passport.hpp"
#include "atls/verify/verifier.hpp"

namespace atls::app {

namespace asio = boost::asio;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

using clock = std::chrono::steady_clock;

// One probe: empty when the dependency answered, else what went wrong.
using probe_fn = std::function<asio::awaitable<std::string>()>;

// Logs what escaped a spawned coroutine; probes report failures as values, so this is a bug.
void log_escaped(const std::exception_ptr& e, const std::string& what) {
  if (e) {
    spdlog::error("health: {} failed: {}", what, describe_escaped(e));
  }
}

}  // namespace

class health_monitor::impl {
 public:
  struct target {
    std::string name;
    probe_fn probe;
    // Guarded by impl::mutex_.
    bool ok = false;
    std::string detail = "not probed yet";
    bool in_flight = false;
    clock::time_point started{};
  };

  impl(const asio::any_io_executor& executor, health_options options)
      : options_(options), timer_(executor) {}

  std::vector<target> targets;  // fixed after start()
  std::weak_ptr<impl> self;

  static asio::awaitable<void> run(std::shared_ptr<impl> me) {
    while (!me->stopping_) {
      for (std::size_t i = 0; i < me->targets.size(); ++i) {
        me->probe_once(me, i);
      }
      me->timer_.expires_after(me->options_.probe_every);
      co_await me->timer_.async_wait(use_tuple);
    }
  }

  void stop() noexcept {
    stopping_ = true;
    try {
      asio::post(timer_.get_executor(), [this, keep = self.lock()] {
        if (keep) {
          timer_.cancel();
        }
      });
    } catch (const std::exception& e) {
      spdlog::warn("health: cannot wake the probe loop to stop it: {}", e.what());
    }
  }

  std::vector<readiness_check> checks() const {
    const std::lock_guard lock(mutex_);
    std::vector<readiness_check> out;
    out.reserve(targets.size());
    const auto now = clock::now();
    for (const auto& t : targets) {
      if (t.in_flight && now - t.started > options_.probe_timeout) {
        out.push_back({t.name, false,
                       "no answer for " +
                           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              now - t.started)
                                              .count()) +
                           " ms"});
        continue;
      }
      out.push_back({t.name, t.ok, t.detail});
    }
    return out;
  }

 private:
  // Starts target i's probe unless the previous one is still out: a TPM that hangs gets one
  // probe at a time, and checks() reports it failed once it passes the timeout.
  void probe_once(const std::shared_ptr<impl>& me, std::size_t i) {
    {
      const std::lock_guard lock(mutex_);
      auto& t = targets[i];
      if (t.in_flight) {
        return;
      }
      t.in_flight = true;
      t.started = clock::now();
    }
    auto probe = [me, i]() -> asio::awaitable<void> {
      auto probing = me->targets[i].probe();
      const std::string failure = co_await std::move(probing);
      me->record(i, failure);
    };
    asio::co_spawn(timer_.get_executor(), std::move(probe),
                   [name = targets[i].name](const std::exception_ptr& e) {
                     log_escaped(e, "probe of " + name);
                   });
  }

  void record(std::size_t i, const std::string& failure) {
    const std::lock_guard lock(mutex_);
    auto& t = targets[i];
    t.in_flight = false;
    const bool ok = failure.empty();
    const bool first = t.detail == "not probed yet";
    if (!ok && (first || t.ok)) {
      spdlog::warn("not ready: {}: {}", t.name, failure);
    } else if (ok && !first && !t.ok) {
      spdlog::info("ready again: {}", t.name);
    }
    t.ok = ok;
    t.detail = ok ? "" : failure;
  }

  health_options options_;
  asio::steady_timer timer_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
};

namespace {

probe_fn tpm_probe(const std::shared_ptr<attest::tpm>& tpm) {
  return [tpm]() -> asio::awaitable<std::string> {
    // GetRandom: the cheapest command that needs the TPM to answer; no key, no state.
    auto asking = tpm->run([](attest::tpm& t) { return t.random(8); });
    auto answer = co_await std::move(asking);
    co_return answer ? std::string() : answer.error().message();
  };
}

probe_fn verifier_probe(const std::shared_ptr<verify::verifier>& verifier) {
  return [verifier]() -> asio::awaitable<std::string> {
    auto probing = verifier->probe();
    auto probed = co_await std::move(probing);
    co_return probed ? std::string() : probed.error().message();
  };
}

// A passport is ready while it holds an EAR that has not expired; its refresh loop does the
// talking to the verifier, so reading its state is the probe.
probe_fn passport_probe(const std::shared_ptr<const attested::passport>& passport) {
  return [passport]() -> asio::awaitable<std::string> {
    if (passport->current()) {
      co_return std::string();
    }
    const auto state = passport->state();
    co_return state.last_error.empty() ? std::string("no EAR from the verifier yet")
                                       : "no valid EAR: " + state.last_error;
  };
}

}  // namespace

std::shared_ptr<health_monitor> health_monitor::start(
    const asio::any_io_executor& executor, const std::shared_ptr<attest::tpm>& tpm,
    const std::vector<proxy::listener_options>& listeners, health_options options) {
  auto state = std::make_shared<impl>(executor, options);
  state->self = state;
  if (tpm) {
    state->targets.push_back({.name = "tpm " + tpm->options().tcti, .probe = tpm_probe(tpm)});
  }
  std::set<const verify::verifier*> seen;
  for (const auto& l : listeners) {
    if (!l.attestation) {
      continue;
    }
    const auto& a = *l.attestation;
    if (a.peer && a.peer->verifier && seen.insert(a.peer->verifier.get()).second) {
      state->targets.push_back({.name = "verifier " + std::string(a.peer->verifier->name()),
                                .probe = verifier_probe(a.peer->verifier)});
    }
    if (a.self && a.self->passport) {
      state->targets.push_back(
          {.name = "passport " + l.name, .probe = passport_probe(a.self->passport)});
    }
  }
  auto loop = [state]() { return impl::run(state); };
  asio::co_spawn(executor, std::move(loop),
                 [](const std::exception_ptr& e) { log_escaped(e, "the probe loop"); });
  return std::shared_ptr<health_monitor>(new health_monitor(std::move(state)));
}

health_monitor::health_monitor(std::shared_ptr<impl> state) : impl_(std::move(state)) {}

health_monitor::~health_monitor() {
  impl_->stop();
}

std::vector<readiness_check> health_monitor::checks() const {
  return impl_->checks();
}

}  // namespace atls::app
