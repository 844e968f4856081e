#include "atls/tls/peer_names.hpp"

#include <algorithm>
#include <memory>
#include <string_view>

#include <openssl/x509v3.h>

namespace atls::tls {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return std::ranges::equal(a, b, [](char x, char y) {
    const auto lower = [](char c) {
      return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
    };
    return lower(x) == lower(y);
  });
}

bool uri_matches(std::string_view pattern, std::string_view uri) {
  if (pattern.ends_with("/*")) {
    const auto prefix = pattern.substr(0, pattern.size() - 1);  // keeps the trailing '/'
    return uri.size() > prefix.size() && uri.starts_with(prefix);
  }
  return uri == pattern;
}

std::string_view ia5_view(const ASN1_IA5STRING* s) {
  return {reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
          static_cast<std::size_t>(ASN1_STRING_length(s))};
}

}  // namespace

peer_names subject_alt_names(X509* cert) {
  peer_names out;
  struct names_deleter {
    void operator()(GENERAL_NAMES* n) const { GENERAL_NAMES_free(n); }
  };
  const std::unique_ptr<GENERAL_NAMES, names_deleter> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) {
    return out;
  }
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    std::vector<std::string>* into = nullptr;
    if (name->type == GEN_DNS) {
      into = &out.dns;
    } else if (name->type == GEN_URI) {
      into = &out.uris;
    } else {
      continue;
    }
    const auto text = ia5_view(name->d.ia5);
    if (text.find('\0') != std::string_view::npos) {
      continue;
    }
    into->emplace_back(text);
  }
  return out;
}

bool names_allowed(const peer_name_policy& policy, const peer_names& names) {
  if (!policy.restricts()) {
    return true;
  }
  for (const auto& dns : names.dns) {
    for (const auto& allowed : policy.allow_dns) {
      if (iequals(dns, allowed)) {
        return true;
      }
    }
  }
  for (const auto& uri : names.uris) {
    for (const auto& allowed : policy.allow_uris) {
      if (uri_matches(allowed, uri)) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace atls::tls
