// tpm_bench: operations per second and latency percentiles for the TPM operations the sidecar
// runs per handshake (sign) and per attestation (certify, quote), each set against baselines
// measured in the same run, because the machines are shared and only ratios carry over. It is
// not a test: no figure passes or fails (bench/README.md).
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "atls/attest/evidence.hpp"
#include "atls/attest/tpm.hpp"
#include "atls/common/result.hpp"

#include "support/swtpm.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace asio = boost::asio;
namespace attest = atls::attest;
using bench_clock = std::chrono::steady_clock;

constexpr std::string_view usage = R"(usage: tpm_bench [--iterations N] [--warmup N] [--tcti STRING]

Operations per second and latency percentiles of the TPM operations, with ratios against a
software ECDSA P-256 sign and a minimal TPM round trip measured in the same run.

  --iterations N  measured operations per line (default 200)
  --warmup N      unmeasured operations before each line (default 10)
  --tcti STRING   an existing TPM, e.g. device:/dev/tpmrm0 (default: a private swtpm on
                  loopback). The AK and TIK are provisioned at 0x81000100/0x81000101 if absent.
)";

struct options {
  int iterations = 200;
  int warmup = 10;
  std::optional<std::string> tcti;  // none: start a private swtpm
};

std::optional<int> parse_count(std::string_view text, int minimum) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < minimum) {
    return std::nullopt;
  }
  return value;
}

// nullopt after printing why.
std::optional<options> parse_options(const std::vector<std::string_view>& args) {
  options out;
  for (std::size_t i = 0; i < args.size(); i += 2) {
    const auto arg = args[i];
    const auto value = i + 1 < args.size() ? args[i + 1] : std::string_view{};
    const auto iterations = parse_count(value, 1);
    const auto warmup = parse_count(value, 0);
    if (arg == "--iterations" && iterations) {
      out.iterations = *iterations;
    } else if (arg == "--warmup" && warmup) {
      out.warmup = *warmup;
    } else if (arg == "--tcti" && !value.empty()) {
      out.tcti = std::string(value);
    } else {
      std::cerr << "tpm_bench: bad argument " << arg << " " << value << "\n" << usage;
      return std::nullopt;
    }
  }
  return out;
}

// A figure from a failed operation would be meaningless, so any failure ends the run.
template <class T>
T take(atls::result<T> r, std::string_view what) {
  if (!r) {
    throw std::runtime_error(std::string(what) + ": " + r.error().message());
  }
  return std::move(*r);
}

double milliseconds(bench_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

struct line {
  std::string name;
  std::vector<bench_clock::duration> latencies;  // sorted once measured
  bench_clock::duration wall{};  // first start to last finish, so that ops/s counts overlap

  [[nodiscard]] double ops_per_second() const {
    return static_cast<double>(latencies.size()) / std::chrono::duration<double>(wall).count();
  }
  // Nearest rank, in ms.
  [[nodiscard]] double percentile(std::size_t p) const {
    const auto rank = (p * latencies.size() + 99) / 100;
    return milliseconds(latencies[std::max<std::size_t>(rank, 1) - 1]);
  }
};

// Runs op `warmup` times unmeasured (connection, caches, lazy allocations), then `iterations`
// times, timing each call.
template <class Op>
line measure(std::string name, const options& opts, Op op) {
  for (int i = 0; i < opts.warmup; ++i) {
    op();
  }
  line out{.name = std::move(name)};
  out.latencies.reserve(static_cast<std::size_t>(opts.iterations));
  const auto begin = bench_clock::now();
  for (int i = 0; i < opts.iterations; ++i) {
    const auto start = bench_clock::now();
    op();
    out.latencies.push_back(bench_clock::now() - start);
  }
  out.wall = bench_clock::now() - begin;
  std::sort(out.latencies.begin(), out.latencies.end());
  return out;
}

// `callers` coroutines on one io_context thread, each awaiting tpm.run(fn) `per_caller` times in
// a row; latencies (if not null) include the time spent queued behind the other callers.
template <class Fn>
void run_callers(attest::tpm& device, const Fn& fn, int callers, int per_caller,
                 std::vector<bench_clock::duration>* latencies) {
  asio::io_context io;
  std::exception_ptr failure;
  auto caller = [&device, fn, per_caller, latencies]() -> asio::awaitable<void> {
    for (int i = 0; i < per_caller; ++i) {
      const auto start = bench_clock::now();
      auto pending = device.run(fn);
      auto outcome = co_await std::move(pending);
      (void)take(std::move(outcome), "tpm.run");
      if (latencies != nullptr) {
        latencies->push_back(bench_clock::now() - start);
      }
    }
  };
  for (int c = 0; c < callers; ++c) {
    asio::co_spawn(io, caller, [&failure](const std::exception_ptr& e) {
      if (e && !failure) {
        failure = e;
      }
    });
  }
  io.run();
  if (failure) {
    std::rethrow_exception(failure);
  }
}

// The asynchronous path the proxy takes: the worker queue serialises the callers, so throughput
// should stay near the synchronous figure while each caller's latency grows with the queue.
template <class Fn>
line measure_async(std::string name, const options& opts, attest::tpm& device, int callers,
                   const Fn& fn) {
  const int per_caller = (opts.iterations + callers - 1) / callers;
  run_callers(device, fn, callers, (opts.warmup + callers - 1) / callers, nullptr);
  line out{.name = std::move(name)};
  out.latencies.reserve(static_cast<std::size_t>(per_caller) * static_cast<std::size_t>(callers));
  const auto begin = bench_clock::now();
  run_callers(device, fn, callers, per_caller, &out.latencies);
  out.wall = bench_clock::now() - begin;
  std::sort(out.latencies.begin(), out.latencies.end());
  return out;
}

struct pkey_deleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct pkey_ctx_deleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};

// Baseline 1: the TLS key in process memory, as a plain TLS server holds it. The context is set
// up once, as a TLS stack does per key, so only the signature itself is timed.
class software_signer {
 public:
  software_signer()
      : key_(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")),
        ctx_(key_ ? EVP_PKEY_CTX_new_from_pkey(nullptr, key_.get(), nullptr) : nullptr) {
    if (!ctx_ || EVP_PKEY_sign_init(ctx_.get()) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx_.get(), EVP_sha256()) != 1) {
      throw std::runtime_error("cannot set up an OpenSSL P-256 signing key");
    }
  }

  // DER ECDSA-Sig-Value, like tpm::sign.
  [[nodiscard]] attest::bytes sign(std::span<const std::uint8_t> digest) {
    attest::bytes signature(static_cast<std::size_t>(EVP_PKEY_get_size(key_.get())));
    std::size_t size = signature.size();
    if (EVP_PKEY_sign(ctx_.get(), signature.data(), &size, digest.data(), digest.size()) != 1) {
      throw std::runtime_error("OpenSSL P-256 sign failed");
    }
    signature.resize(size);
    return signature;
  }

 private:
  std::unique_ptr<EVP_PKEY, pkey_deleter> key_;
  std::unique_ptr<EVP_PKEY_CTX, pkey_ctx_deleter> ctx_;
};

std::string times(double r, std::string_view baseline_name) {
  // Three significant figures at most: the run-to-run noise is larger than that.
  const int decimals = r >= 100 ? 0 : (r >= 10 ? 1 : 2);
  std::ostringstream out;
  out << "x" << std::fixed << std::setprecision(decimals) << r << " " << baseline_name;
  return out.str();
}

// "x12.3 software sign": how many baseline operations fit in the time of one of these. From the
// medians: one stall of a few ms, common on a shared machine, doubles the mean of 200 software
// signs of 20 µs each but leaves their median alone.
std::string ratio(const line& measured, const line& baseline, std::string_view baseline_name) {
  return times(measured.percentile(50) / baseline.percentile(50), baseline_name);
}

// For concurrent callers, whose latencies include their wait in the queue: the time per
// operation the TPM worker delivers, from ops/s.
std::string throughput_ratio(const line& measured, const line& baseline,
                             std::string_view baseline_name) {
  return times(baseline.ops_per_second() / measured.ops_per_second(), baseline_name) + " by ops/s";
}

void print_row(const line& l, const std::string& comparison) {
  std::cout << std::left << std::setw(30) << l.name << std::right << std::setw(10)
            << l.latencies.size() << std::fixed << std::setprecision(0) << std::setw(10)
            << l.ops_per_second() << std::setprecision(3);
  for (const std::size_t p : {50, 90, 99, 100}) {
    std::cout << std::setw(9) << l.percentile(p);
  }
  std::cout << "  " << comparison << "\n";
}

int run(const options& opts) {
  // Declared before the tpm, so that the worker stops before its swtpm does.
  std::optional<atls::test::temp_dir> dir;
  std::optional<atls::test::swtpm> simulator;
  std::string tcti_note;
  if (opts.tcti) {
    tcti_note = *opts.tcti;
  } else {
    dir.emplace();
    simulator.emplace(*dir);
    tcti_note = simulator->tcti() + " (private swtpm started by tpm_bench)";
  }
  attest::tpm device({.tcti = opts.tcti ? *opts.tcti : simulator->tcti()});
  (void)take(device.provision(), "provision");

  // Any 32 bytes will do: neither signer looks at what was hashed.
  std::array<std::uint8_t, SHA256_DIGEST_LENGTH> digest{};
  digest.fill(0xa5);
  const attest::bytes nonce(32, 0x5a);
  const attest::pcr_selection pcrs{.hash_alg = 0x000B, .pcrs = {0, 1, 2, 3, 4, 5, 6, 7}};
  software_signer software;

  const auto software_sign =
      measure("software sign (P-256)", opts, [&] { (void)software.sign(digest); });
  const auto round_trip =
      measure("tpm round trip (GetRandom)", opts, [&] { (void)take(device.random(32), "random"); });
  const auto sign = measure("tpm sign", opts, [&] { (void)take(device.sign(digest), "sign"); });
  const auto certify =
      measure("tpm certify", opts, [&] { (void)take(device.certify(nonce), "certify"); });
  const auto quote = measure("tpm quote (PCRs 0-7)", opts,
                             [&] { (void)take(device.quote(nonce, pcrs), "quote"); });
  const auto sign_in_worker = [digest](attest::tpm& t) { return t.sign(digest); };
  const auto async_1 = measure_async("tpm sign, run(), 1 caller", opts, device, 1, sign_in_worker);
  const auto async_8 = measure_async("tpm sign, run(), 8 callers", opts, device, 8, sign_in_worker);

  std::cout << "TCTI: " << tcti_note << "\n"
            << opts.warmup << " warm-up operations before each line; latencies in ms\n\n"
            << std::left << std::setw(30) << "operation" << std::right << std::setw(10)
            << "iterations" << std::setw(10) << "ops/s" << std::setw(9) << "p50 ms" << std::setw(9)
            << "p90 ms" << std::setw(9) << "p99 ms" << std::setw(9) << "max ms"
            << "  vs baseline (ratio of p50s)\n";
  const auto against_both = [&](const line& l) {
    return ratio(l, software_sign, "software sign") + ", " + ratio(l, round_trip, "round trip");
  };
  print_row(software_sign, "baseline 1");
  print_row(round_trip, "baseline 2; " + ratio(round_trip, software_sign, "software sign"));
  print_row(sign, against_both(sign));
  print_row(certify, against_both(certify));
  print_row(quote, against_both(quote));
  print_row(async_1, against_both(async_1) + ", " + ratio(async_1, sign, "tpm sign"));
  print_row(async_8, throughput_ratio(async_8, sign, "tpm sign"));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // tpm2-tss logs its own errors to stderr; a failure here is reported once, by take().
  setenv("TSS2_LOG", "all+NONE", 0);  // NOLINT(concurrency-mt-unsafe): no thread exists yet
  const auto args = std::vector<std::string_view>(argv + 1, argv + argc);
  if (std::find(args.begin(), args.end(), "--help") != args.end()) {
    std::cout << usage;
    return 0;
  }
  const auto opts = parse_options(args);
  if (!opts) {
    return 2;
  }
  try {
    return run(*opts);
  } catch (const std::exception& e) {
    std::cerr << "tpm_bench: " << e.what() << "\n";
    return 1;
  }
}
