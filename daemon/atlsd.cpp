// atlsd: the composition root. Reads argv and the config, wires the library together and hands
// the running daemon to app::supervisor (signals, reloads, drain, readiness). Everything else
// lives in lib/.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "atls/admin/admin_server.hpp"
#include "atls/app/assemble.hpp"
#include "atls/app/supervisor.hpp"
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

  atls::app::apply_log_level(config.log_level);
  // Before the connection loops start their threads: taking the sockets edits the environment
  // (it unsets LISTEN_FDS and friends, which no child of ours should inherit).
  auto activated = atls::systemd::take_activated_sockets();
  if (!activated) {
    spdlog::critical("socket activation: {}", atls::to_string(activated.error()));
    return 1;
  }
  atls::net::event_loops connection_loops(config.threads);
  atls::proxy::server server(io, connection_loops);

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
  // Made here, so that its signal set catches SIGTERM from now on: one that comes before
  // start() waits in the set and drains once the daemon runs.
  atls::app::supervisor supervisor(io, {.config_file = args.config,
                                        .running = config,
                                        .tpm = assembled.tpm,
                                        .server = server,
                                        .watchdog = watchdog.get()});
  supervisor.watch_health(assembled.listeners);
  if (auto bound = server.bind(std::move(assembled.listeners), *activated); !bound) {
    spdlog::critical("cannot listen: {}", atls::to_string(bound.error()));
    return 1;
  }
  if (const auto& admin = config.admin) {
    auto listener = std::make_unique<atls::admin::admin_server>(
        io.get_executor(),
        atls::admin::admin_options{
            .listen = admin->listen,
            .handlers = {
                .readiness = [&supervisor] { return supervisor.readiness(); },
                .metrics = [] { return atls::metrics::process().registry.exposition(); }}});
    if (auto bound = listener->bind(); !bound) {
      spdlog::critical("cannot listen: {}", atls::to_string(bound.error()));
      return 1;
    }
    listener->start();
    spdlog::info("admin listener on {}: /healthz /readyz /metrics",
                 atls::net::to_string(listener->local_endpoint()));
    supervisor.adopt_admin(std::move(listener));
  }
  server.start();
  supervisor.start();
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
