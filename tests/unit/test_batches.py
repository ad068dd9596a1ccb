"""Micro-batches acknowledged only once finished (agents.batches), on a real Faust stream
over an in-memory channel; the worker and kill -9 tests run both agents on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest

from agents.batches import finished_batches


class TopicLikeChannel(faust.Channel):  # type: ignore[misc]
    """A channel whose messages hold one reference per stream, as Faust's conductor gives
    a topic's messages (a channel's own start at none)."""

    async def put(self, value: Any) -> None:
        value.message.incref()
        await super().put(value)


async def stream_of(n: int) -> Any:
    app = faust.App("test-batches", broker="kafka://localhost:1", store="memory://")
    app.flow_control.resume()
    channel = TopicLikeChannel(app)
    stream = channel.stream()
    for i in range(n):
        await channel.send(value=i)
    return stream


def acked(events: list[Any]) -> list[bool]:
    return [e.message.acked for e in events]


async def crash_in_second_batch(stream: Any, batches: AsyncIterator[list[Any]]) -> list[Any]:
    taken: list[Any] = []
    with pytest.raises(RuntimeError):
        async for events in batches:
            taken.append(events)
            if len(taken) == 2:
                raise RuntimeError("crash mid-batch")
    await stream.stop()
    return taken


async def test_a_batch_is_acknowledged_once_its_body_is_done() -> None:
    stream = await stream_of(6)
    taken: list[Any] = []
    async for events in finished_batches(stream, 2, 1.0):
        assert [e.value for e in events] == [2 * len(taken), 2 * len(taken) + 1]
        assert acked(events) == [False, False]  # in the body: not yet
        for earlier in taken:
            assert acked(earlier) == [True, True]
        taken.append(events)
        if len(taken) == 3:
            break
    await stream.stop()


async def test_a_batch_whose_body_fails_stays_unacknowledged_after_the_stream_stops() -> None:
    stream = await stream_of(5)
    first, second = await crash_in_second_batch(stream, finished_batches(stream, 2, 1.0))
    assert acked(first) == [True, True]
    assert acked(second) == [False, False]  # read again after a restart


async def test_plain_take_events_would_acknowledge_it() -> None:
    """Why the helper exists: Faust acknowledges the taken batch when the stream stops."""
    stream = await stream_of(5)
    _, second = await crash_in_second_batch(stream, stream.take_events(2, 1.0))
    assert acked(second) == [True, True]
