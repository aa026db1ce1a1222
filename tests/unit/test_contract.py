"""Single-object encoding, framing detection and decode errors (no broker)."""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime

import pytest
from fastavro import schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from govbus import _contract as contract
from govbus._contract import Decoder, Encoder, Framing, framing_of, schema_version, schema_versions
from govbus._sample import sample_events
from govbus.errors import DecodeError
from govbus.event import EventKind, GovernanceEvent, ProducerInfo

PRODUCER = ProducerInfo("kernel", "inst-1", "host-a", "govbus-python/0.1.0")


def test_shipped_schema_v1_is_found_with_its_fingerprint() -> None:
    v1 = schema_version(1)
    assert v1 in schema_versions()
    # Independent computation of the CRC-64-AVRO fingerprint over the Parsing Canonical Form.
    raw = json.loads((contract.resources.files("govbus.schemas") / "governance_event.v1.avsc").read_text())
    canonical = to_parsing_canonical_form(parse_schema(raw, named_schemas={}))
    # fastavro's hex is the little-endian byte string the header carries (tests/unit/test_wire_fingerprint.py
    # checks that against the Avro specification's published values).
    assert v1.fingerprint == bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    assert v1.prefix == b"\xc3\x01" + v1.fingerprint


def test_schema_enum_matches_model() -> None:
    # The newest schema has every kind, in model order; older ones a prefix (symbols are appended).
    model = [k.name for k in EventKind]
    for v in schema_versions():
        kind_field = next(f for f in v.schema["fields"] if f["name"] == "kind")
        symbols = kind_field["type"]["symbols"]
        assert symbols == model[: len(symbols)]
    assert sorted(schema_version().kinds) == sorted(model)


def test_value_is_single_object_encoded() -> None:
    e = GovernanceEvent(agent_id="a")
    value = Encoder().encode(e, PRODUCER)
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == schema_version().fingerprint
    assert framing_of(value) is Framing.SINGLE_OBJECT


def test_every_sample_event_round_trips() -> None:
    enc, dec = Encoder(), Decoder()
    for e in sample_events(120):
        assert dec.decode(enc.encode(e, PRODUCER)) == e.replace(producer=PRODUCER)


def test_attribute_types_survive() -> None:
    attrs = {
        "b": True,
        "i": -(2**63),
        "f": 1.25,
        "s": "ünï",
        "raw": b"\x00\xff",
        "none": None,
        "list": [1, "x", None, {"k": [True]}],
        "obj": {"a": {"b": 1.5}},
        "empty": {},
        "el": [],
    }
    e = GovernanceEvent(agent_id="a", attributes=attrs)
    out = Decoder().decode(Encoder().encode(e, PRODUCER))
    assert out.attributes == attrs
    assert type(out.attributes["i"]) is int
    assert type(out.attributes["b"]) is bool


def test_time_keeps_microseconds() -> None:
    t = datetime(2026, 11, 26, 15, 1, 2, 345678, tzinfo=UTC)
    assert Decoder().decode(Encoder().encode(GovernanceEvent(agent_id="a", occurred_at=t), PRODUCER)).occurred_at == t


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b'{"json": true}', "unknown-framing"),
        (b"\xc3\x01\x00", "truncated"),
        (b"\xc3\x01" + b"\x11" * 8 + b"body", "unknown-fingerprint"),
        (b"\x00\x00\x00\x00\x07rest", "no-registry"),
    ],
)
def test_undecodable_values_report_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        Decoder().decode(value)
    assert info.value.reason == reason


def test_corrupt_body_and_trailing_bytes() -> None:
    good = Encoder().encode(GovernanceEvent(agent_id="a"), PRODUCER)
    with pytest.raises(DecodeError) as info:
        Decoder().decode(good[:10] + b"\xff" * 5)
    assert info.value.reason == "corrupt-body"
    with pytest.raises(DecodeError) as info:
        Decoder().decode(good + b"\x00")
    assert info.value.reason == "corrupt-body"


def test_datum_that_breaks_the_model_is_a_decode_error() -> None:
    enc = Encoder()
    datum = contract.to_datum(GovernanceEvent(agent_id="a"), PRODUCER)
    datum["agent_id"] = ""  # valid Avro, invalid event
    with pytest.raises(DecodeError) as info:
        Decoder().decode(enc.encode_datum(datum))
    assert info.value.reason == "invalid-event"


def test_unknown_enum_symbol_reads_as_unknown() -> None:
    # A writer that knows a kind v1 does not: the reader's enum default applies.
    raw = json.loads(json.dumps(schema_version(1).schema))
    kind = next(f for f in raw["fields"] if f["name"] == "kind")
    kind["type"]["symbols"].append("FUTURE_KIND")
    writer = parse_schema(raw, named_schemas={})
    datum = contract.to_datum(GovernanceEvent(agent_id="a"), PRODUCER)
    datum["kind"] = "FUTURE_KIND"
    buf = io.BytesIO()
    schemaless_writer(buf, writer, datum)
    from fastavro import schemaless_reader

    out = schemaless_reader(io.BytesIO(buf.getvalue()), writer, schema_version(1).parsed)
    assert out["kind"] == "UNKNOWN"


def test_confluent_framing_is_told_apart() -> None:
    value = b"\x00" + struct.pack(">I", 42) + b"body"
    assert framing_of(value) is Framing.CONFLUENT


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", ""),
        ("agent_id", ""),
        ("severity", ""),
        ("session_id", ""),
        ("action", "a\x00b"),
        ("agent_id", "x" * 257),
        ("latency_ms", -1.0),
        ("latency_ms", float("inf")),
        ("trace_id", "Z" * 32),
        ("span_id", "0" * 16),
        ("risk_score", 1.5),
    ],
)
def test_decoding_checks_the_contract_rules_avro_cannot(field: str, value: object) -> None:
    """Decoding skips re-checking types Avro guarantees, but not the contract's semantic rules."""
    enc = Encoder()
    datum = contract.to_datum(GovernanceEvent(agent_id="a", session_id="s"), PRODUCER, enc.schema.version)
    datum[field] = value
    with pytest.raises(DecodeError) as info:
        Decoder().decode(enc.encode_datum(datum))
    assert info.value.reason == "invalid-event"
    assert field in str(info.value)


def test_nested_json_with_nan_is_an_invalid_event() -> None:
    enc = Encoder()
    datum = contract.to_datum(GovernanceEvent(agent_id="a"), PRODUCER, enc.schema.version)
    datum["attributes"] = {"n": ("ai.govbus.JsonValue", {"json": "[NaN]"})}
    with pytest.raises(DecodeError) as info:
        Decoder().decode(enc.encode_datum(datum))
    assert info.value.reason == "invalid-event"
