#!/usr/bin/env python3
"""The Kubernetes manifest check must reject broken manifests: each case below copies
deploy/kubernetes, breaks one thing in the copy, and requires kubernetes_check.py to exit 1 with
the message that names that fault. The unbroken copy must pass first, so that a case cannot pass
because the copy was broken to begin with.

  kubernetes_broken_test.py REPO
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TOP = "."
HOSTPATH = "overlays/hostpath"
BASE = "base"

# (what breaks, kustomization to check, file, text, replacement, expected message)
CASES = [
    ("the NetworkPolicy opens the admin port instead", TOP, "base/networkpolicy.yaml",
     "port: 8443", "port: 9901", "ingress opens [9901]; only atlsd's attested port(s) [8443]"),
    ("a NetworkPolicy rule without ports", TOP, "base/networkpolicy.yaml",
     "    - ports:\n        - protocol: TCP\n          port: 8443\n", "    - {}\n",
     "ingress[0] has no ports: it opens every port"),
    ("the Service targets the workload's plaintext port", TOP, "base/service.yaml",
     "targetPort: attested", "targetPort: 8080", "target ports [8080] are not atlsd's attested"),
    ("atlsd listens on another port than the pod declares", TOP, "base/atlsd.yaml",
     "listen: 0.0.0.0:8443", "listen: 0.0.0.0:8444",
     "atlsd's listener port(s) [8444] are not among its container ports"),
    ("the readiness probe goes to the attested port", TOP, "base/deployment.yaml",
     "path: /readyz\n              port: admin", "path: /readyz\n              port: attested",
     "readinessProbe: port attested (8443) is not atlsd's admin port 9901"),
    ("the liveness probe asks the readiness path", TOP, "base/deployment.yaml",
     "path: /healthz\n              port: admin\n            periodSeconds: 10",
     "path: /readyz\n              port: admin\n            periodSeconds: 10",
     "livenessProbe: path '/readyz'; atlsd answers the liveness probe at /healthz"),
    ("a probe names a port the container does not have", TOP, "base/deployment.yaml",
     "port: admin\n            periodSeconds: 1\n", "port: admn\n            periodSeconds: 1\n",
     "startupProbe port 'admn' is not a port name of this container"),
    ("atlsd is a plain init container, not a native sidecar", TOP, "base/deployment.yaml",
     "          restartPolicy: Always                     # a native sidecar, not a one-shot init\n",
     "", "restartPolicy must be Always"),
    ("a kustomization names a missing resource", TOP, "base/kustomization.yaml",
     "  - networkpolicy.yaml", "  - network-policy.yaml",
     "resources: network-policy.yaml: no such file or directory"),
    ("a component directory is missing", TOP, "kustomization.yaml",
     "components/tpm-device-plugin", "components/tpm-plugin",
     "components: components/tpm-plugin: no such directory"),
    ("a misspelt field", TOP, "base/deployment.yaml", "readinessProbe:", "readinesProbe:",
     "unknown field 'readinesProbe'; did you mean 'readinessProbe'?"),
    ("a field of the wrong type", TOP, "base/deployment.yaml", "replicas: 1", 'replicas: "1"',
     "spec.replicas: expected an integer, got a string"),
    ("a key given twice", TOP, "base/deployment.yaml", "replicas: 1", "replicas: 1\n  replicas: 2",
     "duplicate key 'replicas'"),
    ("a required field is missing", TOP, "base/service.yaml", "      port: 8443\n", "",
     "missing required field 'port'"),
    ("an apiVersion the API no longer serves", TOP, "base/deployment.yaml",
     "apiVersion: apps/v1", "apiVersion: extensions/v1beta1",
     "unknown apiVersion/kind extensions/v1beta1 Deployment"),
    ("a writable root filesystem", TOP, "base/deployment.yaml",
     "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false",
     "initContainers[atlsd]: readOnlyRootFilesystem must be true"),
    ("capabilities are not all dropped", TOP, "base/deployment.yaml",
     'drop: ["ALL"]', 'drop: ["NET_RAW"]', "capabilities.drop must contain ALL"),
    ("the pod runs without its seccomp profile", TOP, "base/deployment.yaml",
     "type: RuntimeDefault", "type: Unconfined",
     "containers[workload]: seccompProfile Unconfined: use RuntimeDefault"),
    ("runAsNonRoot is off", TOP, "base/deployment.yaml",
     "            runAsNonRoot: true\n            allowPrivilegeEscalation: false",
     "            runAsNonRoot: false\n            allowPrivilegeEscalation: false",
     "initContainers[atlsd]: runAsNonRoot must be true"),
    ("a mounted ConfigMap key does not exist", TOP, "base/deployment.yaml",
     "- key: atlsd.yaml", "- key: atlsd.yml", "ConfigMap atlsd-config has no key 'atlsd.yml'"),
    ("two containers with one name", TOP, "base/deployment.yaml",
     "- name: workload", "- name: atlsd", "container name 'atlsd' is used twice"),
    ("a file the config names is not mounted", TOP, "base/atlsd.yaml",
     "ca: clients-ca.crt", "ca: client-ca.crt",
     "listeners[0].tls.client_auth.ca is client-ca.crt (/etc/atlsd/client-ca.crt), which no "
     "volume mounts there"),
    ("the admin listener stays on loopback", TOP, "base/atlsd.yaml",
     "listen: 0.0.0.0:9901", "listen: 127.0.0.1:9901",
     "admin.listen 127.0.0.1:9901 is loopback: the kubelet probes the pod's IP"),
    ("a routable admin listener without allow_non_loopback", TOP, "base/atlsd.yaml",
     "  allow_non_loopback: true\n", "", "admin.allow_non_loopback is not true"),
    ("the drain outlasts the grace period", TOP, "base/deployment.yaml",
     "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 15",
     "terminationGracePeriodSeconds 15 does not leave room for atlsd's drain_timeout 20s"),
    ("a memory request above its limit", TOP, "base/deployment.yaml",
     "              memory: 32Mi\n            limits:\n              memory: 192Mi\n",
     "              memory: 256Mi\n            limits:\n              memory: 192Mi\n",
     "resources.requests.memory 256Mi is above the limit 192Mi"),
    ("the base alone: no TPM reaches atlsd", BASE, None, None, None,
     "tcti device:/dev/tpmrm0: /dev/tpmrm0 does not reach the container"),
    ("the device plugin without the tss group", TOP, "components/tpm-device-plugin/patch.yaml",
     "      securityContext:\n        supplementalGroups: [109]\n", "",
     "no supplementalGroups: /dev/tpmrm0 is root:tss 0660 on the node"),
    ("the device-plugin resource requested below its limit", TOP,
     "components/tpm-device-plugin/patch.yaml", 'squat.ai/tpm: "1"\n            limits',
     'squat.ai/tpm: "0"\n            limits', "extended resource squat.ai/tpm: requests must equal limits"),
    ("a hostPath TPM without privileged", HOSTPATH, "components/tpm-hostpath/patch.yaml",
     "            privileged: true\n            allowPrivilegeEscalation: true\n",
     "            allowPrivilegeEscalation: false\n",
     "a hostPath /dev/tpmrm0 without privileged: true: the container's device cgroup refuses"),
    ("privileged with allowPrivilegeEscalation: false", HOSTPATH,
     "components/tpm-hostpath/patch.yaml", "allowPrivilegeEscalation: true",
     "allowPrivilegeEscalation: false", "the API server refuses this combination"),
    ("the hostPath is not a character device", HOSTPATH, "components/tpm-hostpath/patch.yaml",
     "type: CharDevice", "type: File", "must be path /dev/tpmrm0, type CharDevice"),
    ("a patch that matches no object", HOSTPATH, "components/tpm-hostpath/kustomization.yaml",
     "name: web", "name: webapp", "matches no object"),
]


def run_check(check, copy, directory, config):
    return subprocess.run([sys.executable, str(check), "--atlsd-config", str(config),
                           str(copy / directory)], capture_output=True, text=True, timeout=60)


def main():
    repo = Path(sys.argv[1]).resolve()
    check = repo / "tests" / "deploy" / "kubernetes_check.py"
    failures = []
    with tempfile.TemporaryDirectory(prefix="atlsd-k8s-") as scratch:
        control = Path(scratch) / "control"
        shutil.copytree(repo / "deploy" / "kubernetes", control)
        for directory in (TOP, HOSTPATH):
            result = run_check(check, control, directory, control / "base" / "atlsd.yaml")
            if result.returncode != 0:
                print(f"FAIL: the unbroken copy ({directory}) is rejected:\n{result.stdout}")
                return 1
        # The ConfigMap must hold the file the end-to-end test checks with atlsd --check.
        other = Path(scratch) / "other.yaml"
        other.write_text((control / "base" / "atlsd.yaml").read_text() + "# changed\n")
        result = run_check(check, control, TOP, other)
        if result.returncode != 1 or "the file the end-to-end test checks" not in result.stdout:
            failures.append(f"a ConfigMap that differs from --atlsd-config passed:\n{result.stdout}")

        for i, (what, directory, file, text, replacement, expected) in enumerate(CASES):
            copy = Path(scratch) / f"case{i}"
            shutil.copytree(repo / "deploy" / "kubernetes", copy)
            if file is not None:
                target = copy / file
                content = target.read_text()
                if text not in content:
                    failures.append(f"{what}: {file} no longer contains {text!r}; update the case")
                    continue
                target.write_text(content.replace(text, replacement, 1))
            result = run_check(check, copy, directory, copy / "base" / "atlsd.yaml")
            # A crash is not a rejection.
            if result.returncode != 1 or expected not in result.stdout or result.stderr:
                failures.append(f"{what}: expected exit 1 and {expected!r}; got exit "
                                f"{result.returncode}:\n{result.stdout}{result.stderr}")
            else:
                print(f"ok: rejected: {what}")
    for f in failures:
        print(f"FAIL: {f}")
    print(f"kubernetes check: {len(CASES) + 1 - len(failures)} of {len(CASES) + 1} broken "
          f"copies rejected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
