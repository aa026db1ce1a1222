"""The gate's consumer-group questions (ListGroups, DescribeGroups, OffsetFetch), asked from a child process.

Why a child: these admin requests go to the group coordinator, and librdkafka (2.16 and earlier,
confluentinc/librdkafka#4605) aborts the *whole process* with ``rd_kafka_enq_once_del_source_return:
Assertion `eonce->refcnt > 0' failed`` when the coordinator's connection drops as a request is
built — which a broker restart or crash does. The fault suite hit it in a rolling restart: the
gate, and with it a kernel running the gate in-process (and the events in its memory), died. In a
child, the abort fails one sink check (fail closed, with the reason) and the next refresh starts a
new child; the gate's own process never runs that code path.

Protocol: the parent writes the librdkafka configuration as the first JSON line (through the pipe,
so no secret is in argv or the environment), then one JSON request per line; the child answers
each with one JSON line. Every group question goes here: the per-sink checks (``describe``,
``committed``) and the class checks (``observe``: every sink group's members, class and lag).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from confluent_kafka import KafkaError, KafkaException

from govbus._dlqmark import format_mark, parse_mark
from govbus.watch._groups import GroupView

_COORDINATOR_MOVING = ("NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE")
_ANSWER_SLACK_S = 5.0  # beyond the request's own timeout: scheduling on a busy machine
_REAP_S = 2.0
# librdkafka checks request timeouts once a second: waiting on the future only as long as the
# request's own timeout races its typed error (_TIMED_OUT, _TRANSPORT) with a bare TimeoutError
# (seen in CI on a busy machine). Stays well inside the parent's _ANSWER_SLACK_S.
_FUTURE_SLACK_S = 2.0
_START_TIMEOUT_S = 30.0  # a new child imports confluent-kafka before it says it is ready


class GroupProbeError(Exception):
    """The child process died or hung (a broker's error is raised as the KafkaException it was)."""


class GroupProbe:
    """A long-lived child answering group questions; restarted after it dies.

    ``server``: the module whose ``_serve()`` the child runs (this one's answers the gate's and the
    watchdog's questions; another component asks its own through a subclass, see
    ``govbus/console/_lagprobe.py``, with :func:`serve_requests` doing the protocol)."""

    def __init__(self, kafka_conf: dict[str, Any], *, server: str = __name__) -> None:
        # Callables (logger, callbacks) cannot cross a pipe, and the child sets its own.
        self._conf = {k: v for k, v in kafka_conf.items() if isinstance(v, str | int | float | bool)}
        self._server = server
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.restarts = 0  # children replaced after they died or hung

    def describe(self, group: str, timeout: float) -> tuple[int, str]:
        """(live members, state name) of ``group``."""
        answer = self._ask({"op": "describe", "group": group, "timeout": timeout}, timeout)
        return int(answer["members"]), str(answer["state"])

    def committed(self, group: str, topic: str, partitions: list[int], timeout: float) -> dict[int, int]:
        """partition -> committed offset (negative: none) of ``group`` on ``topic``."""
        request = {"op": "committed", "group": group, "topic": topic, "partitions": partitions, "timeout": timeout}
        answer = self._ask(request, timeout)
        return {int(p): int(o) for p, o in answer["offsets"].items()}

    def observe(self, topic: str, partitions: list[int], prefix: str, timeout: float) -> dict[str, GroupView]:
        """Every group whose id starts with ``prefix``: members, declared class, offsets and lag on ``topic``."""
        request = {"op": "observe", "topic": topic, "partitions": partitions, "prefix": prefix, "timeout": timeout}
        # Several requests in a row (list, describe, offsets per group), each bounded by ``timeout``.
        answer = self._ask(request, timeout * 3)
        return {v["group"]: _view_from_json(v) for v in answer["views"]}

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self._lock:
            if self._proc is not None and self._proc.poll() is not None:
                # It died between requests: librdkafka's threads abort on a late response too.
                code = self._proc.poll()
                self._stop()
                self.restarts += 1
                raise GroupProbeError(_died(f"died ({_exit_text(code)})"))
            try:
                proc = self._child()
            except OSError as exc:
                self._stop()
                raise GroupProbeError(str(exc)) from None
            stdin, stdout = proc.stdin, proc.stdout
            assert stdin is not None
            assert stdout is not None
            try:
                stdin.write(json.dumps(request).encode() + b"\n")
                stdin.flush()
                line = _read_line(stdout, timeout + _ANSWER_SLACK_S)
            except OSError:
                line = None
            if line is None:
                try:  # its pipe closes a moment before it can be reaped: wait for the cause (signal or code)
                    code = proc.wait(_REAP_S)
                except subprocess.TimeoutExpired:
                    code = None  # alive and silent: hung
                self._stop()
                self.restarts += 1
                raise GroupProbeError(_died(f"died ({_exit_text(code)})" if code is not None else "did not answer"))
        answer: dict[str, Any] = json.loads(line)
        if "code" in answer:  # the broker's (or librdkafka's) error, as the in-process call raised it
            raise KafkaException(KafkaError(int(answer["code"]), str(answer["message"])))
        if "error" in answer:
            raise GroupProbeError(str(answer["error"]))
        return answer

    def _child(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._proc = subprocess.Popen(
            [sys.executable, "-c", f"from {self._server} import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(json.dumps(self._conf).encode() + b"\n")
        stdin.flush()
        if _read_line(stdout, _START_TIMEOUT_S) is None:
            raise OSError(f"the group probe process did not start within {_START_TIMEOUT_S:g} s")
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                # A request left in stdin's buffer by a write the dead child never read: close()
                # flushes it again and raises BrokenPipeError (the pipe is closed all the same).
                with contextlib.suppress(OSError):
                    stream.close()


def _read_line(stream: IO[bytes], timeout: float) -> bytes | None:
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return None  # the child is gone
        data += chunk
    return data


def _view_to_json(view: GroupView) -> dict[str, Any]:
    return {
        "group": view.group,
        "state": view.state,
        "members": view.members,
        "sink_class": view.sink_class,
        "committed": {str(p): o for p, o in view.committed.items()},
        "lag": {str(p): n for p, n in view.lag.items()},
        "dlq_failed": {str(p): format_mark(m) for p, m in view.dlq_failed.items()},
    }


def _view_from_json(raw: dict[str, Any]) -> GroupView:
    marks = {int(p): parse_mark(m) for p, m in raw["dlq_failed"].items()}
    return GroupView(
        str(raw["group"]),
        str(raw["state"]),
        int(raw["members"]),
        raw["sink_class"],
        {int(p): int(o) for p, o in raw["committed"].items()},
        {int(p): int(n) for p, n in raw["lag"].items()},
        {p: m for p, m in marks.items() if m is not None},
    )


def _died(how: str) -> str:
    return (
        f"the group probe process {how}; librdkafka aborts on a coordinator connection lost "
        "mid-request (confluentinc/librdkafka#4605): a new one asks at the next refresh"
    )


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        import signal

        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


# -- the child ----------------------------------------------------------------------------------


def _serve() -> None:  # pragma: no cover - runs in the child process; covered by the gate's tests
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    conf = read_conf()
    admin = AdminClient({**conf, "log_level": 0})
    # librdkafka keeps asking a coordinator that went away (a stopped broker) until it returns:
    # a client that timed out or lost its transport is replaced, so the next question looks the
    # coordinator up afresh (measured: sink checks failed for the whole of a broker's restart).
    stale = ("_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN")

    def describe(group: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:  # NOT_COORDINATOR and friends pass within moments while the coordinator moves
            left = max(0.1, deadline - time.monotonic())
            try:
                described = admin.describe_consumer_groups([group], request_timeout=left)[group]
                desc = described.result(timeout=left + _FUTURE_SLACK_S)
                return {"members": len(desc.members), "state": desc.state.name}
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                moving = isinstance(err, KafkaError) and err.name() in _COORDINATOR_MOVING
                if not moving or time.monotonic() + 0.1 >= deadline:
                    raise
                time.sleep(0.1)

    def committed(group: str, topic: str, partitions: list[int], timeout: float) -> dict[str, Any]:
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])]
        asked = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group]
        result = asked.result(timeout=timeout + _FUTURE_SLACK_S)
        return {"offsets": {str(tp.partition): tp.offset for tp in result.topic_partitions}}

    def observe(topic: str, partitions: list[int], prefix: str, timeout: float) -> dict[str, Any]:
        from govbus.watch._groups import list_sink_groups, observe_groups

        views = observe_groups(admin, topic, partitions, list_sink_groups(admin, timeout, prefix), timeout)
        return {"views": [_view_to_json(v) for v in views.values()]}

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "describe":
            return describe(request["group"], float(request["timeout"]))
        if request["op"] == "observe":
            return observe(request["topic"], list(request["partitions"]), request["prefix"], float(request["timeout"]))
        return committed(request["group"], request["topic"], list(request["partitions"]), float(request["timeout"]))

    def failed(exc: Exception) -> None:
        nonlocal admin
        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        if isinstance(exc, TimeoutError) or (isinstance(err, KafkaError) and err.name() in stale):
            admin = AdminClient({**conf, "log_level": 0})

    serve_requests(handle, failed)


def read_conf() -> dict[str, Any]:  # pragma: no cover - runs in the child process
    """The child's first line: the librdkafka configuration (through the pipe: no secret in argv)."""
    conf: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    return conf


def serve_requests(
    handle: Callable[[dict[str, Any]], dict[str, Any]], failed: Callable[[Exception], None] | None = None
) -> None:  # pragma: no cover - runs in the child process; covered by the gate's and the console's tests
    """The child's side of the protocol: says it is ready, then answers each JSON request line with
    ``handle(request)``'s JSON line; an exception becomes an answer (a Kafka error keeps its code)
    and is handed to ``failed`` (to replace a client gone stale)."""
    out = sys.stdout.buffer
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            answer = handle(request)
        except Exception as exc:
            err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            text = err.str() if isinstance(err, KafkaError) else str(exc)
            text = text or f"no answer within {request.get('timeout')} s"
            answer = {"error": f"{type(exc).__name__}: {text}"}
            if isinstance(err, KafkaError):
                answer = {"code": err.code(), "message": text}
            if failed is not None:
                failed(exc)
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()
