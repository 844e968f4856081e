// What one listener asks of attestation on its connections: the runtime form of the config's
// `attestation` block (config/README.md, "Attestation"), built by app/assemble. Shared, read-only
// once built: every connection of the listener reads the same settings.
//
// Words as in RFC 9334: this sidecar is the relying party (`peer` is set: the peer must attest),
// the attester (`self` is set), or both.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "atls/attest/attester.hpp"
#include "atls/attested/passport.hpp"
#include "atls/tls/code_points.hpp"
#include "atls/tls/exported_authenticator.hpp"
#include "atls/verify/appraisal_policy.hpp"
#include "atls/verify/jose.hpp"
#include "atls/verify/verifier.hpp"

namespace atls::attested {

enum class mode : std::uint8_t {
  // RFC 9261 Exported Authenticators after a normal handshake (draft-fossati-seat-expat), on
  // the framed stream of tls/attestation_framing.hpp. The default: its binder comes from the
  // connection's exporter, which no relay can obtain.
  post_handshake,
  // The remoteAttestation extension inside the handshake (draft-fossati-seat-early-attestation).
  intra_handshake,
};

enum class model : std::uint8_t {
  background_check,  // the attester sends evidence; the relying party asks its verifier
  passport,          // the attester presents an EAR it obtained; the relying party checks it
};

// The relying party's rules.
struct relying_party {
  // false: a peer that offers no attestation is served as plain TLS; one that offers it must
  // still pass.
  bool required = true;
  attested::model model = model::background_check;
  std::shared_ptr<verify::verifier> verifier;           // background_check
  std::vector<verify::verification_key> passport_keys;  // passport: the EAR signers trusted
  verify::appraisal_policy accept;
  // SHA-256 of the attested key's DER SPKI. Empty: any attester `accept` accepts (RA + PKI).
  std::vector<std::array<std::uint8_t, 32>> pinned_keys;
  // Re-attestation (background-check): a round whose verifier cannot be reached
  // (verifier_unreachable) within this long of the connection's last accepted round is deferred:
  // no verdict, the connection keeps its last result, and the next round tries again. Past it,
  // the round closes the connection. Zero: no grace. The first appraisal never gets one.
  std::chrono::milliseconds verifier_grace{std::chrono::minutes(1)};
};

// The attester's means.
struct attesting_party {
  std::shared_ptr<attest::attester> attester;  // its tls_key() is the connection's key
  attested::model model = model::background_check;
  std::shared_ptr<const attested::passport> passport;  // model passport: the EAR presented
};

struct settings {
  attested::mode mode = mode::post_handshake;
  std::optional<relying_party> peer;
  std::optional<attesting_party> self;
  tls::binder_options binder;
  tls::attestation_code_points code_points;
  // Zero: once per connection. Otherwise the relying party asks again this often (post-handshake).
  std::chrono::milliseconds reattest_every{0};
  // Set on the settings a reload brings: every open connection of the listener must satisfy
  // them (`peer`) or close. A post-handshake connection whose peer attested runs a fresh exchange
  // judged by the new rules, on the binder and code points it was set up with (those belong to
  // the channel). One set up without the peer attesting closes when the new rules require it
  // to. Post-handshake only (the config refuses it with intra-handshake).
  bool reattest_on_reload = false;
};

}  // namespace atls::attested
