#!/usr/bin/env python3
"""A schema and consistency check of atlsd's Kubernetes manifests (deploy/kubernetes), written
against the fields they use, because Debian 12 has no offline Kubernetes schema validator
(deploy/kubernetes/README.md, "Validation", says why).

  kubernetes_check.py --atlsd-config FILE DIR...      check each kustomization DIR
  kubernetes_check.py --render DIR                    print the objects DIR renders to
  kubernetes_check.py --compare-kubectl DIR...        render DIR with `kubectl kustomize` too,
                                                      require the same objects, and check those
                                                      (exit 77 when kubectl is absent)

Each DIR is resolved as kustomize does for the features used here (resources, components,
configMapGenerator without name hashes, strategic-merge patches), and every object is checked:

- the schema: known apiVersion/kind pairs, every field known (an unknown or misspelt field is an
  error, as with kubectl's strict field validation), required fields present, values of the
  right type and range, names of the right form;
- the pod: container names unique, atlsd a native sidecar (an init container with
  restartPolicy: Always), every probe's port a port of its container, every volumeMount a volume,
  every ConfigMap key that is mounted present, resource requests not above limits;
- atlsd's own config, read from the ConfigMap where the pod mounts it (and required to be
  byte-identical to FILE, which the end-to-end test runs `atlsd --check` on): the liveness and
  readiness probes reach /healthz and /readyz on its admin port, which listens on a routable
  address; every file it names is mounted next to it; NetworkPolicy port = Service targetPort =
  the attested listener's port, and nothing else is opened; the TPM device its tcti names
  reaches the container, by a device-plugin resource or by a privileged hostPath mount;
- hardening: runAsNonRoot, readOnlyRootFilesystem, capabilities drop ALL, seccomp
  RuntimeDefault, no allowPrivilegeEscalation (which Kubernetes refuses next to privileged).

Prints one line per problem and exits 1, or exits 0.
"""

import argparse
import copy
import difflib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    print("kubernetes_check.py needs python3-yaml (Debian 12: apt-get install python3-yaml)")
    sys.exit(1)


# --- YAML with duplicate keys refused (the API server's strict decoding refuses them) ---------


class StrictLoader(yaml.SafeLoader):
    pass


def _mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_documents(path):
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]


# --- the schema --------------------------------------------------------------------------------


class Str:
    def __init__(self, enum=None, pattern=None, what=None):
        self.enum, self.pattern, self.what = enum, pattern, what


class Int:
    def __init__(self, lo=None, hi=None):
        self.lo, self.hi = lo, hi


class Bool:
    pass


class IntOrStr:
    pass


class Quantity:
    pass


class List:
    def __init__(self, item, min_items=0):
        self.item, self.min_items = item, min_items


class Map:
    """A mapping with free keys (labels, data, requests) and values of one type."""

    def __init__(self, value, key_pattern=None, what=None):
        self.value, self.key_pattern, self.what = value, key_pattern, what


class Obj:
    def __init__(self, fields, required=(), one_of=None):
        self.fields, self.required, self.one_of = fields, set(required), one_of


DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN = r"(?=.{1,253}$)" + DNS_LABEL + r"(\." + DNS_LABEL + r")*"
# IANA_SVC_NAME: at most 15 characters, lowercase letters, digits and '-', at least one letter,
# no '-' at either end or twice in a row.
PORT_NAME = r"(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*"
QUANTITY = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
LABEL_KEY = r"(" + DNS_SUBDOMAIN + r"/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
CONFIG_KEY = r"[-._a-zA-Z0-9]{1,253}"
# An extended resource: a domain-qualified name (the device plugin's), or a standard one.
RESOURCE_NAME = r"(cpu|memory|ephemeral-storage|hugepages-[0-9]+[KMG]i|" + DNS_SUBDOMAIN + r"/[-a-z0-9_.]{1,63})"

name_str = Str(pattern=DNS_SUBDOMAIN, what="a DNS subdomain name (lowercase, digits, '-', '.')")
label_name = Str(pattern=DNS_LABEL, what="a DNS label (lowercase, digits, '-'; at most 63)")
port = Int(1, 65535)
labels = Map(Str(pattern=LABEL_VALUE, what="a label value"), LABEL_KEY, "a label key")

object_meta = Obj({
    "name": name_str,
    "namespace": label_name,
    "labels": labels,
    "annotations": Map(Str()),
}, required=["name"])

label_selector = Obj({
    "matchLabels": labels,
    "matchExpressions": List(Obj({
        "key": Str(pattern=LABEL_KEY, what="a label key"),
        "operator": Str(enum=["In", "NotIn", "Exists", "DoesNotExist"]),
        "values": List(Str()),
    }, required=["key", "operator"])),
})

key_to_path = Obj({"key": Str(pattern=CONFIG_KEY, what="a ConfigMap/Secret key"),
                   "path": Str(), "mode": Int(0, 0o777)}, required=["key", "path"])

capabilities = Obj({"add": List(Str()), "drop": List(Str())})
seccomp = Obj({"type": Str(enum=["RuntimeDefault", "Unconfined", "Localhost"]),
               "localhostProfile": Str()}, required=["type"])

container_security = Obj({
    "runAsUser": Int(0, 2**31 - 1),
    "runAsGroup": Int(0, 2**31 - 1),
    "runAsNonRoot": Bool(),
    "allowPrivilegeEscalation": Bool(),
    "readOnlyRootFilesystem": Bool(),
    "privileged": Bool(),
    "capabilities": capabilities,
    "seccompProfile": seccomp,
})

pod_security = Obj({
    "runAsUser": Int(0, 2**31 - 1),
    "runAsGroup": Int(0, 2**31 - 1),
    "runAsNonRoot": Bool(),
    "supplementalGroups": List(Int(0, 2**31 - 1)),
    "fsGroup": Int(0, 2**31 - 1),
    "seccompProfile": seccomp,
})

probe = Obj({
    "httpGet": Obj({
        "path": Str(),
        "port": IntOrStr(),
        "host": Str(),
        "scheme": Str(enum=["HTTP", "HTTPS"]),
        "httpHeaders": List(Obj({"name": Str(), "value": Str()}, required=["name", "value"])),
    }, required=["port"]),
    "tcpSocket": Obj({"port": IntOrStr(), "host": Str()}, required=["port"]),
    "exec": Obj({"command": List(Str(), 1)}),
    "grpc": Obj({"port": port, "service": Str()}, required=["port"]),
    "initialDelaySeconds": Int(0),
    "periodSeconds": Int(1),
    "timeoutSeconds": Int(1),
    "successThreshold": Int(1),
    "failureThreshold": Int(1),
    "terminationGracePeriodSeconds": Int(1),
}, one_of=["httpGet", "tcpSocket", "exec", "grpc"])

container = Obj({
    "name": label_name,
    "image": Str(),
    "imagePullPolicy": Str(enum=["Always", "IfNotPresent", "Never"]),
    "command": List(Str()),
    "args": List(Str()),
    "workingDir": Str(),
    "ports": List(Obj({
        "name": Str(pattern=PORT_NAME, what="an IANA service name (at most 15 characters)"),
        "containerPort": port,
        "protocol": Str(enum=["TCP", "UDP", "SCTP"]),
        "hostPort": port,
    }, required=["containerPort"])),
    "env": List(Obj({"name": Str(), "value": Str()}, required=["name"])),
    "resources": Obj({
        "requests": Map(Quantity(), RESOURCE_NAME, "a resource name"),
        "limits": Map(Quantity(), RESOURCE_NAME, "a resource name"),
    }),
    "volumeMounts": List(Obj({
        "name": label_name,
        "mountPath": Str(pattern=r"/.*", what="an absolute path"),
        "readOnly": Bool(),
        "subPath": Str(),
    }, required=["name", "mountPath"])),
    "livenessProbe": probe,
    "readinessProbe": probe,
    "startupProbe": probe,
    "securityContext": container_security,
    # Kubernetes 1.29 and later: on an init container, Always makes it a native sidecar.
    "restartPolicy": Str(enum=["Always"]),
    "terminationMessagePolicy": Str(enum=["File", "FallbackToLogsOnError"]),
}, required=["name", "image"])

volume = Obj({
    "name": label_name,
    "configMap": Obj({"name": name_str, "items": List(key_to_path), "optional": Bool(),
                      "defaultMode": Int(0, 0o777)}, required=["name"]),
    "secret": Obj({"secretName": name_str, "items": List(key_to_path), "optional": Bool(),
                   "defaultMode": Int(0, 0o777)}, required=["secretName"]),
    "projected": Obj({
        "sources": List(Obj({
            "configMap": Obj({"name": name_str, "items": List(key_to_path), "optional": Bool()},
                             required=["name"]),
            "secret": Obj({"name": name_str, "items": List(key_to_path), "optional": Bool()},
                          required=["name"]),
        }, one_of=["configMap", "secret"]), 1),
        "defaultMode": Int(0, 0o777),
    }, required=["sources"]),
    "emptyDir": Obj({"medium": Str(enum=["", "Memory"]), "sizeLimit": Quantity()}),
    "hostPath": Obj({"path": Str(pattern=r"/.*", what="an absolute path"),
                     "type": Str(enum=["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File",
                                       "Socket", "CharDevice", "BlockDevice"])},
                    required=["path"]),
}, required=["name"], one_of=["configMap", "secret", "projected", "emptyDir", "hostPath"])

pod_spec = Obj({
    "containers": List(container, 1),
    "initContainers": List(container),
    "volumes": List(volume),
    "securityContext": pod_security,
    "automountServiceAccountToken": Bool(),
    "serviceAccountName": name_str,
    "terminationGracePeriodSeconds": Int(0),
    "nodeSelector": Map(Str(pattern=LABEL_VALUE, what="a label value"), LABEL_KEY, "a label key"),
    "restartPolicy": Str(enum=["Always", "OnFailure", "Never"]),
}, required=["containers"])

deployment = Obj({
    "apiVersion": Str(), "kind": Str(),
    "metadata": object_meta,
    "spec": Obj({
        "replicas": Int(0),
        "selector": label_selector,
        "template": Obj({"metadata": Obj({"labels": labels, "annotations": Map(Str())}),
                         "spec": pod_spec}, required=["spec"]),
        "strategy": Obj({"type": Str(enum=["RollingUpdate", "Recreate"]),
                         "rollingUpdate": Obj({"maxSurge": IntOrStr(),
                                               "maxUnavailable": IntOrStr()})}),
        "revisionHistoryLimit": Int(0),
        "minReadySeconds": Int(0),
        "progressDeadlineSeconds": Int(1),
    }, required=["selector", "template"]),
}, required=["apiVersion", "kind", "metadata", "spec"])

service = Obj({
    "apiVersion": Str(), "kind": Str(),
    "metadata": object_meta,
    "spec": Obj({
        "type": Str(enum=["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]),
        "selector": Map(Str(pattern=LABEL_VALUE, what="a label value"), LABEL_KEY, "a label key"),
        "ports": List(Obj({
            "name": label_name,
            "protocol": Str(enum=["TCP", "UDP", "SCTP"]),
            "port": port,
            "targetPort": IntOrStr(),
            "nodePort": port,
            "appProtocol": Str(),
        }, required=["port"]), 1),
        "clusterIP": Str(),
    }, required=["ports"]),
}, required=["apiVersion", "kind", "metadata", "spec"])

config_map = Obj({
    "apiVersion": Str(), "kind": Str(),
    "metadata": object_meta,
    "data": Map(Str(), CONFIG_KEY, "a ConfigMap key"),
    "binaryData": Map(Str(), CONFIG_KEY, "a ConfigMap key"),
    "immutable": Bool(),
}, required=["apiVersion", "kind", "metadata"])

network_policy_peer = Obj({
    "podSelector": label_selector,
    "namespaceSelector": label_selector,
    "ipBlock": Obj({"cidr": Str(), "except": List(Str())}, required=["cidr"]),
})
network_policy_port = Obj({"protocol": Str(enum=["TCP", "UDP", "SCTP"]), "port": IntOrStr(),
                           "endPort": port})
network_policy = Obj({
    "apiVersion": Str(), "kind": Str(),
    "metadata": object_meta,
    "spec": Obj({
        "podSelector": label_selector,
        "policyTypes": List(Str(enum=["Ingress", "Egress"])),
        "ingress": List(Obj({"from": List(network_policy_peer),
                             "ports": List(network_policy_port)})),
        "egress": List(Obj({"to": List(network_policy_peer), "ports": List(network_policy_port)})),
    }, required=["podSelector"]),
}, required=["apiVersion", "kind", "metadata", "spec"])

KINDS = {
    ("apps/v1", "Deployment"): deployment,
    ("v1", "Service"): service,
    ("v1", "ConfigMap"): config_map,
    ("networking.k8s.io/v1", "NetworkPolicy"): network_policy,
}

kustomization_fields = {
    "apiVersion": Str(), "kind": Str(),
    "resources": List(Str()),
    "components": List(Str()),
    "configMapGenerator": List(Obj({
        "name": name_str,
        "files": List(Str()),
        "options": Obj({"disableNameSuffixHash": Bool()}),
    }, required=["name"])),
    "patches": List(Obj({
        "path": Str(),
        "patch": Str(),
        "target": Obj({"kind": Str(), "name": Str()}),
    }, one_of=["path", "patch"])),
}
KUSTOMIZATIONS = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): Obj(kustomization_fields,
                                                               required=["apiVersion", "kind"]),
    ("kustomize.config.k8s.io/v1alpha1", "Component"): Obj(kustomization_fields,
                                                           required=["apiVersion", "kind"]),
}


def type_name(value):
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "null"}.get(type(value), "a value")


def validate(value, schema, path, errors):
    def bad(message):
        errors.append(f"{path}: {message}")

    if isinstance(schema, Str):
        if not isinstance(value, str):
            return bad(f"expected a string, got {type_name(value)}")
        if schema.enum is not None and value not in schema.enum:
            return bad(f"{value!r} is not one of {', '.join(schema.enum)}")
        if schema.pattern is not None and not re.fullmatch(schema.pattern, value):
            return bad(f"{value!r} is not {schema.what}")
    elif isinstance(schema, Int):
        if not isinstance(value, int) or isinstance(value, bool):
            return bad(f"expected an integer, got {type_name(value)}")
        if (schema.lo is not None and value < schema.lo) or (schema.hi is not None and value > schema.hi):
            return bad(f"{value} is out of range [{schema.lo}, {schema.hi}]")
    elif isinstance(schema, Bool):
        if not isinstance(value, bool):
            return bad(f"expected true or false, got {type_name(value)}")
    elif isinstance(schema, IntOrStr):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return bad(f"expected an integer or a string, got {type_name(value)}")
    elif isinstance(schema, Quantity):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return bad(f"expected a quantity, got {type_name(value)}")
        if not re.fullmatch(QUANTITY, str(value)):
            return bad(f"{value!r} is not a quantity (e.g. 100m, 64Mi, 1)")
    elif isinstance(schema, List):
        if not isinstance(value, list):
            return bad(f"expected a list, got {type_name(value)}")
        if len(value) < schema.min_items:
            return bad(f"needs at least {schema.min_items} item(s)")
        for i, item in enumerate(value):
            validate(item, schema.item, f"{path}[{i}]", errors)
    elif isinstance(schema, Map):
        if not isinstance(value, dict):
            return bad(f"expected a mapping, got {type_name(value)}")
        for key, item in value.items():
            if not isinstance(key, str) or (schema.key_pattern and not re.fullmatch(schema.key_pattern, key)):
                bad(f"key {key!r} is not {schema.what}")
                continue
            validate(item, schema.value, f"{path}.{key}", errors)
    elif isinstance(schema, Obj):
        if not isinstance(value, dict):
            return bad(f"expected a mapping, got {type_name(value)}")
        for key, item in value.items():
            if key not in schema.fields:
                close = difflib.get_close_matches(str(key), schema.fields, 1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                bad(f"unknown field {key!r}{hint}")
                continue
            validate(item, schema.fields[key], f"{path}.{key}", errors)
        for key in sorted(schema.required):
            if key not in value:
                bad(f"missing required field {key!r}")
        if schema.one_of is not None:
            present = [k for k in schema.one_of if k in value]
            if len(present) != 1:
                bad(f"needs exactly one of {', '.join(schema.one_of)}; has "
                    f"{', '.join(present) or 'none'}")


# --- rendering: the kustomize subset these manifests use ----------------------------------------

# Strategic merge: the lists Kubernetes merges by a key (patchMergeKey); other lists are
# replaced. New elements go first, as kustomize puts them.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}


def strategic_merge(base, patch):
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif key in MERGE_KEYS and isinstance(value, list) and isinstance(out.get(key), list):
            merge_key = MERGE_KEYS[key]
            merged = [copy.deepcopy(item) for item in out[key]]
            added = []
            for item in value:
                index = next((i for i, old in enumerate(merged)
                              if isinstance(old, dict) and isinstance(item, dict)
                              and old.get(merge_key) == item.get(merge_key)), None)
                if index is None:
                    added.append(copy.deepcopy(item))
                else:
                    merged[index] = strategic_merge(merged[index], item)
            out[key] = added + merged
        elif key in out:
            out[key] = strategic_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Rendered:
    def __init__(self):
        self.objects = []  # (origin, object)
        self.errors = []


def render(directory, result=None, component=False, seen=None):
    """Resolves the kustomization in `directory` into result.objects."""
    result = result if result is not None else Rendered()
    seen = seen or set()
    directory = Path(directory)
    file = directory / "kustomization.yaml"
    where = str(file)
    if directory.resolve() in seen:
        result.errors.append(f"{where}: included twice (a cycle?)")
        return result
    seen = seen | {directory.resolve()}
    if not file.is_file():
        result.errors.append(f"{directory}: no kustomization.yaml")
        return result
    try:
        docs = load_documents(file)
    except yaml.YAMLError as e:
        result.errors.append(f"{where}: {e}")
        return result
    if len(docs) != 1 or not isinstance(docs[0], dict):
        result.errors.append(f"{where}: expected one mapping")
        return result
    k = docs[0]
    key = (k.get("apiVersion"), k.get("kind"))
    schema = KUSTOMIZATIONS.get(key)
    if schema is None:
        result.errors.append(f"{where}: unknown kustomization {key[0]}/{key[1]}")
        return result
    errors = []
    validate(k, schema, where, errors)
    result.errors += errors
    if errors:
        return result
    if (k["kind"] == "Component") != component:
        result.errors.append(f"{where}: a {k['kind']} where a "
                             f"{'Component' if component else 'Kustomization'} is expected")
        return result

    for entry in k.get("resources", []):
        path = directory / entry
        if path.is_dir():
            render(path, result, False, seen)
        elif path.is_file():
            try:
                for doc in load_documents(path):
                    result.objects.append((str(path), doc))
            except yaml.YAMLError as e:
                result.errors.append(f"{path}: {e}")
        else:
            result.errors.append(f"{where}: resources: {entry}: no such file or directory")
    for generator in k.get("configMapGenerator", []):
        if not generator.get("options", {}).get("disableNameSuffixHash", False):
            result.errors.append(f"{where}: configMapGenerator {generator['name']}: this check "
                                 f"does not compute kustomize's name hash; set "
                                 f"options.disableNameSuffixHash")
            continue
        data = {}
        for entry in generator.get("files", []):
            name, _, source = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
            path = directory / source
            if not path.is_file():
                result.errors.append(f"{where}: configMapGenerator {generator['name']}: "
                                     f"{source}: no such file")
                continue
            data[name] = path.read_text()
        result.objects.append((f"{where} configMapGenerator", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": generator["name"]}, "data": data}))
    for entry in k.get("components", []):
        path = directory / entry
        if not path.is_dir():
            result.errors.append(f"{where}: components: {entry}: no such directory")
            continue
        render(path, result, True, seen)
    for patch in k.get("patches", []):
        if "path" in patch:
            path = directory / patch["path"]
            if not path.is_file():
                result.errors.append(f"{where}: patches: {patch['path']}: no such file")
                continue
            docs = load_documents(path)
        else:
            docs = list(yaml.load_all(patch["patch"], Loader=StrictLoader))
        if len(docs) != 1 or not isinstance(docs[0], dict):
            result.errors.append(f"{where}: patches: expected one strategic-merge patch "
                                 f"(JSON 6902 patches are not supported by this check)")
            continue
        body = docs[0]
        target = patch.get("target") or {"kind": body.get("kind"),
                                         "name": body.get("metadata", {}).get("name")}
        matched = 0
        for i, (origin, obj) in enumerate(result.objects):
            if all(obj.get("kind") == v if f == "kind" else obj.get("metadata", {}).get("name") == v
                   for f, v in target.items()):
                patched = strategic_merge(obj, {f: v for f, v in body.items()
                                                if f not in ("apiVersion", "kind", "metadata")})
                result.objects[i] = (origin + f" + {patch.get('path', 'inline patch')}", patched)
                matched += 1
        if matched == 0:
            result.errors.append(f"{where}: patches: {patch.get('path', 'inline')}: matches no "
                                 f"object ({target})")
    return result


# --- checks across objects ---------------------------------------------------------------------


def parse_duration_s(text):
    m = re.fullmatch(r"([0-9]+)(ms|s|m|h)", str(text))
    if not m:
        return None
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_quantity(value):
    m = re.fullmatch(QUANTITY, str(value))
    if not m:
        return None
    text = str(value)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                "P": 1e15, "E": 1e18}
    for suffix, factor in sorted(suffixes.items(), key=lambda s: -len(s[0])):
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * factor
    return float(text)


def split_address(address):
    """host, port of an atlsd `host:port` / `[v6]:port`; None for unix: and systemd:."""
    text = str(address)
    if text.startswith(("unix:", "systemd:")):
        return None
    m = re.fullmatch(r"\[([^\]]*)\]:([0-9]+)", text) or re.fullmatch(r"([^:]+):([0-9]+)", text)
    return (m.group(1), int(m.group(2))) if m else None


def is_loopback(host):
    return host.startswith("127.") or host in ("localhost", "::1")


def selects(selector, labels):
    match = (selector or {}).get("matchLabels", {})
    return all(labels.get(k) == v for k, v in match.items())


class Checker:
    def __init__(self, rendered, atlsd_config_file):
        self.objects = rendered.objects
        self.errors = list(rendered.errors)
        self.atlsd_config_file = atlsd_config_file

    def error(self, where, message):
        self.errors.append(f"{where}: {message}")

    def of_kind(self, kind):
        return [(o, obj) for o, obj in self.objects if obj.get("kind") == kind]

    def run(self):
        seen = {}
        for origin, obj in self.objects:
            if not isinstance(obj, dict):
                self.error(origin, "expected a mapping")
                continue
            key = (obj.get("apiVersion"), obj.get("kind"))
            schema = KINDS.get(key)
            name = (obj.get("metadata") or {}).get("name")
            where = f"{origin}: {key[1]}/{name}"
            if schema is None:
                known = ", ".join(f"{a} {k}" for a, k in KINDS)
                self.error(where, f"unknown apiVersion/kind {key[0]} {key[1]} (known: {known})")
                continue
            if (key[1], name) in seen:
                self.error(where, f"a second {key[1]} named {name} (first in {seen[key[1], name]})")
            seen[key[1], name] = origin
            errors = []
            validate(obj, schema, key[1] + "/" + str(name), errors)
            self.errors += [f"{origin}: {e}" for e in errors]
        if self.errors:
            return self.errors  # the consistency checks assume a rendered, schema-valid set
        deployments = self.of_kind("Deployment")
        if len(deployments) != 1:
            self.error("manifests", f"{len(deployments)} Deployments; expected the one example")
            return self.errors
        self.check_deployment(*deployments[0])
        return self.errors

    def check_deployment(self, origin, d):
        where = f"{origin}: Deployment/{d['metadata']['name']}"
        template = d["spec"]["template"]
        pod_labels = (template.get("metadata") or {}).get("labels", {})
        spec = template["spec"]
        if not selects(d["spec"]["selector"], pod_labels) or not d["spec"]["selector"].get("matchLabels"):
            self.error(where, "spec.selector does not match spec.template.metadata.labels")
        init = spec.get("initContainers", [])
        regular = spec["containers"]
        names = [c["name"] for c in init + regular]
        for name in sorted({n for n in names if names.count(n) > 1}):
            self.error(where, f"container name {name!r} is used twice (names are unique across "
                              f"initContainers and containers)")
        for c in regular:
            if "restartPolicy" in c:
                self.error(where, f"containers[{c['name']}].restartPolicy: only init containers "
                                  f"take a restartPolicy (Always: a native sidecar)")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if len(volumes) != len(spec.get("volumes", [])):
            self.error(where, "two volumes with the same name")
        mounted = set()
        for c in init + regular:
            self.check_container(where, c, volumes, mounted)
        for name in volumes:
            if name not in mounted:
                self.error(where, f"volume {name!r} is mounted by no container")
        self.check_config_maps(where, volumes)

        atlsd = [c for c in init if c["name"] == "atlsd"]
        if not atlsd:
            if any(c["name"] == "atlsd" for c in regular):
                self.error(where, "atlsd is in containers: as a native sidecar it belongs in "
                                  "initContainers with restartPolicy: Always, which starts it "
                                  "before the workload")
            else:
                self.error(where, "no initContainers entry named atlsd")
            return
        atlsd = atlsd[0]
        cw = f"{where}: initContainers[atlsd]"
        if atlsd.get("restartPolicy") != "Always":
            self.error(cw, "restartPolicy must be Always: without it atlsd is a one-shot init "
                           "container, and the pod waits for it to exit before the workload "
                           "starts")
        config, config_dir = self.atlsd_config(cw, atlsd, spec, volumes)
        if config is None:
            return
        self.check_probes(cw, atlsd, config)
        self.check_exposure(where, d, atlsd, pod_labels, config)
        self.check_tpm(cw, atlsd, spec, volumes, config)
        self.check_config_files(cw, atlsd, volumes, config, config_dir)
        drain = parse_duration_s(config.get("drain_timeout", "30s"))
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if drain is not None and drain >= grace:
            self.error(where, f"terminationGracePeriodSeconds {grace} does not leave room for "
                              f"atlsd's drain_timeout {config.get('drain_timeout')}")
        for c in init + regular:
            self.check_hardening(f"{where}: {'initContainers' if c in init else 'containers'}"
                                 f"[{c['name']}]", c, spec.get("securityContext", {}))
        if not atlsd.get("resources", {}).get("requests", {}).keys() >= {"cpu", "memory"}:
            self.error(cw, "resources.requests needs cpu and memory (measured: "
                           "deploy/kubernetes/README.md)")
        if "memory" not in atlsd.get("resources", {}).get("limits", {}):
            self.error(cw, "resources.limits.memory is missing")

    def check_container(self, where, c, volumes, mounted):
        cw = f"{where}: container {c['name']}"
        ports = c.get("ports", [])
        port_names = [p.get("name") for p in ports if p.get("name")]
        numbers = [p["containerPort"] for p in ports]
        if len(set(port_names)) != len(port_names):
            self.error(cw, "two ports with the same name")
        if len(set(numbers)) != len(numbers):
            self.error(cw, "two ports with the same containerPort")
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            p = c.get(kind)
            if not p:
                continue
            action = p.get("httpGet") or p.get("tcpSocket")
            if action is None:
                continue
            target = action["port"]
            if isinstance(target, str) and target not in port_names:
                self.error(cw, f"{kind} port {target!r} is not a port name of this container "
                               f"({', '.join(port_names) or 'none'})")
            if isinstance(target, int) and target not in numbers:
                self.error(cw, f"{kind} port {target} is not a containerPort of this container")
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        if len(set(paths)) != len(paths):
            self.error(cw, "two volumeMounts at the same mountPath")
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                self.error(cw, f"volumeMount {m['name']!r} names no volume of the pod")
            mounted.add(m["name"])
        for resource, limit in c.get("resources", {}).get("limits", {}).items():
            request = c.get("resources", {}).get("requests", {}).get(resource)
            if request is not None and parse_quantity(request) > parse_quantity(limit):
                self.error(cw, f"resources.requests.{resource} {request} is above the limit "
                               f"{limit}")
            if "/" in resource and request is not None and parse_quantity(request) != parse_quantity(limit):
                self.error(cw, f"extended resource {resource}: requests must equal limits")

    def config_map(self, name):
        for _, obj in self.of_kind("ConfigMap"):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def check_config_maps(self, where, volumes):
        for name, v in volumes.items():
            sources = []
            if "configMap" in v:
                sources.append(v["configMap"])
            for s in v.get("projected", {}).get("sources", []):
                if "configMap" in s:
                    sources.append(s["configMap"])
            for s in sources:
                cm = self.config_map(s["name"])
                if cm is None:
                    if not s.get("optional", False):
                        self.error(where, f"volume {name!r}: ConfigMap {s['name']!r} is not among "
                                          f"the manifests")
                    continue
                for item in s.get("items", []):
                    if item["key"] not in cm.get("data", {}) and item["key"] not in cm.get("binaryData", {}):
                        self.error(where, f"volume {name!r}: ConfigMap {s['name']} has no key "
                                          f"{item['key']!r} (it has "
                                          f"{', '.join(cm.get('data', {})) or 'none'})")

    def files_of(self, volume):
        """{relative path: ("configMap"|"secret", name, key)} a volume delivers; for a source
        without items, every key of a ConfigMap of the manifests (a Secret's keys are unknown)."""
        files = {}
        sources = []
        if "configMap" in volume:
            sources.append(("configMap", volume["configMap"]["name"], volume["configMap"]))
        if "secret" in volume:
            sources.append(("secret", volume["secret"]["secretName"], volume["secret"]))
        for s in volume.get("projected", {}).get("sources", []):
            for kind in ("configMap", "secret"):
                if kind in s:
                    sources.append((kind, s[kind]["name"], s[kind]))
        for kind, name, source in sources:
            if "items" in source:
                for item in source["items"]:
                    files[item["path"]] = (kind, name, item["key"])
            elif kind == "configMap" and self.config_map(name):
                for key in self.config_map(name).get("data", {}):
                    files[key] = (kind, name, key)
        return files

    def delivered(self, container, volumes, path):
        """(kind, name, key) of the file at `path` in the container, from its mounts."""
        best = None
        for m in container.get("volumeMounts", []):
            mount = m["mountPath"].rstrip("/")
            if path.startswith(mount + "/") and (best is None or len(mount) > len(best[0])):
                best = (mount, m)
        if best is None or best[1]["name"] not in volumes:
            return None
        relative = path[len(best[0]) + 1:]
        return self.files_of(volumes[best[1]["name"]]).get(relative)

    def atlsd_config(self, cw, atlsd, spec, volumes):
        args = atlsd.get("args", [])
        if "--config" not in args or args.index("--config") + 1 >= len(args):
            self.error(cw, "args has no --config FILE")
            return None, None
        path = args[args.index("--config") + 1]
        source = self.delivered(atlsd, volumes, path)
        if source is None or source[0] != "configMap":
            self.error(cw, f"--config {path}: no ConfigMap key is mounted there")
            return None, None
        config_map = self.config_map(source[1]) or {}
        text = config_map.get("data", {}).get(source[2])
        if text is None:
            self.error(cw, f"--config {path}: ConfigMap {source[1]} has no key {source[2]!r}")
            return None, None
        if self.atlsd_config_file and Path(self.atlsd_config_file).read_text() != text:
            self.error(cw, f"--config {path}: the ConfigMap's {source[2]} differs from "
                           f"{self.atlsd_config_file}, the file the end-to-end test checks")
        try:
            config = yaml.load(text, Loader=StrictLoader)
        except yaml.YAMLError as e:
            self.error(cw, f"--config {path}: {e}")
            return None, None
        if not isinstance(config, dict) or not isinstance(config.get("listeners"), list):
            self.error(cw, f"--config {path}: not an atlsd config (no listeners)")
            return None, None
        return config, os.path.dirname(path)

    def check_probes(self, cw, atlsd, config):
        admin = config.get("admin")
        if not isinstance(admin, dict):
            self.error(cw, "atlsd's config has no admin listener for the probes")
            return
        address = split_address(admin.get("listen", "127.0.0.1:9901"))
        if address is None:
            self.error(cw, "admin.listen must be a TCP address for the kubelet's probes")
            return
        host, admin_port = address
        if is_loopback(host):
            self.error(cw, f"admin.listen {admin.get('listen', '127.0.0.1:9901')} is loopback: "
                           f"the kubelet probes the pod's IP")
        elif admin.get("allow_non_loopback") is not True:
            self.error(cw, "admin.listen is routable but admin.allow_non_loopback is not true: "
                           "atlsd refuses that config")
        ports = {p.get("name"): p["containerPort"] for p in atlsd.get("ports", [])}
        for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            p = atlsd.get(kind)
            if not p or "httpGet" not in p:
                self.error(cw, f"{kind}: expected httpGet {path} on the admin port")
                continue
            target = p["httpGet"]["port"]
            number = ports.get(target) if isinstance(target, str) else target
            if p["httpGet"].get("path") != path:
                self.error(cw, f"{kind}: path {p['httpGet'].get('path')!r}; atlsd answers the "
                               f"{kind.replace('Probe', '')} probe at {path}")
            if number != admin_port:
                self.error(cw, f"{kind}: port {target} ({number}) is not atlsd's admin port "
                               f"{admin_port}")

    def check_exposure(self, where, d, atlsd, pod_labels, config):
        """NetworkPolicy port = Service targetPort = the attested (routable inbound) listener's
        port, and nothing else opened."""
        attested = set()
        for i, listener in enumerate(config["listeners"]):
            address = split_address(listener.get("listen", ""))
            if listener.get("mode") == "inbound" and address and not is_loopback(address[0]):
                attested.add(address[1])
        if not attested:
            self.error(where, "atlsd's config has no inbound listener on a routable address")
            return
        container_ports = {}
        for c in d["spec"]["template"]["spec"].get("initContainers", []) + d["spec"]["template"]["spec"]["containers"]:
            for p in c.get("ports", []):
                container_ports.setdefault(p.get("name"), p["containerPort"])
        atlsd_ports = {p["containerPort"] for p in atlsd.get("ports", [])}
        missing = attested - atlsd_ports
        if missing:
            self.error(where, f"atlsd's listener port(s) {sorted(missing)} are not among its "
                              f"container ports")

        def resolve(target):
            return container_ports.get(target) if isinstance(target, str) else target

        services = [(o, s) for o, s in self.of_kind("Service") if selects(
            {"matchLabels": s["spec"].get("selector", {})}, pod_labels) and s["spec"].get("selector")]
        if not services:
            self.error(where, "no Service selects the pod")
        for origin, s in services:
            sw = f"{origin}: Service/{s['metadata']['name']}"
            targets = set()
            for p in s["spec"]["ports"]:
                target = resolve(p.get("targetPort", p["port"]))
                if target is None:
                    self.error(sw, f"targetPort {p.get('targetPort')!r} names no container port")
                    continue
                targets.add(target)
            if targets != attested:
                self.error(sw, f"target ports {sorted(targets)} are not atlsd's attested "
                               f"listener port(s) {sorted(attested)}")
        policies = [(o, n) for o, n in self.of_kind("NetworkPolicy")
                    if selects(n["spec"]["podSelector"], pod_labels)]
        if not policies:
            self.error(where, "no NetworkPolicy selects the pod: every port is open")
        for origin, n in policies:
            nw = f"{origin}: NetworkPolicy/{n['metadata']['name']}"
            if "Ingress" not in n["spec"].get("policyTypes", ["Ingress"]):
                self.error(nw, "policyTypes leaves out Ingress")
            opened = set()
            for i, rule in enumerate(n["spec"].get("ingress", [])):
                if not rule.get("ports"):
                    self.error(nw, f"ingress[{i}] has no ports: it opens every port")
                    continue
                for p in rule["ports"]:
                    if "endPort" in p:
                        self.error(nw, f"ingress[{i}] opens a port range")
                    number = resolve(p.get("port"))
                    if number is None:
                        self.error(nw, f"ingress[{i}] opens port {p.get('port')!r}, which is no "
                                       f"container port")
                    opened.add(number)
            if opened != attested:
                self.error(nw, f"ingress opens {sorted(x for x in opened if x)}; only atlsd's "
                               f"attested port(s) {sorted(attested)} should be open")

    def check_tpm(self, cw, atlsd, spec, volumes, config):
        tcti = (config.get("tpm") or {}).get("tcti", "device:/dev/tpmrm0")
        if not str(tcti).startswith("device:"):
            return
        device = str(tcti)[len("device:"):] or "/dev/tpmrm0"
        requested = [r for r in atlsd.get("resources", {}).get("limits", {})
                     if "/" in r and r.endswith("tpm")]
        host_mounts = [m for m in atlsd.get("volumeMounts", [])
                       if "hostPath" in volumes.get(m["name"], {}) and m["mountPath"] == device]
        privileged = atlsd.get("securityContext", {}).get("privileged", False)
        if requested and host_mounts:
            self.error(cw, "the TPM both from a device plugin and a hostPath: choose one")
        elif not requested and not host_mounts:
            self.error(cw, f"tcti {tcti}: {device} does not reach the container (request the "
                           f"device plugin's resource, e.g. squat.ai/tpm, or mount it from a "
                           f"hostPath)")
        elif host_mounts:
            host = volumes[host_mounts[0]["name"]]["hostPath"]
            if host.get("type") != "CharDevice" or host["path"] != device:
                self.error(cw, f"the hostPath for {device} must be path {device}, type CharDevice")
            if not privileged:
                self.error(cw, f"a hostPath {device} without privileged: true: the container's "
                               f"device cgroup refuses to open it (Operation not permitted)")
        elif requested and privileged:
            self.error(cw, "privileged is not needed with the device plugin")
        if not spec.get("securityContext", {}).get("supplementalGroups"):
            self.error(cw, f"no supplementalGroups: {device} is root:tss 0660 on the node, so "
                           f"atlsd needs the node's tss GID")

    def check_config_files(self, cw, atlsd, volumes, config, config_dir):
        """Every file atlsd's config names is mounted: relative paths next to the config."""
        names = []
        for i, listener in enumerate(config["listeners"]):
            tls = listener.get("tls") or {}
            for key in ("cert", "key", "ca"):
                if isinstance(tls.get(key), str) and not tls[key].startswith("tpm:"):
                    names.append((f"listeners[{i}].tls.{key}", tls[key]))
            if isinstance((tls.get("client_auth") or {}).get("ca"), str):
                names.append((f"listeners[{i}].tls.client_auth.ca", tls["client_auth"]["ca"]))
            attestation = listener.get("attestation") or {}
            peer = attestation.get("peer") or {}
            for j, f in enumerate(peer.get("passport_keys") or []):
                names.append((f"listeners[{i}].attestation.peer.passport_keys[{j}]", f))
            for j, ak in enumerate(((peer.get("local") or {}).get("trusted_aks")) or []):
                if isinstance(ak, dict) and "pem" in ak:
                    names.append((f"listeners[{i}].attestation.peer.local.trusted_aks[{j}]", ak["pem"]))
            for side in ("self", "peer"):
                veraison = (attestation.get(side) or {}).get("veraison") or {}
                for key in ("ca", "token", "ear_key"):
                    if key in veraison:
                        names.append((f"listeners[{i}].attestation.{side}.veraison.{key}", veraison[key]))
        for key, name in names:
            path = os.path.normpath(os.path.join(config_dir, name))
            if self.delivered(atlsd, volumes, path) is None:
                self.error(cw, f"atlsd's {key} is {name} ({path}), which no volume mounts "
                               f"there")

    def check_hardening(self, cw, c, pod):
        sc = c.get("securityContext", {})

        def effective(key):
            return sc.get(key, pod.get(key))

        if effective("runAsNonRoot") is not True:
            self.error(cw, "runAsNonRoot must be true")
        if effective("runAsUser") == 0:
            self.error(cw, "runAsUser 0 is root")
        if sc.get("readOnlyRootFilesystem") is not True:
            self.error(cw, "readOnlyRootFilesystem must be true")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            self.error(cw, "capabilities.drop must contain ALL")
        if caps.get("add"):
            self.error(cw, f"capabilities.add {caps['add']}: atlsd needs none")
        profile = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if profile not in ("RuntimeDefault", "Localhost"):
            self.error(cw, f"seccompProfile {profile or 'unset'}: use RuntimeDefault")
        if sc.get("privileged"):
            if sc.get("allowPrivilegeEscalation") is False:
                self.error(cw, "privileged: true with allowPrivilegeEscalation: false: the API "
                               "server refuses this combination")
        elif sc.get("allowPrivilegeEscalation") is not False:
            self.error(cw, "allowPrivilegeEscalation must be false")


# --- main ---------------------------------------------------------------------------------------


def sort_key(obj):
    return (obj.get("kind", ""), (obj.get("metadata") or {}).get("name", ""))


def compare_with_kubectl(directory, rendered):
    kubectl = shutil.which("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        return None, [f"{directory}: kubectl kustomize failed: {result.stderr.strip()}"]
    theirs = [d for d in yaml.load_all(result.stdout, Loader=StrictLoader) if d is not None]
    ours = [obj for _, obj in rendered.objects]
    a = yaml.safe_dump_all(sorted(ours, key=sort_key), sort_keys=True).splitlines()
    b = yaml.safe_dump_all(sorted(theirs, key=sort_key), sort_keys=True).splitlines()
    if a != b:
        diff = "\n".join(difflib.unified_diff(a, b, "this check's rendering", "kubectl kustomize",
                                              lineterm="", n=2))
        return theirs, [f"{directory}: kubectl kustomize renders other objects:\n{diff}"]
    return theirs, []


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--atlsd-config", type=Path)
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--compare-kubectl", action="store_true")
    args = parser.parse_args()

    if args.compare_kubectl and shutil.which("kubectl") is None:
        print("kubectl is not installed: nothing to compare with (skipped)")
        return 77
    errors = []
    for directory in args.dirs:
        rendered = render(directory)
        if args.render:
            print(yaml.safe_dump_all([obj for _, obj in rendered.objects], sort_keys=False), end="")
            errors += rendered.errors
            continue
        if args.compare_kubectl and not rendered.errors:
            theirs, problems = compare_with_kubectl(directory, rendered)
            errors += problems
            if theirs is not None:
                # What users apply: kubectl's rendering, through the same checks.
                rendered = Rendered()
                rendered.objects = [(f"{directory} (kubectl kustomize)", o) for o in theirs]
        found = Checker(rendered, args.atlsd_config).run()
        errors += found
        if not found:
            kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for _, o in rendered.objects)
            print(f"ok: {directory}: {', '.join(kinds)}")
    for e in errors:
        print(f"error: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
