#include "cbor.hpp"

#include <utility>

#include "atls/attest/evidence.hpp"

namespace atls::attest::detail::cbor {

namespace {

// RFC 8949 §3: the low five bits of the initial byte ("additional information").
constexpr std::uint8_t ai_one_byte = 24;
constexpr std::uint8_t ai_two_bytes = 25;
constexpr std::uint8_t ai_four_bytes = 26;
constexpr std::uint8_t ai_eight_bytes = 27;

}  // namespace

result<std::uint64_t> reader::head(major_type expected) {
  if (rest_.empty()) {
    return evidence_errc::truncated;
  }
  const std::uint8_t initial = rest_[0];
  rest_ = rest_.subspan(1);
  if (static_cast<major_type>(initial >> 5U) != expected) {
    return evidence_errc::malformed_cbor;
  }
  const std::uint8_t info = initial & 0x1fU;
  if (info < ai_one_byte) {
    return std::uint64_t{info};
  }
  // 28..30 are reserved (RFC 8949 §3 item 3) and 31 is the indefinite length of §3.2.2, which
  // the format never uses: all are malformed here.
  if (info > ai_eight_bytes) {
    return evidence_errc::malformed_cbor;
  }
  const std::size_t width = std::size_t{1} << (info - ai_one_byte);
  if (rest_.size() < width) {
    return evidence_errc::truncated;
  }
  std::uint64_t argument = 0;
  for (std::size_t i = 0; i < width; ++i) {
    argument = (argument << 8U) | rest_[i];
  }
  rest_ = rest_.subspan(width);
  // Shortest form only (RFC 8949 §4.2.1): a value that fits a narrower encoding in the wider
  // one would give the same evidence a second byte representation.
  const std::uint64_t narrower_max = info == ai_one_byte     ? ai_one_byte - 1
                                     : info == ai_two_bytes  ? 0xffU
                                     : info == ai_four_bytes ? 0xffffU
                                                             : 0xffffffffU;
  if (argument <= narrower_max) {
    return evidence_errc::malformed_cbor;
  }
  return argument;
}

result<std::span<const std::uint8_t>> reader::payload(major_type type, std::size_t max_size) {
  auto size = head(type);
  if (!size) {
    return size.error();
  }
  // The bound is checked before the remaining input so that a huge declared length is reported
  // as what it is, whatever the input length.
  if (*size > max_size) {
    return evidence_errc::oversized;
  }
  if (*size > rest_.size()) {
    return evidence_errc::truncated;
  }
  const auto out = rest_.first(static_cast<std::size_t>(*size));
  rest_ = rest_.subspan(out.size());
  return out;
}

result<std::uint64_t> reader::map_head() {
  return head(major_type::map);
}

result<std::span<const std::uint8_t>> reader::byte_string(std::size_t max_size) {
  return payload(major_type::byte_string, max_size);
}

result<std::string_view> reader::text_string(std::size_t max_size) {
  auto text = payload(major_type::text_string, max_size);
  if (!text) {
    return text.error();
  }
  return std::string_view(reinterpret_cast<const char*>(text->data()), text->size());
}

void writer::head(major_type type, std::uint64_t argument) {
  const auto initial = static_cast<std::uint8_t>(static_cast<std::uint8_t>(type) << 5U);
  if (argument < ai_one_byte) {
    out_.push_back(initial | static_cast<std::uint8_t>(argument));
    return;
  }
  std::size_t width = 8;
  std::uint8_t info = ai_eight_bytes;
  if (argument <= 0xffU) {
    width = 1;
    info = ai_one_byte;
  } else if (argument <= 0xffffU) {
    width = 2;
    info = ai_two_bytes;
  } else if (argument <= 0xffffffffU) {
    width = 4;
    info = ai_four_bytes;
  }
  out_.push_back(initial | info);
  for (std::size_t i = width; i > 0; --i) {
    out_.push_back(static_cast<std::uint8_t>(argument >> (8 * (i - 1))));
  }
}

void writer::map_head(std::uint64_t pairs) {
  head(major_type::map, pairs);
}

void writer::byte_string(std::span<const std::uint8_t> value) {
  head(major_type::byte_string, value.size());
  out_.insert(out_.end(), value.begin(), value.end());
}

void writer::text_string(std::string_view value) {
  head(major_type::text_string, value.size());
  out_.insert(out_.end(), value.begin(), value.end());
}

std::vector<std::uint8_t> writer::take() noexcept {
  return std::exchange(out_, {});
}

}  // namespace atls::attest::detail::cbor
