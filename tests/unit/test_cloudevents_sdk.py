"""govbus's record headers against the CloudEvents Python SDK's Kafka binding (no broker).

The SDK (PyPI ``cloudevents``, a library nobody here wrote) is the judge of the wire contract's
"CloudEvents 1.0, Kafka protocol binding, binary content mode" claim, in both of its APIs: the
long-standing ``cloudevents.v1.kafka`` and the validating ``cloudevents.core.bindings.kafka``.

* govbus → SDK: a govbus record (headers, key, value) read by the SDK's ``from_binary`` gives the
  attributes the wire contract lists, and the Avro value unchanged as the data.
* SDK → govbus: a message the SDK's ``to_binary`` builds for a govbus event is read by govbus's
  header parser and decoder into the same event and attributes as govbus's own record.
* Structured content mode, which govbus does not claim, is refused (``bad-headers``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from _sinks import Rec, sign, signing_pair
from cloudevents.core.bindings import kafka as core_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as CoreCloudEvent
from cloudevents.v1 import kafka as v1_kafka
from cloudevents.v1.http import CloudEvent as V1CloudEvent

from govbus import _cloudevents as ce
from govbus._contract import CONTENT_TYPE, Decoder, Encoder, schema_versions
from govbus._record import InRecord, OutRecord, from_record, to_record
from govbus._sample import sample_events
from govbus.errors import DecodeError
from govbus.event import GovernanceEvent, ProducerInfo

PRODUCER = ProducerInfo("kernel", "inst-1", "host-a", "govbus-python/0.1.0")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class OpaqueData(JSONFormat):
    """The SDK's JSON format, but the data is the Avro bytes as they are (binary mode's contract)."""

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        return body

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        return bytes(data)


def govbus_records() -> list[tuple[GovernanceEvent, OutRecord]]:
    events = list(sample_events(12))
    events.append(GovernanceEvent(agent_id="agent ü/1", occurred_at=datetime(2026, 11, 26, 15, 4, 5, tzinfo=UTC)))
    out = []
    for i, e in enumerate(events):
        for v in schema_versions():
            if e.kind.name not in v.kinds:
                continue
            source = "urn:kernel:k1" if i % 4 == 0 else None
            rec = to_record(e, PRODUCER, Encoder(v.version), source=source, traceparent=TRACEPARENT)
            out.append((e, rec))
    return out


def expected_attributes(e: GovernanceEvent, rec: OutRecord) -> dict[str, str]:
    value = rec.value
    writer = next(v for v in schema_versions() if v.prefix == value[:10])
    attrs = {
        "specversion": "1.0",
        "id": e.event_id,
        "source": dict(rec.headers)[ce.CE_SOURCE].decode(),
        "type": e.ce_type,
        "time": ce.format_time(e.occurred_at),
        "subject": e.agent_id,
        "dataschema": f"urn:avro:crc-64-avro:{writer.fingerprint.hex()}",
        "datacontenttype": "application/avro",
    }
    if e.session_id:
        attrs["sessionid"] = e.session_id
    return attrs


def test_the_sdk_reads_govbus_headers_v1_api() -> None:
    for e, rec in govbus_records():
        msg = v1_kafka.KafkaMessage(dict(rec.headers), rec.key, rec.value)
        event = v1_kafka.from_binary(msg, data_unmarshaller=lambda body: body)
        got = dict(event.get_attributes())
        assert got.pop("partitionkey") == rec.key  # the SDK surfaces the record key as partitionkey
        assert got == expected_attributes(e, rec)
        assert event.get_data() == rec.value
        assert datetime.fromisoformat(got["time"]) == e.occurred_at


def test_the_sdk_reads_govbus_headers_core_api() -> None:
    for e, rec in govbus_records():
        msg = core_kafka.KafkaMessage(headers=dict(rec.headers), key=rec.key, value=rec.value)
        event = core_kafka.from_binary(msg, OpaqueData())  # validates the attributes it reads
        assert isinstance(event, CoreCloudEvent)
        want = expected_attributes(e, rec)
        assert event.get_specversion() == "1.0"
        assert event.get_id() == want["id"]
        assert event.get_source() == want["source"]
        assert event.get_type() == want["type"]
        assert event.get_time() == e.occurred_at
        assert event.get_subject() == want["subject"]
        assert event.get_dataschema() == want["dataschema"]
        assert event.get_datacontenttype() == "application/avro"
        assert event.get_extension("sessionid") == want.get("sessionid")
        assert event.get_data() == rec.value


def test_the_sdk_reads_signed_records() -> None:
    signer, _ = signing_pair()
    recs = [Rec(r.key, r.value, list(r.headers)) for _, r in govbus_records()[:6]]
    for r in sign(recs, signer, partitions=2):
        assert r.value is not None
        binary = [n for n, v in r.headers if n.startswith("govbus_sig")]
        assert binary  # raw bytes: not CloudEvents attributes, so the binding does not cover them
        event = v1_kafka.from_binary(v1_kafka.KafkaMessage(dict(r.headers), r.key, r.value), data_unmarshaller=bytes)
        assert event.get_data() == r.value
        assert not any(a.startswith("govbus") for a in event.get_attributes())
        # The core API decodes every header as UTF-8, not only the binding's (the spec's UTF-8 rule
        # is for attribute headers); docs/wire-contract.md tells its users to pass only those.
        only_ce = {n: v for n, v in r.headers if n.startswith("ce_") or n == "content-type"}
        msg = core_kafka.KafkaMessage(headers=only_ce, key=r.key, value=r.value)
        assert core_kafka.from_binary(msg, OpaqueData()).get_data() == r.value


def sdk_attributes(e: GovernanceEvent, rec: OutRecord) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "specversion": "1.0",
        "id": e.event_id,
        "source": dict(rec.headers)[ce.CE_SOURCE].decode(),
        "type": e.ce_type,
        "subject": e.agent_id,
        "dataschema": dict(rec.headers)[ce.CE_DATASCHEMA].decode(),
        "datacontenttype": CONTENT_TYPE,
    }
    if e.session_id:
        attrs["sessionid"] = e.session_id
    return attrs


def assert_same(got: InRecord, e: GovernanceEvent, rec: OutRecord) -> None:
    own = from_record(rec.value, rec.headers, Decoder())
    assert got.event == own.event == e.replace(producer=PRODUCER)
    assert got.writer == own.writer
    for name in ("specversion", "id", "source", "type", "subject", "dataschema", "datacontenttype"):
        assert getattr(got.attributes, name) == getattr(own.attributes, name), name
    assert got.attributes.extensions == own.attributes.extensions
    assert got.attributes.time is not None
    assert datetime.fromisoformat(got.attributes.time) == e.occurred_at


def test_govbus_reads_what_the_sdk_writes_v1_api() -> None:
    for e, rec in govbus_records():
        attrs = {**sdk_attributes(e, rec), "time": e.occurred_at.isoformat()}
        msg = v1_kafka.to_binary(V1CloudEvent(attrs, rec.value), data_marshaller=lambda data: data)
        headers = list(msg.headers.items())
        assert_same(from_record(msg.value, headers, Decoder()), e, rec)


def test_govbus_reads_what_the_sdk_writes_core_api() -> None:
    for e, rec in govbus_records():
        attrs = {**sdk_attributes(e, rec), "time": e.occurred_at}
        msg = core_kafka.to_binary(CoreCloudEvent(attrs, rec.value), OpaqueData())
        assert msg.headers["content-type"] == b"application/avro"
        headers = list(msg.headers.items())
        assert_same(from_record(msg.value, headers, Decoder()), e, rec)


def test_govbus_reads_an_sdk_message_with_only_the_required_attributes() -> None:
    # The binding's minimum (the SDK adds time): govbus requires no more than specversion, id,
    # source and type (docs/wire-contract.md).
    for e, rec in govbus_records()[:4]:
        attrs = {"id": e.event_id, "source": "/elsewhere", "type": "com.example.other"}
        msg = core_kafka.to_binary(CoreCloudEvent(attrs, rec.value), OpaqueData())
        got = from_record(msg.value, list(msg.headers.items()), Decoder())
        assert got.event == e.replace(producer=PRODUCER)
        assert (got.attributes.source, got.attributes.type) == ("/elsewhere", "com.example.other")
        assert got.attributes.subject is got.attributes.dataschema is got.attributes.datacontenttype is None


def test_structured_mode_is_not_a_govbus_record() -> None:
    e, rec = govbus_records()[0]
    attrs = {**sdk_attributes(e, rec), "time": e.occurred_at}
    msg = core_kafka.to_structured(CoreCloudEvent(attrs, rec.value), OpaqueData())
    with pytest.raises(DecodeError) as err:
        from_record(msg.value, list(msg.headers.items()), Decoder())
    assert err.value.reason in ("bad-headers", "unknown-framing")
