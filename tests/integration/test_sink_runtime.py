"""The sink runtime in-process against a real broker: delivery and commits, poison records and
dead letters, replay after a fix, verification with real signatures, backpressure, retries, traces.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _sinks import CollectingSink, Rec, events, http_get, produce, records, sign, signing_pair, wait_for
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from govbus._settings import load_settings
from govbus.consumers import Batch, RetryLater, SinkRuntime, sink_lag
from govbus.consumers._dlq import read_dead_letters, replay_dead_letters

pytestmark = pytest.mark.integration


class Running:
    """A runtime on a thread; ``stop()`` waits for its orderly shutdown."""

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

    def stop(self, timeout: float = 30) -> None:
        self.runtime.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "runtime did not stop"
        if self.error is not None:
            raise self.error

    def status(self) -> dict[str, Any]:
        url = self.runtime.health_url
        assert url is not None
        return dict(json.loads(http_get(url + "/status")[1]))

    def metric(self, prefix: str) -> float:
        url = self.runtime.health_url
        assert url is not None
        text = http_get(url + "/metrics")[1]
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.fixture
def start(kafka_bootstrap: str) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def run(
        sink: Any, topic: str, name: str = "test", *, sink_settings: dict[str, Any] | None = None, **kw: Any
    ) -> Running:
        s: dict[str, Any] = {
            "health": {"port": 0},
            "commit_interval_ms": 200,
            "batch": {"max_wait_ms": 5},
            "retry": {"initial_backoff_ms": 20, "max_backoff_ms": 200},
            "breaker": {"failure_threshold": 3, "open_ms": 300},
        }
        for k, v in (sink_settings or {}).items():
            s[k] = {**s[k], **v} if isinstance(v, dict) and isinstance(s.get(k), dict) else v
        settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap}, topic=topic, sink=s)
        r = Running(SinkRuntime(sink, settings, name=name, **kw))
        started.append(r)
        assert r.runtime.assigned.wait(60), "no partitions assigned"
        return r

    yield run
    for r in started:
        if r.thread.is_alive():
            r.stop()


def test_delivers_everything_commits_after_ack_and_reports_health(
    start: Callable[..., Running], new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    topic = new_topic(partitions=3)
    recs = records(events(3000))
    produce(kafka_bootstrap, topic, recs)
    sink = CollectingSink()
    r = start(sink, topic, name="it-deliver")
    wait_for(lambda: len(sink.records) >= 3000, 60, what="all records delivered")
    assert sorted(sink.ids()) == sorted(x.event_id for x in recs)  # nothing missing, nothing twice
    assert all(rec.verdict == "unverified" for rec in sink.records)
    url = r.runtime.health_url
    assert url is not None
    assert http_get(url + "/healthz")[0] == 200
    code, body = http_get(url + "/readyz")
    assert code == 200
    assert json.loads(body)["group"] == "govbus.sink.it-deliver"
    wait_for(lambda: r.metric("govbus_sink_records_delivered_total") == 3000, 10)
    assert r.metric("govbus_sink_records_consumed_total") == 3000
    # Committed = the end of every partition, once the sink has flushed.
    wait_for(lambda: sink_lag({"bootstrap.servers": kafka_bootstrap}, groups=["govbus.sink.it-deliver"])[0].total == 0,
             20, what="lag 0")  # fmt: skip
    r.stop()
    assert sink.closed
    assert sink.flushes >= 1
    lag = sink_lag({"bootstrap.servers": kafka_bootstrap}, groups=["govbus.sink.it-deliver"])[0]
    assert [(p.partition, p.lag) for p in lag.partitions if p.topic == topic] == [(0, 0), (1, 0), (2, 0)]
    assert sum(p.end for p in lag.partitions if p.topic == topic) == 3000


def test_poison_records_are_dead_lettered_and_a_replay_after_the_fix_is_delivered(
    start: Callable[..., Running], new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    topic = new_topic(partitions=2)
    good = records(events(200))
    big_event = events(1)[0].replace(attributes={"blob": "x" * 20_000})
    big = records([big_event])[0]
    template = good[0]
    assert template.value is not None
    poison = [
        Rec(b"k", b"garbage bytes", list(template.headers)),
        Rec(b"k", b"\xc3\x01" + b"\x11" * 8 + b"body", list(template.headers)),  # unknown schema fingerprint
        Rec(b"k", template.value[:30], list(template.headers)),  # truncated Avro body
        big,  # oversize for this sink
    ]
    produce(kafka_bootstrap, topic, good[:100] + poison + good[100:])
    sink = CollectingSink()
    name = "it-poison"
    r = start(sink, topic, name=name, sink_settings={"max_record_bytes": 10_000})
    wait_for(lambda: len(sink.records) >= 200, 60, what="good records delivered past the poison")
    wait_for(lambda: r.metric("govbus_sink_records_dead_lettered_total") == 4, 20)
    r.stop()
    conf = {"bootstrap.servers": kafka_bootstrap}
    dead = list(read_dead_letters(conf, f"{topic}.dlq.{name}"))
    assert sorted(d.reason or "" for d in dead) == [
        "decode:corrupt-body",
        "decode:unknown-fingerprint",
        "decode:unknown-framing",
        "oversize",
    ]
    by_reason = {d.reason: d for d in dead}
    oversize = by_reason["oversize"]
    assert oversize.value == big.value
    assert oversize.key == big.key
    err = oversize.error
    assert err["topic"] == topic
    assert err["sink"] == name
    assert err["group"] == f"govbus.sink.{name}"
    assert int(err["partition"]) in (0, 1)
    assert int(err["offset"]) >= 0
    assert err["time"].endswith("Z")
    assert oversize.event_id == big.event_id
    for name_, value in template.headers:  # original headers are kept
        if name_ == "ce_specversion":
            assert (name_, value) in by_reason["decode:unknown-fingerprint"].headers
    assert by_reason["decode:corrupt-body"].error["exception"] == "govbus.errors.DecodeError"

    # The cause is fixed (the limit raised); replaying the oversize dead letter delivers it.
    fixed = CollectingSink()
    r2 = start(fixed, topic, name=name, sink_settings={"max_record_bytes": 100_000})
    report = replay_dead_letters(
        conf, f"{topic}.dlq.{name}", f"{topic}.replay.{name}", group=f"govbus.dlq-replay.{name}", reason="oversize"
    )
    assert report.replayed == 1
    assert report.passed_over == 3
    wait_for(lambda: big.event_id in fixed.ids(), 30, what="replayed record delivered")
    assert fixed.ids() == [big.event_id]  # nothing else was redelivered
    again = replay_dead_letters(
        conf, f"{topic}.dlq.{name}", f"{topic}.replay.{name}", group=f"govbus.dlq-replay.{name}"
    )
    assert again.replayed == 0  # each dead letter is replayed once
    r2.stop()


def test_legacy_fingerprint_order_is_delivered_and_counted(
    start: Callable[..., Running], new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    # govbus 0.1.0 wrote the single-object fingerprint byte-reversed; such records still deliver,
    # and /metrics counts them so an operator knows when none are left (docs/wire-contract.md).
    topic = new_topic(partitions=1)
    good = records(events(20))
    legacy = [
        Rec(r.key, r.value[:2] + r.value[2:10][::-1] + r.value[10:], r.headers, r.event_id)
        for r in records(events(7, seed=11))
        if r.value is not None
    ]
    produce(kafka_bootstrap, topic, good[:10] + legacy + good[10:])
    sink = CollectingSink()
    r = start(sink, topic, name="it-legacy-fp")
    wait_for(lambda: len(sink.records) >= 27, 60, what="all records delivered")
    wait_for(lambda: r.metric("govbus_sink_records_legacy_fingerprint_total") == 7, 20, what="legacy records counted")
    assert r.metric("govbus_sink_records_dead_lettered_total") == 0
    r.stop()
    assert sorted(sink.ids()) == sorted(x.event_id or "" for x in good + legacy)


def test_signatures_are_verified_and_a_fixed_keyring_lets_a_replay_through(
    start: Callable[..., Running], new_topic: Callable[..., str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    from govbus.signing import KeyEntry

    topic = new_topic(partitions=3)
    signer, keyring = signing_pair("trusted")
    stranger, stranger_ring = signing_pair("newcomer")
    keyring_path = tmp_path / "keyring.json"
    keyring.save(keyring_path)
    good = sign(records(events(90)), signer, partitions=3)
    tampered = sign(records(events(1)), signer, partitions=3)[0]
    assert tampered.value is not None
    tampered.value = tampered.value[:-1] + bytes([tampered.value[-1] ^ 1])
    unknown = sign(records(events(1)), stranger, partitions=3)[0]
    produce(kafka_bootstrap, topic, [*good[:45], tampered, unknown, *good[45:]])
    sink = CollectingSink()
    name = "it-verify"
    r = start(sink, topic, name=name, sink_settings={"verify": {"keyring": str(keyring_path)}})
    wait_for(lambda: len(sink.records) >= 90, 60)
    assert {rec.verdict for rec in sink.records} == {"valid"}
    wait_for(lambda: r.metric("govbus_sink_records_dead_lettered_total") == 2, 20)
    conf = {"bootstrap.servers": kafka_bootstrap}
    dead = {d.reason: d for d in read_dead_letters(conf, f"{topic}.dlq.{name}")}
    assert set(dead) == {"verify:bad-signature", "verify:unknown-kid"}
    assert dead["verify:unknown-kid"].error["verdict"] == "unknown-kid"
    assert "newcomer" in dead["verify:unknown-kid"].error["message"]

    # The fix: the newcomer's public key is added to the keyring file; the running sink reloads it.
    entry = stranger_ring["newcomer"]
    keyring.add(KeyEntry(entry.kid, entry.public_key))
    time.sleep(0.01)  # a distinct mtime on coarse-grained file systems
    keyring.save(keyring_path)
    verification = r.runtime.verification
    assert verification is not None
    wait_for(lambda: "newcomer" in verification.verifier.keyring, 10, what="keyring reloaded")  # type: ignore[attr-defined]
    report = replay_dead_letters(
        conf,
        f"{topic}.dlq.{name}",
        f"{topic}.replay.{name}",
        group=f"govbus.dlq-replay.{name}",
        reason="verify:unknown",
    )
    assert report.replayed == 1
    wait_for(lambda: unknown.event_id in sink.ids(), 30, what="replayed record delivered")
    replayed = next(rec for rec in sink.records if rec.event.event_id == unknown.event_id)
    assert replayed.verdict == "valid"
    assert replayed.topic == f"{topic}.replay.{name}"
    r.stop()


def test_backpressure_pauses_within_the_budget_and_resumes(
    start: Callable[..., Running], new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    topic = new_topic(partitions=3)
    recs = records(events(4000))
    produce(kafka_bootstrap, topic, recs)
    gate = threading.Event()
    peak = {"inflight": 0}

    def blocked(call: int, batch: Batch) -> None:
        gate.wait(60)

    sink = CollectingSink(blocked)
    r = start(sink, topic, name="it-pressure",
              sink_settings={"inflight": {"max_records": 300}, "batch": {"max_records": 100},
                             "health": {"stuck_after_s": 1.0}})  # fmt: skip
    wait_for(lambda: r.status()["paused"], 30, what="partitions paused")
    for _ in range(10):  # stays bounded while the sink is stuck
        st = r.status()
        peak["inflight"] = max(peak["inflight"], st["inflight_records"])
        time.sleep(0.05)
    assert peak["inflight"] <= 300
    assert r.metric("govbus_sink_pauses_total") >= 1
    assert r.metric("govbus_sink_partitions_paused") == 4  # 3 + the replay topic's one
    lag = sink_lag({"bootstrap.servers": kafka_bootstrap}, groups=["govbus.sink.it-pressure"])[0]
    assert lag.total > 3000
    url = r.runtime.health_url
    assert url is not None
    wait_for(lambda: http_get(url + "/readyz")[0] == 503, 10, what="stuck sink reported not ready")
    assert r.status()["stuck"]
    assert http_get(url + "/healthz")[0] == 200
    gate.set()
    wait_for(lambda: len(sink.records) >= 4000, 60, what="all delivered after the sink recovered")
    assert not r.status()["paused"]
    wait_for(lambda: http_get(url + "/readyz")[0] == 200, 10, what="ready again")
    assert sorted(sink.ids()) == sorted(x.event_id for x in recs)
    r.stop()


@pytest.mark.parametrize("pause_after_ms", [60_000, 0], ids=["waits", "pauses-at-once"])
def test_a_sink_slower_than_its_intake_is_waited_for_not_paused(
    start: Callable[..., Running], new_topic: Callable[..., str], kafka_bootstrap: str, pause_after_ms: int
) -> None:
    # The budget fills on every batch (the sink takes 20 ms per 100 records), but it is never full
    # for long: the consume loop waits for the sink instead of pausing (pausing would throw away
    # librdkafka's pre-fetched records and stall ~1 s at every resume), and stays within the budget.
    topic = new_topic(partitions=3)
    recs = records(events(2000))
    produce(kafka_bootstrap, topic, recs)
    running: list[Running] = []
    peak = {"inflight": 0}

    def slow(call: int, batch: Batch) -> None:
        if running:
            peak["inflight"] = max(peak["inflight"], running[0].runtime._inflight_records)
        time.sleep(0.02)  # a slow destination, not a wait for an event

    sink = CollectingSink(slow)
    budget = {"inflight": {"max_records": 300, "pause_after_ms": pause_after_ms}, "batch": {"max_records": 100}}
    running.append(start(sink, topic, name=f"it-slow-{pause_after_ms}", sink_settings=budget))
    r = running[0]
    wait_for(lambda: len(sink.records) >= 2000, 120, what="all delivered")
    assert sorted(sink.ids()) == sorted(x.event_id for x in recs)
    assert peak["inflight"] <= 300
    if pause_after_ms:
        assert r.metric("govbus_sink_pauses_total") == 0
        assert peak["inflight"] >= 200  # the budget did fill: the loop waited at it
    else:
        assert r.metric("govbus_sink_pauses_total") >= 1
    r.stop()


def test_retry_later_backs_off_pauses_and_loses_nothing(
    start: Callable[..., Running], new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    topic = new_topic(partitions=2)
    recs = records(events(500))
    produce(kafka_bootstrap, topic, recs)
    sink = CollectingSink(lambda call, batch: RetryLater(0.05, "rate limited") if call <= 8 else None)
    r = start(sink, topic, name="it-retry")
    wait_for(lambda: len(sink.records) >= 500, 60)
    assert sorted(sink.ids()) == sorted(x.event_id for x in recs)
    assert r.metric("govbus_sink_records_retried_total") > 0
    assert r.metric('govbus_sink_write_failures_total{kind="retry-later"') == 8
    assert r.metric("govbus_sink_pauses_total") >= 1
    r.stop()


def test_consumer_span_links_to_the_producer_span(
    start: Callable[..., Running], new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, records(events(5)))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = CollectingSink()
    r = start(sink, topic, name="it-trace", tracer_provider=provider)
    wait_for(lambda: len(sink.records) >= 5, 30)
    r.stop()
    spans = [s for s in exporter.get_finished_spans() if s.name == "govbus.sink.write it-trace"]
    links = [link for s in spans for link in s.links]
    assert len(links) == 5
    assert {format(link.context.trace_id, "032x") for link in links} == {"ab" * 16}
    assert spans[0].attributes is not None
    assert spans[0].attributes["messaging.consumer.group.name"] == "govbus.sink.it-trace"


FENCED = (
    "Fatal error: Broker: Static consumer fenced by other consumer with same group.instance.id: "
    "OffsetCommit failed: Broker: Static consumer fenced by other consumer with same group.instance.id"
)


def test_fenced_by_its_own_rejoin_after_a_lost_assignment_rejoins_and_loses_nothing(
    start: Callable[..., Running], new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    """librdkafka#3437, seen with 2 of 3 brokers down: the session timed out on the client's side
    (partitions lost), its rejoin under the same id took the seat, and the old member's in-flight
    commit came back FENCED_INSTANCE_ID as a fatal error. librdkafka's error is injected the way it
    reports it (the error callback); the consumer it makes unusable is replaced for real."""
    from confluent_kafka import KafkaError

    topic = new_topic(partitions=3)
    first = records(events(500, seed=1))
    produce(kafka_bootstrap, topic, first)
    sink = CollectingSink()
    r = start(sink, topic, name="it-selffence", sink_settings={"group_instance_id": "selffence"})
    wait_for(lambda: len(sink.records) >= 500, 60, what="the first records delivered")
    old = r.runtime._consumer
    r.runtime._fences.assignment_lost()  # what on_lost reports when the session timed out
    r.runtime._on_error(KafkaError(KafkaError._FATAL, FENCED))
    wait_for(lambda: r.runtime._consumer is not old and r.runtime.assigned.is_set(), 60,
             what="a new consumer, assigned")  # fmt: skip
    second = records(events(500, seed=2))
    produce(kafka_bootstrap, topic, second)
    wanted = {x.event_id for x in first + second}
    wait_for(lambda: wanted <= set(sink.ids()), 60, what="every record delivered after the rejoin")
    assert r.thread.is_alive()
    assert r.error is None
    wait_for(lambda: r.metric("govbus_sink_rejoins_total") == 1, 10, what="the rejoin counted")
    r.stop()


def test_fenced_while_healthy_stops_and_names_the_instance_id_setting(
    start: Callable[..., Running], new_topic: Callable[..., str]
) -> None:
    """No lost assignment before it: another live process took the seat; rejoining would fence it
    back, so the sink stops and says which setting to fix."""
    from confluent_kafka import KafkaError

    topic = new_topic(partitions=1)
    r = start(CollectingSink(), topic, name="it-fenced", sink_settings={"group_instance_id": "fenced"})
    r.runtime._on_error(KafkaError(KafkaError._FATAL, FENCED))
    r.thread.join(30)
    assert not r.thread.is_alive()
    assert r.error is not None
    assert "GOVBUS_SINK__GROUP_INSTANCE_ID" in str(r.error)


def test_a_sink_stopping_on_a_fatal_dead_letter_producer_marks_the_held_partition(
    kafka_bootstrap: str, new_topic: Callable[..., str], start: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead-letter producer going fatal mid-write (fault-injected: on a plain broker librdkafka
    cannot be made fatal on demand; tests/integration/test_dlq_acl.py has the real ACL refusal): the
    sink exits without committing past the record, and its last commit carries the mark the
    watchdog raises ``dlq-failed`` from."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    from govbus._dlqmark import parse_mark
    from govbus.consumers._dlq import DeadLetterer
    from govbus.consumers._errors import DeadLetterFatalError

    def fatal(self: DeadLetterer, items: Any, **_: Any) -> Any:
        raise DeadLetterFatalError("sink fatal: the dead-letter producer failed fatally: CLUSTER_AUTHORIZATION_FAILED")

    monkeypatch.setattr(DeadLetterer, "send", fatal)
    topic = new_topic(partitions=1)
    good = records(events(2))
    produce(kafka_bootstrap, topic, [good[0], Rec(key=b"a", value=b"garbage", headers=[]), good[1]])
    r = start(
        CollectingSink(), topic, "fatal", sink_settings={"verify": {"mode": "off"}, "auto_offset_reset": "earliest"}
    )
    r.thread.join(60)
    assert not r.thread.is_alive()
    assert r.error is not None
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    request = [ConsumerGroupTopicPartitions(r.runtime.group_id, [TopicPartition(topic, 0)])]
    (tp,) = admin.list_consumer_group_offsets(request)[r.runtime.group_id].result(10).topic_partitions
    assert tp.offset == 1  # held at the garbage record: nothing committed past it
    mark = parse_mark(tp.metadata)
    assert mark is not None
    assert mark.record == 1
    assert mark.dlq == r.runtime.dlq_topic
    assert "CLUSTER_AUTHORIZATION_FAILED" in mark.error
