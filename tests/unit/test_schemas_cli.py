"""``govbus schemas`` without a network: check and diff on files (CI of schema changes), and the
registry actions against confluent-kafka's in-process mock registry (``mock://``)."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from govbus._cli import main
from govbus._contract import schema_version

V2 = schema_version(2).schema


def write(tmp_path: Path, name: str, schema: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(schema))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["schemas", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_check_passes_on_the_shipped_versions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "check")
    assert code == 0
    assert "FULL_TRANSITIVE: every version against the shipped versions: compatible" in out


def test_check_rejects_a_removed_field_and_a_changed_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    removed = copy.deepcopy(V2)
    removed["fields"] = [f for f in removed["fields"] if f["name"] != "agent_id"]
    retyped = copy.deepcopy(V2)
    next(f for f in retyped["fields"] if f["name"] == "latency_ms")["type"] = "string"
    a, b = write(tmp_path, "removed.avsc", removed), write(tmp_path, "retyped.avsc", retyped)

    code, out = run(capsys, "check", "--candidate", str(a))
    assert code == 1
    assert (
        f"FORWARD: field 'agent_id' removed without a default (readers v1, v2 cannot read data written by {a})" in out
    )

    code, out = run(capsys, "check", "--candidate", str(b), "--level", "backward")
    assert code == 1
    assert f"FULL: field 'latency_ms' changed type double → string ({b} and v2" not in out  # BACKWARD only
    assert (
        f"BACKWARD: field 'latency_ms' changed type double → string (reader {b} cannot read data written by v2)" in out
    )


def test_check_accepts_an_additive_candidate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v3 = copy.deepcopy(V2)
    v3["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    code, out = run(capsys, "check", "--candidate", str(write(tmp_path, "v3.avsc", v3)))
    assert (code, "compatible" in out) == (0, True)


def test_check_refuses_a_candidate_that_is_not_avro(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "check", "--candidate", str(write(tmp_path, "bad.avsc", {"type": "record"})))
    assert code == 2
    assert "bad.avsc is not a valid Avro schema" in out


def test_diff_between_versions_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "diff", "v1", "v2")
    assert code == 0
    assert "v1 → v2: 4 difference(s)" in out
    assert "+ field 'risk_score': [null, double] = null" in out
    assert "+ field 'kind': enum EventKind symbol DATA_EXFILTRATION_DETECTED" in out
    code, out = run(capsys, "diff", "2", str(write(tmp_path, "same.avsc", V2)))
    assert "no field-level differences" in out
    code, out = run(capsys, "diff", "v7", "v2")
    assert code == 2
    assert "no shipped version 7" in out


def test_list_without_a_registry_shows_the_shipped_versions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "list")
    assert code == 0
    assert "v1  fingerprint fdc30ce93752f261" in out
    assert f"v2  fingerprint {schema_version(2).fingerprint.hex()}" in out


def test_registry_actions_against_the_mock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"mock://{uuid.uuid4().hex}"
    reg = ["--registry-url", url, "--subject", "gov-value"]
    code, out = run(capsys, "register", *reg)
    assert code == 0
    assert out.splitlines() == ["v1: gov-value id 1", "v2: gov-value id 2"]
    assert run(capsys, "register", *reg)[1] == out  # idempotent: the same ids

    code, out = run(capsys, "list", *reg)
    assert "gov-value at " + url + ": 2 version(s)" in out
    assert "version 1  id 1  = shipped v1" in out
    assert "version 2  id 2  = shipped v2" in out
    assert run(capsys, "list", "--all-subjects", "--registry-url", url)[1].strip() == "gov-value"

    code, out = run(capsys, "pull", *reg, "--dir", str(tmp_path / "pulled"))
    assert code == 0
    pulled = json.loads((tmp_path / "pulled" / "gov-value.v2.avsc").read_text())
    assert pulled == V2

    assert run(capsys, "diff", *reg, "registry:1", "registry:latest")[1].count("+ field") == 4
    code, out = run(capsys, "check", *reg, "--against-registry")
    assert code == 0
    assert "against gov-value at" in out

    assert run(capsys, "set-compatibility", "full_transitive", *reg)[0] == 0


def test_registry_url_is_required_and_validated(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "register")
    assert code == 2
    assert "GOVBUS_REGISTRY__URL" in out
    code, out = run(capsys, "register", "--registry-url", "ftp://user:pw@r")
    assert code == 2
    assert "GOVBUS_REGISTRY__URL" in out
    assert "pw" not in out


def test_unreachable_registry_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "list", "--registry-url", "http://127.0.0.1:9", "--subject", "s-value")
    assert code == 2
    assert "schema registry unreachable" in out
    assert "Traceback" not in out
