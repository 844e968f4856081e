#include "e2e/passport_forger.hpp"

#include <chrono>
#include <fstream>
#include <string_view>
#include <utility>

#include <boost/json.hpp>
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "atls/attested/passport.hpp"
#include "atls/attested/settings.hpp"

#include "support/evidence_builder.hpp"

namespace atls::test {

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

std::string base64url(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(data.data()),
                                static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  while (!out.empty() && out.back() == '=') {
    out.pop_back();
  }
  for (auto& c : out) {
    c = c == '+' ? '-' : c == '/' ? '_' : c;
  }
  return out;
}

std::int64_t unix_time(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// The claims of an EAR as Veraison's parsec-tpm scheme issues it for an affirmed TPM whose
// attested key is `key` (DER SPKI), with `status` and every trust claim at `tier`.
json::object ear_claims(const verify::bytes& key, std::string_view status, int tier,
                        std::chrono::system_clock::time_point issued,
                        std::optional<std::chrono::system_clock::time_point> expires) {
  json::object trust;
  for (const auto* name : {"instance-identity", "executables", "hardware"}) {
    trust[name] = tier;
  }
  json::object submodule;
  submodule["ear.status"] = status;
  submodule["ear.trustworthiness-vector"] = std::move(trust);
  submodule["ear.appraisal-policy-id"] = "policy:PARSEC_TPM";
  submodule["ear.veraison.key-attestation"] =
      json::object{{"akpub", base64url({reinterpret_cast<const char*>(key.data()), key.size()})}};
  json::object claims;
  claims["eat_profile"] = "tag:github.com,2023:veraison/ear";
  claims["iat"] = unix_time(issued);
  if (expires) {
    claims["exp"] = unix_time(*expires);
  }
  claims["ear.verifier-id"] = json::object{{"build", "N/A"}, {"developer", "Veraison Project"}};
  claims["submods"] = json::object{{"PARSEC_TPM", std::move(submodule)}};
  return claims;
}

// The attacker's "verifier": answers every appraisal with a forged EAR for `key`, and a result
// that tells atlsd's passport loop what it wants to hear (affirming, no exp, that key).
class forging_verifier final : public verify::verifier {
 public:
  forging_verifier(std::shared_ptr<EVP_PKEY> trusted, passport_forgery how, verify::bytes key)
      : trusted_(std::move(trusted)), how_(how), key_(std::move(key)) {}

  asio::awaitable<result<verify::attestation_result>> appraise(verify::bytes, std::string,
                                                               verify::bytes) override {
    const auto now = std::chrono::system_clock::now();
    verify::attestation_result out;
    out.status = verify::ear_status::affirming;
    out.attested_key = key_;
    out.issued_at = verify::clock::now();
    out.raw_ear = forge(now);
    co_return out;
  }

  asio::awaitable<result<verify::bytes>> challenge(std::size_t size) override {
    verify::bytes nonce(size);
    RAND_bytes(nonce.data(), static_cast<int>(nonce.size()));
    co_return nonce;
  }

  asio::awaitable<result<void>> probe() override { co_return result<void>{}; }

  [[nodiscard]] std::string_view name() const noexcept override { return "forger"; }

 private:
  [[nodiscard]] std::string forge(std::chrono::system_clock::time_point now) const {
    using verify::jws_algorithm;
    switch (how_) {
      case passport_forgery::none:
        return sign_jwt(trusted_.get(), jws_algorithm::es256,
                        json::serialize(ear_claims(key_, "affirming", 2, now, std::nullopt)));
      case passport_forgery::another_key: {
        const auto other = generate_signing_key(jws_algorithm::es256);
        return sign_jwt(other.get(), jws_algorithm::es256,
                        json::serialize(ear_claims(key_, "affirming", 2, now, std::nullopt)));
      }
      case passport_forgery::alg_none:
        return base64url(R"({"alg":"none","typ":"JWT"})") + "." +
               base64url(json::serialize(ear_claims(key_, "affirming", 2, now, std::nullopt))) +
               ".";
      case passport_forgery::tampered: {
        // What the verifier really said: contraindicated. What the attacker shows: affirming.
        const auto genuine =
            sign_jwt(trusted_.get(), jws_algorithm::es256,
                     json::serialize(ear_claims(key_, "contraindicated", 96, now, std::nullopt)));
        const auto first = genuine.find('.');
        const auto second = genuine.find('.', first + 1);
        return genuine.substr(0, first + 1) +
               base64url(json::serialize(ear_claims(key_, "affirming", 2, now, std::nullopt))) +
               genuine.substr(second);
      }
      case passport_forgery::expired:
        // Issued within the relying party's max_age, so that only its own exp has passed.
        return sign_jwt(
            trusted_.get(), jws_algorithm::es256,
            json::serialize(ear_claims(key_, "affirming", 2, now - std::chrono::minutes(2),
                                       now - std::chrono::minutes(1))));
    }
    return {};
  }

  std::shared_ptr<EVP_PKEY> trusted_;
  passport_forgery how_;
  verify::bytes key_;
};

}  // namespace

passport_issuer::passport_issuer(std::filesystem::path pem) : pem_(std::move(pem)) {
  auto made = generate_signing_key(verify::jws_algorithm::es256);
  key_ = std::shared_ptr<EVP_PKEY>(made.release(), &EVP_PKEY_free);
  std::ofstream(pem_) << public_pem_of(key_.get());
}

void passport_issuer::rig(proxy::listener_options& listener,
                          const boost::asio::any_io_executor& executor, passport_forgery how) {
  REQUIRE(listener.attestation);
  REQUIRE(listener.attestation->self);
  auto settings = std::make_shared<attested::settings>(*listener.attestation);
  auto& self = *settings->self;
  REQUIRE(self.model == attested::model::passport);
  auto forger = std::make_shared<forging_verifier>(key_, how, self.attester->tls_public_key());
  auto started = attested::passport::start(executor, self.attester, std::move(forger), {});
  started_ = started;
  self.passport = std::move(started);
  listener.attestation = std::move(settings);
}

bool passport_issuer::presenting() const {
  const auto started = started_.lock();
  return started && started->current().has_value();
}

}  // namespace atls::test
