"""The sink runtime: throughput of one consumer, end-to-end latency, memory under a stalled sink.

- consumer throughput: one SinkRuntime (one process, one consume loop + one worker thread)
  delivering pre-produced events to the file sink, verifying their Ed25519 batch signatures;
  baseline: a raw confluent-kafka consumer loop reading the same topic in the same run. A further
  row times kcat (Debian's package; `make system-deps` installs it) copying the same topic's
  values to a file, from its first byte out to its exit (skipped, saying so, without kcat).
- e2e p50/p99: events emitted at 1k/s by a separate producer process (the producer library's
  Bus when it works, else the thin path — the conditions say which), measured from the event's
  ``occurred_at`` (stamped at emit) to the moment the file sink acknowledged it.
- stalled sink: ``govbus sink run null`` whose first write never returns, while 1M events pile
  up; its RSS (from /proc) before, during and after goes into the conditions.

Sizes can be lowered for a quick run: GOVBUS_BENCH_CONSUMER_EVENTS, GOVBUS_BENCH_STALL_EVENTS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from _harness import Row, percentile
from confluent_kafka import Consumer, Producer

from govbus._admin import ensure_topic
from govbus._contract import Encoder
from govbus._record import to_record
from govbus._sample import sample_events
from govbus._settings import load_settings
from govbus.consumers import OK, Batch, SinkRuntime, WriteResult
from govbus.consumers._cli import tune_gc
from govbus.consumers.sinks._file import FileSink
from govbus.consumers.sinks._null import NullSink
from govbus.event import ProducerInfo
from govbus.producer._signing import sign_input

EVENTS = int(os.environ.get("GOVBUS_BENCH_CONSUMER_EVENTS", "100000"))
STALL_EVENTS = int(os.environ.get("GOVBUS_BENCH_STALL_EVENTS", "1000000"))
PARTITIONS = 6
PRODUCER = ProducerInfo("bench", uuid.uuid4().hex, "bench-host", "govbus-python/bench")


def _topic(bootstrap: str, prefix: str, partitions: int = PARTITIONS) -> str:
    name = f"bench-{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topic({"bootstrap.servers": bootstrap}, name, partitions=partitions)
    return name


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20, "compression.type": "lz4"}
    )


def _produce_signed(bootstrap: str, topic: str, count: int, signer: Any) -> None:

    enc = Encoder()
    p = _producer(bootstrap)
    batch: list[tuple[Any, int]] = []

    def flush_batch() -> None:
        inputs = [sign_input(r.value, r.key, r.headers, part) for r, part in batch]
        for (r, part), extra in zip(batch, signer.sign_batch(inputs), strict=True):
            while True:
                try:
                    p.produce(topic, r.value, r.key, partition=part, headers=[*r.headers, *extra])
                    break
                except BufferError:
                    p.poll(0.05)
        p.poll(0)
        batch.clear()

    for i, e in enumerate(sample_events(count, seed=3)):
        batch.append((to_record(e, PRODUCER, enc), i % PARTITIONS))
        if len(batch) == 512:
            flush_batch()
    if batch:
        flush_batch()
    assert p.flush(60) == 0


def _baseline(bootstrap: str, topic: str, count: int) -> float:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    seen = 0
    started: float | None = None
    while seen < count:
        for m in c.consume(1000, 1.0):
            if m.error():
                continue
            if started is None:
                started = time.perf_counter()
            m.value()
            m.headers()
            seen += 1
    assert started is not None
    elapsed = time.perf_counter() - started
    c.close()
    return count / elapsed


def _kcat(bootstrap: str, topic: str, out: Path) -> float | None:
    """kcat consuming the whole topic to a file, from the first byte it writes to its exit."""
    kcat = shutil.which("kcat")
    if kcat is None:
        print("# kcat not found: skipping the kcat baseline row (Debian: apt-get install kcat; make system-deps)")
        return None
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            [kcat, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\\n"],
            stdout=fh,
            stderr=subprocess.PIPE,
        )
        first: float | None = None
        while proc.poll() is None:
            if first is None and out.stat().st_size > 0:
                first = time.perf_counter()
            time.sleep(0.001)
        ended = time.perf_counter()
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"kcat exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    if first is None:
        first = ended  # finished within one poll: the rate is a lower bound
    return EVENTS / max(ended - first, 1e-3)


class _Timed:
    """Wraps a sink: first/last write times, and each event's acknowledgement time."""

    def __init__(self, inner: Any, *, per_event: bool = False) -> None:
        self.inner = inner
        self.per_event = per_event
        # The runtime asks the sink it runs (this wrapper) whether write() reads record.event.
        self.reads_events = per_event or getattr(inner, "reads_events", True)
        # ... and what the intake drafts for it (the audit and otlp sinks' _native_draft_format).
        if not per_event and hasattr(inner, "_native_draft_format"):
            self._native_draft_format = inner._native_draft_format
        self.first: float | None = None
        self.first_batch = 0
        self.last = 0.0
        self.records = 0
        self.acked: dict[str, float] = {}
        self.latency: dict[str, tuple[float, float]] = {}  # event id -> (emitted, latency s)

    def open(self, context: Any) -> None:
        self.inner.open(context)

    def write(self, batch: Batch) -> WriteResult | None:
        if self.first is None:
            self.first = time.perf_counter()
            self.first_batch = len(batch)
        result = self.inner.write(batch)
        now = time.time()
        if self.per_event:
            for r in batch:
                emitted = r.event.occurred_at.timestamp()
                self.latency[r.event.event_id] = (emitted, now - emitted)
        self.records += len(batch)
        self.last = time.perf_counter()
        return result or OK

    def flush(self, timeout: float) -> None:
        self.inner.flush(timeout)

    def close(self) -> None:
        self.inner.close()


def _run_runtime(
    bootstrap: str, topic: str, sink: Any, name: str, **sink_settings: Any
) -> tuple[SinkRuntime, threading.Thread]:
    settings = load_settings(
        kafka={"bootstrap_servers": bootstrap},
        topic=topic,
        sink={"health": {"enabled": False}, "group_id": f"bench-{name}-{uuid.uuid4().hex[:8]}", **sink_settings},
    )
    runtime = SinkRuntime(sink, settings, name=name)
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    return runtime, thread


def _thread_cpu(native_id: int | None) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark timed out waiting for {what}")
        time.sleep(0.02)


def _throughput(bootstrap: str, tmp: Path) -> list[Row]:
    from govbus.signing import KeyEntry, Keyring, Signer, SigningKey

    key = SigningKey.generate("bench-k1")
    keyring_path = tmp / "keyring.json"
    Keyring([KeyEntry(key.kid, key.public_bytes)]).save(keyring_path)
    topic = _topic(bootstrap, "throughput")
    _produce_signed(bootstrap, topic, EVENTS, Signer(key))
    baseline = _baseline(bootstrap, topic, EVENTS)
    rows = []
    kcat = _kcat(bootstrap, topic, tmp / "kcat.out")
    if kcat is not None:
        rows.append(
            Row(
                "consumer throughput: kcat",
                kcat,
                "ev/s",
                baseline,
                f"kcat -C -o beginning -e -f '%s\\n' (the values) to a file, from its first byte out to its exit; "
                f"{EVENTS} events, {PARTITIONS} partitions; baseline: raw confluent-kafka consume loop, same topic",
            )
        )
    for label, sink, settings, conditions in (
        (
            "consumer throughput",
            FileSink(str(tmp / "out.jsonl")),
            {"verify": {"keyring": str(keyring_path)}},
            "file sink (fsync at commit, dedup on), Ed25519 batch signatures verified",
        ),
        (
            "consumer throughput (null, unverified)",
            NullSink(),
            {"verify": {"mode": "off"}},
            "null sink, no verification: the runtime + decode alone",
        ),
    ):
        timed = _Timed(sink)
        # As `govbus sink run` does before it runs its one sink (consumers/_cli.py): the heap built so
        # far (imports, this benchmark's own objects) is not rescanned by the in-flight records'
        # collections (without it the consume loop spent ~25% of its time in the cyclic GC here),
        # and young collections run less often.
        tune_gc()
        cpu_before = _process_cpu()
        runtime, thread = _run_runtime(bootstrap, topic, timed, "throughput", **settings)
        _wait(lambda t=timed: t.records >= EVENTS, 600, "all events delivered")  # type: ignore[misc]
        # CPU per event: the consume loop's thread (the critical path: everything it does holds
        # the GIL or feeds it) and the whole process (its share of both cores).
        loop_us = _thread_cpu(thread.native_id) / EVENTS * 1e6
        process_us = (_process_cpu() - cpu_before) / EVENTS * 1e6
        runtime.stop()
        thread.join(60)
        assert timed.first is not None
        rate = (timed.records - timed.first_batch) / max(1e-9, timed.last - timed.first)
        rows.append(
            Row(
                label,
                rate,
                "ev/s",
                baseline,
                f"{conditions}; {EVENTS} events, {PARTITIONS} partitions, 1 process (its GC tuned as "
                "`govbus sink run` does: gc.freeze(), gen-0 threshold 50k); CPU per event: consume loop "
                f"thread {loop_us:.1f} us, process {process_us:.1f} us; "
                "baseline: raw confluent-kafka consume loop, same topic",
            )
        )
    return rows


_EMITTER = r"""
import sys, time, uuid, os
from datetime import UTC, datetime
from govbus._sample import sample_events
boot, topic, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
base = list(sample_events(64, seed=5))
def events():
    started = time.monotonic(); i = 0
    while time.monotonic() - started < seconds:
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield base[i % 64].replace(event_id=uuid.uuid4().hex, occurred_at=datetime.now(UTC)); i += 1
try:
    from govbus.producer import Bus
    os.environ["GOVBUS_PRODUCER__SPOOL_DIR"] = sys.argv[5]
    bus = Bus(kafka={"bootstrap_servers": boot}, topic=topic, producer={"spool_dir": sys.argv[5], "linger_ms": 1})
    print("producer: Bus", flush=True)
    for e in events():
        bus.emit(e)
    bus.close()
except Exception as exc:
    print(f"producer: thin path (Bus unavailable: {type(exc).__name__}: {exc})", flush=True)
    from confluent_kafka import Producer
    from govbus._contract import Encoder
    from govbus.event import ProducerInfo
    from govbus._record import to_record
    p = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "linger.ms": 1})
    enc, info = Encoder(), ProducerInfo("bench", uuid.uuid4().hex, "h", "bench")
    for e in events():
        r = to_record(e, info, enc)
        p.produce(topic, r.value, r.key, headers=r.headers)
        p.poll(0)
    p.flush(30)
"""


def _latency(bootstrap: str, tmp: Path) -> list[Row]:
    topic = _topic(bootstrap, "latency", partitions=3)
    timed = _Timed(FileSink(str(tmp / "lat.jsonl")), per_event=True)
    runtime, thread = _run_runtime(bootstrap, topic, timed, "latency")
    assert runtime.assigned.wait(60)
    rate, seconds, warmup = 1000.0, 12.0, 2000
    emitter = subprocess.run(
        [sys.executable, "-c", _EMITTER, bootstrap, topic, str(rate), str(seconds), str(tmp / "spool")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if emitter.returncode != 0:
        raise RuntimeError(f"emitter failed: {emitter.stderr[-2000:]}")
    producer_kind = emitter.stdout.strip().splitlines()[0] if emitter.stdout.strip() else "producer: ?"
    expected = int(rate * seconds * 0.95)
    _wait(lambda: len(timed.latency) >= expected, 60, "latency events acknowledged")
    time.sleep(0.5)  # let the last ones in (the exact count depends on the emitter's pacing)
    runtime.stop()
    thread.join(60)
    # Drop the first events after the assignment (the fetcher starting up), in emit order.
    by_emit = sorted(timed.latency.values())
    samples = sorted(latency * 1000 for _, latency in by_emit[warmup:])
    cond = (
        f"{rate:.0f} ev/s for {seconds:.0f} s, emit (occurred_at) -> file sink acknowledged; first {warmup} "
        f"events excluded; {producer_kind}; unsigned; {len(samples)} samples"
    )
    return [
        Row("e2e p50", percentile(samples, 50), "ms", None, cond),
        Row("e2e p99", percentile(samples, 99), "ms", None, cond),
    ]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _stalled(bootstrap: str, tmp: Path) -> list[Row]:
    topic = _topic(bootstrap, "stall", partitions=PARTITIONS)
    log_path = tmp / "stalled.log"
    env = {
        **os.environ,
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GOVBUS_TOPIC": topic,
        "GOVBUS_SINK__HEALTH__PORT": "0",
        "GOVBUS_SINK__GROUP_ID": f"bench-stall-{uuid.uuid4().hex[:8]}",
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "govbus", "sink", "run", "null", "-o", "delay_ms=1000000000"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        pattern = re.compile(r"health endpoint at (http://\S+)")
        _wait(lambda: pattern.search(log_path.read_text()), 60, "stalled sink health endpoint")
        m = pattern.search(log_path.read_text())
        assert m is not None
        url = m.group(1)

        def status() -> dict[str, Any]:
            with urllib.request.urlopen(url + "/status", timeout=5) as resp:
                return dict(json.loads(resp.read()))

        _wait(lambda: status().get("assigned"), 60, "stalled sink assigned")
        # One record makes the sink stall in its first write; then the pile-up starts.
        value = to_record(next(iter(sample_events(1))), PRODUCER, Encoder())
        p = _producer(bootstrap)
        p.produce(topic, value.value, value.key, headers=value.headers)
        p.flush(10)
        _wait(lambda: status().get("worker") == "writing", 60, "sink stalled in write")
        rss_start = _rss_kb(proc.pid)
        peak = rss_start
        marks: dict[int, int] = {}
        started = time.perf_counter()
        for i in range(STALL_EVENTS):
            while True:
                try:
                    p.produce(topic, value.value, f"agent-{i % 64}".encode(), headers=value.headers)
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 50_000 == 0:
                p.poll(0)
                peak = max(peak, _rss_kb(proc.pid))
            if i + 1 in (100_000, STALL_EVENTS):
                p.flush(120)
                time.sleep(2.0)  # let the consumer fetch, fill its budget and pause
                marks[i + 1] = _rss_kb(proc.pid)
                peak = max(peak, marks[i + 1])
        elapsed = time.perf_counter() - started
        st = status()
        assert proc.poll() is None, "stalled sink died"
        growth = (marks[STALL_EVENTS] - marks.get(100_000, rss_start)) / 1024
        cond = (
            f"RSS {rss_start / 1024:.1f} MB stalled -> {marks.get(100_000, rss_start) / 1024:.1f} MB at 100k "
            f"-> {marks[STALL_EVENTS] / 1024:.1f} MB at {STALL_EVENTS // 1000}k piled up (growth 100k->end "
            f"{growth:+.1f} MB, peak {peak / 1024:.1f} MB); in flight {st.get('inflight_records')} records, "
            f"paused={st.get('paused')}; value = pile-up rate"
        )
        return [Row("stalled sink, 1M backlog", STALL_EVENTS / elapsed, "ev/s", None, cond)]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


class _Msg:
    """The accessors of confluent_kafka.Message the intake stage reads."""

    def __init__(self, value: bytes, key: bytes, headers: list[tuple[str, bytes]], partition: int, offset: int) -> None:
        self._v, self._k, self._h, self._p, self._o = value, key, headers, partition, offset

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes:
        return self._k

    def headers(self) -> list[tuple[str, bytes]]:
        return self._h

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


def _breakdown() -> list[Row]:
    """Per-event cost of each stage, without Kafka: where the consumer's time goes."""
    from govbus._contract import Decoder
    from govbus._record import from_record
    from govbus.consumers import VerdictPolicy, Verification
    from govbus.consumers._intake import Intake
    from govbus.consumers.sinks._jsonl import encode_line
    from govbus.signing import KeyEntry, Keyring, Signer, SigningKey, Verifier

    n = 10_240
    key = SigningKey.generate("bench-k2")
    keyring = Keyring([KeyEntry(key.kid, key.public_bytes)])
    signer = Signer(key)
    enc = Encoder()
    msgs: list[_Msg] = []
    recs = [to_record(e, PRODUCER, enc) for e in sample_events(n, seed=9)]
    for start in range(0, n, 512):
        chunk = recs[start : start + 512]
        inputs = [sign_input(r.value, r.key, r.headers, 0) for r in chunk]
        for i, (r, extra) in enumerate(zip(chunk, signer.sign_batch(inputs), strict=True)):
            msgs.append(_Msg(r.value, r.key, [*r.headers, *extra], 0, start + i))

    def best(fn: Any, repeat: int = 5) -> float:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times) / n * 1e6

    decoder = Decoder()
    decode = best(lambda: [from_record(m.value(), m.headers(), decoder) for m in msgs])
    verify = best(lambda: [v.verify(m.value(), m.key(), m.headers(), 0) for v in [Verifier(keyring)] for m in msgs])

    def intake() -> None:
        stage = Intake(decoder, verification=Verification(Verifier(keyring), VerdictPolicy()))
        for start in range(0, n, 1000):  # as the runtime does: one native call per consumed batch
            chunk = msgs[start : start + 1000]
            rows = stage.prepare(chunk) or [None] * len(chunk)
            for m, row in zip(chunk, rows, strict=True):
                if row is None:
                    stage(m, 1, defer=True)
                else:
                    stage.take(row, 1)
            stage.settle()

    total = best(intake)
    plain = Intake(decoder)
    records = [w.record for w in (plain(m, 1) for m in msgs) if w.record is not None]
    encode = best(lambda: [encode_line(r) for r in records])
    cond = "per event, best of 5 over 10k events, no Kafka"
    return [
        Row("consumer cost: decode + validate", decode, "us", None, f"govbus._record.from_record; {cond}"),
        Row("consumer cost: verify", verify, "us", None, f"Verifier.verify, 512-record signed batches; {cond}"),
        Row(
            "consumer cost: intake stage",
            total,
            "us",
            decode + verify,
            f"size check + verify + decode + runtime bookkeeping (compiled core: one batch intake call per "
            f"1000 records, rendered lines included); baseline = decode + verify; {cond}",
        ),
        Row("consumer cost: file sink encode", encode, "us", None, f"CloudEvents JSON line; {cond}"),
    ]


def run(ctx: Any) -> list[Row]:
    bootstrap = ctx.bootstrap()
    with tempfile.TemporaryDirectory(prefix="govbus-bench-consumer-") as d:
        tmp = Path(d)
        rows = _throughput(bootstrap, tmp)
        rows += _breakdown()
        rows += _latency(bootstrap, tmp)
        rows += _stalled(bootstrap, tmp)
    return rows
