"""The producer library: emit() latency on the caller's thread, acknowledged throughput, disk mode,
against raw confluent-kafka and AGT's in-process processor measured in the same run.

Rows (baselines measured here, same machine, same broker, same events):

* ``emit p50/p99/p999``: memory mode, a kernel emitting at 20k events/s (sleeping between events,
  as a kernel doing work does), vs AGT ``GovernanceEventProcessor.on_event`` under the same load.
* ``emit ... (burst)``: back-to-back emits with the sender thread busy on the same GIL.
* ``emit ... (disk)``: disk mode (journaled to the memory-mapped spool before emit() returns).
* ``producer throughput``: events acknowledged by the broker per second, from the first emit to
  the last acknowledgement, vs raw confluent-kafka ``produce()`` of the same bytes (pre-encoded
  records, same producer configuration, a delivery callback counting acknowledgements). The
  batch step runs on the compiled core when it is installed (docs/native.md).
* ``producer throughput, signed``: the same with every event signed (Merkle-batched Ed25519),
  vs raw ``produce()`` of the same signed bytes (signature headers included).
* ``producer throughput, Python path`` and ``producer throughput, signed, Python path``: the same
  two with ``GOVBUS_NATIVE=off`` (the pure-Python batch step), measured in the same run.
* ``encode (to_record)`` etc.: where the time of one event goes, single-threaded.

``GOVBUS_BENCH_PROFILE=1`` also prints a cProfile of the sender and poller threads (signed, memory
mode). ``GOVBUS_BENCH_PRODUCER_EVENTS`` lowers the number of events of the throughput runs.
"""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _harness import Row, machine, percentile
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from govbus import _accel as govbus_native
from govbus._contract import Encoder
from govbus._record import OutRecord, to_record
from govbus._sample import sample_events
from govbus._settings import load_settings
from govbus.event import GovernanceEvent
from govbus.producer import Bus
from govbus.producer import _bus as bus_module

PACED_RATE = 20_000  # events/s for the paced latency runs
LATENCY_EVENTS = 60_000
THROUGHPUT_EVENTS = int(os.environ.get("GOVBUS_BENCH_PRODUCER_EVENTS", "200000"))
AGENTS = 16
REPEAT = 3


def run(ctx: Any) -> list[Row]:
    bootstrap = ctx.bootstrap()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    events = list(sample_events(THROUGHPUT_EVENTS, agents=AGENTS))
    # The 200k pre-built events are test data, not the producer's: keep the cyclic collector from
    # rescanning them on every full collection (a kernel does not hold 200k events).
    gc.collect()
    gc.freeze()
    where = machine()
    rows: list[Row] = []

    # -- latency on the caller's thread ----------------------------------------------------------
    agt_paced = _agt_latencies(events[:LATENCY_EVENTS], paced=True)
    agt_burst = _agt_latencies(events[:LATENCY_EVENTS], paced=False)
    for label, durability, paced, baseline in (
        ("", "memory", True, agt_paced),
        (" (burst)", "memory", False, agt_burst),
        (" (disk)", "disk", True, agt_paced),
        (" (disk, burst)", "disk", False, agt_burst),
    ):
        topic = _topic(admin)
        with _bus(bootstrap, topic, durability) as bus:
            _warm_up(bus, events[-2000:])
            samples = _emit_latencies(bus, events[:LATENCY_EVENTS], paced)
            assert bus.flush(120), "not everything was acknowledged"
        how = f"{PACED_RATE} ev/s, sleeping between events" if paced else "back-to-back"
        for q in (50, 99, 99.9):
            name = f"emit p{str(q).replace('.', '')}{label}".replace("p999", "p999")
            rows.append(
                Row(
                    name,
                    percentile(samples, q),
                    "us",
                    percentile(baseline, q),
                    f"{durability} mode, {how}, {len(samples)} events, {AGENTS} agents; baseline AGT on_event "
                    f"(no-op sink) same load; {where}",
                )
            )

    # -- throughput ------------------------------------------------------------------------------
    # Median of REPEAT runs each (this machine is shared; single runs vary by +-15 %).
    signing = _signing_settings()
    raw = statistics.median(_raw_throughput(bootstrap, _topic(admin), events) for _ in range(REPEAT))
    raw_signed = statistics.median(_raw_throughput(bootstrap, _topic(admin), events, signing) for _ in range(REPEAT))
    for label, durability, signed, native in (
        ("", "memory", False, True),
        (" (disk)", "disk", False, True),
        (", signed", "memory", True, True),
        (", Python path", "memory", False, False),
        (", signed, Python path", "memory", True, False),
    ):
        runs = sorted(
            _throughput(bootstrap, _topic(admin), events, durability, signing if signed else None, native)
            for _ in range(REPEAT)
        )
        rate, cpu = runs[len(runs) // 2]
        path = "compiled batch step" if native and govbus_native.active() else "pure-Python batch step"
        rows.append(
            Row(
                f"producer throughput{label}",
                rate,
                "ev/s",
                raw_signed if signed else raw,
                f"{durability} mode, {'signed (Merkle-batched Ed25519), ' if signed else ''}{path}, "
                f"{len(events)} pre-built sample events (~{_size(events)} B encoded, gc.freeze()), "
                "acks=all, idempotent, "
                f"lz4, linger 5 ms, 3 partitions, emit->ack, median of {REPEAT} (runs {', '.join(f'{r:.0f}' for r, _ in runs)}); "
                f"{cpu:.0f}% of one core in this process (GIL: the "
                "Python side runs on one core); baseline raw confluent-kafka produce() of the same bytes"
                f"{' (signature headers included)' if signed else ''}; {where}",
            )
        )

    # -- where the time of one event goes (single thread, no broker round trip) ------------------
    rows.extend(_components(events[:20_000], where))
    if os.environ.get("GOVBUS_BENCH_PROFILE"):
        _profile(bootstrap, _topic(admin), events)
    return rows


# -- helpers --------------------------------------------------------------------------------------


def _topic(admin: AdminClient) -> str:
    name = f"bench-producer-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 3, 1)])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(name, timeout=5).topics.get(name)
        if meta is not None and meta.error is None and all(p.leader >= 0 for p in meta.partitions.values()):
            return name
        time.sleep(0.05)
    raise TimeoutError(name)


def _bus(bootstrap: str, topic: str, durability: str, signing: dict[str, Any] | None = None, **producer: Any) -> Bus:
    settings = load_settings(
        topic=topic,
        signing=signing or {},
        kafka={"bootstrap_servers": bootstrap},
        producer={
            "durability": durability,
            "spool_dir": tempfile.mkdtemp(prefix="govbus-bench-spool-"),
            "queue_max_events": 500_000,
            **producer,
        },
    )
    return Bus(settings)


def _warm_up(bus: Bus, events: Sequence[GovernanceEvent]) -> None:
    for event in events:
        bus.emit(event)
    assert bus.flush(60)


def _emit_latencies(bus: Bus, events: Sequence[GovernanceEvent], paced: bool) -> list[float]:
    return _latencies(bus.emit, events, paced)


def _latencies(call: Callable[[Any], Any], items: Sequence[Any], paced: bool) -> list[float]:
    clock = time.perf_counter_ns
    out = [0.0] * len(items)
    interval = 1e9 / PACED_RATE
    next_at = clock()
    for i, item in enumerate(items):
        if paced:
            next_at += interval
            wait = next_at - clock()
            if wait > 0:
                time.sleep(wait / 1e9)  # releases the GIL, like a kernel waiting on I/O
        started = clock()
        call(item)
        out[i] = (clock() - started) / 1000.0
    out.sort()
    return out


def _agt_latencies(events: Sequence[GovernanceEvent], paced: bool) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from agent_os.event_sink import GovernanceEvent as AgtEvent
        from agent_os.event_sink import GovernanceEventProcessor, GovernanceEventSinkBase, SinkExportResult

    class NoOpSink(GovernanceEventSinkBase):
        def emit(self, events: Sequence[Any]) -> SinkExportResult:
            return SinkExportResult.SUCCESS

    agt_events = [
        AgtEvent(
            event_id=e.event_id,
            occurred_at=e.occurred_at.isoformat(),
            agent_id=e.agent_id,
            session_id=e.session_id,
            action=e.action,
            decision=e.decision,
            reason=e.reason,
            attributes=dict(e.attributes),
        )
        for e in events
    ]
    processor = GovernanceEventProcessor(max_queue_size=len(agt_events) + 1, max_batch_size=512)
    processor.add_sink(NoOpSink())
    try:
        return _latencies(processor.on_event, agt_events, paced)
    finally:
        processor.shutdown()


def _records(events: Sequence[GovernanceEvent], signing: dict[str, Any] | None = None) -> list[OutRecord]:
    encoder, producer = Encoder(), bus_module.ProducerInfo("bench", "raw", "host", "raw")
    records = [to_record(e, producer, encoder) for e in events]
    if signing is None:
        return records
    # Signed as the Bus signs them: partitioned by key, signature headers appended per batch.
    from govbus.producer._partition import Partitioner
    from govbus.producer._signing import sign_input
    from govbus.signing import Signer, load_private_key

    signer, partitioner = Signer(load_private_key(signing["private_key_path"])), Partitioner(3)
    signed: list[OutRecord] = []
    for start in range(0, len(records), 256):
        chunk = records[start : start + 256]
        extra = signer.sign_batch([sign_input(r.value, r.key, r.headers, partitioner(r.key)) for r in chunk])
        signed.extend(OutRecord(r.key, r.value, [*r.headers, *x]) for r, x in zip(chunk, extra, strict=True))
    return signed


def _signing_settings() -> dict[str, Any]:
    from govbus.signing import SigningKey, write_private_key

    directory = Path(tempfile.mkdtemp(prefix="govbus-bench-key-"))
    key = SigningKey.generate("bench-producer")
    return {"private_key_path": str(write_private_key(key, directory / "bench-producer.pem"))}


def _size(events: Sequence[GovernanceEvent]) -> int:
    records = _records(events[:1000])
    return sum(len(r.value) for r in records) // len(records)


def _raw_throughput(
    bootstrap: str, topic: str, events: Sequence[GovernanceEvent], signing: dict[str, Any] | None = None
) -> float:
    records = _records(events, signing)
    settings = load_settings(kafka={"bootstrap_servers": bootstrap})
    conf = bus_module.producer_config(settings)
    conf["partitioner"] = "murmur2"
    producer = Producer(conf)
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    acked = [0]

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            acked[0] += 1

    started = time.perf_counter()
    for r in records:
        while True:
            try:
                producer.produce(topic, r.value, r.key, on_delivery=on_delivery, headers=r.headers)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    assert acked[0] == len(records), f"raw producer: {acked[0]} of {len(records)} acknowledged"
    return len(records) / elapsed


def _throughput(
    bootstrap: str,
    topic: str,
    events: Sequence[GovernanceEvent],
    durability: str,
    signing: dict[str, Any] | None = None,
    native: bool = True,
) -> tuple[float, float]:
    saved = os.environ.get(govbus_native.ENV)
    if not native:
        os.environ[govbus_native.ENV] = "off"  # read when the Bus is built
    try:
        bus = _bus(bootstrap, topic, durability, signing=signing)
    finally:
        if saved is None:
            os.environ.pop(govbus_native.ENV, None)
        else:
            os.environ[govbus_native.ENV] = saved
    with bus:
        _warm_up(bus, events[-2000:])
        cpu0, started = time.process_time(), time.perf_counter()
        for event in events:
            bus.emit(event)
        assert bus.flush(300), "not everything was acknowledged"
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        counters = bus.counters()
        # Heartbeats (one per partition every 5 s) are submitted too on a long run.
        assert counters.delivered == counters.submitted >= len(events) + 2000, counters
    return len(events) / elapsed, 100 * cpu / elapsed


def _components(events: Sequence[GovernanceEvent], where: str) -> list[Row]:
    from govbus._contract import to_datum
    from govbus.producer import _spool, _tracing

    encoder, producer = Encoder(), bus_module.ProducerInfo("bench", "i", "h", "l")
    records = [to_record(e, producer, encoder) for e in events]

    def per_event(fn: Callable[[], None]) -> float:
        fn()
        best = float("inf")
        for _ in range(3):  # best of 3: the machine is shared
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        return best / len(events) * 1e6

    def fastavro() -> None:
        for e in events:
            encoder.encode_datum(to_datum(e, producer))

    def fast() -> None:
        for e in events:
            encoder.encode(e, producer)

    def whole() -> None:
        for e in events:
            to_record(e, producer, encoder)

    def journal() -> None:
        for e in events:
            _spool.pack_event(e, _tracing.journal_form(_tracing.capture()))

    sink: list[Any] = []
    raw_conf = {"bootstrap.servers": "127.0.0.1:9", "queue.buffering.max.messages": 1_000_000, "logger": _Quiet()}
    raw = Producer(raw_conf)

    def produce() -> None:
        for r in records:
            raw.produce("t", r.value, r.key, 0, sink.append, headers=r.headers)

    conditions = (
        f"{len(events)} sample events, schema v{encoder.schema.version}, one thread, no I/O, best of 3; {where}"
    )
    out = [
        Row("encode value (fastavro, before)", per_event(fastavro), "us", None, conditions),
        Row("encode value (hand-written)", per_event(fast), "us", per_event(fastavro), conditions),
        Row("to_record (value + CE headers)", per_event(whole), "us", None, conditions),
        Row("disk journal entry (emit side)", per_event(journal), "us", None, conditions),
        Row("librdkafka produce() call", per_event(produce), "us", None, conditions + "; queued, not sent"),
    ]
    raw.purge()
    out.extend(_batch_steps(events, where))
    return out


def _batch_steps(events: Sequence[GovernanceEvent], where: str) -> list[Row]:
    """The sender's batch step per event, CPU time of one thread: encode 256 events, partition,
    sign (Merkle-batched Ed25519), on the compiled core (one call: ``encode_signed``) and on the
    Python path (encode, partition, the signing hook)."""
    from govbus.producer import _tracing
    from govbus.producer._batch import EMPTY_CONTEXT, EventBatchEncoder, NativeBatchEncoder
    from govbus.producer._partition import Partitioner
    from govbus.producer._signing import SigningHook
    from govbus.signing import Signer, SigningKey

    encoder, producer = Encoder(), bus_module.ProducerInfo("bench", "i", "h", "l")
    tracing, key = _tracing.Tracing("t"), SigningKey.generate("bench-k1")
    batches = [list(events[i : i + 256]) for i in range(0, len(events), 256)]
    contexts = [EMPTY_CONTEXT] * 256

    def step(batch_encoder: Any, native: bool) -> float:
        hook, partitioner = SigningHook(Signer(key), 512), Partitioner(3)
        if native:  # the sender's step with govbus's own hook: one call encodes, routes and signs
            started = time.thread_time()
            for batch in batches:
                _, signed = batch_encoder.encode_signed(
                    batch, contexts[: len(batch)], 0, keep=True, unencodable=print, partitions=3, signer=hook.signer
                )
                assert signed
            return (time.thread_time() - started) / len(events) * 1e6
        hook._native = None
        started = time.thread_time()
        for batch in batches:
            records = batch_encoder.encode(batch, contexts[: len(batch)], 0, keep=True, unencodable=print)
            for r in records:
                r.partition = partitioner(r.key)
                r.headers = list(r._base)  # type: ignore[arg-type]
            hook("t", records)
        return (time.thread_time() - started) / len(events) * 1e6

    python = EventBatchEncoder(encoder, producer, tracing, print, key_by="agent_id", source=None)  # type: ignore[arg-type]
    compiled = govbus_native.batch_encoder(encoder, key_by_session=False, source=None, empty_context=EMPTY_CONTEXT)
    if compiled is None:
        return []
    native = NativeBatchEncoder(compiled, encoder, producer, tracing, print, key_by="agent_id", source=None)  # type: ignore[arg-type]
    # Interleaved, best of three each: the machine's load drifts between runs.
    best = {"python": float("inf"), "native": float("inf")}
    for _ in range(3):
        best["python"] = min(best["python"], step(python, False))
        best["native"] = min(best["native"], step(native, True))
    conditions = (
        f"{len(events)} sample events in batches of 256, encode + partition + sign (compiled: one "
        f"encode_signed call per batch), CPU time of one thread, best of 3; {where}"
    )
    return [
        Row("batch step, encode and sign, compiled", best["native"], "us", best["python"], conditions),
        Row("batch step, encode and sign, Python path", best["python"], "us", None, conditions),
    ]


def _profile(bootstrap: str, topic: str, events: Sequence[GovernanceEvent]) -> None:
    from govbus.producer._housekeeping import Poller
    from govbus.producer._sender import Sender

    profiles: dict[str, cProfile.Profile] = {}
    originals: dict[str, tuple[Any, Callable[[Any], None]]] = {
        "sender": (Sender, Sender.run),
        "poller": (Poller, Poller.run),
    }

    def wrapped(name: str) -> Callable[[Any], None]:
        def run_profiled(self: Any) -> None:
            profile = profiles[name] = cProfile.Profile()
            profile.enable()
            try:
                originals[name][1](self)
            finally:
                profile.disable()

        return run_profiled

    for name, (cls, _) in originals.items():
        cls.run = wrapped(name)
    try:
        with _bus(bootstrap, topic, "memory", _signing_settings()) as bus:
            caller = cProfile.Profile()
            caller.enable()
            for event in events[:100_000]:
                bus.emit(event)
            bus.flush(300)
            caller.disable()
        profiles["caller"] = caller
    finally:
        for cls, fn in originals.values():
            cls.run = fn
    for name, profile in profiles.items():
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(15)
        print(f"# --- profile: {name} ---\n{text.getvalue()}")


class _Quiet:
    def log(self, *_args: Any) -> None:
        pass


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    raise SystemExit("run through benchmarks/run.py producer")
