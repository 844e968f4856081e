#!/usr/bin/env bash
# The installed atlsd does its whole job inside the seccomp filters of the installed
# atlsd.service (SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute=,
# RestrictNamespaces=, applied by systemd_seccomp_exec.py as systemd would): --check, start,
# TLS in and out over TCP and a unix socket with a host name to resolve, the admin endpoints,
# a reload on SIGHUP and a drain on SIGTERM. A call outside SystemCallFilter= kills it (SIGSYS),
# and strace's trace names the call. The trace also shows that atlsd opens no /proc file but its
# own (ProcSubset=pid), bar one of glibc's that it can do without.
#
# Not covered here: the mount, user and device sandboxing (ProtectSystem=, DeviceAllow=, User=),
# which need systemd as PID 1; and the TPM path (tpm:tik), whose system calls are those of a file
# or socket read and write.
#
# usage: systemd_sandbox_test.sh BUILD_DIR PREFIX SOURCE_DIR
set -euo pipefail
build=$1 prefix=$2 source=$3
python=/usr/bin/python3  # Debian's, with python3-seccomp

for tool in "$python" strace curl openssl cmake systemd-analyze; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (deploy/setup.sh installs it)"; exit 1; }
done
"$python" -c 'import seccomp' 2>/dev/null ||
  { echo "FAIL: python3-seccomp is missing (deploy/setup.sh installs it)"; exit 1; }

dir=$(mktemp -d)
pids=()
daemon=
# shellcheck disable=SC2317  # the EXIT trap calls it
cleanup() {
  # atlsd first: strace, killed, would leave its tracee running.
  for pid in $daemon "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
[ -n "${ATLS_KEEP_SCRATCH:-}" ] && trap - EXIT && echo "scratch: $dir"

DESTDIR=$dir/root cmake --install "$build" >/dev/null
atlsd=$dir/root${prefix%/}/$(sed -n 's|^ExecStart=\([^ ]*\) .*|\1|p' \
  "$dir/root${prefix%/}/lib/systemd/system/atlsd.service" | sed "s|^${prefix%/}/||")
unit=$dir/root${prefix%/}/lib/systemd/system/atlsd.service
[ -x "$atlsd" ] || { echo "FAIL: the unit's ExecStart binary is not installed ($atlsd)"; exit 1; }

"$source/tests/certs/gen-certs.sh" "$dir/pki" >/dev/null
mkdir -p "$dir/www" "$dir/run"
echo "served through atlsd" >"$dir/www/index.html"

# Ports: bound and released by the kernel's choice, as test::free_port() does.
read -r port_up port_in port_out port_admin < <("$python" -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

"$python" -m http.server --bind 127.0.0.1 --directory "$dir/www" "$port_up" >"$dir/http.log" 2>&1 &
pids+=($!)

config() {  # log level
  cat <<EOF
log:
  level: $1
drain_timeout: 2s
admin:
  listen: 127.0.0.1:$port_admin
listeners:
  - name: web-in
    mode: inbound
    listen: 127.0.0.1:$port_in
    upstream: 127.0.0.1:$port_up
    tls: {cert: $dir/pki/server.crt, key: $dir/pki/server.key}
  - name: web-in-unix
    mode: inbound
    listen: unix:$dir/run/web.sock
    upstream: 127.0.0.1:$port_up
    tls: {cert: $dir/pki/server.crt, key: $dir/pki/server.key}
  - name: web-out
    mode: outbound
    listen: 127.0.0.1:$port_out
    upstream: localhost:$port_in
    tls: {ca: $dir/pki/ca.crt, server_name: server.test}
EOF
}
config debug >"$dir/atlsd.yaml"

sandboxed() {
  "$python" "$source/tests/deploy/systemd_seccomp_exec.py" "$unit" "$@"
}

fail=0
failed() {
  echo "FAIL: $*"
  fail=1
}

# ExecStartPre.
out=$(sandboxed "$atlsd" --config "$dir/atlsd.yaml" --check 2>&1) || failed "--check in the sandbox: $out"

# ExecStart, traced. Every thread (-f); -qq keeps attach messages out.
strace -f -qq -o "$dir/trace" "$python" "$source/tests/deploy/systemd_seccomp_exec.py" "$unit" \
  "$atlsd" --config "$dir/atlsd.yaml" >"$dir/atlsd.log" 2>&1 &
tracer=$!
pids+=("$tracer")

up_within() {  # seconds url curl-args...
  local seconds=$1
  shift
  for _ in $(seq $((seconds * 10))); do
    curl -fsS --max-time 2 "$@" >/dev/null 2>&1 && return 0
    kill -0 "$tracer" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
fetch() {
  curl -fsS --max-time 5 "$@" 2>&1
}

if up_within 20 "http://127.0.0.1:$port_admin/healthz" && up_within 5 "http://127.0.0.1:$port_up/"; then
  # atlsd is strace's child (the Python wrapper exec'ed it): the tracer's only child.
  daemon=$(pgrep -P "$tracer" | head -1)
  for round in start reload; do
    body=$(fetch "http://127.0.0.1:$port_out/") || true
    [ "$body" = "served through atlsd" ] || failed "outbound to inbound to workload ($round): $body"
    body=$(fetch --cacert "$dir/pki/ca.crt" --resolve "server.test:$port_in:127.0.0.1" \
      "https://server.test:$port_in/") || true
    [ "$body" = "served through atlsd" ] || failed "TLS to the TCP listener ($round): $body"
    body=$(fetch --cacert "$dir/pki/ca.crt" --unix-socket "$dir/run/web.sock" \
      "https://server.test/") || true
    [ "$body" = "served through atlsd" ] || failed "TLS to the unix listener ($round): $body"
    fetch "http://127.0.0.1:$port_admin/readyz" >/dev/null || failed "/readyz ($round)"
    metrics=$(fetch "http://127.0.0.1:$port_admin/metrics") || true
    grep -q '^atlsd_' <<<"$metrics" || failed "/metrics ($round)"
    if [ $round = start ]; then
      config info >"$dir/atlsd.yaml"
      kill -HUP "$daemon"
      for _ in $(seq 50); do
        grep -q 'reloaded: ' "$dir/atlsd.log" && break
        sleep 0.1
      done
      grep -q 'reloaded: ' "$dir/atlsd.log" || failed "no reload after SIGHUP"
    fi
  done
  kill -TERM "$daemon"
else
  failed "atlsd did not come up"
fi

status=0
for _ in $(seq 100); do
  kill -0 "$tracer" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$tracer" 2>/dev/null; then
  # Still running 10 s after SIGTERM (or never answering): stop it, and the test has failed.
  pkill -KILL -P "$tracer" 2>/dev/null || true
  failed "atlsd did not stop within 10 s"
fi
wait "$tracer" || status=$?
daemon=  # gone with its tracer; the pid is no longer ours to signal
grep -q 'killed by SIGSYS' "$dir/trace" && status=sigsys
if [ "$status" != 0 ]; then
  failed "atlsd ended with status $status"
  echo "atlsd's log:"
  tail -20 "$dir/atlsd.log"
fi

# From atlsd's execve on: before it, the trace is the Python that set up the filters.
start=$(grep -n "execve(\"$atlsd\"" "$dir/trace" | head -1 | cut -d: -f1)
tail -n +"${start:-1}" "$dir/trace" >"$dir/atlsd.trace"

# The calls atlsd made that SystemCallFilter= does not allow: the one that killed it, if any (a
# killed call shows as started and never finished).
used=$(grep -oE '^[0-9]+ +[a-z0-9_]+\(' "$dir/atlsd.trace" | sed -E 's/^[0-9]+ +//; s/\($//' |
  sort -u)
outside=$(comm -23 <(echo "$used") <("$python" "$source/tests/deploy/systemd_seccomp_exec.py" \
  --list "$unit" | sort -u) | tr '\n' ' ')
[ -z "$outside" ] || failed "atlsd called outside the unit's SystemCallFilter=: $outside"

# /proc beyond the process's own directories is hidden by ProcSubset=pid. Known and harmless:
# glibc's malloc reads /proc/sys/vm/overcommit_memory when a thread's arena shrinks, and without
# it keeps its default (give pages back with MADV_DONTNEED).
others=$(grep -o 'open[a-z0-9]*([^"]*"/proc/[^"]*"' "$dir/atlsd.trace" | grep -o '"/proc/[^"]*"' |
  grep -Ev '^"/proc/(self|thread-self|[0-9]+)(/|")' |
  grep -vx '"/proc/sys/vm/overcommit_memory"' | sort -u || true)
[ -z "$others" ] || failed "atlsd opened /proc files that ProcSubset=pid hides: $others"

# What the trace says about families: those refused (glibc's netlink probe, if any) failed with
# EAFNOSUPPORT and atlsd went on.
refused=$(grep -o 'socket(AF_[A-Z0-9]*[^=]*= -1 EAFNOSUPPORT' "$dir/atlsd.trace" |
  grep -o 'AF_[A-Z0-9]*' | sort -u | tr '\n' ' ' || true)
echo "distinct system calls: $(wc -l <<<"$used"); address families refused: ${refused:-none}"

[ $fail -eq 0 ] && echo "atlsd served, reloaded and drained inside atlsd.service's seccomp filters"
exit $fail
