"""deploy/k8s-secure, the secure overlay, checked without a cluster: rendered by ``kubectl
kustomize`` (offline), validated against Kubernetes' schemas, and held to the code — every workload
authenticates as its own principal over SASL_SSL with the CA mounted where its setting points, its
password comes from its own Secret key, the ACL Job grants each principal exactly the roles it
runs (``govbus acl`` parses every command), and the private-key rules of the base are kept."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml
from unit.test_deploy_support import ROOT, is_govbus_image, parse_command, settings_from_env, unknown_settings

from govbus._acl import parse_role, plan
from govbus._settings import GovbusSettings

OVERLAY = ROOT / "deploy" / "k8s-secure"
SINKS = ("stdout", "file", "otlp", "http", "syslog", "audit")
# Which principal each workload runs as, and the roles the ACL Job must grant it.
PRINCIPALS = {
    "Deployment/agent-kernel": "kernel",
    **{f"Deployment/govbus-sink-{s}": f"sink-{s}" for s in SINKS},
    "Deployment/govbus-console": "console",
    "Deployment/govbus-watch": "watch",
    "Job/govbus-topics": "govbus-admin",
}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("needs kubectl (kustomize is built in) to render the overlay")
    out = subprocess.run([kubectl, "kustomize", str(OVERLAY)], check=True, capture_output=True, text=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _get(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return obj


def _env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update({k: str(v) for k, v in _get(docs, "ConfigMap", source["configMapRef"]["name"])["data"].items()})
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        elif entry["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = "govbus-pod-0"  # the downward API: the pod's name
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = _get(docs, "Secret", ref["name"])["stringData"][ref["key"]]
    return env


def _main_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in workload["spec"]["template"]["spec"]["containers"] if is_govbus_image(c["image"])]


def test_builtin_kinds_match_the_kubernetes_schema(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        if not doc["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_each_workload_is_its_own_principal_over_sasl_ssl_with_the_ca_mounted(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: set[str] = set()
    for wid, principal in PRINCIPALS.items():
        kind, name = wid.split("/")
        workload = _get(rendered, kind, name)
        spec = workload["spec"]["template"]["spec"]
        (container,) = [c for c in spec["containers"] if c["name"] in ("kernel", "sink", "topics", "console", "watch")]
        env = _env(rendered, container)
        assert unknown_settings({k: v for k, v in env.items() if k.startswith("GOVBUS_")}) == []
        assert env["GOVBUS_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["GOVBUS_KAFKA__SASL_USERNAME"] == principal, wid
        (password,) = [e for e in container["env"] if e["name"] == "GOVBUS_KAFKA__SASL_PASSWORD"]
        ref = password["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("govbus-kafka-principals", principal), wid
        # The CA file lies on a read-only mount of Secret govbus-kafka-ca, key ca.crt.
        ca = env["GOVBUS_KAFKA__SSL_CA_LOCATION"]
        (mount,) = [m for m in container["volumeMounts"] if ca.startswith(m["mountPath"].rstrip("/") + "/")]
        assert mount.get("readOnly") is True
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == "govbus-kafka-ca"
        assert volume["secret"]["defaultMode"] == 0o444  # a certificate: public, unlike a key
        assert ca.rsplit("/", 1)[1] == "ca.crt"
        if kind == "Deployment" and name.startswith("govbus-sink-"):
            assert env["GOVBUS_SINK__DLQ__CREATE_TOPICS"] == "false", "a sink's role has no CREATE"
        settings: GovbusSettings = settings_from_env(
            {k: v for k, v in env.items() if k.startswith("GOVBUS_")}, monkeypatch
        )
        assert settings.kafka.librdkafka()["sasl.username"] == principal
        seen.add(principal)
    assert len(seen) == len(PRINCIPALS), "no two workloads share a principal"


def test_the_acl_job_grants_each_principal_exactly_its_roles(rendered: list[dict[str, Any]]) -> None:
    job = _get(rendered, "Job", "govbus-acls")
    spec = job["spec"]["template"]["spec"]
    granted: dict[str, list[str]] = {}
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        env = _env(rendered, container)
        assert env["GOVBUS_KAFKA__SASL_USERNAME"] == "govbus-admin", "ACLs are created as the admin"
        args = parse_command(["govbus", *container["args"]])
        assert args.command == "acl"
        assert args.acl_apply
        granted[args.principal] = [*args.role, *(f"--sink {s}" for s in args.sink)]
        for role in args.role:
            assert plan(parse_role(role), topic="t", sinks=args.sink)  # every role has a plan
    assert granted["User:kernel"][:2] == ["kernel", "gate"], "the kernel's readiness probe runs the gate"
    for sink in SINKS:
        assert granted[f"User:sink-{sink}"] == [f"sink:{sink}"]
    # The console shows every sink's dead letters; the watchdog's names are its settings' defaults.
    assert granted["User:console"] == ["console", *(f"--sink {s}" for s in SINKS)]
    assert granted["User:watch"] == ["watch"]
    # KEDA reads the lag of every sink: DESCRIBE on the topic and on each group (the gate role).
    assert granted["User:keda"] == ["gate", *(f"--sink {s}" for s in SINKS)]
    # The admin's own ACLs come from a super user, once (the Job's comment says how).
    assert "User:govbus-admin" not in granted
    # KEDA authenticates as User:keda, with the same CA.
    auth = _get(rendered, "TriggerAuthentication", "govbus-kafka")["spec"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["secretTargetRef"]}
    assert _get(rendered, "Secret", "govbus-kafka-principals")["stringData"][refs["username"][1]] == "keda"
    assert refs["password"] == ("govbus-kafka-principals", "keda")
    assert refs["ca"] == ("govbus-kafka-ca", "ca.crt")
    assert "configMapTargetRef" not in auth


def test_secrets_hold_only_placeholders(rendered: list[dict[str, Any]]) -> None:
    for name in ("govbus-kafka-principals", "govbus-kafka-ca"):
        data = _get(rendered, "Secret", name)["stringData"]
        assert all(v.startswith("CHANGE-ME") for k, v in data.items() if k != "keda-username"), name


def test_private_keys_still_installed_0600(rendered: list[dict[str, Any]]) -> None:
    """The key loader refuses group/other-readable keys: the overlay keeps the base's init containers."""
    for name in ("agent-kernel", "govbus-sink-audit"):
        spec = _get(rendered, "Deployment", name)["spec"]["template"]["spec"]
        (install,) = [c for c in spec["initContainers"] if c["name"] == "install-key"]
        assert install["command"][:3] == ["install", "-m", "0600"]


def test_gate_flags_of_the_acl_job_follow_the_gate_policy(rendered: list[dict[str, Any]]) -> None:
    """The kernel's probe and the console evaluate govbus-gate-policy: its min.insync.replicas check
    reads the topic's configs, and its required_classes list the sink groups; each needs its ACL."""
    from govbus.gate import parse_policy

    policy = parse_policy(yaml.safe_load(_get(rendered, "ConfigMap", "govbus-gate-policy")["data"]["policy.yaml"]))
    spec = _get(rendered, "Job", "govbus-acls")["spec"]["template"]["spec"]
    args = {
        a.principal: a
        for a in (parse_command(["govbus", *c["args"]]) for c in [*spec["initContainers"], *spec["containers"]])
    }
    kernel, console = args["User:kernel"], args["User:console"]
    assert kernel.require_min_isr is console.require_min_isr is policy.checks.topic.require_min_isr
    assert kernel.required_classes is bool(policy.required_classes)
    assert sorted(kernel.sink) == sorted(s.name for s in policy.checks.sinks)
    # The console's role lists every sink group itself (its lag page): no flag needed.
    assert ("GROUP", "govbus.sink.", "DESCRIBE") in {
        (e.resource, e.name, e.operation) for e in plan(parse_role("console"), topic="t")
    }
