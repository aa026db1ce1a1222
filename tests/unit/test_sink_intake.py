"""The intake stage: size → verify → decode, and the verdict policy, on fake messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from _sinks import FakeMessage, events, records, sign, signing_pair
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from govbus._contract import Decoder
from govbus.consumers import VerdictPolicy, Verification
from govbus.consumers._dlq import H_PARTITION
from govbus.consumers._intake import Intake


def intake(**kw: object) -> Intake:
    return Intake(Decoder(), **kw)  # type: ignore[arg-type]


def test_good_record_is_delivered_with_coordinates() -> None:
    r = records(events(1))[0]
    w = intake()(FakeMessage(r.value, r.headers, key=r.key, partition=2, offset=41), epoch=7)
    assert w.failure is None
    assert w.skip is None
    assert w.record is not None
    rec = w.record
    assert rec.event.event_id == r.event_id
    assert rec.attributes.id == r.event_id
    assert (rec.topic, rec.partition, rec.offset) == ("t", 2, 41)
    assert rec.verdict == "unverified"
    assert not rec.flagged
    assert rec.value == r.value
    assert rec.key == r.key
    assert w.epoch == 7
    assert w.size >= len(r.value or b"")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"garbage bytes", "decode:unknown-framing"),
        (b"\xc3\x01" + b"\x11" * 8 + b"body", "decode:unknown-fingerprint"),
        (b"\x00\x00\x00\x00\x07body", "decode:no-registry"),
        (None, "decode:empty"),
    ],
)
def test_undecodable_records_become_dead_letters(value: bytes | None, reason: str) -> None:
    r = records(events(1))[0]
    w = intake()(FakeMessage(value, r.headers), epoch=1)
    assert w.record is None
    assert w.failure is not None
    assert w.failure.reason == reason
    assert w.failure.exception == "govbus.errors.DecodeError"


def test_headers_that_do_not_match_the_event_are_rejected() -> None:
    a, b = records(events(2))
    w = intake()(FakeMessage(a.value, b.headers), epoch=1)
    assert w.failure is not None
    assert w.failure.reason == "decode:bad-headers"


def test_oversize_is_checked_before_anything_else() -> None:
    r = records(events(1))[0]
    assert r.value is not None
    w = intake(max_record_bytes=64)(FakeMessage(r.value, r.headers), epoch=1)
    assert w.failure is not None
    assert w.failure.reason == "oversize"
    assert "GOVBUS_SINK__MAX_RECORD_BYTES" in w.failure.message


@dataclasses.dataclass
class V:
    code: str
    detail: str = ""


class FakeVerifier:
    def __init__(self, code: str) -> None:
        self.code = code
        self.calls: list[tuple[int, int | None]] = []
        self.forgotten: list[int] = []

    def verify(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        partition: int,
        *,
        broker_time_ms: int | None = None,
    ) -> V:
        self.calls.append((partition, broker_time_ms))
        return V(self.code, f"because {self.code}")

    def forget_partition(self, partition: int) -> None:
        self.forgotten.append(partition)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("valid", "deliver"),
        ("gap", "flag"),
        ("reordered", "flag"),
        ("replay", "skip"),
        ("bad-signature", "dead-letter"),
        ("unknown-kid", "dead-letter"),
        ("revoked-kid", "dead-letter"),
        ("expired-kid", "dead-letter"),
        ("malformed", "dead-letter"),
        ("something-new", "dead-letter"),
    ],
)
def test_default_policy_per_verdict(code: str, outcome: str) -> None:
    r = records(events(1))[0]
    verification = Verification(FakeVerifier(code), VerdictPolicy())
    w = intake(verification=verification)(FakeMessage(r.value, r.headers), epoch=1)
    if outcome == "skip":
        assert w.skip == f"verify:{code}"
        assert w.record is None
        assert w.failure is None
    elif outcome == "dead-letter":
        assert w.failure is not None
        assert w.failure.reason == f"verify:{code}"
        assert w.failure.verdict == code
        assert w.failure.message == f"because {code}"
    else:
        assert w.record is not None
        assert w.record.verdict == code
        assert w.record.flagged is (outcome == "flag")
        assert w.record.verdict_detail == f"because {code}"


def test_log_append_time_is_passed_as_broker_time() -> None:
    r = records(events(1))[0]
    fake = FakeVerifier("valid")
    verification = Verification(fake, VerdictPolicy())
    intake(verification=verification)(FakeMessage(r.value, r.headers, timestamp=(TIMESTAMP_LOG_APPEND_TIME, 123)), 1)
    intake(verification=verification)(FakeMessage(r.value, r.headers), 1)
    assert fake.calls == [(0, 123), (0, None)]
    verification.forget(3)
    assert fake.forgotten == [3]


def test_replayed_dead_letter_is_verified_against_its_original_partition_without_sequence_checks() -> None:
    r = records(events(1))[0]
    main, replays = FakeVerifier("replay"), FakeVerifier("valid")
    verification = Verification(main, VerdictPolicy(), replay_verifier=replays)
    stage = intake(verification=verification, replay_topic="t.replay.file")
    headers = [*r.headers, (H_PARTITION, b"4")]
    w = stage(FakeMessage(r.value, headers, topic="t.replay.file", partition=0), epoch=1)
    assert w.record is not None
    assert w.replayed
    assert replays.calls == [(4, None)]
    assert main.calls == []
    w = stage(FakeMessage(r.value, r.headers, topic="t.replay.file"), epoch=1)
    assert w.failure is not None
    assert w.failure.reason == "replay:no-origin"


def test_real_signatures() -> None:
    from govbus.signing import Verifier

    signer, keyring = signing_pair()
    good, tampered = sign(records(events(2)), signer, partitions=3)
    assert good.partition is not None
    assert tampered.partition is not None
    verification = Verification(Verifier(keyring), VerdictPolicy())
    stage = intake(verification=verification)
    w = stage(FakeMessage(good.value, good.headers, key=good.key, partition=good.partition), 1)
    assert w.record is not None
    assert w.record.verdict == "valid"
    # The same record again in this session is a replay: skipped, counted.
    w = stage(FakeMessage(good.value, good.headers, key=good.key, partition=good.partition), 1)
    assert w.skip == "verify:replay"
    # ...but not after the partition was re-assigned (records re-read after a rebalance).
    verification.forget(good.partition)
    w = stage(FakeMessage(good.value, good.headers, key=good.key, partition=good.partition), 1)
    assert w.record is not None
    assert w.record.verdict == "valid"
    assert tampered.value is not None
    bad = tampered.value[:-1] + bytes([tampered.value[-1] ^ 1])
    w = stage(FakeMessage(bad, tampered.headers, key=tampered.key, partition=tampered.partition), 1)
    assert w.failure is not None
    assert w.failure.reason == "verify:bad-signature"
    w = stage(FakeMessage(good.value, records(events(1))[0].headers, key=good.key, partition=good.partition), 1)
    assert w.failure is not None
    assert w.failure.reason == "verify:malformed"
    other_signer, _ = signing_pair("someone-else")
    stranger = sign(records(events(1)), other_signer, partitions=1)[0]
    w = stage(FakeMessage(stranger.value, stranger.headers, key=stranger.key, partition=0), 1)
    assert w.failure is not None
    assert w.failure.reason == "verify:unknown-kid"
