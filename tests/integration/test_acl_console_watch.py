"""The console's and the watchdog's ACLs found by test on the secure broker (like test_acl_roles.py
for the other roles): a principal holding exactly ``govbus acl plan --role console|watch`` does the
whole job (the console: events, lag, dead letters, its gate, a replay; the watchdog: reads the topic
in its own group, sees a sink group vanish, publishes the alert), and the plan minus any one ACL
fails, with a message naming the missing ACL where Kafka reports a refusal (a group listing is
filtered silently: there the job fails by the group missing from the page)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _acl_support import principal as _principal
from _acl_support import produce_as_admin as _produce_as_admin
from _acl_support import scram_kafka as _kafka
from _kafka import SecureKafka, create_topic
from _sinks import events, records, wait_for
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from govbus._acl import AclEntry, parse_role, plan
from govbus._settings import load_settings
from govbus.console._actions import read_one, replay_one
from govbus.console._collector import Collector
from govbus.consumers._settings import SinkRuntimeSettings
from govbus.watch._runner import WatchRunner
from govbus.watch._settings import WatchSettings

pytestmark = pytest.mark.integration

_GARBAGE = b"garbage, not a govbus record"


def _read_as_admin(secure: SecureKafka, topic: str, want: int, timeout: float = 15.0) -> list[bytes | None]:
    consumer = Consumer({**secure.admin_config(), "group.id": "acl-test-reader", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[bytes | None] = []

        def enough() -> bool:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                out.append(msg.value())
            return len(out) >= want

        wait_for(enough, timeout, what=f"{want} record(s) in {topic}")
        return out
    finally:
        consumer.close()


# -- console -----------------------------------------------------------------------------------------
class _ConsoleJob:
    """What the console does on the bus: events page (tail of the topic), lag page (every sink group,
    listed), dead-letter page (the sink's dead-letter topic), its gate (topic with min.insync.replicas,
    a required sink), and with actions enabled a replay of one dead letter."""

    def __init__(self, secure: SecureKafka, tmp: Path) -> None:
        self.secure = secure
        self.sink = f"acl{uuid.uuid4().hex[:6]}"
        self.topic = secure.new_topic(2, prefix="aclconsole")
        s = SinkRuntimeSettings()
        self.group = s.group_for(self.sink)
        self.dlq = create_topic(secure.admin, s.dlq_topic(self.topic, self.sink), 1)
        self.replay = create_topic(secure.admin, s.replay_topic(self.topic, self.sink), 1)
        recs = records(events(4, seed=7))
        _produce_as_admin(secure, self.topic, [(r.key, r.value, r.headers) for r in recs])
        self.ids = sorted(r.event_id or "" for r in recs)
        _produce_as_admin(secure, self.dlq, [(b"k", _GARBAGE, [("govbus.error.reason", b"decode:test")])])
        self.member: Consumer | None = None
        self.policy = tmp / f"policy-{self.sink}.yaml"
        self.policy.write_text(
            "debounce: 1\n"
            "checks:\n"
            "  broker: {timeout_s: 5}\n"
            "  topic: {require_min_isr: true}\n"
            f"  sinks: [{{name: {self.sink}}}]\n"
            "  producer: {enabled: false}\n"
            "  signing: {enabled: false}\n"
            "required_classes: {audit: 1}\n"
        )

    def start_sink(self) -> None:
        """A live member of the sink's group (as the admin) that read one record of partition 0 and
        nothing of partition 1: lag 3 in all (a group that only committed is not listed by Kafka 4)."""
        member = Consumer({**self.secure.admin_config(), "group.id": self.group, "enable.auto.commit": False})
        member.subscribe([self.topic])
        wait_for(lambda: (member.poll(0.1), len(member.assignment()) == 2)[1], 30, what="the sink's assignment")
        member.commit(offsets=[TopicPartition(self.topic, 0, 1)], asynchronous=False)
        self.member = member

    def close(self) -> None:
        if self.member is not None:
            self.member.close()

    def plan(self, actions: bool = True) -> list[AclEntry]:
        return plan(
            parse_role("console"), topic=self.topic, sinks=[self.sink], require_min_isr=True, console_actions=actions
        )

    def run(self, user: str, password: str, timeout: float = 30.0, actions: bool = True) -> str | None:
        """None when every page showed what the bus holds; else what went wrong, as the console said it."""
        settings = load_settings(
            topic=self.topic,
            kafka=_kafka(self.secure, user, password),
            console={"gate_policy": str(self.policy), "timeout_s": 5, "refresh_s": 0.3, "actions_enabled": actions},
        )
        collector = Collector(settings).start()
        try:
            return self._check(collector, settings, timeout)
        finally:
            collector.close()

    def _check(self, collector: Collector, settings: Any, timeout: float) -> str | None:
        problems: list[str] = []

        def pages_filled() -> bool:
            snap = collector.snapshot
            problems[:] = []
            if snap.broker_error:
                problems.append(f"broker: {snap.broker_error}")
            if snap.gate_error:
                problems.append(f"gate: {snap.gate_error}")
            sink = snap.sink(self.sink)
            if sink is None:
                problems.append(f"lag page: no sink {self.sink} (its group {self.group} was not listed)")
            elif (sink.lag, sink.dead_letters) != (3, 1):
                problems.append(f"lag page: lag {sink.lag}, dead letters {sink.dead_letters}")
            if sorted(e.id for e in snap.events) != self.ids:
                problems.append(f"events page: {len(snap.events)} event(s) ({collector._tail.error})")
            if [d.value for d in snap.dead_letters.get(self.sink, ())] != [_GARBAGE]:
                problems.append(f"dead-letter page: {snap.dead_letters.get(self.sink)} ({collector._tail.error})")
            if snap.gate is not None:
                checks = {c.name: c for c in snap.gate.checks}
                for name in ("broker", "topic"):
                    if not checks[name].ok:
                        problems.append(f"gate {name}: {checks[name].reason}")
                if not checks[f"sink:{self.sink}"].ok:
                    problems.append(f"gate sink: {checks[f'sink:{self.sink}'].reason}")
                # The sink declares no class: the check answers (none found), it is not refused.
                if "check failed" in checks["class:audit"].reason:
                    problems.append(f"gate class: {checks['class:audit'].reason}")
            return not problems

        try:
            wait_for(pages_filled, timeout, what="the console's pages")
        except AssertionError:
            return "; ".join(problems)
        if not settings.console.actions_enabled:
            return None
        conf = settings.kafka.librdkafka()
        try:
            letter = read_one(conf, self.dlq, 0, 0, 10)
            replay_one(conf, letter, self.replay, 10)
        except Exception as exc:
            return f"replay: {exc}"
        assert _read_as_admin(self.secure, self.replay, 1) == [_GARBAGE]
        return None


@pytest.fixture
def console_job(secure_kafka: SecureKafka, tmp_path: Path) -> Iterator[_ConsoleJob]:
    job = _ConsoleJob(secure_kafka, tmp_path)
    job.start_sink()
    yield job
    job.close()


def test_console_plan_is_exactly_what_the_console_needs(secure_kafka: SecureKafka, console_job: _ConsoleJob) -> None:
    job = console_job
    assert {(e.resource, e.name, e.operation, e.pattern) for e in job.plan()} == {
        ("TOPIC", job.topic, "READ", "LITERAL"),
        ("TOPIC", job.topic, "DESCRIBE_CONFIGS", "LITERAL"),
        ("GROUP", "govbus.sink.", "DESCRIBE", "PREFIXED"),
        ("TOPIC", job.dlq, "READ", "LITERAL"),
        ("TOPIC", job.replay, "WRITE", "LITERAL"),
    }
    assert {e.operation for e in job.plan(actions=False)} == {"READ", "DESCRIBE", "DESCRIBE_CONFIGS"}
    user, password = _principal(secure_kafka, job.plan())
    assert job.run(user, password) is None


def _console_without(job: _ConsoleJob, secure: SecureKafka, resource: str, name: str, operation: str) -> str:
    entries = job.plan()
    dropped = next(e for e in entries if (e.resource, e.name, e.operation) == (resource, name, operation))
    user, password = _principal(secure, [e for e in entries if e != dropped])
    failure = job.run(user, password, timeout=20)
    assert failure is not None, f"the console did its job without {dropped}"
    return failure.replace(f"User:{user}", "User:<user>")  # the principal is random


@pytest.mark.parametrize("missing", ["topic-READ", "dlq-READ", "topic-DESCRIBE_CONFIGS", "replay-WRITE"])
def test_console_plan_without_a_topic_acl_fails_naming_it(
    secure_kafka: SecureKafka, console_job: _ConsoleJob, missing: str
) -> None:
    job = console_job
    what, operation = missing.split("-")
    name = {"topic": job.topic, "dlq": job.dlq, "replay": job.replay}[what]
    failure = _console_without(job, secure_kafka, "TOPIC", name, operation)
    if what == "dlq":
        # Kafka leaves a topic the principal may not DESCRIBE out of a listing, without an error:
        # the page shows no dead letters (a known gap, docs/security.md).
        assert "dead letters 0" in failure, failure
    elif what == "replay":
        assert failure.startswith("replay: "), failure
        assert "TOPIC_AUTHORIZATION_FAILED" in failure, failure
    else:
        named = "DESCRIBE" if operation == "READ" else operation  # READ implies the DESCRIBE the gate asks for
        assert f"User:<user> lacks the ACL operation {named} on topic {name}" in failure, failure


def test_console_plan_without_the_sink_groups_shows_no_sink(
    secure_kafka: SecureKafka, console_job: _ConsoleJob
) -> None:
    failure = _console_without(console_job, secure_kafka, "GROUP", "govbus.sink.", "DESCRIBE")
    assert f"no sink {console_job.sink}" in failure or "lacks the ACL operation DESCRIBE" in failure, failure


# -- watch -------------------------------------------------------------------------------------------
class _WatchJob:
    """The watchdog's job: read the topic in its own group, see a sink group that had a member lose
    it, publish the sink-gone alert to its alerts topic (created at start)."""

    def __init__(self, secure: SecureKafka, tmp: Path) -> None:
        self.secure = secure
        self.topic = secure.new_topic(2, prefix="aclwatch")
        tag = uuid.uuid4().hex[:8]
        # A sink-group prefix of its own: other tests' sink groups on this broker are not this job's.
        self.watch = WatchSettings(
            alerts_topic=f"aclwatch-alerts-{tag}",
            group_id=f"govbus.watch.{tag}",
            group_prefix=f"govbus.sink.w{tag}.",
            auto_offset_reset="earliest",
            groups_interval_s=0.2,
            metrics_enabled=False,
        )
        self.sink_group = f"{self.watch.group_prefix}audit"
        self.tmp = tmp

    def plan(self) -> list[AclEntry]:
        return plan(parse_role("watch"), topic=self.topic, watch_settings=self.watch)

    def run(self, user: str, password: str, timeout: float = 30.0) -> str | None:
        """None when the job is done; else why not (the runner's own words where it has them)."""
        settings = load_settings(
            topic=self.topic,
            kafka=_kafka(self.secure, user, password),
            watch=self.watch.model_dump(),
            producer={"spool_dir": str(self.tmp / f"spool-{user}"), "close_timeout_ms": 1_000},
        )
        try:
            runner = WatchRunner(settings)
        except Exception as exc:
            return f"start: {exc}"
        errors: list[BaseException] = []

        def run() -> None:
            try:
                runner.run()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        member = Consumer({**self.secure.admin_config(), "group.id": self.sink_group, "auto.offset.reset": "earliest"})
        member_open = True
        try:
            _produce_as_admin(self.secure, self.topic, [(r.key, r.value, r.headers) for r in records(events(3))])
            member.subscribe([self.topic])
            wd = runner.watchdog
            try:
                wait_for(lambda: errors or runner.problem or wd.records >= 3, timeout, what="the watchdog reads")
            except AssertionError:
                return f"no records read: {errors or runner.problem}"
            try:
                wait_for(lambda: (member.poll(0.1), self.sink_group in wd._groups_seen)[1], timeout, what="the group")
            except AssertionError:
                return f"no sink group seen: {errors or runner.problem}"
            if wd.records < 3:
                return f"no records read: {errors or runner.problem}"
            member.close()
            member_open = False
            bus = runner._bus
            try:
                wait_for(lambda: wd.alerts.raised_total["sink-gone"] >= 1, timeout, what="the sink-gone alert")
                wait_for(lambda: bus.counters().delivered >= 1 or not bus.health().ok, timeout, what="its delivery")
            except AssertionError:
                return f"no alert: {errors or runner.problem}"
            if not bus.health().ok:
                return f"alert not published: {bus.health().reason}"
            assert len(_read_as_admin(self.secure, self.watch.alerts_topic, 1)) == 1
            return None
        finally:
            runner.stop()
            thread.join(30)
            if member_open:
                member.close()


@pytest.fixture
def watch_job(secure_kafka: SecureKafka, tmp_path: Path) -> _WatchJob:
    return _WatchJob(secure_kafka, tmp_path)


def test_watch_plan_is_exactly_what_the_watchdog_needs(secure_kafka: SecureKafka, watch_job: _WatchJob) -> None:
    job = watch_job
    w = job.watch
    assert {(e.resource, e.name, e.operation, e.pattern) for e in job.plan()} == {
        ("TOPIC", job.topic, "READ", "LITERAL"),
        ("GROUP", w.group_id, "READ", "LITERAL"),
        ("GROUP", w.group_prefix, "DESCRIBE", "PREFIXED"),
        ("TOPIC", w.alerts_topic, "WRITE", "LITERAL"),
        ("TOPIC", w.alerts_topic, "CREATE", "LITERAL"),
    }
    user, password = _principal(secure_kafka, job.plan())
    assert job.run(user, password) is None


@pytest.mark.parametrize("missing", ["topic-READ", "group-READ", "prefix-DESCRIBE", "alerts-WRITE", "alerts-CREATE"])
def test_watch_plan_without_any_one_acl_fails_naming_it(
    secure_kafka: SecureKafka, watch_job: _WatchJob, missing: str
) -> None:
    job, w = watch_job, watch_job.watch
    what, operation = missing.split("-")
    name = {"topic": job.topic, "group": w.group_id, "prefix": w.group_prefix, "alerts": w.alerts_topic}[what]
    entries = job.plan()
    dropped = next(e for e in entries if (e.name, e.operation) == (name, operation))
    user, password = _principal(secure_kafka, [e for e in entries if e != dropped])
    failure = job.run(user, password, timeout=20)
    assert failure is not None, f"the watchdog did its job without {dropped}"
    if what == "prefix":
        # Kafka filters a group listing by DESCRIBE without an error: the sink group is not seen.
        assert failure.startswith("no sink group seen"), failure
    else:
        # WRITE on the alerts topic is what lets the watchdog DESCRIBE it once created: that is named.
        named = "DESCRIBE" if missing == "alerts-WRITE" else operation
        assert f"User:{user} lacks the ACL operation {named} on {dropped.resource} {name}" in failure, failure


# -- gate with required_classes ------------------------------------------------------------------------
@pytest.mark.parametrize("with_classes", [True, False])
def test_gate_class_checks_need_the_sink_group_listing(secure_kafka: SecureKafka, with_classes: bool) -> None:
    """``required_classes`` lists the sink groups: without ``--required-classes`` (DESCRIBE on every
    sink group, prefixed) Kafka's filtered listing hides a healthy audit sink and the gate denies."""
    from govbus.gate import BusProbe, parse_policy

    topic = secure_kafka.new_topic(1, prefix="aclclasses")
    group = f"govbus.sink.cls{uuid.uuid4().hex[:6]}"
    member = Consumer(
        {
            **secure_kafka.admin_config(),
            "group.id": group,
            "client.id": "govbus.class-audit",
            "enable.auto.commit": False,
        }
    )
    try:
        member.subscribe([topic])
        wait_for(lambda: (member.poll(0.1), len(member.assignment()) == 1)[1], 30, what="the sink's assignment")
        entries = plan(parse_role("gate"), topic=topic, required_classes=with_classes)
        user, password = _principal(secure_kafka, entries)
        settings = load_settings(topic=topic, kafka=_kafka(secure_kafka, user, password))
        policy = parse_policy(
            {
                "debounce": 1,
                "checks": {
                    "topic": {"require_min_isr": False},
                    "producer": {"enabled": False},
                    "signing": {"enabled": False},
                },
                "required_classes": {"audit": 1},
            }
        )
        results = {r.name: r for r in BusProbe(settings.kafka.librdkafka(), topic).run(policy)}
    finally:
        member.close()
    assert results["topic"].ok, results
    assert results["class:audit"].ok is with_classes, results["class:audit"]
    if not with_classes:
        assert "no sink group declares class audit" in results["class:audit"].reason


# -- govbus demo --secure ----------------------------------------------------------------------------
def test_the_secure_demo_gives_its_console_a_principal_that_reads_the_bus(secure_kafka: SecureKafka) -> None:
    """The demo's console ran as User:kernel, which may not read the topic: its events and dead-letter
    pages stayed empty. It now has User:console with the console role."""
    from govbus._demo_secure import SecureDemo, provision

    demo = SecureDemo(secure_kafka.admin_config(), secure_kafka.sasl_bootstrap, str(secure_kafka.ca))
    topic = secure_kafka.new_topic(2, prefix="acldemo")
    provision(demo, topic, ["stdout"], lambda _message: None)
    recs = records(events(3, seed=3))
    _produce_as_admin(secure_kafka, topic, [(r.key, r.value, r.headers) for r in recs])
    settings = load_settings(topic=topic, kafka=demo.kafka("console"), console={"refresh_s": 0.3, "timeout_s": 5})
    collector = Collector(settings).start()
    try:
        wait_for(
            lambda: (
                collector.snapshot.broker_error is None
                and sorted(e.id for e in collector.snapshot.events) == sorted(r.event_id or "" for r in recs)
            ),
            30,
            what="the demo console's events page",
        )
    finally:
        collector.close()
