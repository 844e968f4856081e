// Forged passports for the attack suite: a verifier, on the attacker's side, that issues EARs the
// way an attacker would make them (signed with a key of its own, with alg none, expired, or with
// a payload changed after signing) instead of appraising anything. Given to atlsd's own
// attested::passport in an attacker_sidecar, the attesting listener presents them as any passport
// (atlsd's passport loop checks only what it is told: the attested key and the result's exp).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include "atls/attested/passport.hpp"
#include "atls/proxy/server.hpp"
#include "atls/verify/verifier.hpp"

#include "support/jws_signer.hpp"

namespace atls::test {

enum class passport_forgery {
  none,         // a genuine EAR: signed by the trusted key, fresh (the control)
  another_key,  // signed by a key the relying party does not trust
  alg_none,     // {"alg":"none"} and an empty signature
  tampered,     // signed by the trusted key, then the payload changed (status, trust vector)
  expired,      // signed by the trusted key, issued 2 minutes ago, exp a minute ago
};

class passport_issuer {
 public:
  // A fresh P-256 key: the "verifier" the relying party trusts; its public key as PEM in `pem`.
  explicit passport_issuer(std::filesystem::path pem);

  [[nodiscard]] const std::filesystem::path& trusted_key_pem() const { return pem_; }

  // Replaces the passport of `listener` (which must attest with model passport) with one that
  // atlsd's passport loop fetches from a verifier that issues EARs forged as `how`, for the
  // listener's attester's key, on `executor`.
  void rig(proxy::listener_options& listener, const boost::asio::any_io_executor& executor,
           passport_forgery how);

  // Whether the rigged passport has an EAR to present yet (the loop fetches it once started).
  [[nodiscard]] bool presenting() const;

 private:
  std::filesystem::path pem_;
  std::shared_ptr<EVP_PKEY> key_;
  // Weak: the listener's settings own the passport, so that it ends with the attacker's
  // sidecar, before the loop it runs on.
  std::weak_ptr<const attested::passport> started_;
};

}  // namespace atls::test
