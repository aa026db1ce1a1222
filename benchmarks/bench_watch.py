"""Heartbeats and the watchdog: what they cost.

- watchdog judge rate: records/s one watchdog thread judges (signature verified with the keyring,
  sequence tracked, heartbeats decoded), and without a keyring (headers on trust); CPU per record.
- heartbeat hook: the per-record cost of the hook wrapper that learns the partitions written to
  (events/s through it, against the bare signing hook).
- heartbeat round: CPU of one beat (6 partitions), i.e. per interval.
"""

from __future__ import annotations

import time
from typing import Any

from _harness import Row, machine

from govbus._contract import Decoder, Encoder
from govbus._heartbeat import heartbeat_event
from govbus._record import from_record, to_record
from govbus._sample import sample_events
from govbus.event import ProducerInfo
from govbus.producer._signing import SigningHook
from govbus.signing import KeyEntry, Keyring, Signer, SigningKey, SignInput, Verifier
from govbus.watch._alerts import AlertBook
from govbus.watch._watchdog import Watchdog

N = 30_000
PARTITIONS = 6
LOADED = "machine shared with other test suites (2 cores, loaded): figures are pessimistic"


def _records(signer: Signer) -> list[tuple[bytes, bytes, list[tuple[str, bytes]], int]]:
    enc = Encoder()
    producer = ProducerInfo("bench", "0" * 32, "host", "govbus-python/bench")
    events = list(sample_events(N, agents=16))
    # One heartbeat per partition every 1000 records (a busy producer's share of them).
    out: list[tuple[bytes, bytes, list[tuple[str, bytes]], int]] = []
    batch: list[tuple[Any, int]] = []
    for i, e in enumerate(events):
        r = to_record(e, producer, enc)
        batch.append((r, i % PARTITIONS))
        if i % 1000 == 999:
            for p in range(PARTITIONS):
                hb = heartbeat_event(f"govbus.heartbeat.bench.{p}", partition=p, stream=signer.stream_id,
                                     next_seq=None, interval_s=5.0, counters={})  # fmt: skip
                batch.append((to_record(hb, producer, enc), p))
    for start in range(0, len(batch), 512):
        chunk = batch[start : start + 512]
        inputs = []
        for r, p in chunk:
            h = dict(r.headers)
            inputs.append(SignInput(r.value, r.key, h["ce_id"].decode(), h["ce_type"].decode(),
                                    h["ce_source"].decode(), h["ce_time"].decode(), p))  # fmt: skip
        for (r, p), extra in zip(chunk, signer.sign_batch(inputs), strict=True):
            out.append((r.value, r.key, [*r.headers, *extra], p))
    return out


def _judge(recs: list[Any], verifier: Verifier | None) -> tuple[float, float]:
    decoder = Decoder()
    wd = Watchdog(AlertBook(), lambda v, h: from_record(v, h, decoder), verifier=verifier)
    wall, cpu = time.perf_counter(), time.process_time()
    for value, key, headers, partition in recs:
        wd.observe(value, key, headers, partition)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wd.inauthentic == 0
    assert not wd.alerts.active
    return len(recs) / wall, cpu / len(recs) * 1e6


class _Rec:
    __slots__ = ("headers", "key", "partition", "value")

    def __init__(self, value: bytes, key: bytes, headers: list[tuple[str, bytes]], partition: int) -> None:
        self.value, self.key, self.headers, self.partition = value, key, headers, partition


def run(ctx: Any) -> list[Row]:
    key = SigningKey.generate("bench-k1")
    signer = Signer(key)
    recs = _records(signer)
    ring = Keyring([KeyEntry(key.kid, key.public_bytes)])
    rows: list[Row] = []
    rate, cpu_us = _judge(recs, Verifier(ring))
    cond = f"{len(recs)} signed records (512/batch, 1 heartbeat per partition per 1000), keyring; {machine()}; {LOADED}"
    rows.append(Row("watchdog judge, verified", rate, "ev/s", conditions=cond))
    rows.append(Row("watchdog judge CPU per record, verified", cpu_us, "us", conditions=cond))
    rate, cpu_us = _judge(recs, None)
    cond = f"{len(recs)} signed records, no keyring (headers on trust); {machine()}; {LOADED}"
    rows.append(Row("watchdog judge, headers on trust", rate, "ev/s", conditions=cond))
    rows.append(Row("watchdog judge CPU per record, headers on trust", cpu_us, "us", conditions=cond))

    # The hook wrapper's per-record cost, on top of signing (the Bus calls it once per micro-batch).
    from govbus.producer._heartbeat import Heartbeats

    base = [_Rec(v, k, [h for h in hs if not h[0].startswith("govbus_sig")], p) for v, k, hs, p in recs[:20_480]]
    results: dict[str, float] = {}
    # Interleaved, best of three each: the machine's load drifts between runs.
    for name in ("signing hook", "signing hook + heartbeat wrapper") * 3:
        hook_obj = SigningHook(Signer(key), 512)
        hook = Heartbeats(None, 5.0, hook_obj).hook if "wrapper" in name else hook_obj  # type: ignore[arg-type]
        batches = [base[i : i + 512] for i in range(0, len(base), 512)]
        for r in base:
            r.headers = [h for h in r.headers if not h[0].startswith("govbus_sig")]
        t0 = time.perf_counter()
        for b in batches:
            hook("bench", b)  # type: ignore[arg-type]
        results[name] = max(results.get(name, 0.0), len(base) / (time.perf_counter() - t0))
    rows.append(
        Row(
            "producer signing hook + heartbeat wrapper",
            results["signing hook + heartbeat wrapper"],
            "ev/s",
            baseline=results["signing hook"],
            conditions=f"{len(base)} records in 512-record batches, Merkle-batched Ed25519; {LOADED}",
        )
    )

    class _FakeBus:
        producer_info = ProducerInfo("bench", "1" * 32, "h", "l")
        _metadata = type("M", (), {"partitioner": type("P", (), {"partitions": PARTITIONS})()})()
        emitted = 0

        def counters(self) -> Any:
            return type("C", (), {"submitted": 0, "delivered": 0, "spooled": 0, "failed": 0, "rejected": 0})()

        def emit(self, event: Any) -> None:
            self.emitted += 1

    hb = Heartbeats(_FakeBus(), 5.0, SigningHook(Signer(key), 512))  # type: ignore[arg-type]
    hb._partitions.update(range(PARTITIONS))
    hb.beat()  # warm the key cache
    rounds = 200
    t0 = time.process_time()
    for _ in range(rounds):
        hb.beat()
    per_round_us = (time.process_time() - t0) / rounds * 1e6
    rows.append(
        Row(
            "heartbeat round CPU (6 partitions, up to emit)",
            per_round_us,
            "us",
            conditions=f"building 6 heartbeat events per interval (default 5 s): {PARTITIONS / 5:.1f} records/s; "
            f"signing and producing them cost what any event costs; {LOADED}",
        )
    )
    return rows
