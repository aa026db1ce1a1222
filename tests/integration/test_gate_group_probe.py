"""The gate's group questions run in a child process, so librdkafka's abort on a coordinator
connection lost mid-request (confluentinc/librdkafka#4605, hit by the cluster fault suite in a
rolling restart: `rd_kafka_enq_once_del_source_return: Assertion eonce->refcnt > 0 failed`, the
gate's process aborted) fails one sink check instead of killing the process that runs the gate.

The abort cannot be provoked on demand (it is a race in librdkafka), so it is simulated: the child
is sent SIGABRT, as the assertion does."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from govbus.gate import BusProbe, parse_policy
from govbus.gate._groups import GroupProbe

pytestmark = pytest.mark.integration


def test_an_aborted_group_probe_fails_one_check_and_is_replaced(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    group = f"govbus.sink.probe-{uuid.uuid4().hex[:8]}"
    policy = parse_policy(
        {"checks": {"producer": {"enabled": False}, "sinks": [{"name": "x", "group": group, "max_lag": 10}]}}
    )
    probe = BusProbe({"bootstrap.servers": kafka_bootstrap}, topic)
    groups: GroupProbe = probe._groups

    def sink_check() -> tuple[bool, str]:
        result = next(r for r in probe.run(policy) if r.name == "sink:x")
        return result.ok, result.reason

    assert sink_check() == (False, f"group {group} has 0 live member(s), needs 1 (state DEAD)")
    assert groups._proc is not None
    os.kill(groups._proc.pid, signal.SIGABRT)  # what librdkafka's failed assertion does
    ok, reason = sink_check()
    assert not ok
    assert "the group probe process died (signal SIGABRT)" in reason
    assert "librdkafka#4605" in reason
    # The next refresh asks a new child; the process running the gate never noticed.
    assert sink_check() == (False, f"group {group} has 0 live member(s), needs 1 (state DEAD)")
    assert groups.restarts == 1
    assert groups.committed(group, topic, [0, 1], 10) == {0: -1001, 1: -1001}


def test_a_broker_error_is_a_reason_not_a_crash() -> None:
    groups = GroupProbe({"bootstrap.servers": "127.0.0.1:1", "socket.connection.setup.timeout.ms": 1000})
    try:
        with pytest.raises(KafkaException) as raised:
            groups.describe("g", 5.0)
        assert isinstance(raised.value.args[0], KafkaError)
        assert groups.restarts == 0
    finally:
        groups.close()


def test_a_request_left_unread_by_a_dead_child_does_not_escape_the_cleanup() -> None:
    """The child can die between the liveness check and the request: the write's flush fails
    and leaves the request in stdin's buffer, and closing stdin flushes it again. CI once saw
    that BrokenPipeError replace the died-of-SIGABRT reason; replacing the child must swallow it."""
    groups = GroupProbe({"bootstrap.servers": "127.0.0.1:1"})
    try:
        proc = groups._child()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdin is not None
        proc.stdin.write(b'{"op": "describe"}\n')  # buffered: the flush that failed left it there
        groups._stop()
        assert proc.stdin.closed
        assert groups._proc is None
    finally:
        groups.close()


def test_the_class_checks_ask_the_child_too_and_survive_its_abort(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """``required_classes`` lists and describes every sink group: the same coordinator requests
    as the sink checks, so the same child answers them (they used to run in the gate's process)."""
    topic = new_topic(partitions=2)
    prefix = f"govbus.sink.cls-{uuid.uuid4().hex[:8]}"
    policy = parse_policy(
        {
            "required_classes": {"audit": 1},
            "checks": {"producer": {"enabled": False}, "classes": {"group_prefix": prefix}},
        }
    )
    probe = BusProbe({"bootstrap.servers": kafka_bootstrap}, topic)
    groups: GroupProbe = probe._groups

    def class_check() -> tuple[bool, str]:
        result = next(r for r in probe.run(policy) if r.name == "class:audit")
        return result.ok, result.reason

    normal = (False, "0 healthy sink(s) of class audit, the policy requires 1: no sink group declares class audit")
    assert class_check() == normal
    assert groups._proc is not None, "the class check did not ask the group probe's child"
    os.kill(groups._proc.pid, signal.SIGABRT)  # what librdkafka's failed assertion does
    ok, reason = class_check()
    assert not ok
    assert "the group probe process died (signal SIGABRT)" in reason
    assert "librdkafka#4605" in reason
    assert class_check() == normal
    assert groups.restarts == 1
