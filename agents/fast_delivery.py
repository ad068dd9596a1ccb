"""Handing each fetched message to its streams without four new tasks per message.

Why: Faust's fetch loop (`Consumer._drain_messages`) delivers every message with
`await self.wait_first(callback(message), self.suspend_flow.wait())`. mode's `wait_first`
wraps the delivery, the flow-suspension wait and the service's stopped and crashed events
in four tasks, waits for the first to finish and cancels the others: ~60-100 µs per
message here, while the delivery itself (decode, a put on a stream queue with room)
usually finishes without ever waiting. touchflow consumes each event twice (events ->
resolver -> resolved -> segmentation), so it paid that twice per event.

The fast path runs the delivery by hand up to its first suspension. If it finishes there
(the usual case), its result is returned as `wait_first` would. If it has to wait (a full
stream queue, a contended lock), the started delivery continues as a task under mode's
`wait_first`, as before, so a suspended flow, a stop or a crash still interrupts it. The
fast path is taken only when none of those is set, and only for that one call shape.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Coroutine, Generator
from typing import Any

from mode.services import WaitResults

_EVENT_WAIT = asyncio.Event.wait.__code__


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """The rest of `coro`, which was started by hand and is suspended on `waiting_on`:
    PEP 380's `yield from`, entered after the first step. asyncio's task always resumes a
    coroutine with None, or throws into it (cancellation)."""
    while True:
        try:
            yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # thrown in by the task (cancellation): pass it on
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting_on = coro.send(None)
            except StopIteration as stop:
                return stop.value


async def _continue(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    return await _resume(coro, waiting_on)


def is_delivery_race(coros: tuple[Any, ...], suspend_flow: asyncio.Event) -> bool:
    """The fetch loop's call: a delivery coroutine against `suspend_flow.wait()`."""
    if len(coros) != 2 or suspend_flow.is_set():
        return False
    delivery, flow = coros
    return (
        isinstance(delivery, types.CoroutineType)
        and isinstance(flow, types.CoroutineType)
        and flow.cr_code is _EVENT_WAIT
        and inspect.getcoroutinestate(delivery) == inspect.CORO_CREATED
    )


class FastDeliveryMixin:
    """For a mode Service with a `suspend_flow` event (Faust's consumer)."""

    suspend_flow: asyncio.Event
    _stopped: asyncio.Event
    _crashed: asyncio.Event

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if (
            timeout is not None
            or self._stopped.is_set()
            or self._crashed.is_set()
            or not is_delivery_race(coros, self.suspend_flow)
        ):
            return await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc,no-any-return]
        delivery, flow = coros
        try:
            waiting_on = delivery.send(None)
        except StopIteration as done:
            flow.close()
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            flow.close()
            raise
        rest = _continue(delivery, waiting_on)
        return await super().wait_first(rest, flow, timeout=timeout)  # type: ignore[misc,no-any-return]
