"""Kafka's default partitioning of keyed records, with the hashes of recent keys kept.

Why: aiokafka's default partitioner computes murmur2 (as Kafka's Java client does) in
pure Python, ~10 µs per key; every resolved copy, segment change and referral credit is
keyed by its person, so a busy worker spent ~2 % of its samples there
(docs/benchmarks.md). Active people repeat, so their hashes are remembered. The choice
of partition is exactly aiokafka's (`tests/unit/test_partitioner.py`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aiokafka.partitioner import DefaultPartitioner, murmur2

KEYS_KEPT = 1 << 17  # ~30 MB when full (measured: keys, hashes and the cache's links)


class CachedPartitioner:
    def __init__(self, keys_kept: int = KEYS_KEPT) -> None:
        self._murmur2 = lru_cache(maxsize=keys_kept)(murmur2)
        self._unkeyed = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: Any) -> int:
        if key is None:
            return int(self._unkeyed(key, all_partitions, available))
        index = (self._murmur2(key) & 0x7FFFFFFF) % len(all_partitions)
        return all_partitions[index]
