#include "atls/metrics/atlsd_metrics.hpp"

namespace atls::metrics {

namespace {

std::vector<double> latency() {
  return {latency_buckets.begin(), latency_buckets.end()};
}

}  // namespace

atlsd_metrics::atlsd_metrics()
    : build_info(registry.add_gauge("atlsd_build_info",
                                    "The running atlsd's version, as a label; the value is 1.",
                                    {"version"})),
      connections(
          registry.add_counter("atlsd_connections_total",
                               "Connections closed, by listener and outcome (relayed, tls_failed, "
                               "attestation_refused, upstream_failed, timeout, ...).",
                               {"listener", "outcome"})),
      open_connections(registry.add_gauge("atlsd_open_connections",
                                          "Connections open now, by listener.", {"listener"})),
      handshake_duration(registry.add_histogram(
          "atlsd_handshake_duration_seconds",
          "Time from accepting or connecting to the end of the TLS handshake, in seconds.",
          {"listener"}, latency())),
      attestation_duration(
          registry.add_histogram("atlsd_attestation_duration_seconds",
                                 "Time from the start of attestation to its decision, in seconds.",
                                 {"listener"}, latency())),
      attestation_outcomes(registry.add_counter(
          "atlsd_attestation_outcomes_total",
          "Attestation decisions, by listener and reason word (ok when accepted).",
          {"listener", "reason"})),
      reattestation_closes(registry.add_counter(
          "atlsd_reattestation_closes_total",
          "Connections closed because a periodic re-attestation failed, by listener and reason.",
          {"listener", "reason"})),
      tpm_operations(registry.add_counter(
          "atlsd_tpm_operations_total",
          "TPM commands, by operation (quote, sign, certify, read_public, probe) and result.",
          {"operation", "result"})),
      tpm_operation_duration(registry.add_histogram(
          "atlsd_tpm_operation_duration_seconds",
          "Time a TPM operation took, queueing for the TPM included, in seconds.", {"operation"},
          latency())),
      verifier_requests(registry.add_counter(
          "atlsd_verifier_requests_total",
          "HTTP requests to verifiers, by verifier, endpoint and status (the HTTP status code, "
          "or error when no response came).",
          {"verifier", "endpoint", "status"})),
      verifier_request_duration(registry.add_histogram(
          "atlsd_verifier_request_duration_seconds",
          "Time an HTTP request to a verifier took, in seconds.", {"verifier"}, latency())),
      relayed_bytes(registry.add_counter("atlsd_relayed_bytes_total",
                                         "Workload bytes relayed, by listener and direction "
                                         "(client_to_upstream, upstream_to_client).",
                                         {"listener", "direction"})),
      config_reloads(registry.add_counter(
          "atlsd_config_reloads_total",
          "Configuration reloads, by result (ok, invalid, abandoned: SIGTERM came "
          "while it committed).",
          {"result"})),
      ready(registry.add_gauge(
          "atlsd_ready", "1 when every readiness check passes (/readyz answers 200), else 0.")) {
  build_info.with({ATLS_VERSION}).set(1);
  // Known label values from the start, so that rate() and increase() see the first reload.
  config_reloads.with({"ok"});
  config_reloads.with({"invalid"});
}

atlsd_metrics::~atlsd_metrics() = default;

atlsd_metrics& process() {
  static atlsd_metrics instance;
  return instance;
}

}  // namespace atls::metrics
