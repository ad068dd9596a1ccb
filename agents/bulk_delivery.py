"""The fetch loop for touchflow's hot topics: each fetched batch of a partition goes to its
agent's buffer in one step, not one message at a time through Faust's conductor.

Why: after the agents stopped using Faust streams (agents.batches), Faust's per-message
path was what remained of Faust in a busy worker's profile: its fetch loop
(`Consumer._drain_messages`: the round-robin iterator, a high-watermark lookup and a
monitor call, a `Message` built, read-offset and gap checks, a commit check) and its
conductor (a lock, the flow-control and producer-buffer waits, a decode call, the
pressure check, a put that wakes the agent): ~12 % of a worker's samples, plus ~5 % in the
waits under it (docs/benchmarks.md). For a partition whose only reader is a `RawTopic`
(the segmentation agent's sources) none of that is needed per message.

What is kept, per fetched partition batch, in Faust's order: the same filters (a partition
neither active nor buffered for pressure is dropped, and warned about as
agents.commit_guard did; a new consumer generation or a suspended flow ends the fetch's
delivery), the same per-record offset bookkeeping (a record below the read offset is
skipped; a jump over offsets is reported to `_add_gap`, which the commit guard filters;
the read offset moves to each delivered record), the commit-every check, the flow-control
and producer-buffer waits, the buffer-pressure callbacks (so a full buffer pauses its
partition's fetching exactly as before), and the `Message` Faust would build. A batch
larger than the room left in the buffer is put as far as it fits; the rest waits for room
as the conductor's waits did (inside `wait_first` against the flow's suspension, so a
rebalance interrupts it). Every other partition (changelogs, a topic with several
readers, anything while the conductor rebuilds its index) goes through Faust's own
per-message delivery, unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP, Message

from agents.batches import RawTopic
from agents.fetch_partitions import dropped_stream_records
from pipeline import metrics


def admitted(
    offsets: Sequence[int], read_offset: int | None
) -> tuple[Sequence[int], list[tuple[int, int]]]:
    """Which of a partition's fetched records (by `offsets`, ascending) Faust's fetch loop
    delivers, by index, and the gaps it reports, as (first missing, next delivered):
    a record below the read offset is skipped; a jump of more than one offset after a
    nonzero read offset is a gap (Faust's `if gap > 1 and r_offset`); the read offset
    moves to each record delivered."""
    first = offsets[0]
    if offsets[-1] - first == len(offsets) - 1 and (
        read_offset is None or first == read_offset + 1
    ):
        return range(len(offsets)), []  # the usual case: the next offsets, in a row
    kept: list[int] = []
    gaps: list[tuple[int, int]] = []
    last = read_offset
    for i, offset in enumerate(offsets):
        if last is not None and offset < last:
            continue
        if last and offset - last > 1:
            gaps.append((last + 1, offset))
        kept.append(i)
        last = offset
    return kept, gaps


def bulk_channel(conductor: Any, tp: Any) -> Any | None:
    """The one RawTopic channel reading `tp`, or None when its delivery must stay Faust's:
    no channel, several, another kind, or the conductor rebuilding its index."""
    if conductor._tp_to_callback_lock.locked():
        return None
    channels = conductor._tp_index.get(tp)  # .get: the index is a defaultdict
    if not channels or len(channels) != 1:
        return None
    for channel in channels:
        if isinstance(channel, RawTopic):
            return channel
    return None


def room_in(queue: Any) -> int:
    """How many messages the buffer takes now without waiting (none while it refills:
    agents.refilling_queue)."""
    if queue.full():
        return 0
    return int(queue.maxsize - queue.qsize()) if queue.maxsize > 0 else 1 << 30


def put_now(queue: Any, messages: Sequence[Message]) -> None:
    """Append `messages` to the buffer (room checked by the caller) and wake its reader
    once: what `force_put_nowait` does per item."""
    append = queue._queue.append
    for message in messages:
        append(message)
    queue._unfinished_tasks += len(messages)
    queue._finished.clear()
    queue._wakeup_next(queue._getters)


async def put_waiting(queue: Any, messages: Iterable[Message]) -> None:
    """The conductor's slow path: each put waits for room (and for flow control)."""
    for message in messages:
        await queue.put(message)


async def contained(coro: Any) -> None:
    """Run `coro` as a task and wait for it without taking its outcome, as the conductor
    does (`asyncio.wait`): a put cancelled by the buffer being cleared on a rebalance ends
    the delivery, not the fetch loop. Unlike the conductor's, the task is cancelled with
    the wait (a rebalance interrupting it): the rest of the batch is not put later."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.wait([task])
    finally:
        task.cancel()


class BulkDeliveryMixin:
    """For Faust's aiokafka consumer: replaces `_drain_messages` (see the module's doc)."""

    app: Any
    log: Any
    diag: Any
    callback: Any
    suspend_flow: asyncio.Event
    _read_offset: Any
    _buffered_partitions: set[Any]
    _stopped: asyncio.Event
    _commit_every: int | None
    _n_acked: int
    consumer_stopped_errors: tuple[type[BaseException], ...]
    _is_changelog_tp: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pressure: dict[Any, tuple[Any, Any]] = {}

    def _pressure_callbacks(self, tp: Any) -> tuple[Any, Any]:
        """Per-partition callbacks, the same objects every time: the buffer keeps a pending
        drop callback in a set, once per partition."""
        cache = self._pressure
        found = cache.get(tp)
        if found is None:
            # Faust's own TP: a fetch is keyed by aiokafka's TopicPartition (equal, same
            # hash), which Faust's active-partition bookkeeping refuses.
            ftp = TP(tp.topic, tp.partition)
            sensor = self.app.sensors.on_topic_buffer_full
            on_full = self.on_buffer_full  # type: ignore[attr-defined]

            def on_pressure_high() -> None:
                sensor(ftp)
                on_full(ftp)

            found = cache[tp] = (on_pressure_high, partial(self.on_buffer_drop, ftp))  # type: ignore[attr-defined]
        return found

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                await self._deliver_fetch()
                self.diag.unset_flag(CONSUMER_FETCHING)
                await asyncio.sleep(0)  # a fetch served from aiokafka's buffer never waits
        except self.consumer_stopped_errors:
            if self.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver_fetch(self) -> None:
        """One fetch (Faust's `getmany`), delivered a partition at a time."""
        records, active = await self._wait_next_records(1.0)  # type: ignore[attr-defined]
        generation = self.app.consumer_generation_id
        if records is None or self.should_stop:  # type: ignore[attr-defined]
            return
        if not self.flow_active:  # type: ignore[attr-defined]
            # Faust's getmany: fetched while flow is suspended: seek back.
            try:
                await self.perform_seek()  # type: ignore[attr-defined]
            except Exception as exc:
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return
        buffered = self._buffered_partitions
        conductor = self.app.topics
        for tp, batch in records.items():
            if not batch:
                continue
            if not self.flow_active or self.app.consumer_generation_id != generation:  # type: ignore[attr-defined]
                return
            if active is not None and tp not in active and tp not in buffered:
                self._warn_dropped(tp, batch, active)
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))  # type: ignore[attr-defined]
            channel = bulk_channel(conductor, tp)
            if channel is None:
                metrics.fetched(tp.topic, "per_message", len(batch))
                await self._deliver_one_by_one(tp, batch, generation)
            else:
                metrics.fetched(tp.topic, "bulk", len(batch))
                await self._deliver_bulk(tp, batch, channel)

    def _warn_dropped(self, tp: Any, batch: Sequence[Any], active: Any) -> None:
        dropped = dropped_stream_records(
            {tp: batch}, active, self._buffered_partitions, self._is_changelog_tp
        )
        for dtp, (first, last, count) in dropped.items():
            self.log.warning(
                "Fetched %d records of %s (offsets %d..%d) while it was paused, and "
                "dropped them: they will not be processed (agents/fetch_partitions.py)",
                count, dtp, first, last,
            )  # fmt: skip

    async def _commit_if_due(self) -> None:
        """Faust's commit-every check (a commit once `commit_every` messages were acked)."""
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()  # type: ignore[attr-defined]

    async def _report_gaps(self, tp: Any, gaps: Iterable[tuple[int, int]]) -> None:
        if gaps and self.app.topics.acks_enabled_for(tp.topic):
            for offset_from, offset_to in gaps:
                await self._add_gap(tp, offset_from, offset_to)  # type: ignore[attr-defined]

    async def _deliver_one_by_one(self, tp: Any, batch: Sequence[Any], generation: int) -> None:
        """Faust's own loop body, for partitions the bulk path does not serve."""
        to_message = self._to_message  # type: ignore[attr-defined]
        for n, record in enumerate(batch, 1):
            if not self.flow_active or self.app.consumer_generation_id != generation:  # type: ignore[attr-defined]
                return
            if n % 100 == 0:
                await asyncio.sleep(0)
            offset = record.offset
            kept, gaps = admitted((offset,), self._read_offset[tp])
            if not kept:
                continue
            await self._report_gaps(tp, gaps)
            await self._commit_if_due()
            await self.wait_first(self.callback(to_message(tp, record)), self.suspend_flow.wait())  # type: ignore[attr-defined]
            self._read_offset[tp] = offset

    async def _deliver_bulk(self, tp: Any, batch: Sequence[Any], channel: Any) -> None:
        """A partition's fetched batch into `channel`'s buffer (see `_put`)."""
        kept, gaps = admitted([record.offset for record in batch], self._read_offset[tp])
        if not kept:
            return
        if len(kept) < len(batch):
            batch = [batch[i] for i in kept]
        await self._report_gaps(tp, gaps)
        await self._commit_if_due()
        messages = self._messages(tp, batch)
        # As the conductor's delivery: inside `wait_first` against the flow's suspension,
        # so a rebalance (or a stop) interrupts any wait in it; run by hand up to its
        # first wait, without a task, when it has none (agents.fast_delivery).
        await self.wait_first(self._put(tp, messages, channel.queue), self.suspend_flow.wait())  # type: ignore[attr-defined]
        self._read_offset[tp] = messages[-1].offset  # as Faust's loop: delivered or interrupted

    async def _put(self, tp: Any, messages: list[Message], queue: Any) -> None:
        """The conductor's waits (flow control, the producer's buffer), then `messages`
        into the buffer: as many as fit now, the rest as room is made."""
        await self.app.flow_control.acquire()
        await self.app.producer.buffer.wait_until_ebb()
        on_high, on_drop = self._pressure_callbacks(tp)
        fits = min(room_in(queue), len(messages))
        if fits:
            put_now(queue, messages[:fits])
            if queue.in_pressure_high_state(on_drop):
                on_high()
        if fits < len(messages):
            self.app.sensors.on_topic_buffer_full(tp)
            await contained(put_waiting(queue, messages[fits:]))

    def _messages(self, tp: Any, batch: Sequence[Any]) -> list[Message]:
        """The `Message` Faust's fetch loop builds for each record, referenced once (the one
        channel it goes to)."""
        to_message = self._to_message  # type: ignore[attr-defined]
        messages = [to_message(tp, record) for record in batch]
        for message in messages:
            message.refcount = 1  # new, unseen by any other thread: `incref` without its lock
        return messages
