// The YAML schema checker shared by atls's config files (the daemon config, the verifier
// policy): reading a file, parsing one YAML document, and typed accessors that record a
// diagnostic ("file:line:col: key: message") for every problem instead of stopping at the first.
// Unknown keys are errors and nothing falls back to a default on a typo. Private to lib/config:
// the only place that includes yaml-cpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "atls/config/config.hpp"

namespace atls::config::detail {

// ---------------------------------------------------------------------------------------------
// Numbers with units

struct unit {
  std::string_view name;
  std::uint64_t factor;
};

enum class quantity_error { empty, no_number, fraction, space, no_unit, bad_unit, too_large };

struct quantity {
  std::uint64_t value = 0;
  std::optional<quantity_error> error;
  std::string_view suffix;  // the unit text as written, for messages
};

// Parses "<decimal digits><unit>" with a unit from the table. Every multiplication and addition
// is checked against max, so no input can wrap around.
[[nodiscard]] quantity parse_quantity(std::string_view text, std::span<const unit> units,
                                      std::uint64_t max);

// Durations in milliseconds: "500ms", "10s", "5m", "1h".
[[nodiscard]] quantity parse_duration_quantity(std::string_view text);
[[nodiscard]] std::string duration_message(const quantity& q);
// The shortest exact spelling of a duration ("5m" rather than "300000ms").
[[nodiscard]] std::string format_duration(std::chrono::milliseconds d);

// Timers add durations to steady_clock::now() in nanoseconds; a cap far below the int64
// nanosecond range (292 years) keeps that addition from overflowing, and anything longer than a
// week is almost certainly a typo.
inline constexpr std::chrono::milliseconds max_duration = std::chrono::hours(24 * 7);

// ---------------------------------------------------------------------------------------------
// Small text helpers

// "; did you mean 'x'?" for a plausible typo of one of the candidates, else "".
[[nodiscard]] std::string suggestion(std::string_view word,
                                     std::span<const std::string_view> candidates);
[[nodiscard]] bool contains(std::span<const std::string_view> set, std::string_view word);
// "parent.key", or "key" at the top.
[[nodiscard]] std::string join(std::string_view parent, std::string_view key);
// "parent[index]".
[[nodiscard]] std::string index_path(std::string_view parent, std::size_t index);

// ---------------------------------------------------------------------------------------------
// The checker

// A value in the document together with where to point when it is wrong.
struct value_ref {
  YAML::Node node;
  std::string path;  // dotted key path, e.g. "listeners[0].tls"
  YAML::Mark mark;   // the value itself, or its key when the value is empty
  YAML::Mark owner;  // the line that introduces the value: its key, or the list item
};

struct entry {
  std::string name;
  YAML::Mark key_mark;
  value_ref value;
};

// The entries of a YAML mapping whose keys were all known and unique.
struct mapping {
  value_ref self;
  std::vector<entry> entries;

  [[nodiscard]] const entry* find(std::string_view name) const;
};

// An empty value (`key:` at the end of a line) has the mark of whatever token follows it, often
// on the next line; its key is where the operator looks.
[[nodiscard]] YAML::Mark value_mark(const YAML::Node& value, const YAML::Mark& fallback);

// Called with the key of an unknown entry; returns a hint for keys that are valid elsewhere, or
// an empty string.
using key_hint = std::function<std::string(std::string_view)>;

// Typed access to the document. Each accessor records a diagnostic and returns nothing when the
// value is wrong; callers keep their default and go on, so every problem is reported in one run.
class checker_base {
 public:
  // file_name appears in diagnostics; relative file paths resolve against base_dir.
  checker_base(std::string_view file_name, std::filesystem::path base_dir);

  [[nodiscard]] std::vector<diagnostic> take_errors() { return std::move(errors_); }
  [[nodiscard]] std::size_t error_count() const noexcept { return errors_.size(); }
  void error(const YAML::Mark& mark, std::string key, std::string message);
  void error_at(source_pos where, std::string key, std::string message);
  [[nodiscard]] source_pos pos(const YAML::Mark& mark) const;
  [[nodiscard]] const std::filesystem::path& base_dir() const noexcept { return base_dir_; }

  // Splits a mapping into entries. Unknown, duplicate and non-string keys are errors; the known
  // entries are returned even then, so their values are checked too.
  std::optional<mapping> open_mapping(const value_ref& v, std::span<const std::string_view> known,
                                      const key_hint& hint = {});
  std::optional<value_ref> require(const mapping& m, std::string_view name);
  std::optional<std::string> get_string(const value_ref& v);
  std::optional<std::string> get_nonempty_string(const value_ref& v);
  // The index of the value in choices.
  std::optional<std::size_t> get_choice(const value_ref& v,
                                        std::span<const std::string_view> choices);
  // Only the YAML 1.2 spellings: YAML 1.1's yes/no/on/off are the "Norway problem" and are
  // rejected rather than guessed at.
  std::optional<bool> get_bool(const value_ref& v);
  std::optional<std::uint64_t> get_integer(const value_ref& v, std::uint64_t min,
                                           std::uint64_t max);
  std::optional<std::chrono::milliseconds> get_duration(const value_ref& v, bool allow_zero);
  // A path, resolved against base_dir when relative. The file itself is not opened.
  std::optional<file_ref> get_file(const value_ref& v);
  std::optional<std::vector<value_ref>> get_list(const value_ref& v);
  // `size` bytes written as 2 * size hex digits (either case, no 0x or separators), as
  // sha256sum and tpm2_pcrread print them. what names the value in messages, e.g. "an SPKI
  // SHA-256".
  std::optional<std::vector<std::uint8_t>> get_hex(const value_ref& v, std::size_t size,
                                                   std::string_view what);

 private:
  std::string file_;
  std::filesystem::path base_dir_;
  std::vector<diagnostic> errors_;
};

// ---------------------------------------------------------------------------------------------
// Files and documents

// Reads a file the config names, or the config itself, as read_named_file does. On failure
// appends a file-level diagnostic ("cannot read <what>: ...") and returns nothing.
[[nodiscard]] std::optional<std::string> read_file(const std::filesystem::path& path,
                                                   std::string_view what,
                                                   std::vector<diagnostic>& errors);

// The directory relative paths in a file resolve against: the file's absolute directory.
// On failure appends a file-level diagnostic and returns nothing.
[[nodiscard]] std::optional<std::filesystem::path> base_dir_of(const std::filesystem::path& path,
                                                               std::string_view what,
                                                               std::vector<diagnostic>& errors);

// Parses text that must hold at most one YAML document (an empty text is a null node). A syntax
// error or a second document is a diagnostic.
[[nodiscard]] std::optional<YAML::Node> parse_document(std::string_view yaml,
                                                       std::string_view file_name,
                                                       std::string_view what,
                                                       std::vector<diagnostic>& errors);

// In file order, for the reader.
void sort_by_position(std::vector<diagnostic>& errors);

}  // namespace atls::config::detail
