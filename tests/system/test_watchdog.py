"""The watchdog and the gate's sink classes on a real broker: silence after SIGKILL, a lost tail,
a stalled partition, a vanished group, and admission that needs a healthy sink of each class."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import NewTopic

from govbus._heartbeat import heartbeat_event
from govbus._settings import GovbusSettings, load_settings
from govbus.consumers import SinkRuntime
from govbus.consumers._dlq import read_dead_letters
from govbus.event import GovernanceEvent
from govbus.gate import BusProbe, Gate, parse_policy
from govbus.signing import KeyEntry, Keyring, SigningKey, VerdictCode, Verifier, write_private_key
from govbus.watch._runner import WatchRunner
from tests._sinks import CollectingSink, Rec, events, produce, records, sign, signing_pair, wait_for

pytestmark = pytest.mark.system

KERNEL = Path(__file__).with_name("producer_kernel.py")


class Watching:
    def __init__(self, runner: WatchRunner) -> None:
        self.runner = runner
        self.thread = threading.Thread(target=runner.run, daemon=True)
        self.thread.start()
        assert runner.started.wait(60), "the watchdog got no partitions"

    def alerts(self, action: str, decision: str = "raised") -> list[GovernanceEvent]:
        return [e for e in list(self.runner.published) if e.action == action and e.decision == decision]

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def watch(kafka_bootstrap: str) -> Iterator[Callable[..., Watching]]:
    running: list[Watching] = []

    def start(topic: str, *, collect: bool = True, **root: Any) -> Watching:
        w = {
            "group_id": f"govbus.watch.{uuid.uuid4().hex[:8]}",
            "auto_offset_reset": "earliest",
            "port": 0,
            "groups_interval_s": 0.2,
            "stall_after_s": 1.0,
            **root.pop("watch", {}),
        }
        settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap}, topic=topic, watch=w, **root)
        sink: list[GovernanceEvent] = []
        runner = WatchRunner(settings, publish=sink.append if collect else None)
        running.append(Watching(runner))
        return running[-1]

    yield start
    for w in running:
        if w.thread.is_alive():
            w.stop()


def _keys(tmp_path: Path, *names: str) -> tuple[dict[str, Path], Path]:
    ring = Keyring()
    paths: dict[str, Path] = {}
    for name in names:
        key = SigningKey.generate(name)
        ring.add(KeyEntry(key.kid, key.public_bytes))
        paths[name] = write_private_key(key, tmp_path / f"{key.kid}.pem")
    ring.save(tmp_path / "keyring.json")
    return paths, tmp_path / "keyring.json"


def test_a_sigkilled_producer_is_reported_silent_within_its_bound_by_a_signed_alert(
    kafka_bootstrap: str, new_topic: Callable[..., str], watch: Callable[..., Watching], tmp_path: Path
) -> None:
    topic, alerts_topic = new_topic(partitions=2), f"alerts-{uuid.uuid4().hex[:8]}"
    keys, keyring = _keys(tmp_path, "kernel-k1", "watch-k1")
    w = watch(
        topic,
        collect=False,  # alerts through the watchdog's own signed Bus, to alerts_topic
        watch={"alerts_topic": alerts_topic},
        producer={"spool_dir": str(tmp_path / "watch-spool"), "heartbeat_interval_ms": 300},
        signing={"private_key_path": str(keys["watch-k1"]), "keyring_path": str(keyring)},
    )
    env = {
        **os.environ,
        "GOVBUS_PRODUCER__HEARTBEAT_INTERVAL_MS": "300",
        "GOVBUS_SIGNING__PRIVATE_KEY_PATH": str(keys["kernel-k1"]),
        "GOVBUS_SIGNING__KEYRING": str(keyring),
    }
    proc = subprocess.Popen(
        [sys.executable, str(KERNEL), kafka_bootstrap, topic, str(tmp_path / "spool"), "50", "memory"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        wd = w.runner.watchdog
        wait_for(lambda: wd.heartbeats >= 2, 30, what="the producer's heartbeats")
        assert len(wd.streams) == 1
        stream = next(iter(wd.streams))
        assert not stream.startswith("instance:")  # a signed stream, judged with the keyring
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    bound = 0.3 * 3  # interval x silent_factor
    wait_for(lambda: ("silent", stream) in wd.alerts.active, 15, what="the silent alert")
    took = time.monotonic() - killed
    assert took <= bound + 1.0, f"silent reported {took:.2f} s after the kill, bound {bound} s (+1 s for detection)"
    assert wd.inauthentic == 0

    # The alert is a governance event on the alerts topic, signed with the watchdog's key.
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    c.subscribe([alerts_topic])
    verifier = Verifier(Keyring.load(keyring))
    found: list[tuple[str, Any]] = []

    def alert_seen() -> bool:
        for msg in c.consume(100, 0.5):
            if msg.error() is None and msg.key() and msg.key().startswith(b"govbus.watch/silent/"):
                verdict = verifier.verify(msg.value(), msg.key(), msg.headers(), msg.partition())
                kid = dict(msg.headers() or [])["govbus_sig_kid"]
                found.append((kid.decode(), verdict.code))
        return bool(found)

    try:
        wait_for(alert_seen, 30, what="the alert on the alerts topic")
    finally:
        c.close()
    assert found[0] == ("watch-k1", VerdictCode.VALID)


def test_records_removed_from_the_end_of_a_stream_raise_lost_tail_and_the_next_heartbeat_clears_it(
    kafka_bootstrap: str, new_topic: Callable[..., str], watch: Callable[..., Watching]
) -> None:
    topic = new_topic(partitions=1)
    signer, ring = signing_pair("tail-k1")
    w = watch(topic, collect=True)
    w.runner.watchdog._verifier = Verifier(ring)
    w.runner.watchdog._tracker = None

    def beat(n: int) -> Rec:
        hb = heartbeat_event(
            f"govbus.heartbeat.tailtest.{n}", partition=0, stream=signer.stream_id, next_seq=None,
            interval_s=5.0, counters={},
        )  # fmt: skip
        return records([hb])[0]

    recs = [*records(events(10)), beat(0)]
    for r in recs:
        r.partition = 0
    sign(recs, signer, 1)
    # The stream's records 7, 8 and 9 never reach the topic (lost after signing); its heartbeat does.
    produce(kafka_bootstrap, topic, recs[:7] + recs[10:])
    wd = w.runner.watchdog
    wait_for(lambda: wd.alerts.subjects("lost-tail"), 30, what="the lost-tail alert")
    (alert,) = w.alerts("govbus.watch.lost-tail")
    assert "7..9" in alert.reason
    assert not wd.alerts.subjects("gap")  # the events before the heartbeat were contiguous
    # The stream goes on: the next heartbeat follows without a gap, the alert clears.
    nxt = beat(1)
    nxt.partition = 0
    produce(kafka_bootstrap, topic, sign([nxt], signer, 1))
    wait_for(lambda: not wd.alerts.subjects("lost-tail"), 30, what="the lost-tail alert to clear")
    assert w.alerts("govbus.watch.lost-tail", "cleared")


def test_a_partition_that_stops_advancing_while_its_consumer_stays_raises_stalled_and_clears_when_it_moves(
    kafka_bootstrap: str, new_topic: Callable[..., str], watch: Callable[..., Watching]
) -> None:
    topic = new_topic(partitions=1)
    group = f"govbus.sink.stall-{uuid.uuid4().hex[:6]}"
    produce(kafka_bootstrap, topic, records(events(5)))
    c = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "client.id": "govbus.sink.stall.class-siem",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    stop = threading.Event()
    commit_to: list[int] = []

    def member() -> None:  # stays in the group (polls) but commits only when told
        while not stop.is_set():
            c.poll(0.1)
            if commit_to:
                c.commit(offsets=[TopicPartition(topic, 0, commit_to.pop())], asynchronous=False)

    t = threading.Thread(target=member, daemon=True)
    t.start()
    try:
        w = watch(topic)
        wd = w.runner.watchdog
        commit_to.append(2)  # read some, then stop advancing with 3 records left
        subject = f"{group}/0"
        wait_for(lambda: ("stalled", subject) in wd.alerts.active, 30, what="the stalled alert")
        (raised,) = w.alerts("govbus.watch.stalled")
        assert "siem" in raised.reason
        assert "lags 3" in raised.reason
        # The group questions run in a child (librdkafka#4605 aborts the process asking them when
        # a coordinator's connection drops mid-request): its abort costs one read, not the watchdog.
        probe = w.runner._groups
        assert probe._proc is not None
        os.kill(probe._proc.pid, signal.SIGABRT)  # what librdkafka's failed assertion does
        commit_to.append(5)  # it moves (and catches up)
        wait_for(lambda: ("stalled", subject) not in wd.alerts.active, 30, what="the stalled alert to clear")
        assert probe.restarts >= 1  # read through a new child
        assert w.thread.is_alive()
        assert w.alerts("govbus.watch.stalled", "cleared")
        # The sink leaves its group: sink-gone, until a member returns.
        stop.set()
        t.join(10)
        c.close()
        wait_for(lambda: ("sink-gone", group) in wd.alerts.active, 30, what="the sink-gone alert")
    finally:
        stop.set()
        t.join(10)


def test_a_required_class_without_a_healthy_sink_denies_and_admission_resumes_when_one_is_healthy(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    policy = parse_policy(
        {
            "required_classes": {"audit": 1},
            "debounce": {"fail_after": 1, "pass_after": 1},
            "checks": {"producer": {"enabled": False}, "classes": {"group_prefix": f"govbus.sink.cls-{topic}"}},
        }
    )
    probe = BusProbe({"bootstrap.servers": kafka_bootstrap}, topic)
    gate = Gate(policy, probe.run)
    gate.refresh()
    denied = gate.admit("agent-1")
    assert not denied.allowed
    assert any(r.startswith("class:audit:") and "audit" in r for r in denied.reasons), denied.reasons

    sink = CollectingSink()
    settings: GovbusSettings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topic=topic,
        sink={"health": {"enabled": False}, "sink_class": "audit", "group_instance_id": ""},
    )
    runtime = SinkRuntime(sink, settings, name=f"cls-{topic}")
    assert runtime.sink_class == "audit"
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    try:
        assert runtime.assigned.wait(60)

        def admitted() -> bool:
            gate.refresh()
            return gate.admit("agent-1").allowed

        wait_for(admitted, 30, what="admission once an audit sink is healthy")
        snap = gate.snapshot
        assert snap is not None
        (state,) = [c for c in snap.checks if c.name == "class:audit"]
        assert f"govbus.sink.cls-{topic}" in state.reason
    finally:
        runtime.stop()
        thread.join(30)


def test_gate_check_prints_each_required_class(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from govbus._cli import main

    topic = new_topic(partitions=1)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"required_classes: {{audit: 1, siem: 2}}\n"
        f"checks: {{producer: {{enabled: false}}, classes: {{group_prefix: govbus.sink.none-{topic}}}}}\n"
    )
    monkeypatch.setenv("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("GOVBUS_TOPIC", topic)
    assert main(["gate", "check", "--policy", str(policy)]) == 1
    out = capsys.readouterr().out
    assert "class:audit  FAIL" in out
    assert "class:siem   FAIL" in out
    assert "the policy requires 2" in out
    assert "DENIED" in out


def test_a_cleanly_closed_producer_sends_final_heartbeats_and_is_not_reported_silent(
    kafka_bootstrap: str, new_topic: Callable[..., str], watch: Callable[..., Watching], tmp_path: Path
) -> None:
    from govbus.producer import Bus

    topic = new_topic(partitions=3)
    keys, keyring = _keys(tmp_path, "close-k1")
    w = watch(topic, signing={"keyring_path": str(keyring)})
    wd = w.runner.watchdog
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topic=topic,
        producer={"spool_dir": str(tmp_path / "spool"), "heartbeat_interval_ms": 200},
        signing={"private_key_path": str(keys["close-k1"]), "keyring_path": str(keyring)},
    )
    bus = Bus(settings)
    for event in events(30):
        bus.emit(event)
    assert bus.flush(30)
    wait_for(lambda: wd.heartbeats >= 3 and wd.streams, 30, what="heartbeats from every partition written to")
    assert bus.counters().failed == 0
    bus.close()
    wait_for(lambda: not wd.streams, 30, what="the final heartbeats")
    assert wd.inauthentic == 0
    assert not wd.alerts.active
    assert not w.alerts("govbus.watch.silent")


def test_a_dead_letter_the_broker_refuses_raises_dlq_failed_holds_the_partition_and_clears_once_written(
    kafka_bootstrap: str, new_topic: Callable[..., str], watch: Callable[..., Watching]
) -> None:
    """An audit sink meets an undecodable record too large for its dead-letter topic (the operator
    created that topic with a small max.message.bytes): the broker refuses the dead letter. The
    partition is held (audit never drops: nothing committed past the record), the sink marks its
    committed offset and the watchdog raises dlq-failed naming group, partition, offset and the
    error. Raising the topic's limit lets the retried dead letter through: the alert clears."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    topic = new_topic(partitions=1)
    name = f"dlqfail-{uuid.uuid4().hex[:6]}"
    group, dlq = f"govbus.sink.{name}", f"{topic}.dlq.{name}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created = admin.create_topics([NewTopic(dlq, 1, 1, config={"max.message.bytes": "2048"})])
    created[dlq].result(30)
    good = records(events(3))
    poison = Rec(value=b"\x00not an avro record" * 400, key=b"agent-1", headers=[])  # 7.6 KB > 2048
    produce(kafka_bootstrap, topic, [*good[:2], poison, *good[2:]])  # the poison is offset 2

    sink = CollectingSink()
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topic=topic,
        sink={
            "health": {"enabled": False},
            "sink_class": "audit",
            "group_instance_id": "",
            "auto_offset_reset": "earliest",
            "commit_interval_ms": 100,
            "verify": {"mode": "off"},
            "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 300},
        },
    )
    runtime = SinkRuntime(sink, settings, name=name)
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    try:
        w = watch(topic)
        wd = w.runner.watchdog
        subject = f"{group}/0"
        wait_for(lambda: ("dlq-failed", subject) in wd.alerts.active, 60, what="the dlq-failed alert")
        (raised,) = w.alerts("govbus.watch.dlq-failed")
        assert raised.resource == subject
        for part in (group, "audit", "partition 0", "held at offset 2", "dead letter of offset 2", dlq):
            assert part in raised.reason, raised.reason
        assert "too large" in raised.reason.lower(), raised.reason

        # Audit never drops: the partition is held at the record, nothing committed past it.
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])]
        (tp,) = admin.list_consumer_group_offsets(request)[group].result(10).topic_partitions
        assert tp.offset == 2
        assert tp.metadata.startswith("govbus.dlq-failed ")
        assert thread.is_alive()
        assert w.alerts("govbus.watch.dlq-failed", "cleared") == []
        held = f'govbus_sink_partitions_held{{sink="{name}"}}'
        wait_for(lambda: f"{held} 1" in runtime.metrics.render_prometheus(), 10, what="the sink's held gauge")

        # The operator fixes the cause; the retried dead letter is written and the partition moves on.
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            dlq,
            incremental_configs=[
                ConfigEntry("max.message.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        admin.incremental_alter_configs([resource])[resource].result(30)
        wait_for(lambda: ("dlq-failed", subject) not in wd.alerts.active, 60, what="the dlq-failed alert to clear")
        (cleared,) = w.alerts("govbus.watch.dlq-failed", "cleared")
        assert "moved on" in cleared.reason

        def committed() -> Any:
            (tp,) = admin.list_consumer_group_offsets(request)[group].result(10).topic_partitions
            return tp

        wait_for(lambda: committed().offset == 4, 30, what="the sink to commit past the record")
        assert not committed().metadata
        wait_for(lambda: f"{held} 0" in runtime.metrics.render_prometheus(), 10, what="the held gauge back to 0")
    finally:
        runtime.stop()
        thread.join(30)
    assert not thread.is_alive()
    dead = list(read_dead_letters({"bootstrap.servers": kafka_bootstrap}, dlq))
    assert [(d.value, d.error["offset"]) for d in dead] == [(poison.value, "2")]
