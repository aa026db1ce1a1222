"""Signing and verification cost: amortised (Merkle batches) against per-event Ed25519.

Pure CPU, no broker. Records look like governance events: a ~350-byte value, a 12-byte record
key, CloudEvents headers and a traceparent; 6 partitions chosen from the key. Each figure is the
best of several runs (the least disturbed by other processes), always on one thread.
"""

from __future__ import annotations

import random
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Row, machine

from govbus.signing import Keyring, Signer, SigningKey, SignInput, Verifier
from govbus.signing._keyring import KeyEntry

BATCH = 512
PARTITIONS = 6
REPEATS = 7

Record = tuple[bytes, bytes | None, list[tuple[str, bytes]], int]


def _inputs(n: int, seed: int = 7) -> list[SignInput]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = b"agent-%06d" % rng.randrange(200)
        value = b"\xc3\x01" + rng.randbytes(8) + rng.randbytes(340)  # single-object Avro framing
        out.append(
            SignInput(
                value=value,
                key=key,
                ce_id=f"0193{seed:08x}{i:020x}",
                ce_type="io.agt.governance.policy_violation",
                ce_source="urn:agt:kernel/prod-eu-1/agent-42",
                ce_time="2025-11-26T15:04:05.123456Z",
                partition=zlib.crc32(key) % PARTITIONS,
            )
        )
    return out


def _records(inputs: Sequence[SignInput], signed: Sequence[list[tuple[str, bytes]]]) -> list[Record]:
    out: list[Record] = []
    for r, sig in zip(inputs, signed, strict=True):
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", r.ce_id.encode()),
            ("ce_source", r.ce_source.encode()),
            ("ce_type", r.ce_type.encode()),
            ("ce_time", (r.ce_time or "").encode()),
            ("content-type", b"application/avro"),
            ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            *sig,
        ]
        out.append((r.value, r.key, headers, r.partition))
    return out


def _consumer_order(records: list[Record], chunk: int = 500) -> list[Record]:
    """Partition by partition, in offset order, interleaved in fetch-sized chunks (like poll())."""
    queues = [[r for r in records if r[3] == p] for p in range(PARTITIONS)]
    out: list[Record] = []
    while any(queues):
        for q in queues:
            out.extend(q[:chunk])
            del q[:chunk]
    return out


def _best(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _verify_all(keyring: Keyring, records: list[Record], **kw: Any) -> Callable[[], None]:
    def run() -> None:
        verifier = Verifier(keyring, **kw)  # fresh: cold cache, empty sequence state
        verify = verifier.verify
        for value, key, headers, partition in records:
            if not verify(value, key, headers, partition).deliver:
                raise AssertionError("benchmark record did not verify")

    return run


def run(ctx: object) -> list[Row]:
    key = SigningKey.generate()
    keyring = Keyring([KeyEntry(key.kid, key.public_bytes)])
    where = machine()

    # --- signing -------------------------------------------------------------------------------
    n_batches = 40
    batches = [_inputs(BATCH, seed=b) for b in range(n_batches)]
    batch_signer = Signer(key, mode="batch")
    # Signing runs are short (~60 ms), so take more of them: a burst from another process must not
    # cover them all.
    sign_batch_s = _best(lambda: [batch_signer.sign_batch(b) for b in batches], repeats=3 * REPEATS)
    per_event_inputs = [r for b in batches[:4] for r in b]
    per_event_signer = Signer(key, mode="per-event")
    sign_each_s = _best(lambda: per_event_signer.sign_batch(per_event_inputs))
    sign_amortised_us = sign_batch_s / (n_batches * BATCH) * 1e6
    sign_each_us = sign_each_s / len(per_event_inputs) * 1e6

    # --- verification --------------------------------------------------------------------------
    signer = Signer(key, mode="batch")
    records: list[Record] = []
    for b in batches:
        records.extend(_records(b, signer.sign_batch(b)))
    in_order = _consumer_order(records)
    shuffled = list(records)
    random.Random(1).shuffle(shuffled)
    verify_s = _best(_verify_all(keyring, in_order))
    verify_raw_s = _best(_verify_all(keyring, in_order, track_sequences=False))
    verify_shuffled_s = _best(_verify_all(keyring, shuffled, track_sequences=False))

    each_signer = Signer(key, mode="per-event")
    each_inputs = batches[1][:BATCH]
    each_records = _consumer_order(_records(each_inputs, each_signer.sign_batch(each_inputs)))
    verify_each_s = _best(_verify_all(keyring, each_records))

    verify_eps = len(records) / verify_s
    verify_raw_eps = len(records) / verify_raw_s
    verify_shuffled_eps = len(records) / verify_shuffled_s
    verify_each_eps = len(each_records) / verify_each_s
    proof_bytes = len(dict(records[0][2])["govbus_sig_proof"])
    sig_header_bytes = sum(len(n) + len(v) for n, v in records[0][2][7:])

    common = f"one thread, GC on, best of {REPEATS} runs ({3 * REPEATS} for signing), {where}"
    return [
        Row(
            "sign amortised",
            sign_amortised_us,
            "us",
            baseline=sign_each_us,
            conditions=f"per event, batches of {BATCH} (1 Ed25519 sign + Merkle tree + headers), "
            f"~350 B values; signature headers {sig_header_bytes} B/record (proof {proof_bytes} B); "
            f"baseline per-event mode; {common}",
        ),
        Row("sign per-event", sign_each_us, "us", conditions=f"per event, one Ed25519 signature each; {common}"),
        Row(
            "verify throughput",
            verify_eps,
            "ev/s",
            baseline=verify_each_eps,
            conditions=f"amortised: cache starts empty, one Ed25519 verify per batch of {BATCH}, "
            f"{PARTITIONS} partitions read in offset order (poll-like chunks), sequence tracking on; "
            f"baseline per-event mode; {common}",
        ),
        Row(
            "verify throughput, no tracking",
            verify_raw_eps,
            "ev/s",
            baseline=verify_each_eps,
            conditions=f"as 'verify throughput' without the SequenceTracker; {common}",
        ),
        Row(
            "verify throughput, random order",
            verify_shuffled_eps,
            "ev/s",
            baseline=verify_each_eps,
            conditions=f"worst case: records of {n_batches} batches shuffled; each batch's signature is "
            f"still verified once, but consecutive records of a batch are rarely neighbours, so ~log2({BATCH}) "
            f"hashes per record; no tracking; {common}",
        ),
        Row(
            "verify per-event throughput",
            verify_each_eps,
            "ev/s",
            conditions=f"one Ed25519 verify per record, sequence tracking on; {common}",
        ),
        Row(
            "sign amortised, batch 64",
            _sign_us(key, 64),
            "us",
            baseline=sign_each_us,
            conditions=f"per event, batches of 64 (proof 6 hashes, 208 B); {common}",
        ),
    ]


def _sign_us(key: SigningKey, size: int) -> float:
    inputs = [_inputs(size, seed=100 + b) for b in range(max(1, 20000 // size))]
    signer = Signer(key, mode="batch")
    seconds = _best(lambda: [signer.sign_batch(b) for b in inputs], repeats=3 * REPEATS)
    return seconds / (len(inputs) * size) * 1e6
