"""The wire contract against Apache Avro for Java, the reference implementation (no broker).

For every shipped schema version, in one JVM run (tests/interop/avro-java/AvroInterop.java):

* govbus → Java: values govbus encodes are decoded by Java's ``BinaryMessageDecoder``, which finds
  the writer schema by the fingerprint in the single-object header; Java prints each record back
  in Avro's JSON encoding, read here field by field into the event model and compared.
  The same values are read by Java with the newest schema as its reader (schema resolution).
* Java → govbus: records (given in Avro's JSON encoding) are encoded by Java's
  ``BinaryMessageEncoder``; govbus's :class:`Decoder` decodes them and the events are compared.
* Java's ``SchemaNormalization.parsingFingerprint64`` of each shipped file is the fingerprint
  govbus puts in the header.

Needs Java (a JDK: javac) and Maven, which ``make test`` installs; it fails, never skips, without them.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _avro_java import AvroJava, AvroJavaUnavailable, avro_java
from fastavro import json_reader, json_writer

from govbus import _contract as contract
from govbus._contract import Decoder, Encoder, SchemaVersion, from_datum, schema_version, schema_versions, to_datum
from govbus._sample import sample_events
from govbus.event import V2_FIELDS, EventKind, GovernanceEvent, ProducerInfo

pytestmark = pytest.mark.integration

PRODUCER = ProducerInfo("kernel", "inst-1", "host-ä", "govbus-python/0.1.0")
SCHEMAS = Path(contract.__file__).resolve().parents[1] / "schemas"


@pytest.fixture(scope="module")
def java() -> AvroJava:
    try:
        return avro_java()
    except AvroJavaUnavailable as exc:
        pytest.fail(f"Apache Avro for Java is not available: {exc}")


def events_for(v: SchemaVersion) -> list[GovernanceEvent]:
    """Sample events of every kind the version carries, and edge cases of every attribute branch."""
    edge = [
        GovernanceEvent(
            agent_id="agent-ü",
            agent_did="did:web:example.com:agent",
            session_id="s-1",
            kind=EventKind.TOOL_CALL_BLOCKED,
            severity="critical",
            action="shell.exec",
            resource="/etc/shadow",
            decision="deny",
            reason="emoji 🚫 and CJK 拒否",
            policy_name="no-secrets",
            latency_ms=0.0,
            occurred_at=datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id="b7ad6b7169203331",
            parent_span_id="00f067aa0ba902b7",
            attributes={
                "none": None,
                "yes": True,
                "no": False,
                "min": -(2**63),
                "max": 2**63 - 1,
                "double": -1.25e-300,
                "text": "ünïcödé",
                "bytes": b"\x00\xff\xfe not utf-8",
                "nested": {"list": [1, "two", None, {"three": 3.5}], "empty": {}},
            },
        ),
        GovernanceEvent(agent_id="a", attributes={}, occurred_at=datetime(2026, 11, 26, 15, 4, 5, tzinfo=UTC)),
    ]
    extra = {"tenant_id": "tenant-7", "policy_version": "bundle-2026.11", "risk_score": 0.75}
    out = []
    for i, e in enumerate([*sample_events(2 * len(EventKind)), *edge]):
        if e.kind.name not in v.kinds:
            continue
        if all(f in v.field_names for f in V2_FIELDS) and i % 2:
            e = e.replace(**extra)
        out.append(e.replace(producer=PRODUCER))
    return out


def json_lines(v: SchemaVersion, datums: list[dict[str, object]]) -> str:
    buf = io.StringIO()
    json_writer(buf, v.parsed, datums)
    return buf.getvalue()


def read_json(v: SchemaVersion, path: Path) -> Iterator[GovernanceEvent]:
    with path.open(encoding="utf-8") as f:
        for datum in json_reader(f, v.parsed):
            yield from_datum(datum)


def test_avro_java_reads_govbus_values_and_govbus_reads_its_values(java: AvroJava, tmp_path: Path) -> None:
    versions = schema_versions()
    assert [v.version for v in versions] == sorted(int(p.stem.rsplit("v", 1)[1]) for p in SCHEMAS.glob("*.avsc"))
    newest = schema_version()
    cases: dict[int, tuple[list[GovernanceEvent], list[bytes]]] = {}
    for v in versions:
        events = events_for(v)
        assert len(events) >= len(v.kinds)
        values = [Encoder(v.version).encode(e, PRODUCER) for e in events]
        cases[v.version] = (events, values)
        (tmp_path / f"in-v{v.version}.hex").write_text("".join(x.hex() + "\n" for x in values))
        datums = [to_datum(e, PRODUCER, v.version) for e in events]
        (tmp_path / f"in-v{v.version}.json").write_text(json_lines(v, datums), encoding="utf-8")

    done = java.run(tmp_path, [SCHEMAS / f"governance_event.v{v.version}.avsc" for v in versions])
    assert done.returncode == 0, f"Avro {java.version} for Java failed:\n{done.stdout}\n{done.stderr}"

    # Java's own fingerprint of each shipped file is the one govbus writes, little-endian.
    java_fps = dict(line.split() for line in (tmp_path / "fingerprints.txt").read_text().splitlines())
    for v in versions:
        assert int(java_fps[str(v.version)], 16) == struct.unpack("<Q", v.fingerprint)[0], f"v{v.version}"

    newest_decoder = Decoder(newest.version)
    for v in versions:
        events, values = cases[v.version]
        # govbus -> Java: every field Java decoded, read back into the model, is the event.
        from_java = list(read_json(v, tmp_path / f"out-v{v.version}.json"))
        assert from_java == events, f"v{v.version} values as decoded by Java"
        resolved = list(read_json(newest, tmp_path / f"out-v{v.version}-newest.json"))
        assert resolved == [newest_decoder.decode(x) for x in values], f"v{v.version} read by Java as v{newest.version}"
        # Java -> govbus: Java's single-object values, decoded by govbus.
        java_values = [bytes.fromhex(line) for line in (tmp_path / f"out-v{v.version}.hex").read_text().split()]
        assert len(java_values) == len(events)
        decoder = Decoder(v.version)
        for value, event in zip(java_values, events, strict=True):
            assert value[:10] == v.prefix, f"v{v.version}: Java wrote header {value[:10].hex()}"
            assert decoder.decode(value) == event
        assert decoder.legacy_fingerprints == 0
