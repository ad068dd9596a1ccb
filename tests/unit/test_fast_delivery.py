"""Delivering a fetched message without new tasks (agents.fast_delivery), on a real mode
Service and real asyncio queues; the worker tests run it inside Faust's fetch loop."""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from mode import Service

from agents.fast_delivery import FastDeliveryMixin


class Fetcher(FastDeliveryMixin, Service):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    service = Fetcher()
    await service.start()
    yield service
    await service.stop()


def tasks_created(loop: asyncio.AbstractEventLoop) -> list[Any]:
    created: list[Any] = []
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        created.append(coro)
        if factory is not None:
            return factory(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    return created


async def put_on(queue: asyncio.Queue[int], value: int) -> int:
    await queue.put(value)
    return value


async def test_a_delivery_that_need_not_wait_runs_inline_without_tasks(fetcher: Fetcher) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=10)
    loop = asyncio.get_running_loop()
    created = tasks_created(loop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. "coroutine ... was never awaited"
            result = await fetcher.wait_first(put_on(queue, 7), fetcher.suspend_flow.wait())
            gc.collect()
    finally:
        loop.set_task_factory(None)
    assert result.results == [7] and not result.stopped
    assert queue.get_nowait() == 7
    assert created == []


async def test_a_delivery_that_waits_finishes_once_the_queue_has_room(fetcher: Fetcher) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(1)

    async def consume_later() -> None:
        await asyncio.sleep(0.05)
        assert queue.get_nowait() == 1

    consumer = asyncio.create_task(consume_later())
    result = await fetcher.wait_first(put_on(queue, 2), fetcher.suspend_flow.wait())
    await consumer
    assert result.results == [2]
    assert queue.get_nowait() == 2


async def test_a_suspended_flow_still_interrupts_a_waiting_delivery(fetcher: Fetcher) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(1)
    asyncio.get_running_loop().call_later(0.05, fetcher.suspend_flow.set)
    result = await fetcher.wait_first(put_on(queue, 2), fetcher.suspend_flow.wait())
    assert result.results == [True]  # the flow's wait won; the put was cancelled
    await asyncio.sleep(0.01)
    assert queue.qsize() == 1 and queue.get_nowait() == 1


async def test_errors_of_a_delivery_reach_the_fetch_loop(fetcher: Fetcher) -> None:
    async def fails_at_once() -> None:
        raise ValueError("undecodable")

    async def fails_after_waiting() -> None:
        await asyncio.sleep(0.01)
        raise KeyError("gone")

    with pytest.raises(ValueError, match="undecodable"):
        await fetcher.wait_first(fails_at_once(), fetcher.suspend_flow.wait())
    with pytest.raises(KeyError, match="gone"):
        await fetcher.wait_first(fails_after_waiting(), fetcher.suspend_flow.wait())


async def test_a_stopping_service_takes_modes_own_path(fetcher: Fetcher) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=10)
    fetcher._stopped.set()
    result = await fetcher.wait_first(put_on(queue, 3), fetcher.suspend_flow.wait())
    assert result.stopped  # as mode answers a wait on a stopped service


async def test_other_waits_are_left_to_mode(fetcher: Fetcher) -> None:
    other = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, other.set)
    result = await fetcher.wait_first(other.wait(), asyncio.sleep(5))
    assert result.results == [True]


def test_faust_still_delivers_each_message_with_the_call_it_speeds_up() -> None:
    """The fast path matches this call shape only; should Faust change it, the fast path
    would silently stop applying (slower, not wrong)."""
    source = inspect.getsource(Consumer._drain_messages)
    assert "self.wait_first(\n" in source or "self.wait_first(" in source
    assert "callback(message), self.suspend_flow.wait()" in source
