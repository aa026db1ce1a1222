"""`govbus acl plan`: roles, the plan each gets from the settings, the command's output and errors
(no broker; tests/integration/test_acl_roles.py proves the plans on a secure broker)."""

from __future__ import annotations

import json

import pytest

from govbus._acl import AclEntry, parse_role, plan, principal_of
from govbus._cli import main
from govbus.consumers._settings import SinkRuntimeSettings
from govbus.errors import ConfigError


def _ops(entries: list[AclEntry]) -> set[tuple[str, str, str]]:
    return {(e.resource, e.name, e.operation) for e in entries}


def test_roles_parse_and_unknown_ones_are_refused() -> None:
    assert str(parse_role("sink:audit")) == "sink:audit"
    assert str(parse_role("kernel")) == "kernel"
    for bad in ("sink", "sink:", "kernel:x", "reader", ""):
        with pytest.raises(ConfigError, match="--role"):
            parse_role(bad)


def test_sink_plan_follows_the_sink_settings() -> None:
    s = SinkRuntimeSettings.model_validate(
        {"group_id": "custom-group", "dlq": {"topic_template": "dead.{topic}.{sink}", "create_topics": True}}
    )
    got = _ops(plan(parse_role("sink:file"), topic="ev", sink_settings=s))
    assert got == {
        ("TOPIC", "ev", "READ"),
        ("GROUP", "custom-group", "READ"),
        ("TOPIC", "ev.replay.file", "READ"),
        ("TOPIC", "dead.ev.file", "WRITE"),
        ("TOPIC", "dead.ev.file", "CREATE"),
        ("TOPIC", "ev.replay.file", "CREATE"),
    }
    no_dlq = SinkRuntimeSettings.model_validate({"dlq": {"enabled": False}})
    assert _ops(plan(parse_role("sink:file"), topic="ev", sink_settings=no_dlq)) == {
        ("TOPIC", "ev", "READ"),
        ("GROUP", "govbus.sink.file", "READ"),
    }


def test_gate_and_admin_plans() -> None:
    assert _ops(plan(parse_role("gate"), topic="ev", sinks=["audit"], require_min_isr=True)) == {
        ("TOPIC", "ev", "DESCRIBE"),
        ("TOPIC", "ev", "DESCRIBE_CONFIGS"),
        ("GROUP", "govbus.sink.audit", "DESCRIBE"),
    }
    admin = _ops(plan(parse_role("admin"), topic="ev", sinks=["file"]))
    assert ("CLUSTER", "kafka-cluster", "ALTER") in admin
    assert ("TOPIC", "ev", "READ") not in admin  # the operator does not read events as a sink would
    assert ("GROUP", "govbus.dlq-replay.file", "READ") in admin


def test_plan_command_prints_each_acl_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GOVBUS_TOPIC", "ev")
    argv = ["acl", "plan", "--role", "kernel", "--role", "kernel", "--principal", "User:k", "--json"]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        {"principal": "User:k", "resource": "TOPIC", "name": "ev", "operation": "WRITE", "pattern": "LITERAL",
         "why": "produce events (implies DESCRIBE, IDEMPOTENT_WRITE)"},
    ]  # fmt: skip
    assert main(["acl", "plan", "--role", "sink:file", "--principal", "User:s"]) == 0
    text = capsys.readouterr().out
    assert "ALLOW User:s READ on GROUP govbus.sink.file" in text


def test_a_bad_principal_or_role_is_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acl", "plan", "--role", "kernel", "--principal", "kernel"]) == 2
    assert "--principal: expected User:<name>" in capsys.readouterr().err
    assert main(["acl", "plan", "--role", "writer", "--principal", "User:x"]) == 2
    assert "--role" in capsys.readouterr().err


def test_principal_of_names_who_the_broker_sees() -> None:
    assert principal_of({"security.protocol": "SASL_SSL", "sasl.username": "u"}) == "User:u"
    assert "ANONYMOUS" in principal_of({"bootstrap.servers": "x"})
    assert "certificate" in principal_of({"security.protocol": "SSL", "ssl.certificate.location": "/nonexistent"})


def test_console_and_watch_plans_follow_their_settings() -> None:
    from govbus.watch._settings import WatchSettings

    console = plan(parse_role("console"), topic="ev", sinks=["audit"], require_min_isr=True)
    assert {(e.resource, e.name, e.operation, e.pattern) for e in console} == {
        ("TOPIC", "ev", "READ", "LITERAL"),
        ("TOPIC", "ev", "DESCRIBE_CONFIGS", "LITERAL"),
        ("GROUP", "govbus.sink.", "DESCRIBE", "PREFIXED"),
        ("TOPIC", "ev.dlq.audit", "READ", "LITERAL"),
    }
    with_actions = _ops(plan(parse_role("console"), topic="ev", sinks=["audit"], console_actions=True))
    assert ("TOPIC", "ev.replay.audit", "WRITE") in with_actions
    w = WatchSettings(topic="other", alerts_topic="al", group_id="wg", group_prefix="sinks.")
    watch = plan(parse_role("watch"), topic="ev", watch_settings=w)
    assert {(e.resource, e.name, e.operation, e.pattern) for e in watch} == {
        ("TOPIC", "other", "READ", "LITERAL"),
        ("GROUP", "wg", "READ", "LITERAL"),
        ("GROUP", "sinks.", "DESCRIBE", "PREFIXED"),
        ("TOPIC", "al", "WRITE", "LITERAL"),
        ("TOPIC", "al", "CREATE", "LITERAL"),
    }
    gate = plan(parse_role("gate"), topic="ev", required_classes=True)
    assert ("GROUP", "govbus.sink.", "DESCRIBE") in _ops(gate)


def test_plan_command_reads_the_console_and_watch_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GOVBUS_TOPIC", "ev")
    monkeypatch.setenv("GOVBUS_CONSOLE__ACTIONS_ENABLED", "true")
    monkeypatch.setenv("GOVBUS_WATCH__ALERTS_TOPIC", "my.alerts")
    assert main(["acl", "plan", "--role", "console", "--role", "watch", "--sink", "file", "--principal", "User:c"]) == 0
    text = capsys.readouterr().out
    assert "ALLOW User:c WRITE on TOPIC ev.replay.file " in text
    assert "ALLOW User:c WRITE on TOPIC my.alerts " in text
    assert "ALLOW User:c DESCRIBE on GROUP govbus.sink. (prefixed)" in text
    assert main(["acl", "plan", "--role", "console:x", "--principal", "User:c"]) == 2
