"""Schema evolution on the real broker: producers (the ``Bus``) pinned to v1 or writing v2, in
single-object or Confluent framing, and consumers reading with v2 or v1; both framings on one
topic; the sink runtime dead-lettering unknown fingerprints and schema ids, and holding records
back (not dead-lettering them) while the registry is unreachable.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _sinks import CollectingSink, Rec, produce, wait_for
from confluent_kafka import Consumer

from govbus._contract import Decoder, Encoder, Framing, framing_of, schema_version
from govbus._record import InRecord, from_record, to_record
from govbus._registry import SchemaIds, connect, subject_for, writer_schema_id
from govbus._sample import sample_events
from govbus._settings import GovbusSettings, RegistrySettings, load_settings
from govbus.consumers import SinkRuntime
from govbus.consumers._dlq import read_dead_letters
from govbus.event import V2_FIELDS, EventKind, GovernanceEvent, ProducerInfo
from govbus.producer import Bus

pytestmark = pytest.mark.integration
PRODUCER = ProducerInfo("evolution-tests", uuid.uuid4().hex, "test-host", "govbus-python/test")


def bus_settings(bootstrap: str, topic: str, spool: Path, registry: str, **producer: Any) -> GovbusSettings:
    return load_settings(
        topic=topic,
        kafka={"bootstrap_servers": bootstrap},
        producer={"spool_dir": str(spool), "close_timeout_ms": 30_000, **producer},
        registry={"url": registry},
    )


def v1_events(n: int) -> list[GovernanceEvent]:
    v1_kinds = schema_version(1).kinds
    evs = [e.replace(event_id=uuid.uuid4().hex) for e in sample_events(n, seed=11) if e.kind.name in v1_kinds]
    evs.append(GovernanceEvent(agent_id="agent/bytes", attributes={"raw": b"\xff\xfe\x00", "n": 1}))
    return evs


def v2_events(n: int) -> list[GovernanceEvent]:
    evs = v1_events(n)
    evs += [
        GovernanceEvent(
            agent_id="agent/x",
            kind=EventKind.DATA_EXFILTRATION_DETECTED,
            tenant_id="tenant-1",
            policy_version="bundle-9",
            risk_score=0.9,
            attributes={"raw": b"\x80"},
        ),
        GovernanceEvent(agent_id="agent/y", tenant_id="tenant-2", risk_score=0.0),
    ]
    return evs


def read_all(bootstrap: str, topic: str, decoder: Decoder, expected: int, timeout: float = 60) -> list[InRecord]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"evolution-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    out: list[InRecord] = []
    framings: list[Framing] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    framings.append(framing_of(msg.value()))
                    out.append(from_record(msg.value(), msg.headers() or [], decoder))
    finally:
        consumer.close()
    read_all.framings = framings  # type: ignore[attr-defined]
    return out


def as_read_by(event: GovernanceEvent, reader: int) -> GovernanceEvent:
    expected = event.replace(producer=None)
    if reader == 1:
        expected = expected.replace(**dict.fromkeys(V2_FIELDS))
        if event.kind.name not in schema_version(1).kinds:
            expected = expected.replace(kind=EventKind.UNKNOWN)
    return expected


@pytest.mark.parametrize("framing", ["single-object", "confluent"])
@pytest.mark.parametrize(
    ("writer", "reader"), [(1, 2), (2, 1)], ids=["v1-producer-v2-consumer", "v2-producer-v1-consumer"]
)
def test_producer_and_consumer_of_different_versions_exchange_events(
    framing: str,
    writer: int,
    reader: int,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema_registry_url: str,
    tmp_path: Path,
) -> None:
    topic = new_topic(partitions=3)
    events = v1_events(40) if writer == 1 else v2_events(40)
    settings = bus_settings(
        kafka_bootstrap, topic, tmp_path / "spool", schema_registry_url, schema_version=writer, framing=framing
    )
    with Bus(settings) as bus:
        for e in events:
            bus.emit(e)
        assert bus.flush(60)
    client = connect(RegistrySettings(url=schema_registry_url))
    got = read_all(kafka_bootstrap, topic, Decoder(reader, resolver=SchemaIds(client)), len(events))
    assert {r.event.event_id: r.event.replace(producer=None) for r in got} == {
        e.event_id: as_read_by(e, reader) for e in events
    }
    assert {r.writer.version for r in got} == {writer}
    wanted = Framing.CONFLUENT if framing == "confluent" else Framing.SINGLE_OBJECT
    assert set(read_all.framings) == {wanted}  # type: ignore[attr-defined]
    if framing == "confluent":
        assert {r.writer.schema_id for r in got} == {
            writer_schema_id(client, subject_for(topic), schema_version(writer))
        }
    kinds = {r.event.kind for r in got}
    assert (EventKind.UNKNOWN in kinds) == (writer == 2 and reader == 1)  # the v2 kind, read by v1


def test_a_v1_pinned_producer_refuses_v2_content_at_emit(
    kafka_bootstrap: str, new_topic: Callable[..., str], schema_registry_url: str, tmp_path: Path
) -> None:
    topic = new_topic(partitions=1)
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path / "spool", schema_registry_url, schema_version=1)) as bus:
        with pytest.raises(ValueError, match="field 'kind'"):
            bus.emit(GovernanceEvent(agent_id="a", kind=EventKind.DATA_EXFILTRATION_DETECTED))
        with pytest.raises(ValueError, match="field 'risk_score'"):
            bus.emit(GovernanceEvent(agent_id="a", risk_score=0.5))
        bus.emit(GovernanceEvent(agent_id="a"))
        assert bus.flush(30)
        assert bus.counters().failed == 0


def test_one_topic_carries_both_framings_during_a_migration(
    kafka_bootstrap: str, new_topic: Callable[..., str], schema_registry_url: str, tmp_path: Path
) -> None:
    topic = new_topic(partitions=2)
    old = v1_events(30)
    new = v2_events(30)
    old_settings = bus_settings(kafka_bootstrap, topic, tmp_path / "a", schema_registry_url, schema_version=1)
    new_settings = bus_settings(kafka_bootstrap, topic, tmp_path / "b", schema_registry_url, framing="confluent")
    with Bus(old_settings) as a, Bus(new_settings) as b:
        for x, y in itertools.zip_longest(old, new):
            if x is not None:
                a.emit(x)
            if y is not None:
                b.emit(y)
        assert a.flush(60)
        assert b.flush(60)
    client = connect(RegistrySettings(url=schema_registry_url))
    got = read_all(kafka_bootstrap, topic, Decoder(resolver=SchemaIds(client)), len(old) + len(new))
    assert sorted(r.event.event_id for r in got) == sorted(e.event_id for e in old + new)
    assert set(read_all.framings) == {Framing.SINGLE_OBJECT, Framing.CONFLUENT}  # type: ignore[attr-defined]
    assert {(r.writer.version, r.writer.schema_id is not None) for r in got} == {(1, False), (2, True)}


class Runtime:
    def __init__(self, runtime: SinkRuntime) -> None:
        self.runtime = runtime
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runtime.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.runtime.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


@pytest.fixture
def runtime(kafka_bootstrap: str, schema_registry_url: str) -> Iterator[Callable[..., Runtime]]:
    started: list[Runtime] = []

    def start(sink: Any, topic: str, name: str) -> Runtime:
        settings = load_settings(
            kafka={"bootstrap_servers": kafka_bootstrap},
            topic=topic,
            registry={"url": schema_registry_url, "max_retries": 0},
            sink={"health": {"enabled": False}, "commit_interval_ms": 200, "batch": {"max_wait_ms": 5}},
        )
        r = Runtime(SinkRuntime(sink, settings, name=name, verification=None))
        started.append(r)
        assert r.runtime.assigned.wait(60), "no partitions assigned"
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.stop()


def dead_letters(bootstrap: str, topic: str) -> list[Any]:
    return list(read_dead_letters({"bootstrap.servers": bootstrap}, topic, timeout=2))


def records(events: list[GovernanceEvent], encoder: Encoder) -> list[Rec]:
    out = []
    for e in events:
        r = to_record(e, PRODUCER, encoder)
        out.append(Rec(r.key, r.value, list(r.headers), e.event_id))
    return out


def test_unknown_fingerprint_and_schema_id_are_dead_lettered_by_the_sink_runtime(
    runtime: Callable[..., Runtime], kafka_bootstrap: str, new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic(partitions=1)
    client = connect(RegistrySettings(url=schema_registry_url))
    schema_id = writer_schema_id(client, subject_for(topic), schema_version())
    good = records(v2_events(10)[:5], Encoder()) + records(v2_events(10)[:5], Encoder(schema_id=schema_id))
    template = good[0]
    assert template.value is not None
    unknown_fp = Rec(b"k", b"\xc3\x01" + b"\x5a" * 8 + template.value[10:], list(template.headers))
    unknown_id = Rec(b"k", b"\x00" + (2**31 - 7).to_bytes(4, "big") + template.value[10:], list(template.headers))
    produce(kafka_bootstrap, topic, [*good[:5], unknown_fp, unknown_id, *good[5:]])
    sink = CollectingSink()
    r = runtime(sink, topic, "evolution-poison")
    wait_for(lambda: len(sink.records) >= 10, 60, what="good records of both framings delivered")
    dlq = f"{topic}.dlq.evolution-poison"

    def two_dead_letters() -> list[Any] | None:
        found = dead_letters(kafka_bootstrap, dlq)
        return found if len(found) >= 2 else None

    dead = wait_for(two_dead_letters, 30, what="two dead letters")
    r.stop()
    assert sorted(d.reason for d in dead) == ["decode:unknown-fingerprint", "decode:unknown-schema-id"]
    by_reason = {d.reason: d for d in dead}
    assert "5a5a5a5a5a5a5a5a" in by_reason["decode:unknown-fingerprint"].error["message"]
    assert str(2**31 - 7) in by_reason["decode:unknown-schema-id"].error["message"]
    assert sorted(sink.ids()) == sorted(x.event_id for x in good)  # delivered once each


class FlakyRegistry:
    """The real registry client, unreachable while ``down`` is set."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.down = threading.Event()
        self.refused = 0

    def get_schema(self, schema_id: int) -> Any:
        if self.down.is_set():
            self.refused += 1
            raise ConnectionRefusedError(111, "Connection refused")
        return self.client.get_schema(schema_id)


def test_an_unreachable_registry_holds_records_back_instead_of_dead_lettering_them(
    runtime: Callable[..., Runtime],
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema_registry_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = new_topic(partitions=2)
    client = connect(RegistrySettings(url=schema_registry_url))
    schema_id = writer_schema_id(client, subject_for(topic), schema_version())
    flaky = FlakyRegistry(client)
    flaky.down.set()
    monkeypatch.setattr("govbus.consumers._runtime.resolver_for", lambda _settings: SchemaIds(flaky))
    evs = v2_events(30)
    recs = records(evs, Encoder(schema_id=schema_id))
    produce(kafka_bootstrap, topic, recs)
    sink = CollectingSink()
    r = runtime(sink, topic, "evolution-outage")
    wait_for(lambda: flaky.refused >= 3, 30, what="the runtime retried the registry")
    assert sink.records == []
    flaky.down.clear()
    wait_for(lambda: len(sink.records) >= len(recs), 60, what="every held record delivered once the registry is back")
    r.stop()
    assert sorted(sink.ids()) == sorted(e.event_id for e in evs)  # each once, none lost
    assert dead_letters(kafka_bootstrap, f"{topic}.dlq.evolution-outage") == []
    # Per partition, in offset order: the hold rewound, it did not skip or reorder.
    for p in (0, 1):
        offsets = [x.offset for x in sink.records if x.partition == p]
        assert offsets == sorted(offsets)
