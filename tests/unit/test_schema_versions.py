"""Schema versions v1 and v2 (no broker): the shipped files, the documented fingerprints, every
writer version read by every reader version, and a writer pinned to v1 refusing what it cannot carry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from govbus._contract import Decoder, Encoder, schema_version, schema_versions
from govbus._sample import sample_events
from govbus.errors import InvalidEventError
from govbus.event import V2_FIELDS, EventKind, GovernanceEvent, ProducerInfo

ROOT = Path(__file__).resolve().parents[2]
PRODUCER = ProducerInfo("kernel", "inst-1", "host-a", "govbus-python/0.1.0")
V2_ONLY = {"tenant_id": "tenant-7", "policy_version": "bundle-2026.11", "risk_score": 0.75}


def test_every_shipped_file_is_loaded_in_version_order() -> None:
    files = sorted(int(m.group(1)) for p in (ROOT / "schemas").glob("*.avsc") if (m := re.search(r"v(\d+)", p.name)))
    assert [v.version for v in schema_versions()] == files == [1, 2]
    assert schema_version().version == 2  # the newest is the default


def test_v2_keeps_v1_in_order_and_appends_optional_fields() -> None:
    v1, v2 = (schema_version(n).schema for n in (1, 2))
    n = len(v1["fields"])
    kept = [{k: v for k, v in f.items() if k != "type" or f["name"] != "kind"} for f in v2["fields"][:n]]
    assert kept == [{k: v for k, v in f.items() if k != "type" or f["name"] != "kind"} for f in v1["fields"]]
    appended = v2["fields"][n:]
    assert [f["name"] for f in appended] == list(V2_FIELDS)
    assert all(f["type"][0] == "null" and f["default"] is None for f in appended)
    kind1, kind2 = (next(f for f in s["fields"] if f["name"] == "kind")["type"] for s in (v1, v2))
    assert kind2["symbols"][: len(kind1["symbols"])] == kind1["symbols"]
    assert kind2["symbols"][len(kind1["symbols"]) :] == ["DATA_EXFILTRATION_DETECTED"]
    assert kind1["default"] == kind2["default"] == "UNKNOWN"


def test_the_wire_contract_lists_the_shipped_fingerprints() -> None:
    text = (ROOT / "docs" / "wire-contract.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| `([0-9a-f]{16})` \|", text, re.MULTILINE))
    assert table == {str(v.version): v.fingerprint.hex() for v in schema_versions()}


def test_new_kind_has_a_cloudevents_type() -> None:
    assert EventKind.DATA_EXFILTRATION_DETECTED.ce_type == "ai.agentos.data_exfiltration.detected"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tenant_id", "", "must not be empty"),
        ("policy_version", "x" * 257, "limit is 256"),
        ("risk_score", 1.5, "between 0.0 and 1.0"),
        ("risk_score", float("nan"), "between 0.0 and 1.0"),
        ("risk_score", "high", "must be a number"),
        ("risk_score", True, "must be a number"),
    ],
)
def test_v2_fields_are_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message) as info:
        GovernanceEvent(agent_id="a", **{field: value})  # type: ignore[arg-type]
    assert info.value.field == field


def _events() -> list[GovernanceEvent]:
    """Sample events, plus v2-only content, plus the bytes attribute that fastavro's union
    resolution would read as a string across versions."""
    evs = list(sample_events(60, seed=3))
    evs.append(GovernanceEvent(agent_id="a", attributes={"raw": b"\xff\x00\xfe", "ok": b"ascii", "s": "t", "n": [1]}))
    evs.append(GovernanceEvent(agent_id="a", kind=EventKind.DATA_EXFILTRATION_DETECTED, **V2_ONLY))  # type: ignore[arg-type]
    evs.append(GovernanceEvent(agent_id="a", risk_score=1))
    return evs


def _as_read_by(event: GovernanceEvent, reader: int) -> GovernanceEvent:
    """What a reader of ``reader`` sees: a v1 reader lacks the v2 fields and the v2 kind."""
    expected = event.replace(producer=PRODUCER)
    if reader == 1:
        expected = expected.replace(**dict.fromkeys(V2_FIELDS))
        if event.kind.name not in schema_version(1).kinds:
            expected = expected.replace(kind=EventKind.UNKNOWN)
    return expected


@pytest.mark.parametrize(("writer", "reader"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_every_writer_version_is_read_by_every_reader_version(writer: int, reader: int) -> None:
    encoder, decoder = Encoder(writer), Decoder(reader)
    for event in _events():
        if writer == 1 and not _carried_by_v1(event):
            continue
        back = decoder.decode(encoder.encode(event, PRODUCER))
        assert back == _as_read_by(event, reader)
        assert back.attributes == event.attributes  # bytes stay bytes, whatever the versions
        assert {k: _type(v) for k, v in back.attributes.items()} == {k: _type(v) for k, v in event.attributes.items()}


def _type(value: object) -> type:
    # A kernel-built event keeps nested lists and mappings read-only (FrozenList, FrozenDict).
    return list if isinstance(value, list) else dict if isinstance(value, dict) else type(value)


def _carried_by_v1(event: GovernanceEvent) -> bool:
    return event.kind.name in schema_version(1).kinds and all(getattr(event, f) is None for f in V2_FIELDS)


def test_a_v1_writer_refuses_a_v2_kind_naming_the_field() -> None:
    event = GovernanceEvent(agent_id="a", kind=EventKind.DATA_EXFILTRATION_DETECTED)
    encoder = Encoder(1)
    assert encoder.restricted
    for attempt in (encoder.check, lambda e: encoder.encode(e, PRODUCER)):
        with pytest.raises(InvalidEventError, match="DATA_EXFILTRATION_DETECTED does not exist in schema v1") as info:
            attempt(event)
        assert info.value.field == "kind"


@pytest.mark.parametrize("field", V2_FIELDS)
def test_a_v1_writer_refuses_a_v2_field_naming_it(field: str) -> None:
    event = GovernanceEvent(agent_id="a", **{field: V2_ONLY[field]})  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError, match="does not exist in schema v1") as info:
        Encoder(1).encode(event, PRODUCER)
    assert info.value.field == field


def test_the_newest_writer_is_unrestricted() -> None:
    assert not Encoder().restricted
