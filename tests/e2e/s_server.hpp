// An `openssl s_server -www` on a free port, stopped at the end of the test: a real TLS server
// for outbound listeners to talk to.
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "e2e/configs.hpp"
#include "support/loopback.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace atls::test {

struct s_server {
  // Serves the test PKI's server identity; extra holds further s_server options.
  s_server(const temp_dir& dir, const pki& p, const std::vector<std::string>& extra)
      : port(free_port()), proc(options(dir, p, port, extra)) {
    using namespace std::chrono_literals;
    for (int i = 0; i < 200; ++i) {
      if (connect_loopback(port)) {
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
    throw std::runtime_error("openssl s_server did not start");
  }

  std::uint16_t port;
  process proc;

 private:
  static process_options options(const temp_dir& dir, const pki& p, std::uint16_t port,
                                 const std::vector<std::string>& extra) {
    process_options o{.argv = {"openssl", "s_server", "-accept", local(port), "-www", "-cert",
                               (p / "server.crt").string(), "-key", (p / "server.key").string()},
                      .stdout_file = dir / ("s_server" + std::to_string(port) + ".out"),
                      .stderr_file = dir / ("s_server" + std::to_string(port) + ".err")};
    o.argv.insert(o.argv.end(), extra.begin(), extra.end());
    return o;
  }
};

}  // namespace atls::test
