"""``govbus demo``: the main job on an embedded default.

Starts a local Apache Kafka broker, creates the topic, has a sample kernel publish events of every
kind, reads them back with a consumer group, prints a summary and stops the broker.
"""

from __future__ import annotations

import argparse
import collections
import socket
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer

from govbus.admin import ensure_topic
from govbus.contract import Decoder, Encoder
from govbus.errors import DecodeError, GovbusError
from govbus.event import ProducerInfo
from govbus.record import from_record, kafka_headers, message_headers, to_record
from govbus.sample import KINDS, sample_events


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the bus end to end on a local broker and print a report")
    p.add_argument("--events", type=int, default=600, help="events the sample kernel publishes (default 600)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--bootstrap", help="use this cluster instead of starting a local broker")
    p.set_defaults(func=_run)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _run(args: argparse.Namespace) -> int:
    if args.events < len(KINDS):
        raise GovbusError(f"--events must be at least {len(KINDS)} so every kind is published")
    broker: Any = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from govbus.localkafka import LocalBroker

        _say("• starting a local Apache Kafka broker (first run downloads it from Maven Central)…")
        broker = LocalBroker.ephemeral()
        info = broker.start()
        bootstrap = info.bootstrap
        _say(f"  Apache Kafka {info.version} at {bootstrap} in {info.startup_seconds:.1f} s; log: {info.log_path}")
    try:
        return _exchange(bootstrap, args.events, args.partitions)
    finally:
        if broker is not None:
            _say("• stopping the broker")
            broker.stop()


def _exchange(bootstrap: str, count: int, partitions: int) -> int:
    topic = f"govbus.demo.{uuid.uuid4().hex[:8]}"
    conf = {"bootstrap.servers": bootstrap}
    ensure_topic(conf, topic, partitions=partitions)
    _say(f"• topic {topic} ({partitions} partitions)")

    me = ProducerInfo("demo-kernel", uuid.uuid4().hex, socket.gethostname(), "govbus-python/demo")
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    encoder = Encoder()
    sent: dict[str, float] = {}
    started = time.perf_counter()
    for event in sample_events(count):
        rec = to_record(event, me, encoder)
        sent[event.event_id] = time.perf_counter()
        producer.produce(topic, rec.value, rec.key, headers=kafka_headers(rec.headers))
        producer.poll(0)
    if producer.flush(30) != 0:
        raise GovbusError("the broker did not acknowledge every event within 30 s")
    produce_s = time.perf_counter() - started
    _say(f"• sample kernel published {count} events in {produce_s * 1000:.0f} ms (acks=all, idempotent)")

    consumer = Consumer(
        {**conf, "group.id": "govbus.demo", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    decoder = Decoder()
    kinds: collections.Counter[str] = collections.Counter()
    per_partition: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    try:
        while len(seen) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            try:
                rec_in = from_record(msg.value(), message_headers(msg.headers()), decoder)
            except DecodeError as exc:
                errors[exc.reason] += 1
                continue
            eid = rec_in.event.event_id
            if eid in seen:
                continue
            seen.add(eid)
            latencies.append(time.perf_counter() - sent.get(eid, time.perf_counter()))
            kinds[rec_in.event.kind.value] += 1
            per_partition[msg.partition() or 0] += 1
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    latencies.sort()
    _say("")
    _say("govbus demo — summary")
    _say(f"  {'kind':<28}{'received':>9}")
    for kind in KINDS:
        _say(f"  {kind.value:<28}{kinds[kind.value]:>9}")
    _say(f"  {'total':<28}{len(seen):>9} of {count} published")
    _say("  partitions: " + ", ".join(f"p{p}={n}" for p, n in sorted(per_partition.items())))
    if latencies:
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        _say(f"  publish → consume latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    _say(f"  undecodable records: {sum(errors.values())}" + (f" {dict(errors)}" if errors else ""))
    ok = len(seen) == count and not errors
    _say("  result: " + ("every event arrived, every kind present" if ok else "MISSING EVENTS"))
    return 0 if ok else 1
