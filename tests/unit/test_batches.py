"""Micro-batches of raw messages (agents.batches), delivered by Faust's real conductor, as
the worker's consumer hands it each fetched record; the worker and kill -9 tests run both
agents on them over a broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest
from faust.transport import conductor as faust_conductor
from faust.transport.consumer import ConsumerMessage
from faust.types import TP

from agents.batches import RawTopic, finished_batches
from agents.write_behind import StateWrites

TOPIC = "hot"
TP0 = TP(TOPIC, 0)
RAW = {"key_serializer": "raw", "value_serializer": "raw"}


class Harness:
    """An app whose conductor is subscribed to TOPIC, partition 0, with no broker: what the
    consumer does with each fetched record is done by `deliver`."""

    def __init__(self) -> None:
        self.app = faust.App("test-batches", broker="kafka://localhost:1", store="memory://")
        self.app.flow_control.resume()
        self.stream = self.app.stream(RawTopic(self.app, topics=[TOPIC], **RAW))
        self.offset = 0

    async def subscribe(self) -> None:
        """After every reader has registered its channel, as the worker's subscription does."""
        await asyncio.sleep(0)
        conductor = self.app.topics
        conductor._update_tp_index({TP0})
        await conductor._update_indices()
        self.app.consumer._committed_offset[TP0] = None

    async def deliver(self, n: int, generation: int | None = None) -> list[ConsumerMessage]:
        gen = self.app.consumer_generation_id if generation is None else generation
        sent = []
        for _ in range(n):
            m = ConsumerMessage(
                TOPIC, 0, self.offset, 0.0, 0, [], b"k", b"v%d" % self.offset, None,
                generation_id=gen,
            )  # fmt: skip
            self.offset += 1
            await self.app.topics.on_message(m)
            sent.append(m)
        return sent

    def acked_offsets(self) -> list[int]:
        return sorted(self.app.consumer._acked[TP0])


async def opened(
    h: Harness, size: int, within: float, holding: Any = None
) -> tuple[Any, asyncio.Future[list[Any]]]:
    """`finished_batches` over the harness, subscribed: the generator itself (for tests
    that throw into it) and its first batch, pending."""
    batches = finished_batches(h.stream, size, within, holding)
    first = asyncio.ensure_future(batches.__anext__())  # registers its channel
    await h.subscribe()
    return batches, first


async def started(h: Harness, size: int, within: float) -> AsyncIterator[list[Any]]:
    batches, first = await opened(h, size, within)

    async def rest() -> AsyncIterator[list[Any]]:
        yield await first
        async for batch in batches:
            yield batch

    return rest()


def offsets(batch: list[Any]) -> list[int]:
    return [m.offset for m in batch]


async def test_the_conductor_hands_the_messages_themselves_over_in_batches_in_order() -> None:
    h = Harness()
    batches = await started(h, 3, 5.0)
    sent = await h.deliver(7)
    got = [await batches.__anext__(), await batches.__anext__()]
    assert [offsets(b) for b in got] == [[0, 1, 2], [3, 4, 5]]
    assert got[0][0] is sent[0]  # the Kafka message, no Faust event around it
    assert got[0][0].value == b"v0"


@pytest.mark.parametrize("handler", ["cython", "python"])
async def test_a_plain_topic_of_the_same_name_still_gets_faust_events(
    handler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup agent reads the resolved topic through Faust's own stream. Faust's
    pure-Python delivery (used where its compiled one is not built) hands one decoded
    event to every channel of the same key and value types."""
    if handler == "python":
        monkeypatch.setattr(faust_conductor, "ConductorHandler", None)
    h = Harness()
    plain = h.app.stream(h.app.topic(TOPIC, **RAW))
    plain_events = plain.events().__aiter__()
    first_plain = asyncio.ensure_future(plain_events.__anext__())
    batches = await started(h, 2, 5.0)
    sent = await h.deliver(2)
    assert (await asyncio.wait_for(batches.__anext__(), 5))[0] is sent[0]
    event = await asyncio.wait_for(first_plain, 5)
    assert isinstance(event, faust.Event) and event.message is sent[0]


async def test_a_batch_is_tracked_and_acknowledged_only_once_its_body_is_done() -> None:
    h = Harness()
    batches = await started(h, 2, 5.0)
    sent = await h.deliver(6)
    before = time.monotonic()
    first = await batches.__anext__()
    # stamped when taken, on the clock the processing-latency metric measures against
    assert all(before <= m.time_in <= time.monotonic() for m in first)
    assert set(first) <= h.app.consumer.unacked  # in progress: the commit guard sees it
    assert h.acked_offsets() == []
    second = await batches.__anext__()  # the body of the first is done
    assert h.acked_offsets() == [0, 1]
    assert not set(first) & set(h.app.consumer.unacked)
    assert [m.acked for m in second] == [False, False]
    await batches.__anext__()
    assert h.acked_offsets() == [0, 1, 2, 3]
    assert [m.acked for m in sent] == [True] * 4 + [False] * 2


async def test_a_batch_whose_body_fails_is_never_acknowledged() -> None:
    h = Harness()
    batches = await started(h, 2, 5.0)
    await h.deliver(5)
    taken = []
    with pytest.raises(RuntimeError):
        async for batch in batches:
            taken.append(batch)
            if len(taken) == 2:
                raise RuntimeError("crash mid-batch")
    await batches.aclose()
    assert h.acked_offsets() == [0, 1]
    assert [m.acked for m in taken[1]] == [False, False]  # read again after a restart
    assert set(taken[1]) <= h.app.consumer.unacked  # and the commit stops before it


async def test_a_partial_batch_is_handed_over_after_the_wait() -> None:
    h = Harness()
    batches = await started(h, 100, 0.2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await h.deliver(3)
    batch = await asyncio.wait_for(batches.__anext__(), 5)
    assert offsets(batch) == [0, 1, 2]
    assert loop.time() - start >= 0.19


async def test_messages_fetched_before_a_rebalance_are_left_out_and_never_acknowledged() -> None:
    h = Harness()
    batches = await started(h, 10, 0.05)
    stale = await h.deliver(2, generation=h.app.consumer_generation_id - 1)
    fresh = await h.deliver(2)
    batch = await batches.__anext__()
    assert batch == fresh
    assert all(m.acked for m in stale) and not set(stale) & set(h.app.consumer.unacked)
    await h.deliver(1)
    await batches.__anext__()
    assert h.acked_offsets() == [2, 3]  # the stale ones are not counted as done


async def test_nothing_is_taken_while_flow_is_suspended() -> None:
    """A rebalance suspends flow and clears the buffers; what is taken meanwhile is stale."""
    h = Harness()
    batches = await started(h, 10, 0.05)
    sent = await h.deliver(2)
    h.app.flow_control.suspend()
    pending = asyncio.ensure_future(batches.__anext__())
    await asyncio.sleep(0.2)
    assert not pending.done()
    assert all(m.acked for m in sent) and h.acked_offsets() == []
    pending.cancel()


async def test_batches_end_when_faust_stops_the_channel() -> None:
    """On shutdown Faust throws StopAsyncIteration into every channel: the agent's loop
    ends instead of crashing, and the batch being gathered is left unacknowledged."""
    h = Harness()
    batches = await started(h, 2, 5.0)
    sent = await h.deliver(3)
    await batches.__anext__()
    gathering = asyncio.ensure_future(batches.__anext__())  # has offset 2, waits for more
    await asyncio.sleep(0.05)
    (channel,) = [c for c in h.app.topics if isinstance(c, RawTopic)]
    await channel.throw(StopAsyncIteration())
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(gathering, 5)
    assert h.acked_offsets() == [0, 1]
    assert not sent[2].acked


class Held:
    """A loop body's answer to `finished_batches`: whether it holds the batch it just
    finished (its states not stored yet), as the segmentation agent's StateWrites says."""

    def __init__(self) -> None:
        self.holding = False

    def held(self) -> bool:
        return self.holding

    def due_in(self, now: float) -> float | None:
        return None  # never due by itself: the test says when the work is stored


async def test_held_batches_are_acknowledged_with_the_first_batch_that_stores() -> None:
    h = Harness()
    held = Held()
    batches, first = await opened(h, 2, 5.0, held)
    sent = await h.deliver(6)
    assert offsets(await first) == [0, 1]
    held.holding = True  # the body finished the first batch and holds its states
    assert offsets(await batches.__anext__()) == [2, 3]
    assert h.acked_offsets() == []
    assert set(sent[:2]) <= h.app.consumer.unacked  # the commit guard stops before them
    held.holding = False  # the second batch's body stored everything held
    assert offsets(await batches.__anext__()) == [4, 5]
    assert h.acked_offsets() == [0, 1, 2, 3]
    assert not any(m.acked for m in sent[4:])


async def test_held_batches_whose_later_body_fails_are_never_acknowledged() -> None:
    h = Harness()
    held = Held()
    batches, first = await opened(h, 2, 5.0, held)
    sent = await h.deliver(4)
    await first
    held.holding = True
    await batches.__anext__()
    with pytest.raises(RuntimeError):
        await batches.athrow(RuntimeError("crash before the held states were stored"))
    assert h.acked_offsets() == []
    assert not any(m.acked for m in sent)  # all four are read again after a restart


async def test_held_work_comes_due_without_traffic_as_an_empty_batch() -> None:
    h = Harness()
    writes = StateWrites(0.2)
    batches, first = await opened(h, 10, 0.3, writes)  # due before a batch window is idle
    await h.deliver(3)
    assert offsets(await first) == [0, 1, 2]
    assert writes.hold(time.monotonic())  # the body holds its states
    start = time.monotonic()
    assert await asyncio.wait_for(batches.__anext__(), 5) == []
    assert 0.15 <= time.monotonic() - start < 0.3
    assert h.acked_offsets() == []  # not before the body of the empty batch stored them
    writes.stored()
    await h.deliver(1)
    await asyncio.wait_for(batches.__anext__(), 5)
    assert h.acked_offsets() == [0, 1, 2]


async def test_held_work_is_stored_once_the_input_is_idle_for_a_batch_window() -> None:
    """Holding saves work while messages keep coming; when none comes within a batch
    window, the held work is stored then, long before it is due."""
    h = Harness()
    writes = StateWrites(30.0)
    batches, first = await opened(h, 100, 0.05, writes)
    await h.deliver(3)
    assert offsets(await first) == [0, 1, 2]
    assert writes.hold(time.monotonic())
    start = time.monotonic()
    assert await asyncio.wait_for(batches.__anext__(), 5) == []
    assert time.monotonic() - start < 5.0  # idle after 0.05 s; due only after 30 s
    writes.stored()
    await h.deliver(1)
    await asyncio.wait_for(batches.__anext__(), 5)
    assert h.acked_offsets() == [0, 1, 2]


async def test_held_work_stays_held_while_messages_keep_coming() -> None:
    h = Harness()
    writes = StateWrites(30.0)
    batches, first = await opened(h, 2, 0.2, writes)

    async def trickle() -> None:  # a message every 20 ms: never a batch window idle
        for _ in range(20):
            await h.deliver(1)
            await asyncio.sleep(0.02)

    sending = asyncio.ensure_future(trickle())
    taken = offsets(await first)
    while len(taken) < 20:
        assert writes.hold(time.monotonic())  # every batch's body holds its states
        batch = await asyncio.wait_for(batches.__anext__(), 5)
        assert batch, "an empty batch while messages were coming"
        taken += offsets(batch)
    await sending
    assert h.acked_offsets() == []  # all held: none stored, none acknowledged
    assert taken == list(range(20))


async def test_held_messages_of_an_ended_generation_are_marked_not_acknowledged() -> None:
    """A rebalance between holding and storing: the revoke dropped the held states, and
    the partition is read again from the committed offset; acknowledging them would let
    the commit pass events whose states were never stored."""
    h = Harness()
    held = Held()
    batches, first = await opened(h, 2, 5.0, held)
    old = await h.deliver(2)
    await first
    held.holding = True
    h.app.consumer_generation_id += 1
    new = await h.deliver(2)
    assert await batches.__anext__() == new
    held.holding = False
    await h.deliver(1)
    await batches.__anext__()
    assert all(m.acked for m in old) and not set(old) & set(h.app.consumer.unacked)
    assert h.acked_offsets() == [2, 3]


def test_state_writes_hold_a_batch_until_the_oldest_held_is_due() -> None:
    writes = StateWrites(0.5)
    assert not writes.held() and writes.due_in(10.0) is None
    assert writes.hold(10.0)  # the first batch after a write: held
    assert writes.hold(10.4) and writes.held()  # the clock runs from the oldest held
    assert writes.due_in(10.4) == pytest.approx(0.1)
    assert not writes.hold(10.5)  # due: this batch writes everything held
    writes.stored()
    assert not writes.held() and writes.due_in(11.0) is None
    assert writes.hold(11.0)


def test_state_writes_of_zero_write_after_every_batch() -> None:
    writes = StateWrites(0.0)
    assert not writes.hold(1.0)
    writes.stored()
    assert not writes.held()
