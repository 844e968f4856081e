#include "support/prometheus_text.hpp"

#include <charconv>
#include <cmath>
#include <set>
#include <stdexcept>
#include <utility>

namespace atls::test {

namespace {

// A refusal, caught once per line and turned into "line N: why".
struct refusal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void refuse(const std::string& why) {
  throw refusal(why);
}

bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// RFC 3629 section 4: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = 1;
    unsigned char low = 0x80;
    unsigned char high = 0xbf;
    if (lead < 0x80) {
      ++i;
      continue;
    }
    if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      low = lead == 0xe0 ? 0xa0 : 0x80;
      high = lead == 0xed ? 0x9f : 0xbf;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      low = lead == 0xf0 ? 0x90 : 0x80;
      high = lead == 0xf4 ? 0x8f : 0xbf;
    } else {
      return false;
    }
    if (text.size() - i < length) {
      return false;
    }
    const auto second = static_cast<unsigned char>(text[i + 1]);
    if (second < low || second > high) {
      return false;
    }
    for (std::size_t k = 2; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if (next < 0x80 || next > 0xbf) {
        return false;
      }
    }
    i += length;
  }
  return true;
}

// A cursor over one line.
class line_reader {
 public:
  explicit line_reader(std::string_view line) : rest_(line) {}

  [[nodiscard]] bool done() const { return rest_.empty(); }
  [[nodiscard]] char peek() const { return rest_.empty() ? '\0' : rest_.front(); }
  [[nodiscard]] std::string_view rest() const { return rest_; }
  bool take(char c) {
    if (!rest_.empty() && rest_.front() == c) {
      rest_.remove_prefix(1);
      return true;
    }
    return false;
  }
  void expect(char c, std::string_view what) {
    if (!take(c)) {
      refuse("expected " + std::string(what));
    }
  }
  // A metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) or, with colons false, a label name.
  std::string name(bool colons, std::string_view what) {
    std::size_t n = 0;
    while (n < rest_.size()) {
      const char c = rest_[n];
      const bool ok = is_letter(c) || (colons && c == ':') || (n > 0 && is_digit(c));
      if (!ok) {
        break;
      }
      ++n;
    }
    if (n == 0) {
      refuse("expected a " + std::string(what));
    }
    std::string out(rest_.substr(0, n));
    rest_.remove_prefix(n);
    return out;
  }
  // Up to the next space (or the end of the line).
  std::string_view token() {
    const auto n = std::min(rest_.find(' '), rest_.size());
    const auto out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return out;
  }
  // A quoted label value; \\ \" \n are the only escapes.
  std::string quoted() {
    expect('"', "'\"' opening a label value");
    std::string out;
    for (;;) {
      if (rest_.empty()) {
        refuse("label value without its closing '\"'");
      }
      const char c = rest_.front();
      rest_.remove_prefix(1);
      if (c == '"') {
        return out;
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (rest_.empty()) {
        refuse("backslash at the end of a label value");
      }
      const char e = rest_.front();
      rest_.remove_prefix(1);
      if (e == '\\') {
        out += '\\';
      } else if (e == '"') {
        out += '"';
      } else if (e == 'n') {
        out += '\n';
      } else {
        refuse(std::string("unknown escape \\") + e + " in a label value");
      }
    }
  }

 private:
  std::string_view rest_;
};

// HELP text: \\ and \n are the only escapes.
std::string unescape_help(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out += text[i];
      continue;
    }
    if (i + 1 == text.size()) {
      refuse("backslash at the end of HELP text");
    }
    const char e = text[++i];
    if (e == '\\') {
      out += '\\';
    } else if (e == 'n') {
      out += '\n';
    } else {
      refuse(std::string("unknown escape \\") + e + " in HELP text");
    }
  }
  return out;
}

// Go's ParseFloat reads far more ("inf", "0x1p-2", "1_000"); this reads what a careful
// writer emits: [+-]digits[.digits][e[+-]digits], .digits too, +Inf, -Inf, NaN.
double parse_value(std::string_view text) {
  if (text == "+Inf") {
    return HUGE_VAL;
  }
  if (text == "-Inf") {
    return -HUGE_VAL;
  }
  if (text == "NaN") {
    return std::nan("");
  }
  std::size_t i = 0;
  const bool negative = text.starts_with('-');
  if (negative || text.starts_with('+')) {
    ++i;
  }
  const std::size_t number = i;
  std::size_t digits = 0;
  while (i < text.size() && is_digit(text[i])) {
    ++i;
    ++digits;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && is_digit(text[i])) {
      ++i;
      ++digits;
    }
  }
  if (digits == 0) {
    refuse("malformed value '" + std::string(text) + "'");
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
      ++i;
    }
    std::size_t exponent = 0;
    while (i < text.size() && is_digit(text[i])) {
      ++i;
      ++exponent;
    }
    if (exponent == 0) {
      refuse("malformed exponent in '" + std::string(text) + "'");
    }
  }
  if (i != text.size()) {
    refuse("malformed value '" + std::string(text) + "'");
  }
  double value = 0;
  const auto* first = text.data() + number;
  const auto* last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(first, last, value);
  // Out of range: Go gives ±Inf with an error, which Prometheus refuses.
  if (ec != std::errc{} || end != last) {
    refuse("value out of range '" + std::string(text) + "'");
  }
  return negative ? -value : value;
}

std::int64_t parse_timestamp(std::string_view text) {
  std::int64_t value = 0;
  const auto* first = text.data();
  const auto* last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(first, last, value);
  if (text.empty() || ec != std::errc{} || end != last) {
    refuse("malformed timestamp '" + std::string(text) + "'");
  }
  return value;
}

constexpr std::string_view histogram_suffixes[] = {"_bucket", "_sum", "_count"};

// A histogram's bookkeeping per series (its labels without le).
struct histogram_series {
  std::vector<std::pair<double, double>> buckets;  // (le, count) in order of appearance
  std::optional<double> sum;
  std::optional<double> count;
  std::size_t line = 0;  // of its first sample, for the error
};

class checker {
 public:
  prometheus_check run(std::string_view body) {
    prometheus_check result;
    if (body.empty()) {
      return result;
    }
    if (!valid_utf8(body)) {
      result.error = "the body is not valid UTF-8";
      return result;
    }
    if (body.back() != '\n') {
      result.error = "the last line does not end in a line feed";
      return result;
    }
    std::size_t start = 0;
    while (start < body.size()) {
      const auto end = body.find('\n', start);
      ++line_;
      try {
        read_line(body.substr(start, end - start));
      } catch (const refusal& r) {
        result.error = "line " + std::to_string(line_) + ": " + r.what();
        return result;
      }
      start = end + 1;
    }
    try {
      close_group();
    } catch (const refusal& r) {
      result.error = r.what();
      return result;
    }
    result.text = std::move(text_);
    return result;
  }

 private:
  void read_line(std::string_view line) {
    if (line.empty()) {
      refuse("blank line");
    }
    if (line.find('\r') != std::string_view::npos) {
      refuse("carriage return");
    }
    if (line.front() == '#') {
      read_comment(line);
      return;
    }
    read_sample(line);
  }

  void read_comment(std::string_view line) {
    const bool help = line.starts_with("# HELP ");
    const bool type = line.starts_with("# TYPE ");
    if (!help && !type) {
      return;  // an ordinary comment
    }
    line_reader in(line.substr(7));
    const auto name = in.name(true, "metric name after HELP or TYPE");
    auto& family = enter(name);
    if (help) {
      if (!in.done()) {
        in.expect(' ', "a space after the metric name");
      }
      if (family.help) {
        refuse("a second HELP for " + name);
      }
      if (seen_samples_.contains(name)) {
        refuse("HELP for " + name + " after its samples");
      }
      family.help = unescape_help(in.rest());
      return;
    }
    in.expect(' ', "a space after the metric name");
    const auto kind = in.token();
    if (!in.done()) {
      refuse("text after the type");
    }
    if (!family.type.empty()) {
      refuse("a second TYPE for " + name);
    }
    if (seen_samples_.contains(name)) {
      refuse("TYPE for " + name + " after its samples");
    }
    if (kind != "counter" && kind != "gauge" && kind != "histogram" && kind != "untyped") {
      refuse("unknown or unsupported type '" + std::string(kind) + "'");
    }
    // A histogram "x" owns the sample names x_bucket, x_sum and x_count.
    for (const auto suffix : histogram_suffixes) {
      if (name.ends_with(suffix)) {
        const auto* owner = find(name.substr(0, name.size() - suffix.size()));
        if (owner != nullptr && owner->type == "histogram") {
          refuse("TYPE " + name + " collides with histogram " + owner->name);
        }
      }
      if (kind == "histogram" && find(name + std::string(suffix)) != nullptr) {
        refuse("histogram " + name + " collides with family " + name + std::string(suffix));
      }
    }
    family.type = std::string(kind);
  }

  void read_sample(std::string_view line) {
    line_reader in(line);
    prometheus_sample sample;
    sample.name = in.name(true, "metric name");
    if (in.take('{') && !in.take('}')) {
      for (;;) {
        const auto label = in.name(false, "label name");
        if (label.starts_with("__")) {
          refuse("label name " + label + " is reserved (leading __)");
        }
        in.expect('=', "'=' after a label name");
        auto value = in.quoted();
        if (!sample.labels.emplace(label, std::move(value)).second) {
          refuse("label " + label + " twice in one sample");
        }
        if (in.take('}')) {
          break;
        }
        in.expect(',', "',' or '}' after a label value");
        if (in.peek() == '}') {
          refuse("a trailing comma in the label set");
        }
      }
    }
    in.expect(' ', "one space before the value");
    sample.value = parse_value(in.token());
    if (in.take(' ')) {
      sample.timestamp_ms = parse_timestamp(in.token());
    }
    if (!in.done()) {
      refuse("text after the value");
    }

    auto& family = owner_of(sample.name);
    if (family.type == "histogram") {
      histogram_sample(family, sample);
    } else {
      if (sample.name != family.name) {
        refuse("sample " + sample.name + " in family " + family.name);
      }
      if (family.type == "counter" && !(sample.value >= 0)) {
        refuse("counter " + sample.name + " is negative or NaN");
      }
    }
    std::string series = sample.name;
    for (const auto& [k, v] : sample.labels) {
      series += '\0' + k + '\0' + v;
    }
    if (!series_.insert(series).second) {
      refuse("series " + sample.name + " appears twice");
    }
    seen_samples_.insert(family.name);
    text_.samples.push_back(std::move(sample));
  }

  void histogram_sample(const prometheus_family& family, const prometheus_sample& sample) {
    const std::string_view suffix = std::string_view(sample.name).substr(family.name.size());
    auto labels = sample.labels;
    const auto le = labels.find("le");
    const bool has_le = le != labels.end();
    std::optional<double> bound;
    if (has_le) {
      try {
        bound = parse_value(le->second);
      } catch (const refusal&) {
        refuse("le=\"" + le->second + "\" is not a number");
      }
      labels.erase(le);
    }
    std::string key;
    for (const auto& [k, v] : labels) {
      key += k + '\0' + v + '\0';
    }
    auto& series = histograms_[key];
    if (series.line == 0) {
      series.line = line_;
    }
    if (!(sample.value >= 0)) {
      refuse("histogram sample " + sample.name + " is negative or NaN");
    }
    if (suffix == "_bucket") {
      if (!bound) {
        refuse("bucket without le");
      }
      if (!series.buckets.empty()) {
        const auto& [previous_le, previous_count] = series.buckets.back();
        if (!(*bound > previous_le)) {
          refuse("bucket bounds do not increase (le=\"" + le_text(*bound) + "\")");
        }
        if (sample.value < previous_count) {
          refuse("buckets are not cumulative (le=\"" + le_text(*bound) + "\")");
        }
      }
      series.buckets.emplace_back(*bound, sample.value);
      return;
    }
    if (has_le) {
      refuse(sample.name + " with an le label");
    }
    if (suffix == "_sum") {
      series.sum = sample.value;
    } else {
      series.count = sample.value;
    }
  }

  static std::string le_text(double bound) {
    return std::isinf(bound) ? "+Inf" : std::to_string(bound);
  }

  // The family a sample name belongs to: histogram x for x_bucket/x_sum/x_count, else the
  // family of that name. Refused when it is untyped or when its group has ended.
  prometheus_family& owner_of(const std::string& sample) {
    for (const auto suffix : histogram_suffixes) {
      if (sample.ends_with(suffix)) {
        const auto base = sample.substr(0, sample.size() - suffix.size());
        const auto* owner = find(base);
        if (owner != nullptr && owner->type == "histogram") {
          return enter(base);
        }
      }
    }
    if (find(sample) == nullptr) {
      refuse("sample " + sample + " without a TYPE");
    }
    auto& family = enter(sample);
    if (family.type.empty()) {
      refuse("sample " + sample + " before its TYPE");
    }
    if (family.type == "histogram") {
      refuse("histogram " + sample + " with a sample of its bare name");
    }
    return family;
  }

  // Makes `name` the current group, creating its family on first sight. A family whose group
  // ended cannot come back.
  prometheus_family& enter(const std::string& name) {
    if (current_ != name) {
      if (closed_.contains(name)) {
        refuse("lines of " + name + " are not in one group");
      }
      close_group();
      current_ = name;
      if (find(name) == nullptr) {
        text_.families.push_back({.name = name});
      }
    }
    for (auto& family : text_.families) {
      if (family.name == name) {
        return family;
      }
    }
    refuse("internal: family " + name + " lost");
  }

  // Checks what can only be checked once a family's group has ended: its histogram series.
  void close_group() {
    if (current_.empty()) {
      return;
    }
    closed_.insert(current_);
    for (const auto& [key, series] : histograms_) {
      const std::string where =
          "line " + std::to_string(series.line) + ": histogram " + current_ + " series";
      if (series.buckets.empty() || !std::isinf(series.buckets.back().first)) {
        refuse(where + " has no le=\"+Inf\" bucket");
      }
      if (!series.count) {
        refuse(where + " has no _count");
      }
      if (!series.sum) {
        refuse(where + " has no _sum");
      }
      if (*series.count != series.buckets.back().second) {
        refuse(where + " has a _count other than its +Inf bucket");
      }
    }
    histograms_.clear();
    current_.clear();
  }

  const prometheus_family* find(std::string_view name) const {
    for (const auto& family : text_.families) {
      if (family.name == name) {
        return &family;
      }
    }
    return nullptr;
  }

  prometheus_text text_;
  std::size_t line_ = 0;
  std::string current_;
  std::set<std::string> closed_;
  std::set<std::string> seen_samples_;  // families with a sample already
  std::set<std::string> series_;
  std::map<std::string, histogram_series> histograms_;  // of the current family
};

}  // namespace

std::optional<double> prometheus_text::value_of(std::string_view name,
                                                const label_set& labels) const {
  for (const auto& sample : samples) {
    if (sample.name == name && sample.labels == labels) {
      return sample.value;
    }
  }
  return std::nullopt;
}

const prometheus_family* prometheus_text::family(std::string_view name) const {
  for (const auto& f : families) {
    if (f.name == name) {
      return &f;
    }
  }
  return nullptr;
}

prometheus_check check_prometheus_text(std::string_view body) {
  return checker().run(body);
}

}  // namespace atls::test
