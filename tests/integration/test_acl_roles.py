"""Each role's ACLs found by test on the secure broker: a principal holding exactly ``govbus acl``'s
plan (applied with its own code) does the role's whole job; for the kernel and a sink, the plan minus
any single entry fails, with an error naming the missing ACL; and each principal is refused what
its role must not do (a kernel reads, a sink writes the topic or uses another sink's group, a gate
writes)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _acl_support import principal as _principal
from _acl_support import produce_as_admin as _produce_as_admin
from _acl_support import scram_kafka as _kafka
from _kafka import SecureKafka, create_topic
from _sinks import CollectingSink, events, records, wait_for
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from govbus._acl import AclEntry, AclError, apply_plan, parse_role, plan
from govbus._admin import ensure_topic
from govbus._sample import sample_events
from govbus._settings import load_settings
from govbus.consumers import SinkRuntime, sink_lag
from govbus.consumers._dlq import read_dead_letters, replay_dead_letters
from govbus.consumers._errors import SinkError
from govbus.consumers._settings import SinkRuntimeSettings
from govbus.gate import BusProbe, parse_policy
from govbus.producer import Bus

pytestmark = pytest.mark.integration

_POISON = b"not an avro record"
_SINK_SETTINGS: dict[str, Any] = {
    "health": {"enabled": False},
    "commit_interval_ms": 100,
    "batch": {"max_wait_ms": 5},
    "dlq": {"create_topics": False},
}


def _committed(secure: SecureKafka, group: str, topic: str, partitions: int) -> list[int]:
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])]
    result = secure.admin.list_consumer_group_offsets(request, request_timeout=10)[group].result(10)
    return [tp.offset for tp in result.topic_partitions]


def _read_as_admin(secure: SecureKafka, topic: str, want: int, timeout: float = 10.0) -> list[bytes | None]:
    """The first records of partition 0 of ``topic``: ``want`` of them, or fewer after ``timeout``."""
    consumer = Consumer({**secure.admin_config(), "group.id": "acl-test-reader", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[bytes | None] = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                out.append(msg.value())
        return out
    finally:
        consumer.close()


# -- kernel ------------------------------------------------------------------------------------------
def _kernel_job(secure: SecureKafka, topic: str, user: str, password: str, spool: Path, timeout: float) -> str | None:
    """Emit 5 events and see them acknowledged; None on success, else the Bus's health reason."""
    settings = load_settings(
        topic=topic,
        kafka=_kafka(secure, user, password),
        producer={"spool_dir": str(spool), "close_timeout_ms": 1_000},
    )
    bus = Bus(settings)
    try:
        for event in sample_events(5, seed=11):
            bus.emit(event)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if bus.counters().delivered == 5 and bus.health().ok:
                return None
            health = bus.health()
            if health.cause in ("auth", "authorization"):
                return health.reason
            time.sleep(0.05)
        return f"timed out: {bus.health().reason}"
    finally:
        bus.close(timeout=1)


def test_kernel_plan_is_exactly_what_the_kernel_needs(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    topic = secure_kafka.new_topic(3, prefix="aclkernel")
    entries = plan(parse_role("kernel"), topic=topic)
    assert entries == [AclEntry("TOPIC", topic, "WRITE")]
    user, password = _principal(secure_kafka, entries)
    assert _kernel_job(secure_kafka, topic, user, password, tmp_path / "ok", 30) is None
    # Least privilege: without any one entry the job fails, and the reason names the ACL.
    for missing in entries:
        rest = [e for e in entries if e != missing]
        user, password = _principal(secure_kafka, rest)
        reason = _kernel_job(secure_kafka, topic, user, password, tmp_path / f"no-{missing.operation}", 30)
        assert reason is not None, missing
        assert reason.startswith("authorization:"), reason
        assert f"User:{user}" in reason, reason


def test_kernel_cannot_read_the_topic(secure_kafka: SecureKafka) -> None:
    topic = secure_kafka.new_topic(1, prefix="aclkernel")
    _produce_as_admin(secure_kafka, topic, [(b"k", b"v", None)])
    user, password = _principal(secure_kafka, plan(parse_role("kernel"), topic=topic))
    consumer = Consumer({**secure_kafka.scram_config(user, password), "group.id": "kernel-peek"})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        seen: list[Any] = []

        def refused() -> bool:
            msg = consumer.poll(0.2)
            if msg is not None:
                seen.append(msg.error() or msg.value())
            return any(isinstance(x, KafkaError) and x.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED for x in seen)

        wait_for(refused, 30, what="TOPIC_AUTHORIZATION_FAILED")
        assert not [x for x in seen if isinstance(x, bytes)]
    finally:
        consumer.close()


# -- sink --------------------------------------------------------------------------------------------
class _SinkJob:
    """The sink role's whole job: consume the event topic and its replay topic as its own group,
    dead-letter a poison record, commit everything. Topics are made by the operator (the admin)."""

    def __init__(self, secure: SecureKafka, name: str) -> None:
        self.secure = secure
        self.name = name
        self.topic = secure.new_topic(2, prefix="aclsink")
        s = SinkRuntimeSettings.model_validate(_SINK_SETTINGS)
        self.group = s.group_for(name)
        self.dlq = create_topic(secure.admin, s.dlq_topic(self.topic, name), 1)
        self.replay = create_topic(secure.admin, s.replay_topic(self.topic, name), 1)
        recs = records(events(4, seed=5))
        _produce_as_admin(secure, self.topic, [(r.key, r.value, r.headers) for r in recs[:3]] + [(b"p", _POISON, None)])
        _produce_as_admin(secure, self.replay, [(recs[3].key, recs[3].value, recs[3].headers)])
        self.ids = sorted(r.event_id or "" for r in recs)

    def plan(self) -> list[AclEntry]:
        s = SinkRuntimeSettings.model_validate(_SINK_SETTINGS)
        return plan(parse_role(f"sink:{self.name}"), topic=self.topic, sink_settings=s)

    def run(self, user: str, password: str, timeout: float = 30) -> BaseException | None:
        """None when the job is done; else the error the runtime stopped with."""
        settings = load_settings(topic=self.topic, kafka=_kafka(self.secure, user, password), sink=_SINK_SETTINGS)
        sink = CollectingSink()
        runtime = SinkRuntime(sink, settings, name=self.name, verification=None)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                runtime.run()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            wait_for(
                lambda: errors or (sorted(sink.ids()) == self.ids and self._all_committed()),
                timeout,
                what=f"sink {self.name} to finish its job or fail",
            )
        finally:
            runtime.stop()
            thread.join(30)
        assert not thread.is_alive()
        return errors[0] if errors else None

    def _all_committed(self) -> bool:
        return (
            _committed(self.secure, self.group, self.topic, 2) == self._ends(self.topic, 2)
            and _committed(self.secure, self.group, self.replay, 1) == [1]
            and _read_as_admin(self.secure, self.dlq, 1) == [_POISON]
        )

    def _ends(self, topic: str, partitions: int) -> list[int]:
        from confluent_kafka.admin import OffsetSpec

        futures = self.secure.admin.list_offsets(
            {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}, request_timeout=10
        )
        return [f.result(10).offset for _tp, f in sorted(futures.items(), key=lambda kv: kv[0].partition)]


def test_sink_plan_is_exactly_what_the_sink_needs(secure_kafka: SecureKafka) -> None:
    job = _SinkJob(secure_kafka, f"acl{uuid.uuid4().hex[:6]}")
    entries = job.plan()
    assert {(e.resource, e.name, e.operation) for e in entries} == {
        ("TOPIC", job.topic, "READ"),
        ("TOPIC", job.replay, "READ"),
        ("GROUP", job.group, "READ"),
        ("TOPIC", job.dlq, "WRITE"),
    }
    user, password = _principal(secure_kafka, entries)
    assert job.run(user, password) is None


@pytest.mark.parametrize("missing", ["topic-READ", "replay-READ", "group-READ", "dlq-WRITE"])
def test_sink_plan_without_any_one_acl_fails_naming_it(secure_kafka: SecureKafka, missing: str) -> None:
    job = _SinkJob(secure_kafka, f"acl{uuid.uuid4().hex[:6]}")
    names = {"topic": job.topic, "replay": job.replay, "group": job.group, "dlq": job.dlq}
    what, operation = missing.split("-")
    dropped = next(e for e in job.plan() if e.name == names[what] and e.operation == operation)
    user, password = _principal(secure_kafka, [e for e in job.plan() if e != dropped])
    error = job.run(user, password)
    assert isinstance(error, SinkError), error
    message = str(error)
    assert f"User:{user}" in message, message
    assert f"{operation} on {dropped.resource} {dropped.name}" in message or f"{operation} on {dropped.name}" in (
        message
    ), message


def test_sink_cannot_write_the_topic_nor_use_another_sinks_group(secure_kafka: SecureKafka) -> None:
    job = _SinkJob(secure_kafka, f"acl{uuid.uuid4().hex[:6]}")
    user, password = _principal(secure_kafka, job.plan())
    conf = secure_kafka.scram_config(user, password)
    # Write the event topic: refused (its WRITE on its dead-letter topic gets it a producer id, no more).
    producer = Producer({**conf, "acks": "all"})
    outcome: list[KafkaError | None] = []
    producer.produce(job.topic, b"forged", on_delivery=lambda err, _m: outcome.append(err))
    producer.flush(30)
    assert outcome
    assert outcome[0] is not None
    assert outcome[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, outcome[0]
    # Its own dead-letter topic: allowed.
    producer.produce(job.dlq, b"dead letter", on_delivery=lambda err, _m: outcome.append(err))
    producer.flush(30)
    assert outcome[1] is None, outcome[1]
    # Join another sink's group: refused.
    other = "govbus.sink.someone-else"
    consumer = Consumer({**conf, "group.id": other, "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([job.topic])
        error = wait_for(lambda: (m := consumer.poll(0.2)) is not None and m.error(), 30, what="a refusal")
        assert error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error
    finally:
        consumer.close()
    # Commit offsets for it (without joining, as an admin client would): refused too.
    admin = AdminClient(conf)
    request = [ConsumerGroupTopicPartitions(other, [TopicPartition(job.topic, 0, 1)])]
    with pytest.raises(KafkaException) as raised:
        admin.alter_consumer_group_offsets(request, request_timeout=10)[other].result(15)
    assert raised.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, raised.value


# -- gate --------------------------------------------------------------------------------------------
def test_gate_plan_checks_everything_and_cannot_write(secure_kafka: SecureKafka) -> None:
    topic = secure_kafka.new_topic(2, prefix="aclgate")
    entries = plan(parse_role("gate"), topic=topic, sinks=["audit"], require_min_isr=True)
    user, password = _principal(secure_kafka, entries)
    settings = load_settings(topic=topic, kafka=_kafka(secure_kafka, user, password))
    policy = parse_policy(
        {
            "debounce": 1,
            "checks": {
                "broker": {"timeout_s": 5},
                "topic": {"require_min_isr": True},
                "sinks": [{"name": "audit", "max_lag": 100}],
                "producer": {"enabled": False},
                "signing": {"enabled": False},
            },
        }
    )
    results = {r.name: r for r in BusProbe(settings.kafka.librdkafka(), topic).run(policy)}
    assert results["broker"].ok, results
    assert results["topic"].ok, results
    # No sink runs: the check answers (no members), it is not refused.
    assert not results["sink:audit"].ok
    assert "live member(s)" in results["sink:audit"].reason, results
    producer = Producer({**secure_kafka.scram_config(user, password), "acks": "all", "enable.idempotence": False})
    outcome: list[KafkaError | None] = []
    producer.produce(topic, b"x", on_delivery=lambda err, _m: outcome.append(err))
    producer.flush(30)
    assert outcome
    assert outcome[0] is not None
    assert outcome[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


# -- admin -------------------------------------------------------------------------------------------
def test_admin_plan_runs_the_operator_commands(secure_kafka: SecureKafka) -> None:
    topic = f"acladmin-{uuid.uuid4().hex[:8]}"
    sinks = ["file"]
    entries = plan(parse_role("admin"), topic=topic, sinks=sinks)
    user, password = _principal(secure_kafka, entries)
    conf = load_settings(topic=topic, kafka=_kafka(secure_kafka, user, password)).kafka.librdkafka()
    s = SinkRuntimeSettings()
    dlq, replay = s.dlq_topic(topic, "file"), s.replay_topic(topic, "file")
    # topics create
    assert ensure_topic(conf, topic, partitions=2, timeout=30) == 2
    for name in (dlq, replay):
        ensure_topic(conf, name, partitions=1, timeout=30)
    # acl apply (for another principal)
    other, _ = secure_kafka.add_scram_user()
    assert apply_plan(conf, f"User:{other}", plan(parse_role("kernel"), topic=topic)) == 1
    # dlq inspect and replay
    _produce_as_admin(secure_kafka, dlq, [(b"k", b"dead", [("govbus.error.reason", b"decode:x")])])
    assert [d.value for d in read_dead_letters(conf, dlq)] == [b"dead"]
    report = replay_dead_letters(conf, dlq, replay, group="govbus.dlq-replay.file")
    assert report.replayed == 1
    assert _read_as_admin(secure_kafka, replay, 1) == [b"dead"]
    # lag of the sink's group (it has committed nothing yet: the group is unknown, not refused)
    assert [g.total for g in sink_lag(conf, groups=["govbus.sink.file"])] == [0]


def test_acl_apply_without_alter_on_the_cluster_names_it(secure_kafka: SecureKafka) -> None:
    user, password = secure_kafka.add_scram_user()
    conf = load_settings(kafka=_kafka(secure_kafka, user, password)).kafka.librdkafka()
    with pytest.raises(AclError) as raised:
        apply_plan(conf, "User:x", plan(parse_role("kernel"), topic="t"), timeout=15)
    assert f"User:{user} lacks the ACL operation ALTER on CLUSTER kafka-cluster" in str(raised.value)
