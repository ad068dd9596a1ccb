"""Offsets Faust may commit: never past an event still to be processed, never stalled by
repeats in its bookkeeping.

Faust (0.15) commits, per partition, the first run of consecutive acknowledged offsets
(`Consumer._new_offset`). It also records "gaps" — offsets it believes were never
delivered (compacted away, transaction markers) — and counts them as acknowledged. A gap
is any jump between the last offset it read and the next message. But its read offset
is also moved back, to the committed offset, by a seek (`perform_seek`, e.g. one that
completes after the stream has resumed, as seen on worker restarts); a message fetched
before that seek then opens a "gap" over offsets that *were* delivered. Seen here:

- offsets already acknowledged counted twice: the run of consecutive offsets ends after
  one or two, and the commit creeps forward one event per commit interval (3 events/s
  for minutes after a restart);
- offsets delivered but not yet processed counted as done: the commit passes them, and a
  kill -9 before they are processed loses them (one lost purchase in a kill -9 test;
  ~200 segment changes once the repeats were dropped).

The guard: a gap never covers an offset delivered before a seek, nor the message that
revealed it (Faust's interval includes it); repeats are dropped; and a commit never
reaches a delivered message that is not acknowledged (Faust tracks those, weakly, in
`_unacked_messages`). The rest — the commit timer, rebalances — stays Faust's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.bulk_delivery import BulkDeliveryMixin
from agents.consumer_tuning import TunedConsumerThread
from agents.fast_delivery import FastDeliveryMixin
from agents.fetch_partitions import fetchable


def next_commit(acked: Iterable[int], committed: int | None, unfinished: int | None) -> int | None:
    """The offset to commit for a partition (the next one to read), or None for no commit.

    `acked`: offsets acknowledged (or counted as gaps) since the last commit, any order,
    repeats allowed. `committed`: the partition's committed offset. `unfinished`: the
    lowest offset at or after `committed` that was delivered but not acknowledged.
    """
    done = sorted(set(acked))
    if not done:
        return None
    start = done[0]
    # Faust's own tolerance: one offset between the committed one and the first
    # acknowledged may be a record never delivered (its gap tracking starts one late).
    if committed is not None and start > committed + 1:
        return None
    end = start
    for offset in done[1:]:
        if offset != end + 1:
            break
        end = offset
    if unfinished is not None:
        end = min(end, unfinished - 1)
        if end < start:
            return None
    return end + 1


def real_gap(offset_from: int, offset_to: int, delivered_before_seek: int | None) -> range:
    """Offsets Faust may count as never delivered when the message at `offset_to` arrives
    after one at `offset_from - 1`: none delivered before a seek, and not `offset_to`."""
    if delivered_before_seek is not None:
        offset_from = max(offset_from, delivered_before_seek + 1)
    return range(offset_from, offset_to)


class GuardedCommitConsumer(BulkDeliveryMixin, FastDeliveryMixin, faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with `real_gap` and `next_commit` deciding commits; the
    hot topics' fetched batches delivered in one step (agents.bulk_delivery), the other
    messages without new tasks when they can be (agents.fast_delivery)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivered_before_seek: dict[Any, int] = {}

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _remember_delivered(self, tps: Iterable[Any] | None = None) -> None:
        for tp, offset in list(self._read_offset.items()):
            if offset is not None and (tps is None or tp in tps):
                seen = self._delivered_before_seek.get(tp)
                self._delivered_before_seek[tp] = offset if seen is None else max(seen, offset)

    async def perform_seek(self) -> None:
        self._remember_delivered()
        await super().perform_seek()

    async def seek(self, partition: Any, offset: int) -> None:
        self._remember_delivered({partition})
        await super().seek(partition, offset)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        # Never Faust's bare set: aiokafka reads an empty one as "every partition".
        return await super()._getmany(fetchable(active_partitions), timeout)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._delivered_before_seek.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        gap = real_gap(offset_from, offset_to, self._delivered_before_seek.get(tp))
        if gap:
            await super()._add_gap(tp, gap.start, gap.stop - 1)  # Faust's end is inclusive

    def _new_offset(self, tp: Any) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        if gaps:  # as Faust does: gaps up to the highest acknowledged offset count as done
            top = max(acked)
            for interval in gaps.overlap(0, top):
                acked.extend(range(interval.begin, interval.end))
            gaps.chop(0, max(acked) + 1)
        committed = self._committed_offset[tp]
        floor = committed or 0
        unfinished = min(
            (
                m.offset
                for m in list(self._unacked_messages)
                if m.tp == tp and not m.acked and m.offset >= floor
            ),
            default=None,
        )
        offset = next_commit(acked, committed, unfinished)
        if offset is None:
            # Drop repeats now, so the list does not grow while the commit waits.
            acked[:] = sorted(set(acked))
            return None
        acked[:] = sorted({o for o in acked if o >= offset})
        index = self._acked_index[tp]
        index.difference_update([o for o in index if o < offset])
        return offset
