"""The segmentation agent's per-partition engines (event-time clock + due-time index).

Adapter bookkeeping around `pipeline.engine.PartitionEngine`: which states belong to which
partition, building an engine when a partition's first event arrives, forgetting revoked
partitions, and re-scoring a brand when its RFM thresholds change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from agents.write_behind import Changelog, WriteBehind
from pipeline import state as core
from pipeline.engine import Outcome, PartitionEngine
from pipeline.rfm import RfmPolicy


class PartitionClocks:
    """One `PartitionEngine` (event-time clock + due-time index) per events partition.

    An engine is built when its partition's first event arrives, indexing the states
    that belong to the partition: those recovered from the changelog (Faust's memory
    store records their partition) and those this worker wrote. Revoked partitions are
    forgotten; if they come back, their engine is rebuilt from the recovered table.
    """

    def __init__(
        self, policy: core.Policy, table: Any, allowed_lateness_ms: int, changelog: Changelog
    ) -> None:
        self._policy = policy
        self._table = table
        self._changelog = changelog
        self._lateness = allowed_lateness_ms
        self._engines: dict[int, PartitionEngine] = {}
        self._partition_of: dict[bytes, int] = {}  # keys written here, by partition
        self._reassess: dict[int, set[str]] = {}  # partition -> brands whose policy changed

    def engine(self, partition: int) -> PartitionEngine:
        engine = self._engines.get(partition)
        if engine is None:
            store = WriteBehind(self._table, partition, self._changelog)
            engine = PartitionEngine(self._policy, store, self._lateness)
            self._index(partition, engine)
            self._engines[partition] = engine
        return engine

    def _owners(self) -> dict[bytes, int]:
        """Partition of every state this worker holds: recovered ones (Faust's memory
        store records their changelog partition) and those written here."""
        return {**getattr(self._table.data, "_key_partition", {}), **self._partition_of}

    def _index(self, partition: int, engine: PartitionEngine) -> None:
        owners = self._owners()
        engine.index(
            (key, state) for key, state in engine.store.items() if owners.get(key) == partition
        )

    def written(self, partition: int, outcome: Outcome) -> None:
        for key in outcome.written:
            self._partition_of[key] = partition

    async def flush(self) -> None:
        """Write every engine's held states to the table (see agents.write_behind)."""
        for engine in list(self._engines.values()):
            assert isinstance(engine.store, WriteBehind)
            await engine.store.flush()

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._engines.pop(p, None)

    def backlog(self) -> int:
        return sum(e.backlog for e in self._engines.values())

    def set_brand_rfm(self, brand: str, rfm: RfmPolicy, partitions: Iterable[int]) -> None:
        """New thresholds for one brand (quantile scoring). The brand's people in each
        partition are re-scored on that partition's next event (table writes belong to an
        event), and due times re-indexed since recency thresholds moved."""
        self._policy = replace(self._policy, brand_rfm={**self._policy.brand_rfm, brand: rfm})
        for partition in partitions:
            self._reassess.setdefault(partition, set()).add(brand)
        for partition, engine in self._engines.items():
            engine.policy = self._policy
            self._index(partition, engine)

    def reassess_pending(self, partition: int, engine: PartitionEngine, out: Outcome) -> None:
        brands = self._reassess.pop(partition, None)
        if brands:
            keys = [k for k, p in self._owners().items() if p == partition]
            engine.reassess((k for k in keys if k.split(b":", 1)[0].decode() in brands), out)
