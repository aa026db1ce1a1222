"""What a secure bus costs: SASL_SSL (SCRAM-SHA-512 over TLS) against PLAINTEXT, same run.

- producer acknowledged throughput: govbus records (pre-encoded, so the client and the wire are
  measured, not Avro) produced by an idempotent confluent-kafka producer with the Bus's delivery
  settings (acks=all, lz4, linger 20 ms) until every one is acknowledged;
- consumer throughput: a raw confluent-kafka consumer (its own group) reading them back.

The secure figure runs on the secure local broker (``govbus.localkafka``, ``secure=True``) as a
SCRAM user holding exactly ``govbus acl plan`` ACLs (kernel to produce, a sink's READs to consume);
the baseline on the plaintext local broker of the same run. Median of 3 alternating rounds.
Size: GOVBUS_BENCH_SECURE_EVENTS (default 50000).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from typing import Any

from _harness import Row
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from govbus._acl import AclEntry, apply_plan
from govbus._admin import ensure_topic
from govbus._contract import Encoder
from govbus._record import to_record
from govbus._sample import sample_events
from govbus.event import ProducerInfo

EVENTS = int(os.environ.get("GOVBUS_BENCH_SECURE_EVENTS", "50000"))
ROUNDS = 3
PARTITIONS = 6


def _records(n: int) -> list[tuple[bytes | None, bytes | None, Any]]:
    producer = ProducerInfo("bench", uuid.uuid4().hex, "bench-host", "govbus-python/bench")
    enc = Encoder()
    base = [to_record(e, producer, enc) for e in sample_events(1000, seed=3)]
    return [(r.key, r.value, list(r.headers)) for r in (base[i % len(base)] for i in range(n))]


def _produce(conf: dict[str, Any], topic: str, recs: list[tuple[bytes | None, bytes | None, Any]]) -> float:
    p = Producer({**conf, "enable.idempotence": True, "acks": "all", "linger.ms": 20, "compression.type": "lz4"})
    started = time.perf_counter()
    for key, value, headers in recs:
        while True:
            try:
                p.produce(topic, value, key=key, headers=headers)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    assert p.flush(120) == 0, "not every record was acknowledged"
    return len(recs) / (time.perf_counter() - started)


def _consume(conf: dict[str, Any], topic: str, group: str, n: int) -> float:
    c = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        got = 0
        started: float | None = None
        deadline = time.monotonic() + 180
        while got < n and time.monotonic() < deadline:
            msgs = c.consume(1000, 0.5)
            for m in msgs:
                if m.error() is None:
                    if started is None:
                        started = time.perf_counter()  # from the first record: the join is not throughput
                    got += 1
        assert got >= n, f"read {got} of {n}"
        assert started is not None
        return got / (time.perf_counter() - started)
    finally:
        c.close()


def _scram_user(admin: AdminClient) -> tuple[str, str]:
    name, password = f"bench-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    upsert = UserScramCredentialUpsertion(
        name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
    )
    for f in admin.alter_user_scram_credentials([upsert]).values():
        f.result(30)
    return name, password


def run(ctx: Any) -> list[Row]:
    from govbus.localkafka import LocalBroker

    plain: dict[str, Any] = {"bootstrap.servers": ctx.bootstrap()}
    broker = LocalBroker.ephemeral(secure=True)
    info = broker.start()
    assert info.secure is not None
    try:
        admin_conf = info.secure.admin_config()
        user, password = _scram_user(AdminClient(admin_conf))
        secure = info.secure.scram_config(user, password)
        recs = _records(EVENTS)
        produced: dict[str, list[float]] = {"plain": [], "secure": []}
        consumed: dict[str, list[float]] = {"plain": [], "secure": []}
        for _ in range(ROUNDS):
            for kind, conf, setup in (("plain", plain, plain), ("secure", secure, admin_conf)):
                topic = f"bench-secure-{kind}-{uuid.uuid4().hex[:8]}"
                group = f"bench-{uuid.uuid4().hex[:8]}"
                ensure_topic(setup, topic, partitions=PARTITIONS)
                if kind == "secure":
                    apply_plan(
                        admin_conf,
                        f"User:{user}",
                        [
                            AclEntry("TOPIC", topic, "WRITE"),  # the kernel role
                            AclEntry("TOPIC", topic, "READ"),  # and a sink's READs
                            AclEntry("GROUP", group, "READ"),
                        ],
                    )
                produced[kind].append(_produce(conf, topic, recs))
                consumed[kind].append(_consume(conf, topic, group, len(recs)))
    finally:
        broker.close()
    load = os.getloadavg()[0]
    conditions = (
        f"{EVENTS} govbus records (~{sum(len(v or b'') for _k, v, _h in recs) // len(recs)} B), {PARTITIONS} "
        f"partitions, median of {ROUNDS} alternating rounds; value: SASL_SSL SCRAM-SHA-512 on the secure "
        f"local broker, baseline: PLAINTEXT on the plaintext local broker, same run, same machine (2 cores shared "
        f"with other engineers' test runs: 1-min load {load:.0f} at the end, so absolute figures are noisy)"
    )

    def rounds(figures: dict[str, list[float]]) -> str:
        return "; rounds SASL_SSL {} vs PLAINTEXT {} ev/s".format(
            "/".join(f"{v:.0f}" for v in figures["secure"]), "/".join(f"{v:.0f}" for v in figures["plain"])
        )

    return [
        Row(
            "secure: producer acknowledged throughput (SASL_SSL)",
            statistics.median(produced["secure"]),
            "ev/s",
            statistics.median(produced["plain"]),
            "idempotent, acks=all, lz4, linger 20 ms; " + conditions + rounds(produced),
        ),
        Row(
            "secure: consumer throughput (SASL_SSL)",
            statistics.median(consumed["secure"]),
            "ev/s",
            statistics.median(consumed["plain"]),
            "raw confluent-kafka consumer, from its first record; " + conditions + rounds(consumed),
        ),
    ]
