"""Sink runtime settings: environment variables, defaults, validation naming the variable."""

from __future__ import annotations

import pytest

from govbus._settings import load_settings
from govbus.consumers import SinkRuntimeSettings, VerdictPolicy
from govbus.errors import ConfigError


def test_env_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_TOPIC", "gov.events")
    monkeypatch.setenv("GOVBUS_SINK__OPTIONS__PATH", "/var/log/g.jsonl")
    monkeypatch.setenv("GOVBUS_SINK__BATCH__MAX_RECORDS", "42")
    monkeypatch.setenv("GOVBUS_SINK__INFLIGHT__MAX_BYTES", "1000000")
    monkeypatch.setenv("GOVBUS_SINK__VERIFY__POLICY__GAP", "dead-letter")
    monkeypatch.setenv("GOVBUS_SINK__CONSUMER", '{"session.timeout.ms": 6000}')
    monkeypatch.setenv("GOVBUS_SINK__HEALTH__PORT", "0")
    s = load_settings()
    assert s.sink.options == {"path": "/var/log/g.jsonl"}
    assert s.sink.batch.max_records == 42
    assert s.sink.inflight.max_bytes == 1_000_000
    assert s.sink.verify.policy.gap == "dead-letter"
    assert s.sink.consumer == {"session.timeout.ms": 6000}
    assert s.sink.health.port == 0


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GOVBUS_SINK__VERIFY__POLICY__REPLAY", "explode"),
        ("GOVBUS_SINK__BATCH__MAX_RECORDS", "0"),
        ("GOVBUS_SINK__DLQ__TOPIC_TEMPLATE", "dlq.{sink}"),
        ("GOVBUS_SINK__RETRY__MAX_BACKOFF_MS", "1"),
        ("GOVBUS_SINK__INSTANCE", "bad name"),
        ("GOVBUS_SINK__GROUP_INSTANCE_ID", "pod/name"),
    ],
)
def test_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.setting == var


def test_names_are_predictable() -> None:
    s = SinkRuntimeSettings()
    assert s.group_for("file") == "govbus.sink.file"
    assert s.dlq_topic("gov.events", "file") == "gov.events.dlq.file"
    assert s.replay_topic("gov.events", "file") == "gov.events.replay.file"
    s2 = SinkRuntimeSettings(instance="archive")
    assert s2.group_for("file") == "govbus.sink.archive"
    assert SinkRuntimeSettings(group_id="custom").group_for("file") == "custom"


def test_safe_default_verdict_policy() -> None:
    p = VerdictPolicy()
    assert p.action("valid") == "deliver"
    assert p.action("gap") == "flag"
    assert p.action("reordered") == "flag"
    assert p.action("replay") == "skip"
    for code in ("bad-signature", "unknown-kid", "revoked-kid", "expired-kid", "malformed", "from-the-future"):
        assert p.action(code) == "dead-letter"
    assert VerdictPolicy(replay="flag").action("replay") == "flag"


def test_group_instance_id_defaults_to_host_and_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "node-1.example:8080")
    assert SinkRuntimeSettings().instance_id_for("file") == "node-1.example-8080.file"  # ':' is not legal
    assert SinkRuntimeSettings(instance="audit-eu").instance_id_for("audit") == "node-1.example-8080.audit-eu"


def test_group_instance_id_explicit_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_SINK__GROUP_INSTANCE_ID", "govbus-sink-file-0")
    assert load_settings().sink.instance_id_for("file") == "govbus-sink-file-0"
    monkeypatch.setenv("GOVBUS_SINK__GROUP_INSTANCE_ID", "")  # empty: dynamic membership
    assert load_settings().sink.instance_id_for("file") is None


def test_the_static_id_changes_with_the_subscription() -> None:
    """A process taking over a static seat gets the old member's assignment even for other topics
    (no rebalance): a different subscription must mean a different id."""
    from govbus.consumers._runtime import _static_id

    a = _static_id("host.file", ["govbus.events", "govbus.events.replay.file"])
    assert a is not None
    assert a.startswith("host.file.")
    assert len(a) == len("host.file.") + 8
    assert a == _static_id("host.file", ["govbus.events.replay.file", "govbus.events"])
    assert a != _static_id("host.file", ["govbus.events"])
    assert _static_id(None, ["govbus.events"]) is None
