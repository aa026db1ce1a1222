"""Against the session's schema registry (a real Apicurio Registry ccompat API when it runs here,
else confluent-kafka's mock): interoperation with confluent-kafka's own Avro serialisers, and
``govbus schemas`` managing a subject."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from govbus._cli import main
from govbus._contract import Decoder, Encoder, from_datum, schema_version, to_datum
from govbus._registry import SchemaIds, connect, registry_schema, subject_for, writer_schema_id
from govbus._settings import RegistrySettings
from govbus.event import EventKind, GovernanceEvent, ProducerInfo

pytestmark = pytest.mark.integration
PRODUCER = ProducerInfo("interop", "i-1", "host", "govbus-python/test")


def test_values_of_confluents_avro_serialiser_and_ours_are_interchangeable(schema_registry_url: str) -> None:
    client = connect(RegistrySettings(url=schema_registry_url))
    topic = f"interop-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    v2 = registry_schema(schema_version(2))
    serializer = AvroSerializer(client, v2.schema_str, lambda e, _ctx: to_datum(e, PRODUCER, 2))
    event = GovernanceEvent(
        agent_id="a",
        kind=EventKind.DATA_EXFILTRATION_DETECTED,
        tenant_id="t",
        risk_score=0.4,
        attributes={"b": b"\xff"},
    )
    theirs = serializer(event, ctx)
    assert theirs is not None
    schema_id = writer_schema_id(client, subject_for(topic), schema_version(2))
    ours = Encoder(2, schema_id=schema_id).encode(event, PRODUCER)
    assert theirs == ours  # same subject, same schema text, same id, same Avro body

    # Confluent's bytes through our decoder, at both reader versions.
    assert Decoder(resolver=SchemaIds(client)).decode(theirs) == event.replace(producer=PRODUCER)
    assert Decoder(1, resolver=SchemaIds(client)).decode(theirs).kind is EventKind.UNKNOWN

    # Our bytes through Confluent's deserialiser, reading with the v1 schema (a v1 consumer).
    v1 = registry_schema(schema_version(1)).schema_str
    deserializer = AvroDeserializer(client, v1, lambda d, _ctx: from_datum(d))
    plain = event.replace(attributes={"s": "x"})  # fastavro's resolution misreads bytes: contract.py
    back = deserializer(Encoder(2, schema_id=schema_id).encode(plain, PRODUCER), ctx)
    assert isinstance(back, GovernanceEvent)
    assert back.kind is EventKind.UNKNOWN
    assert back.tenant_id is None
    assert back.attributes == {"s": "x"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["schemas", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_cli_manages_a_subject(
    schema_registry_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subject = f"cli-{uuid.uuid4().hex[:8]}-value"
    reg = ["--registry-url", schema_registry_url, "--subject", subject]
    mock = schema_registry_url.startswith("mock://")
    if not mock:
        assert run(capsys, "set-compatibility", "FULL_TRANSITIVE", *reg)[0] == 0
    code, out = run(capsys, "register", *reg)
    assert code == 0, out
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["v1", "v2"]
    code, listing = run(capsys, "list", *reg)
    assert "2 version(s)" in listing
    assert "= shipped v1" in listing
    assert "= shipped v2" in listing
    if not mock:
        assert "compatibility FULL_TRANSITIVE" in listing
    assert run(capsys, "check", "--against-registry", *reg)[0] == 0
    code, _ = run(capsys, "pull", *reg, "--dir", str(tmp_path))
    assert code == 0
    assert json.loads((tmp_path / f"{subject}.v2.avsc").read_text()) == schema_version(2).schema

    # A breaking candidate: refused locally against the registry's history, and (a real
    # registry enforcing FULL_TRANSITIVE) by the registry itself.
    broken: dict[str, Any] = copy.deepcopy(schema_version(2).schema)
    next(f for f in broken["fields"] if f["name"] == "latency_ms")["type"] = "string"
    path = tmp_path / "broken.avsc"
    path.write_text(json.dumps(broken))
    code, out = run(capsys, "check", "--against-registry", "--candidate", str(path), *reg)
    assert code == 1
    assert "field 'latency_ms' changed type double → string" in out
    if not mock:
        client = connect(RegistrySettings(url=schema_registry_url))
        with pytest.raises(SchemaRegistryError) as info:
            client.register_schema(subject, Schema(json.dumps(broken), "AVRO"))
        assert getattr(info.value, "http_status_code", None) in (409, 422)
