"""deploy/k8s without a cluster: every sink's health server has a Service, and the console scrapes
each sink through it — selectors match the sink's pods (and only them), ports resolve to the
container's health port the sink really listens on, the console's GOVBUS_CONSOLE__SINK_HEALTH_URLS
names every sink's Service like docker-compose.yml names every sink's container. kubeconform
checks the manifests too where it is installed and can fetch its schemas."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from unit.test_deploy_k8s import (
    K8S,
    container_env,
    govbus_env,
    objects,
    pod_spec,
    sink_container,
    sink_deployments,
)
from unit.test_deploy_support import ROOT, settings_from_env, subcommand

from govbus._settings import GovbusSettings
from govbus.console._settings import is_loopback


def _selects(service: dict[str, Any], workload: dict[str, Any]) -> bool:
    selector = service["spec"].get("selector") or {}
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _services_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in objects("Service") if _selects(s, workload)]


def _container_port(container: dict[str, Any], target: int | str) -> int:
    for port in container.get("ports", []):
        if target in (port.get("name"), port["containerPort"]):
            return int(port["containerPort"])
    pytest.fail(f"targetPort {target!r} is not a port of container {container['name']}")


def _console() -> tuple[dict[str, Any], dict[str, Any]]:
    for workload in objects("Deployment"):
        for container in pod_spec(workload)["containers"]:
            if container.get("args", [])[:1] == ["console"]:
                return workload, container
    pytest.fail("no console Deployment")


def _health_urls(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    settings: GovbusSettings = settings_from_env(govbus_env(container), monkeypatch)
    return dict(settings.console.sink_health_urls)


@pytest.mark.parametrize("sink", sorted(sink_deployments()))
def test_each_sink_has_a_service_on_the_port_its_health_server_listens_on(
    sink: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = sink_deployments()[sink]
    (service,) = _services_of(deployment)
    # It selects this sink's pods and no other workload's.
    others = [w for w in objects("Deployment") if w is not deployment and _selects(service, w)]
    assert not others, [w["metadata"]["name"] for w in others]
    container = sink_container(deployment)
    settings: GovbusSettings = settings_from_env(govbus_env(container), monkeypatch)
    health = settings.sink.health
    assert health.enabled
    assert not is_loopback(health.host), "a Service cannot reach a health server bound to loopback"
    (port,) = service["spec"]["ports"]
    assert _container_port(container, port.get("targetPort", port["port"])) == health.port
    # The probes use the same port: what the Service reaches is what the kubelet checks.
    assert container["readinessProbe"]["httpGet"]["port"] in (port.get("targetPort"), health.port)


def test_the_console_scrapes_every_sink_through_its_service(monkeypatch: pytest.MonkeyPatch) -> None:
    _, console = _console()
    urls = _health_urls(console, monkeypatch)
    deployments = sink_deployments()
    assert sorted(urls) == sorted(deployments), "one health URL per deployed sink"
    for sink, url in urls.items():
        parts = urlsplit(url)
        assert parts.scheme == "http"
        assert parts.path in ("", "/")
        (service,) = _services_of(deployments[sink])
        assert parts.hostname == service["metadata"]["name"], sink  # same namespace: the short name resolves
        assert parts.port in [p["port"] for p in service["spec"]["ports"]], sink
    env = container_env(console)
    assert not is_loopback(env["GOVBUS_CONSOLE__HOST"])
    assert env.get("GOVBUS_CONSOLE__TOKEN"), "bound off loopback: a token is required"


def test_compose_and_kubernetes_scrape_the_same_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    (console,) = [svc for svc in compose.values() if svc.get("command") == ["console"]]
    compose_urls = settings_from_env(
        {k: str(v) for k, v in console["environment"].items() if k.startswith("GOVBUS_")}, monkeypatch
    ).console.sink_health_urls
    _, k8s_console = _console()
    assert sorted(compose_urls) == sorted(_health_urls(k8s_console, monkeypatch))
    compose_sinks = {svc["command"][2] for svc in compose.values() if svc.get("command", [])[:2] == ["sink", "run"]}
    assert sorted(compose_urls) == sorted(compose_sinks)


def test_kubeconform_accepts_the_manifests() -> None:
    kubeconform = shutil.which("kubeconform")
    if kubeconform is None:
        pytest.skip("kubeconform is not installed (go install github.com/yannh/kubeconform/cmd/kubeconform)")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("needs kubectl to render the kustomization")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], check=True, capture_output=True, text=True, timeout=60)
    # KEDA's CRDs are checked by test_deploy_k8s.py against the schemas kept in tests/unit/schemas/keda.
    out = subprocess.run(
        [kubeconform, "-strict", "-summary", "-skip", "ScaledObject,TriggerAuthentication", "-"],
        input=rendered.stdout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "failed downloading schema" in out.stdout:
        # Its schemas come from GitHub; the offline copies kubernetes-validate ships use relative
        # $refs that kubeconform cannot follow (tried here: "could not find schema").
        pytest.skip("kubeconform cannot download its schemas (offline); kubernetes-validate checks them")
    assert out.returncode == 0, out.stdout + out.stderr


def test_sink_deployments_are_found() -> None:
    assert {subcommand(["govbus", *sink_container(d)["args"]]) for d in sink_deployments().values()} == {
        ("sink", "run")
    }
