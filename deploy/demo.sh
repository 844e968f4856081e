#!/usr/bin/env bash
# The atlsd demo, on one machine:
#
#   curl --plaintext--> outbound atlsd --TLS 1.3, mutual--> inbound atlsd --plaintext--> workload
#
# The workload is python3's http.server; the certificates come from a throwaway CA made here.
# It shows a request going through, then a client whose certificate the inbound policy does not
# allow being refused. It stops everything it started and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/setup.sh
echo "== building atlsd"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATLS_WERROR=ON >/dev/null
cmake --build build/release -j"$(nproc)" --target atlsd atlsctl >/dev/null
atlsd=build/release/daemon/atlsd

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

wait_ready() {  # log-file
  for _ in $(seq 1 100); do
    grep -q "ready:" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: sidecar did not start:" >&2
  cat "$1" >&2
  return 1
}

echo "== throwaway PKI in $work/pki"
tests/certs/gen-certs.sh "$work/pki"
pki=$work/pki

app_port=$(free_port)
in_port=$(free_port)
out_port=$(free_port)
intruder_port=$(free_port)

mkdir -p "$work/www"
echo "Hello from the workload behind atlsd." >"$work/www/index.html"
python3 -m http.server "$app_port" --bind 127.0.0.1 --directory "$work/www" \
  >"$work/workload.log" 2>&1 &
pids+=($!)

cat >"$work/inbound.yaml" <<YAML
listeners:
  - name: web-in
    mode: inbound
    listen: 127.0.0.1:$in_port
    upstream: 127.0.0.1:$app_port
    tls:
      cert: $pki/server.crt
      key: $pki/server.key
      client_auth:
        ca: $pki/ca.crt
        allow_uris: [spiffe://test.example/ns/default/*]
YAML

cat >"$work/outbound.yaml" <<YAML
listeners:
  - name: web-out
    mode: outbound
    listen: 127.0.0.1:$out_port
    upstream: 127.0.0.1:$in_port
    tls:
      ca: $pki/ca.crt
      server_name: server.test
      cert: $pki/client.crt
      key: $pki/client.key
  - name: intruder-out
    mode: outbound
    listen: 127.0.0.1:$intruder_port
    upstream: 127.0.0.1:$in_port
    tls:
      ca: $pki/ca.crt
      server_name: server.test
      cert: $pki/intruder.crt
      key: $pki/intruder.key
YAML

echo "== starting the inbound and outbound sidecars"
"$atlsd" --config "$work/inbound.yaml" --check
"$atlsd" --config "$work/outbound.yaml" --check
"$atlsd" --config "$work/inbound.yaml" >"$work/inbound.log" 2>&1 &
pids+=($!)
"$atlsd" --config "$work/outbound.yaml" >"$work/outbound.log" 2>&1 &
pids+=($!)
wait_ready "$work/inbound.log"
wait_ready "$work/outbound.log"
# The python workload binds before the sidecars are ready; make sure it answers too.
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$app_port/" && break
  sleep 0.1
done

echo
echo "== curl http://127.0.0.1:$out_port/  (plaintext to the outbound sidecar)"
body=$(curl -sS --max-time 10 "http://127.0.0.1:$out_port/")
echo "$body"
[ "$body" = "Hello from the workload behind atlsd." ]

echo
echo "== the same request from a client whose certificate the inbound policy does not allow"
if curl -sS --max-time 10 "http://127.0.0.1:$intruder_port/" 2>&1; then
  echo "demo: the intruder was let in" >&2
  exit 1
fi
echo "(refused, as the policy says)"

sleep 0.2
echo
echo "== what the sidecars logged, one line per connection"
grep "connection closed" "$work/outbound.log" "$work/inbound.log" | sed "s#$work/##"

echo
echo "== stopping"
cleanup
trap - EXIT
echo "demo: OK"
