#!/usr/bin/env python3
"""Checks the zenko-memcached-operator Helm chart without a cluster and without network.

Lints and renders the chart with Helm's own Go library (PyPI package helm-python-sdk, module
helm_python) for the default values, for charts/tests/values-all-on.yaml (every option on) and
for a few variants; validates every rendered object against the Kubernetes JSON schemas in
strict mode (kubernetes-validate, schemas shipped inside the package), the ZenkoMemcachedModule
objects against the CRD's openAPIV3Schema (jsonschema), and asserts what the chart promises:
least-privilege RBAC without wildcard, hardened security contexts, the operator's flags and
probes, NetworkPolicy ports. Values the schema must refuse are refused.

Ends with the line "N passed, M failed" and exits non-zero on any failure.
Needs: python3 -m pip install helm-python-sdk kubernetes-validate jsonschema pyyaml
"""

from __future__ import annotations

import copy
import json
import re
import sys
import traceback
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "zenko-memcached-operator"
CRD_FILE = CHART / "crds" / "zenkomemcachedmodules.zenko.io.yaml"
ALL_ON = ROOT / "charts" / "tests" / "values-all-on.yaml"
CLI_RS = ROOT / "operator" / "src" / "cli.rs"
LABELS_RS = ROOT / "operator" / "src" / "build" / "labels.rs"
STATEFULSET_RS = ROOT / "operator" / "src" / "build" / "statefulset.rs"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
DASHBOARD = CHART / "dashboards" / "zenko-memcached.json"
METRICS_SOURCES = {
    # prefix of the registry -> the file registering its metrics
    "zmm": ROOT / "sidecar" / "src" / "metrics.rs",
    "zenko_memcached_operator": ROOT / "operator" / "src" / "metrics.rs",
}

STACKS_WITH_CLOUDSERVER = [
    ROOT / "docker-stack-production.yml",
    ROOT / "operator" / "tests" / "fixtures" / "stack" / "module-s3.stack.yml",
]

# What Zenko CloudServer's official image reads at start, and so the only names the chart and the
# Swarm stack may give it: a misspelt one would be silently ignored. Each with where it is read
# (github.com/scality/cloudserver):
CLOUDSERVER_READS = {
    # lib/Config.js, _configureBackends(): the backends ("file": the remote DATA and METADATA
    # servers, dataClient and metadataClient of config.json)
    "S3DATA": {"mem", "file", "scality", "multiple"},
    "S3METADATA": None,
    "S3BACKEND": {"mem", "file", "scality", "cdmi"},
    "S3VAULT": None,
    # lib/Config.js, _configureBackends(): the in-memory account's keys
    "SCALITY_ACCESS_KEY_ID": None,
    "SCALITY_SECRET_ACCESS_KEY": None,
    # docker-entrypoint.sh: jq writes them into config.json (dataClient.host, metadataClient.host,
    # restEndpoints[ENDPOINT], log.logLevel, listenOn); no variable sets dataClient.port or
    # metadataClient.port, which stay config.json's 9991 and 9990
    "DATA_HOST": None,
    "METADATA_HOST": None,
    "ENDPOINT": None,
    "HOST_NAME": None,
    "LOG_LEVEL": {"info", "debug", "trace"},
    "LISTEN_ADDR": None,
}
# docker-entrypoint.sh sources this file (export lines) before starting the server.
CLOUDSERVER_SECRET_FILE = "/run/secrets/s3-credentials"
# config.json (dataClient.port, metadataClient.port): what CloudServer connects to.
CLOUDSERVER_PORTS = {"data": 9991, "metadata": 9990}

K8S_VERSION = "1.30.0"
RELEASE = "zmm"
NAMESPACE = "zenko-system"

# What the controller does (operator/src/controller.rs, leader.rs): the chart must grant all of
# it, and nothing beyond ALLOWED. Server-side apply needs create as well as patch.
REQUIRED = {
    ("zenko.io", "zenkomemcachedmodules"): {"get", "list", "watch"},
    ("zenko.io", "zenkomemcachedmodules/status"): {"get", "patch"},
    ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("batch", "cronjobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("events.k8s.io", "events"): {"create", "patch"},
    # placement changes (operator/src/controller.rs): their Jobs, the module's pods (readiness,
    # lost nodes), a Job's progress line, and whether a node is lost
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "delete"},
    ("", "pods/log"): {"get"},
    ("", "nodes"): {"get"},
}
LEASES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
ALLOWED = {
    **REQUIRED,
    **LEASES,
    # blockOwnerDeletion on the children's owner references, where
    # OwnerReferencesPermissionEnforcement is on.
    ("zenko.io", "zenkomemcachedmodules/finalizers"): {"update"},
}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, fn, *args) -> object:
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            self.failed += 1
            detail = [line[:300] for line in str(e).strip().splitlines()]
            print(f"FAIL {name}: {detail[0] if detail else type(e).__name__}")
            for line in detail[1:8]:
                print(f"     {line}")
            if not isinstance(e, (AssertionError, helm.HelmError, jsonschema.ValidationError)):
                traceback.print_exc(limit=3)
            return None
        self.passed += 1
        print(f"ok   {name}")
        return result


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# ---------------------------------------------------------------------------------------------
# Facts read from the operator's source, so that the chart cannot drift from it.


def operator_facts() -> dict:
    cli = CLI_RS.read_text()
    run_args = cli[cli.index("pub struct RunArgs") :]
    run_args = run_args[: run_args.index("\n}")]
    flags = {"--" + f.replace("_", "-") for f in re.findall(r"pub (\w+):", run_args)}
    listen = re.search(r'long, env = "ZMM_OPERATOR_LISTEN", default_value = "([^"]+)"', cli)
    expect(listen is not None, "cli.rs: no default of --listen found")
    labels = LABELS_RS.read_text()
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]+)";', labels))
    sts = STATEFULSET_RS.read_text()
    ports = {k: int(v) for k, v in re.findall(r"pub const (\w+_PORT): u16 = (\d+);", sts)}
    return {
        "flags": flags,
        "listen_port": int(listen.group(1).rsplit(":", 1)[1]),
        "pod_labels": {
            consts["NAME_KEY"]: consts["APP_NAME"],
            consts["COMPONENT_KEY"]: "storage",
        },
        "instance_key": consts["INSTANCE_KEY"],
        "component_key": consts["COMPONENT_KEY"],
        "ports": ports,
    }


# ---------------------------------------------------------------------------------------------
# The CRD's openAPIV3Schema as a JSON schema: nullable, int-or-string, and unknown fields refused
# (the API server prunes them silently, or refuses them with strict field validation; either way
# a typo in module.spec would be lost).


def crd_schema_to_jsonschema(node: dict, root: bool = False) -> dict:
    out: dict = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: crd_schema_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = crd_schema_to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [crd_schema_to_jsonschema(sub) for sub in value]
        elif key.startswith("x-kubernetes-") or key == "nullable":
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    if root:
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crd() -> dict:
    docs = [d for d in yaml.safe_load_all(CRD_FILE.read_text()) if d]
    expect(len(docs) == 1, f"{CRD_FILE.name}: {len(docs)} documents, expected 1")
    return docs[0]


def validate_module(obj: dict, crd: dict) -> None:
    spec = crd["spec"]
    expect(obj.get("kind") == spec["names"]["kind"], f"kind {obj.get('kind')}")
    versions = {f"{spec['group']}/{v['name']}": v for v in spec["versions"] if v.get("served")}
    expect(obj.get("apiVersion") in versions, f"apiVersion {obj.get('apiVersion')} not served")
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    expect(
        re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name)
        is not None
        and len(name) <= 253,
        f"metadata.name {name!r} is not a DNS subdomain",
    )
    schema = versions[obj["apiVersion"]]["schema"]["openAPIV3Schema"]
    jsonschema.Draft7Validator(crd_schema_to_jsonschema(schema, root=True)).validate(obj)


# ---------------------------------------------------------------------------------------------
# Rendering.


def lint(values: dict) -> None:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{K8S_VERSION}")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [{"error": e} for e in report.get("errors", []) or []]
    expect(not problems, "; ".join(f"{m.get('path', '')}: {m['error']}" for m in problems))


def render(values: dict) -> tuple[list[dict], str]:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                expect(isinstance(doc, dict) and "kind" in doc, f"{path}: not an object")
                objects.append(doc)
    return objects, notes


def refused(values: dict) -> None:
    try:
        render(values)
    except helm.HelmError:
        return
    raise AssertionError(f"values accepted: {values}")


def kind_name(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def validate_k8s(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def validate_service_monitor(obj: dict) -> None:
    # monitoring.coreos.com is not in the Kubernetes schemas: check the fields the chart sets.
    expect(obj["apiVersion"] == "monitoring.coreos.com/v1", obj["apiVersion"])
    spec = obj["spec"]
    expect(set(spec) <= {"selector", "namespaceSelector", "endpoints"}, f"fields {set(spec)}")
    for ep in spec["endpoints"]:
        expect(
            set(ep) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}, f"fields {set(ep)}"
        )
        for key in ("interval", "scrapeTimeout"):
            if key in ep:
                expect(re.fullmatch(r"([0-9]+(ms|s|m|h))+", ep[key]) is not None, ep[key])


# ---------------------------------------------------------------------------------------------
# Assertions on the rendered objects.


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    expect(len(found) == 1, f"{len(found)} {kind}, expected 1")
    return found[0]


def args_of(container: dict) -> dict:
    args = container["args"]
    expect(args[0] == "run", f"first argument {args[0]!r}, expected run")
    rest = args[1:]
    expect(len(rest) % 2 == 0, f"flags not in --flag value pairs: {rest}")
    pairs = dict(zip(rest[::2], rest[1::2]))
    return pairs


def check_rbac(objects: list[dict], leader: bool, watch_ns: str, facts: dict) -> None:
    roles = by_kind(objects, "Role") + by_kind(objects, "ClusterRole")
    granted: dict = {}
    for role in roles:
        for rule in role.get("rules", []):
            expect("nonResourceURLs" not in rule, f"{kind_name(role)}: nonResourceURLs")
            for field in ("verbs", "resources", "apiGroups", "resourceNames"):
                for item in rule.get(field, []):
                    expect("*" not in item, f"{kind_name(role)}: wildcard {item!r} in {field}")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    required = dict(REQUIRED)
    if leader:
        required.update(LEASES)
    for key, verbs in required.items():
        expect(verbs <= granted.get(key, set()), f"{key}: missing {verbs - granted.get(key, set())}")
    for key, verbs in granted.items():
        expect(
            verbs <= ALLOWED.get(key, set()), f"{key}: more than needed {verbs - ALLOWED.get(key, set())}"
        )
    expect(
        leader == any(k[1] == "leases" for k in granted), "Lease rights iff leader election is on"
    )
    main = [r for r in roles if any(ru["resources"] == ["statefulsets"] for ru in r["rules"])]
    expect(len(main) == 1, "one role for the controller")
    if watch_ns:
        expect(main[0]["kind"] == "Role", "watchNamespace set: a Role, not a ClusterRole")
        expect(main[0]["metadata"]["namespace"] == watch_ns, "Role in the watched namespace")
    else:
        expect(main[0]["kind"] == "ClusterRole", "all namespaces: a ClusterRole")
    sa = one(objects, "ServiceAccount")
    bindings = by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding")
    expect(len(bindings) == len(roles), f"{len(bindings)} bindings for {len(roles)} roles")
    names = {(r["kind"], r["metadata"]["name"], r["metadata"].get("namespace")) for r in roles}
    for b in bindings:
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        expect((ref["kind"], ref["name"], ns) in names, f"{kind_name(b)}: roleRef {ref} not rendered")
        expect(
            b["subjects"]
            == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}],
            f"{kind_name(b)}: subjects {b['subjects']}",
        )


def is_cloudserver(obj: dict) -> bool:
    labels = obj["spec"].get("selector", {}).get("matchLabels") or obj["spec"].get("podSelector", {}).get("matchLabels") or {}
    return labels.get("app.kubernetes.io/name") == "cloudserver"


def check_security(objects: list[dict]) -> None:
    """Every pod hardened; CloudServer alone runs as its image's user on a writable root
    filesystem (its entrypoint rewrites config.json in place), with everything else the same."""
    pods = [(kind_name(o), o["spec"]["template"]["spec"], is_cloudserver(o))
            for o in by_kind(objects, "Deployment")]
    expect(pods, "no Deployment")
    for name, pod, image_user in pods:
        psc = pod.get("securityContext") or {}
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            expect(not pod.get(host), f"{name}: {host}")
        expect(
            not any("hostPath" in v for v in pod.get("volumes", [])), f"{name}: hostPath volume"
        )
        expect(
            (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
            f"{name}: seccompProfile RuntimeDefault",
        )
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c.get("securityContext") or {}
            where = f"{name} container {c['name']}"
            if not image_user:
                non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
                expect(non_root is True, f"{where}: runAsNonRoot")
                expect(sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, f"{where}: runAsUser 0")
                expect(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
            else:
                expect(pod.get("automountServiceAccountToken") is False,
                       f"{where}: no ServiceAccount token")
            expect(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation")
            expect(sc.get("privileged") is not True, f"{where}: privileged")
            caps = sc.get("capabilities") or {}
            expect("ALL" in (caps.get("drop") or []), f"{where}: capabilities.drop ALL")
            expect(not caps.get("add"), f"{where}: capabilities.add {caps.get('add')}")


def operator_deployment(objects: list[dict]) -> dict:
    (dep,) = [d for d in by_kind(objects, "Deployment") if not is_cloudserver(d)]
    return dep


def operator_services(objects: list[dict]) -> list[dict]:
    return [s for s in by_kind(objects, "Service")
            if s["spec"]["selector"].get("app.kubernetes.io/name") != "cloudserver"]


def check_deployment(objects: list[dict], values: dict, leader: bool, facts: dict) -> None:
    dep = operator_deployment(objects)
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    args = args_of(container)
    expect(set(args) <= facts["flags"], f"flags unknown to cli.rs: {set(args) - facts['flags']}")
    expect(args["--leader-election"] == str(leader).lower(), f"--leader-election {args}")
    expect(args["--lease-name"] == values["leaderElection"]["leaseName"], "--lease-name")
    expect(args["--log-format"] == values["logFormat"], "--log-format")
    watch = values["watchNamespace"]
    expect(args.get("--namespace") == (watch or None), f"--namespace {args.get('--namespace')}")
    port = values["metrics"]["port"]
    expect(args["--listen"] == f"0.0.0.0:{port}", f"--listen {args['--listen']}")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expect(ports == {"metrics": port}, f"ports {ports}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        expect(get["path"] == path and get["port"] == "metrics", f"{probe} {get}")
    env = {e["name"]: e for e in container["env"]}
    for var, field in (("POD_NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name")):
        expect(env[var]["valueFrom"]["fieldRef"]["fieldPath"] == field, f"{var} from downward API")
    expect(spec["replicas"] == values["replicaCount"], "replicas")
    expect(
        spec["strategy"]["type"] == ("RollingUpdate" if leader else "Recreate"),
        f"strategy {spec['strategy']['type']} with leader election {leader}",
    )
    image = values["image"]
    want = (
        f"{image['repository']}@{image['digest']}"
        if image["digest"]
        else f"{image['repository']}:{image['tag'] or '0.1.0'}"
    )
    expect(container["image"] == want, f"image {container['image']}, expected {want}")
    expect(container["imagePullPolicy"] == image["pullPolicy"], "imagePullPolicy")
    labels = spec["template"]["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    expect(selector.items() <= labels.items(), "selector matches the pod labels")
    sa = one(objects, "ServiceAccount")["metadata"]["name"]
    expect(pod["serviceAccountName"] == sa, "serviceAccountName")
    expect(pod.get("automountServiceAccountToken") is True, "the operator needs its token")
    for svc in operator_services(objects):
        expect(svc["spec"]["selector"].items() <= labels.items(), f"{kind_name(svc)} selector")
        expect([p["targetPort"] for p in svc["spec"]["ports"]] == ["metrics"], "targetPort")
    for sm in by_kind(objects, "ServiceMonitor"):
        (svc,) = operator_services(objects)
        expect(
            sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
            "ServiceMonitor selects the metrics Service",
        )
        expect(sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE], "its namespace")
        expect([e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"], "endpoint port")


def peer_of(value: dict) -> dict:
    peer = {"podSelector": value.get("podSelector") or {}}
    if value.get("namespaceSelector"):
        peer["namespaceSelector"] = value["namespaceSelector"]
    return peer


def check_network_policies(objects: list[dict], values: dict, facts: dict) -> None:
    policies = [p for p in by_kind(objects, "NetworkPolicy") if not is_cloudserver(p)]
    np = values["networkPolicy"]
    if not np["enabled"]:
        expect(not policies, "NetworkPolicy rendered while networkPolicy.enabled is false")
        return
    ports = facts["ports"]
    scraper = peer_of(np["metricsScraper"])
    cloudserver = peer_of(np["cloudServer"])
    for policy in policies:
        for rule in policy["spec"]["ingress"]:
            expect(rule.get("from"), f"{kind_name(policy)}: a rule admits every source")
            expect(rule.get("ports"), f"{kind_name(policy)}: a rule admits every port")
        expect(policy["spec"]["policyTypes"] == ["Ingress"], "policyTypes")
    dep = operator_deployment(objects)
    op = [p for p in policies if p["metadata"]["namespace"] == NAMESPACE
          and p["spec"]["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]]
    expect(len(op) == 1, "one policy for the operator pods")
    expect(
        op[0]["spec"]["ingress"]
        == [{"from": [scraper], "ports": [{"port": values["metrics"]["port"], "protocol": "TCP"}]}],
        f"operator policy ingress {op[0]['spec']['ingress']}",
    )
    modules = [p for p in policies if p is not op[0]]
    names = np["modules"] or [m["name"] for m in expected_modules(values)]
    expect(len(modules) == max(1, len(names)), f"{len(modules)} module policies for {names}")
    namespace = np["modulesNamespace"] or (
        (values["module"]["namespace"] or NAMESPACE) if values["module"]["enabled"] else NAMESPACE
    )
    for policy, name in zip(modules, names or [None]):
        want_pods = dict(facts["pod_labels"])
        # the module's placement-change Jobs (operator/src/build/job.rs) copy between memcached
        want_jobs = {**want_pods, facts["component_key"]: "placement"}
        if name:
            want_pods[facts["instance_key"]] = name
            want_jobs[facts["instance_key"]] = name
        pods = policy["spec"]["podSelector"]["matchLabels"]
        expect(pods == want_pods, f"{kind_name(policy)} selects {pods}, expected {want_pods}")
        expect(policy["metadata"]["namespace"] == namespace, f"{kind_name(policy)} namespace")
        admitted = {}
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                expect(port.get("protocol", "TCP") == "TCP", "TCP only")
                admitted.setdefault(port["port"], []).extend(rule["from"])
        # The chart's own CloudServer, when it deploys one, besides networkPolicy.cloudServer.
        servers_from = [cloudserver]
        if values["cloudserver"]["enabled"]:
            servers_from.append({"podSelector": {"matchLabels": cloudserver_selector(values)}})
        want = {
            ports["METADATA_PORT"]: servers_from,
            ports["DATA_PORT"]: servers_from,
            # The module's pods, its placement Jobs and its scheduled exports (spec.backup).
            ports["MEMCACHED_PORT"]: [
                {"podSelector": {"matchLabels": want_pods}},
                {"podSelector": {"matchLabels": want_jobs}},
                {"podSelector": {"matchLabels": {**want_pods, facts["component_key"]: "backup"}}},
            ],
            ports["ADMIN_PORT"]: [scraper],
        }
        expect(admitted == want, f"{kind_name(policy)} admits {admitted}, expected {want}")


def expected_modules(values: dict) -> list[dict]:
    """The modules the values ask for, as the chart must render them."""
    mod = values["module"]
    if not mod["enabled"]:
        return []
    if mod["layout"] == "pair":
        return [
            {"name": mod["data"]["name"], "spec": {**mod["data"]["spec"], "role": "Data"}},
            {"name": mod["metadata"]["name"],
             "spec": {**mod["metadata"]["spec"], "role": "Metadata"}},
        ]
    return [{"name": mod["name"], "spec": mod["spec"]}]


def check_module(objects: list[dict], values: dict, crd: dict) -> None:
    modules = by_kind(objects, "ZenkoMemcachedModule")
    mod = values["module"]
    wanted = expected_modules(values)
    expect(len(modules) == len(wanted), f"{len(modules)} modules rendered, expected {len(wanted)}")
    for obj, want in zip(modules, wanted):
        expect(obj["metadata"]["name"] == want["name"], f"module name {obj['metadata']['name']}")
        expect(obj["metadata"]["namespace"] == (mod["namespace"] or NAMESPACE), "module namespace")
        expect(obj["spec"] == want["spec"], f"{want['name']}: spec {obj['spec']}, expected {want['spec']}")
        keep = (obj["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"
        expect(keep == mod["keepOnUninstall"], "helm.sh/resource-policy: keep iff keepOnUninstall")


def check_notes(notes: dict, values: dict) -> None:
    """NOTES.txt gives CloudServer's dataClient and metadataClient: the data endpoint from the
    module serving data, the metadata endpoint from the one serving metadata."""
    expect(NAMESPACE in notes and "io.zenko.type=storage" in notes, notes[:200])
    modules = expected_modules(values)
    if not modules:
        expect("dataClient" in notes and "get zmm -A" in notes, "notes without a module")
        return
    ns = values["module"]["namespace"] or NAMESPACE
    data = next(m for m in modules if m["spec"].get("role", "Combined") != "Metadata")
    meta = next(m for m in modules if m["spec"].get("role", "Combined") != "Data")
    data_port = (data["spec"].get("services") or {}).get("dataPort", 9991)
    meta_port = (meta["spec"].get("services") or {}).get("metadataPort", 9990)
    for line in (
        f'"dataClient":     {{ "host": "{data["name"]}-data.{ns}.svc", "port": {data_port} }}',
        f'"metadataClient": {{ "host": "{meta["name"]}-metadata.{ns}.svc", "port": {meta_port} }}',
    ):
        expect(line in notes, f"NOTES.txt lacks {line}:\n{notes}")
    for m in modules:
        expect(f"get zmm {m['name']} -o jsonpath" in notes, f"NOTES.txt: no status line of {m['name']}")
    cs = values["cloudserver"]
    if cs["enabled"]:
        # The S3 endpoint, and how to read the keys.
        endpoint = cs["endpoint"] or f"{cs['name']}.{ns}.svc"
        secret = cs["credentials"]["existingSecret"] or f"{cs['name']}-credentials"
        for line in (f"http://{endpoint}:{cs['service']['port']}",
                     f"get secret {secret} -o jsonpath='{{.data.accessKeyId}}' | base64 -d",
                     f"get secret {secret} -o jsonpath='{{.data.secretAccessKey}}' | base64 -d",
                     f"port-forward svc/{cs['name']}"):
            expect(line in notes, f"NOTES.txt lacks {line}:\n{notes}")


def cloudserver_selector(values: dict) -> dict:
    return {"app.kubernetes.io/name": "cloudserver",
            "app.kubernetes.io/instance": values["cloudserver"]["name"],
            "app.kubernetes.io/component": "s3"}


def check_cloudserver_env(env: dict, where: str) -> None:
    """Only names CloudServer's image reads, with values it accepts; the file backends on."""
    unknown = set(env) - set(CLOUDSERVER_READS)
    expect(not unknown, f"{where}: CloudServer reads no {sorted(unknown)}")
    for name, value in env.items():
        allowed = CLOUDSERVER_READS[name]
        expect(allowed is None or value in allowed, f"{where}: {name}={value!r} not in {allowed}")
    expect(env.get("S3DATA") == "file" and env.get("S3METADATA") == "file",
           f"{where}: S3DATA and S3METADATA must be file")
    for name in ("DATA_HOST", "METADATA_HOST", "ENDPOINT"):
        expect(env.get(name), f"{where}: {name} unset")


def check_cloudserver(objects: list[dict], values: dict) -> None:
    cs = values["cloudserver"]
    mine = [o for o in objects if o["kind"] in ("Deployment", "Service", "NetworkPolicy")
            and o["metadata"]["name"] == cs["name"]]
    if not cs["enabled"]:
        expect(not mine, "CloudServer rendered while cloudserver.enabled is false")
        return
    ns = values["module"]["namespace"] or NAMESPACE
    dep = next(o for o in mine if o["kind"] == "Deployment")
    expect(dep["metadata"]["namespace"] == ns, "CloudServer lives next to the modules")
    expect(dep["spec"]["replicas"] == cs["replicas"], "replicas")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    expect(c["image"] == f"{cs['image']['repository']}:{cs['image']['tag']}", c["image"])
    env = {e["name"]: e.get("value") for e in c["env"]}
    check_cloudserver_env({k: v for k, v in env.items() if v is not None}, kind_name(dep))
    # The hosts are the Services of the modules serving data and metadata, on config.json's ports.
    modules = expected_modules(values)
    data = next(m for m in modules if m["spec"].get("role", "Combined") != "Metadata")
    meta = next(m for m in modules if m["spec"].get("role", "Combined") != "Data")
    expect(env["DATA_HOST"] == f"{data['name']}-data.{ns}.svc", f"DATA_HOST {env['DATA_HOST']}")
    expect(env["METADATA_HOST"] == f"{meta['name']}-metadata.{ns}.svc",
           f"METADATA_HOST {env['METADATA_HOST']}")
    expect(env["ENDPOINT"] == (cs["endpoint"] or f"{cs['name']}.{ns}.svc"), "ENDPOINT")
    secret = cs["credentials"]["existingSecret"] or f"{cs['name']}-credentials"
    for e in c["env"]:
        if e["name"].startswith("SCALITY_"):
            ref = e["valueFrom"]["secretKeyRef"]
            expect(ref["name"] == secret, f"{e['name']} from {ref}")
    secrets = [o for o in by_kind(objects, "Secret") if o["metadata"]["name"] == secret]
    expect(len(secrets) == (0 if cs["credentials"]["existingSecret"] else 1), "the generated Secret")
    for sec in secrets:
        expect(set(sec["data"]) == {"accessKeyId", "secretAccessKey"}, f"Secret keys {set(sec['data'])}")
        expect(sec["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", "Secret kept")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = " ".join(c[probe]["exec"]["command"])
        expect("127.0.0.1:8000/_/healthcheck" in command, f"{probe}: {command}")
    expect(c["resources"] == cs["resources"], "resources")
    expect([p["containerPort"] for p in c["ports"]] == [8000], "port 8000")
    svc = next(o for o in mine if o["kind"] == "Service")
    expect(svc["spec"]["selector"] == cloudserver_selector(values), "Service selector")
    expect([p["port"] for p in svc["spec"]["ports"]] == [cs["service"]["port"]], "Service port")
    policies = [o for o in mine if o["kind"] == "NetworkPolicy"]
    if not cs["networkPolicy"]["enabled"]:
        expect(not policies, "CloudServer NetworkPolicy while disabled")
        return
    (policy,) = policies
    spec = policy["spec"]
    expect(spec["podSelector"]["matchLabels"] == cloudserver_selector(values), "policy selector")
    expect(spec["policyTypes"] == ["Ingress", "Egress"], "both directions")
    expect(spec["ingress"] == [{"ports": [{"port": 8000, "protocol": "TCP"}]}], f"ingress {spec['ingress']}")
    want = []
    for m in modules:
        role = m["spec"].get("role", "Combined")
        ports = []
        if role != "Metadata":
            ports.append({"port": CLOUDSERVER_PORTS["data"], "protocol": "TCP"})
        if role != "Data":
            ports.append({"port": CLOUDSERVER_PORTS["metadata"], "protocol": "TCP"})
        want.append({"to": [{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "zenko-memcached", "app.kubernetes.io/instance": m["name"],
            "app.kubernetes.io/component": "storage"}}}], "ports": ports})
    want.append({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]})
    expect(spec["egress"] == want, f"egress {spec['egress']}, expected {want}")


def check_stack_cloudserver(path: Path) -> None:
    """The Swarm stacks give CloudServer the same environment, and its keys in the file the
    entrypoint sources; its hosts are sidecar aliases on the stack's network."""
    stack = yaml.safe_load(path.read_text())
    s3 = stack["services"]["s3"]
    check_cloudserver_env(s3["environment"], path.name)
    aliases = {a for name, svc in stack["services"].items() if name != "s3"
               for net in svc["networks"].values() for a in (net or {}).get("aliases", [])}
    for name in ("DATA_HOST", "METADATA_HOST"):
        expect(s3["environment"][name] in aliases, f"{path.name}: {name} is no sidecar alias")
    targets = ["/run/secrets/" + sec["target"] for sec in s3["secrets"]]
    expect(targets == [CLOUDSERVER_SECRET_FILE], f"{path.name}: secrets {targets}")


def registered_metrics() -> set[str]:
    """Every metric name the sidecar and the operator expose, with the suffixes Prometheus adds."""
    names = set()
    for prefix, source in METRICS_SOURCES.items():
        for name in re.findall(r'register\(\s*"(\w+)"', source.read_text()):
            base = f"{prefix}_{name}"
            names.update({base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count",
                          f"{base}_info"})
    return names


def check_dashboard(objects: list[dict], values: dict) -> None:
    maps = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    board = values["grafanaDashboard"]
    if not board["enabled"]:
        expect(not maps, "dashboard rendered while grafanaDashboard.enabled is false")
        return
    (cm,) = maps
    labels = cm["metadata"]["labels"]
    expect(labels.items() >= board["labels"].items(), f"labels {labels}")
    expect(labels.get("grafana_dashboard") == board["labels"].get("grafana_dashboard"),
           "Grafana's sidecar label")
    expect(cm["metadata"]["namespace"] == (board["namespace"] or NAMESPACE), "dashboard namespace")
    dashboard = json.loads(cm["data"]["zenko-memcached.json"])
    expect(dashboard == json.loads(DASHBOARD.read_text()), "the ConfigMap holds the shipped dashboard")


def check_dashboard_queries() -> None:
    """Every metric a panel queries is one the sidecar or the operator registers, and every
    registered metric family is on the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    known = registered_metrics()
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used.update(re.findall(r"\b(zmm_\w+|zenko_memcached_operator_\w+)", target["expr"]))
    unknown = used - known
    expect(not unknown, f"the dashboard queries metrics nobody exposes: {sorted(unknown)}")
    families = {re.sub(r"_(total|bucket|sum|count|info)$", "", u) for u in used}
    for prefix, source in METRICS_SOURCES.items():
        for name in re.findall(r'register\(\s*"(\w+)"', source.read_text()):
            expect(f"{prefix}_{name}" in families, f"{prefix}_{name} is on no panel")


def check_namespaced(objects: list[dict]) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for obj in objects:
        ns = obj["metadata"].get("namespace")
        expect((obj["kind"] in cluster_scoped) == (ns is None), f"{kind_name(obj)} namespace {ns}")
        if obj["kind"] == "Service":
            expect(len(obj["metadata"]["name"]) <= 63, f"{kind_name(obj)}: name too long")


# ---------------------------------------------------------------------------------------------


def documented_installs() -> dict[str, dict]:
    """The values of every `helm install` and `helm upgrade` command of README.md and docs/,
    from their `--set` options, so that the commands the documents show render and pass."""
    import shlex

    found = {}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = doc.read_text()
        for block in re.findall(r"```(?:sh|bash|shell)\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if not line.lstrip().startswith("helm "):
                    continue
                words = shlex.split(line, comments=True)
                if words[:2] not in (["helm", "install"], ["helm", "upgrade"]):
                    continue
                overrides: dict = {}
                for i, word in enumerate(words):
                    if word == "--set":
                        path, _, raw = words[i + 1].partition("=")
                        value = yaml.safe_load(raw)
                        node = overrides
                        *parents, leaf = path.split(".")
                        for key in parents:
                            node = node.setdefault(key, {})
                        node[leaf] = value
                found[f"{doc.relative_to(ROOT)}: {' '.join(words[:3])} {overrides}"] = overrides
    return found


def leader_on(values: dict) -> bool:
    setting = values["leaderElection"]["enabled"]
    return values["replicaCount"] > 1 if setting == "auto" else bool(setting)


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def scenario(report: Report, label: str, overrides: dict, defaults: dict, crd: dict, facts) -> None:
    values = merge(defaults, overrides)
    report.check(f"[{label}] helm lint --strict", lint, overrides)
    rendered = report.check(f"[{label}] helm template", render, overrides)
    if rendered is None:
        return
    objects, notes = rendered
    report.check(f"[{label}] NOTES.txt: next steps and CloudServer's two endpoints", check_notes,
                 notes, values)
    for obj in objects:
        name = f"[{label}] {kind_name(obj)}"
        if obj["kind"] == "ZenkoMemcachedModule":
            report.check(f"{name} valid against the CRD schema", validate_module, obj, crd)
        elif obj["kind"] == "ServiceMonitor":
            report.check(
                f"{name} fields (monitoring.coreos.com: not in the Kubernetes schemas)",
                validate_service_monitor,
                obj,
            )
        else:
            report.check(f"{name} valid against Kubernetes {K8S_VERSION} (strict)", validate_k8s, obj)
    leader = leader_on(values)
    report.check(f"[{label}] RBAC least privilege, no wildcard", check_rbac, objects, leader,
                 values["watchNamespace"], facts)
    report.check(f"[{label}] security contexts", check_security, objects)
    report.check(f"[{label}] operator Deployment", check_deployment, objects, values, leader, facts)
    report.check(f"[{label}] NetworkPolicies", check_network_policies, objects, values, facts)
    report.check(f"[{label}] ZenkoMemcachedModule from values", check_module, objects, values, crd)
    report.check(f"[{label}] Grafana dashboard", check_dashboard, objects, values)
    report.check(f"[{label}] CloudServer", check_cloudserver, objects, values)
    report.check(f"[{label}] namespaces", check_namespaced, objects)
    kinds = sorted({o["kind"] for o in objects})
    print(f"     rendered: {', '.join(kinds)}")


def main() -> int:
    report = Report()
    print(f"== chart {CHART.relative_to(ROOT)} (Helm SDK {helm.helm_sdk_version()}, "
          f"kubernetes-validate {kubernetes_validate.__version__}, Kubernetes {K8S_VERSION})")
    facts = report.check("facts read from the operator's source", operator_facts)
    crd = report.check("CRD file parses", load_crd)
    if facts is None or crd is None:
        print(f"{report.passed} passed, {report.failed} failed")
        return 1
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    report.check(
        "operator default --listen port is the chart's metrics.port",
        lambda: expect(facts["listen_port"] == defaults["metrics"]["port"], str(facts["listen_port"])),
    )

    def chart_ships_the_crd() -> None:
        with helm.Chart.load(CHART) as chart:
            crds = chart.crds
            meta = chart.metadata
        expect([c["name"] for c in crds] == ["crds/" + CRD_FILE.name], "crds/ holds only the CRD")
        expect(crds[0]["data"] == CRD_FILE.read_text(), "the chart ships the CRD file unchanged")
        expect(meta["appVersion"] == "0.1.0", "appVersion")
        validate_k8s(load_crd())

    report.check(f"CRD {CRD_FILE.name} shipped and valid against Kubernetes {K8S_VERSION}",
                 chart_ships_the_crd)
    for example in EXAMPLES:
        for doc in yaml.safe_load_all(example.read_text()):
            if doc:
                report.check(f"examples/{example.name} valid against the CRD schema",
                             validate_module, doc, crd)

    def crd_schema_refuses(spec: dict) -> None:
        obj = {"apiVersion": "zenko.io/v1alpha1", "kind": "ZenkoMemcachedModule",
               "metadata": {"name": "bad"}, "spec": spec}
        try:
            validate_module(obj, crd)
        except jsonschema.ValidationError:
            return
        raise AssertionError(f"accepted {spec}")

    for bad in ({"replicas": 0}, {"replicaz": 1}, {"memcached": {"memoryLimitMiB": "big"}},
                {"placement": {"spread": "Sometimes"}}, {"role": "Storage"}, {"role": "data"},
                {"role": None}):
        report.check(f"CRD schema refuses module spec {bad}", crd_schema_refuses, bad)

    report.check("dashboard queries only metrics the code exposes, and all of them",
                 check_dashboard_queries)

    scenario(report, "defaults", {}, defaults, crd, facts)
    all_on = yaml.safe_load(ALL_ON.read_text())
    scenario(report, "all-on", all_on, defaults, crd, facts)
    variants = {
        "one replica, leader election forced": {"leaderElection": {"enabled": True}},
        "three replicas, leader election forced off": {
            "replicaCount": 3, "leaderElection": {"enabled": False}},
        "NetworkPolicy for every module of the namespace": {"networkPolicy": {"enabled": True}},
        "NetworkPolicy for listed modules": {
            "networkPolicy": {"enabled": True, "modulesNamespace": "zenko",
                              "modules": ["zenko-storage", "zenko-storage-ha"]}},
        "module in the release namespace, not kept": {
            "module": {"enabled": True, "keepOnUninstall": False}},
        "production pair, NetworkPolicy for both modules": {
            "networkPolicy": {"enabled": True},
            "module": {"enabled": True, "layout": "pair", "namespace": "zenko"}},
        "CloudServer on the combined module": {
            "module": {"enabled": True, "namespace": "zenko"}, "cloudserver": {"enabled": True}},
        "CloudServer on the production pair, NetworkPolicies, given keys": {
            "networkPolicy": {"enabled": True},
            "module": {"enabled": True, "layout": "pair", "namespace": "zenko"},
            "cloudserver": {"enabled": True, "name": "s3", "replicas": 3,
                            "endpoint": "s3.example.com",
                            "credentials": {"existingSecret": "my-s3-keys"},
                            "service": {"type": "LoadBalancer", "port": 80}}},
        "CloudServer without its NetworkPolicy": {
            "module": {"enabled": True}, "cloudserver": {"enabled": True,
                                                         "networkPolicy": {"enabled": False}}},
        "production pair on NodePorts, dashboard in the monitoring namespace": {
            "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
            "module": {"enabled": True, "layout": "pair", "keepOnUninstall": False,
                       "data": {"name": "blobs", "spec": {"replicas": 3, "services": {
                           "type": "NodePort", "dataPort": 30991}}},
                       "metadata": {"name": "catalog", "spec": {"replicas": 3, "services": {
                           "type": "NodePort", "metadataPort": 30990}}}}},
    }
    for label, overrides in variants.items():
        scenario(report, label, overrides, defaults, crd, facts)

    documented = documented_installs()
    report.check("the documents show helm commands", lambda: expect(len(documented) >= 4,
                                                                     str(list(documented))))
    for label, overrides in documented.items():
        scenario(report, label, overrides, defaults, crd, facts)

    for stack in STACKS_WITH_CLOUDSERVER:
        report.check(f"{stack.relative_to(ROOT)}: CloudServer's environment", check_stack_cloudserver,
                     stack)

    def typo_caught() -> None:
        try:
            check_cloudserver_env({"S3DATA": "file", "S3METADATA": "file", "DATA_HOST": "d",
                                   "METADATA_HOST": "m", "ENDPOINT": "e", "METADATA_HOTS": "m"}, "typo")
        except AssertionError as e:
            expect("METADATA_HOTS" in str(e), str(e))
            return
        raise AssertionError("a misspelt variable went through")

    report.check("CloudServer environment check catches a misspelt variable", typo_caught)

    for bad in ({"replicaCount": 0}, {"metrics": {"port": 80}}, {"image": {"pullPolicy": "Sometimes"}}, {"replicas": 2},
                {"leaderElection": {"enabled": "yes"}}, {"logFormat": "xml"},
                {"watchNamespace": "Not_A_Namespace"}, {"networkPolicy": {"enabled": "true"}},
                {"metrics": {"serviceMonitor": {"enabled": True}, "service": {"enabled": False}}},
                {"serviceAccount": {"create": False}},
                {"module": {"layout": "split"}},
                {"module": {"data": {"spec": {"role": "Metadata"}}}},
                {"grafanaDashboard": {"enabled": "yes"}},
                {"networkPolicy": {"enabled": True, "cloudServer": {"podSelector": None}}},
                {"networkPolicy": {"metricsScraper": {"podSelector": {"matchLabels": None}}}},
                {"cloudserver": {"enabled": True}},
                {"cloudserver": {"enabled": True, "logLevel": "verbose"}},
                {"module": {"enabled": True, "spec": {"services": {"dataPort": 30991}}},
                 "cloudserver": {"enabled": True}}):
        report.check(f"values refused: {bad}", refused, bad)

    # The checks above must be able to fail: weakened values have to be caught.
    def caught(check, overrides: dict) -> None:
        values = merge(defaults, overrides)
        objects, _ = render(overrides)
        try:
            check(objects, values)
        except AssertionError:
            return
        raise AssertionError(f"{check.__name__} let {overrides} through")

    weakened = [
        (lambda o, v: check_security(o), {"securityContext": {"readOnlyRootFilesystem": False}}),
        (lambda o, v: check_security(o), {"securityContext": {"allowPrivilegeEscalation": True}}),
        (lambda o, v: check_security(o), {"securityContext": {"capabilities": {"drop": []}}}),
        (lambda o, v: check_security(o),
         {"podSecurityContext": {"runAsNonRoot": False}, "securityContext": {"runAsNonRoot": False}}),
        (lambda o, v: check_security(o), {"securityContext": {"runAsUser": 0}}),
    ]
    for check, overrides in weakened:
        report.check(f"weakened values caught: {overrides}", caught, check, overrides)

    def wildcard_caught() -> None:
        objects, _ = render({})
        role = one(objects, "ClusterRole")
        role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]})
        try:
            check_rbac(objects, False, "", facts)
        except AssertionError as e:
            expect("wildcard" in str(e), str(e))
            return
        raise AssertionError("a wildcard verb went through")

    report.check("RBAC check catches a wildcard", wildcard_caught)

    # The NetworkPolicy check must refuse any policy that lets more than CloudServer reach 9990 or
    # 9991, or more than the module's own pods reach memcached.
    def policy_weakening_caught(mutate) -> None:
        overrides = {"networkPolicy": {"enabled": True}}
        objects, _ = render(overrides)
        (module_policy,) = [p for p in by_kind(objects, "NetworkPolicy")
                            if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
                            == "storage"]
        mutate(module_policy["spec"]["ingress"])
        try:
            check_network_policies(objects, merge(defaults, overrides), facts)
        except AssertionError:
            return
        raise AssertionError("a weakened NetworkPolicy went through")

    def rule_for(ingress: list, port: int) -> dict:
        return next(r for r in ingress if any(p["port"] == port for p in r["ports"]))

    everyone = {"namespaceSelector": {}, "podSelector": {}}
    weakenings = {
        "9991 open to every pod": lambda i: rule_for(i, 9991)["from"].append(everyone),
        "9990 open to any address": lambda i: i.append(
            {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 9990}]}),
        "memcached open to CloudServer": lambda i: rule_for(i, 11211)["from"].append(
            peer_of(defaults["networkPolicy"]["cloudServer"])),
        "memcached rule without from": lambda i: rule_for(i, 11211).pop("from"),
        "a rule without ports": lambda i: i.append({"from": [everyone]}),
    }
    for label, mutate in weakenings.items():
        report.check(f"NetworkPolicy check catches: {label}", policy_weakening_caught, mutate)

    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
