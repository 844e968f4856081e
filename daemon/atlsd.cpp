// atlsd: the composition root. Reads argv and the config, wires the library together, handles
// signals and talks to systemd. Everything else lives in lib/.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "atls/app/assemble.hpp"
#include "atls/proxy/server.hpp"

#include <systemd/sd-daemon.h>

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

// Stops accepting, drains, and lets io.run() return once nothing is left. SIGHUP is caught so
// that a stray reload signal does not kill the process with its default action.
asio::awaitable<void> handle_signals(atls::proxy::server& server,
                                     std::chrono::milliseconds drain_timeout) {
  asio::signal_set signals(co_await asio::this_coro::executor, SIGINT, SIGTERM, SIGHUP);
  for (;;) {
    const int signal = co_await signals.async_wait(asio::use_awaitable);
    if (signal == SIGHUP) {
      spdlog::warn("SIGHUP: configuration reload is not implemented yet; restart to apply changes");
      continue;
    }
    spdlog::info("{}: stopping, draining open connections for up to {} ms",
                 signal == SIGTERM ? "SIGTERM" : "SIGINT", drain_timeout.count());
    sd_notify(0, "STOPPING=1");
    co_await server.drain(drain_timeout);
    spdlog::info("stopped");
    co_return;
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
  atls::net::event_loops connection_loops(config.threads);
  atls::proxy::server server(io, connection_loops);
  if (auto bound = server.bind(std::move(assembled.listeners)); !bound) {
    spdlog::critical("cannot listen: {}", atls::to_string(bound.error()));
    return 1;
  }
  server.start();
  asio::co_spawn(io, handle_signals(server, config.drain_timeout), [](const std::exception_ptr& e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::critical("signal handling failed: {}", ex.what());
      }
    }
  });
  sd_notifyf(0, "READY=1\nSTATUS=serving %zu listener(s)\nMAINPID=%lu", config.listeners.size(),
             static_cast<unsigned long>(getpid()));
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
