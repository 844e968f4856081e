// The Veraison-API test server of tests/support as a program, for the demo (`deploy/demo.sh
// --veraison`) and for trying atlsd by hand. It is provisioned the way an operator provisions a
// real Veraison: from the two CoMID documents `atlsctl veraison endorsements` writes.
//
//   atls-veraison-test-server --endorsements DIR --ear-key-out FILE [--delay-ms N]
//
// Prints "listening on http://127.0.0.1:PORT" once it serves, writes the public key that signs
// its EARs to FILE (PEM), and runs until SIGTERM or SIGINT.
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "atls/verify/endorsements.hpp"
#include "atls/verify/jose.hpp"

#include "support/evidence_builder.hpp"
#include "support/veraison_server.hpp"
#include <pthread.h>

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot read " + path);
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

int serve(const std::string& endorsements_dir, const std::string& ear_key_out, int delay_ms) {
  // Blocked before the server's thread starts, which inherits the mask: only sigwait sees them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  const auto endorsed =
      atls::verify::read_endorsements(
          read_file(endorsements_dir + "/" + std::string(atls::verify::trust_anchor_file_name)),
          read_file(endorsements_dir + "/" + std::string(atls::verify::reference_values_file_name)))
          .value();
  atls::test::veraison_server server({
      .trust_anchors = {{atls::verify::instance_id_of(endorsed.instance_id), endorsed.ak_spki}},
      .reference = endorsed.reference,
      .check_nonce = true,
  });
  server.faults().delay_ms = delay_ms;
  const auto published = atls::verify::parse_jwk(server.ear_key_jwk()).value();
  std::ofstream(ear_key_out) << atls::test::public_pem_of(published.key.get());

  std::cout << "listening on " << server.base_url() << std::endl;
  int signal = 0;
  sigwait(&stop, &signal);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string endorsements;
  std::string ear_key_out;
  int delay_ms = 0;  // before every answer: a verifier that far away, for benchmarks
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--endorsements") {
      endorsements = argv[i + 1];
    } else if (flag == "--ear-key-out") {
      ear_key_out = argv[i + 1];
    } else if (flag == "--delay-ms") {
      delay_ms = std::atoi(argv[i + 1]);
    }
  }
  if (endorsements.empty() || ear_key_out.empty() || delay_ms < 0) {
    std::cerr << "usage: atls-veraison-test-server --endorsements DIR --ear-key-out FILE "
                 "[--delay-ms N]\n";
    return 2;
  }
  try {
    return serve(endorsements, ear_key_out, delay_ms);
  } catch (const std::exception& e) {
    std::cerr << "atls-veraison-test-server: " << e.what() << "\n";
    return 1;
  }
}
