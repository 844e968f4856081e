// The metrics registry and its text exposition, read back by the strict checker of
// support/prometheus_text.hpp.
#include "atls/metrics/registry.hpp"

#include <atomic>
#include <cmath>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "atls/metrics/atlsd_metrics.hpp"

#include "support/prometheus_text.hpp"
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace atls::metrics {
namespace {

// The strict checker's reading of a registry's exposition; fails the test when it refuses it.
test::prometheus_text checked(const registry& r) {
  const auto body = r.exposition();
  auto check = test::check_prometheus_text(body);
  INFO("exposition:\n" << body);
  REQUIRE_MESSAGE(check, check.error);
  return std::move(check.text);
}

// Runs misuse in a child process; true when the child aborted (SIGABRT), as a programmer error
// must. The child's output goes to /dev/null and doctest's crash handler is taken out, so the
// expected complaint does not clutter the test log as a crash.
bool aborts(const std::function<void()>& misuse) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::signal(SIGABRT, SIG_DFL);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    misuse();
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

TEST_CASE("a counter updated from eight threads through a cached child counts every increment") {
  registry r;
  auto& requests = r.add_counter("test_requests_total", "Requests.", {"listener"});
  constexpr int threads = 8;
  constexpr int per_thread = 20000;
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      // Half of the increments look their child up every time, half through a cached reference:
      // both must land on the same series.
      auto& cached = requests.with({"in"});
      for (int i = 0; i < per_thread; ++i) {
        if (i % 2 == 0) {
          cached.inc();
        } else {
          requests.with({"in"}).inc(1);
        }
      }
    });
  }
  for (auto& w : workers) {
    w.join();
  }
  CHECK(requests.with({"in"}).value() == threads * per_thread);
  const auto text = checked(r);
  CHECK(text.value_of("test_requests_total", {{"listener", "in"}}) == threads * per_thread);
}

TEST_CASE("gauges and histograms updated while scrapes run stay consistent in every scrape") {
  registry r;
  auto& open = r.add_gauge("test_open", "Open things.").with({});
  auto& latency = r.add_histogram("test_seconds", "Latency.", {"op"}, {0.001, 0.01, 0.1});
  std::atomic<bool> done{false};
  std::thread writer([&] {
    auto& h = latency.with({"quote"});
    for (int i = 0; i < 50000; ++i) {
      h.observe(static_cast<double>(i % 200) / 1000.0);
      open.inc();
      open.dec();
    }
    done = true;
  });
  // The checker refuses a _count that differs from the +Inf bucket or buckets that are not
  // cumulative: a scrape that raced the writer would show either.
  int scrapes = 0;
  while (!done || scrapes == 0) {
    (void)checked(r);
    ++scrapes;
  }
  writer.join();
  const auto text = checked(r);
  CHECK(text.value_of("test_seconds_count", {{"op", "quote"}}) == 50000);
  CHECK(text.value_of("test_open") == 0);
}

TEST_CASE("with() gives the same child for the same label values and a separate one for others") {
  registry r;
  auto& f = r.add_counter("test_total", "Things.", {"a", "b"});
  auto& one = f.with({"x", "y"});
  CHECK(&f.with({"x", "y"}) == &one);
  CHECK(&f.with({"y", "x"}) != &one);
  one.inc(2.5);
  f.with({"y", "x"}).inc();
  const auto text = checked(r);
  CHECK(text.value_of("test_total", {{"a", "x"}, {"b", "y"}}) == 2.5);
  CHECK(text.value_of("test_total", {{"a", "y"}, {"b", "x"}}) == 1);
}

TEST_CASE("label values with backslashes, quotes and line feeds are escaped and read back intact") {
  registry r;
  auto& f = r.add_gauge("test_gauge", "Escapes.", {"path"});
  const std::string nasty = "C:\\dir \"quoted\"\nsecond line, {braces}=x";
  f.with({nasty}).set(7);
  f.with({"caf\xc3\xa9"}).set(8);  // UTF-8 passes through unchanged
  const auto body = r.exposition();
  CHECK(body.find(R"(test_gauge{path="C:\\dir \"quoted\"\nsecond line, {braces}=x"} 7)") !=
        std::string::npos);
  const auto text = checked(r);
  CHECK(text.value_of("test_gauge", {{"path", nasty}}) == 7);
  CHECK(text.value_of("test_gauge", {{"path", "caf\xc3\xa9"}}) == 8);
}

TEST_CASE(
    "invalid UTF-8 in a label value is replaced, so that one bad name cannot spoil a scrape") {
  registry r;
  auto& f = r.add_counter("test_total", "UTF-8.", {"listener"});
  f.with({"bad\xff\xfe"}).inc();
  f.with({"\xed\xa0\x80"}).inc();  // a UTF-16 surrogate, which UTF-8 forbids
  const auto text = checked(r);
  CHECK(text.value_of("test_total", {{"listener", "bad\xef\xbf\xbd\xef\xbf\xbd"}}) == 1);
  CHECK(text.value_of("test_total", {{"listener", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}}) == 1);
}

TEST_CASE("HELP text escapes backslashes and line feeds and keeps quotes") {
  registry r;
  (void)r.add_gauge("test_gauge", "A \"help\" text\\with\na second line.");
  CHECK(r.exposition() ==
        "# HELP test_gauge A \"help\" text\\\\with\\na second line.\n"
        "# TYPE test_gauge gauge\n"
        "test_gauge 0\n");
  const auto text = checked(r);
  REQUIRE(text.family("test_gauge") != nullptr);
  CHECK(text.family("test_gauge")->help == "A \"help\" text\\with\na second line.");
}

TEST_CASE("a histogram writes cumulative buckets up to +Inf, then _sum and _count") {
  registry r;
  auto& f = r.add_histogram("test_duration_seconds", "Durations.", {"op"}, {0.005, 0.1, 1});
  auto& h = f.with({"sign"});
  h.observe(0.001);
  h.observe(0.005);  // on a bound: counted in that bucket (le means <=)
  h.observe(0.05);
  h.observe(std::chrono::milliseconds(500));
  h.observe(3.0);
  CHECK(r.exposition() ==
        "# HELP test_duration_seconds Durations.\n"
        "# TYPE test_duration_seconds histogram\n"
        "test_duration_seconds_bucket{op=\"sign\",le=\"0.005\"} 2\n"
        "test_duration_seconds_bucket{op=\"sign\",le=\"0.1\"} 3\n"
        "test_duration_seconds_bucket{op=\"sign\",le=\"1\"} 4\n"
        "test_duration_seconds_bucket{op=\"sign\",le=\"+Inf\"} 5\n"
        "test_duration_seconds_sum{op=\"sign\"} 3.556\n"
        "test_duration_seconds_count{op=\"sign\"} 5\n");
  const auto snapshot = h.read();
  CHECK(snapshot.cumulative == std::vector<std::uint64_t>{2, 3, 4, 5});
  CHECK(snapshot.count == 5);
  (void)checked(r);
}

TEST_CASE("a histogram without labels or bounds still has its +Inf bucket, _sum and _count") {
  registry r;
  auto& f = r.add_histogram("test_seconds", "No bounds.", {}, {});
  f.with({}).observe(2);
  CHECK(r.exposition() ==
        "# HELP test_seconds No bounds.\n"
        "# TYPE test_seconds histogram\n"
        "test_seconds_bucket{le=\"+Inf\"} 1\n"
        "test_seconds_sum 2\n"
        "test_seconds_count 1\n");
  (void)checked(r);
}

TEST_CASE("families come out in registration order and their children sorted by label values") {
  registry r;
  auto& zeta = r.add_counter("zeta_total", "Registered first.", {"k"});
  auto& alpha = r.add_gauge("alpha", "Registered second.", {"k"});
  zeta.with({"b"}).inc();
  zeta.with({"a"}).inc(2);
  alpha.with({"z"}).set(-1.5);
  alpha.with({"m"}).set(1e-7);
  (void)r.add_counter("empty_total", "Labels, but no child yet.", {"k"});
  CHECK(r.exposition() ==
        "# HELP zeta_total Registered first.\n"
        "# TYPE zeta_total counter\n"
        "zeta_total{k=\"a\"} 2\n"
        "zeta_total{k=\"b\"} 1\n"
        "# HELP alpha Registered second.\n"
        "# TYPE alpha gauge\n"
        "alpha{k=\"m\"} 1e-07\n"
        "alpha{k=\"z\"} -1.5\n"
        "# HELP empty_total Labels, but no child yet.\n"
        "# TYPE empty_total counter\n");
  (void)checked(r);
  CHECK(registry().exposition().empty());
}

TEST_CASE("sample values are written so that Prometheus parses them back exactly") {
  CHECK(format_value(0) == "0");
  CHECK(format_value(-0.0) == "0");
  CHECK(format_value(42) == "42");
  CHECK(format_value(-7) == "-7");
  CHECK(format_value(9007199254740992.0) == "9007199254740992");  // 2^53, the last exact one
  CHECK(format_value(1e20) == "1e+20");
  CHECK(format_value(0.0005) == "0.0005");
  CHECK(format_value(2.5) == "2.5");
  CHECK(format_value(1.0 / 3) == "0.3333333333333333");
  CHECK(format_value(HUGE_VAL) == "+Inf");
  CHECK(format_value(-HUGE_VAL) == "-Inf");
  CHECK(format_value(std::nan("")) == "NaN");
  for (const double v :
       {0.1, 1.0 / 3, 1e-300, 123456.789, 6.02214076e23, -2.2250738585072014e-308}) {
    CHECK(std::stod(format_value(v)) == v);
  }
}

TEST_CASE("metric and label names follow Prometheus' character rules") {
  CHECK(valid_metric_name("atlsd_connections_total"));
  CHECK(valid_metric_name("job:rate5m"));
  CHECK(valid_metric_name("_x1"));
  CHECK_FALSE(valid_metric_name(""));
  CHECK_FALSE(valid_metric_name("1x"));
  CHECK_FALSE(valid_metric_name("a-b"));
  CHECK_FALSE(valid_metric_name("a b"));
  CHECK_FALSE(valid_metric_name("caf\xc3\xa9"));
  CHECK(valid_label_name("listener"));
  CHECK(valid_label_name("_x"));
  CHECK_FALSE(valid_label_name("a:b"));
  CHECK_FALSE(valid_label_name("9"));
  CHECK_FALSE(valid_label_name(""));
}

TEST_CASE("registering or using a metric wrongly aborts, as a programmer error") {
  // Each must abort: bad names, reserved names, duplicates, wrong arity, negative counts.
  CHECK(aborts([] { registry().add_gauge("1bad", "x"); }));
  CHECK(aborts([] { registry().add_gauge("__internal", "x"); }));
  CHECK(aborts([] { registry().add_counter("no_suffix", "x"); }));
  CHECK(aborts([] { registry().add_gauge("g", "x", {"a-b"}); }));
  CHECK(aborts([] { registry().add_gauge("g", "x", {"__name"}); }));
  CHECK(aborts([] { registry().add_gauge("g", "x", {"le"}); }));
  CHECK(aborts([] { registry().add_histogram("h", "x", {"le"}, {1}); }));
  CHECK(aborts([] { registry().add_gauge("g", "x", {"a", "a"}); }));
  CHECK(aborts([] { registry().add_histogram("h", "x", {}, {1, 1}); }));
  CHECK(aborts([] { registry().add_histogram("h", "x", {}, {2, 1}); }));
  CHECK(aborts([] { registry().add_histogram("h", "x", {}, {1, HUGE_VAL}); }));
  CHECK(aborts([] {
    registry r;
    r.add_gauge("g", "x");
    r.add_counter("g_total", "y");  // fine on its own...
    r.add_gauge("g", "z");          // ...but not the same name twice
  }));
  CHECK(aborts([] {
    registry r;
    r.add_histogram("h", "x", {}, {1});
    r.add_gauge("h_count", "collides with the histogram's own sample");
  }));
  CHECK(aborts([] {
    registry r;
    r.add_counter("c_total", "x", {"a", "b"}).with({"only one"});
  }));
  CHECK(aborts([] {
    registry r;
    r.add_counter("c_total", "x").with({}).inc(-1);
  }));
  CHECK(aborts([] {
    registry r;
    r.add_counter("c_total", "x").with({}).inc(std::nan(""));
  }));
  CHECK(aborts([] {
    registry r;
    auto& g = r.add_gauge("g", "x", {"a"});
    auto binding = g.bind({"v"}, [] { return 1.0; });
    g.with({"v"});  // pushed and bound at once
  }));
  // And the control: correct use does not abort, so the checks above can fail.
  CHECK_FALSE(aborts([] {
    registry r;
    r.add_counter("c_total", "x", {"a"}).with({"v"}).inc(0);
    r.add_histogram("h", "x", {"a"}, {1, 2}).with({"v"}).observe(-1);
  }));
}

TEST_CASE("a gauge bound to a callback is read at scrape time and removed with its binding") {
  registry r;
  auto& open = r.add_gauge("test_open_connections", "Open now.", {"listener"});
  std::atomic<int> value{3};
  {
    auto binding = open.bind({"in"}, [&value] { return static_cast<double>(value.load()); });
    CHECK(checked(r).value_of("test_open_connections", {{"listener", "in"}}) == 3);
    value = 5;
    CHECK(checked(r).value_of("test_open_connections", {{"listener", "in"}}) == 5);
    auto moved = std::move(binding);  // the series follows the handle
    CHECK(checked(r).value_of("test_open_connections", {{"listener", "in"}}) == 5);
  }
  CHECK_FALSE(checked(r).value_of("test_open_connections", {{"listener", "in"}}));
  // The label values are free again.
  auto again = open.bind({"in"}, [] { return 1.0; });
  CHECK(checked(r).value_of("test_open_connections", {{"listener", "in"}}) == 1);
}

TEST_CASE("atlsd's instruments carry the contracted names, types and labels") {
  const atlsd_metrics m;
  m.connections.with({"in", "relayed"}).inc();
  m.open_connections.with({"in"}).inc();
  m.handshake_duration.with({"in"}).observe(0.003);
  m.attestation_duration.with({"in"}).observe(0.2);
  m.attestation_outcomes.with({"in", "ok"}).inc();
  m.reattestation_closes.with({"in", "status_below_policy"}).inc();
  m.tpm_operations.with({"quote", "ok"}).inc();
  m.tpm_operation_duration.with({"quote"}).observe(0.05);
  m.verifier_requests.with({"veraison", "session", "201"}).inc();
  m.verifier_request_duration.with({"veraison"}).observe(0.02);
  m.relayed_bytes.with({"in", "to_upstream"}).inc(1500);
  m.ready.with({}).set(1);
  const auto text = checked(m.registry);

  const std::vector<std::pair<std::string, std::string>> contract{
      {"atlsd_build_info", "gauge"},
      {"atlsd_connections_total", "counter"},
      {"atlsd_open_connections", "gauge"},
      {"atlsd_handshake_duration_seconds", "histogram"},
      {"atlsd_attestation_duration_seconds", "histogram"},
      {"atlsd_attestation_outcomes_total", "counter"},
      {"atlsd_reattestation_closes_total", "counter"},
      {"atlsd_tpm_operations_total", "counter"},
      {"atlsd_tpm_operation_duration_seconds", "histogram"},
      {"atlsd_verifier_requests_total", "counter"},
      {"atlsd_verifier_request_duration_seconds", "histogram"},
      {"atlsd_relayed_bytes_total", "counter"},
      {"atlsd_config_reloads_total", "counter"},
      {"atlsd_ready", "gauge"},
  };
  REQUIRE(text.families.size() == contract.size());
  for (std::size_t i = 0; i < contract.size(); ++i) {
    CHECK(text.families[i].name == contract[i].first);
    CHECK(text.families[i].type == contract[i].second);
    CHECK(text.families[i].help.value_or("").size() > 10);
  }
  CHECK(text.value_of("atlsd_connections_total", {{"listener", "in"}, {"outcome", "relayed"}}) ==
        1);
  CHECK(text.value_of("atlsd_verifier_requests_total",
                      {{"verifier", "veraison"}, {"endpoint", "session"}, {"status", "201"}}) == 1);
  CHECK(text.value_of("atlsd_relayed_bytes_total",
                      {{"listener", "in"}, {"direction", "to_upstream"}}) == 1500);
  CHECK(text.value_of("atlsd_handshake_duration_seconds_bucket",
                      {{"listener", "in"}, {"le", "0.0025"}}) == 0);
  CHECK(text.value_of("atlsd_handshake_duration_seconds_bucket",
                      {{"listener", "in"}, {"le", "0.005"}}) == 1);
  CHECK(text.value_of("atlsd_config_reloads_total", {{"result", "ok"}}) == 0);
  CHECK(text.value_of("atlsd_config_reloads_total", {{"result", "invalid"}}) == 0);
  CHECK(text.value_of("atlsd_ready") == 1);

  // build_info: one series, value 1, the version as its label.
  int build_series = 0;
  for (const auto& s : text.samples) {
    if (s.name == "atlsd_build_info") {
      ++build_series;
      CHECK(s.value == 1);
      CHECK(s.labels.size() == 1);
      CHECK_FALSE(s.labels.at("version").empty());
    }
  }
  CHECK(build_series == 1);
  CHECK(&process() == &process());
}

}  // namespace
}  // namespace atls::metrics
