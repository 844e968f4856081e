// Metrics in the Prometheus text exposition format, version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/): counters, gauges and histograms
// with fixed label names, grouped in families that a registry writes out on a scrape.
//
// Written here rather than taken from a client library: Debian 12's prometheus-cpp-dev drags
// in civetweb and libcurl for its own HTTP server and push gateway, which the admin listener
// (admin/admin_server.hpp) does not need; what remains is a few hundred lines.
//
// Threads: registering families and looking up children lock a mutex; a child's value is a
// lock-free atomic, so hot paths look their child up once, keep the reference, and update it
// from any thread. A scrape (registry::exposition) may run on any thread at the same time.
//
// Misuse is a programmer error, never a runtime condition: a malformed or duplicate name, the
// wrong number of label values, a negative counter increment. Each one writes what was wrong to
// stderr and aborts, like an assertion, so that a test catches it before a release does.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace atls::metrics {

// A count that only goes up (events, bytes). Lock-free; any thread.
class counter {
 public:
  counter() = default;
  ~counter() = default;
  counter(const counter&) = delete;
  counter& operator=(const counter&) = delete;
  counter(counter&&) = delete;
  counter& operator=(counter&&) = delete;

  // Adds delta. A negative or NaN delta is a programmer error (aborts): a counter that goes
  // down reads as a process restart to Prometheus' rate().
  void inc(double delta = 1);
  [[nodiscard]] double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down (open connections, readiness). Lock-free; any thread.
class gauge {
 public:
  gauge() = default;
  ~gauge() = default;
  gauge(const gauge&) = delete;
  gauge& operator=(const gauge&) = delete;
  gauge(gauge&&) = delete;
  gauge& operator=(gauge&&) = delete;

  void set(double value) noexcept { value_.store(value, std::memory_order_relaxed); }
  void inc(double delta = 1) noexcept { value_.fetch_add(delta, std::memory_order_relaxed); }
  void dec(double delta = 1) noexcept { value_.fetch_sub(delta, std::memory_order_relaxed); }
  [[nodiscard]] double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations sorted into buckets with fixed upper bounds, plus their sum. Lock-free; any
// thread.
class histogram {
 public:
  // `bounds` (strictly increasing, finite) belongs to the family and outlives the histogram.
  explicit histogram(std::span<const double> bounds);
  histogram(const histogram&) = delete;
  histogram& operator=(const histogram&) = delete;
  histogram(histogram&&) = delete;
  histogram& operator=(histogram&&) = delete;
  ~histogram();

  // Counts value in the first bucket whose bound is >= value (+Inf when none is; NaN too, as
  // Prometheus' own clients do) and adds it to the sum.
  void observe(double value) noexcept;

  // A duration, in seconds (the unit Prometheus names use).
  template <class Rep, class Period>
  void observe(std::chrono::duration<Rep, Period> elapsed) noexcept {
    observe(std::chrono::duration<double>(elapsed).count());
  }

  struct snapshot {
    // Per bound, then +Inf: how many observations were <= it (cumulative, as exposed).
    std::vector<std::uint64_t> cumulative;
    double sum = 0;
    // Equal to cumulative.back() by construction, so that a scrape racing observe() never
    // shows a _count that differs from the +Inf bucket.
    std::uint64_t count = 0;
  };
  [[nodiscard]] snapshot read() const;

 private:
  std::span<const double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1, per bucket
  std::atomic<double> sum_{0};
};

// What families have in common; the registry owns them.
class family {
 public:
  family(const family&) = delete;
  family& operator=(const family&) = delete;
  family(family&&) = delete;
  family& operator=(family&&) = delete;
  virtual ~family();

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] const std::string& help() const noexcept { return help_; }
  [[nodiscard]] const std::vector<std::string>& label_names() const noexcept {
    return label_names_;
  }

  // Appends "# HELP", "# TYPE" and every child's samples. Locks this family.
  virtual void write(std::string& out) const = 0;

 protected:
  family(std::string name, std::string help, std::vector<std::string> label_names);

  // The children's key: one value per label name (anything else aborts), with invalid UTF-8
  // replaced by U+FFFD, since Prometheus refuses a whole scrape over one bad label value.
  [[nodiscard]] std::vector<std::string> key_of(
      std::initializer_list<std::string_view> values) const;
  // Appends `sample{name="value",...}` for a child's key, with extra labels (le) after them.
  void write_series(std::string& out, std::string_view sample, const std::vector<std::string>& key,
                    std::string_view extra_label = {}, std::string_view extra_value = {}) const;
  void write_header(std::string& out, std::string_view type) const;

  mutable std::mutex mutex_;  // guards the derived classes' maps of children

 private:
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
};

class counter_family final : public family {
 public:
  // The child for these label values, one per label name in registration order, created at 0
  // on first use. The reference stays valid as long as the registry. Any thread.
  counter& with(std::initializer_list<std::string_view> values);
  void write(std::string& out) const override;

 private:
  friend class registry;
  using family::family;
  std::map<std::vector<std::string>, counter> children_;
};

class gauge_family;

// A gauge series whose value a callback gives at scrape time, for values another object
// already keeps (open connections per listener). The series exists while this handle does;
// after the destructor (or reset()) returns, the callback is never called again, so it may
// capture what the handle's owner owns. Move-only.
class gauge_binding {
 public:
  gauge_binding() = default;
  ~gauge_binding();
  gauge_binding(gauge_binding&& other) noexcept;
  gauge_binding& operator=(gauge_binding&& other) noexcept;
  gauge_binding(const gauge_binding&) = delete;
  gauge_binding& operator=(const gauge_binding&) = delete;

  void reset();

 private:
  friend class gauge_family;
  gauge_binding(gauge_family* owner, std::vector<std::string> key);
  gauge_family* family_ = nullptr;
  std::vector<std::string> key_;
};

class gauge_family final : public family {
 public:
  // The pushed child for these label values, as counter_family::with(). Asking for a series
  // that is bound to a callback is a programmer error (aborts).
  gauge& with(std::initializer_list<std::string_view> values);

  // Makes the series for these label values read `read()` at every scrape, on the scraping
  // thread and under the registry's and this family's locks: `read` must be quick, must not
  // use this family, and must not register families or scrape (it would deadlock).
  // A series that already exists (pushed or bound) is a programmer error (aborts).
  [[nodiscard]] gauge_binding bind(std::initializer_list<std::string_view> values,
                                   std::function<double()> read);

  void write(std::string& out) const override;

 private:
  friend class registry;
  friend class gauge_binding;
  using family::family;
  void unbind(const std::vector<std::string>& key);

  struct series {
    gauge pushed;
    std::function<double()> read;  // set: a bound series, and `pushed` is unused
  };
  std::map<std::vector<std::string>, series> children_;
};

class histogram_family final : public family {
 public:
  // As counter_family::with(); every child has the family's bucket bounds.
  histogram& with(std::initializer_list<std::string_view> values);
  [[nodiscard]] std::span<const double> bounds() const noexcept { return bounds_; }
  void write(std::string& out) const override;

 private:
  friend class registry;
  histogram_family(std::string name, std::string help, std::vector<std::string> label_names,
                   std::vector<double> bounds);
  std::vector<double> bounds_;
  std::map<std::vector<std::string>, histogram> children_;
};

// The families of one process (or one test), in registration order.
class registry {
 public:
  registry();
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;
  registry(registry&&) = delete;
  registry& operator=(registry&&) = delete;

  // Registers a family and returns it; it lives as long as the registry. Names follow
  // Prometheus' rules: metric names [a-zA-Z_:][a-zA-Z0-9_:]*, counter names end in "_total",
  // label names [a-zA-Z_][a-zA-Z0-9_]* without a leading "__", and "le" is the histograms' own.
  // A bad or duplicate name, or one whose samples would collide with another family's
  // (a gauge "x_count" next to a histogram "x"), is a programmer error (aborts). A family
  // without labels has its one series from the start, at 0. Any thread.
  counter_family& add_counter(std::string name, std::string help,
                              std::vector<std::string> label_names = {});
  gauge_family& add_gauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {});
  // `bounds`: the buckets' upper bounds, strictly increasing and finite; +Inf is implied.
  histogram_family& add_histogram(std::string name, std::string help,
                                  std::vector<std::string> label_names, std::vector<double> bounds);

  // The text exposition (version 0.0.4) of every family in registration order, children in
  // the order of their label values. Lines end in '\n'; an empty registry gives "". Any thread.
  [[nodiscard]] std::string exposition() const;

 private:
  template <class Family>
  Family& add(std::unique_ptr<Family> family, std::vector<std::string> sample_names);

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<family>> families_;
  std::set<std::string, std::less<>> sample_names_;
};

// True for names Prometheus accepts: [a-zA-Z_:][a-zA-Z0-9_:]* for metrics;
// [a-zA-Z_][a-zA-Z0-9_]* for labels. Neither checks the "__" reservation.
[[nodiscard]] bool valid_metric_name(std::string_view name) noexcept;
[[nodiscard]] bool valid_label_name(std::string_view name) noexcept;

// A sample value as Prometheus parses it: integers without exponent where exact ("42"),
// otherwise the shortest text that reads back to the same double ("0.0005", "1e+300"),
// "+Inf", "-Inf" or "NaN".
[[nodiscard]] std::string format_value(double value);

}  // namespace atls::metrics
