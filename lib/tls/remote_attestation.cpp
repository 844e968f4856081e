#include "atls/tls/remote_attestation.hpp"

#include <algorithm>

namespace atls::tls {

namespace {

// extension_data is opaque<0..2^16-1> (RFC 8446 §4.2): nothing longer reaches a decoder from a
// real handshake, and refusing it here keeps decode and encode exact inverses.
constexpr std::size_t max_extension_data = 0xffff;

error_code malformed() {
  return make_error_code(errc::malformed_attestation_extension);
}

// Reads big-endian integers and length-delimited slices from the front of a span. Each read
// checks the remaining length first and reports false instead of reading past the end.
class wire_reader {
 public:
  explicit wire_reader(std::span<const std::uint8_t> input) : rest_(input) {}

  [[nodiscard]] bool integer(std::size_t width, std::uint32_t& out) {
    if (rest_.size() < width) {
      return false;
    }
    out = 0;
    for (std::size_t i = 0; i < width; ++i) {
      out = (out << 8U) | rest_[i];
    }
    rest_ = rest_.subspan(width);
    return true;
  }

  [[nodiscard]] bool slice(std::size_t size, std::span<const std::uint8_t>& out) {
    if (rest_.size() < size) {
      return false;
    }
    out = rest_.first(size);
    rest_ = rest_.subspan(size);
    return true;
  }

  // A vector with a `width`-byte length prefix (RFC 8446 §3.4).
  [[nodiscard]] bool vector(std::size_t width, std::span<const std::uint8_t>& out) {
    std::uint32_t size = 0;
    return integer(width, size) && slice(size, out);
  }

  [[nodiscard]] bool at_end() const noexcept { return rest_.empty(); }

 private:
  std::span<const std::uint8_t> rest_;
};

void put_integer(bytes& out, std::size_t width, std::uint32_t value) {
  for (std::size_t i = width; i > 0; --i) {
    out.push_back(static_cast<std::uint8_t>(value >> (8 * (i - 1))));
  }
}

// A vector with a `width`-byte length prefix; false when the content does not fit the prefix.
[[nodiscard]] bool put_vector(bytes& out, std::size_t width,
                              std::span<const std::uint8_t> content) {
  if (content.size() >= (std::size_t{1} << (8 * width))) {
    return false;
  }
  put_integer(out, width, static_cast<std::uint32_t>(content.size()));
  out.insert(out.end(), content.begin(), content.end());
  return true;
}

std::span<const std::uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// AttestationScheme. The caps are checked as the lengths are read, before the bytes.
[[nodiscard]] result<attestation_scheme> read_scheme(wire_reader& in) {
  std::uint32_t mechanism = 0;
  if (!in.integer(1, mechanism)) {
    return malformed();
  }
  std::span<const std::uint8_t> field;
  switch (mechanism) {
    case static_cast<std::uint8_t>(attestation_mechanism::evidence): {
      std::uint32_t encoding = 0;
      if (!in.integer(1, encoding)) {
        return malformed();
      }
      if (encoding == static_cast<std::uint8_t>(type_encoding::content_format)) {
        std::uint32_t content_format = 0;
        if (!in.integer(2, content_format)) {
          return malformed();
        }
        return attestation_scheme::evidence_content_format(
            static_cast<std::uint16_t>(content_format));
      }
      if (encoding != static_cast<std::uint8_t>(type_encoding::media_type) ||
          !in.vector(2, field) || field.size() > max_scheme_media_type_size) {
        return malformed();
      }
      return attestation_scheme::evidence_media_type(std::string(field.begin(), field.end()));
    }
    case static_cast<std::uint8_t>(attestation_mechanism::result):
      if (!in.vector(2, field) || field.size() > max_verifier_identity_size) {
        return malformed();
      }
      return attestation_scheme::result_from(bytes(field.begin(), field.end()));
    default:
      // (255) leaves room for mechanisms a later revision may define; we cannot act on them.
      return malformed();
  }
}

[[nodiscard]] bool write_scheme(bytes& out, const attestation_scheme& scheme) {
  if (const auto* result = std::get_if<result_scheme>(&scheme.argument)) {
    if (result->verifier_identity.size() > max_verifier_identity_size) {
      return false;
    }
    out.push_back(static_cast<std::uint8_t>(attestation_mechanism::result));
    return put_vector(out, 2, result->verifier_identity);
  }
  const auto& evidence = std::get<evidence_scheme>(scheme.argument);
  out.push_back(static_cast<std::uint8_t>(attestation_mechanism::evidence));
  if (const auto* content_format = std::get_if<std::uint16_t>(&evidence.type)) {
    out.push_back(static_cast<std::uint8_t>(type_encoding::content_format));
    put_integer(out, 2, *content_format);
    return true;
  }
  const auto& media_type = std::get<std::string>(evidence.type);
  if (media_type.size() > max_scheme_media_type_size) {
    return false;
  }
  out.push_back(static_cast<std::uint8_t>(type_encoding::media_type));
  return put_vector(out, 2, as_bytes(media_type));
}

// AttestationScheme list<0..2^16-1>: the schemes fill the vector exactly.
[[nodiscard]] result<std::vector<attestation_scheme>> read_scheme_list(wire_reader& in) {
  std::span<const std::uint8_t> list;
  if (!in.vector(2, list)) {
    return malformed();
  }
  std::vector<attestation_scheme> out;
  wire_reader items(list);
  while (!items.at_end()) {
    if (out.size() == max_attestation_schemes) {
      return malformed();
    }
    auto scheme = read_scheme(items);
    if (!scheme) {
      return scheme.error();
    }
    out.push_back(std::move(*scheme));
  }
  return out;
}

[[nodiscard]] bool write_scheme_list(bytes& out, const std::vector<attestation_scheme>& list) {
  if (list.size() > max_attestation_schemes) {
    return false;
  }
  bytes content;
  for (const auto& scheme : list) {
    if (!write_scheme(content, scheme)) {
      return false;
    }
  }
  return put_vector(out, 2, content);
}

[[nodiscard]] result<attestation_scheme> decode_single_scheme(
    std::span<const std::uint8_t> extension_data) {
  if (extension_data.size() > max_extension_data) {
    return malformed();
  }
  wire_reader in(extension_data);
  auto scheme = read_scheme(in);
  if (!scheme) {
    return scheme.error();
  }
  if (!in.at_end()) {
    return malformed();
  }
  return scheme;
}

[[nodiscard]] result<bytes> encode_single_scheme(const attestation_scheme& scheme) {
  bytes out;
  if (!write_scheme(out, scheme)) {
    return malformed();
  }
  return out;
}

}  // namespace

result<bytes> encode_client_hello(const client_hello_attestation& value) {
  bytes out;
  if (!write_scheme_list(out, value.server_attester_schemes) ||
      !write_scheme_list(out, value.client_attester_schemes) || out.size() > max_extension_data) {
    return malformed();
  }
  return out;
}

result<client_hello_attestation> decode_client_hello(std::span<const std::uint8_t> extension_data) {
  if (extension_data.size() > max_extension_data) {
    return malformed();
  }
  wire_reader in(extension_data);
  auto server_schemes = read_scheme_list(in);
  if (!server_schemes) {
    return server_schemes.error();
  }
  auto client_schemes = read_scheme_list(in);
  if (!client_schemes) {
    return client_schemes.error();
  }
  if (!in.at_end()) {
    return malformed();
  }
  return client_hello_attestation{std::move(*server_schemes), std::move(*client_schemes)};
}

result<bytes> encode_encrypted_extensions(const attestation_scheme& chosen) {
  return encode_single_scheme(chosen);
}

result<attestation_scheme> decode_encrypted_extensions(
    std::span<const std::uint8_t> extension_data) {
  return decode_single_scheme(extension_data);
}

result<bytes> encode_certificate_request(const attestation_scheme& chosen) {
  return encode_single_scheme(chosen);
}

result<attestation_scheme> decode_certificate_request(
    std::span<const std::uint8_t> extension_data) {
  return decode_single_scheme(extension_data);
}

result<bytes> encode_certificate(std::span<const std::uint8_t> cmw_payload) {
  // <1..2^24-1>: an empty CMW says nothing, and the draft's lower bound forbids it.
  if (cmw_payload.empty() || cmw_payload.size() > max_cmw_payload_size) {
    return malformed();
  }
  bytes out;
  out.reserve(3 + cmw_payload.size());
  if (!put_vector(out, 3, cmw_payload)) {
    return malformed();
  }
  return out;
}

result<bytes> decode_certificate(std::span<const std::uint8_t> extension_data) {
  if (extension_data.size() > max_extension_data) {
    return malformed();
  }
  wire_reader in(extension_data);
  std::span<const std::uint8_t> payload;
  if (!in.vector(3, payload) || payload.empty() || !in.at_end()) {
    return malformed();
  }
  return bytes(payload.begin(), payload.end());
}

std::optional<attestation_scheme> choose_scheme(std::span<const attestation_scheme> offered,
                                                std::span<const attestation_scheme> acceptable) {
  for (const auto& ours : acceptable) {
    if (std::find(offered.begin(), offered.end(), ours) != offered.end()) {
      return ours;
    }
  }
  return std::nullopt;
}

}  // namespace atls::tls
