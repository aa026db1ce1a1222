"""Frozen layouts spell the event's fields out on purpose: their bytes must not change.

They are the Avro schemas and the hand-written writer that mirrors them (govbus/_contract.py), the
spool journal (producer/_spool.py), the audit ledger entry (consumers/sinks/_ledger.py) and the
JSON Lines key order (consumers/sinks/_jsonl.py). Everything else derives from
:data:`govbus.event.FIELDS`. Each test here fails when ``GovernanceEvent`` gains a field that a
layout neither carries nor lists as carried elsewhere or left out, and pins the layout's bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

from _sinks import FakeMessage, records

from govbus import _contract as contract
from govbus._cloudevents import CloudEventAttributes
from govbus._contract import Decoder, Encoder, schema_version
from govbus.consumers._intake import Intake
from govbus.consumers._spi import DeliveredRecord
from govbus.consumers.sinks import _syslog as syslog
from govbus.consumers.sinks._jsonl import event_data
from govbus.consumers.sinks._ledger import canonical, render_event
from govbus.consumers.sinks._otlp import ATTRIBUTE_PREFIX, ATTRIBUTES
from govbus.event import FIELDS, V1_FIELDS, EventKind, GovernanceEvent, ProducerInfo
from govbus.producer import _spool

PRODUCER = ProducerInfo(name="frozen", instance_id="i-1", host="host-1", library="govbus-test")
# A value for every field, none its default: a field added to the model must be added here too
# (the first test says so), and then each layout below must carry it or say why not.
VALUES: dict[str, object] = {
    "agent_id": "agent-7",
    "kind": EventKind.TOOL_CALL_BLOCKED,
    "severity": "high",
    "action": "tool.call",
    "decision": "deny",
    "reason": "not allowed",
    "event_id": "0123456789abcdef0123456789abcdef",
    "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "agent_did": "did:web:agents.example:7",
    "session_id": "session-9",
    "resource": "fs:/etc/passwd",
    "policy_name": "no-secrets",
    "latency_ms": 12.5,
    "trace_id": "ab" * 16,
    "span_id": "cd" * 8,
    "parent_span_id": "ef" * 8,
    "attributes": {"tool": "shell", "n": 3, "nested": {"a": [1, 2]}},
    "schema_version": "1.1",
    "producer": PRODUCER,
    "tenant_id": "tenant-a",
    "policy_version": "2026.1",
    "risk_score": 0.25,
}
EVENT = GovernanceEvent(**VALUES)  # type: ignore[arg-type]


def test_the_sample_event_sets_every_field() -> None:
    missing = [name for name in FIELDS if name not in VALUES]
    assert not missing, f"add these to VALUES (and check every layout below): {missing}"
    defaults = [f.name for f in dataclasses.fields(GovernanceEvent) if getattr(EVENT, f.name) in (None, f.default)]
    assert not defaults


def _delivered(event: GovernanceEvent) -> DeliveredRecord:
    rec = records([event])[0]
    work = Intake(Decoder())(FakeMessage(rec.value, rec.headers, key=rec.key, offset=0), 1)
    assert work.record is not None, work.failure
    return work.record


def test_avro_schema_and_hand_written_writer_carry_every_field() -> None:
    newest = schema_version()
    assert set(newest.field_names) == {*FIELDS, "contract_version"}, "ship a schema version with the new field"
    assert set(schema_version(1).field_names) == {*V1_FIELDS, "contract_version"}
    # The writer that mirrors the .avsc (bytes frozen by the schema) must know the newest layout,
    # or every event silently takes fastavro's slower path.
    assert contract._fast_layout(newest.schema) is not None
    encoder = Encoder()
    value = encoder.encode(EVENT, PRODUCER)
    assert value == encoder.encode_datum(contract.to_datum(EVENT, PRODUCER, newest.version))
    assert Decoder().decode(value) == EVENT


def test_spool_journal_carries_every_field() -> None:
    # Format 2 journals contract v1's fields by position in the v1 schema's order, then every
    # newer field by name; producer is not journaled (the bus stamps it when it sends).
    v1_order = [f["name"] for f in schema_version(1).schema["fields"]]
    v1_order = [name for name in v1_order if name not in ("producer", "contract_version")]
    assert list(_spool._JOURNALED) == v1_order
    carried, left_out = {*_spool._JOURNALED, *_spool._EXTRA}, {"producer"}
    assert carried | left_out == set(FIELDS)
    assert not carried & left_out
    event, trace = _spool.unpack_event(_spool.pack_event(EVENT, None))
    assert (event, trace) == (EVENT.replace(producer=None), None)


# The ledger entry's data carries every field but these, which are CloudEvents attributes.
LEDGER_ELSEWHERE = {"event_id": "id", "occurred_at": "time"}
LEDGER_SHA256 = "edecbb3466dd3c387cffffd53d6ac56f1b4d56c91324c02e256cd7e2a54d2706"


def test_ledger_entry_carries_every_field_and_keeps_its_bytes() -> None:
    attributes = CloudEventAttributes(
        "1.0", EVENT.event_id, "urn:govbus:test", EVENT.ce_type, None, "agent-7", "application/avro", None, {}
    )
    entry = render_event(EVENT, attributes)
    assert set(entry["data"]) | set(LEDGER_ELSEWHERE) == set(FIELDS)
    assert (entry["id"], entry["time"]) == (EVENT.event_id, "2026-01-02T03:04:05.678901Z")
    # Old ledgers re-render byte for byte: a changed digest is a new ledger format, never an edit.
    assert hashlib.sha256(canonical(entry)).hexdigest() == LEDGER_SHA256


JSON_DATA = (
    '{"event_id":"0123456789abcdef0123456789abcdef","occurred_at":"2026-01-02T03:04:05.678901Z",'
    '"kind":"tool_call_blocked","severity":"high","agent_id":"agent-7","agent_did":"did:web:agents.example:7",'
    '"session_id":"session-9","action":"tool.call","resource":"fs:/etc/passwd","decision":"deny",'
    '"reason":"not allowed","policy_name":"no-secrets","latency_ms":12.5,'
    '"trace_id":"abababababababababababababababab","span_id":"cdcdcdcdcdcdcdcd","parent_span_id":"efefefefefefefef",'
    '"attributes":{"tool":"shell","n":3,"nested":{"a":[1,2]}},"schema_version":"1.1","tenant_id":"tenant-a",'
    '"policy_version":"2026.1","risk_score":0.25,'
    '"producer":{"name":"frozen","instance_id":"i-1","host":"host-1","library":"govbus-test"}}'
)


def test_json_line_carries_every_field_in_its_documented_order() -> None:
    data = event_data(EVENT)
    assert set(data) == set(FIELDS)
    # The documented key order (docs/sinks-reference.md), which the native renderer matches byte for byte.
    encoded = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert encoded == JSON_DATA


# OTLP log records carry these fields outside the ATTRIBUTES mapping.
OTLP_ELSEWHERE = {
    "occurred_at": "time_unix_nano",
    "trace_id": "the record's trace context",
    "span_id": "the record's trace context",
    "attributes": ATTRIBUTE_PREFIX + "<key>",
    "producer": "governance.producer.*",
}


def test_otlp_attributes_cover_every_field() -> None:
    assert set(FIELDS) - set(ATTRIBUTES) == set(OTLP_ELSEWHERE)
    assert {f"producer.{f.name}" for f in dataclasses.fields(ProducerInfo)} <= set(ATTRIBUTES)


# The syslog message is a deliberate summary: SD parameters for what SIEMs filter on, the rest
# in the header or the MSG, or left out (the cloudevent message mode carries everything).
SYSLOG_ELSEWHERE = {"occurred_at": "TIMESTAMP", "reason": "MSG", "producer": "HOSTNAME", "kind": "MSGID and SD"}
SYSLOG_LEFT_OUT = {
    "latency_ms",
    "parent_span_id",
    "attributes",
    "schema_version",
    "tenant_id",
    "policy_version",
    "risk_score",
}


def test_syslog_structured_data_places_every_field() -> None:
    params = {name for name, _ in syslog._params(_delivered(EVENT))}
    in_sd = params & set(FIELDS)
    assert in_sd | set(SYSLOG_ELSEWHERE) | SYSLOG_LEFT_OUT == set(FIELDS)
    assert not SYSLOG_LEFT_OUT & (in_sd | set(SYSLOG_ELSEWHERE))
