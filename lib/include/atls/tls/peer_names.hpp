// Allow-lists on the names in a peer certificate's subjectAltName.
#pragma once

#include <string>
#include <vector>

using X509 = struct x509_st;

namespace atls::tls {

// Empty lists mean "any certificate that chains to the CA". Otherwise at least one SAN must
// match: a DNS name exactly (ASCII case-insensitive), or a URI exactly or, for an entry ending
// in "/*", any URI that starts with the entry without its "*" (SPIFFE trust-domain or path
// prefixes: "spiffe://example.org/ns/prod/*").
struct peer_name_policy {
  std::vector<std::string> allow_dns;
  std::vector<std::string> allow_uris;

  [[nodiscard]] bool restricts() const { return !allow_dns.empty() || !allow_uris.empty(); }
};

struct peer_names {
  std::vector<std::string> dns;
  std::vector<std::string> uris;
};

// The dNSName and uniformResourceIdentifier SAN entries of a certificate. Entries with embedded
// NUL bytes are skipped: they are a known trick to fool C string comparisons.
peer_names subject_alt_names(X509* cert);

// Pure: whether the names satisfy the policy.
bool names_allowed(const peer_name_policy& policy, const peer_names& names);

}  // namespace atls::tls
