"""The HTTP sink against a real HTTP server on 127.0.0.1, and once end to end through the runtime.

The server records every request and answers from a script (429 with Retry-After, 400, 413…),
so each outcome — acknowledged, retried after the server's delay, dead-lettered with the
response — is checked against what the server saw.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _sink_receivers import Answer, HttpReceiver, delivered, self_signed
from _sinks import events, produce, records, wait_for

from govbus._settings import load_settings
from govbus.consumers._dlq import read_dead_letters
from govbus.consumers._runtime import SinkRuntime
from govbus.consumers._spi import OK, Batch, Rejected, RetryLater
from govbus.consumers.sinks._http import HttpSink


@pytest.fixture
def server() -> Iterator[HttpReceiver]:
    with HttpReceiver() as s:
        yield s  # type: ignore[misc]


def _ids(body: bytes) -> list[str]:
    return [e["id"] for e in json.loads(body)]


def test_batch_is_one_cloudevents_json_array_with_bearer_token(server: HttpReceiver) -> None:
    recs = delivered(50)
    sink = HttpSink(url=server.url(), token="t0ken")
    try:
        assert sink.write(Batch(recs)) is OK
    finally:
        sink.close()
    (req,) = server.requests
    assert req.path == "/events"
    assert req.headers["Content-Type"] == "application/cloudevents-batch+json; charset=utf-8"
    assert req.headers["Authorization"] == "Bearer t0ken"
    assert _ids(req.body) == [r.event.event_id for r in recs]
    first = json.loads(req.body)[0]
    assert first["specversion"] == "1.0"
    assert first["data"]["agent_id"] == recs[0].event.agent_id


def test_connection_is_kept_alive_across_batches(server: HttpReceiver) -> None:
    sink = HttpSink(url=server.url())
    try:
        for _ in range(3):
            assert sink.write(Batch(delivered(2))) is OK
        conn = sink._client._conn  # type: ignore[union-attr]
        assert conn is not None
        assert conn.sock is not None
    finally:
        sink.close()
    assert len(server.requests) == 3


def test_429_retry_after_is_handed_to_the_runtime(server: HttpReceiver) -> None:
    recs = delivered(5)
    server.script.append(Answer(429, {"Retry-After": "2"}))
    sink = HttpSink(url=server.url())
    try:
        result = sink.write(Batch(recs))
        assert isinstance(result, RetryLater)
        assert result.delay == 2.0
        assert result.indices is None  # the whole batch
        assert sink.write(Batch(recs, attempt=2)) is OK
    finally:
        sink.close()
    assert [_ids(r.body) for r in server.requests] == [[r.event.event_id for r in recs]] * 2


def test_5xx_is_retried_with_the_runtimes_backoff(server: HttpReceiver) -> None:
    server.script.append(Answer(503))
    sink = HttpSink(url=server.url())
    try:
        result = sink.write(Batch(delivered(2)))
    finally:
        sink.close()
    assert isinstance(result, RetryLater)
    assert result.delay is None
    assert "503" in result.reason


def test_400_is_rejected_with_the_response(server: HttpReceiver) -> None:
    server.script.append(Answer(400, {"Content-Type": "application/json"}, b'{"text":"Invalid data format","code":6}'))
    sink = HttpSink(url=server.url())
    try:
        result = sink.write(Batch(delivered(3)))
    finally:
        sink.close()
    assert isinstance(result, Rejected)
    assert set(result.failures) == {0, 1, 2}
    assert result.failures[0] == 'HTTP 400 Bad Request: {"text":"Invalid data format","code":6}'


def test_progress_is_kept_when_a_later_request_is_throttled(server: HttpReceiver) -> None:
    recs = delivered(30)
    sink = HttpSink(url=server.url(), max_body_bytes="8192")
    chunks = sink._chunks([sink._encode(r) for r in recs])
    assert len(chunks) >= 3
    server.script += [Answer(200), Answer(429, {"Retry-After": "1"})]
    try:
        result = sink.write(Batch(recs))
    finally:
        sink.close()
    assert isinstance(result, RetryLater)
    assert result.delay == 1.0
    # The first request's events are acknowledged; the rest are retried, none was dropped.
    assert result.indices == frozenset(range(len(chunks[0]), 30))
    # A server that asked us to slow down is not sent the remaining requests of the batch.
    assert len(server.requests) == 2


def test_refused_events_are_retried_too_when_a_later_request_must_be_retried(server: HttpReceiver) -> None:
    recs = delivered(30)
    sink = HttpSink(url=server.url(), max_body_bytes="8192")
    server.script += [Answer(400, {}, b"bad"), Answer(503)]
    try:
        result = sink.write(Batch(recs))
    finally:
        sink.close()
    # RetryLater cannot carry rejections: the refused events must not be acknowledged instead.
    assert isinstance(result, RetryLater)
    assert result.indices is None


def test_413_splits_the_request(server: HttpReceiver) -> None:
    recs = delivered(8)
    server.script.append(Answer(413))
    sink = HttpSink(url=server.url())
    try:
        assert sink.write(Batch(recs)) is OK
    finally:
        sink.close()
    sizes = [len(json.loads(r.body)) for r in server.requests]
    assert sizes == [8, 4, 4]


def test_single_event_too_large_is_rejected(server: HttpReceiver) -> None:
    server.script += [Answer(413, {}, b"too big")] * 3  # the pair, then each alone
    sink = HttpSink(url=server.url())
    try:
        result = sink.write(Batch(delivered(2)))
    finally:
        sink.close()
    assert isinstance(result, Rejected)
    assert set(result.failures) == {0, 1}
    assert "413" in result.failures[0]


def test_auth_failures_are_retried_unless_configured_otherwise(server: HttpReceiver) -> None:
    server.script += [Answer(401), Answer(403)]
    retrying = HttpSink(url=server.url())
    strict = HttpSink(url=server.url(), retry_auth_failures="false")
    try:
        assert isinstance(retrying.write(Batch(delivered(1))), RetryLater)
        assert isinstance(strict.write(Batch(delivered(1))), Rejected)
    finally:
        retrying.close()
        strict.close()


def test_no_server_is_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        sink = HttpSink(url=f"http://127.0.0.1:{s.getsockname()[1]}/", timeout_s="2")
        result = sink.write(Batch(delivered(1)))
        sink.close()
    assert isinstance(result, RetryLater)
    assert "no response" in result.reason


def test_splunk_hec_requests(server: HttpReceiver) -> None:
    recs = delivered(4)
    sink = HttpSink(url=server.url("/services/collector/event"), format="splunk-hec", token="hec", hec_index="gov")
    try:
        assert sink.write(Batch(recs)) is OK
    finally:
        sink.close()
    (req,) = server.requests
    assert req.headers["Authorization"] == "Splunk hec"
    objs = [json.loads(line) for line in req.body.splitlines()]
    assert [o["event"]["id"] for o in objs] == [r.event.event_id for r in recs]
    assert {o["index"] for o in objs} == {"gov"}


def test_https_with_a_private_ca(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with HttpReceiver(tls=(cert, key)) as server:
        trusting = HttpSink(url=server.url(), tls_ca_file=str(cert))
        default = HttpSink(url=server.url(), timeout_s="5")
        try:
            assert trusting.write(Batch(delivered(2))) is OK
            refused = default.write(Batch(delivered(2)))
        finally:
            trusting.close()
            default.close()
        assert isinstance(refused, RetryLater)
        assert "CERTIFICATE_VERIFY_FAILED" in refused.reason
        assert len(server.requests) == 1


# -- end to end: the real runtime, a real broker -------------------------------------------------


def _run(runtime: SinkRuntime) -> Callable[[], None]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runtime.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="sink-runtime", daemon=True)
    thread.start()

    def stop() -> None:
        runtime.stop()
        thread.join(30)
        assert not thread.is_alive(), "runtime did not stop"
        assert not errors, errors

    return stop


def test_runtime_waits_retry_after_and_dead_letters_400(
    kafka_bootstrap: str, new_topic: Callable[..., str], server: HttpReceiver
) -> None:
    topic = new_topic(partitions=1)
    evs = events(6)
    produce(kafka_bootstrap, topic, records(evs))
    all_ids = {e.event_id for e in evs}
    server.script += [
        Answer(429, {"Retry-After": "1"}),
        Answer(400, {"Content-Type": "application/json"}, b'{"text":"Invalid data format","code":6}'),
    ]
    name = f"http-e2e-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topic=topic,
        sink={
            "batch": {"max_wait_ms": 200},
            "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 200},
            "commit_interval_ms": 100,
            "health": {"enabled": False},
        },
    )
    runtime = SinkRuntime(HttpSink(url=server.url()), settings, name=name, verification=None)
    stop = _run(runtime)
    try:
        accepted: set[str] = set()

        def everything_answered() -> bool:
            refused = set(_ids(server.requests[1].body)) if len(server.requests) > 1 else set()
            accepted.clear()
            for r in server.requests[2:]:
                accepted.update(_ids(r.body))
            return bool(refused) and refused | accepted == all_ids

        wait_for(everything_answered, timeout=60, what="every event accepted or refused")
        first, second = server.requests[0], server.requests[1]
        # The runtime retried the throttled batch only after the server's Retry-After.
        assert second.at - first.at >= 1.0
        assert _ids(second.body) == _ids(first.body)
        refused_ids = set(_ids(second.body))
        conf = settings.kafka.librdkafka()
        letters = wait_for(
            lambda: [dl for dl in read_dead_letters(conf, runtime.dlq_topic, timeout=5)] or None,
            timeout=30,
            what="dead letters",
        )
    finally:
        stop()
    assert {dl.error["message"] for dl in letters} == {'HTTP 400 Bad Request: {"text":"Invalid data format","code":6}'}
    assert {dl.error["reason"] for dl in letters} == {"sink:rejected"}
    dead_ids = {dict(dl.headers)["ce_id"].decode() for dl in letters}  # type: ignore[union-attr]
    assert dead_ids == refused_ids
    assert accepted.isdisjoint(refused_ids)
