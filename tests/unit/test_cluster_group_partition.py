"""deploy/localkafka/_cluster.py: a group's __consumer_offsets partition, computed as Kafka does."""

from __future__ import annotations

from govbus.localkafka._cluster import group_partition


def test_java_string_hash_wraps_like_the_broker() -> None:
    # Java: "hello".hashCode() == 99162322; "polygenelubricants".hashCode() == Integer.MIN_VALUE,
    # which Kafka's Utils.abs maps to 0.
    assert group_partition("hello", 1 << 30) == 99162322
    assert group_partition("polygenelubricants", 50) == 0
    # "govbus.sink.file".hashCode() is negative: abs, then modulo.
    assert group_partition("govbus.sink.file", 50) == abs(_java_hash("govbus.sink.file")) % 50


def test_non_ascii_group_ids_hash_over_utf16_code_units() -> None:
    assert group_partition("é", 1000) == 233 % 1000
    assert group_partition("😀", 1 << 20) == (31 * 0xD83D + 0xDE00) % (1 << 20)


def _java_hash(text: str) -> int:
    h = 0
    for ch in text:  # BMP only (the test's ids)
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h
