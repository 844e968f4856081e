#!/usr/bin/env bash
# The atlsd demo, on one machine:
#
#   curl ─plaintext─▶ outbound atlsd ══attested TLS 1.3══▶ inbound atlsd ─plaintext─▶ workload
#                     (relying party)                      (attester: TIK and AK in a TPM)
#
# A fresh software TPM (swtpm) holds the inbound sidecar's TLS key (the TIK) and attestation key
# (the AK). The outbound sidecar accepts the connection only once the server's TPM evidence, bound
# to this TLS connection, satisfies its policy: appraised by the built-in local verifier, or with
# --veraison by the Veraison-API test server of tests/support. The demo prints the attestation
# result, extends a PCR (as a changed boot or kernel would), shows the next connection refused
# because the quote no longer matches the reference values, stops everything it started and
# exits 0.
#
#   ./deploy/demo.sh             the built-in local verifier
#   ./deploy/demo.sh --veraison  a Veraison verification service (challenge-response API)
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=local
case "${1:-}" in
  "") ;;
  --veraison) flavour=veraison ;;
  *)
    echo "usage: $0 [--veraison]" >&2
    exit 2
    ;;
esac

./deploy/setup.sh
echo "== building atlsd and atlsctl"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATLS_WERROR=ON >/dev/null
targets=(atlsd atlsctl)
[ "$flavour" = veraison ] && targets+=(atls-veraison-test-server)
cmake --build build/release -j"$(nproc)" --target "${targets[@]}" >/dev/null
atlsd=build/release/daemon/atlsd
atlsctl=build/release/daemon/atlsctl

work=$(mktemp -d /tmp/atlsd-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Two adjacent free ports: swtpm's command port and its control port right above it.
free_port_pair() {
  python3 - <<'PY'
import socket
for _ in range(100):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); port = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 1))
    except OSError:
        continue
    print(port)
    break
PY
}

wait_for() {  # file text what
  for _ in $(seq 1 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: $3 did not start:" >&2
  cat "$1" >&2
  return 1
}

echo "== a fresh software TPM in $work/tpm"
mkdir -p "$work/tpm"
tpm_port=$(free_port_pair)
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --flags not-need-init,startup-clear \
  --server type=tcp,port="$tpm_port",bindaddr=127.0.0.1 \
  --ctrl type=tcp,port="$((tpm_port + 1))",bindaddr=127.0.0.1 >"$work/swtpm.log" 2>&1 &
pids+=($!)
export ATLS_TCTI="swtpm:host=127.0.0.1,port=$tpm_port"
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$tpm_port") 2>/dev/null && break
  sleep 0.1
done

echo "== provisioning: the AK and the TIK, and a certificate for the TIK from a throwaway CA"
tests/certs/gen-certs.sh "$work/pki" >/dev/null
pki=$work/pki
"$atlsctl" tpm provision
"$atlsctl" tpm csr --subject /CN=server.test --san DNS:server.test --out "$work/tik.csr"
cat >"$work/tik.ext" <<EXT
basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:server.test
EXT
openssl x509 -req -in "$work/tik.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 1 -extfile "$work/tik.ext" -out "$work/tik.crt" 2>/dev/null
"$atlsctl" tpm show --json | python3 -c \
  'import json, sys; print(json.load(sys.stdin)["ak"]["public_key_pem"], end="")' >"$work/ak.pem"

app_port=$(free_port)
in_port=$(free_port)
out_port=$(free_port)
mkdir -p "$work/www"
echo "Hello from the workload behind atlsd." >"$work/www/index.html"
python3 -m http.server "$app_port" --bind 127.0.0.1 --directory "$work/www" \
  >"$work/workload.log" 2>&1 &
pids+=($!)

# The server attests itself after the handshake (post-handshake, the default mode): evidence
# over a binder derived from this connection's TLS exporter, so it cannot be replayed elsewhere.
cat >"$work/inbound.yaml" <<YAML
tpm:
  tcti: "$ATLS_TCTI"
listeners:
  - name: web-in
    mode: inbound
    listen: 127.0.0.1:$in_port
    upstream: 127.0.0.1:$app_port
    tls:
      cert: $work/tik.crt
      key: tpm:tik
    attestation:
      self:
        pcrs: [0, 1, 2, 3, 4, 5, 6, 7]
YAML

# The client's policy: swtpm's PCRs are all zero after start-up, so those are the reference
# values; a real deployment takes them from its golden machine (atlsctl evidence dump).
zero=0000000000000000000000000000000000000000000000000000000000000000
if [ "$flavour" = local ]; then
  verifier="        verifier: local
        local:
          trusted_aks: [{pem: $work/ak.pem}]
          reference_values:
            bank: sha256
            pcrs: {0: $zero, 1: $zero, 2: $zero, 3: $zero, 4: $zero, 5: $zero, 6: $zero, 7: $zero}"
else
  echo "== the Veraison-API test server, provisioned as a Veraison operator would be"
  # What an operator registers for this machine: the AK as the trust anchor of its instance id,
  # and the current PCR values as reference values (CoMID JSON).
  "$atlsctl" veraison endorsements --pcrs sha256:0,1,2,3,4,5,6,7 --out "$work/endorsements"
  build/release/tests/atls-veraison-test-server --endorsements "$work/endorsements" \
    --ear-key-out "$work/ear.pem" >"$work/veraison.log" 2>&1 &
  pids+=($!)
  wait_for "$work/veraison.log" "listening on" "the Veraison test server"
  veraison_url=$(sed -n 's/^listening on //p' "$work/veraison.log")
  verifier="        verifier: veraison
        veraison:
          urls: [$veraison_url]
          ear_key: $work/ear.pem"
fi
cat >"$work/outbound.yaml" <<YAML
listeners:
  - name: web-out
    mode: outbound
    listen: 127.0.0.1:$out_port
    upstream: 127.0.0.1:$in_port
    tls:
      ca: $pki/ca.crt
      server_name: server.test
    attestation:
      peer:
$verifier
        accept: {minimum_status: affirming, max_age: 60s}
YAML

echo "== starting the inbound (attester) and outbound (relying party) sidecars"
"$atlsd" --config "$work/inbound.yaml" --check
"$atlsd" --config "$work/outbound.yaml" --check
"$atlsd" --config "$work/inbound.yaml" >"$work/inbound.log" 2>&1 &
pids+=($!)
"$atlsd" --config "$work/outbound.yaml" >"$work/outbound.log" 2>&1 &
pids+=($!)
wait_for "$work/inbound.log" "ready:" "the inbound sidecar"
wait_for "$work/outbound.log" "ready:" "the outbound sidecar"
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$app_port/" && break
  sleep 0.1
done

connection_lines() {  # log-file
  grep "connection closed" "$1" | sed 's/^.* \(info\|warning\|error\) connection closed /  /'
}
audit_lines() {  # log-file
  grep " attestation listener=" "$1" | sed 's/^.* \(info\|warning\) attestation /  /'
}

echo
echo "== curl http://127.0.0.1:$out_port/  (plaintext to the outbound sidecar)"
body=$(curl -sS --max-time 10 "http://127.0.0.1:$out_port/")
echo "$body"
[ "$body" = "Hello from the workload behind atlsd." ]
sleep 0.2
echo
echo "== the server's attestation result, as the client sidecar's audit line records it"
audit_lines "$work/outbound.log"
echo "== and its connection line"
connection_lines "$work/outbound.log"
grep -q 'attestation="peer=affirming key=sha256:' "$work/outbound.log"

echo
echo "== extending PCR 7 in the server's TPM, as a changed boot policy would"
"$atlsctl" tpm extend --pcr 7 --data "$(printf 'a changed boot policy' | sha256sum | cut -c1-64)"

echo
echo "== the same request again"
if curl -sS --max-time 10 "http://127.0.0.1:$out_port/" 2>&1; then
  echo "demo: a server whose PCRs no longer match was accepted" >&2
  exit 1
fi
echo "(refused: the quote no longer matches the reference values)"
sleep 0.2
audit_lines "$work/outbound.log" | tail -n 1
connection_lines "$work/outbound.log" | tail -n 1
grep -q 'reason="attestation status_below_policy' "$work/outbound.log"
echo
echo "== and what the server sidecar was told"
grep -o "the relying party refused our attestation: its verdict said [a-z_]*" "$work/inbound.log" | tail -n 1

echo
echo "== stopping"
cleanup
trap - EXIT
echo "demo ($flavour verifier): OK"
