// atlsd: the composition root. Reads argv and the config, wires the library together, handles
// signals and talks to systemd. Everything else lives in lib/.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "atls/admin/admin_server.hpp"
#include "atls/app/assemble.hpp"
#include "atls/app/health.hpp"
#include "atls/metrics/atlsd_metrics.hpp"
#include "atls/proxy/server.hpp"
#include "atls/systemd/activation.hpp"
#include "atls/systemd/notify.hpp"
#include "atls/systemd/watchdog.hpp"

namespace asio = boost::asio;

namespace {

constexpr std::string_view usage =
    "usage: atlsd --config FILE [--check]\n"
    "       atlsd --version\n"
    "\n"
    "  --config FILE  the YAML configuration (see config/README.md)\n"
    "  --check        validate the configuration, including the certificate and key files,\n"
    "                 print every error as file:line:column: key: message, and exit\n";

struct arguments {
  std::string config;
  bool check = false;
};

spdlog::level::level_enum to_spdlog(atls::config::log_level level) {
  switch (level) {
    case atls::config::log_level::trace:
      return spdlog::level::trace;
    case atls::config::log_level::debug:
      return spdlog::level::debug;
    case atls::config::log_level::info:
      return spdlog::level::info;
    case atls::config::log_level::warn:
      return spdlog::level::warn;
    case atls::config::log_level::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// What the control loop (signals, reloads, drain) works with; lives in run()'s frame, which
// outlasts io.run().
struct control {
  asio::io_context& io;
  std::filesystem::path config_file;
  atls::config::daemon_config running;
  std::shared_ptr<atls::attest::tpm> tpm;
  atls::proxy::server& server;
  atls::systemd::watchdog* watchdog = nullptr;
  asio::steady_timer watch_timer{io};
  // With an admin listener: the probes behind /readyz, rebuilt at each reload for the new
  // listeners' verifiers and passports.
  std::shared_ptr<atls::app::health_monitor> health;
  std::unique_ptr<atls::admin::admin_server> admin;
  bool stopping = false;
  bool reloading = false;
  bool reload_again = false;  // a reload was asked for while one ran
};

std::string read_whole(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// /readyz: the listeners (bound and not draining) and whatever the health monitor probes.
std::vector<atls::admin::readiness_check> readiness(const control& c) {
  std::vector<atls::admin::readiness_check> checks;
  checks.push_back({.name = "listeners",
                    .ok = !c.stopping,
                    .detail = c.stopping ? "draining: not accepting connections" : ""});
  if (c.health) {
    auto probed = c.health->checks();
    checks.insert(checks.end(), std::make_move_iterator(probed.begin()),
                  std::make_move_iterator(probed.end()));
  }
  const bool ready = std::ranges::all_of(checks, [](const auto& check) { return check.ok; });
  atls::metrics::process().ready.with({}).set(ready ? 1 : 0);
  return checks;
}

std::shared_ptr<atls::app::health_monitor> start_health(
    control& c, const std::vector<atls::proxy::listener_options>& listeners) {
  if (!c.running.admin) {
    return nullptr;
  }
  return atls::app::health_monitor::start(c.io.get_executor(), c.tpm, listeners,
                                          {.probe_every = c.running.admin->probe_every});
}

// Two-phase, as hitch and ghostunnel do it: the new file is parsed and every listener's TLS
// context, keys and verifier built aside; only a config that passes all of that replaces the
// running one. A bad file is logged and changes nothing.
asio::awaitable<void> reload(control& c, std::string why) {
  if (c.reloading) {
    c.reload_again = true;
    co_return;
  }
  c.reloading = true;
  do {
    c.reload_again = false;
    const atls::systemd::notifier notify;
    notify.reloading();
    spdlog::info("{}: reloading {}", why, c.config_file.string());
    auto next = atls::app::reassemble(c.config_file, c.running, c.tpm, c.io.get_executor());
    auto& reloads = atls::metrics::process().config_reloads;
    if (!next.errors.empty()) {
      for (const auto& error : next.errors) {
        spdlog::error("reload: {}", to_string(error));
      }
      spdlog::error("reload refused: {} error(s) in {}; still serving the previous config",
                    next.errors.size(), c.config_file.string());
      reloads.with({"invalid"}).inc();
    } else {
      // Built before the listeners move into the server; adopted only if the reload is.
      auto health = start_health(c, next.listeners);
      auto applying = c.server.reconfigure(std::move(next.listeners), next.config->drain_timeout);
      const auto applied = co_await std::move(applying);
      if (!applied && c.stopping) {
        // SIGTERM came while the reload committed: the drain has the running listeners.
        spdlog::warn("reload abandoned: {}", atls::to_string(applied.error()));
        reloads.with({"abandoned"}).inc();
      } else if (!applied) {
        spdlog::error("reload refused: cannot listen: {}; still serving the previous config",
                      atls::to_string(applied.error()));
        reloads.with({"invalid"}).inc();
      } else {
        reloads.with({"ok"}).inc();
        c.running = std::move(*next.config);
        c.tpm = next.tpm;
        c.health = std::move(health);
        spdlog::set_level(to_spdlog(c.running.log_level));
        const auto join = [](const std::vector<std::string>& names) {
          std::string out;
          for (const auto& n : names) {
            out += (out.empty() ? "" : ",") + n;
          }
          return out.empty() ? std::string("-") : out;
        };
        spdlog::info("reloaded: added={} removed={} kept={}", join(applied->added),
                     join(applied->removed), join(applied->kept));
      }
    }
    if (!c.stopping) {  // after STOPPING=1, systemd must not hear READY=1 again
      notify.ready("serving " + std::to_string(c.running.listeners.size()) + " listener(s)");
    }
  } while (c.reload_again && !c.stopping);
  c.reloading = false;
}

// watch_config: a ConfigMap update replaces the file through a symlink swap, which a watch on
// the file itself would miss; reading it on a timer sees every kind of change.
asio::awaitable<void> watch_config(control& c, std::chrono::milliseconds every, std::string seen) {
  while (!c.stopping) {
    c.watch_timer.expires_after(every);
    auto [ec] = co_await c.watch_timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec || c.stopping) {
      co_return;
    }
    auto now = read_whole(c.config_file);
    // An unreadable or empty file is a write in progress or a fault: the next change shows.
    if (now.empty() || now == seen) {
      continue;
    }
    seen = std::move(now);
    auto reloading = reload(c, "config file changed");
    co_await std::move(reloading);
  }
}

// SIGHUP reloads. SIGTERM and SIGINT stop accepting, drain, and let io.run() return once
// nothing is left: the watchdog stops pinging and the config watch ends once the drain is over.
asio::awaitable<void> handle_signals(asio::signal_set& signals, control& c) {
  for (;;) {
    const int signal = co_await signals.async_wait(asio::use_awaitable);
    if (signal == SIGHUP) {
      auto reloading = reload(c, "SIGHUP");
      co_await std::move(reloading);
      continue;
    }
    spdlog::info("{}: stopping, draining open connections for up to {} ms",
                 signal == SIGTERM ? "SIGTERM" : "SIGINT", c.running.drain_timeout.count());
    c.stopping = true;
    c.watch_timer.cancel();
    atls::systemd::notifier{}.stopping();
    co_await c.server.drain(c.running.drain_timeout);
    if (c.watchdog != nullptr) {
      c.watchdog->cancel();
    }
    // Last: /readyz said "draining" all along. Neither leaves work on the loop once gone.
    if (c.admin) {
      c.admin->stop();
    }
    c.health.reset();
    spdlog::info("stopped");
    co_return;
  }
}

void log_failure(const std::exception_ptr& e, std::string_view what) {
  if (!e) {
    return;
  }
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::critical("{} failed: {}", what, ex.what());
  }
}

int run(const arguments& args) {
  // Signals, listeners, drain and verifier clients on this thread; connections on `threads`
  // loops of their own.
  asio::io_context io(1);
  auto assembled = atls::app::assemble(args.config, io.get_executor());
  for (const auto& error : assembled.errors) {
    std::cerr << to_string(error) << "\n";
  }
  if (!assembled.errors.empty()) {
    std::cerr << "atlsd: " << assembled.errors.size() << " error(s) in " << args.config << "\n";
    return 1;
  }
  const auto& config = *assembled.config;
  if (args.check) {
    std::cout << args.config << ": OK (" << config.listeners.size() << " listener(s))\n";
    return 0;
  }

  spdlog::set_level(to_spdlog(config.log_level));
  // Before the connection loops start their threads: taking the sockets edits the environment
  // (it unsets LISTEN_FDS and friends, which no child of ours should inherit).
  auto activated = atls::systemd::take_activated_sockets();
  if (!activated) {
    spdlog::critical("socket activation: {}", atls::to_string(activated.error()));
    return 1;
  }
  atls::net::event_loops connection_loops(config.threads);
  atls::proxy::server server(io, connection_loops);
  control c{.io = io,
            .config_file = args.config,
            .running = *assembled.config,
            .tpm = assembled.tpm,
            .server = server};
  c.health = start_health(c, assembled.listeners);
  if (auto bound = server.bind(std::move(assembled.listeners), *activated); !bound) {
    spdlog::critical("cannot listen: {}", atls::to_string(bound.error()));
    return 1;
  }
  if (const auto& admin = c.running.admin) {
    c.admin = std::make_unique<atls::admin::admin_server>(
        io.get_executor(),
        atls::admin::admin_options{
            .listen = admin->listen,
            .handlers = {
                .readiness = [&c] { return readiness(c); },
                .metrics = [] { return atls::metrics::process().registry.exposition(); }}});
    if (auto bound = c.admin->bind(); !bound) {
      spdlog::critical("cannot listen: {}", atls::to_string(bound.error()));
      return 1;
    }
    c.admin->start();
    spdlog::info("admin listener on {}: /healthz /readyz /metrics",
                 atls::net::to_string(c.admin->local_endpoint()));
  }
  server.start();

  // The pings vouch for this loop (listeners, signals, drain) and for every connection loop.
  std::unique_ptr<atls::systemd::watchdog> watchdog;
  if (const auto interval = atls::systemd::watchdog_interval()) {
    atls::systemd::watchdog_options options{.interval = *interval};
    options.loops.reserve(connection_loops.size());
    for (std::size_t i = 0; i < connection_loops.size(); ++i) {
      options.loops.push_back(
          {"connection loop " + std::to_string(i), connection_loops.executor(i)});
    }
    watchdog = std::make_unique<atls::systemd::watchdog>(io.get_executor(), std::move(options));
    spdlog::info("systemd watchdog: WATCHDOG=1 every {} ms while the loops are healthy",
                 std::chrono::duration_cast<std::chrono::milliseconds>(*interval / 2).count());
  }
  c.watchdog = watchdog.get();
  // Installed now, before READY=1: a SIGTERM that follows READY=1 at once must drain, not meet
  // the default action because the handling coroutine has not started yet. Signals that come
  // before the coroutine waits are queued by the set.
  asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  asio::co_spawn(
      io, [&signals, &c] { return handle_signals(signals, c); },
      [](const std::exception_ptr& e) { log_failure(e, "signal handling"); });
  if (const auto every = c.running.watch_config) {
    // Read now, before READY=1: a change made as soon as the daemon is ready must be seen as one.
    asio::co_spawn(
        io,
        [&c, every = *every, seen = read_whole(c.config_file)] {
          return watch_config(c, every, seen);
        },
        [](const std::exception_ptr& e) { log_failure(e, "watching the config file"); });
  }
  atls::systemd::notifier{}.ready("serving " + std::to_string(config.listeners.size()) +
                                  " listener(s)");
  spdlog::info("ready: {} listener(s), {} thread(s)", config.listeners.size(), config.threads);

  // Returns once the drain is over (which also ends the listeners' background work, such as
  // passport refreshes); the connection loops end with their last connection.
  io.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_logger_mt("atlsd"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");

  arguments args;
  const std::vector<std::string_view> argv_list(argv + 1, argv + argc);
  for (std::size_t i = 0; i < argv_list.size(); ++i) {
    const auto arg = argv_list[i];
    if (arg == "--config" && i + 1 < argv_list.size()) {
      args.config = argv_list[++i];
    } else if (arg == "--check") {
      args.check = true;
    } else if (arg == "--version") {
      std::cout << "atlsd " ATLS_VERSION "\n";
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    } else {
      std::cerr << "atlsd: unexpected argument '" << arg << "'\n" << usage;
      return 2;
    }
  }
  if (args.config.empty()) {
    std::cerr << "atlsd: --config FILE is required\n" << usage;
    return 2;
  }
  try {
    return run(args);
  } catch (const std::exception& e) {
    spdlog::critical("fatal: {}", e.what());
    return 1;
  }
}
