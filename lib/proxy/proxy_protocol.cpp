// PROXY protocol v2 header codec (doc/proxy-protocol.txt of haproxy, section 2.2). Every read
// checks the bytes left first; the decoder accepts only the encoder's canonical form.
#include "atls/proxy/proxy_protocol.hpp"

#include <algorithm>
#include <string>

#include "atls/common/hex.hpp"

namespace atls::proxy::pp2 {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "atls.proxy"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::value_too_long:
        return "PROXY protocol value too long";
      case errc::invalid_header:
        return "PROXY protocol header breaks a rule of its format";
      case errc::malformed:
        return "malformed PROXY protocol v2 header";
    }
    return "unknown atls.proxy error";
  }
};

// Version 2 in the high nibble, command PROXY in the low one (section 2.2): the connection was
// relayed for another node, whose endpoints the address block gives.
constexpr std::uint8_t version_proxy = 0x21;
constexpr std::uint8_t family_unspec = 0x00;
constexpr std::uint8_t family_tcp4 = 0x11;
constexpr std::uint8_t family_tcp6 = 0x21;
constexpr std::size_t tcp6_size = 2 * 16 + 2 * 2;
constexpr std::size_t tlv_head_size = 3;       // type, 16-bit length
constexpr std::size_t ssl_fixed_size = 1 + 4;  // <client>, <verify>
constexpr std::size_t digest_text_size = 64;
constexpr std::uint8_t known_client_bits = client_ssl | client_cert_conn | client_cert_sess;

constexpr attestation_status all_statuses[] = {
    attestation_status::unattested, attestation_status::affirming, attestation_status::warning,
    attestation_status::contraindicated, attestation_status::none};

using bytes = std::vector<std::uint8_t>;

void put_u16(bytes& out, std::size_t value) {
  out.push_back(static_cast<std::uint8_t>((value >> 8U) & 0xFFU));
  out.push_back(static_cast<std::uint8_t>(value & 0xFFU));
}

void put_u32(bytes& out, std::uint32_t value) {
  put_u16(out, value >> 16U);
  put_u16(out, value & 0xFFFFU);
}

// Every value is capped far below 64 KiB, so the 16-bit length cannot overflow.
void put_tlv(bytes& out, std::uint8_t type, std::span<const std::uint8_t> value) {
  out.push_back(type);
  put_u16(out, value.size());
  out.insert(out.end(), value.begin(), value.end());
}

void put_tlv(bytes& out, std::uint8_t type, std::string_view text) {
  put_tlv(out, type, std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

error_code check(const header& h) {
  const auto too_long = [](std::string_view text) { return text.size() > max_value_size; };
  if (too_long(h.alpn) || too_long(h.authority)) {
    return errc::value_too_long;
  }
  if (h.endpoints &&
      h.endpoints->source.address().is_v4() != h.endpoints->destination.address().is_v4()) {
    return errc::invalid_header;
  }
  if (h.tls) {
    if (too_long(h.tls->version) || too_long(h.tls->cipher)) {
      return errc::value_too_long;
    }
    // Section 2.2.6: with PP2_CLIENT_SSL set, the version sub-TLV is always present.
    if (h.tls->version.empty() || (h.tls->client & client_ssl) == 0 ||
        (h.tls->client & ~known_client_bits) != 0) {
      return errc::invalid_header;
    }
  }
  if (h.attestation && h.attestation->status == attestation_status::unattested &&
      (h.attestation->key_sha256 || h.attestation->ear_sha256)) {
    return errc::invalid_header;
  }
  return {};
}

// Reads from the front of a span; every take checks what is left first.
class reader {
 public:
  explicit reader(std::span<const std::uint8_t> data) : rest_(data) {}

  [[nodiscard]] bool empty() const { return rest_.empty(); }

  std::optional<std::span<const std::uint8_t>> take(std::size_t n) {
    if (rest_.size() < n) {
      return std::nullopt;
    }
    const auto out = rest_.first(n);
    rest_ = rest_.subspan(n);
    return out;
  }

  std::optional<std::uint32_t> number(std::size_t width) {
    const auto raw = take(width);
    if (!raw) {
      return std::nullopt;
    }
    std::uint32_t value = 0;
    for (const std::uint8_t b : *raw) {
      value = (value << 8U) | b;
    }
    return value;
  }

  struct tlv {
    std::uint8_t type = 0;
    std::span<const std::uint8_t> value;
  };

  std::optional<tlv> next_tlv() {
    const auto type = number(1);
    const auto length = number(2);
    if (!type || !length) {
      return std::nullopt;
    }
    const auto value = take(*length);
    if (!value) {
      return std::nullopt;
    }
    return tlv{static_cast<std::uint8_t>(*type), *value};
  }

 private:
  std::span<const std::uint8_t> rest_;
};

// A text TLV as the encoder writes it: 1 to max_value_size bytes (empty ones are not sent).
std::optional<std::string> text_value(std::span<const std::uint8_t> value) {
  if (value.empty() || value.size() > max_value_size) {
    return std::nullopt;
  }
  return std::string(value.begin(), value.end());
}

std::optional<sha256_digest> digest_value(std::span<const std::uint8_t> value) {
  if (value.size() != digest_text_size) {
    return std::nullopt;
  }
  const auto nibble = [](std::uint8_t c) -> int {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    return -1;  // uppercase too: the encoder writes lowercase only
  };
  sha256_digest out{};
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int high = nibble(value[2 * i]);
    const int low = nibble(value[2 * i + 1]);
    if (high < 0 || low < 0) {
      return std::nullopt;
    }
    out[i] = static_cast<std::uint8_t>((high << 4) | low);
  }
  return out;
}

std::optional<tls_info> ssl_value(std::span<const std::uint8_t> value) {
  reader r(value);
  const auto client = r.number(1);
  const auto verify = r.number(4);
  if (!client || !verify) {
    return std::nullopt;
  }
  tls_info out;
  out.client = static_cast<std::uint8_t>(*client);
  out.verify = *verify;
  if ((out.client & client_ssl) == 0 || (out.client & ~known_client_bits) != 0) {
    return std::nullopt;
  }
  int last_type = -1;
  while (!r.empty()) {
    const auto sub = r.next_tlv();
    if (!sub || sub->type <= last_type) {
      return std::nullopt;
    }
    last_type = sub->type;
    auto text = text_value(sub->value);
    if (!text) {
      return std::nullopt;
    }
    if (sub->type == subtype_ssl_version) {
      out.version = std::move(*text);
    } else if (sub->type == subtype_ssl_cipher) {
      out.cipher = std::move(*text);
    } else {
      return std::nullopt;
    }
  }
  if (out.version.empty()) {
    return std::nullopt;
  }
  return out;
}

std::optional<attestation_status> status_value(std::span<const std::uint8_t> value) {
  const std::string_view text(reinterpret_cast<const char*>(value.data()), value.size());
  for (const auto status : all_statuses) {
    if (to_string(status) == text) {
      return status;
    }
  }
  return std::nullopt;
}

boost::asio::ip::tcp::endpoint endpoint_of(const boost::asio::ip::address& address,
                                           std::uint32_t port) {
  return {address, static_cast<std::uint16_t>(port)};
}

// The address block of a TCP family, or nothing when it is short.
std::optional<addresses> address_block(reader& r, bool v6) {
  addresses out;
  if (v6) {
    boost::asio::ip::address_v6::bytes_type source{};
    boost::asio::ip::address_v6::bytes_type destination{};
    const auto s = r.take(source.size());
    const auto d = r.take(destination.size());
    if (!s || !d) {
      return std::nullopt;
    }
    std::copy(s->begin(), s->end(), source.begin());
    std::copy(d->begin(), d->end(), destination.begin());
    const auto source_port = r.number(2);
    const auto destination_port = r.number(2);
    if (!source_port || !destination_port) {
      return std::nullopt;
    }
    out.source = endpoint_of(boost::asio::ip::address_v6(source), *source_port);
    out.destination = endpoint_of(boost::asio::ip::address_v6(destination), *destination_port);
    return out;
  }
  const auto source = r.number(4);
  const auto destination = r.number(4);
  const auto source_port = r.number(2);
  const auto destination_port = r.number(2);
  if (!source || !destination || !source_port || !destination_port) {
    return std::nullopt;
  }
  out.source = endpoint_of(boost::asio::ip::address_v4(*source), *source_port);
  out.destination = endpoint_of(boost::asio::ip::address_v4(*destination), *destination_port);
  return out;
}

void put_address(bytes& out, const boost::asio::ip::address& address) {
  if (address.is_v4()) {
    const auto raw = address.to_v4().to_bytes();
    out.insert(out.end(), raw.begin(), raw.end());
  } else {
    const auto raw = address.to_v6().to_bytes();
    out.insert(out.end(), raw.begin(), raw.end());
  }
}

}  // namespace

const boost::system::error_category& pp2_category() noexcept {
  static const category instance;
  return instance;
}

std::string_view to_string(attestation_status status) noexcept {
  switch (status) {
    case attestation_status::unattested:
      return "unattested";
    case attestation_status::affirming:
      return "affirming";
    case attestation_status::warning:
      return "warning";
    case attestation_status::contraindicated:
      return "contraindicated";
    case attestation_status::none:
      return "none";
  }
  return "unattested";
}

result<std::vector<std::uint8_t>> encode(const header& h) {
  if (const auto ec = check(h)) {
    return ec;
  }
  bytes out;
  // Room for the largest header the checks allow, so that the vector never grows.
  out.reserve(fixed_size + tcp6_size + 2 * (tlv_head_size + max_value_size) +
              (tlv_head_size + ssl_fixed_size + 2 * (tlv_head_size + max_value_size)) +
              3 * (tlv_head_size + digest_text_size));
  out.insert(out.end(), signature.begin(), signature.end());
  out.push_back(version_proxy);
  if (!h.endpoints) {
    out.push_back(family_unspec);
  } else {
    out.push_back(h.endpoints->source.address().is_v4() ? family_tcp4 : family_tcp6);
  }
  put_u16(out, 0);  // the length, set below
  if (h.endpoints) {
    put_address(out, h.endpoints->source.address());
    put_address(out, h.endpoints->destination.address());
    put_u16(out, h.endpoints->source.port());
    put_u16(out, h.endpoints->destination.port());
  }
  if (!h.alpn.empty()) {
    put_tlv(out, type_alpn, h.alpn);
  }
  if (!h.authority.empty()) {
    put_tlv(out, type_authority, h.authority);
  }
  if (h.tls) {
    bytes ssl;
    ssl.reserve(ssl_fixed_size + 2 * (tlv_head_size + max_value_size));
    ssl.push_back(h.tls->client);
    put_u32(ssl, h.tls->verify);
    put_tlv(ssl, subtype_ssl_version, h.tls->version);
    if (!h.tls->cipher.empty()) {
      put_tlv(ssl, subtype_ssl_cipher, h.tls->cipher);
    }
    put_tlv(out, type_ssl, ssl);
  }
  if (h.attestation) {
    put_tlv(out, type_attestation_status, to_string(h.attestation->status));
    // Lowercase hex text, as the log line and `peer.pin` write key hashes, so that a workload
    // can copy the value into a log or a request header as it is (PROTOCOL-NOTES.md).
    if (h.attestation->key_sha256) {
      put_tlv(out, type_attested_key_sha256, to_hex(*h.attestation->key_sha256));
    }
    if (h.attestation->ear_sha256) {
      put_tlv(out, type_ear_sha256, to_hex(*h.attestation->ear_sha256));
    }
  }
  const auto length = out.size() - fixed_size;
  if (length > 0xFFFF) {
    return errc::value_too_long;
  }
  out[14] = static_cast<std::uint8_t>(length >> 8U);
  out[15] = static_cast<std::uint8_t>(length & 0xFFU);
  return out;
}

result<std::size_t> header_size(std::span<const std::uint8_t> prefix) {
  if (prefix.size() < fixed_size ||
      !std::equal(signature.begin(), signature.end(), prefix.begin()) ||
      (prefix[12] & 0xF0U) != 0x20U) {
    return errc::malformed;
  }
  return fixed_size + ((std::size_t{prefix[14]} << 8U) | prefix[15]);
}

result<header> decode(std::span<const std::uint8_t> input) {
  const auto size = header_size(input);
  if (!size || *size != input.size() || input[12] != version_proxy) {
    return errc::malformed;
  }
  header out;
  reader r(input.subspan(fixed_size));
  switch (input[13]) {
    case family_unspec:
      break;
    case family_tcp4:
    case family_tcp6:
      out.endpoints = address_block(r, input[13] == family_tcp6);
      if (!out.endpoints) {
        return errc::malformed;
      }
      break;
    default:
      return errc::malformed;
  }
  int last_type = -1;
  while (!r.empty()) {
    const auto tlv = r.next_tlv();
    // One of each, in ascending order: the only order encode() writes.
    if (!tlv || tlv->type <= last_type) {
      return errc::malformed;
    }
    last_type = tlv->type;
    switch (tlv->type) {
      case type_alpn:
      case type_authority: {
        auto text = text_value(tlv->value);
        if (!text) {
          return errc::malformed;
        }
        (tlv->type == type_alpn ? out.alpn : out.authority) = std::move(*text);
        break;
      }
      case type_ssl:
        out.tls = ssl_value(tlv->value);
        if (!out.tls) {
          return errc::malformed;
        }
        break;
      case type_attestation_status: {
        const auto status = status_value(tlv->value);
        if (!status) {
          return errc::malformed;
        }
        out.attestation = attestation_info{.status = *status};
        break;
      }
      case type_attested_key_sha256:
      case type_ear_sha256: {
        // A digest says what the peer proved, so it never comes without a status that says so.
        if (!out.attestation || out.attestation->status == attestation_status::unattested) {
          return errc::malformed;
        }
        const auto digest = digest_value(tlv->value);
        if (!digest) {
          return errc::malformed;
        }
        (tlv->type == type_attested_key_sha256 ? out.attestation->key_sha256
                                               : out.attestation->ear_sha256) = *digest;
        break;
      }
      default:
        return errc::malformed;
    }
  }
  return out;
}

}  // namespace atls::proxy::pp2
