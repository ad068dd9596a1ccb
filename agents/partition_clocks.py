"""The segmentation agent's per-partition engines (event-time clock + due-time index).

Adapter bookkeeping around `pipeline.engine.PartitionEngine`: which states belong to which
partition, building an engine when a partition's first event arrives, forgetting revoked
partitions, re-scoring a brand when its RFM thresholds change, and keeping each
partition's clock across restarts.

Why the clock is kept: a partition's watermark decides which due times fire before an
event that is late for it (older than the watermark); a late event then meets a state
already advanced to those due times. A worker that restarted with a fresh clock (the
latest event time seen *since* its committed offset) fired fewer of them than one that
never stopped, so the same partition gave other changes. The forwarded route makes that
common: events forwarded again after a kill sit in the resolved topic days of event time
behind the copies before them (the kill -9 fault test: 67 % of one resolved partition's
events late, 12-650 changes different). So each batch's clocks are written to a small
table once its states are stored (`checkpoint`), and an engine built after a restart
starts from its partition's stored clock: never behind the clock at the committed
offset, and ahead of it only over events whose states are stored, which are skipped on
replay (docs/reliability.md, "A partition's clock survives a restart").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from agents.write_behind import Changelog, WriteBehind
from pipeline import state as core
from pipeline.engine import Outcome, PartitionEngine
from pipeline.rfm import RfmPolicy

# Sends one partition's clock record (partition, key, value) to the clock table's changelog.
ClockChangelog = Callable[[int, bytes, bytes], Awaitable[Any]]


def clock_key(partition: int) -> bytes:
    return b"%d" % partition


def encode_clock(max_event_time: int) -> bytes:
    return b"%d" % max_event_time  # ASCII: readable with any console consumer


def decode_clock(value: bytes | None) -> int | None:
    return None if value is None else int(value)


class PartitionClocks:
    """One `PartitionEngine` (event-time clock + due-time index) per events partition.

    An engine is built when its partition's first event arrives, indexing the states
    that belong to the partition: those recovered from the changelog (Faust's memory
    store records their partition) and those this worker wrote, with the partition's
    stored clock. Revoked partitions are forgotten; if they come back, their engine is
    rebuilt from the recovered tables.
    """

    def __init__(
        self,
        policy: core.Policy,
        table: Any,
        allowed_lateness_ms: int,
        changelog: Changelog,
        clock_table: Any = None,
        clock_changelog: ClockChangelog | None = None,
    ) -> None:
        self._policy = policy
        self._table = table
        self._changelog = changelog
        self._lateness = allowed_lateness_ms
        self._clock_table = clock_table  # None: clocks not kept (unit tests)
        self._clock_changelog = clock_changelog
        self._stored_clock: dict[int, int | None] = {}  # partition -> clock last written
        self._engines: dict[int, PartitionEngine] = {}
        self._partition_of: dict[bytes, int] = {}  # keys written here, by partition
        self._reassess: dict[int, set[str]] = {}  # partition -> brands whose policy changed

    def engine(self, partition: int) -> PartitionEngine:
        engine = self._engines.get(partition)
        if engine is None:
            store = WriteBehind(self._table, partition, self._changelog)
            engine = PartitionEngine(self._policy, store, self._lateness)
            engine.max_event_time = self._stored_clock[partition] = self._restored(partition)
            self._index(partition, engine)
            self._engines[partition] = engine
        return engine

    def _restored(self, partition: int) -> int | None:
        if self._clock_table is None:
            return None
        # Recovered from the changelog by Faust, or written here (`checkpoint`).
        return decode_clock(self._clock_table.data.get(clock_key(partition)))

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

    async def checkpoint(self) -> bool:
        """Write each engine's clock that moved since it was last written; True if any
        was sent. Only once the states of the events behind it are stored (the caller
        drains the producer first), and before those events are acknowledged (it drains
        again): see the module doc."""
        if self._clock_changelog is None:
            return False
        sent = False
        for partition, engine in list(self._engines.items()):
            clock = engine.max_event_time
            if clock is None or clock == self._stored_clock.get(partition):
                continue
            key, value = clock_key(partition), encode_clock(clock)
            self._clock_table.data[key] = value
            await self._clock_changelog(partition, key, value)
            self._stored_clock[partition] = clock
            sent = True
        return sent

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._engines.pop(p, None)
            self._stored_clock.pop(p, None)

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
