// atlsd's instruments: every metric family the daemon exports on the admin listener's /metrics,
// registered in one registry. The names and label names are a contract with dashboards and
// alerts: renaming one breaks them silently, so add new families rather than change these.
#pragma once

#include <array>

#include "atls/metrics/registry.hpp"

namespace atls::metrics {

// Bucket upper bounds, in seconds, for every duration histogram below. One set for all so that
// queries compare them: 0.5 ms (a loopback TLS handshake, a software TPM's command) to 10 s (the
// default connect and handshake timeouts; anything slower is a timeout and lands in +Inf).
// Between them, about three buckets per decade resolve what matters: a hardware TPM's quote or
// signature (30 to 500 ms), a Veraison round trip (10 to 500 ms), a handshake across a WAN.
inline constexpr std::array<double, 14> latency_buckets{
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

// The families, as references into `registry`, which this struct owns. Label values are short
// words from a fixed vocabulary or from the configuration (listener and verifier names), never
// from a peer: each distinct value is a series that lives until the process ends.
struct atlsd_metrics {
  atlsd_metrics();
  atlsd_metrics(const atlsd_metrics&) = delete;
  atlsd_metrics& operator=(const atlsd_metrics&) = delete;
  atlsd_metrics(atlsd_metrics&&) = delete;
  atlsd_metrics& operator=(atlsd_metrics&&) = delete;
  ~atlsd_metrics();

  metrics::registry registry;  // first: the references below point into it

  // {version}, always 1: the running version as a label, to join with other series.
  gauge_family& build_info;
  // {listener, outcome}: connections at close. outcome: relayed, tls_failed,
  // attestation_refused, upstream_failed, timeout, …
  counter_family& connections;
  gauge_family& open_connections;               // {listener}
  histogram_family& handshake_duration;         // {listener}, seconds, TLS handshake alone
  histogram_family& attestation_duration;       // {listener}, seconds, evidence to decision
  counter_family& attestation_outcomes;         // {listener, reason}: reason word, "ok" accepted
  counter_family& reattestation_closes;         // {listener, reason}
  counter_family& tpm_operations;               // {operation, result}: quote, sign, certify, …
  histogram_family& tpm_operation_duration;     // {operation}, seconds
  counter_family& verifier_requests;            // {verifier, endpoint, status}: HTTP code or error
  histogram_family& verifier_request_duration;  // {verifier}, seconds
  counter_family& relayed_bytes;   // {listener, direction}: client_to_upstream, upstream_to_client
  counter_family& config_reloads;  // {result}: ok, invalid (both exported from 0)
  gauge_family& ready;             // 1 when /readyz answers 200, else 0
};

// The daemon's instruments. A process-wide instance, against the house rule of passing
// everything in option structs, because there is exactly one per process (one daemon, one
// /metrics), and threading a registry through every module's options would touch every
// constructor for no behaviour a test could tell apart: tests read the values through the
// exposition, and tests that need a clean slate build their own atlsd_metrics.
// Created on first use (thread-safe, C++11 magic statics); lives until exit.
atlsd_metrics& process();

}  // namespace atls::metrics
