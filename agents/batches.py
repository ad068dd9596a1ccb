"""A Faust stream in micro-batches, each acknowledged only once its work is done."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


async def finished_batches(stream: Any, size: int, within: float) -> AsyncIterator[list[Any]]:
    """`stream.take_events(size, within)`, each batch acknowledged after the loop body that
    got it has finished with it.

    take_events acknowledges a batch's events when the next batch is taken, and also when
    the stream stops, finished or not. One more reference on each message, dropped only
    when the body is done, keeps an unfinished batch (a crash or a stop mid-batch)
    unacknowledged, so it is read again. A body that raises never resumes this generator,
    so its batch is never acknowledged here."""
    async for events in stream.take_events(size, within):
        for event in events:
            event.message.incref()
        yield events
        for event in events:
            event.ack()
