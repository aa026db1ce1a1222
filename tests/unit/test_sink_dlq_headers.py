"""Dead-letter headers: the original bytes and headers, plus why, where from and when."""

from __future__ import annotations

from datetime import UTC, datetime

from govbus.consumers._dlq import dead_letter_headers, origin
from govbus.consumers._pipeline import Failure, Work

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_headers_keep_the_original_and_add_the_error() -> None:
    w = Work("gov", 2, 41, 1, 10, b"k", b"v", [("ce_id", b"e1"), ("traceparent", b"tp")], 1700000000000)
    f = Failure("verify:bad-signature", "signature does not verify", verdict="bad-signature")
    h = dead_letter_headers(w, f, sink="file", group="govbus.sink.file", now=NOW)
    d = dict(h)
    assert h[:2] == [("ce_id", b"e1"), ("traceparent", b"tp")]
    assert d["govbus.dlq.reason"] == b"verify:bad-signature"
    assert d["govbus.dlq.verdict"] == b"bad-signature"
    assert d["govbus.dlq.message"] == b"signature does not verify"
    assert d["govbus.dlq.topic"] == b"gov"
    assert d["govbus.dlq.partition"] == b"2"
    assert d["govbus.dlq.offset"] == b"41"
    assert d["govbus.dlq.timestamp"] == b"1700000000000"
    assert d["govbus.dlq.sink"] == b"file"
    assert d["govbus.dlq.group"] == b"govbus.sink.file"
    assert d["govbus.dlq.time"] == b"2026-01-02T03:04:05.678901Z"
    assert d["govbus.dlq.count"] == b"1"
    assert "govbus.dlq.exception" not in d


def test_a_replayed_dead_letter_that_dies_again_points_at_its_first_home() -> None:
    first = Work("gov", 2, 41, 1, 10, b"k", b"v", [("ce_id", b"e1")], None)
    h1 = dead_letter_headers(first, Failure("oversize", "too big"), sink="file", group="g", now=NOW)
    replayed = Work(
        "gov.replay.file", 0, 7, 1, 10, b"k", b"v", [*h1, ("govbus.replay.time", b"x")], None, replayed=True
    )
    assert origin(replayed) == ("gov", 2, 41, None)
    f2 = Failure("sink:rejected", "still no", exception="ValueError")
    h2 = dict(dead_letter_headers(replayed, f2, sink="file", group="g", now=NOW))
    assert h2["govbus.dlq.partition"] == b"2"
    assert h2["govbus.dlq.offset"] == b"41"
    assert h2["govbus.dlq.count"] == b"2"
    assert h2["govbus.dlq.reason"] == b"sink:rejected"
    assert h2["govbus.dlq.exception"] == b"ValueError"
    assert "govbus.replay.time" not in h2
    names = [n for n, _ in dead_letter_headers(replayed, f2, sink="file", group="g", now=NOW)]
    assert names.count("govbus.dlq.reason") == 1  # replaced, not stacked


def test_long_messages_are_cut() -> None:
    w = Work("gov", 0, 0, 1, 1, None, b"v", [], None)
    h = dict(dead_letter_headers(w, Failure("sink:rejected", "x" * 5000), sink="s", group="g", now=NOW))
    assert len(h["govbus.dlq.message"] or b"") == 1024
