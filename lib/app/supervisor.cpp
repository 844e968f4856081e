#include "atls/app/supervisor.hpp"

#include <algorithm>
#include <csignal>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "atls/app/assemble.hpp"
#include "atls/app/health.hpp"
#include "atls/metrics/atlsd_metrics.hpp"
#include "atls/systemd/notify.hpp"

namespace atls::app {

namespace asio = boost::asio;

void apply_log_level(config::log_level level) {
  switch (level) {
    case config::log_level::trace:
      spdlog::set_level(spdlog::level::trace);
      return;
    case config::log_level::debug:
      spdlog::set_level(spdlog::level::debug);
      return;
    case config::log_level::info:
      spdlog::set_level(spdlog::level::info);
      return;
    case config::log_level::warn:
      spdlog::set_level(spdlog::level::warn);
      return;
    case config::log_level::error:
      spdlog::set_level(spdlog::level::err);
      return;
  }
}

namespace {

// The file's content, or nothing when it is not a regular file: a FIFO in its place would block
// the loop that watches it (the reload that follows reports what is wrong).
std::string read_whole(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return {};
  }
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) {
    out += (out.empty() ? "" : ",") + n;
  }
  return out.empty() ? std::string("-") : out;
}

void log_failure(const std::exception_ptr& e, std::string_view what) {
  if (e) {
    spdlog::critical("{} failed: {}", what, describe_escaped(e));
  }
}

}  // namespace

// Lives on io's thread only; the coroutines below hold it by shared_ptr.
struct supervisor::state {
  state(asio::io_context& context, supervised what)
      : io(context),
        config_file(std::move(what.config_file)),
        running(std::move(what.running)),
        tpm(std::move(what.tpm)),
        server(what.server),
        watchdog(what.watchdog),
        signals(context, SIGINT, SIGTERM, SIGHUP),
        watch_timer(context) {}

  asio::io_context& io;
  std::filesystem::path config_file;
  config::daemon_config running;
  std::shared_ptr<attest::tpm> tpm;
  proxy::server& server;
  systemd::watchdog* watchdog;
  asio::signal_set signals;
  asio::steady_timer watch_timer;
  // With an admin listener: the probes behind /readyz, rebuilt at each reload for the new
  // listeners' verifiers and passports.
  std::shared_ptr<health_monitor> health;
  std::unique_ptr<admin::admin_server> admin;
  bool stopping = false;
  bool reloading = false;
  bool reload_again = false;  // a reload was asked for while one ran

  [[nodiscard]] std::shared_ptr<health_monitor> start_health(
      const std::vector<proxy::listener_options>& listeners) const {
    if (!running.admin) {
      return nullptr;
    }
    return health_monitor::start(io.get_executor(), tpm, listeners,
                                 {.probe_every = running.admin->probe_every});
  }

  // Two-phase, as hitch and ghostunnel do it: the new file is parsed and every listener's TLS
  // context, keys and verifier built aside; only a config that passes all of that replaces the
  // running one. A bad file is logged and changes nothing.
  static asio::awaitable<void> reload(std::shared_ptr<state> self, std::string why) {
    if (self->reloading) {
      self->reload_again = true;
      co_return;
    }
    self->reloading = true;
    do {
      self->reload_again = false;
      const systemd::notifier notify;
      notify.reloading();
      spdlog::info("{}: reloading {}", why, self->config_file.string());
      auto next = reassemble(self->config_file, self->running, self->tpm, self->io.get_executor());
      auto& reloads = metrics::process().config_reloads;
      if (!next.errors.empty()) {
        for (const auto& error : next.errors) {
          spdlog::error("reload: {}", to_string(error));
        }
        spdlog::error("reload refused: {} error(s) in {}; still serving the previous config",
                      next.errors.size(), self->config_file.string());
        reloads.with({"invalid"}).inc();
      } else {
        // Built before the listeners move into the server; adopted only if the reload is.
        auto health = self->start_health(next.listeners);
        auto applying =
            self->server.reconfigure(std::move(next.listeners), next.config->drain_timeout);
        const auto applied = co_await std::move(applying);
        if (!applied && self->stopping) {
          // SIGTERM came while the reload committed: the drain has the running listeners.
          spdlog::warn("reload abandoned: {}", to_string(applied.error()));
          reloads.with({"abandoned"}).inc();
        } else if (!applied) {
          spdlog::error("reload refused: cannot listen: {}; still serving the previous config",
                        to_string(applied.error()));
          reloads.with({"invalid"}).inc();
        } else {
          reloads.with({"ok"}).inc();
          self->running = std::move(*next.config);
          self->tpm = next.tpm;
          self->health = std::move(health);
          apply_log_level(self->running.log_level);
          spdlog::info("reloaded: added={} removed={} kept={}", joined(applied->added),
                       joined(applied->removed), joined(applied->kept));
        }
      }
      if (!self->stopping) {  // after STOPPING=1, systemd must not hear READY=1 again
        notify.ready("serving " + std::to_string(self->running.listeners.size()) + " listener(s)");
      }
    } while (self->reload_again && !self->stopping);
    self->reloading = false;
  }

  // watch_config: a ConfigMap update replaces the file through a symlink swap, which a watch on
  // the file itself would miss; reading it on a timer sees every kind of change.
  static asio::awaitable<void> watch_config(std::shared_ptr<state> self,
                                            std::chrono::milliseconds every, std::string seen) {
    while (!self->stopping) {
      self->watch_timer.expires_after(every);
      auto [ec] = co_await self->watch_timer.async_wait(asio::as_tuple(asio::use_awaitable));
      if (ec || self->stopping) {
        co_return;
      }
      auto now = read_whole(self->config_file);
      // An unreadable or empty file is a write in progress or a fault: the next change shows.
      if (now.empty() || now == seen) {
        continue;
      }
      seen = std::move(now);
      auto reloading = reload(self, "config file changed");
      co_await std::move(reloading);
    }
  }

  // SIGHUP reloads. SIGTERM and SIGINT stop accepting, drain, and let io.run() return once
  // nothing is left: the watchdog stops pinging and the config watch ends once the drain is over.
  static asio::awaitable<void> handle_signals(std::shared_ptr<state> self) {
    for (;;) {
      const int signal = co_await self->signals.async_wait(asio::use_awaitable);
      if (signal == SIGHUP) {
        auto reloading = reload(self, "SIGHUP");
        co_await std::move(reloading);
        continue;
      }
      spdlog::info("{}: stopping, draining open connections for up to {} ms",
                   signal == SIGTERM ? "SIGTERM" : "SIGINT", self->running.drain_timeout.count());
      self->stopping = true;
      self->watch_timer.cancel();
      systemd::notifier{}.stopping();
      co_await self->server.drain(self->running.drain_timeout);
      if (self->watchdog != nullptr) {
        self->watchdog->cancel();
      }
      // Last: /readyz said "draining" all along. Neither leaves work on the loop once gone.
      if (self->admin) {
        self->admin->stop();
      }
      self->health.reset();
      spdlog::info("stopped");
      co_return;
    }
  }
};

supervisor::supervisor(asio::io_context& io, supervised what)
    : state_(std::make_shared<state>(io, std::move(what))) {}

supervisor::~supervisor() = default;

void supervisor::watch_health(const std::vector<proxy::listener_options>& listeners) {
  state_->health = state_->start_health(listeners);
}

void supervisor::adopt_admin(std::unique_ptr<admin::admin_server> admin) {
  state_->admin = std::move(admin);
}

void supervisor::start() {
  // The signal set was made with the state, so signals that come before this coroutine first
  // waits are queued, not lost.
  asio::co_spawn(
      state_->io, [self = state_] { return state::handle_signals(self); },
      [](const std::exception_ptr& e) { log_failure(e, "signal handling"); });
  if (const auto every = state_->running.watch_config) {
    // Read now, before READY=1: a change made as soon as the daemon is ready must be seen as one.
    asio::co_spawn(
        state_->io,
        [self = state_, every = *every, seen = read_whole(state_->config_file)] {
          return state::watch_config(self, every, seen);
        },
        [](const std::exception_ptr& e) { log_failure(e, "watching the config file"); });
  }
}

std::vector<admin::readiness_check> supervisor::readiness() const {
  std::vector<admin::readiness_check> checks;
  checks.push_back({.name = "listeners",
                    .ok = !state_->stopping,
                    .detail = state_->stopping ? "draining: not accepting connections" : ""});
  if (state_->health) {
    auto probed = state_->health->checks();
    checks.insert(checks.end(), std::make_move_iterator(probed.begin()),
                  std::make_move_iterator(probed.end()));
  }
  const bool ready = std::ranges::all_of(checks, [](const auto& check) { return check.ok; });
  metrics::process().ready.with({}).set(ready ? 1 : 0);
  return checks;
}

}  // namespace atls::app
