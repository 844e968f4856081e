#include "atls/metrics/registry.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <utility>

namespace atls::metrics {

namespace {

// Misuse of the registry is a bug in the code that registers or updates metrics, never a
// condition of the data: stop where it happened rather than export something Prometheus would
// refuse.
[[noreturn]] void programmer_error(std::string_view what, std::string_view name) {
  (void)std::fprintf(stderr, "atls metrics: %.*s: '%.*s'\n", static_cast<int>(what.size()),
                     what.data(), static_cast<int>(name.size()), name.data());
  std::abort();
}

// Appends text with the escapes the format defines: backslash and line feed always, the
// double quote inside label values (HELP text keeps it as is).
void append_escaped(std::string& out, std::string_view text, bool quote) {
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// The length of the well-formed UTF-8 sequence at the start of text (RFC 3629 section 4:
// no overlong forms, no surrogates, nothing above U+10FFFF), or 0 when there is none.
std::size_t utf8_sequence(std::string_view text) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) {
    return 1;
  }
  std::size_t length = 0;
  unsigned char low = 0x80;
  unsigned char high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    low = lead == 0xe0 ? 0xa0 : 0x80;   // overlong
    high = lead == 0xed ? 0x9f : 0xbf;  // surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    low = lead == 0xf0 ? 0x90 : 0x80;   // overlong
    high = lead == 0xf4 ? 0x8f : 0xbf;  // above U+10FFFF
  } else {
    return 0;
  }
  if (text.size() < length || byte(1) < low || byte(1) > high) {
    return 0;
  }
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) {
      return 0;
    }
  }
  return length;
}

std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const auto n = utf8_sequence(text);
    if (n == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD REPLACEMENT CHARACTER, one per bad byte
      text.remove_prefix(1);
      continue;
    }
    out.append(text.substr(0, n));
    text.remove_prefix(n);
  }
  return out;
}

void check_label_names(std::string_view metric, const std::vector<std::string>& names) {
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto& label = names[i];
    if (!valid_label_name(label) || label.starts_with("__")) {
      programmer_error("bad label name in metric " + std::string(metric), label);
    }
    // Histograms add "le" themselves; a family's own "le" would collide with it, and on any
    // other type it reads like a bucket to people writing queries.
    if (label == "le") {
      programmer_error("label name reserved for histogram buckets in " + std::string(metric),
                       label);
    }
    if (std::find(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(i), label) !=
        names.begin() + static_cast<std::ptrdiff_t>(i)) {
      programmer_error("duplicate label name in metric " + std::string(metric), label);
    }
  }
}

}  // namespace

bool valid_metric_name(std::string_view name) noexcept {
  if (name.empty()) {
    return false;
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) {
      return false;
    }
  }
  return true;
}

bool valid_label_name(std::string_view name) noexcept {
  return valid_metric_name(name) && name.find(':') == std::string_view::npos;
}

std::string format_value(double value) {
  if (std::isnan(value)) {
    return "NaN";
  }
  if (std::isinf(value)) {
    return value > 0 ? "+Inf" : "-Inf";
  }
  // Below 2^53 every integer is exact, and counters are mostly integers: "42", not "4.2e+01".
  constexpr double exact_integers = 9007199254740992.0;
  if (value == std::trunc(value) && std::fabs(value) <= exact_integers) {
    return std::to_string(static_cast<std::int64_t>(value));
  }
  // Shortest round-trip digits in %g form: fixed for ordinary magnitudes ("0.0005"), which
  // is also how Prometheus' Go clients write "le" bounds, so series keep matching theirs.
  char buffer[64];
  const auto [end, ec] =
      std::to_chars(std::begin(buffer), std::end(buffer), value, std::chars_format::general);
  if (ec != std::errc{}) {
    programmer_error("cannot format a sample value", "");
  }
  return {std::begin(buffer), end};
}

void counter::inc(double delta) {
  if (!(delta >= 0)) {
    programmer_error("negative or NaN counter increment", format_value(delta));
  }
  value_.fetch_add(delta, std::memory_order_relaxed);
}

histogram::histogram(std::span<const double> bounds)
    : bounds_(bounds), buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds.size() + 1)) {
  for (std::size_t i = 0; i <= bounds.size(); ++i) {
    buckets_[i].store(0, std::memory_order_relaxed);
  }
}

histogram::~histogram() = default;

void histogram::observe(double value) noexcept {
  // The bounds are few (about 15) and sorted; NaN compares false with all of them and lands in
  // +Inf.
  std::size_t i = 0;
  while (i < bounds_.size() && !(value <= bounds_[i])) {
    ++i;
  }
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

histogram::snapshot histogram::read() const {
  snapshot s;
  s.cumulative.reserve(bounds_.size() + 1);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(total);
  }
  s.count = total;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

family::family(std::string name, std::string help, std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}

family::~family() = default;

std::vector<std::string> family::key_of(std::initializer_list<std::string_view> values) const {
  if (values.size() != label_names_.size()) {
    programmer_error("wrong number of label values (" + std::to_string(values.size()) + ", not " +
                         std::to_string(label_names_.size()) + ") for metric",
                     name_);
  }
  std::vector<std::string> key;
  key.reserve(values.size());
  for (const auto value : values) {
    key.push_back(valid_utf8(value));
  }
  return key;
}

void family::write_header(std::string& out, std::string_view type) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  append_escaped(out, help_, false);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += type;
  out += '\n';
}

void family::write_series(std::string& out, std::string_view sample,
                          const std::vector<std::string>& key, std::string_view extra_label,
                          std::string_view extra_value) const {
  out += sample;
  if (key.empty() && extra_label.empty()) {
    return;
  }
  char separator = '{';
  for (std::size_t i = 0; i < key.size(); ++i) {
    out += separator;
    out += label_names_[i];
    out += "=\"";
    append_escaped(out, key[i], true);
    out += '"';
    separator = ',';
  }
  if (!extra_label.empty()) {
    out += separator;
    out += extra_label;
    out += "=\"";
    append_escaped(out, extra_value, true);
    out += '"';
  }
  out += '}';
}

counter& counter_family::with(std::initializer_list<std::string_view> values) {
  auto key = key_of(values);
  const std::lock_guard lock(mutex_);
  return children_.try_emplace(std::move(key)).first->second;
}

void counter_family::write(std::string& out) const {
  write_header(out, "counter");
  const std::lock_guard lock(mutex_);
  for (const auto& [key, child] : children_) {
    write_series(out, name(), key);
    out += ' ';
    out += format_value(child.value());
    out += '\n';
  }
}

gauge& gauge_family::with(std::initializer_list<std::string_view> values) {
  auto key = key_of(values);
  const std::lock_guard lock(mutex_);
  auto& entry = children_.try_emplace(std::move(key)).first->second;
  if (entry.read) {
    programmer_error("a series bound to a callback is also pushed, in metric", name());
  }
  return entry.pushed;
}

gauge_binding gauge_family::bind(std::initializer_list<std::string_view> values,
                                 std::function<double()> read) {
  if (!read) {
    programmer_error("empty callback for metric", name());
  }
  auto key = key_of(values);
  const std::lock_guard lock(mutex_);
  const auto [it, inserted] = children_.try_emplace(key);
  if (!inserted) {
    programmer_error("a series is bound twice, or bound and pushed, in metric", name());
  }
  it->second.read = std::move(read);
  return {this, std::move(key)};
}

void gauge_family::unbind(const std::vector<std::string>& key) {
  const std::lock_guard lock(mutex_);
  children_.erase(key);
}

void gauge_family::write(std::string& out) const {
  write_header(out, "gauge");
  const std::lock_guard lock(mutex_);
  for (const auto& [key, child] : children_) {
    write_series(out, name(), key);
    out += ' ';
    out += format_value(child.read ? child.read() : child.pushed.value());
    out += '\n';
  }
}

gauge_binding::gauge_binding(gauge_family* owner, std::vector<std::string> key)
    : family_(owner), key_(std::move(key)) {}

gauge_binding::~gauge_binding() {
  reset();
}

gauge_binding::gauge_binding(gauge_binding&& other) noexcept
    : family_(std::exchange(other.family_, nullptr)), key_(std::move(other.key_)) {}

gauge_binding& gauge_binding::operator=(gauge_binding&& other) noexcept {
  if (this != &other) {
    reset();
    family_ = std::exchange(other.family_, nullptr);
    key_ = std::move(other.key_);
  }
  return *this;
}

void gauge_binding::reset() {
  if (family_ != nullptr) {
    std::exchange(family_, nullptr)->unbind(key_);
  }
}

histogram_family::histogram_family(std::string name, std::string help,
                                   std::vector<std::string> label_names, std::vector<double> bounds)
    : family(std::move(name), std::move(help), std::move(label_names)),
      bounds_(std::move(bounds)) {}

histogram& histogram_family::with(std::initializer_list<std::string_view> values) {
  auto key = key_of(values);
  const std::lock_guard lock(mutex_);
  return children_.try_emplace(std::move(key), bounds_).first->second;
}

void histogram_family::write(std::string& out) const {
  write_header(out, "histogram");
  std::vector<std::string> le;
  le.reserve(bounds_.size() + 1);
  for (const double bound : bounds_) {
    le.push_back(format_value(bound));
  }
  le.emplace_back("+Inf");
  const std::string bucket = name() + "_bucket";
  const std::string sum = name() + "_sum";
  const std::string count = name() + "_count";
  const std::lock_guard lock(mutex_);
  for (const auto& [key, child] : children_) {
    const auto s = child.read();
    for (std::size_t i = 0; i < le.size(); ++i) {
      write_series(out, bucket, key, "le", le[i]);
      out += ' ';
      out += format_value(static_cast<double>(s.cumulative[i]));
      out += '\n';
    }
    write_series(out, sum, key);
    out += ' ';
    out += format_value(s.sum);
    out += '\n';
    write_series(out, count, key);
    out += ' ';
    out += format_value(static_cast<double>(s.count));
    out += '\n';
  }
}

registry::registry() = default;
registry::~registry() = default;

template <class Family>
Family& registry::add(std::unique_ptr<Family> family, std::vector<std::string> sample_names) {
  const auto& name = family->name();
  if (!valid_metric_name(name) || name.starts_with("__")) {
    programmer_error("bad metric name", name);
  }
  check_label_names(name, family->label_names());
  auto& result = *family;
  const std::lock_guard lock(mutex_);
  // The family's own name too: "# TYPE x" twice would be a malformed exposition.
  sample_names.push_back(name);
  for (const auto& sample : sample_names) {
    if (sample_names_.contains(sample)) {
      programmer_error("metric name already registered (or produced by another family)", sample);
    }
  }
  sample_names_.insert(sample_names.begin(), sample_names.end());
  families_.push_back(std::move(family));
  return result;
}

counter_family& registry::add_counter(std::string name, std::string help,
                                      std::vector<std::string> label_names) {
  if (!name.ends_with("_total")) {
    programmer_error("counter name without the _total suffix", name);
  }
  std::unique_ptr<counter_family> family(
      new counter_family(std::move(name), std::move(help), std::move(label_names)));
  auto& added = add(std::move(family), {});
  if (added.label_names().empty()) {
    added.with({});
  }
  return added;
}

gauge_family& registry::add_gauge(std::string name, std::string help,
                                  std::vector<std::string> label_names) {
  std::unique_ptr<gauge_family> family(
      new gauge_family(std::move(name), std::move(help), std::move(label_names)));
  auto& added = add(std::move(family), {});
  if (added.label_names().empty()) {
    added.with({});
  }
  return added;
}

histogram_family& registry::add_histogram(std::string name, std::string help,
                                          std::vector<std::string> label_names,
                                          std::vector<double> bounds) {
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i - 1] < bounds[i]))) {
      programmer_error("histogram bounds must be finite and strictly increasing, in", name);
    }
  }
  std::vector<std::string> samples{name + "_bucket", name + "_sum", name + "_count"};
  std::unique_ptr<histogram_family> family(new histogram_family(
      std::move(name), std::move(help), std::move(label_names), std::move(bounds)));
  auto& added = add(std::move(family), std::move(samples));
  if (added.label_names().empty()) {
    added.with({});
  }
  return added;
}

std::string registry::exposition() const {
  std::string out;
  const std::lock_guard lock(mutex_);
  for (const auto& f : families_) {
    f->write(out);
  }
  return out;
}

}  // namespace atls::metrics
