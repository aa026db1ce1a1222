"""Sink classes, the gate policy's required_classes, heartbeats at intake, and the watchdog's state
machine (fake clock, fake records: no broker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _sinks import FakeMessage, events, records, sign, signing_pair

from govbus import _accel as native
from govbus._contract import Decoder
from govbus._dlqmark import MARK_PREFIX, DlqFailedMark, format_mark, parse_mark
from govbus._heartbeat import heartbeat_event, is_heartbeat
from govbus._record import from_record
from govbus.consumers import VerdictPolicy, Verification
from govbus.consumers._classes import (
    SHIPPED_CLASSES,
    class_from_client_id,
    client_id_with_class,
    no_drop_policy,
    resolve_class,
)
from govbus.consumers._intake import Intake
from govbus.errors import ConfigError
from govbus.gate import parse_policy
from govbus.producer._heartbeat import heartbeat_key
from govbus.producer._partition import partition_for
from govbus.signing import Verifier
from govbus.watch._alerts import AlertBook
from govbus.watch._groups import GroupView, StallTracker
from govbus.watch._watchdog import Watchdog

VECTORS = Path(__file__).with_name("vectors") / "signing_v1.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- sink classes ----------------------------------------------------------------------------------


def test_shipped_defaults_plugin_declarations_and_overrides() -> None:
    assert SHIPPED_CLASSES["audit"] == "audit"
    assert {SHIPPED_CLASSES[n] for n in ("http", "syslog")} == {"siem"}
    assert SHIPPED_CLASSES["otlp"] == "observability"
    assert {SHIPPED_CLASSES[n] for n in ("stdout", "file")} == {"debug"}
    assert resolve_class("http", object()) == "siem"

    class Plugin:
        sink_class = "siem"

    assert resolve_class("acme", Plugin()) == "siem"
    assert resolve_class("acme", object()) == "debug"  # undeclared counts for no demanding class
    assert resolve_class("stdout", object(), "audit") == "audit"  # the deployment's override wins
    with pytest.raises(ValueError, match="one of audit, siem"):
        resolve_class("acme", type("Bad", (), {"sink_class": "archive"})())


def test_the_class_travels_in_the_client_id() -> None:
    cid = client_id_with_class("govbus.sink.audit", "audit")
    assert cid == "govbus.sink.audit.class-audit"
    assert class_from_client_id(cid) == "audit"
    assert class_from_client_id(client_id_with_class(cid, "siem")) == "siem"  # replaced, not appended
    assert class_from_client_id("govbus.sink.old") is None
    assert class_from_client_id("x.class-archive") is None
    assert class_from_client_id(None) is None


def test_audit_and_siem_policies_never_skip_or_deliver_unflagged() -> None:
    policy = VerdictPolicy(replay="skip", gap="deliver", reordered="flag", bad_signature="skip")
    strict = no_drop_policy(policy)
    assert strict.replay == "dead-letter"
    assert strict.bad_signature == "dead-letter"
    assert strict.gap == "flag"
    assert strict.reordered == "flag"
    assert no_drop_policy(strict) == strict


def test_required_classes_in_the_policy() -> None:
    p = parse_policy({"required_classes": {"audit": 1, "siem": 2}, "checks": {"classes": {"stall_after_s": 5}}})
    assert p.required_classes == {"audit": 1, "siem": 2}
    assert p.checks.classes.stall_after_s == 5
    with pytest.raises(ConfigError, match="required_classes"):
        parse_policy({"required_classes": {"archive": 1}})
    with pytest.raises(ConfigError, match=r"required_classes\.audit"):
        parse_policy({"required_classes": {"audit": 0}})


# -- heartbeats ------------------------------------------------------------------------------------


def test_a_heartbeat_key_lands_in_its_partition() -> None:
    for partitions in (1, 3, 12):
        for p in range(partitions):
            key = heartbeat_key("abc", p, partitions)
            assert key.startswith("govbus.heartbeat.abc.")
            assert partition_for(key.encode(), partitions) == p


def test_the_heartbeat_vector_decodes_as_a_heartbeat_with_old_readers_too() -> None:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    (scenario,) = [s for s in vectors["sequences"] if "after its stream's whole tail" in s["name"]]
    rec = scenario["records"][-1]
    headers = [(n, None if v is None else bytes.fromhex(v)) for n, v in rec["headers"]]
    for reader in (1, 2):  # readers of every shipped contract version decode it
        decoded = from_record(bytes.fromhex(rec["value"]), headers, Decoder(reader))
        assert is_heartbeat(decoded.event)
        assert decoded.event.attributes["last_seq"] == 3
        assert decoded.event.attributes["partition"] == 0


def _heartbeat_records(n_events: int, *, final: bool = False) -> tuple[Any, Any, list[Any]]:
    signer, ring = signing_pair("hb-k1")
    hb = heartbeat_event("govbus.heartbeat.t.0", partition=0, stream=signer.stream_id, next_seq=n_events,
                         interval_s=1.0, counters={}, final=final)  # fmt: skip
    recs = records(events(n_events)) + records([hb])
    for r in recs:
        r.partition = 0
    return signer, ring, sign(recs, signer, 1)


@pytest.mark.parametrize(("deliver", "skipped"), [(False, True), (True, False)])
def test_intake_skips_heartbeats_unless_told_to_deliver(deliver: bool, skipped: bool) -> None:
    _, ring, recs = _heartbeat_records(2)
    intake = Intake(Decoder(), verification=Verification(Verifier(ring), VerdictPolicy()), deliver_heartbeats=deliver)
    works = [intake(FakeMessage(r.value, r.headers, key=r.key, partition=0, offset=i), 1) for i, r in enumerate(recs)]
    assert [w.record is not None for w in works[:2]] == [True, True]
    assert (works[2].skip == "heartbeat") is skipped
    assert (works[2].record is not None) is not skipped


@pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")
@pytest.mark.parametrize(("deliver", "skipped"), [(False, True), (True, False)])
def test_the_batch_intake_skips_heartbeats_unless_told_to_deliver(deliver: bool, skipped: bool) -> None:
    _, ring, recs = _heartbeat_records(2)
    intake = Intake(Decoder(), verification=Verification(Verifier(ring), VerdictPolicy()), deliver_heartbeats=deliver)
    rows = intake.prepare(
        [FakeMessage(r.value, r.headers, key=r.key, partition=0, offset=i) for i, r in enumerate(recs)]
    )
    assert rows is not None
    assert all(row is not None and len(row) == 4 for row in rows)  # the Works built natively
    works = [intake.take(row, 1) for row in rows if row is not None]
    intake.settle()
    assert [w.record is not None for w in works[:2]] == [True, True]
    assert (works[2].skip == "heartbeat") is skipped
    assert (works[2].record is not None) is not skipped


def test_intake_delivers_a_heartbeat_that_reveals_a_gap_even_when_skipping() -> None:
    _, ring, recs = _heartbeat_records(3)
    intake = Intake(Decoder(), verification=Verification(Verifier(ring), VerdictPolicy()), deliver_heartbeats=False)
    intake(FakeMessage(recs[0].value, recs[0].headers, key=recs[0].key, partition=0), 1)
    w = intake(FakeMessage(recs[3].value, recs[3].headers, key=recs[3].key, partition=0, offset=3), 1)
    assert w.record is not None
    assert w.record.verdict == "gap"
    assert w.record.flagged


# -- the watchdog ----------------------------------------------------------------------------------


def _watchdog(clock: Clock, ring: Any | None = None) -> tuple[Watchdog, list[Any]]:
    published: list[Any] = []
    decoder = Decoder()
    wd = Watchdog(
        AlertBook(published.append),
        lambda value, headers: from_record(value, headers, decoder),
        verifier=Verifier(ring) if ring is not None else None,
        silent_factor=3.0,
        stall_after_s=10.0,
        clock=clock,
    )
    return wd, published


def _feed(wd: Watchdog, recs: list[Any]) -> None:
    for r in recs:
        wd.observe(r.value, r.key, r.headers, r.partition)


@pytest.mark.parametrize("keyring", [True, False])
def test_silence_is_raised_after_interval_times_factor_and_cleared_by_records(keyring: bool) -> None:
    clock = Clock()
    signer, ring, recs = _heartbeat_records(2)
    wd, published = _watchdog(clock, ring if keyring else None)
    _feed(wd, recs)
    stream = signer.stream_id.hex()
    assert set(wd.streams) == {stream}
    clock.now += 2.9
    wd.tick()
    assert not wd.alerts.active
    clock.now += 0.2  # 3.1 s > 1 s x 3
    wd.tick()
    assert ("silent", stream) in wd.alerts.active
    wd.tick()
    assert [e.decision for e in published] == ["raised"]  # raised once, not every tick
    assert published[0].action == "govbus.watch.silent"
    assert published[0].kind.value == "anomaly_detected"
    hb = heartbeat_event("govbus.heartbeat.t.0", partition=0, stream=signer.stream_id, next_seq=3, interval_s=1.0,
                         counters={})  # fmt: skip
    nxt = sign(records([hb]), signer, 1)
    nxt[0].partition = 0
    _feed(wd, nxt)
    assert not wd.alerts.active
    assert [e.decision for e in published] == ["raised", "cleared"]


def test_a_final_heartbeat_ends_the_watch_without_alert() -> None:
    clock = Clock()
    _, ring, recs = _heartbeat_records(1, final=True)
    wd, published = _watchdog(clock, ring)
    _feed(wd, recs)
    assert not wd.streams
    clock.now += 100
    wd.tick()
    assert not published


def test_a_heartbeat_after_missing_records_is_a_lost_tail() -> None:
    clock = Clock()
    _, ring, recs = _heartbeat_records(5)
    wd, published = _watchdog(clock, ring)
    _feed(wd, recs[:2] + recs[5:])  # 2, 3, 4 lost
    (alert,) = published
    assert alert.action == "govbus.watch.lost-tail"
    assert "2..4" in alert.reason


def test_forged_records_do_not_keep_a_stream_alive() -> None:
    clock = Clock()
    _, ring, recs = _heartbeat_records(1)
    wd, _ = _watchdog(clock, ring)
    forged = recs[1]
    forged.headers = [(n, v if n != "govbus_sig" else bytes(64)) for n, v in forged.headers]
    _feed(wd, [forged])
    assert not wd.streams
    assert wd.inauthentic == 1


def _view(committed: int, end: int = 10, members: int = 1) -> GroupView:
    return GroupView("govbus.sink.s", "STABLE", members, "siem", {0: committed}, {0: max(0, end - committed)})


def test_stalled_partitions_and_vanished_groups() -> None:
    clock = Clock()
    wd, published = _watchdog(clock)
    wd.groups({"govbus.sink.s": _view(3)})
    clock.now += 9
    wd.groups({"govbus.sink.s": _view(3)})
    assert not wd.alerts.active
    clock.now += 2
    wd.groups({"govbus.sink.s": _view(3)})
    assert ("stalled", "govbus.sink.s/0") in wd.alerts.active
    wd.groups({"govbus.sink.s": _view(4)})  # it moves
    assert not wd.alerts.active
    clock.now += 20
    wd.groups({"govbus.sink.s": _view(10)})  # caught up: lag 0 is never stalled
    assert not wd.alerts.active
    wd.groups({})
    assert ("sink-gone", "govbus.sink.s") in wd.alerts.active
    wd.groups({"govbus.sink.s": _view(10)})
    assert not wd.alerts.active
    assert [(e.action, e.decision) for e in published] == [
        ("govbus.watch.stalled", "raised"),
        ("govbus.watch.stalled", "cleared"),
        ("govbus.watch.sink-gone", "raised"),
        ("govbus.watch.sink-gone", "cleared"),
    ]


def test_a_group_without_members_is_never_stalled() -> None:
    clock = Clock()
    tracker = StallTracker(1.0, clock)
    tracker.update(_view(3, members=0))
    clock.now += 5
    assert tracker.update(_view(3, members=0)) == {}


def test_the_dead_letter_failed_mark_round_trips_and_stays_small() -> None:
    mark = DlqFailedMark(41, "events.dlq.audit", "Broker: Message size too large " * 100, 1_700_000_000_000)
    text = format_mark(mark)
    assert text.startswith(MARK_PREFIX)
    assert len(text.encode()) < 1024  # offset.metadata.max.bytes is 4096 by default
    back = parse_mark(text)
    assert back is not None
    assert (back.record, back.dlq, back.since_ms) == (41, "events.dlq.audit", 1_700_000_000_000)
    assert back.error == mark.error[:512]
    for other in (None, "", "some other client's metadata", MARK_PREFIX + "{not json", MARK_PREFIX + '{"record": 1}'):
        assert parse_mark(other) is None


def test_a_dead_letter_that_could_not_be_written_raises_dlq_failed_until_the_partition_moves_on() -> None:
    clock = Clock()
    wd, published = _watchdog(clock)
    mark = DlqFailedMark(7, "t.dlq.s", "Broker: Message size too large", 1)

    def view(committed: int, marked: bool, members: int = 1) -> GroupView:
        return GroupView(
            "govbus.sink.s",
            "STABLE",
            members,
            "audit",
            {0: committed},
            {0: 10 - committed},
            {0: mark} if marked else {},
        )

    wd.groups({"govbus.sink.s": view(7, marked=False)})
    assert not wd.alerts.active
    wd.groups({"govbus.sink.s": view(7, marked=True)})
    (alert,) = [a for (kind, _), a in wd.alerts.active.items() if kind == "dlq-failed"]
    assert alert.subject == "govbus.sink.s/0"
    for part in ("govbus.sink.s", "audit", "partition 0", "held at offset 7", "offset 7", "t.dlq.s", "too large"):
        assert part in alert.detail
    # A sink that stopped on it still holds the partition: the alert stays (sink-gone joins it).
    wd.groups({"govbus.sink.s": view(7, marked=True, members=0)})
    assert ("dlq-failed", "govbus.sink.s/0") in wd.alerts.active
    assert ("sink-gone", "govbus.sink.s") in wd.alerts.active
    wd.groups({"govbus.sink.s": view(8, marked=False)})  # dead letter written, committed past it
    assert not wd.alerts.active
    raised = [e for e in published if e.action == "govbus.watch.dlq-failed"]
    assert [(e.decision, e.severity) for e in raised] == [("raised", "critical"), ("cleared", "info")]
    assert "committed offset 8" in raised[1].reason


# -- the command -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GOVBUS_WATCH__ALERTS_TOPIC": "govbus.events"}, "GOVBUS_WATCH__ALERTS_TOPIC"),
        ({"GOVBUS_WATCH__SILENT_FACTR": "3"}, "GOVBUS_WATCH__SILENT_FACTOR"),
        ({"GOVBUS_WATCH__SILENT_FACTOR": "1"}, "GOVBUS_WATCH__SILENT_FACTOR"),
    ],
)
def test_govbus_watch_refuses_bad_settings_naming_the_variable(
    env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from govbus._cli import main

    monkeypatch.setenv("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["watch"]) == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "override", "replay", "heartbeats"),
    [
        ("audit", None, "dead-letter", True),  # audit: never skips, records heartbeats
        ("http", None, "dead-letter", False),  # siem: never skips
        ("stdout", None, "skip", False),  # debug: the shortcut stands
        ("stdout", "audit", "dead-letter", True),  # a deployment's override counts
    ],
)
def test_the_runtime_applies_its_class(
    name: str, override: str | None, replay: str, heartbeats: bool, tmp_path: Path
) -> None:
    from _sinks import CollectingSink

    from govbus._settings import load_settings
    from govbus.consumers import SinkRuntime

    _, ring = signing_pair("cls-k1")
    ring.save(tmp_path / "keyring.json")
    sink: dict[str, Any] = {"verify": {"keyring": str(tmp_path / "keyring.json")}, "health": {"enabled": False}}
    if override:
        sink["sink_class"] = override
    runtime = SinkRuntime(CollectingSink(), load_settings(sink=sink), name=name)
    assert runtime.sink_class == (override or SHIPPED_CLASSES[name])
    assert runtime.verification is not None
    assert runtime.verification.policy.replay == replay
    assert runtime._intake.deliver_heartbeats is heartbeats
