"""deploy/otel-collector.yaml: the collector's wiring, checked without a collector binary.

What a collector would refuse at start-up for wiring: a pipeline naming a component that is not
defined, a defined receiver or exporter no pipeline uses (a warning), an unknown signal. And
what this stack needs: OTLP in on every interface, every signal printed by the debug exporter.
The component settings themselves are checked against the options the collector documents
(debug verbosity, OTLP endpoints), not against the collector's own config schema.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from unit.test_deploy_support import ROOT

CONFIG: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text(encoding="utf-8"))
SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
SIGNALS = {"logs", "traces", "metrics", "profiles"}


def _pipelines() -> dict[str, dict[str, list[str]]]:
    pipelines: dict[str, dict[str, list[str]]] = CONFIG["service"]["pipelines"]
    return pipelines


def test_only_known_sections() -> None:
    assert set(CONFIG) <= {*SECTIONS, "service"}


@pytest.mark.parametrize("pipeline", list(_pipelines()))
def test_pipeline_components_are_defined(pipeline: str) -> None:
    assert pipeline.split("/")[0] in SIGNALS
    spec = _pipelines()[pipeline]
    assert set(spec) <= {"receivers", "processors", "exporters"}
    assert spec["receivers"], "a pipeline needs a receiver"
    assert spec["exporters"], "a pipeline needs an exporter"
    for kind, ids in spec.items():
        for component in ids:
            assert component in CONFIG.get(kind, {}), f"{pipeline}: {kind} {component} is not defined"


def test_every_defined_component_is_used() -> None:
    for kind in ("receivers", "processors", "exporters"):
        used = {c for spec in _pipelines().values() for c in spec.get(kind, [])}
        assert set(CONFIG.get(kind) or {}) == used, kind
    assert set(CONFIG.get("extensions") or {}) == set(CONFIG["service"].get("extensions", []))


def test_governance_events_flow_from_otlp_to_the_debug_exporter() -> None:
    # The otlp sink exports log records; traces and metrics are printed too, for anything else.
    logs = _pipelines()["logs"]
    assert "otlp" in logs["receivers"]
    assert "debug" in logs["exporters"]
    assert {p.split("/")[0] for p in _pipelines()} == {"logs", "traces", "metrics"}


def test_debug_exporter_prints_every_attribute() -> None:
    assert CONFIG["exporters"]["debug"] == {"verbosity": "detailed"}


def test_otlp_listens_on_every_interface() -> None:
    # Since collector v0.104 the default endpoint is localhost: other containers could not connect.
    protocols = CONFIG["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
