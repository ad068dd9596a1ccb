"""Stream buffers that refill in large steps (agents.refilling_queue), on real asyncio and
mode flow control; the worker and fault tests run them inside Faust."""

from __future__ import annotations

import asyncio
import random
from functools import partial

import pytest
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from agents.batches import take_now
from agents.refilling_queue import RefillingQueue
from pipeline.app import create_app
from pipeline.settings import Settings


def queue_of(maxsize: int, cls: type[ThrowableQueue] = RefillingQueue) -> ThrowableQueue:
    flow = FlowControlEvent(initially_suspended=False)
    return cls(maxsize=maxsize, flow_control=flow, clear_on_resume=True)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def filled(q: ThrowableQueue) -> asyncio.Task[None]:
    """`q` filled to its size, and a put waiting on it."""
    for i in range(q.maxsize):
        await q.put(i)
    waiting = asyncio.ensure_future(q.put(-1))
    await settle()
    assert not waiting.done()
    return waiting


async def test_a_full_queue_takes_the_next_put_only_once_drained_to_the_resume_mark() -> None:
    q = queue_of(10)
    assert q.pressure_drop_size == 4
    waiting = await filled(q)
    putter = q._putters[0]
    for taken in range(6):  # 10 -> 4
        assert q.get_nowait() == taken
        left = q.qsize()
        await settle()
        if left > 4:
            assert not waiting.done(), f"put taken with {left} queued"
            # not woken to find the queue full and wait again: the same waiter all along
            assert list(q._putters) == [putter] and not putter.done()
    assert waiting.done()
    assert q.qsize() == 5
    # now it takes puts without waiting until full again
    for i in range(5):
        await asyncio.wait_for(q.put(100 + i), 1)
    assert q.full()


async def test_a_plain_throwable_queue_takes_it_after_one_item() -> None:
    """What RefillingQueue changes: mode's queue lets the waiting put in per item taken."""
    q = queue_of(10, ThrowableQueue)
    waiting = await filled(q)
    q.get_nowait()
    await settle()
    assert waiting.done()


async def test_below_full_nothing_waits_and_an_unbounded_queue_is_never_full() -> None:
    q = queue_of(10)
    for i in range(9):
        assert not q.full()
        await asyncio.wait_for(q.put(i), 1)
    unbounded = queue_of(0)
    for i in range(50_000):
        unbounded.put_nowait(i)
    assert not unbounded.full()


async def test_every_item_arrives_once_in_order_with_a_slow_taker() -> None:
    q = queue_of(16)
    n = 2_000
    rng = random.Random(5)

    async def produce() -> None:
        for i in range(n):
            await q.put(i)

    async def consume() -> list[int]:
        got = []
        while len(got) < n:
            got.append(await q.get())
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        return got

    _, got = await asyncio.wait_for(asyncio.gather(produce(), consume()), 30)
    assert got == list(range(n))
    assert q.empty()


async def test_clearing_on_a_rebalance_cancels_the_waiting_put_and_starts_afresh() -> None:
    q = queue_of(10)
    waiting = await filled(q)
    flow = q._flow_control
    flow.suspend()  # as Faust does around a rebalance: resuming clears the queue
    flow.resume()
    await settle()
    assert waiting.cancelled()
    assert not q.full()
    for i in range(10):
        await asyncio.wait_for(q.put(i), 1)
    assert q.full()


async def test_the_app_gives_every_stream_buffer_and_the_changelog_buffer_one() -> None:
    app = create_app(Settings(), "localhost:9092")
    topic = app.topic("anything", value_serializer="raw")
    assert isinstance(topic.queue, RefillingQueue)
    assert isinstance(app.tables.changelog_queue, RefillingQueue)
    assert topic.queue.maxsize == app.conf.stream_buffer_maxsize


async def taking_trace(cls: type[ThrowableQueue], take: object, paused: bool) -> list[object]:
    """What taking in chunks does to a full queue with three partitions paused for pressure
    and three puts waiting: per chunk, the items, how many partitions were paused and
    resumed so far, the size, and how many waiting puts got in; then who was resumed."""
    q = queue_of(20, cls)
    calls: list[str] = []
    high = partial(calls.append, "high")
    drops = [partial(calls.append, f"resume {p}") for p in range(3)]
    for i in range(20):
        if paused:
            q.put_nowait_enhanced(i, on_pressure_high=high, on_pressure_drop=drops[i % 3])
        else:  # puts waiting, no partition paused
            q.put_nowait(i)
    waiting = [asyncio.ensure_future(q.put(100 + j)) for j in range(3)]
    await settle()
    trace: list[object] = []
    for n in (5, 1, 7, 10, 4):
        items = take(q, n)  # type: ignore[operator]
        await settle()
        # counted: which paused partition a resume picks is a set's pop (hash order)
        highs = calls.count("high")
        trace.append((items, highs, len(calls) - highs, q.qsize(), sum(w.done() for w in waiting)))
    trace.append(sorted(set(calls)))
    return trace


@pytest.mark.parametrize("cls", [RefillingQueue, ThrowableQueue])
@pytest.mark.parametrize("paused", [True, False])
async def test_take_now_takes_what_as_many_get_nowait_calls_would(
    cls: type[ThrowableQueue], paused: bool
) -> None:
    def one_by_one(q: ThrowableQueue, n: int) -> list[object]:
        return [q.get_nowait() for _ in range(min(n, q.qsize()))]

    expected = await taking_trace(cls, one_by_one, paused)
    assert await taking_trace(cls, take_now, paused) == expected
    # the trace exercises what it claims: partitions paused and resumed, puts let in
    assert expected[-2][4] == 3
    if paused:
        assert expected[-2][1:3] == (3, 3)
        assert expected[-1] == ["high", "resume 0", "resume 1", "resume 2"]


async def test_take_now_raises_what_was_thrown_into_the_queue_first() -> None:
    q = queue_of(10)
    q.put_nowait(1)
    await q.throw(RuntimeError("stop"))
    with pytest.raises(RuntimeError, match="stop"):
        take_now(q, 5)
    assert take_now(q, 5) == [1]
