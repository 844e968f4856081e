// The strict exposition-format checker of support/prometheus_text.hpp: it must accept the
// format and refuse each thing a strict consumer would, or the metrics tests prove nothing.
#include "support/prometheus_text.hpp"

#include <string>
#include <string_view>

#include <doctest/doctest.h>

namespace atls::test {
namespace {

TEST_CASE("the checker accepts a well-formed exposition and returns its samples") {
  const std::string body =
      "# A comment line.\n"
      "# HELP requests_total Requests, \\\\ and \\n escaped; \"quotes\" as they are.\n"
      "# TYPE requests_total counter\n"
      "requests_total{code=\"200\",path=\"/a\\\\b \\\"q\\\"\\nx\"} 1027 1395066363000\n"
      "requests_total{code=\"400\",path=\"/\"} 3\n"
      "# TYPE temperature gauge\n"
      "temperature -12.5e-1\n"
      "# TYPE lonely gauge\n"
      "lonely{} +Inf\n"
      "# TYPE odd gauge\n"
      "odd NaN\n"
      "# TYPE latency_seconds histogram\n"
      "# HELP latency_seconds Latency.\n"
      "latency_seconds_bucket{op=\"a\",le=\"0.05\"} 1\n"
      "latency_seconds_bucket{op=\"a\",le=\"1\"} 1\n"
      "latency_seconds_bucket{op=\"a\",le=\"+Inf\"} 2\n"
      "latency_seconds_sum{op=\"a\"} 3.01\n"
      "latency_seconds_count{op=\"a\"} 2\n"
      "latency_seconds_bucket{op=\"b\",le=\"+Inf\"} 0\n"
      "latency_seconds_sum{op=\"b\"} 0\n"
      "latency_seconds_count{op=\"b\"} 0\n"
      "# TYPE free untyped\n"
      "free 1\n";
  const auto check = check_prometheus_text(body);
  REQUIRE_MESSAGE(check, check.error);
  const auto& text = check.text;
  CHECK(text.families.size() == 6);
  REQUIRE(text.family("requests_total") != nullptr);
  CHECK(text.family("requests_total")->type == "counter");
  CHECK(text.family("requests_total")->help ==
        "Requests, \\ and \n escaped; \"quotes\" as they are.");
  CHECK(text.value_of("requests_total", {{"code", "200"}, {"path", "/a\\b \"q\"\nx"}}) == 1027);
  CHECK(text.value_of("requests_total", {{"code", "400"}, {"path", "/"}}) == 3);
  CHECK_FALSE(text.value_of("requests_total", {{"code", "400"}}));  // labels must match exactly
  CHECK(text.value_of("temperature") == -1.25);
  CHECK(text.value_of("latency_seconds_bucket", {{"op", "a"}, {"le", "+Inf"}}) == 2);
  CHECK(text.value_of("latency_seconds_count", {{"op", "b"}}) == 0);
  CHECK(text.samples.front().timestamp_ms == 1395066363000);
  CHECK(check_prometheus_text(""));
}

struct bad_case {
  std::string_view what;
  std::string body;
  std::string_view error;  // part of the checker's reason
};

TEST_CASE("the checker refuses each violation of the format, saying which") {
  const std::string counter = "# TYPE c_total counter\n";
  const std::string hist = "# TYPE h histogram\n";
  const bad_case cases[] = {
      {"no line feed at the end", counter + "c_total 1", "line feed"},
      {"a blank line", counter + "\nc_total 1\n", "blank line"},
      {"a carriage return", counter + "c_total 1\r\n", "carriage return"},
      {"invalid UTF-8", counter + "c_total{a=\"\xc3\x28\"} 1\n", "UTF-8"},
      {"a metric name starting with a digit", "1c 1\n", "metric name"},
      {"a metric name with a dash", "# TYPE a-b gauge\n", "space after"},
      {"a label name with a colon", counter + "c_total{a:b=\"x\"} 1\n", "'='"},
      {"a reserved label name", counter + "c_total{__x=\"x\"} 1\n", "reserved"},
      {"an unknown escape in a label value", counter + "c_total{a=\"\\t\"} 1\n", "escape"},
      {"an unterminated label value", counter + "c_total{a=\"x} 1\n", "closing"},
      {"a trailing comma", counter + "c_total{a=\"x\",} 1\n", "trailing comma"},
      {"a label twice", counter + "c_total{a=\"x\",a=\"y\"} 1\n", "twice"},
      {"an unknown escape in HELP", "# HELP c_total a \\t b\n" + counter, "escape"},
      {"a sample without TYPE", "c_total 1\n", "without a TYPE"},
      {"a sample before its TYPE", "# HELP c_total x\nc_total 1\n# TYPE c_total counter\n",
       "before its TYPE"},
      {"TYPE twice", counter + counter, "second TYPE"},
      {"HELP twice", "# HELP c_total a\n# HELP c_total b\n", "second HELP"},
      {"HELP after the samples", counter + "c_total 1\n# HELP c_total late\n", "after its"},
      {"an unknown type", "# TYPE s summary\n", "unsupported type"},
      {"a duplicate series, labels reordered",
       "# TYPE g gauge\ng{a=\"1\",b=\"2\"} 1\ng{b=\"2\",a=\"1\"} 2\n", "twice"},
      {"a family split in two groups", "# TYPE a gauge\n# TYPE b gauge\na 1\n", "one group"},
      {"a negative counter", counter + "c_total -1\n", "negative"},
      {"a NaN counter", counter + "c_total NaN\n", "negative or NaN"},
      {"a value Go reads but we do not write", counter + "c_total 0x10\n", "malformed"},
      {"a value with a comma", "# TYPE g gauge\ng 1,5\n", "malformed"},
      {"lower-case inf", "# TYPE g gauge\ng inf\n", "malformed"},
      {"an empty exponent", "# TYPE g gauge\ng 1e\n", "exponent"},
      {"two spaces before the value", "# TYPE g gauge\ng  1\n", "malformed"},
      {"text after the timestamp", "# TYPE g gauge\ng 1 2 3\n", "after the value"},
      {"a malformed timestamp", "# TYPE g gauge\ng 1 1.5\n", "timestamp"},
      {"a histogram without +Inf", hist + "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "+Inf"},
      {"buckets that are not cumulative",
       hist + "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
       "not cumulative"},
      {"bucket bounds out of order",
       hist + "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n"
              "h_count 1\n",
       "do not increase"},
      {"_count other than the +Inf bucket", hist + "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
       "_count other"},
      {"a histogram without _sum", hist + "h_bucket{le=\"+Inf\"} 2\nh_count 2\n", "no _sum"},
      {"a histogram without _count", hist + "h_bucket{le=\"+Inf\"} 2\nh_sum 2\n", "no _count"},
      {"a bucket without le", hist + "h_bucket 1\n", "without le"},
      {"a non-numeric le", hist + "h_bucket{le=\"x\"} 1\n", "not a number"},
      {"le on _sum", hist + "h_bucket{le=\"+Inf\"} 1\nh_sum{le=\"1\"} 1\nh_count 1\n", "le label"},
      {"a histogram's bare name as a sample", hist + "h 1\n", "bare name"},
      {"a negative bucket count", hist + "h_bucket{le=\"+Inf\"} -1\n", "negative"},
      {"a family colliding with a histogram's samples", hist + "# TYPE h_count gauge\n",
       "collides"},
      {"a sample of another family's name", "# TYPE g gauge\ng_other 1\n", "without a TYPE"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    CAPTURE(c.body);
    const auto check = check_prometheus_text(c.body);
    CHECK_FALSE(check);
    CHECK_MESSAGE(check.error.find(c.error) != std::string::npos, check.error);
  }
}

TEST_CASE("the checker names the line of the first violation") {
  const auto check = check_prometheus_text("# TYPE g gauge\ng 1\ng{a=\"\\q\"} 2\n");
  CHECK(check.error.starts_with("line 3: "));
}

}  // namespace
}  // namespace atls::test
