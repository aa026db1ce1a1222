"""deploy/k8s, checked without a cluster.

Built-in kinds are validated against Kubernetes' own OpenAPI schemas (kubernetes-validate bundles
them per version, offline, strict: unknown fields are errors); KEDA's ScaledObject and
TriggerAuthentication against KEDA's CRD schemas and its kafka scaler's parameter list, vendored
from KEDA's Go module (tests/unit/schemas/keda/README.md). Then the manifests are held to the
code: every container's environment is real settings that load, every govbus command and exec
probe parses and builds what it would build — with the ConfigMaps and Secrets written to the
paths the pod mounts them at and the init containers' commands run — and KEDA scales each sink
on the consumer group the sink really joins. Not checked: an API server's admission (defaults,
webhooks, quotas), KEDA's controller, and the images themselves (see docs/deploy.md).
"""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from unit.test_deploy_support import (
    ROOT,
    assert_help,
    command_param,
    deployed_sinks,
    dry_run,
    help_words,
    image_entrypoint,
    image_env,
    image_user,
    is_govbus_image,
    parse_command,
    settings_from_env,
    subcommand,
    unknown_settings,
)

from govbus._settings import GovbusSettings
from govbus.gate import load_policy

K8S = ROOT / "deploy" / "k8s"
KEDA = Path(__file__).parent / "schemas" / "keda"
# The oldest Kubernetes these manifests are meant for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


@dataclass(frozen=True)
class Doc:
    file: str
    obj: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}:{self.obj['kind']}/{self.obj['metadata']['name']}"


def _load() -> list[Doc]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [Doc(path.name, d) for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


DOCS = _load()
KUSTOMIZATION: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


def objects(kind: str) -> list[dict[str, Any]]:
    return [d.obj for d in DOCS if d.obj["kind"] == kind]


def get(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: expected one, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return [d.obj for d in DOCS if d.obj["kind"] in ("Deployment", "Job")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, container) of every init and main container of a workload's pod."""
    spec = pod_spec(workload)
    for c in spec.get("initContainers", []):
        yield "init", c
    for c in spec["containers"]:
        yield "main", c


def all_containers() -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    return [(w, kind, c) for w in workloads() for kind, c in containers(w)]


def cid(workload: dict[str, Any], container: dict[str, Any]) -> str:
    return f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"


def argv_of(container: dict[str, Any]) -> list[str]:
    """What the container runs: command (else the image's ENTRYPOINT, for our image) plus args."""
    command = container.get("command") or (image_entrypoint() if is_govbus_image(container["image"]) else [])
    return [*command, *container.get("args", [])]


def secret_value(name: str, key: str) -> str:
    data: dict[str, str] = get("Secret", name)["stringData"]
    assert key in data, f"Secret {name} has no key {key}"
    return data[key]


def configmap_value(name: str, key: str) -> str:
    data: dict[str, str] = get("ConfigMap", name)["data"]
    assert key in data, f"ConfigMap {name} has no key {key}"
    return data[key]


POD_NAME = "govbus-sink-file-6d5f7c9b8-x2k4q"  # what a Deployment's pod is called


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment as the kubelet builds it: envFrom sources, then env entries."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = get("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            data = get("Secret", source["secretRef"]["name"])["stringData"]
        env.update({source.get("prefix", "") + k: str(v) for k, v in data.items()})
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secret_value(ref["name"], ref["key"])
        elif "configMapKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["configMapKeyRef"]
            env[entry["name"]] = configmap_value(ref["name"], ref["key"])
        elif entry["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = POD_NAME  # the downward API: the pod's name
        else:
            pytest.fail(f"{entry['name']}: only values, Secret and ConfigMap keys and the pod name are modelled here")
    return env


def govbus_env(container: dict[str, Any]) -> dict[str, str]:
    """The process's GOVBUS_* environment: our image's ENV first, then the container's."""
    base = image_env() if is_govbus_image(container["image"]) else {}
    return {k: v for k, v in {**base, **container_env(container)}.items() if k.startswith("GOVBUS_")}


def mount_of(
    spec: dict[str, Any], container: dict[str, Any], path: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The volume mount ``path`` lies on in ``container``, and its volume; None if on none."""
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in spec.get("volumes", []) if v["name"] == mount["name"])
    return mount, volume


class Pod:
    """A pod's volumes laid out under a temporary directory: ConfigMap and Secret keys written as
    the kubelet would write them, emptyDirs and claims as empty directories. Container paths map
    into it, so commands can run against the files the pod would see."""

    def __init__(self, workload: dict[str, Any], root: Path) -> None:
        self.spec = pod_spec(workload)
        self.root = root
        for volume in self.spec.get("volumes", []):
            where = root / volume["name"]
            where.mkdir(parents=True)
            if "configMap" in volume:
                self._write(where, volume["configMap"], get("ConfigMap", volume["configMap"]["name"])["data"])
            elif "secret" in volume:
                self._write(where, volume["secret"], get("Secret", volume["secret"]["secretName"])["stringData"])
            else:
                assert {"emptyDir", "persistentVolumeClaim"} & set(volume), volume

    @staticmethod
    def _write(where: Path, source: dict[str, Any], data: dict[str, str]) -> None:
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            assert item["key"] in data, f"{item['key']} is not in the source"
            (where / item["path"]).write_text(data[item["key"]], encoding="utf-8")

    def local(self, container: dict[str, Any], path: str) -> Path:
        found = mount_of(self.spec, container, path)
        assert found, f"{container['name']}: {path} is on no volume (the root filesystem is read-only)"
        mount, _ = found
        return self.root / mount["name"] / path[len(mount["mountPath"]) :].lstrip("/")

    def local_env(self, container: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
        return {k: str(self.local(container, v)) if v.startswith("/") else v for k, v in env.items()}

    def run_init_containers(self) -> None:
        """Runs each init container's command (plain `install`) against the laid-out volumes."""
        for c in self.spec.get("initContainers", []):
            argv = argv_of(c)
            assert argv[0] == "install", f"{c['name']}: only `install` is modelled for init containers"
            local = [str(self.local(c, a)) if a.startswith("/") else a for a in argv]
            subprocess.run(local, check=True, capture_output=True, timeout=30)


def _strict(schema: Any) -> Any:
    """A CRD's structural schema with unknown fields refused, as strict field validation does."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(schema["additionalProperties"])
    if "items" in schema:
        out["items"] = _strict(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [_strict(s) for s in schema[key]]
    return out


def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → schema, from the vendored KEDA CRDs."""
    out = {}
    for path in KEDA.glob("keda.sh_*.yaml"):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        for version in crd["spec"]["versions"]:
            if version["served"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                out[key] = _strict(version["schema"]["openAPIV3Schema"])
    return out


CRDS = _crds()
KAFKA_SCALER = {
    p["name"]: p
    for p in json.loads((KEDA / "scalers-schema.kafka.json").read_text(encoding="utf-8"))["scalers"][0]["parameters"]
}


def sink_deployments() -> dict[str, dict[str, Any]]:
    """sink name → the Deployment whose container runs `govbus sink run <name>`."""
    out = {}
    for w in objects("Deployment"):
        for kind, c in containers(w):
            argv = argv_of(c)
            if kind == "main" and is_govbus_image(c["image"]) and subcommand(argv) == ("sink", "run"):
                out[argv[3]] = w
    return out


def sink_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(deployment)["containers"]
    return container


def topic_partitions() -> int:
    (job,) = objects("Job")
    argv = argv_of(pod_spec(job)["containers"][0])
    assert subcommand(argv) == ("topics", "create")
    return int(argv[argv.index("--partitions") + 1])


# ---- the files ------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(KUSTOMIZATION["resources"]) == files
    (namespace,) = objects("Namespace")
    assert KUSTOMIZATION["namespace"] == namespace["metadata"]["name"]
    repos = {c["image"].rsplit(":", 1)[0] for _, _, c in all_containers() if is_govbus_image(c["image"])}
    assert {i["name"] for i in KUSTOMIZATION["images"]} == repos


def test_every_keda_object_has_its_crd_here() -> None:
    # Built-in kinds without a schema make kubernetes-validate raise (SchemaNotFoundError).
    for doc in DOCS:
        if doc.obj["apiVersion"].startswith("keda.sh/"):
            assert (doc.obj["apiVersion"], doc.obj["kind"]) in CRDS, doc.id


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", [d for d in DOCS if not d.obj["apiVersion"].startswith("keda.sh/")], ids=lambda d: d.id)
def test_builtin_kinds_match_the_kubernetes_schema(doc: Doc, version: str) -> None:
    kubernetes_validate.validate(doc.obj, version, strict=True)


@pytest.mark.parametrize("doc", [d for d in DOCS if d.obj["apiVersion"].startswith("keda.sh/")], ids=lambda d: d.id)
def test_keda_objects_match_the_crd_schema(doc: Doc) -> None:
    schema = CRDS[(doc.obj["apiVersion"], doc.obj["kind"])]
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(doc.obj)
    ]
    assert errors == []


def test_the_crd_check_refuses_an_unknown_field() -> None:
    # The CRD alone would accept a misspelt field; _strict makes it an error, as the API server does.
    so = json.loads(json.dumps(objects("ScaledObject")[0]))
    so["spec"]["maxReplicaCont"] = 3
    schema = CRDS[(so["apiVersion"], so["kind"])]
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(so))


def test_references_resolve() -> None:
    for workload in workloads():
        spec = pod_spec(workload)
        get("ServiceAccount", spec["serviceAccountName"])
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                get("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        for _, c in containers(workload):
            container_env(c)  # every ConfigMap and Secret key it names exists
            names = {v["name"] for v in spec.get("volumes", [])}
            assert {m["name"] for m in c.get("volumeMounts", [])} <= names, cid(workload, c)


def test_secret_holds_only_placeholders_and_each_is_used() -> None:
    (secret,) = objects("Secret")
    assert all(v.startswith("CHANGE-ME") for v in secret["stringData"].values()), "never a real value here"
    text = "\n".join(p.read_text(encoding="utf-8") for p in K8S.glob("*.yaml") if p.name != "secret.yaml")
    unused = [k for k in secret["stringData"] if f"key: {k}" not in text]
    assert unused == []


# ---- pods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: f"{w['kind']}/{w['metadata']['name']}")
def test_pods_meet_the_restricted_pod_security_standard(workload: dict[str, Any]) -> None:
    (namespace,) = objects("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    spec = pod_spec(workload)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    allowed = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected", "downwardAPI"}
    for volume in spec.get("volumes", []):
        assert set(volume) - {"name"} <= allowed, volume
    for _, c in containers(workload):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, cid(workload, c)
        assert sc["capabilities"]["drop"] == ["ALL"], cid(workload, c)
        assert sc["readOnlyRootFilesystem"] is True, cid(workload, c)
        assert "memory" in c["resources"]["limits"], cid(workload, c)
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), cid(workload, c)


def test_our_pods_run_as_the_images_user() -> None:
    uid, gid = image_user()
    for workload in workloads():
        if all(is_govbus_image(c["image"]) for _, c in containers(workload)):
            pod = pod_spec(workload)["securityContext"]
            assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid), workload["metadata"]["name"]


@pytest.mark.parametrize(
    ("workload", "container"),
    [(w, c) for w, _, c in all_containers()],
    ids=[cid(w, c) for w, _, c in all_containers()],
)
def test_environment_is_real_settings_that_load(
    workload: dict[str, Any], container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = container_env(container)
    assert [k for k in env if not k.startswith("GOVBUS_")] == [], "govbus is configured by GOVBUS_* only"
    assert unknown_settings(env) == []
    settings_from_env(govbus_env(container), monkeypatch)


def _commands() -> list[Any]:
    out = []
    for w, kind, c in all_containers():
        if is_govbus_image(c["image"]) and kind == "main":
            out.append(command_param(argv_of(c), id=cid(w, c)))
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if "exec" in c.get(probe, {}):
                out.append(command_param(c[probe]["exec"]["command"], id=f"{cid(w, c)}/{probe}"))
    return out


@pytest.mark.parametrize("argv", _commands())
def test_command_parses(argv: list[str]) -> None:
    parse_command(argv)


@pytest.mark.parametrize(
    "argv",
    [
        command_param(argv, id=" ".join(help_words(argv)))
        for argv in {help_words(p.values[0]): p.values[0] for p in _commands()}.values()
    ],
)
def test_help_of_every_command_used(argv: list[str]) -> None:
    assert_help(help_words(argv))


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: f"{w['kind']}/{w['metadata']['name']}")
def test_dry_run_in_the_pods_files(workload: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each govbus command and exec probe builds what it would build, reading the files the pod
    mounts (the keyring, the gate policy) after the init containers ran; every path a container
    is given lies on a volume, and the files it reads are there."""
    pod = Pod(workload, tmp_path)
    pod.run_init_containers()
    for kind, c in containers(workload):
        if kind == "init":
            continue
        # Paths the container is given; the image's defaults (a spool directory for roles that
        # never spool) are not its business.
        env = container_env(c)
        local = {**govbus_env(c), **pod.local_env(c, env)}
        for name, value in env.items():
            if value.startswith("/") and (found := mount_of(pod.spec, c, value)) and found[0].get("readOnly"):
                assert Path(local[name]).exists(), f"{cid(workload, c)}: {name}={value} is not in its volume"
        settings = settings_from_env(local, monkeypatch)
        argvs = [argv_of(c)] if is_govbus_image(c["image"]) else []
        argvs += [c[p]["exec"]["command"] for p in ("readinessProbe", "livenessProbe") if "exec" in c.get(p, {})]
        for argv in argvs:
            dry_run(argv, settings)


def test_init_containers_leave_private_keys_as_the_key_loader_demands(tmp_path: Path) -> None:
    # load_private_key refuses group/other access; Secret volumes are group-readable (fsGroup).
    for workload in workloads():
        if not pod_spec(workload).get("initContainers"):
            continue
        pod = Pod(workload, tmp_path / workload["metadata"]["name"])
        pod.run_init_containers()
        for c in pod_spec(workload)["initContainers"]:
            target = pod.local(c, argv_of(c)[-1])
            assert stat.S_IMODE(target.stat().st_mode) == 0o600, shlex.join(argv_of(c))
            volume = mount_of(pod.spec, c, argv_of(c)[-1])
            assert volume is not None
            assert volume[1]["emptyDir"].get("medium") == "Memory", "a private key never touches the node's disk"


# ---- sinks ----------------------------------------------------------------------------------


def test_every_registered_sink_has_a_deployment() -> None:
    assert sorted(sink_deployments()) == deployed_sinks()


@pytest.mark.parametrize("sink", sorted(sink_deployments()))
def test_sink_probes_and_shutdown_follow_its_settings(sink: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = sink_deployments()[sink]
    container = sink_container(deployment)
    settings = settings_from_env(govbus_env(container), monkeypatch)
    (port,) = container["ports"]
    assert port["containerPort"] == settings.sink.health.port
    assert settings.sink.health.host == "0.0.0.0", "the kubelet probes the pod's IP"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > settings.sink.shutdown_grace_s
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert settings.sink.verify.mode == "required", "in a cluster every event is verified"


# ---- KEDA -----------------------------------------------------------------------------------


def scaled_objects() -> dict[str, dict[str, Any]]:
    """sink name → its ScaledObject."""
    by_target = {so["spec"]["scaleTargetRef"]["name"]: so for so in objects("ScaledObject")}
    return {
        sink: by_target[d["metadata"]["name"]]
        for sink, d in sink_deployments().items()
        if d["metadata"]["name"] in by_target
    }


def test_every_sink_scales_with_keda_and_nothing_else_does() -> None:
    assert sorted(scaled_objects()) == sorted(sink_deployments())
    assert len(objects("ScaledObject")) == len(sink_deployments())


@pytest.mark.parametrize("sink", sorted(sink_deployments()))
def test_keda_reads_the_lag_of_the_group_the_sink_joins(sink: str, monkeypatch: pytest.MonkeyPatch) -> None:
    so = scaled_objects()[sink]
    container = sink_container(sink_deployments()[sink])
    env = container_env(container)
    settings = settings_from_env(govbus_env(container), monkeypatch)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings.sink.group_for(sink)
    # …FromEnv is read from the scale target's (first) container: it must be set there.
    for key, value in meta.items():
        if key.endswith("FromEnv"):
            assert value in env, f"{key}: {value} is not in the sink container's environment"
    topic = env[meta["topicFromEnv"]] if "topicFromEnv" in meta else meta["topic"]
    assert topic == (settings.sink.topic or settings.topic)
    assert meta["offsetResetPolicy"] == settings.sink.auto_offset_reset


@pytest.mark.parametrize("sink", sorted(sink_deployments()))
def test_kafka_trigger_metadata_is_what_the_kafka_scaler_reads(sink: str) -> None:
    (trigger,) = scaled_objects()[sink]["spec"]["triggers"]
    given = set()
    for key, value in trigger["metadata"].items():
        name = key.removesuffix("FromEnv")
        param = KAFKA_SCALER.get(name)
        assert param, f"the kafka scaler has no parameter {key}"
        if key != name:
            assert param.get("envVariableReadable"), f"{name} cannot come from the environment"
        else:
            assert param.get("metadataVariableReadable"), f"{name} cannot be set in trigger metadata"
            assert value in param.get("allowedValue", [value]), f"{key}: {value}"
        given.add(name)
    required = {n for n, p in KAFKA_SCALER.items() if not p.get("optional") and "default" not in p}
    assert required <= given
    assert int(trigger["metadata"]["lagThreshold"]) > 0


_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


@pytest.mark.parametrize("sink", sorted(sink_deployments()))
def test_keda_connects_to_kafka_like_the_sink(sink: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (trigger,) = scaled_objects()[sink]["spec"]["triggers"]
    container = sink_container(sink_deployments()[sink])
    kafka = settings_from_env(govbus_env(container), monkeypatch).kafka
    meta = trigger["metadata"]
    assert meta.get("tls", "disable") == ("enable" if kafka.security_protocol.endswith("SSL") else "disable")
    if not kafka.security_protocol.startswith("SASL"):
        assert "sasl" not in meta
        return
    assert kafka.sasl_mechanism is not None
    assert meta["sasl"] == _SASL[kafka.sasl_mechanism]
    auth = get("TriggerAuthentication", trigger["authenticationRef"]["name"])
    params = {}
    for ref in auth["spec"].get("configMapTargetRef", []):
        params[ref["parameter"]] = configmap_value(ref["name"], ref["key"])
    for ref in auth["spec"].get("secretTargetRef", []):
        params[ref["parameter"]] = secret_value(ref["name"], ref["key"])
    for name in params:
        assert KAFKA_SCALER[name].get("triggerAuthenticationVariableReadable"), name
    assert kafka.sasl_password is not None
    assert params == {"username": kafka.sasl_username, "password": kafka.sasl_password.get_secret_value()}


@pytest.mark.parametrize("sink", sorted(sink_deployments()))
def test_replica_bounds(sink: str) -> None:
    spec = scaled_objects()[sink]["spec"]
    deployment = sink_deployments()[sink]
    assert spec["minReplicaCount"] >= 1, "never zero: the gate requires live sink groups"
    # A consumer beyond the partition count gets no partition (KEDA caps there anyway).
    assert spec["maxReplicaCount"] <= topic_partitions()
    claims = [v for v in pod_spec(deployment).get("volumes", []) if "persistentVolumeClaim" in v]
    if claims:
        # One writer per file on a ReadWriteOnce claim: one replica, never two during a rollout.
        assert spec["maxReplicaCount"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        for claim in claims:
            pvc = get("PersistentVolumeClaim", claim["persistentVolumeClaim"]["claimName"])
            assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


# ---- the kernel and its gate ----------------------------------------------------------------


def _kernel() -> tuple[dict[str, Any], dict[str, Any]]:
    (kernel,) = [
        w
        for w in objects("Deployment")
        if any("exec" in c.get("readinessProbe", {}) for c in pod_spec(w)["containers"])
    ]
    return kernel, next(c for c in pod_spec(kernel)["containers"] if "readinessProbe" in c)


def test_the_kernels_readiness_probe_is_the_gate() -> None:
    _, container = _kernel()
    argv = container["readinessProbe"]["exec"]["command"]
    assert subcommand(argv) == ("gate", "check")


def test_the_gate_policy_requires_what_the_manifests_deploy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kernel, container = _kernel()
    pod = Pod(kernel, tmp_path)
    settings: GovbusSettings = settings_from_env(pod.local_env(container, govbus_env(container)), monkeypatch)
    assert settings.gate.policy_file is not None, "the probe reads the policy GOVBUS_GATE__POLICY_FILE names"
    policy = load_policy(settings.gate.policy_file, settings.gate.overrides())
    assert policy.mode == "enforce"
    assert policy.checks.topic.min_partitions <= topic_partitions()
    assert policy.checks.producer.enabled
    deployments = sink_deployments()
    for required in policy.checks.sinks:
        assert required.name in deployments, f"the gate requires sink {required.name}, which is not deployed"
        sink_settings = settings_from_env(govbus_env(sink_container(deployments[required.name])), monkeypatch)
        assert required.group_id == sink_settings.sink.group_for(required.name)


def test_the_producer_spool_is_on_a_volume_the_probe_shares() -> None:
    kernel, container = _kernel()
    spool = container_env(container)["GOVBUS_PRODUCER__SPOOL_DIR"]
    found = mount_of(pod_spec(kernel), container, spool)
    assert found, "the spool must survive container restarts and be writable"
    mount, volume = found
    assert not mount.get("readOnly")
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume


@pytest.mark.parametrize("sink", sorted(sink_deployments()))
def test_each_sink_pod_is_a_static_member_named_after_the_pod(sink: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted container keeps its pod's name and so its group seat (docs/sinks.md); two pods
    never share a name, so they never fence each other."""
    container = sink_container(sink_deployments()[sink])
    entry = next(e for e in container["env"] if e["name"] == "GOVBUS_SINK__GROUP_INSTANCE_ID")
    assert entry["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    settings = settings_from_env(govbus_env(container), monkeypatch)
    assert settings.sink.instance_id_for(sink) == POD_NAME
