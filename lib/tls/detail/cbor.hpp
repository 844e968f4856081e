// The few CBOR (RFC 8949) items a CMW record is made of: array heads, unsigned integers, text
// and byte strings, all with definite lengths in the shortest form. Private to the tls module
// (the attest module has its own reader for its own format, and modules never share detail/).
//
// The reader is schema-driven: the caller asks for the item it expects next, so every other
// major type (negative integers, maps, tags, simple values, floats) fails where it appears, and
// nothing is ever skipped or recursed into. Reads report false on anything malformed; callers
// stop at the first false and map it to their own error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace atls::tls::detail::cbor {

// RFC 8949 §3.1 major types.
enum class major_type : std::uint8_t {
  unsigned_integer = 0,
  byte_string = 2,
  text_string = 3,
  array = 4,
};

class reader {
 public:
  explicit reader(std::span<const std::uint8_t> input) : rest_(input) {}

  [[nodiscard]] bool array_head(std::uint64_t& count) { return head(major_type::array, count); }
  [[nodiscard]] bool unsigned_integer(std::uint64_t& value) {
    return head(major_type::unsigned_integer, value);
  }
  // A byte string of at most max_size bytes; out borrows from the input.
  [[nodiscard]] bool byte_string(std::size_t max_size, std::span<const std::uint8_t>& out) {
    return payload(major_type::byte_string, max_size, out);
  }
  // A text string of at most max_size bytes; out borrows from the input. UTF-8 is not checked
  // here: the caller validates the content (media types are printable ASCII).
  [[nodiscard]] bool text_string(std::size_t max_size, std::string_view& out) {
    std::span<const std::uint8_t> raw;
    if (!payload(major_type::text_string, max_size, raw)) {
      return false;
    }
    out = {reinterpret_cast<const char*>(raw.data()), raw.size()};
    return true;
  }
  // The major type of the next item, without consuming it; false at the end of input.
  [[nodiscard]] bool peek(major_type& type) const {
    if (rest_.empty()) {
      return false;
    }
    type = static_cast<major_type>(rest_[0] >> 5U);
    return true;
  }
  [[nodiscard]] bool at_end() const noexcept { return rest_.empty(); }

 private:
  // RFC 8949 §3: the additional information in the low five bits of the initial byte.
  static constexpr std::uint8_t ai_one_byte = 24;
  static constexpr std::uint8_t ai_eight_bytes = 27;

  [[nodiscard]] bool head(major_type expected, std::uint64_t& argument) {
    if (rest_.empty() || static_cast<major_type>(rest_[0] >> 5U) != expected) {
      return false;
    }
    const std::uint8_t info = rest_[0] & 0x1fU;
    rest_ = rest_.subspan(1);
    if (info < ai_one_byte) {
      argument = info;
      return true;
    }
    // 28..30 are reserved and 31 is an indefinite length (§3.2.2): neither occurs here.
    if (info > ai_eight_bytes) {
      return false;
    }
    const std::size_t width = std::size_t{1} << (info - ai_one_byte);
    if (rest_.size() < width) {
      return false;
    }
    argument = 0;
    for (std::size_t i = 0; i < width; ++i) {
      argument = (argument << 8U) | rest_[i];
    }
    rest_ = rest_.subspan(width);
    // Shortest form only (§4.2.1): a value that fits a narrower head must use it, so that one
    // record has one encoding.
    const std::uint64_t narrower_max =
        width == 1 ? ai_one_byte - 1 : (std::uint64_t{1} << (8 * width / 2)) - 1;
    return argument > narrower_max;
  }

  [[nodiscard]] bool payload(major_type type, std::size_t max_size,
                             std::span<const std::uint8_t>& out) {
    std::uint64_t size = 0;
    if (!head(type, size) || size > max_size || size > rest_.size()) {
      return false;
    }
    out = rest_.first(static_cast<std::size_t>(size));
    rest_ = rest_.subspan(out.size());
    return true;
  }

  std::span<const std::uint8_t> rest_;
};

// Appends items in the shortest encoding (RFC 8949 §4.2.1).
class writer {
 public:
  void array_head(std::uint64_t count) { head(major_type::array, count); }
  void unsigned_integer(std::uint64_t value) { head(major_type::unsigned_integer, value); }
  void byte_string(std::span<const std::uint8_t> value) {
    head(major_type::byte_string, value.size());
    out_.insert(out_.end(), value.begin(), value.end());
  }
  void text_string(std::string_view value) {
    head(major_type::text_string, value.size());
    out_.insert(out_.end(), value.begin(), value.end());
  }

  // The encoded bytes; the writer is empty afterwards.
  [[nodiscard]] std::vector<std::uint8_t> take() noexcept { return std::exchange(out_, {}); }

 private:
  void head(major_type type, std::uint64_t argument) {
    const auto initial = static_cast<std::uint8_t>(static_cast<std::uint8_t>(type) << 5U);
    if (argument < 24) {
      out_.push_back(initial | static_cast<std::uint8_t>(argument));
      return;
    }
    std::size_t width = 8;
    if (argument <= 0xffU) {
      width = 1;
    } else if (argument <= 0xffffU) {
      width = 2;
    } else if (argument <= 0xffffffffU) {
      width = 4;
    }
    // 24, 25, 26, 27 for widths 1, 2, 4, 8.
    std::uint8_t info = 24;
    for (std::size_t w = width; w > 1; w /= 2) {
      ++info;
    }
    out_.push_back(initial | info);
    for (std::size_t i = width; i > 0; --i) {
      out_.push_back(static_cast<std::uint8_t>(argument >> (8 * (i - 1))));
    }
  }

  std::vector<std::uint8_t> out_;
};

}  // namespace atls::tls::detail::cbor
