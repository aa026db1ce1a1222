"""Is the hand-written Avro writer worth keeping? Per-event encode time against fastavro, same events.

Pure CPU, no broker. The events are ``govbus._sample.sample_events`` (every kind, four attributes
of which one is a JSON list), written with the newest shipped schema in single-object framing.
Three timings of the same events, interleaved run by run so a burst of load from another process
falls on all three alike:

* hand-written: ``Encoder.encode(event, producer)``, the producer's call (``contract._encode_fast``);
* fastavro from the event: ``Encoder.encode_datum(to_datum(event, producer))``, the path the
  encoder falls back to, i.e. what the producer would run without the hand-written writer;
* fastavro writer alone: ``Encoder.encode_datum(datum)`` on datums built beforehand, fastavro's
  ``schemaless_writer`` with nothing else (a lower bound no producer reaches: it must build the datum).

Each figure is the median of ``RUNS`` runs, per event, with the range (min-max) in the conditions.
The three paths' bytes are checked identical first, and every event must take the hand-written path.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import fastavro
from _harness import Row, machine

from govbus._contract import Encoder, _encode_fast, to_datum
from govbus._sample import sample_events
from govbus.event import GovernanceEvent, ProducerInfo

EVENTS = 20_000
RUNS = 11


def _check(encoder: Encoder, producer: ProducerInfo, events: Sequence[GovernanceEvent]) -> int:
    """The encoded size of an event; AssertionError if the paths disagree or one falls back."""
    layout = encoder._layout
    assert layout is not None, f"schema v{encoder.schema.version} has no hand-written layout"
    tail = encoder._producer_tail(producer)
    for e in events:
        fast = _encode_fast(encoder.prefix, e, tail, layout)
        assert fast is not None, f"event {e.event_id} falls back to fastavro: the figure would mix both"
        assert fast == encoder.encode_datum(to_datum(e, producer, encoder.schema.version)), e.event_id
    return len(encoder.encode(events[0], producer))


def _interleaved(fns: Sequence[Callable[[], None]], runs: int) -> list[list[float]]:
    """Seconds of each run of each function, the functions taking turns within every round."""
    for fn in fns:
        fn()  # warm: caches (attribute keys, producer tail, fastavro's schema) filled before timing
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, times, strict=True):
            started = time.perf_counter()
            fn()
            out.append(time.perf_counter() - started)
    return times


def run(ctx: Any) -> list[Row]:
    encoder = Encoder()
    producer = ProducerInfo("bench", "0193c0ffee", "bench-host", "govbus-python/bench")
    events = list(sample_events(EVENTS, agents=16))
    version = encoder.schema.version
    datums = [to_datum(e, producer, version) for e in events]
    size = _check(encoder, producer, events)
    # The test data is not the encoder's: keep full collections from rescanning it.
    gc.collect()
    gc.freeze()

    encode, encode_datum = encoder.encode, encoder.encode_datum

    def hand_written() -> None:
        for e in events:
            encode(e, producer)

    def fastavro_from_event() -> None:
        for e in events:
            encode_datum(to_datum(e, producer, version))

    def fastavro_writer_alone() -> None:
        for d in datums:
            encode_datum(d)

    load = os.getloadavg()[0]
    try:
        timings = _interleaved([hand_written, fastavro_from_event, fastavro_writer_alone], RUNS)
    finally:
        gc.unfreeze()
    per_event = [[t / EVENTS * 1e6 for t in runs] for runs in timings]
    hand, full, alone = (statistics.median(us) for us in per_event)
    ranges = [f"{min(us):.2f}-{max(us):.2f}" for us in per_event]
    compiled = fastavro.schemaless_writer.__module__ == "fastavro._write"
    common = (
        f"per event, median of {RUNS} interleaved runs over {EVENTS} sample events (~{size} B, 4 attributes), "
        f"schema v{version}, single-object framing, byte-identical outputs checked; fastavro {fastavro.__version__} "
        f"({'compiled' if compiled else 'pure-Python'} writer); one thread, GC on; "
        f"machine shared with other test runs (1-min load average {load:.1f} at start); {machine()}"
    )
    return [
        Row(
            "avro encode: hand-written writer",
            hand,
            "us",
            baseline=full,
            conditions=f"Encoder.encode (range {ranges[0]} us); baseline: fastavro from the event, "
            f"to_datum + schemaless_writer (range {ranges[1]} us); {common}",
        ),
        Row(
            "avro encode: fastavro from the event",
            full,
            "us",
            conditions=f"to_datum + schemaless_writer, what Encoder falls back to (range {ranges[1]} us); {common}",
        ),
        Row(
            "avro encode: fastavro writer alone",
            alone,
            "us",
            baseline=hand,
            conditions=f"schemaless_writer on datums built beforehand (range {ranges[2]} us), a lower bound "
            f"for fastavro; baseline: the hand-written writer from the event; {common}",
        ),
    ]
