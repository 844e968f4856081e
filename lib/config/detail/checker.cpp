#include "checker.hpp"

#include <algorithm>
#include <iterator>
#include <limits>
#include <sstream>
#include <system_error>
#include <utility>

#include <yaml-cpp/eventhandler.h>

#include "atls/common/hex.hpp"
#include "atls/common/named_file.hpp"

namespace atls::config::detail {

namespace {

namespace fs = std::filesystem;

constexpr unit duration_units[] = {
    {"ms", 1},
    {"s", 1000},
    {"m", std::uint64_t{60} * 1000},
    {"h", std::uint64_t{60} * 60 * 1000},
};

constexpr std::uint64_t max_duration_ms =
    static_cast<std::uint64_t>(std::numeric_limits<std::chrono::milliseconds::rep>::max());

// Optimal string alignment distance: Levenshtein plus adjacent transpositions, so "lsiten" is one
// edit away from "listen".
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) {
    d[i][0] = i;
  }
  for (std::size_t j = 0; j <= b.size(); ++j) {
    d[0][j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The closest candidate, if it is close enough to be a plausible typo. Short words get a tighter
// limit: two edits turn "foo" into "log", which is no hint at all.
std::optional<std::string_view> closest(std::string_view word,
                                        std::span<const std::string_view> candidates) {
  std::optional<std::string_view> best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (const auto candidate : candidates) {
    const auto limit = std::min<std::size_t>(2, std::max<std::size_t>(1, candidate.size() / 3));
    const auto distance = edit_distance(word, candidate);
    if (distance <= limit && distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

// yaml-cpp's message for a tab used as indentation ("illegal map value") does not say what is
// wrong; YAML forbids tabs there (YAML 1.2 section 6.1).
// Where each document of a stream starts, and nothing else. yaml-cpp 0.7 (Debian 12) does not
// consume a token that cannot start a node, such as a ',' outside a flow collection: it reports
// a null document and the next call starts at the same token again, so YAML::LoadAll loops
// forever, allocating a null document each turn, until the process runs out of memory (found
// by tests/fuzz/config_fuzz; jbeder/yaml-cpp#1040, fixed upstream in 0.8.0). A document that
// starts where the previous one started is that loop.
class document_starts final : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;  // where each document starts (its '---', or its first token)
  std::vector<YAML::Mark> roots;   // each document's root node, where messages point

  void OnDocumentStart(const YAML::Mark& mark) override {
    starts.push_back(mark);
    want_root_ = true;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t /*anchor*/) override { node(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t /*anchor*/) override { node(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t /*anchor*/,
                const std::string& /*value*/) override {
    node(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& /*tag*/,
                       YAML::anchor_t /*anchor*/, YAML::EmitterStyle::value /*style*/) override {
    node(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t /*anchor*/,
                  YAML::EmitterStyle::value /*style*/) override {
    node(mark);
  }
  void OnMapEnd() override {}

  // True when the last document started where the one before it did: the parser is stuck.
  [[nodiscard]] bool stuck() const {
    return starts.size() >= 2 && starts[starts.size() - 1].pos == starts[starts.size() - 2].pos;
  }

 private:
  void node(const YAML::Mark& mark) {
    if (want_root_) {
      roots.push_back(mark);
      want_root_ = false;
    }
  }

  bool want_root_ = false;
};

bool line_indented_with_tab(std::string_view text, int line) {
  std::size_t start = 0;
  for (int i = 0; i < line; ++i) {
    start = text.find('\n', start);
    if (start == std::string_view::npos) {
      return false;
    }
    ++start;
  }
  for (std::size_t i = start; i < text.size(); ++i) {
    if (text[i] == '\t') {
      return true;
    }
    if (text[i] != ' ') {
      return false;
    }
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Numbers with units

quantity parse_quantity(std::string_view text, std::span<const unit> units, std::uint64_t max) {
  quantity q;
  if (text.empty()) {
    q.error = quantity_error::empty;
    return q;
  }
  std::size_t i = 0;
  std::uint64_t number = 0;
  bool overflow = false;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    const auto digit = static_cast<std::uint64_t>(text[i] - '0');
    if (number > (max - digit) / 10) {
      overflow = true;
    } else {
      number = number * 10 + digit;
    }
    ++i;
  }
  const auto suffix = text.substr(i);
  q.suffix = suffix;
  if (i == 0) {
    q.error = quantity_error::no_number;
    return q;
  }
  if (suffix.empty()) {
    q.error = quantity_error::no_unit;
    return q;
  }
  if (suffix.front() == '.' || suffix.front() == ',') {
    q.error = quantity_error::fraction;
    return q;
  }
  if (suffix.front() == ' ' || suffix.front() == '\t') {
    q.error = quantity_error::space;
    return q;
  }
  const auto found =
      std::find_if(units.begin(), units.end(), [&](const unit& u) { return u.name == suffix; });
  if (found == units.end()) {
    q.error = quantity_error::bad_unit;
    return q;
  }
  if (overflow || number > max / found->factor) {
    q.error = quantity_error::too_large;
    return q;
  }
  q.value = number * found->factor;
  return q;
}

quantity parse_duration_quantity(std::string_view text) {
  return parse_quantity(text, duration_units, max_duration_ms);
}

std::string duration_message(const quantity& q) {
  switch (*q.error) {
    case quantity_error::empty:
      return "expected a duration, e.g. 10s";
    case quantity_error::no_number:
      return "a duration is a whole number followed by a unit (ms, s, m, h), e.g. 10s";
    case quantity_error::fraction:
      return "a duration must be a whole number of its unit, e.g. 1500ms instead of 1.5s";
    case quantity_error::space:
      return "a duration must not contain spaces, e.g. 10s";
    case quantity_error::no_unit:
      return "duration needs a unit (ms, s, m, h), e.g. 10s";
    case quantity_error::bad_unit:
      return "unknown duration unit '" + std::string(q.suffix) + "' (use ms, s, m or h)";
    case quantity_error::too_large:
      return "duration is too large";
  }
  return "invalid duration";
}

std::string format_duration(std::chrono::milliseconds d) {
  const auto ms = static_cast<std::uint64_t>(d.count());
  for (auto it = std::rbegin(duration_units); it != std::rend(duration_units); ++it) {
    if (ms != 0 && ms % it->factor == 0) {
      return std::to_string(ms / it->factor) + std::string(it->name);
    }
  }
  return std::to_string(ms) + "ms";
}

// ---------------------------------------------------------------------------------------------
// Small text helpers

std::string suggestion(std::string_view word, std::span<const std::string_view> candidates) {
  const auto best = closest(word, candidates);
  if (!best) {
    return "";
  }
  return "; did you mean '" + std::string(*best) + "'?";
}

bool contains(std::span<const std::string_view> set, std::string_view word) {
  return std::find(set.begin(), set.end(), word) != set.end();
}

std::string join(std::string_view parent, std::string_view key) {
  if (parent.empty()) {
    return std::string(key);
  }
  return std::string(parent) + "." + std::string(key);
}

std::string index_path(std::string_view parent, std::size_t index) {
  return std::string(parent) + "[" + std::to_string(index) + "]";
}

// ---------------------------------------------------------------------------------------------
// The checker

const entry* mapping::find(std::string_view name) const {
  const auto it =
      std::find_if(entries.begin(), entries.end(), [&](const entry& e) { return e.name == name; });
  return it == entries.end() ? nullptr : &*it;
}

YAML::Mark value_mark(const YAML::Node& value, const YAML::Mark& fallback) {
  if (value.IsNull() || value.Mark().is_null()) {
    return fallback;
  }
  return value.Mark();
}

checker_base::checker_base(std::string_view file_name, fs::path base_dir)
    : file_(file_name), base_dir_(std::move(base_dir)) {}

void checker_base::error(const YAML::Mark& mark, std::string key, std::string message) {
  errors_.push_back({pos(mark), std::move(key), std::move(message)});
}

void checker_base::error_at(source_pos where, std::string key, std::string message) {
  errors_.push_back({std::move(where), std::move(key), std::move(message)});
}

source_pos checker_base::pos(const YAML::Mark& mark) const {
  if (mark.is_null()) {
    return {file_, 1, 1};
  }
  return {file_, mark.line + 1, mark.column + 1};
}

std::optional<mapping> checker_base::open_mapping(const value_ref& v,
                                                  std::span<const std::string_view> known,
                                                  const key_hint& hint) {
  if (!v.node.IsMap()) {
    error(v.mark, v.path, "expected a mapping");
    return std::nullopt;
  }
  mapping m{v, {}};
  for (const auto& kv : v.node) {
    const YAML::Node& key = kv.first;
    if (!key.IsScalar()) {
      error(key.Mark(), v.path, "keys must be plain strings");
      continue;
    }
    const std::string name = key.Scalar();
    const auto path = join(v.path, name);
    if (!contains(known, name)) {
      std::string message = "unknown key '" + name + "'";
      const auto extra = hint ? hint(name) : std::string();
      message += extra.empty() ? suggestion(name, known) : extra;
      error(key.Mark(), path, std::move(message));
      continue;
    }
    // yaml-cpp keeps both entries of a repeated key; the second would be silently ignored.
    if (const auto* first = m.find(name)) {
      error(key.Mark(), path,
            "duplicate key '" + name + "' (first set on line " +
                std::to_string(first->key_mark.line + 1) + ")");
      continue;
    }
    const YAML::Node& value = kv.second;
    m.entries.push_back(
        {name, key.Mark(), value_ref{value, path, value_mark(value, key.Mark()), key.Mark()}});
  }
  return m;
}

std::optional<value_ref> checker_base::require(const mapping& m, std::string_view name) {
  if (const auto* e = m.find(name)) {
    return e->value;
  }
  error(m.self.owner, m.self.path, "missing required key '" + std::string(name) + "'");
  return std::nullopt;
}

std::optional<std::string> checker_base::get_string(const value_ref& v) {
  if (!v.node.IsScalar()) {
    error(v.mark, v.path, "expected a string");
    return std::nullopt;
  }
  return v.node.Scalar();
}

std::optional<std::string> checker_base::get_nonempty_string(const value_ref& v) {
  auto s = get_string(v);
  if (s && s->empty()) {
    error(v.mark, v.path, "must not be empty");
    return std::nullopt;
  }
  return s;
}

std::optional<std::size_t> checker_base::get_choice(const value_ref& v,
                                                    std::span<const std::string_view> choices) {
  const auto s = get_string(v);
  if (!s) {
    return std::nullopt;
  }
  const auto it = std::find(choices.begin(), choices.end(), *s);
  if (it != choices.end()) {
    return static_cast<std::size_t>(it - choices.begin());
  }
  std::string list;
  for (const auto choice : choices) {
    list += list.empty() ? "" : ", ";
    list += choice;
  }
  error(v.mark, v.path, "'" + *s + "' is not one of: " + list + suggestion(*s, choices));
  return std::nullopt;
}

std::optional<bool> checker_base::get_bool(const value_ref& v) {
  if (v.node.IsScalar()) {
    const auto& s = v.node.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") {
      return true;
    }
    if (s == "false" || s == "False" || s == "FALSE") {
      return false;
    }
  }
  error(v.mark, v.path, "expected true or false");
  return std::nullopt;
}

std::optional<std::uint64_t> checker_base::get_integer(const value_ref& v, std::uint64_t min,
                                                       std::uint64_t max) {
  const std::string range = "must be from " + std::to_string(min) + " to " + std::to_string(max);
  if (!v.node.IsScalar()) {
    error(v.mark, v.path, "expected an integer");
    return std::nullopt;
  }
  const auto& s = v.node.Scalar();
  if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    // A leading '-' is still a number, just out of range.
    const bool negative =
        s.size() > 1 && s.front() == '-' &&
        std::all_of(s.begin() + 1, s.end(), [](char c) { return c >= '0' && c <= '9'; });
    error(v.mark, v.path, negative ? range : "expected an integer");
    return std::nullopt;
  }
  // Digits only, so the only failure left is a value out of range.
  std::uint64_t n = 0;
  for (const char c : s) {
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (n > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) {
      error(v.mark, v.path, range);
      return std::nullopt;
    }
    n = n * 10 + digit;
  }
  if (n < min || n > max) {
    error(v.mark, v.path, range);
    return std::nullopt;
  }
  return n;
}

std::optional<std::chrono::milliseconds> checker_base::get_duration(const value_ref& v,
                                                                    bool allow_zero) {
  // A YAML integer such as `10` is a scalar too: checking its text gives "needs a unit".
  if (!v.node.IsScalar()) {
    error(v.mark, v.path, "expected a duration, e.g. 10s");
    return std::nullopt;
  }
  const auto q = parse_duration_quantity(v.node.Scalar());
  if (q.error) {
    error(v.mark, v.path, duration_message(q));
    return std::nullopt;
  }
  const std::chrono::milliseconds d(static_cast<std::chrono::milliseconds::rep>(q.value));
  if (d.count() == 0 && !allow_zero) {
    error(v.mark, v.path, "must be longer than 0s");
    return std::nullopt;
  }
  if (d > max_duration) {
    error(v.mark, v.path, "must be at most " + format_duration(max_duration));
    return std::nullopt;
  }
  return d;
}

std::optional<file_ref> checker_base::get_file(const value_ref& v) {
  const auto s = get_nonempty_string(v);
  if (!s) {
    return std::nullopt;
  }
  // A NUL would silently cut the path short when it reaches open().
  if (s->find('\0') != std::string::npos) {
    error(v.mark, v.path, "a file path must not contain a NUL character");
    return std::nullopt;
  }
  fs::path p(*s);
  if (p.is_relative()) {
    p = (base_dir_ / p).lexically_normal();
  }
  return file_ref{std::move(p), pos(v.mark), v.path};
}

std::optional<std::vector<value_ref>> checker_base::get_list(const value_ref& v) {
  if (!v.node.IsSequence()) {
    error(v.mark, v.path, "expected a list");
    return std::nullopt;
  }
  std::vector<value_ref> items;
  std::size_t index = 0;
  for (const auto& it : v.node) {
    // A sequence's iterator value is the item itself, a Node; bind to that part explicitly.
    const YAML::Node& item = it;
    const auto m = value_mark(item, v.mark);
    items.push_back({item, index_path(v.path, index), m, m});
    ++index;
  }
  return items;
}

std::optional<std::vector<std::uint8_t>> checker_base::get_hex(const value_ref& v, std::size_t size,
                                                               std::string_view what) {
  const std::string expected = std::string(what) + " is " + std::to_string(size) + " bytes (" +
                               std::to_string(2 * size) + " hex digits)";
  if (!v.node.IsScalar()) {
    error(v.mark, v.path, "expected hex digits: " + expected);
    return std::nullopt;
  }
  const auto& text = v.node.Scalar();
  const auto bad =
      std::find_if(text.begin(), text.end(), [](char ch) { return hex_digit(ch) < 0; });
  if (bad != text.end()) {
    error(v.mark, v.path,
          "'" + std::string(1, *bad) + "' is not a hex digit (write the value as " +
              std::to_string(2 * size) + " hex digits, without 0x or separators)");
    return std::nullopt;
  }
  if (text.size() != 2 * size) {
    error(v.mark, v.path,
          "wrong digest length: " + expected + ", got " + std::to_string(text.size()) +
              " hex digits");
    return std::nullopt;
  }
  std::vector<std::uint8_t> out(size);
  for (std::size_t i = 0; i < size; ++i) {
    out[i] = static_cast<std::uint8_t>((hex_digit(text[2 * i]) << 4U) | hex_digit(text[2 * i + 1]));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Files and documents

std::optional<std::string> read_file(const fs::path& path, std::string_view what,
                                     std::vector<diagnostic>& errors) {
  auto text = atls::read_named_file(path);
  if (!text) {
    errors.push_back({{path.string(), 0, 0},
                      "",
                      "cannot read " + std::string(what) + ": " + text.error().detail});
    return std::nullopt;
  }
  return std::move(*text);
}

std::optional<fs::path> base_dir_of(const fs::path& path, std::string_view what,
                                    std::vector<diagnostic>& errors) {
  std::error_code ec;
  auto absolute = fs::absolute(path, ec);
  if (ec) {
    errors.push_back({{path.string(), 0, 0},
                      "",
                      "cannot resolve the " + std::string(what) + "'s directory: " + ec.message()});
    return std::nullopt;
  }
  return absolute.lexically_normal().parent_path();
}

std::optional<YAML::Node> parse_document(std::string_view yaml, std::string_view file_name,
                                         std::string_view what, std::vector<diagnostic>& errors) {
  const std::string file(file_name);
  const auto at = [&](const YAML::Mark& mark) {
    return source_pos{file, mark.is_null() ? 1 : mark.line + 1,
                      mark.is_null() ? 1 : mark.column + 1};
  };
  YAML::Node document;
  document_starts documents;
  try {
    // Not YAML::LoadAll, which never returns on some malformed input (document_starts). The
    // stream is walked first, up to three documents (enough to tell a second document from the
    // parser going round), and only a stream of one document is loaded.
    std::istringstream in{std::string(yaml)};
    YAML::Parser parser(in);
    while (documents.starts.size() < 3 && !documents.stuck() &&
           parser.HandleNextDocument(documents)) {
    }
    if (documents.stuck()) {
      const auto& mark = documents.starts.back();
      std::string message = "YAML syntax error: unexpected ";
      const auto pos = static_cast<std::size_t>(mark.pos);
      message += pos < yaml.size() ? "'" + std::string(1, yaml[pos]) + "'" : "text";
      errors.push_back({at(mark), "", std::move(message)});
      return std::nullopt;
    }
    if (documents.starts.size() == 1) {
      document = YAML::Load(std::string(yaml));
    }
  } catch (const YAML::Exception& e) {
    // yaml-cpp marks are 0-based; a mark it could not place is null (-1).
    const int line = e.mark.is_null() ? 1 : e.mark.line + 1;
    const int column = e.mark.is_null() ? 1 : e.mark.column + 1;
    std::string message = "YAML syntax error: " + e.msg;
    if (!e.mark.is_null() && line_indented_with_tab(yaml, e.mark.line)) {
      message += " (YAML does not allow tabs for indentation)";
    }
    errors.push_back({{file, line, column}, "", std::move(message)});
    return std::nullopt;
  }
  if (documents.starts.size() > 1) {
    const auto& second = documents.roots.size() > 1 ? documents.roots[1] : documents.starts[1];
    errors.push_back({at(second), "",
                      "the " + std::string(what) +
                          " must be a single YAML document (found a second one after '---')"});
    return std::nullopt;
  }
  return document;
}

void sort_by_position(std::vector<diagnostic>& errors) {
  std::stable_sort(errors.begin(), errors.end(), [](const diagnostic& a, const diagnostic& b) {
    return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
  });
}

}  // namespace atls::config::detail
