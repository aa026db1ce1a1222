"""Key -> partition exactly as the Java client's default partitioner (and librdkafka's ``murmur2``).

The producer picks partitions itself so that the record's partition is known before hand-over
(signing numbers records per partition). ``murmur2(key) & 0x7fffffff % partitions``.
"""

from __future__ import annotations

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``) as an unsigned 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra == 3:
        h ^= data[whole + 2] << 16
    if extra >= 2:
        h ^= data[whole + 1] << 8
    if extra >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Partitioner:
    """``partition_for`` with a bounded cache: agent ids repeat, hashing them in Python costs µs."""

    def __init__(self, partitions: int, max_keys: int = 100_000) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}
        self._max = max_keys

    def __call__(self, key: bytes) -> int:
        partition = self._cache.get(key)
        if partition is None:
            if len(self._cache) >= self._max:
                self._cache.clear()
            partition = self._cache[key] = partition_for(key, self.partitions)
        return partition
