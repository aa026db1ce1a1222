"""Helpers for the sink runtime's tests: records on the thin path (``govbus._record.to_record`` + a raw
confluent-kafka producer, so they do not depend on the producer library), optional signing with
``govbus.signing``, fake messages for the intake stage, and sinks that collect or misbehave.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, Producer

from govbus import _cloudevents as ce
from govbus._contract import Encoder
from govbus._record import OutRecord, to_record
from govbus._sample import sample_events
from govbus.consumers import OK, Batch, Rejected, RetryLater, SinkBase, WriteResult
from govbus.event import GovernanceEvent, ProducerInfo

PRODUCER = ProducerInfo("sink-tests", uuid.uuid4().hex, "test-host", "govbus-python/test")
TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


@dataclass
class Rec:
    """A record ready to produce (``partition`` None: let the key decide)."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    event_id: str | None = None
    partition: int | None = None


def events(n: int, *, seed: int = 7, agents: int = 8) -> list[GovernanceEvent]:
    return [e.replace(event_id=uuid.uuid4().hex) for e in sample_events(n, seed=seed, agents=agents)]


def records(
    evs: Iterable[GovernanceEvent], *, traceparent: str | None = TRACEPARENT, encoder: Encoder | None = None
) -> list[Rec]:
    enc = encoder or Encoder()
    out = []
    for e in evs:
        r: OutRecord = to_record(e, PRODUCER, enc, traceparent=traceparent)
        out.append(Rec(r.key, r.value, list(r.headers), e.event_id))
    return out


def sign(recs: Sequence[Rec], signer: Any, partitions: int) -> list[Rec]:
    """Signs ``recs`` as one batch, choosing each record's partition (signatures bind it)."""
    from govbus.signing import SignInput

    for i, r in enumerate(recs):
        if r.partition is None:
            r.partition = i % partitions
    inputs = []
    for r in recs:
        h = dict(r.headers)
        assert r.value is not None
        assert r.partition is not None
        inputs.append(
            SignInput(
                r.value,
                r.key,
                h[ce.CE_ID].decode(),
                h[ce.CE_TYPE].decode(),
                h[ce.CE_SOURCE].decode(),
                h[ce.CE_TIME].decode() if ce.CE_TIME in h else None,
                r.partition,
            )
        )
    for r, extra in zip(recs, signer.sign_batch(inputs), strict=True):
        r.headers = r.headers + list(extra)
    return list(recs)


def signing_pair(kid: str = "test-k1") -> tuple[Any, Any]:
    """(Signer, Keyring holding its public key)."""
    from govbus.signing import KeyEntry, Keyring, Signer, SigningKey

    key = SigningKey.generate(kid)
    return Signer(key), Keyring([KeyEntry(key.kid, key.public_bytes)])


def produce(bootstrap: str, topic: str, recs: Iterable[Rec]) -> int:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    n = 0
    for r in recs:
        kwargs: dict[str, Any] = {"value": r.value, "key": r.key, "headers": r.headers}
        if r.partition is not None:
            kwargs["partition"] = r.partition
        while True:
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0, "producer did not deliver everything"
    return n


class FakeMessage:
    """The accessors of ``confluent_kafka.Message`` the intake stage uses."""

    def __init__(
        self,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        *,
        key: bytes | None = b"k",
        topic: str = "t",
        partition: int = 0,
        offset: int = 0,
        timestamp: tuple[int, int] | None = None,
    ) -> None:
        self._v, self._h, self._k = value, headers, key
        self._t, self._p, self._o = topic, partition, offset
        self._ts = timestamp or (TIMESTAMP_CREATE_TIME, int(time.time() * 1000))

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v

    def key(self) -> bytes | None:
        return self._k

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._h

    def timestamp(self) -> tuple[int, int]:
        return self._ts

    def error(self) -> None:
        return None


class CollectingSink(SinkBase):
    """Keeps every delivered record; ``script`` may answer a batch instead of OK (by call number)."""

    def __init__(self, script: Callable[[int, Batch], WriteResult | None] | None = None) -> None:
        self.records: list[Any] = []
        self.batches: list[Batch] = []
        self.calls = 0
        self.flushes = 0
        self.closed = False
        self.script = script
        self.lock = threading.Lock()

    def write(self, batch: Batch) -> WriteResult | None:
        with self.lock:
            self.calls += 1
            call = self.calls
        if self.script is not None:
            result = self.script(call, batch)
            if result is not None and not isinstance(result, type(OK)):
                if isinstance(result, Rejected):
                    with self.lock:
                        self.records.extend(r for i, r in enumerate(batch) if i not in result.failures)
                        self.batches.append(batch)
                elif isinstance(result, RetryLater) and result.indices is not None:
                    with self.lock:
                        self.records.extend(r for i, r in enumerate(batch) if i not in result.indices)
                return result
        with self.lock:
            self.records.extend(batch)
            self.batches.append(batch)
        return OK

    def flush(self, timeout: float) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True

    def ids(self) -> list[str]:
        with self.lock:
            return [r.event.event_id for r in self.records]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Polls ``predicate`` until it returns something truthy, or fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def file_ids(path: Path) -> list[str]:
    """Event ids of a JSON Lines file's complete lines (one being written, or torn by SIGKILL, is not)."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    lines.pop()  # after the last newline: empty, or an unfinished line
    return [json.loads(line)["id"] for line in lines if line.strip()]


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


class SinkProcess:
    """``govbus sink run`` as a child process, with its log in a file and its health port parsed from it."""

    def __init__(
        self, name: str, env: dict[str, str], *options: str, log_dir: Path, factory: str | None = None
    ) -> None:
        import os
        import re
        import subprocess
        import sys

        self.name = name
        self._re = re.compile(r"health endpoint at (http://\S+)")
        self.log_path = log_dir / f"sink-{name}-{uuid.uuid4().hex[:6]}.log"
        args = [sys.executable, "-m", "govbus", "sink", "run", name]
        if factory:
            args += ["--class", factory]
        for opt in options:
            args += ["-o", opt]
        full_env = {**os.environ, "GOVBUS_SINK__HEALTH__PORT": "0", **env}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(args, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            m = wait_for(lambda: self._re.search(self.log()), 60, what=f"{self.name} health endpoint")
            self._url = m.group(1)
        return self._url

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(http_get(self.url + "/status", timeout=2)[1]))
        except OSError:
            return {}

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"{self.name} exited early:\n{self.log()[-3000:]}"
            try:
                return http_get(self.url + "/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, what=f"{self.name} ready")

    def metric(self, prefix: str) -> float:
        text = http_get(self.url + "/metrics")[1]
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    def terminate(self, timeout: float = 30) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class FileWatcher:
    """Follows a JSON Lines file and notes when each event id first appeared (for latencies)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._rest = b""
        self.first_seen: dict[str, float] = {}
        self.lines = 0

    def poll(self) -> int:
        if not self.path.exists():
            return 0
        now = time.time()
        with self.path.open("rb") as fh:
            fh.seek(self._pos)
            data = fh.read()
        self._pos += len(data)
        data = self._rest + data
        parts = data.split(b"\n")
        self._rest = parts.pop()
        for line in parts:
            if line:
                self.lines += 1
                self.first_seen.setdefault(json.loads(line)["id"], now)
        return len(parts)


class PacedProducer:
    """Emits fresh events at ``rate`` per second on a thread; remembers each event's emit time."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float) -> None:
        self.bootstrap, self.topic, self.count, self.rate = bootstrap, topic, count, rate
        self.emitted: dict[str, float] = {}
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PacedProducer:
        self._thread.start()
        return self

    def join(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.done.is_set(), "producer did not finish"

    def _run(self) -> None:
        try:
            p = Producer(
                {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 1}
            )
            enc = Encoder()
            base = events(64, seed=11)
            started = time.monotonic()
            for i in range(self.count):
                delay = started + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load generator, not waiting for the system under test
                now = time.time()
                e = base[i % len(base)].replace(event_id=uuid.uuid4().hex, occurred_at=datetime.fromtimestamp(now, UTC))
                r = to_record(e, PRODUCER, enc, traceparent=TRACEPARENT)
                self.emitted[e.event_id] = now
                p.produce(self.topic, value=r.value, key=r.key, headers=r.headers)
                p.poll(0)
            assert p.flush(30) == 0
            self.done.set()
        except BaseException as exc:
            self.error = exc
