#!/usr/bin/env bash
# Measures what the Kubernetes example's atlsd uses, for its resource requests: resident memory
# and CPU while idle (the admin probes and the TPM readiness probe still run) and under a small
# load of new attested connections, each a full handshake whose CertificateVerify and quote come
# from the TPM. Everything runs on this machine, on loopback:
#
#   curl ×C ─▶ client atlsd (relying party) ══attested TLS══▶ measured atlsd ─▶ python3 http.server
#                                                            (base/atlsd.yaml, swtpm as the TPM)
#
#   deploy/kubernetes/measure-resources.sh [--atlsd PATH] [--atlsctl PATH] [--idle SECONDS]
#                                          [--requests N] [--concurrency C] [--hold H]
#
# Defaults: build/release/daemon/{atlsd,atlsctl} (deploy/demo.sh builds them), 20 s idle, 300
# requests, 4 at a time, then H = 200 connections held open at once (for the memory an open
# connection costs: its relay buffers and TLS state). The measured config is deploy/kubernetes/base/atlsd.yaml with only the
# TPM (swtpm instead of /dev/tpmrm0) and the addresses changed (loopback, free ports). swtpm
# signs in software on the same cores; its CPU is reported apart and is not in atlsd's figure.
# Needs swtpm, curl, openssl and python3 (deploy/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."

atlsd=build/release/daemon/atlsd
atlsctl=build/release/daemon/atlsctl
idle=20
requests=300
concurrency=4
hold=200
while [ $# -gt 0 ]; do
  case "$1" in
    --atlsd) atlsd=$2; shift 2 ;;
    --atlsctl) atlsctl=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --hold) hold=$2; shift 2 ;;
    *) echo "usage: $0 [--atlsd PATH] [--atlsctl PATH] [--idle S] [--requests N] [--concurrency C] [--hold H]" >&2
       exit 2 ;;
  esac
done
for f in "$atlsd" "$atlsctl"; do
  [ -x "$f" ] || { echo "$0: $f is not built (deploy/demo.sh builds build/release)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/atlsd-measure.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
free_port_pair() {  # swtpm's command port and its control port right above it
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
  echo "$0: $3 did not start:" >&2
  cat "$1" >&2
  exit 1
}
# Replaces the one occurrence of $2 in file $1 by $3; fails when the example no longer has it.
replace_once() {
  python3 - "$@" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"{path}: expected exactly one '{old}'")
open(path, "w").write(text.replace(old, new))
PY
}
cpu_ticks() {  # utime + stime of a process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
status_kib() {  # a /proc/PID/status field in KiB (VmRSS, VmHWM)
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}
hz=$(getconf CLK_TCK)

mkdir -p "$work/tpm"
tpm_port=$(free_port_pair)
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --flags not-need-init,startup-clear \
  --server type=tcp,port="$tpm_port",bindaddr=127.0.0.1 \
  --ctrl type=tcp,port="$((tpm_port + 1))",bindaddr=127.0.0.1 >"$work/swtpm.log" 2>&1 &
swtpm_pid=$!
pids+=("$swtpm_pid")
tcti="swtpm:host=127.0.0.1,port=$tpm_port"
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$tpm_port") 2>/dev/null && break
  sleep 0.1
done

tests/certs/gen-certs.sh "$work/pki" >/dev/null
pki=$work/pki
"$atlsctl" tpm provision --tcti "$tcti" >/dev/null
"$atlsctl" tpm csr --tcti "$tcti" --subject /CN=server.test --san DNS:server.test \
  --out "$work/tik.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:server.test\n' >"$work/tik.ext"
mkdir -p "$work/etc"
openssl x509 -req -in "$work/tik.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 1 -extfile "$work/tik.ext" -out "$work/etc/tik.crt" 2>/dev/null
cp "$pki/ca.crt" "$work/etc/clients-ca.crt"
"$atlsctl" tpm show --json --tcti "$tcti" | python3 -c \
  'import json, sys; print(json.load(sys.stdin)["ak"]["public_key_pem"], end="")' >"$work/ak.pem"

app_port=$(free_port)
in_port=$(free_port)
admin_port=$(free_port)
out_port=$(free_port)
mkdir -p "$work/www"
echo "measured" >"$work/www/index.html"
python3 -m http.server "$app_port" --bind 127.0.0.1 --directory "$work/www" \
  >"$work/workload.log" 2>&1 &
pids+=($!)

cp deploy/kubernetes/base/atlsd.yaml "$work/etc/atlsd.yaml"
replace_once "$work/etc/atlsd.yaml" "tcti: device:/dev/tpmrm0" "tcti: \"$tcti\""
replace_once "$work/etc/atlsd.yaml" "listen: 0.0.0.0:8443" "listen: 127.0.0.1:$in_port"
replace_once "$work/etc/atlsd.yaml" "listen: 0.0.0.0:9901" "listen: 127.0.0.1:$admin_port"
replace_once "$work/etc/atlsd.yaml" "upstream: 127.0.0.1:8080" "upstream: 127.0.0.1:$app_port"
"$atlsd" --config "$work/etc/atlsd.yaml" --check >/dev/null

zero=0000000000000000000000000000000000000000000000000000000000000000
cat >"$work/client.yaml" <<YAML
log: {level: info}
listeners:
  - name: out
    mode: outbound
    listen: 127.0.0.1:$out_port
    upstream: 127.0.0.1:$in_port
    tls:
      ca: $pki/ca.crt
      server_name: server.test
      cert: $pki/client.crt
      key: $pki/client.key
    attestation:
      peer:
        verifier: local
        local:
          trusted_aks: [{pem: $work/ak.pem}]
          reference_values:
            bank: sha256
            pcrs: {0: $zero, 1: $zero, 2: $zero, 3: $zero, 4: $zero, 5: $zero, 6: $zero, 7: $zero}
        accept: {minimum_status: affirming}
YAML

"$atlsd" --config "$work/etc/atlsd.yaml" >"$work/atlsd.log" 2>&1 &
measured=$!
pids+=("$measured")
"$atlsd" --config "$work/client.yaml" >"$work/client.log" 2>&1 &
pids+=($!)
wait_for "$work/atlsd.log" "ready:" "the measured atlsd"
wait_for "$work/client.log" "ready:" "the client atlsd"
curl -sf -o /dev/null "http://127.0.0.1:$admin_port/healthz"

echo "== idle for $idle s (admin listener up, TPM readiness probe every 5 s)"
rss_start=$(status_kib "$measured" VmRSS)
t0=$(cpu_ticks "$measured")
sleep "$idle"
t1=$(cpu_ticks "$measured")
rss_idle=$(status_kib "$measured" VmRSS)

echo "== $requests new attested connections, $concurrency at a time"
s0=$(cpu_ticks "$swtpm_pid")
l0=$(cpu_ticks "$measured")
start=$(date +%s.%N)
ok=$(seq 1 "$requests" | xargs -P "$concurrency" -I{} \
  curl -s -o /dev/null --max-time 20 -w '%{http_code}\n' "http://127.0.0.1:$out_port/" |
  grep -c '^200$' || true)
end=$(date +%s.%N)
l1=$(cpu_ticks "$measured")
s1=$(cpu_ticks "$swtpm_pid")
rss_load=$(status_kib "$measured" VmRSS)

echo "== $hold connections held open at once"
# Each client connection makes the client sidecar open an attested connection to the measured
# one, which opens one to the workload; they stay open until the client closes them (the
# workload waits for a request line). Bounded: the holder closes everything after 30 s at most.
python3 - "$out_port" "$hold" "$work/atlsd.log" "$measured" >"$work/held" <<'PY'
import socket, sys, time
port, count, log, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
held = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    held.append(s)
# Wait until the measured sidecar has relayed that many connections to the workload (its
# open-connection count is in /metrics, but the TCP table is simpler): count its sockets.
import os
deadline = time.time() + 30
while time.time() < deadline:
    sockets = sum(1 for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))
    if sockets >= 2 * count:
        break
    time.sleep(0.2)
time.sleep(1)
rss = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")][0]
print(rss)
for s in held:
    s.close()
PY
rss_held=$(cat "$work/held")
hwm=$(status_kib "$measured" VmHWM)

python3 - "$hz" "$idle" "$t0" "$t1" "$start" "$end" "$l0" "$l1" "$s0" "$s1" "$requests" "$ok" \
  "$rss_start" "$rss_idle" "$rss_load" "$hwm" "$concurrency" "$hold" "$rss_held" <<'PY'
import sys
(hz, idle, t0, t1, start, end, l0, l1, s0, s1, n, ok, rss0, rss_idle, rss_load, hwm,
 conc, hold, rss_held) = map(float, sys.argv[1:])
span = end - start
print(f"idle:  RSS {rss_idle / 1024:.1f} MiB (at start {rss0 / 1024:.1f} MiB), "
      f"CPU {(t1 - t0) / hz / idle * 1000:.1f} millicores")
print(f"load:  {int(ok)}/{int(n)} requests answered 200 in {span:.1f} s "
      f"({ok / span:.1f} new connections/s, {int(conc)} at a time)")
print(f"       atlsd CPU {(l1 - l0) / hz / span * 1000:.0f} millicores "
      f"({(l1 - l0) / hz / max(ok, 1) * 1000:.2f} ms per connection), "
      f"swtpm CPU {(s1 - s0) / hz / span * 1000:.0f} millicores")
print(f"       atlsd RSS {rss_load / 1024:.1f} MiB after")
print(f"held:  {int(hold)} open connections: RSS {rss_held / 1024:.1f} MiB "
      f"({(rss_held - rss_load) / hold:.0f} KiB more per connection); peak of the run "
      f"{hwm / 1024:.1f} MiB")
if ok != n:
    sys.exit("not every request was answered")
PY
