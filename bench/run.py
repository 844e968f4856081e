#!/usr/bin/env python3
"""The benchmark suite of bench/README.md: atlsd against stunnel and haproxy, on loopback.

bench/run.sh installs the packages, builds, raises the fd limit and runs this. Every figure is
set against baselines measured in this same run (ratios), because the machines are shared and
noisy: compare ratios between machines or commits, not absolute figures.

  B1 bulk throughput   one connection carries N bytes through the pair, each direction
  B2 connection rate   new connections/s, 1-byte request and 1-byte response; TPM operations
                       and verifier calls per connection from atlsd's /metrics
  B3 latency           wrk, kept-alive connections, to a small C++ origin (atls_netload)
  B4 scale             idle connections held through the pair, RSS per connection
  B5 limits            openssl speed on this machine: what the CPU allows

The standard library only: Debian's python3 is all this needs.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024**3
MIB = 1024**2
CLK_TCK = os.sysconf("SC_CLK_TCK")
ZERO_PCR = "0" * 64
VERIFIER_RTT_MS = 10  # atlsd-veraison-far: how far away its verifier is


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A pair that would not start or a measurement that could not be made."""


# ---- processes and /proc ----


class Proc:
    """A child process with its output in WORK/NAME.log; stop() ends it by its own pid."""

    def __init__(self, name, argv, work, env=None, stdin=subprocess.DEVNULL):
        self.name = name
        self.log_path = os.path.join(work, name + ".log")
        with open(self.log_path, "wb") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=stdin, env=env)
        self.pid = self.popen.pid

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.popen.poll() is None

    def stop(self, timeout=15):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread, live or ended), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return proc_status(pid, "VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair():
    """Two adjacent free ports: swtpm's command port and its control port right above it."""
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise BenchError("no two adjacent free ports for swtpm")


def wait_for_port(port, proc, what, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise BenchError(f"{what} exited at start:\n{proc.log_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what} did not listen on {port} within {seconds} s")


def wait_for_line(proc, pattern, what, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = re.search(pattern, proc.log_text(), re.M)
        if found:
            return found
        if not proc.alive():
            break
        time.sleep(0.05)
    raise BenchError(f"{what} did not start:\n{proc.log_text()[-2000:]}")


def run(argv, env=None, timeout=600, what=None):
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"{what or argv[0]} failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout)[-2000:]}")
    return done.stdout


def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(admin_port):
    """atlsd's /metrics as {(name, ((label, value), ...)): number}."""
    status, text = http_get(f"http://127.0.0.1:{admin_port}/metrics")
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    out = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def tpm_ops_text(ops):
    """atlsd's `evidence` operation is a TPM2_Certify of the TIK and a TPM2_Quote, in one job."""
    names = {"evidence": "evidence (certify+quote)"}
    return ", ".join(f"{names.get(k, k)} {v:.2f}" for k, v in sorted(ops.items()))


def metric_delta(before, after, name, key_label, skip=()):
    """The increase of counter `name` between two scrapes, summed by the value of `key_label`."""
    out = {}
    for (metric, labels), value in after.items():
        if metric != name:
            continue
        key = dict(labels).get(key_label, "")
        if key in skip:
            continue
        out[key] = out.get(key, 0.0) + value - before.get((metric, labels), 0.0)
    return {k: v for k, v in out.items() if v}


# ---- the setup every pair shares ----


class Env:
    """Binaries, the PKI, the swtpm with its AK and TIK, the Veraison test server, the origin."""

    def __init__(self, args, work):
        self.args = args
        self.work = work
        build = args.build_dir
        self.atlsd = os.path.join(build, "daemon", "atlsd")
        self.atlsctl = os.path.join(build, "daemon", "atlsctl")
        self.veraison_bin = os.path.join(build, "tests", "atls-veraison-test-server")
        self.netload = os.path.join(build, "bench", "atls_netload")
        for path in (self.atlsd, self.atlsctl, self.veraison_bin, self.netload):
            if not os.access(path, os.X_OK):
                raise BenchError(f"{path} is not built (bench/run.sh builds it)")
        self.procs = []
        self.threads = os.cpu_count() or 2
        self.atlsd_listener_extra = ""  # more listener keys (indent 4), for experiments
        # Each relayed connection costs a proxy process two descriptors (client and server side).
        self.fd_room = (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64) // 2

    def start(self, name, argv, env=None, stdin=subprocess.DEVNULL):
        proc = Proc(name, argv, self.work, env=env, stdin=stdin)
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def setup(self):
        log("setup: PKI, swtpm with AK and TIK, Veraison test server, origin")
        self.pki = self.path("pki")
        run([os.path.join(ROOT, "tests", "certs", "gen-certs.sh"), self.pki], what="gen-certs.sh")
        with open(self.path("server.pem"), "w") as out:  # haproxy wants cert and key in one file
            for part in ("server.crt", "server.key"):
                with open(os.path.join(self.pki, part)) as f:
                    out.write(f.read())

        os.makedirs(self.path("tpm"))
        tpm_port = free_port_pair()
        self.swtpm = self.start("swtpm", [
            "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.path('tpm')}",
            "--flags", "not-need-init,startup-clear",
            "--server", f"type=tcp,port={tpm_port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={tpm_port + 1},bindaddr=127.0.0.1"])
        wait_for_port(tpm_port, self.swtpm, "swtpm")
        self.tcti = f"swtpm:host=127.0.0.1,port={tpm_port}"
        self.tpm_env = dict(os.environ, ATLS_TCTI=self.tcti)
        ctl = [self.atlsctl]
        run(ctl + ["tpm", "provision"], env=self.tpm_env, what="atlsctl tpm provision")
        run(ctl + ["tpm", "csr", "--subject", "/CN=server.test", "--san", "DNS:server.test",
                   "--out", self.path("tik.csr")], env=self.tpm_env, what="atlsctl tpm csr")
        with open(self.path("tik.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:server.test\n")
        run(["openssl", "x509", "-req", "-in", self.path("tik.csr"), "-CA",
             os.path.join(self.pki, "ca.crt"), "-CAkey", os.path.join(self.pki, "ca.key"),
             "-CAcreateserial", "-days", "1", "-extfile", self.path("tik.ext"), "-out",
             self.path("tik.crt")], what="openssl x509 (the TIK's certificate)")
        shown = json.loads(run(ctl + ["tpm", "show", "--json"], env=self.tpm_env))
        with open(self.path("ak.pem"), "w") as f:
            f.write(shown["ak"]["public_key_pem"])
        run(ctl + ["veraison", "endorsements", "--pcrs", "sha256:0,1,2,3,4,5,6,7", "--out",
                   self.path("endorsements")], env=self.tpm_env, what="atlsctl veraison")
        self.veraison = self.start("veraison", [
            self.veraison_bin, "--endorsements", self.path("endorsements"), "--ear-key-out",
            self.path("ear.pem")])
        self.veraison_url = wait_for_line(self.veraison, r"^listening on (\S+)",
                                          "the Veraison test server").group(1)
        # The same verifier as if it were VERIFIER_RTT_MS away (another zone): every answer
        # waits that long, which shows how many round trips a first contact waits for.
        self.veraison_far = self.start("veraison-far", [
            self.veraison_bin, "--endorsements", self.path("endorsements"), "--ear-key-out",
            self.path("ear-far.pem"), "--delay-ms", str(VERIFIER_RTT_MS)])
        self.veraison_far_url = wait_for_line(self.veraison_far, r"^listening on (\S+)",
                                              "the far Veraison test server").group(1)

        self.origin = self.start("origin", [self.netload, "serve", "--port", "0"])
        self.origin_port = int(wait_for_line(self.origin, r"^listening on (\d+)",
                                             "the origin").group(1))


# ---- the pairs: client -> outbound -> inbound -> origin ----


class Pair:
    """A running pair (or none, for `direct`): where clients connect, the proxy processes."""

    def __init__(self, key, label, entry, procs=(), admin_ports=(), tpm=False, verifier=False):
        self.key = key
        self.label = label
        self.entry = entry
        self.procs = list(procs)
        self.admin_ports = list(admin_ports)
        self.tpm = tpm            # the inbound signs and attests with the swtpm
        self.verifier = verifier  # the Veraison test server is called
        self.cipher = None

    def pids(self):
        return [p.pid for p in self.procs]

    def cpu(self):
        return sum(cpu_seconds(pid) for pid in self.pids())

    def rss_kib(self):
        return sum(rss_kib(pid) for pid in self.pids())

    def check_alive(self):
        for proc in self.procs:
            if not proc.alive():
                raise BenchError(f"{proc.name} exited:\n{proc.log_text()[-2000:]}")


ATLSD_VARIANTS = {
    "atlsd-tls": "atlsd, TLS 1.3",
    "atlsd-attested": "atlsd, attested (post-handshake, local verifier)",
    "atlsd-intra": "atlsd, attested (intra-handshake, local verifier)",
    "atlsd-veraison": "atlsd, attested (post-handshake, Veraison verifier)",
    "atlsd-veraison-far": "atlsd, attested (post-handshake, Veraison verifier 10 ms away)",
    "atlsd-passport": "atlsd, attested (passport: Veraison EAR)",
    "atlsd-mux": "atlsd, attested (post-handshake, local verifier), multiplexed",
}
LABELS = dict(
    {"direct": "direct (no proxy)", "stunnel": "stunnel pair", "haproxy": "haproxy pair",
     "haproxy-full": "haproxy pair, no TLS session reuse"}, **ATLSD_VARIANTS)


def atlsd_pair(env, key):
    in_port, out_port, in_admin, out_admin = free_port(), free_port(), free_port(), free_port()
    pki = env.pki

    def header(admin, tpm):
        # Readiness probes are rare, so that their TPM and verifier calls stay out of the counts;
        # but a passport attester is ready only once a probe has seen its first EAR.
        probe = "1s" if key == "atlsd-passport" and tpm else "10m"
        text = (f"log:\n  level: warn\ndrain_timeout: 1s\nthreads: {env.threads}\n"
                f"admin:\n  listen: 127.0.0.1:{admin}\n  probe_every: {probe}\n")
        if tpm:
            text += f"tpm:\n  tcti: \"{env.tcti}\"\n"
        return text + "listeners:\n"

    attested = key != "atlsd-tls"
    if attested:
        in_tls = f"      cert: {env.path('tik.crt')}\n      key: tpm:tik\n"
    else:
        in_tls = (f"      cert: {os.path.join(pki, 'server.crt')}\n"
                  f"      key: {os.path.join(pki, 'server.key')}\n")
    in_attestation = out_attestation = ""
    pcrs = ", ".join(f"{i}: {ZERO_PCR}" for i in range(8))
    veraison = (f"          urls: [{env.veraison_url}]\n"
                f"          ear_key: {env.path('ear.pem')}\n")
    if key in ("atlsd-attested", "atlsd-intra", "atlsd-mux"):
        mode = "      mode: intra-handshake\n" if key == "atlsd-intra" else ""
        in_attestation = ("    attestation:\n" + mode +
                          "      self:\n        pcrs: [0, 1, 2, 3, 4, 5, 6, 7]\n")
        out_attestation = (
            "    attestation:\n" + mode +
            "      peer:\n        verifier: local\n        local:\n"
            f"          trusted_aks: [{{pem: {env.path('ak.pem')}}}]\n"
            f"          reference_values: {{bank: sha256, pcrs: {{{pcrs}}}}}\n"
            "        accept: {minimum_status: affirming}\n")
    elif key in ("atlsd-veraison", "atlsd-veraison-far"):
        if key == "atlsd-veraison-far":
            veraison = (f"          urls: [{env.veraison_far_url}]\n"
                        f"          ear_key: {env.path('ear-far.pem')}\n")
        in_attestation = "    attestation:\n      self:\n        pcrs: [0, 1, 2, 3, 4, 5, 6, 7]\n"
        out_attestation = ("    attestation:\n      peer:\n        verifier: veraison\n"
                           "        veraison:\n" + veraison +
                           "        accept: {minimum_status: affirming}\n")
    elif key == "atlsd-passport":
        in_attestation = ("    attestation:\n      model: passport\n      self:\n"
                          "        pcrs: [0, 1, 2, 3, 4, 5, 6, 7]\n        veraison:\n" +
                          veraison)
        out_attestation = ("    attestation:\n      model: passport\n      peer:\n"
                           f"        passport_keys: [{env.path('ear.pem')}]\n"
                           "        accept: {minimum_status: affirming, max_age: 5m}\n")
    # Multiplexed: every workload connection is a stream on one attested tunnel per loop.
    mux = "    multiplex: true\n" if key == "atlsd-mux" else ""
    inbound = (header(in_admin, attested) +
               f"  - name: bench-in\n    mode: inbound\n    listen: 127.0.0.1:{in_port}\n"
               f"    upstream: 127.0.0.1:{env.origin_port}\n    max_connections: 20000\n"
               + env.atlsd_listener_extra + mux + "    tls:\n" + in_tls + in_attestation)
    outbound = (header(out_admin, False) +
                f"  - name: bench-out\n    mode: outbound\n    listen: 127.0.0.1:{out_port}\n"
                f"    upstream: 127.0.0.1:{in_port}\n    max_connections: 20000\n"
                + env.atlsd_listener_extra + mux +
                f"    tls:\n      ca: {os.path.join(pki, 'ca.crt')}\n"
                "      server_name: server.test\n" + out_attestation)
    procs = []
    for side, text in (("in", inbound), ("out", outbound)):
        config = env.path(f"{key}-{side}.yaml")
        with open(config, "w") as f:
            f.write(text)
        run([env.atlsd, "--config", config, "--check"], what=f"atlsd --check {config}")
        procs.append(env.start(f"{key}-{side}", [env.atlsd, "--config", config]))
    pair = Pair(key, LABELS[key], out_port, procs, (in_admin, out_admin), tpm=attested,
                verifier=key in ("atlsd-veraison", "atlsd-veraison-far", "atlsd-passport"))
    # /readyz: every listener bound, the TPM answering, a passport in hand.
    deadline = time.monotonic() + 30
    for admin, proc in zip(pair.admin_ports, procs):
        while True:
            if not proc.alive():
                raise BenchError(f"{proc.name} exited:\n{proc.log_text()[-2000:]}")
            try:
                if http_get(f"http://127.0.0.1:{admin}/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{proc.name} not ready within 30 s:\n{proc.log_text()[-2000:]}")
            time.sleep(0.1)
    if not attested:
        pair.cipher = negotiated_cipher(env, in_port)
    return pair


def stunnel_pair(env, key):
    in_port, out_port = free_port(), free_port()
    pki = env.pki
    common = "foreground = yes\npid =\ndebug = warning\n"
    server = (common + f"[bench-in]\naccept = 127.0.0.1:{in_port}\n"
              f"connect = 127.0.0.1:{env.origin_port}\n"
              f"cert = {os.path.join(pki, 'server.crt')}\nkey = {os.path.join(pki, 'server.key')}\n"
              "sslVersionMin = TLSv1.3\n")
    client = (common + f"[bench-out]\nclient = yes\naccept = 127.0.0.1:{out_port}\n"
              f"connect = 127.0.0.1:{in_port}\nCAfile = {os.path.join(pki, 'ca.crt')}\n"
              "verifyChain = yes\ncheckHost = server.test\nsni = server.test\n"
              "sslVersionMin = TLSv1.3\n")
    procs = []
    for side, text, port in (("in", server, in_port), ("out", client, out_port)):
        config = env.path(f"stunnel-{side}.conf")
        with open(config, "w") as f:
            f.write(text)
        proc = env.start(f"stunnel-{side}", ["stunnel", config])
        procs.append(proc)
        wait_for_port(port, proc, f"stunnel ({side})")
    pair = Pair(key, LABELS[key], out_port, procs)
    pair.cipher = negotiated_cipher(env, in_port)
    return pair


def haproxy_pair(env, key):
    maxconn = env.fd_room
    in_port, out_port = free_port(), free_port()
    pki = env.pki
    reuse = " no-ssl-reuse" if key == "haproxy-full" else ""
    common = (f"global\n  nbthread {env.threads}\n  maxconn {maxconn}\n"
              "defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 5m\n"
              f"  timeout server 5m\n  maxconn {maxconn}\n")
    server = (common + f"frontend bench-in\n  bind 127.0.0.1:{in_port} ssl crt "
              f"{env.path('server.pem')} ssl-min-ver TLSv1.3\n  default_backend origin\n"
              f"backend origin\n  server origin 127.0.0.1:{env.origin_port}\n")
    client = (common + f"frontend bench-out\n  bind 127.0.0.1:{out_port}\n"
              "  default_backend tls-in\nbackend tls-in\n"
              f"  server in 127.0.0.1:{in_port} ssl verify required ca-file "
              f"{os.path.join(pki, 'ca.crt')} sni str(server.test) verifyhost server.test "
              f"ssl-min-ver TLSv1.3{reuse}\n")
    procs = []
    for side, text, port in (("in", server, in_port), ("out", client, out_port)):
        config = env.path(f"{key}-{side}.cfg")
        with open(config, "w") as f:
            f.write(text)
        proc = env.start(f"{key}-{side}", ["haproxy", "-db", "-f", config])
        procs.append(proc)
        wait_for_port(port, proc, f"haproxy ({side})")
    pair = Pair(key, LABELS[key], out_port, procs)
    pair.cipher = negotiated_cipher(env, in_port)
    return pair


def start_pair(env, key):
    if key == "direct":
        return Pair("direct", LABELS["direct"], env.origin_port)
    if key.startswith("atlsd"):
        return atlsd_pair(env, key)
    if key == "stunnel":
        return stunnel_pair(env, key)
    return haproxy_pair(env, key)


def stop_pair(env, pair):
    for proc in pair.procs:
        env.stop(proc)


def negotiated_cipher(env, port):
    """The TLS 1.3 suite the inbound side picks for a default OpenSSL client."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "server.test",
         "-CAfile", os.path.join(env.pki, "ca.crt"), "-brief"],
        input="", capture_output=True, text=True, timeout=20)
    m = re.search(r"Ciphersuite: (\S+)", done.stdout + done.stderr)
    return m.group(1) if m else None


# ---- the measurements ----


def netload_json(env, argv, timeout):
    return json.loads(run([env.netload] + argv, timeout=timeout, what="atls_netload " + argv[0]))


def b1(env, pair, args):
    out = {}
    for direction in ("up", "down"):
        runs = []
        for _ in range(args.repeat):
            before = pair.cpu()
            result = netload_json(env, ["bulk", "--port", str(pair.entry), "--bytes",
                                        str(args.bytes), "--direction", direction], timeout=600)
            cpu = pair.cpu() - before
            runs.append({"bytes_per_s": result["bytes"] / result["seconds"],
                         "seconds": result["seconds"],
                         "cpu_s_per_gib": cpu / (result["bytes"] / GIB) if pair.procs else None})
        pair.check_alive()
        best = sorted(runs, key=lambda r: r["bytes_per_s"])[len(runs) // 2]  # the median run
        out[direction] = {"bytes": args.bytes, "runs": runs, "bytes_per_s": best["bytes_per_s"],
                          "cpu_s_per_gib": best["cpu_s_per_gib"]}
        log(f"  B1 {direction:>4}: {best['bytes_per_s'] / MIB:8.1f} MiB/s"
            + (f", {best['cpu_s_per_gib']:.2f} CPU s/GiB" if pair.procs else ""))
    return out


def b2(env, pair, args):
    # A short unmeasured run first: connection pools, caches and the passport are warm.
    netload_json(env, ["rate", "--port", str(pair.entry), "--seconds", "1", "--warmup", "0"],
                 timeout=120)
    helpers = []
    if pair.tpm:
        helpers.append(env.swtpm.pid)
    if pair.verifier:
        far = pair.key == "atlsd-veraison-far"
        helpers.append((env.veraison_far if far else env.veraison).pid)
    scrapes = [scrape(port) for port in pair.admin_ports]
    cpu_before = pair.cpu()
    helper_before = sum(cpu_seconds(pid) for pid in helpers)
    result = netload_json(env, ["rate", "--port", str(pair.entry), "--seconds",
                                str(args.rate_seconds), "--warmup", "0", "--concurrency",
                                str(args.concurrency)], timeout=args.rate_seconds + 120)
    cpu = pair.cpu() - cpu_before
    helper_cpu = sum(cpu_seconds(pid) for pid in helpers) - helper_before
    pair.check_alive()
    attempts = result["connections"] + result["errors"]
    out = {"per_second": result["per_second"], "connections": result["connections"],
           "errors": result["errors"], "first_error": result["first_error"],
           "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
           "concurrency": args.concurrency, "seconds": result["seconds"],
           "proxy_cpu_ms_per_conn": cpu * 1000 / attempts if attempts and pair.procs else None,
           "helper_cpu_ms_per_conn": helper_cpu * 1000 / attempts if attempts and helpers else None}
    if pair.admin_ports:
        tpm_ops, verifier_requests = {}, {}
        for port, before in zip(pair.admin_ports, scrapes):
            after = scrape(port)
            for op, n in metric_delta(before, after, "atlsd_tpm_operations_total", "operation",
                                      skip=("probe",)).items():
                tpm_ops[op] = tpm_ops.get(op, 0) + n
            for endpoint, n in metric_delta(before, after, "atlsd_verifier_requests_total",
                                            "endpoint").items():
                verifier_requests[endpoint] = verifier_requests.get(endpoint, 0) + n
        # Background TPM work (readiness probes, a passport's refresh) is far below one
        # operation per connection: what stays under 0.01 per connection is not the connection's.
        out["tpm_ops_per_conn"] = {op: n / attempts for op, n in tpm_ops.items()
                                   if attempts and n / attempts >= 0.01}
        out["tpm_ops_total"] = tpm_ops
        out["verifier_requests_per_conn"] = sum(verifier_requests.values()) / attempts \
            if attempts else 0
        out["verifier_requests_by_endpoint"] = verifier_requests
    log(f"  B2: {out['per_second']:8.1f} conn/s, p99 {out['p99_ms']:.2f} ms, "
        f"{out['errors']} errors" + (f" ({out['first_error']})" if out["errors"] else ""))
    return out


def first_contact(env, pair, args):
    """hyperfine: one fresh connection with a 1-byte exchange, one at a time."""
    if not shutil.which("hyperfine"):
        return None
    export = env.path(f"hyperfine-{pair.key}.json")
    run(["hyperfine", "-N", "--style", "none", "--warmup", "2", "--runs", str(args.hf_runs),
         "--export-json", export, f"{env.netload} once --port {pair.entry}"], timeout=300,
        what="hyperfine")
    with open(export) as f:
        result = json.load(f)["results"][0]
    out = {"mean_ms": result["mean"] * 1000, "stddev_ms": result["stddev"] * 1000,
           "median_ms": result["median"] * 1000, "runs": len(result["times"])}
    log(f"  first contact: {out['mean_ms']:.2f} ± {out['stddev_ms']:.2f} ms")
    return out


WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"p999_us": %d, "mean_us": %.1f, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean,
    latency.max))
end
"""


# B3's loads: (name, tool, connections). wrk opens its connections when it starts and measures
# from the first request, so an attested pair's set-up (handshakes queued on the TPM) lands in
# its tail; atls_netload's http mode warms its connections up first and measures steady state.
B3_LOADS = [("wrk c=1", "wrk", 1), ("wrk c=32", "wrk", 32), ("warm c=32", "netload", 32)]


def b3(env, pair, args):
    script = env.path("wrk-report.lua")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)
    out = {}
    for name, tool, connections in B3_LOADS:
        if tool == "wrk":
            text = run(["wrk", "-t1", f"-c{connections}", f"-d{args.wrk_seconds}s", "-s", script,
                        f"http://127.0.0.1:{pair.entry}/"], timeout=args.wrk_seconds + 60,
                       what="wrk")
            m = re.search(r"^WRKJSON (.*)$", text, re.M)
            if not m:
                raise BenchError(f"wrk printed no summary:\n{text[-2000:]}")
            result = json.loads(m.group(1))
            result["per_second"] = result["requests"] / (result["duration_us"] / 1e6)
        else:
            result = netload_json(env, ["http", "--port", str(pair.entry), "--seconds",
                                        str(args.wrk_seconds), "--warmup", "1", "--concurrency",
                                        str(connections)], timeout=args.wrk_seconds + 120)
        result.update(tool=tool, connections=connections)
        out[name] = result
        log(f"  B3 {name:<9}: {result['per_second']:9.0f} req/s, p50 {result['p50_us']:.0f} µs, "
            f"p99 {result['p99_us']:.0f} µs, p99.9 {result['p999_us']:.0f} µs, "
            f"{result['errors']} errors")
    pair.check_alive()
    return out


def b4(env, key, args):
    target = args.hold_count
    pair = start_pair(env, key)
    try:
        time.sleep(0.5)
        rss_before = pair.rss_kib()
        holder = env.start(f"hold-{key}", [env.netload, "hold", "--port", str(pair.entry),
                                           "--count", str(target), "--concurrency", "64",
                                           "--ramp", str(args.hold_ramp)],
                           stdin=subprocess.PIPE)
        try:
            result = wait_for_line(holder, r"^(\{.*\})$", "the holding client",
                                   seconds=args.hold_ramp + 60)
            result = json.loads(result.group(1))
            time.sleep(1.0)  # let the proxies settle: buffers freed, threads parked
            rss_held = pair.rss_kib()
            per_proc = {p.name: {"rss_kib": rss_kib(p.pid), "threads": proc_status(p.pid,
                                                                                     "Threads")}
                        for p in pair.procs}
            open_connections = None
            if pair.admin_ports:
                metrics = scrape(pair.admin_ports[1])
                open_connections = sum(v for (name, _), v in metrics.items()
                                       if name == "atlsd_open_connections")
        finally:
            holder.popen.stdin.close()
            holder.popen.wait(timeout=60)
            env.stop(holder)
        held = result["held"]
        out = {"target": target, "held": held, "failed": result["failed"],
               "first_error": result["first_error"], "ramp_seconds": result["seconds"],
               "rss_before_kib": rss_before, "rss_held_kib": rss_held,
               "kib_per_conn": rss_held / held if held else None,
               "delta_kib_per_conn": (rss_held - rss_before) / held if held else None,
               "processes": per_proc, "atlsd_open_connections_outbound": open_connections}
        log(f"  B4: {held}/{target} held in {result['seconds']:.1f} s, RSS {rss_held / 1024:.1f} "
            f"MiB, {out['kib_per_conn'] or 0:.1f} KiB/conn "
            f"({out['delta_kib_per_conn'] or 0:.1f} KiB/conn above idle)")
        return out
    finally:
        stop_pair(env, pair)


def b5(args):
    seconds = str(args.openssl_seconds)
    out = {}
    for cipher in ("aes-128-gcm", "aes-256-gcm"):
        text = run(["openssl", "speed", "-mr", "-seconds", seconds, "-bytes", "16384", "-evp",
                    cipher], what="openssl speed")
        m = re.search(r"^\+F:\d+:[^:]+:([\d.]+)", text, re.M)
        out[f"{cipher}_bytes_per_s_16k"] = float(m.group(1)) if m else None
    text = run(["openssl", "speed", "-mr", "-seconds", seconds, "ecdsap256", "ecdhx25519"],
               what="openssl speed")
    m = re.search(r"^\+F4:\d+:256:([\d.]+):([\d.]+)", text, re.M)
    out["ecdsap256_sign_per_s"] = float(m.group(1)) if m else None
    out["ecdsap256_verify_per_s"] = float(m.group(2)) if m else None
    m = re.search(r"^\+F5:\d+:253:([\d.]+)", text, re.M)
    out["x25519_per_s"] = float(m.group(1)) if m else None
    log(f"  B5: AES-128-GCM {out['aes-128-gcm_bytes_per_s_16k'] / MIB:.0f} MiB/s, AES-256-GCM "
        f"{out['aes-256-gcm_bytes_per_s_16k'] / MIB:.0f} MiB/s, P-256 sign "
        f"{out['ecdsap256_sign_per_s']:.0f}/s verify {out['ecdsap256_verify_per_s']:.0f}/s, "
        f"X25519 {out['x25519_per_s']:.0f}/s (one core)")
    return out


# ---- ratios, goals, the table ----


def ratio(a, b):
    return a / b if a is not None and b else None


def goals(results):
    b1r, b2r, b3r, b4r = (results.get(k, {}) for k in ("b1", "b2", "b3", "b4"))
    out = []

    def goal(name, value, target, met, note=""):
        out.append({"goal": name, "value": value, "target": target,
                    "met": met if value is not None or met is not None else None, "note": note})

    def get(table, pair, *path):
        node = table.get(pair)
        for p in path:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        return node

    for direction in ("up", "down"):
        a = get(b1r, "atlsd-tls", direction, "bytes_per_s")
        h = get(b1r, "haproxy", direction, "bytes_per_s")
        s = get(b1r, "stunnel", direction, "bytes_per_s")
        r = ratio(a, h)
        goal(f"B1 {direction}: atlsd/haproxy throughput", r, ">= 1.0",
             r >= 1.0 if r is not None else None)
        r = ratio(a, s)
        goal(f"B1 {direction}: atlsd/stunnel throughput", r, ">= 1.5",
             r >= 1.5 if r is not None else None)
        ac = get(b1r, "atlsd-tls", direction, "cpu_s_per_gib")
        others = [c for c in (get(b1r, "haproxy", direction, "cpu_s_per_gib"),
                              get(b1r, "stunnel", direction, "cpu_s_per_gib")) if c is not None]
        r = ratio(ac, min(others)) if others else None
        goal(f"B1 {direction}: atlsd CPU/GiB over the lower of haproxy, stunnel", r, "<= 1.0",
             r <= 1.0 if r is not None else None)

    plain = get(b2r, "atlsd-tls", "per_second")
    haproxy = get(b2r, "haproxy", "per_second")
    haproxy_full = get(b2r, "haproxy-full", "per_second")
    for key, label in (("atlsd-passport", "passport"), ("atlsd-mux", "multiplexed")):
        repeat = get(b2r, key, "per_second")
        for name, baseline, target in (("atlsd plain TLS", plain, 0.9),
                                       ("haproxy (default, resumes)", haproxy, 1.0),
                                       ("haproxy (full handshakes)", haproxy_full, 1.0)):
            r = ratio(repeat, baseline)
            goal(f"B2 repeat peer ({label})/{name}", r, f">= {target}",
                 r >= target if r is not None else None)
    mux_ops = get(b2r, "atlsd-mux", "tpm_ops_total")
    mux_conns = get(b2r, "atlsd-mux", "connections")
    if mux_ops is not None and mux_conns:
        total = sum(mux_ops.values())
        goal("B2 multiplexed: TPM operations per connection", total / mux_conns, "-> 0", None,
             f"{total} in {mux_conns} connections: the tunnels were attested in the warm-up")
    ops = get(b2r, "atlsd-attested", "tpm_ops_per_conn")
    if ops is not None:
        # `evidence` brings a quote and a certify: the certify is beyond the allowance.
        quotes = ops.get("quote", 0) + ops.get("evidence", 0)
        extra = {k: v for k, v in ops.items() if k not in ("sign", "quote", "evidence")}
        met = (ops.get("sign", 0) <= 1.001 and quotes <= 1.001 and ops.get("evidence", 0) < 0.001
               and not any(v > 0.001 for v in extra.values()))
        goal("B2 first contact: TPM operations per connection", tpm_ops_text(ops),
             "<= 1 sign + 1 quote", met, "background-check, local verifier")
    vr = get(b2r, "atlsd-veraison", "verifier_requests_per_conn")
    if vr is not None:
        goal("B2 first contact: verifier HTTP requests per connection", vr, "<= 1", vr <= 1.001,
             "background-check with the Veraison verifier")
    fc = results.get("first_contact", {})
    near = get(fc, "atlsd-veraison", "median_ms")
    far = get(fc, "atlsd-veraison-far", "median_ms")
    if near is not None and far is not None:
        # Each request the first contact waits for adds VERIFIER_RTT_MS to its latency.
        trips = (far - near) / VERIFIER_RTT_MS
        goal("B2 first contact: verifier round trips it waits for", trips, "<= 1", trips < 1.5,
             f"first contact with the verifier {VERIFIER_RTT_MS} ms away minus with it near, "
             f"over {VERIFIER_RTT_MS} ms")

    for name, _, _ in B3_LOADS:
        a = get(b3r, "atlsd-tls", name, "p99_us")
        h = get(b3r, "haproxy", name, "p99_us")
        r = ratio(a, h)
        goal(f"B3 p99 atlsd/haproxy, {name}", r, "<= 1.0", r <= 1.0 if r is not None else None)

    held = get(b4r, "atlsd-tls", "held")
    target = get(b4r, "atlsd-tls", "target")
    if held is not None:
        goal("B4 atlsd connections held", str(held), ">= 10000", held >= 10000,
             f"tried {target}" + (": the fd hard limit allows no more (see b4_note)"
                                  if results.get("b4_note") else ""))
    kib = get(b4r, "atlsd-tls", "kib_per_conn")
    goal("B4 atlsd RSS per held connection (both processes / connections)", kib, "<= 40 KiB",
         kib <= 40 if kib is not None else None)
    return out


def fmt(value, spec="{:.1f}", none="-"):
    if value is None:
        return none
    if isinstance(value, str):
        return value
    return spec.format(value)


def table(title, headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    text = [f"\n{title}"]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    text.append(line)
    text.append("-" * len(line))
    for r in rows:
        text.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    md = [f"\n**{title}**\n", "| " + " | ".join(headers) + " |",
          "|" + "|".join("---" for _ in headers) + "|"]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(text), "\n".join(md)


def report(results):
    parts = []
    b1r = results.get("b1", {})
    rows = []
    for key, r in b1r.items():
        rows.append([LABELS[key], fmt(r.get("up", {}).get("bytes_per_s", None) and
                                      r["up"]["bytes_per_s"] / MIB, "{:.0f}"),
                     fmt(r.get("down", {}).get("bytes_per_s", None) and
                         r["down"]["bytes_per_s"] / MIB, "{:.0f}"),
                     fmt(r.get("up", {}).get("cpu_s_per_gib"), "{:.2f}"),
                     fmt(r.get("down", {}).get("cpu_s_per_gib"), "{:.2f}"),
                     r.get("cipher") or "-"])
    parts.append(table(f"B1 bulk throughput: one connection, {results['bytes'] / MIB:.0f} MiB "
                       f"each way, median of {results['repeat']}",
                       ["pair", "up MiB/s", "down MiB/s", "up CPU s/GiB", "down CPU s/GiB",
                        "TLS suite"], rows))

    b2r = results.get("b2", {})
    rows = []
    for key, r in b2r.items():
        ops = r.get("tpm_ops_per_conn")
        fc = results.get("first_contact", {}).get(key)
        rows.append([LABELS[key], fmt(r["per_second"], "{:.0f}"), fmt(r["p50_ms"], "{:.2f}"),
                     fmt(r["p99_ms"], "{:.2f}"), str(r["errors"]),
                     fmt(r.get("proxy_cpu_ms_per_conn"), "{:.2f}"),
                     fmt(r.get("helper_cpu_ms_per_conn"), "{:.2f}"),
                     tpm_ops_text(ops) if ops else
                     ("0" if ops is not None else "-"),
                     fmt(r.get("verifier_requests_per_conn"), "{:.2f}"),
                     f"{fc['mean_ms']:.2f} ± {fc['stddev_ms']:.2f}" if fc else "-"])
    parts.append(table(f"B2 connection rate: new connection, 1-byte request and response, "
                       f"{results['concurrency']} at once, {results['rate_seconds']} s",
                       ["pair", "conn/s", "p50 ms", "p99 ms", "errors", "proxy CPU ms/conn",
                        "swtpm+verifier CPU ms/conn", "TPM ops/conn", "verifier req/conn",
                        "first contact ms (1 at a time)"], rows))

    b3r = results.get("b3", {})
    rows = []
    for key, r in b3r.items():
        row = [LABELS[key]]
        for name, _, _ in B3_LOADS:
            x = r.get(name, {})
            row += [fmt(x.get("per_second"), "{:.0f}"), fmt(x.get("p50_us"), "{:.0f}"),
                    fmt(x.get("p99_us"), "{:.0f}"), fmt(x.get("p999_us"), "{:.0f}")]
        rows.append(row)
    headers = ["pair"]
    for name, _, _ in B3_LOADS:
        headers += [f"{name} req/s", "p50 µs", "p99 µs", "p99.9 µs"]
    parts.append(table(f"B3 latency: kept-alive HTTP/1.1 to the atls_netload origin, "
                       f"{results['wrk_seconds']} s each; wrk from its first request, 'warm' "
                       "(atls_netload http) after 1 s of warm-up", headers, rows))

    b4r = results.get("b4", {})
    rows = []
    for key, r in b4r.items():
        threads = sum(p["threads"] for p in r["processes"].values()) if r.get("processes") else 0
        rows.append([LABELS[key], str(r["target"]), str(r["held"]),
                     fmt(r["ramp_seconds"], "{:.1f}"), fmt(r["rss_before_kib"] / 1024, "{:.1f}"),
                     fmt(r["rss_held_kib"] / 1024, "{:.1f}"), fmt(r["kib_per_conn"], "{:.1f}"),
                     fmt(r["delta_kib_per_conn"], "{:.1f}"), str(threads)])
    parts.append(table("B4 scale: idle connections held through the pair (RSS of both proxy "
                       "processes)", ["pair", "tried", "held", "open s", "RSS idle MiB",
                                      "RSS held MiB", "KiB/conn", "KiB/conn above idle",
                                      "threads"], rows))

    b5r = results.get("b5", {})
    if b5r:
        ceiling = results.get("ceilings", {})
        rows = [["AES-128-GCM, 16 KiB blocks", fmt(b5r["aes-128-gcm_bytes_per_s_16k"] / MIB,
                                                   "{:.0f}") + " MiB/s"],
                ["AES-256-GCM, 16 KiB blocks", fmt(b5r["aes-256-gcm_bytes_per_s_16k"] / MIB,
                                                   "{:.0f}") + " MiB/s"],
                ["ECDSA P-256 sign", fmt(b5r["ecdsap256_sign_per_s"], "{:.0f}") + " /s"],
                ["ECDSA P-256 verify", fmt(b5r["ecdsap256_verify_per_s"], "{:.0f}") + " /s"],
                ["X25519", fmt(b5r["x25519_per_s"], "{:.0f}") + " /s"]]
        for name, value in ceiling.items():
            rows.append([name, value])
        parts.append(table("B5 limits: openssl speed, one core", ["what", "value"], rows))

    rows = []
    for g in results.get("goals", []):
        value = g["value"]
        shown = value if isinstance(value, str) else fmt(value, "{:.2f}")
        rows.append([g["goal"], shown, g["target"],
                     {True: "met", False: "NOT MET", None: "n/a"}[g["met"]], g["note"]])
    parts.append(table("Goals (ratios from this run)", ["goal", "measured", "target", "",
                                                        "note"], rows))
    return "\n".join(p[0] for p in parts) + "\n", "\n".join(p[1] for p in parts) + "\n"


def ceilings(results):
    """What the CPU allows, from B5, next to what B1 and B2 reached."""
    b5r = results.get("b5")
    if not b5r:
        return {}
    out = {}
    cores = os.cpu_count() or 1
    b1r = results.get("b1", {}).get("atlsd-tls", {})
    suite = results.get("b1", {}).get("atlsd-tls", {}).get("cipher") or "TLS_AES_256_GCM_SHA384"
    aead = b5r["aes-128-gcm_bytes_per_s_16k"] if "128" in suite else \
        b5r["aes-256-gcm_bytes_per_s_16k"]
    # Every byte is sealed once (outbound) and opened once (inbound): two AEAD passes on `cores`.
    bulk_ceiling = aead * cores / 2
    out["B1 ceiling: AEAD only, both sides, all cores"] = f"{bulk_ceiling / MIB:.0f} MiB/s"
    for direction in ("up", "down"):
        if direction in b1r:
            out[f"B1 atlsd {direction} / that ceiling"] = \
                f"{b1r[direction]['bytes_per_s'] / bulk_ceiling:.2f}"
    # A full handshake: the server signs once, the client verifies CertificateVerify and the
    # leaf's signature by the CA; each side makes and uses an X25519 share.
    per_handshake = (1 / b5r["ecdsap256_sign_per_s"] + 2 / b5r["ecdsap256_verify_per_s"]
                     + 4 / b5r["x25519_per_s"])
    hs_ceiling = cores / per_handshake
    out["B2 ceiling: handshake public-key crypto only, all cores"] = f"{hs_ceiling:.0f} conn/s"
    plain = results.get("b2", {}).get("atlsd-tls", {}).get("per_second")
    if plain:
        out["B2 atlsd plain TLS / that ceiling"] = f"{plain / hs_ceiling:.2f}"
    return out


# ---- the run ----


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and short runs (~2 min)")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build", "bench"))
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "latest.json"))
    p.add_argument("--only", default="b1,b2,b3,b4,b5",
                   help="comma-separated subset of b1,b2,b3,b4,b5")
    p.add_argument("--pairs", default=",".join(LABELS),
                   help="comma-separated subset of " + ",".join(LABELS))
    args = p.parse_args()
    args.only = set(args.only.split(","))
    args.pairs = set(args.pairs.split(","))
    unknown = (args.only - {"b1", "b2", "b3", "b4", "b5"}) | (args.pairs - set(LABELS))
    if unknown:
        p.error("unknown: " + ", ".join(sorted(unknown)))
    if args.quick:
        args.bytes, args.repeat, args.rate_seconds, args.wrk_seconds = 128 * MIB, 1, 3, 3
        args.hold_count, args.hf_runs, args.openssl_seconds = 1000, 10, 1
    else:
        args.bytes, args.repeat, args.rate_seconds, args.wrk_seconds = GIB, 3, 10, 10
        args.hold_count, args.hf_runs, args.openssl_seconds = 10000, 30, 2
    args.concurrency = 16
    args.hold_ramp = 120
    return args


def main():
    args = parse_args()
    started = time.monotonic()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Each relayed connection costs a proxy process two descriptors (client side, server side).
    fd_room = (soft - 64) // 2
    b4_note = None
    if fd_room < args.hold_count:
        b4_note = (f"RLIMIT_NOFILE is {soft} (hard {hard}) and cannot be raised here; each proxy "
                   f"process needs two descriptors per connection, so B4 tries {fd_room}")
        args.hold_count = fd_room
    work = tempfile.mkdtemp(prefix="atlsd-bench.")
    env = Env(args, work)
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "machine": machine(), "bytes": args.bytes, "repeat": args.repeat,
        "concurrency": args.concurrency, "rate_seconds": args.rate_seconds,
        "wrk_seconds": args.wrk_seconds,
        "b3_loads": [name for name, _, _ in B3_LOADS],
        "b4_note": b4_note, "errors": [],
        "notes": [
            "All on loopback on one machine: clients, proxies, origin and swtpm share the cores.",
            "swtpm is a software TPM on the same CPU; a hardware TPM is about 100x slower per "
            "operation (tens of ms for a sign or quote), so attested first contacts cost far "
            "more on real hardware.",
            "B3's origin is atls_netload (C++/Asio, one thread), not python3's http.server: "
            "its direct row shows the headroom it leaves. wrk measures from its first request, "
            "so the attested rows' wrk c=32 tails include 32 attested handshakes queued on the "
            "TPM at the start; the 'warm' columns leave set-up out.",
            "Every proxy logs warnings only; atlsd and haproxy run one thread per core, stunnel "
            "one thread per connection.",
            "haproxy resumes TLS sessions to its server by default (TLS 1.3 PSK); atlsd does "
            "not resume; 'no TLS session reuse' is haproxy with full handshakes.",
        ],
    }
    failed = False
    try:
        env.setup()
        if "b5" in args.only:
            log("B5: openssl speed")
            results["b5"] = b5(args)
        plan = [
            ("direct", {"b1", "b2", "b3"}),
            ("atlsd-tls", {"b1", "b2", "b3"}),
            ("atlsd-attested", {"b1", "b2", "b3"}),
            ("atlsd-intra", {"b2", "b3"}),
            ("atlsd-veraison", {"b2"}),
            ("atlsd-veraison-far", {"b2"}),
            ("atlsd-passport", {"b2"}),
            ("atlsd-mux", {"b2", "b3"}),
            ("stunnel", {"b1", "b2", "b3"}),
            ("haproxy", {"b1", "b2", "b3"}),
            ("haproxy-full", {"b2"}),
        ]
        for key, sections in plan:
            sections = sections & args.only
            if not sections or key not in args.pairs:
                continue
            log(f"{LABELS[key]}")
            try:
                pair = start_pair(env, key)
            except (BenchError, subprocess.SubprocessError, OSError) as e:
                failed = True
                results["errors"].append(f"{key}: {e}")
                log(f"  could not start: {e}")
                continue
            try:
                if "b1" in sections:
                    results.setdefault("b1", {})[key] = dict(b1(env, pair, args),
                                                             cipher=pair.cipher)
                if "b2" in sections:
                    results.setdefault("b2", {})[key] = b2(env, pair, args)
                    fc = first_contact(env, pair, args)
                    if fc:
                        results.setdefault("first_contact", {})[key] = fc
                if "b3" in sections:
                    results.setdefault("b3", {})[key] = b3(env, pair, args)
            except (BenchError, subprocess.SubprocessError, OSError, ValueError) as e:
                failed = True
                results["errors"].append(f"{key}: {e}")
                log(f"  failed: {e}")
            finally:
                stop_pair(env, pair)
        if "b4" in args.only:
            for key in [k for k in ("atlsd-tls", "haproxy", "stunnel") if k in args.pairs]:
                log(f"B4: {LABELS[key]}, {args.hold_count} connections")
                try:
                    results.setdefault("b4", {})[key] = b4(env, key, args)
                except (BenchError, subprocess.SubprocessError, OSError, ValueError) as e:
                    failed = True
                    results["errors"].append(f"b4 {key}: {e}")
                    log(f"  failed: {e}")
    finally:
        env.stop_all()
    results["ceilings"] = ceilings(results)
    results["goals"] = goals(results)
    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    text, markdown = report(results)
    print(text)
    if b4_note:
        print(f"B4 note: {b4_note}")
    for note in results["notes"]:
        print(f"note: {note}")
    for error in results["errors"]:
        print(f"ERROR: {error}")
    print(f"elapsed: {results['elapsed_seconds']} s; JSON: {args.out}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(f"Command: `./bench/run.sh{' --quick' if args.quick else ''}`, "
                f"{results['date']}, {results['machine']['cpu']} ({results['machine']['cores']} "
                f"cores)\n{markdown}")
        if b4_note:
            f.write(f"\nB4: {b4_note}.\n")
        for note in results["notes"]:
            f.write(f"\n- {note}")
        f.write("\n")
    if failed:
        shutil.copytree(work, os.path.join(os.path.dirname(args.out), "failed-run-logs"),
                        dirs_exist_ok=True, ignore=shutil.ignore_patterns("tpm"))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(argv, pattern=r"\S"):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        lines = [x for x in (done.stdout + done.stderr).splitlines() if re.search(pattern, x)]
        return lines[0].strip() if lines else None

    commit = version(["git", "-C", ROOT, "describe", "--always", "--dirty"])
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "atlsd_commit": commit, "openssl": version(["openssl", "version"]),
            "haproxy": version(["haproxy", "-v"]), "stunnel": version(["stunnel", "-version"], r"^stunnel "),
            "swtpm": version(["swtpm", "--version"]), "wrk": version(["wrk", "-v"])}


if __name__ == "__main__":
    sys.exit(main())
