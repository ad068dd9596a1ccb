"""The engines' view of the state table: reads go to the table, a batch's writes wait.

Why: a state in the changelog marks its events as applied (a redelivered event at or
below `last_offset` is skipped), so the segment changes those events produced must be
acknowledged by the broker *before* the state reaches the changelog. Otherwise a crash
between the two would lose the changes for good. The segmentation agent therefore sends
a batch's changes, waits for the broker, and only then writes the batch's states
(`flush`); a crash before that replays the batch from the same states and re-sends the
same changes with the same (person, seq) — a duplicate consumers drop, never a gap.

Writing once per flush also means a person touched many times before it is encoded and
sent to the changelog once. The agent flushes once the held states are
`worker_state_write_seconds` old, not after every batch (`StateWrites` below).

The changelog records are sent raw (`agents.raw_send`), as Faust's `send_changelog` would
produce them (the key's bytes, the state's Avro; the same partition), without its
per-record path (a FutureMessage through Faust's producer buffer and its sending task:
~5 % of a busy worker's samples, docs/benchmarks.md). That path's one extra, the offset
bookkeeping of a RocksDB store, does not apply: the table is in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from pipeline.state import PersonState

_DELETED = None


Changelog = Callable[[int, bytes, PersonState | None], Awaitable[Any]]


class WriteBehind(MutableMapping[bytes, PersonState]):
    """One events partition's writes to a Faust table, held until `flush`."""

    def __init__(self, table: Any, partition: int, changelog: Changelog) -> None:
        self.table = table
        self.partition = partition  # the changelog partition of every key written here
        self._changelog = changelog  # sends (partition, key, state or None: deleted)
        self._pending: dict[bytes, PersonState | None] = {}

    def __getitem__(self, key: bytes) -> PersonState:
        if key in self._pending:
            value = self._pending[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        found: PersonState = self.table.data[key]  # the store itself: no Faust event needed
        return found

    def __setitem__(self, key: bytes, value: PersonState) -> None:
        self._pending[key] = value

    def __delitem__(self, key: bytes) -> None:
        self[key]  # KeyError when absent, like a dict
        self._pending[key] = _DELETED

    def __iter__(self) -> Iterator[bytes]:
        for key in self.table.data:
            if self._pending.get(key, True) is not _DELETED:
                yield key
        for key, value in self._pending.items():
            if value is not _DELETED and key not in self.table.data:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write the held states to the table and queue their changelog records (the
        producer sends them; the caller flushes the producer before acknowledging)."""
        data = self.table.data
        pending, self._pending = self._pending, {}
        for key, value in pending.items():
            if value is _DELETED:
                data.pop(key, None)
            else:
                data[key] = value
            await self._changelog(self.partition, key, value)


class StateWrites:
    """When the segmentation agent writes its held states: once they are `every` seconds
    old, not after every batch.

    Why: a batch's segment changes go out at once (that is the latency operators see),
    but its states only mark its events as applied. Writing them once per interval
    instead of once per micro-batch encodes and sends a busy person once per interval,
    and spares the batches in between two waits for the broker (states, then clocks).
    The order that makes a crash safe is unchanged: the held batches' events are
    acknowledged only once their states are stored (agents.batches), so a crash replays
    them from the states before, as it replayed one batch.

    The cost: up to `every` seconds more to replay after a crash or a rebalance, and the
    state table (changelog, lookups, ClickHouse's `person_state`) that much behind the
    segment changes, while traffic flows: once no message has come for a batch window,
    `agents.batches` hands the agent an empty batch, which stores what is held. 0 writes
    after every batch.
    """

    def __init__(self, every: float) -> None:
        self.every = every
        self._since: float | None = None  # when the oldest batch not yet stored completed

    def hold(self, now: float) -> bool:
        """A batch has sent its changes: True when its states may wait for a later batch."""
        if self._since is None:
            self._since = now
        return now - self._since < self.every

    def stored(self) -> None:
        self._since = None

    def held(self) -> bool:
        """Some batch's states are not stored: its events must not be acknowledged yet."""
        return self._since is not None

    def due_in(self, now: float) -> float | None:
        """Seconds until the held states must be written (None: nothing held)."""
        if self._since is None:
            return None
        return max(0.0, self._since + self.every - now)
