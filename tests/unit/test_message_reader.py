"""The in-place reader of consumed messages (native/src/message.rs): it proves confluent-kafka's
layout before it is used, refuses anything else by name, and gives the batch intake the rows the
accessors give (here on messages built with known fields; on consumed ones, with the headers
librdkafka keeps, in tests/integration/test_intake_in_place.py)."""

from __future__ import annotations

import re
import time
from typing import Any

import confluent_kafka
import pytest
from _intake_rows import plain, without_reader
from _sinks import events, records, sign, signing_pair
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, KafkaError, Message

from govbus import _accel as native
from govbus._contract import Decoder
from govbus.consumers import VerdictPolicy, Verification
from govbus.consumers._intake import Intake
from govbus.signing import Verifier

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")


def _librdkafka() -> str:
    with open("/proc/self/maps", encoding="utf-8") as maps:
        return next(line.split(maxsplit=5)[-1].strip() for line in maps if "/librdkafka" in line)


def _module() -> Any:
    import govbus._native

    return govbus._native


def test_the_installed_confluent_kafka_is_read_in_place() -> None:
    assert native.message_reader() is not None


def test_a_library_of_another_version_is_refused() -> None:
    version = confluent_kafka.libversion()[1]
    with pytest.raises(ValueError, match=f"is version {version:#x}, confluent-kafka uses {version + 1:#x}"):
        _module().MessageReader(Message, _librdkafka(), version + 1)


def test_a_library_not_loaded_is_refused_not_loaded() -> None:
    with pytest.raises(ValueError, match=re.escape("/nonexistent/librdkafka.so.1 is not loaded in this process")):
        _module().MessageReader(Message, "/nonexistent/librdkafka.so.1", confluent_kafka.libversion()[1])


def test_another_class_is_refused_before_any_field_is_read() -> None:
    class Lookalike:
        def __init__(self, **fields: Any) -> None:
            self.fields = fields

    with pytest.raises(ValueError, match="too small"):
        _module().MessageReader(Lookalike, _librdkafka(), confluent_kafka.libversion()[1])


def _messages(signer: Any) -> list[Any]:
    recs = sign(records(events(24)), signer, partitions=3)
    now = int(time.time() * 1000)
    msgs: list[Any] = []
    for i, r in enumerate(recs):
        kind = TIMESTAMP_LOG_APPEND_TIME if i % 5 == 0 else TIMESTAMP_CREATE_TIME
        at = (kind, now + i)
        msgs.append(
            Message(
                topic="t",
                partition=r.partition,
                offset=100 + i,
                key=r.key,
                value=r.value,
                headers=r.headers,
                timestamp=at,
            )
        )
    # What the intake leaves to the per-record path, or reads all the same.
    msgs.append(Message(topic="t", partition=0, offset=900, error=KafkaError(KafkaError._PARTITION_EOF)))
    msgs.append(Message(topic="t", partition=1, offset=901, value=None, headers=recs[0].headers))
    msgs.append(Message(topic="t", partition=1, offset=902, value=recs[1].value, headers=None))
    msgs.append(Message(topic="t", partition=1, offset=903, value=recs[2].value, headers=[]))
    msgs.append(Message(topic="replayed", partition=2, offset=904, value=recs[3].value, headers=recs[3].headers))
    msgs.append(Message(topic="t", partition=2, offset=905, value=b"\xc3\x01" + b"x" * 5000, headers=recs[4].headers))
    return msgs


@pytest.mark.parametrize("verified", [True, False])
def test_built_messages_give_the_rows_the_accessors_give(verified: bool) -> None:
    signer, keyring = signing_pair()

    def intake() -> Intake:
        verification = Verification(Verifier(keyring), VerdictPolicy()) if verified else None
        return Intake(Decoder(), verification=verification, max_record_bytes=4096, replay_topic="replayed")

    in_place, reference = intake(), without_reader(intake())
    assert in_place._reader is not None
    msgs = _messages(signer)
    got, want = in_place.prepare(msgs), reference.prepare(msgs)
    assert got is not None
    assert want is not None
    assert [plain(r) for r in got] == [plain(r) for r in want]
    assert sum(r is not None and len(r) == 4 for r in got) == 24  # each signed record, as a Work
    assert got[24] is None  # the consumer error: the per-record path
