"""On the real broker: the batch intake reads consumed messages in place (their fields, and the
headers librdkafka keeps, native/src/message.rs) and gives exactly the rows it gives through the
accessors; a record's headers, read later, are the message's own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from _intake_rows import plain, without_reader
from _sinks import Rec, events, produce, records, sign, signing_pair
from confluent_kafka import Consumer

from govbus import _accel as native
from govbus._contract import Decoder
from govbus.consumers import VerdictPolicy, Verification
from govbus.consumers._intake import Intake
from govbus.consumers.sinks import _ledger
from govbus.signing import Verifier

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not native.active(), reason="the compiled core is not installed"),
]


def _consume_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"in-place-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got: list[Any] = []
    try:
        for _ in range(600):  # bounded: each consume waits at most 0.1 s for a record
            got.extend(m for m in c.consume(500, 0.1) if m.error() is None)
            if len(got) >= count:
                break
    finally:
        c.close()
    assert len(got) == count, f"consumed {len(got)} of {count}"
    return sorted(got, key=lambda m: (m.partition(), m.offset()))


def test_consumed_messages_give_the_rows_the_accessors_give(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=3)
    signer, keyring = signing_pair()
    recs = sign(records(events(300)), signer, partitions=3)
    recs[7].headers = [*recs[7].headers, ("x-none", None), ("x-empty", b"")]  # a value None, one empty
    first = recs[0]
    recs.append(Rec(first.key, first.value, [], first.event_id, partition=1))  # no headers at all
    assert produce(kafka_bootstrap, topic, recs) == len(recs)
    copies = [_consume_all(kafka_bootstrap, topic, len(recs)) for _ in range(3)]

    def intake() -> Intake:
        return Intake(Decoder(), verification=Verification(Verifier(keyring), VerdictPolicy()))

    in_place, reference = intake(), without_reader(intake())
    assert in_place._reader is not None
    got: list[Any] = []
    want: list[Any] = []
    for at in range(0, len(recs), 128):
        rows = in_place.prepare(copies[0][at : at + 128])
        assert rows is not None
        got.extend(rows)
        rows = reference.prepare(copies[1][at : at + 128])
        assert rows is not None
        want.extend(rows)
    assert [plain(r) for r in got] == [plain(r) for r in want]
    taken = [(r[0], twin) for r, twin in zip(got, copies[1], strict=True) if r is not None and len(r) == 4]
    assert len(taken) == 300  # every signed record (the one without headers is judged apart)

    # The audit ledger's sealer reads them in place too (a third copy, untouched by the checks
    # above), and seals what the Python writer seals from the list (which its iteration makes).
    auditing = Intake(Decoder(), verification=Verification(Verifier(keyring), VerdictPolicy()), events=True)
    rows = auditing.prepare(copies[2][:128])  # as for the audit sink: events built natively
    assert rows is not None
    fresh = [r[0].record for r in rows if r is not None and len(r) == 4]
    assert len(fresh) > 100
    sealer = _ledger.native_sealer()
    assert sealer is not None
    assert not any(r.headers.materialized for r in fresh)
    sealed = sealer(5, _ledger.GENESIS, fresh)
    assert not any(r.headers.materialized for r in fresh), "the sealer made the headers' Python objects"
    assert sealed == _ledger.seal_events(5, _ledger.GENESIS, fresh)
    assert all(r.headers.materialized for r in fresh)
    assert sealer(5, _ledger.GENESIS, fresh) == sealed  # and from the list, once made

    # For the audit sink itself the intake drafts each entry in its pass (native/src/ledger_draft.rs)
    # from in-place headers: the sealer fills in seq and prev, and the lines are the Python writer's.
    drafting = Intake(
        Decoder(),
        verification=Verification(Verifier(keyring), VerdictPolicy()),
        draft=_ledger.native_ledger_format(),
    )
    rows = drafting.prepare(copies[2][128:256])
    assert rows is not None
    drafted = [r[0].record for r in rows if r is not None and len(r) == 4]
    assert len(drafted) > 100
    assert all(type(r._draft).__name__ == "LedgerDraft" and r.line is None for r in drafted)
    assert all(r.verdict == "valid" for r in drafted)
    sealed = sealer(7, "ab" * 32, drafted)
    assert not any(r.headers.materialized for r in drafted)
    assert all(r._event is None for r in drafted), "the sealer decoded a drafted record's event"
    assert sealed == _ledger.seal_events(7, "ab" * 32, drafted)

    # A delivered record's headers were never turned into Python objects; read, they are the
    # message's own (headers() once, on first use), by every way the pipeline reads them.
    for work, twin in taken:
        headers = work.headers
        assert type(headers).__name__ == "ConsumedHeaders"
        assert headers == twin.headers()
        assert list(headers) == twin.headers()
        assert len(headers) == len(twin.headers())
        assert headers[0] == twin.headers()[0]
        assert headers[-2:] == twin.headers()[-2:]
        assert bool(headers)
        assert headers[0] in headers
        assert repr(headers) == repr(twin.headers())
        assert work.record.headers is headers
    (bare,) = [r for r, m in zip(got, copies[0], strict=True) if m.headers() is None]
    assert bare is not None
    assert list(bare[5]) == []
    assert not bare[5]
