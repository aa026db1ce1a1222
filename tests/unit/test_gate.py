"""The gate's logic without a broker: policy validation, debouncing, staleness, modes, recording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from govbus.errors import ConfigError
from govbus.event import GovernanceEvent
from govbus.gate import CheckResult, Gate, GatePolicy, load_policy, parse_policy
from govbus.gate._checks import BusProbe, ComponentStatus
from govbus.gate._gate import debounce


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Script:
    """A probe that returns scripted results, one list per refresh."""

    def __init__(self, *rounds: list[CheckResult]) -> None:
        self.rounds = list(rounds)

    def __call__(self, policy: GatePolicy) -> list[CheckResult]:
        return self.rounds.pop(0)


OK = [CheckResult("broker", True, "up"), CheckResult("topic", True, "6 partitions")]
TOPIC_DOWN = [CheckResult("broker", True, "up"), CheckResult("topic", False, "topic t does not exist")]


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"mode": "deny"}, "mode"),
        ({"refresh_interval_s": -1}, "refresh_interval_s"),
        ({"checks": {"topic": {"min_partitions": 0}}}, "checks.topic.min_partitions"),
        ({"checks": {"sinks": [{"name": "audit", "max_lag": -5}]}}, "checks.sinks[0].max_lag"),
        ({"checks": {"sinks": [{"name": "audit", "lag": 5}]}}, "checks.sinks[0].lag"),
        ({"checks": {"brokr": {}}}, "checks.brokr"),
        ({"debounce": {"fail_after": 0}}, "debounce.fail_after"),
    ],
)
def test_malformed_policy_names_the_key(tmp_path: Path, doc: dict[str, object], key: str) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert info.value.setting == f"{path}: {key}"


def test_yaml_policy_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "mode: enforce\ndebounce: 3\nchecks:\n  topic: {min_partitions: 6}\n  sinks:\n    - {name: audit, max_lag: 100}\n"
    )
    policy = load_policy(path, {"mode": "observe", "refresh_interval_s": None})
    assert policy.mode == "observe"
    assert policy.debounce.fail_after == policy.debounce.pass_after == 3
    assert policy.checks.sinks[0].group_id == "govbus.sink.audit"
    assert policy.checks.topic.min_partitions == 6


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(bad)
    with pytest.raises(ConfigError, match="mapping"):
        parse_policy(["a"])
    with pytest.raises(ConfigError, match="listed twice"):
        parse_policy({"checks": {"sinks": [{"name": "a"}, {"name": "a"}]}})
    with pytest.raises(ConfigError, match="stale"):
        parse_policy({"refresh_interval_s": 10, "max_staleness_s": 5})


def test_debounce_hysteresis() -> None:
    policy = parse_policy({"debounce": {"fail_after": 2, "pass_after": 3}})
    ok, bad = CheckResult("c", True, "fine"), CheckResult("c", False, "broken")
    s = debounce(None, ok, policy)
    assert not s.passing  # starts failing: admission has to be earned
    s = debounce(s, ok, policy)
    assert not s.passing
    assert "recovering (2/3" in s.reason
    s = debounce(s, ok, policy)
    assert s.passing
    s = debounce(s, bad, policy)
    assert s.passing  # one failure is not enough with fail_after=2
    s = debounce(s, ok, policy)
    s = debounce(s, bad, policy)
    assert s.passing  # the streak was broken
    s = debounce(s, bad, policy)
    assert not s.passing
    assert s.reason == "broken"


def test_admit_denies_without_snapshot_and_when_stale() -> None:
    clock = Clock()
    gate = Gate(parse_policy({"debounce": 1, "max_staleness_s": 5}), Script(OK), clock=clock)
    d = gate.admit("a1")
    assert not d.allowed
    assert d.reasons == ("no health snapshot yet",)
    gate.refresh()
    assert gate.admit("a1").allowed
    clock.now += 5.1
    d = gate.admit("a1")
    assert not d.allowed
    assert "old" in d.reasons[0]


def test_failing_check_denies_with_reason_and_observe_mode_allows() -> None:
    for mode, allowed in (("enforce", False), ("observe", True)):
        gate = Gate(parse_policy({"mode": mode, "debounce": 1}), Script(TOPIC_DOWN), clock=Clock())
        gate.refresh()
        d = gate.admit("a1")
        assert d.allowed is allowed
        assert d.would_deny
        assert d.reasons == ("topic: topic t does not exist",)
        assert d.mode == mode


def test_probe_exception_keeps_denying() -> None:
    def broken(policy: GatePolicy) -> list[CheckResult]:
        raise RuntimeError("boom")

    gate = Gate(parse_policy({}), broken, clock=Clock())
    gate._safe_refresh()
    assert not gate.admit("a").allowed


def test_component_check_without_source_or_raising_fails_closed() -> None:
    def raising() -> ComponentStatus:
        raise OSError("gone")

    assert not BusProbe._component("producer", None).ok
    r = BusProbe._component("signing", raising)
    assert not r.ok
    assert "gone" in r.reason
    assert BusProbe._guard("topic", lambda: (_ for _ in ()).throw(ValueError("bad"))).ok is False


def test_every_decision_is_recorded_as_an_event() -> None:
    got: list[GovernanceEvent] = []
    gate = Gate(parse_policy({"debounce": 1}), Script(OK, TOPIC_DOWN), recorder=got.append, clock=Clock())
    gate.refresh()
    gate.admit("agent-1")
    gate.refresh()
    gate.admit("agent-2")
    gate.close()
    assert [(e.agent_id, e.decision) for e in got] == [("agent-1", "allow"), ("agent-2", "deny")]
    assert got[1].reason == "topic: topic t does not exist"
    assert got[1].policy_name == "govbus.gate"
    assert got[1].attributes["would_deny"] is True


def test_recorder_failure_is_counted_not_raised() -> None:
    def refuse(event: GovernanceEvent) -> None:
        raise RuntimeError("spool full")

    gate = Gate(parse_policy({}), Script(OK), recorder=refuse, clock=Clock())
    gate.admit("a")
    gate.close()
    assert gate.record_failures == 1
