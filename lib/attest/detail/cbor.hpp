// A minimal strict CBOR (RFC 8949) reader and writer: only what the Parsec TPM evidence format
// needs, i.e. maps, text strings and byte strings with definite lengths. Private to the attest
// module.
//
// The reader is schema-driven: the caller asks for the type it expects next, so every other
// major type (integers, arrays, tags, simple values, floats) is malformed_cbor where it appears,
// and nothing is ever skipped. Without a generic "skip any item" there is no recursion, so the
// nesting depth is bounded by the schema itself (two maps deep).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "atls/common/result.hpp"

namespace atls::attest::detail::cbor {

// RFC 8949 §3.1 major types.
enum class major_type : std::uint8_t {
  unsigned_integer = 0,
  negative_integer = 1,
  byte_string = 2,
  text_string = 3,
  array = 4,
  map = 5,
  tag = 6,
  simple_or_float = 7,
};

// Reads items from the front of a span. Every read either consumes a complete item head (and
// its payload for strings) or fails with evidence_errc and leaves the position unspecified:
// callers stop at the first error.
class reader {
 public:
  explicit reader(std::span<const std::uint8_t> input) : rest_(input) {}

  // A definite-length map head; returns the number of key/value pairs that follow.
  // malformed_cbor for another type, an indefinite length or a non-shortest length.
  [[nodiscard]] result<std::uint64_t> map_head();

  // A definite-length byte string of at most max_size bytes (oversized beyond, checked before
  // truncated). The span borrows from the input.
  [[nodiscard]] result<std::span<const std::uint8_t>> byte_string(std::size_t max_size);

  // A definite-length text string of at most max_size bytes. The bytes are not checked for
  // UTF-8: callers compare them against known ASCII values, which invalid UTF-8 never equals.
  [[nodiscard]] result<std::string_view> text_string(std::size_t max_size);

  [[nodiscard]] bool at_end() const noexcept { return rest_.empty(); }

 private:
  [[nodiscard]] result<std::uint64_t> head(major_type expected);
  [[nodiscard]] result<std::span<const std::uint8_t>> payload(major_type type,
                                                              std::size_t max_size);

  std::span<const std::uint8_t> rest_;
};

// Appends items in the shortest encoding (RFC 8949 §4.2.1, "Preferred Serialization").
class writer {
 public:
  void map_head(std::uint64_t pairs);
  void byte_string(std::span<const std::uint8_t> value);
  void text_string(std::string_view value);

  // The encoded bytes; the writer is empty afterwards.
  [[nodiscard]] std::vector<std::uint8_t> take() noexcept;

 private:
  void head(major_type type, std::uint64_t argument);

  std::vector<std::uint8_t> out_;
};

}  // namespace atls::attest::detail::cbor
