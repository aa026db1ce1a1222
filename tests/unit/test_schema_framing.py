"""The Confluent framing without a broker: encoder prefix, decoding through a registry client
(mock or fake), every failure as its DecodeError reason, producer and registry settings."""

from __future__ import annotations

import copy
import io
import json
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import schemaless_writer

from govbus._contract import (
    CONFLUENT_MAGIC,
    Decoder,
    Encoder,
    Framing,
    framing_of,
    load_schema,
    schema_version,
    to_datum,
)
from govbus._registry import (
    RegistryError,
    SchemaIds,
    configured_schema_id,
    connect,
    redact_url,
    registry_schema,
    subject_for,
    writer_schema_id,
)
from govbus._settings import RegistrySettings, load_settings
from govbus.errors import ConfigError, DecodeError
from govbus.event import EventKind, GovernanceEvent, ProducerInfo

PRODUCER = ProducerInfo("kernel", "inst-1", "host-a", "govbus-python/0.1.0")


def _mock() -> Any:
    return connect(RegistrySettings(url=f"mock://{uuid.uuid4().hex}"))


class FakeRegistry:
    """A registry client whose answers the test scripts: a schema, or an exception."""

    def __init__(self, answers: dict[int, Any]) -> None:
        self.answers = answers
        self.calls = 0

    def get_schema(self, schema_id: int) -> Any:
        self.calls += 1
        answer = self.answers.get(schema_id, SchemaRegistryError(404, 40403, "Schema not found"))
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_confluent_prefix_is_magic_and_big_endian_id() -> None:
    encoder = Encoder(schema_id=0x01020304)
    event = GovernanceEvent(agent_id="a")
    value = encoder.encode(event, PRODUCER)
    assert value[:5] == CONFLUENT_MAGIC + b"\x01\x02\x03\x04" == encoder.prefix
    assert framing_of(value) is Framing.CONFLUENT
    assert encoder.framing is Framing.CONFLUENT
    # The body is the same Avro bytes as the single-object value's.
    assert value[5:] == Encoder().encode(event, PRODUCER)[10:]
    with pytest.raises(ValueError, match="unsigned 32-bit"):
        Encoder(schema_id=2**32)


@pytest.mark.parametrize(("writer", "reader"), [(1, 2), (2, 1), (2, 2)])
def test_both_framings_decode_on_one_decoder(writer: int, reader: int) -> None:
    client = _mock()
    subject = subject_for("t")
    schema_id = writer_schema_id(client, subject, schema_version(writer))
    assert writer_schema_id(client, subject, schema_version(writer)) == schema_id  # idempotent
    decoder = Decoder(reader, resolver=SchemaIds(client))
    event = GovernanceEvent(agent_id="a", attributes={"b": b"\xff"})
    for encoder in (Encoder(writer), Encoder(writer, schema_id=schema_id)):
        back = decoder.decode(encoder.encode(event, PRODUCER))
        assert back == event.replace(producer=PRODUCER)
    _, found = decoder.decode_datum(Encoder(writer, schema_id=schema_id).encode(event, PRODUCER))
    assert (found.version, found.schema_id) == (writer, schema_id)  # a shipped schema is recognised


def test_without_a_registry_a_confluent_value_is_refused_not_crashed() -> None:
    with pytest.raises(DecodeError) as info:
        Decoder().decode(Encoder(schema_id=7).encode(GovernanceEvent(agent_id="a"), PRODUCER))
    assert info.value.reason == "no-registry"
    with pytest.raises(DecodeError) as info:
        Decoder(resolver=SchemaIds(FakeRegistry({}))).decode(b"\x00\x00\x01")
    assert info.value.reason == "truncated"


def test_unknown_schema_id_is_reported_and_remembered_briefly() -> None:
    now = [0.0]
    registry = FakeRegistry({})
    decoder = Decoder(resolver=SchemaIds(registry, negative_ttl_s=10, clock=lambda: now[0]))
    value = Encoder(schema_id=4242).encode(GovernanceEvent(agent_id="a"), PRODUCER)
    for _ in range(3):
        with pytest.raises(DecodeError) as info:
            decoder.decode(value)
        assert info.value.reason == "unknown-schema-id"
        assert "4242" in info.value.message
    assert registry.calls == 1  # a burst of poison records is one request
    now[0] = 11.0
    with pytest.raises(DecodeError):
        decoder.decode(value)
    assert registry.calls == 2


@pytest.mark.parametrize(
    "failure",
    [
        SchemaRegistryError(503, 50301, "Service unavailable"),
        SchemaRegistryError(401, 40101, "Unauthorized"),
        ConnectionRefusedError(111, "Connection refused"),
        OSError("timed out"),
    ],
)
def test_an_unreachable_registry_is_transient_and_not_cached(failure: Exception) -> None:
    registry = FakeRegistry({5: failure})
    decoder = Decoder(resolver=SchemaIds(registry))
    value = Encoder(schema_id=5).encode(GovernanceEvent(agent_id="a"), PRODUCER)
    with pytest.raises(DecodeError) as info:
        decoder.decode(value)
    assert info.value.reason == "registry-unavailable"
    registry.answers[5] = registry_schema(schema_version())  # back: the same record now decodes
    assert decoder.decode(value).agent_id == "a"
    assert decoder.decode(value).agent_id == "a"
    assert registry.calls == 2  # found schemas are cached for good


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        (Schema('{"type": "string"}', "AVRO"), "not ai.govbus.GovernanceEvent"),
        (Schema('{"type": "record", "name": "Other", "fields": []}', "AVRO"), "not ai.govbus.GovernanceEvent"),
        (Schema('{"type": "object"}', "JSON"), "JSON schema, not Avro"),
        (Schema("{not json", "AVRO"), "does not parse"),
    ],
)
def test_a_schema_id_naming_something_else_is_incompatible(schema: Schema, why: str) -> None:
    decoder = Decoder(resolver=SchemaIds(FakeRegistry({9: schema})))
    with pytest.raises(DecodeError, match=why) as info:
        decoder.decode(Encoder(schema_id=9).encode(GovernanceEvent(agent_id="a"), PRODUCER))
    assert info.value.reason == "incompatible-schema"


def test_a_newer_writer_schema_from_the_registry_is_read_by_resolution() -> None:
    """A v3 this package does not ship (only the registry has it) reads into v2 and into v1."""
    v3 = copy.deepcopy(schema_version(2).schema)
    v3["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    next(f for f in v3["fields"] if f["name"] == "kind")["type"]["symbols"].append("FUTURE_KIND")
    writer = load_schema(0, v3)
    event = GovernanceEvent(agent_id="a", tenant_id="t", attributes={"b": b"\xff"})
    datum = {**to_datum(event, PRODUCER, 3), "region": "eu", "kind": "FUTURE_KIND"}
    buf = io.BytesIO()
    schemaless_writer(buf, writer.parsed, datum)
    value = b"\x00\x00\x00\x00\x63" + buf.getvalue()
    registry = FakeRegistry({0x63: Schema(json.dumps(v3), "AVRO")})
    for reader in (2, 1):
        decoded, found = Decoder(reader, resolver=SchemaIds(registry)).decode_datum(value)
        assert found.label == "registry schema 99"
        assert decoded["kind"] == "UNKNOWN"
        assert "region" not in decoded
        assert decoded["attributes"] == {"b": b"\xff"}
    assert Decoder(resolver=SchemaIds(registry)).decode(value).tenant_id == "t"


def test_the_producer_gets_its_schema_id_from_the_configured_registry() -> None:
    url = f"mock://{uuid.uuid4().hex}"
    settings = load_settings(
        topic="gov.events", producer={"framing": "confluent", "schema_version": 1}, registry={"url": url}
    )
    schema_id = configured_schema_id(settings)
    client = connect(RegistrySettings(url=url))
    assert client.get_versions("gov.events-value") == [1]
    assert client.get_schema(schema_id).schema_str == registry_schema(schema_version(1)).schema_str
    assert configured_schema_id(load_settings()) is None  # single-object: no registry involved
    with pytest.raises(ConfigError, match="GOVBUS_REGISTRY__URL"):
        configured_schema_id(load_settings(producer={"framing": "confluent"}))


def test_lookup_only_fails_clearly_when_the_schema_is_not_registered() -> None:
    with pytest.raises(RegistryError, match=r"look up schema v2 under 'x-value'.*HTTP 404"):
        writer_schema_id(_mock(), "x-value", schema_version(2), register=False)


def test_registry_settings_build_the_client_config_and_keep_secrets() -> None:
    s = RegistrySettings(url="https://r:8081", basic_auth_user_info="u:secret", ssl_ca_location="/ca.pem", timeout_s=3)
    assert s.client_config() == {
        "url": "https://r:8081",
        "timeout": 3.0,
        "max.retries": 2,
        "basic.auth.user.info": "u:secret",
        "ssl.ca.location": "/ca.pem",
    }
    bearer = RegistrySettings(url="https://r", bearer_token="tok", bearer_logical_cluster="lsrc-1").client_config()
    assert bearer["bearer.auth.credentials.source"] == "STATIC_TOKEN"
    assert (bearer["bearer.auth.token"], bearer["bearer.auth.logical.cluster"]) == ("tok", "lsrc-1")
    assert "secret" not in repr(s)
    with pytest.raises(ConfigError) as info:
        load_settings(registry={"url": "ftp://user:hunter2@r"})
    assert info.value.setting == "GOVBUS_REGISTRY__URL"
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(registry={"basic_auth_user_info": "hunter2"})
    assert info.value.setting == "GOVBUS_REGISTRY__BASIC_AUTH_USER_INFO"
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="not both"):
        load_settings(registry={"basic_auth_user_info": "u:p", "bearer_token": "t"})
    assert redact_url("http://u:p@a:1/x,https://b") == "http://***@a:1/x,https://b"


def test_producer_settings_validate_the_version_and_framing() -> None:
    assert load_settings(producer={"schema_version": 1, "framing": "confluent"}).producer.framing == "confluent"
    with pytest.raises(ConfigError, match="GOVBUS_PRODUCER__SCHEMA_VERSION"):
        load_settings(producer={"schema_version": 9})
    with pytest.raises(ConfigError, match="GOVBUS_PRODUCER__FRAMING"):
        load_settings(producer={"framing": "avro"})


def test_kinds_of_each_version() -> None:
    assert "DATA_EXFILTRATION_DETECTED" not in schema_version(1).kinds
    assert {k.name for k in EventKind} == schema_version(2).kinds
