"""The Bus signs when a key is configured; consumers verify with the public keyring alone."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from _await import until
from confluent_kafka import Consumer, TopicPartition

from govbus._sample import sample_events
from govbus._settings import load_settings
from govbus.producer import Bus
from govbus.signing import KeyEntry, Keyring, SigningKey, VerdictCode, Verifier, write_private_key

pytestmark = pytest.mark.integration


def test_bus_signs_every_event_and_tampering_or_loss_is_detected(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    key = SigningKey.generate()
    ring = Keyring()
    ring.add(KeyEntry(key.kid, key.public_bytes))
    ring.save(tmp_path / "keyring.json")
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topic=topic,
        producer={"spool_dir": str(tmp_path / "spool")},
        signing={
            "private_key_path": str(write_private_key(key, tmp_path / f"{key.kid}.pem")),
            "keyring_path": str(tmp_path / "keyring.json"),
        },
    )
    with Bus(settings) as bus:
        for event in sample_events(300):
            bus.emit(event)
        assert bus.flush(30)

    records = _read(kafka_bootstrap, topic, partitions=3, count=300)
    verifier = Verifier(Keyring.load(tmp_path / "keyring.json"))  # public keys only
    by_partition: dict[int, list[object]] = {}
    for msg in records:
        by_partition.setdefault(msg.partition(), []).append(msg)
    for partition, msgs in by_partition.items():
        for msg in msgs:
            verdict = verifier.verify(msg.value(), msg.key(), msg.headers(), partition)
            assert verdict.code is VerdictCode.VALID, verdict

    # A fresh verifier per check, so the sequence tracker's view starts clean.
    partition, msgs = next((p, m) for p, m in by_partition.items() if len(m) >= 3)
    first, _dropped, third = msgs[0], msgs[1], msgs[2]
    tampered = bytearray(first.value())
    tampered[-1] ^= 0x01
    fresh = Verifier(Keyring.load(tmp_path / "keyring.json"))
    assert fresh.verify(bytes(tampered), first.key(), first.headers(), partition).code is VerdictCode.BAD_SIGNATURE
    gaps = Verifier(Keyring.load(tmp_path / "keyring.json"))
    assert gaps.verify(first.value(), first.key(), first.headers(), partition).code is VerdictCode.VALID
    assert gaps.verify(third.value(), third.key(), third.headers(), partition).code is VerdictCode.GAP


def _read(bootstrap: str, topic: str, *, partitions: int, count: int) -> list[object]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[object] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < count:
            assert time.monotonic() < deadline, f"read {len(got)} of {count}"
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got.append(msg)
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("durability", ["memory", "disk"])
def test_spooled_replay_and_direct_batches_share_one_unbroken_signed_stream(
    kafka_bootstrap: str, tmp_path: Path, durability: str
) -> None:
    """Records spooled while the topic is missing are replayed and signed by the signing hook;
    later batches are encoded and signed in one native call (docs/native.md): a verifier sees
    every record valid, each partition's sequence numbers without a gap or a replay, and the
    heartbeats know every partition the batches went to."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from govbus import _accel

    topic = f"test-signed-late-{uuid.uuid4().hex[:8]}"
    key = SigningKey.generate()
    ring = Keyring()
    ring.add(KeyEntry(key.kid, key.public_bytes))
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topic=topic,
        producer={"spool_dir": str(tmp_path / "spool"), "heartbeat_interval_ms": 3_600_000, "durability": durability},
        signing={"private_key_path": str(write_private_key(key, tmp_path / f"{key.kid}.pem"))},
    )
    events = list(sample_events(1000, agents=8))
    with Bus(settings) as bus:
        assert (bus._sender._signer is not None) == _accel.active()  # the one-call path is in use
        for event in events[:500]:
            bus.emit(event)
        until(lambda: bus.health().state == "spooling" and bus.counters().spooled == 500)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.create_topics([NewTopic(topic, 3, -1)])[topic].result(30)
        assert bus.flush(60)
        until(lambda: bus.health().state == "connected")
        for event in events[500:]:
            bus.emit(event)
        assert bus.flush(60)
        assert bus._heartbeats is not None
        assert bus._heartbeats.beat() == 3  # one per partition the batches went to
        assert bus.flush(60)

    # The events, 3 heartbeats, and the 3 final ones close() sends.
    records = _read(kafka_bootstrap, topic, partitions=3, count=1006)
    verifier = Verifier(ring)
    ids = []
    for msg in sorted(records, key=lambda m: (m.partition(), m.offset())):  # type: ignore[attr-defined]
        verdict = verifier.verify(msg.value(), msg.key(), msg.headers(), msg.partition())  # type: ignore[attr-defined]
        assert verdict.code is VerdictCode.VALID, verdict
        ids.append(dict(msg.headers())["ce_id"].decode())  # type: ignore[attr-defined]
    assert set(ids) >= {e.event_id for e in events}
