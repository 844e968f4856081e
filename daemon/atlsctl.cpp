// atlsctl: the operator's command-line tool. Later issues add TPM provisioning and evidence
// commands; today it validates configuration the way atlsd start-up does.
#include <iostream>
#include <string_view>
#include <vector>

#include "atls/app/assemble.hpp"

namespace {

constexpr std::string_view usage =
    "usage: atlsctl config check FILE   validate a config as atlsd would load it\n"
    "       atlsctl --version\n";

int config_check(std::string_view file) {
  const auto assembled = atls::app::assemble(file);
  for (const auto& error : assembled.errors) {
    std::cerr << to_string(error) << "\n";
  }
  if (!assembled.errors.empty()) {
    std::cerr << "atlsctl: " << assembled.errors.size() << " error(s) in " << file << "\n";
    return 1;
  }
  std::cout << file << ": OK (" << assembled.config->listeners.size() << " listener(s))\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.size() == 1 && args[0] == "--version") {
    std::cout << "atlsctl " ATLS_VERSION "\n";
    return 0;
  }
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << usage;
    return 0;
  }
  if (args.size() == 3 && args[0] == "config" && args[1] == "check") {
    try {
      return config_check(args[2]);
    } catch (const std::exception& e) {
      std::cerr << "atlsctl: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << usage;
  return 2;
}
