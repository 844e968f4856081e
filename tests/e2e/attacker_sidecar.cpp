#include "e2e/attacker_sidecar.hpp"

#include <chrono>
#include <exception>
#include <fstream>
#include <future>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "atls/app/assemble.hpp"
#include "atls/attest/tpm.hpp"
#include "atls/attested/early_attestation.hpp"
#include "atls/attested/post_handshake.hpp"
#include "atls/tls/context.hpp"

namespace atls::test {

namespace asio = boost::asio;

namespace {

std::shared_ptr<EVP_PKEY> load_private_key(const std::filesystem::path& file) {
  std::unique_ptr<BIO, decltype(&BIO_free)> in(BIO_new_file(file.c_str(), "r"), &BIO_free);
  if (!in) {
    throw std::runtime_error("cannot read " + file.string());
  }
  EVP_PKEY* key = PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) {
    throw std::runtime_error("no private key in " + file.string());
  }
  return {key, &EVP_PKEY_free};
}

attest::bytes spki_of_key(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int size = i2d_PUBKEY(key, &der);
  if (size <= 0) {
    throw std::runtime_error("cannot encode a public key");
  }
  attest::bytes out(der, der + size);
  OPENSSL_free(der);
  return out;
}

}  // namespace

rigged_attester::rigged_attester(std::shared_ptr<attest::attester> honest, options o)
    : honest_(std::move(honest)), options_(std::move(o)) {
  if (!options_.tls_key_file.empty()) {
    software_key_ = load_private_key(options_.tls_key_file);
    software_spki_ = spki_of_key(software_key_.get());
  }
}

asio::awaitable<result<attest::evidence_bundle>> rigged_attester::evidence(attest::bytes nonce) {
  ++asked_;
  if (options_.replay_first) {
    const std::scoped_lock lock(mutex_);
    if (first_) {
      co_return *first_;
    }
  }
  auto asked = options_.nonce ? options_.nonce(std::move(nonce)) : std::move(nonce);
  auto& source = options_.evidence_from ? *options_.evidence_from : *honest_;
  auto quoting = source.evidence(std::move(asked));
  auto got = co_await std::move(quoting);
  if (!got) {
    co_return got;
  }
  if (options_.tamper) {
    auto decoded = attest::decode(got->data);
    if (!decoded) {
      co_return decoded.error();
    }
    options_.tamper(*decoded);
    got->data = attest::encode(*decoded);
  }
  if (options_.replay_first) {
    const std::scoped_lock lock(mutex_);
    first_ = *got;
  }
  co_return got;
}

std::shared_ptr<EVP_PKEY> rigged_attester::tls_key() const {
  return software_key_ ? software_key_ : honest_->tls_key();
}

const attest::bytes& rigged_attester::tls_public_key() const {
  return software_key_ ? software_spki_ : honest_->tls_public_key();
}

asio::awaitable<result<attest::bytes>> rigged_attester::with_tls_key(
    std::function<result<attest::bytes>(EVP_PKEY*)> sign) {
  if (software_key_) {
    co_return sign(software_key_.get());
  }
  auto signing = honest_->with_tls_key(std::move(sign));
  auto signed_bytes = co_await std::move(signing);
  co_return signed_bytes;
}

std::shared_ptr<attest::attester> tpm_attester_at(const std::string& tcti) {
  auto device = std::make_shared<attest::tpm>(attest::tpm_options{.tcti = tcti});
  auto opened = attest::tpm_attester::open(
      device, attest::pcr_selection{.hash_alg = 0x000B, .pcrs = {0, 1, 2, 3, 4, 5, 6, 7}});
  REQUIRE_MESSAGE(opened.has_value(), "cannot open the TPM at " << tcti);
  return std::shared_ptr<attest::attester>(std::move(*opened));
}

void swap_attester(proxy::listener_options& listener, std::shared_ptr<attest::attester> attester) {
  REQUIRE(listener.attestation);
  REQUIRE(listener.attestation->self);
  auto settings = std::make_shared<attested::settings>(*listener.attestation);
  settings->self->attester = std::move(attester);
  listener.attestation = std::move(settings);
}

void swap_tls_identity(proxy::listener_options& listener, const std::filesystem::path& cert,
                       const std::filesystem::path& key) {
  REQUIRE(listener.attestation);
  auto made = tls::context::make_server({.cert_chain = cert, .private_key = key});
  REQUIRE(made.has_value());
  const auto& points = listener.attestation->code_points;
  const auto installed = listener.attestation->mode == attested::mode::post_handshake
                             ? attested::install_post_handshake(made->native_handle(), points)
                             : attested::install_early_attestation(made->native_handle(), points);
  REQUIRE(installed.has_value());
  listener.tls = std::move(*made);
}

attacker_sidecar::attacker_sidecar(const temp_dir& dir, std::string_view name,
                                   std::string_view config_yaml, const rig& change) {
  const auto file = dir / (std::string(name) + ".yaml");
  std::ofstream(file) << config_yaml;
  auto built = app::assemble(file, io_.get_executor());
  std::string problems;
  for (const auto& e : built.errors) {
    problems += config::to_string(e) + "\n";
  }
  REQUIRE_MESSAGE(built.errors.empty(), problems);
  tpm_ = std::move(built.tpm);
  for (auto& listener : built.listeners) {
    change(listener, io_.get_executor());
  }
  server_.emplace(io_, loops_);
  const auto bound = server_->bind(std::move(built.listeners));
  REQUIRE_MESSAGE(bound.has_value(), (bound ? "" : bound.error().detail));
  server_->start();
  work_.emplace(io_.get_executor());
  std::promise<void> ran_out;
  ran_out_ = ran_out.get_future();
  thread_ = std::thread([this, done = std::move(ran_out)]() mutable {
    io_.run();
    done.set_value();
  });
}

attacker_sidecar::~attacker_sidecar() {
  std::promise<void> drained;
  auto drained_now = drained.get_future();
  asio::co_spawn(
      io_, [this]() -> asio::awaitable<void> { co_await server_->drain(std::chrono::seconds(1)); },
      [&drained](const std::exception_ptr&) { drained.set_value(); });
  CHECK(drained_now.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  // The listeners' settings go with the server, and with them any passport a rig started, whose
  // refresh loop is the last work on io_.
  server_.reset();
  work_.reset();
  if (ran_out_.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    FAIL_CHECK("the attacker's sidecar still has work 10 s after its drain");
    io_.stop();  // the test's own loop, so that the test ends
  }
  thread_.join();
}

}  // namespace atls::test
