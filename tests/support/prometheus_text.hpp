// A strict reader of the Prometheus text exposition format, version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/), for tests of what atlsd
// exports. It refuses what a strict consumer would, and a little more that atlsd never writes
// (noted below), so that a test fails on anything a scrape might choke on:
// - names: metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* without a
//   leading "__", no label twice in one sample;
// - escapes: only \\ \" \n in label values, only \\ \n in HELP text; invalid UTF-8 anywhere;
// - structure: every line ends in '\n' (the last one too); no blank lines and no '\r' (stricter
//   than Prometheus); HELP and TYPE at most once per family and before its first sample; every
//   sample under a TYPE (untyped samples are refused: atlsd types everything); a family's lines
//   in one group; no series twice; no trailing comma in a label set (stricter);
// - values: a decimal float, +Inf, -Inf or NaN (Go's other spellings are refused: stricter); an
//   optional integer timestamp;
// - types: counter, gauge, histogram, untyped (summary is refused: atlsd has none); a counter
//   is neither negative nor NaN; a histogram's samples are _bucket (with le), _sum and _count
//   (without le); per series, bucket bounds increase, counts never decrease, a +Inf bucket
//   exists and _count equals it, and _sum is there.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace atls::test {

using label_set = std::map<std::string, std::string>;

struct prometheus_sample {
  std::string name;  // as written: "x_bucket" for a histogram x
  label_set labels;  // unescaped values
  double value = 0;
  std::optional<std::int64_t> timestamp_ms;
};

struct prometheus_family {
  std::string name;
  std::string type;                 // counter, gauge, histogram or untyped
  std::optional<std::string> help;  // unescaped
};

struct prometheus_text {
  std::vector<prometheus_family> families;  // in order of appearance
  std::vector<prometheus_sample> samples;   // in order of appearance

  // The value of the sample with this name and exactly these labels (le included for a
  // bucket); nullopt when there is none.
  [[nodiscard]] std::optional<double> value_of(std::string_view name,
                                               const label_set& labels = {}) const;
  // The family named so, or nullptr.
  [[nodiscard]] const prometheus_family* family(std::string_view name) const;
};

struct prometheus_check {
  std::string error;  // "line 3: why", or "" when the text passed
  prometheus_text text;
  explicit operator bool() const { return error.empty(); }
};

// Reads body as a scrape's response body. Never throws on bad input: says why in `error`.
prometheus_check check_prometheus_text(std::string_view body);

}  // namespace atls::test
