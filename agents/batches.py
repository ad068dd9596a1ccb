"""The hot topics in micro-batches of their Kafka messages, read straight from the buffer
Faust's conductor fills, each batch acknowledged only once its work is done.

Why not Faust's stream (`stream.take_events`): for every message it builds a Faust
`Event` (running the raw key and value "codecs"), turns the event loop once
(`sleep(0)`), calls four sensor hooks, sets the current event and runs the take buffer as
a stream processor: ~10 % of a busy worker's samples, paid twice per event (resolver and
segmentation; docs/benchmarks.md). touchflow's hot topics carry raw bytes that the agents
decode themselves, so none of that is needed. What the stream did that matters is kept
here, once per message: the consumer's tracking of what is in progress (`unacked`, which
the commit guard reads), the rule that a message fetched before a rebalance is not
processed, the time it was taken (`time_in`, which the processing-latency metric reads),
and the acknowledgement after the work is done. Faust's Monitor sensor no longer sees
these messages; touchflow exposes none of its counters.

Flow control, pausing a partition whose buffer is full, and clearing the buffers on a
rebalance stay Faust's. The worker's fetch loop puts each fetched batch of a partition in
the buffer of its `RawTopic` channel at once (agents.bulk_delivery); anywhere else (these
tests, a client-only app) Faust's conductor puts each message there as it would an event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import faust
from faust.types import Message


class RawMessages:
    """Marker key/value type of a RawTopic. Faust's conductor reuses one decoded event for
    every channel of a partition with the same key and value types; this keeps a plain
    topic of the same name (the lookup agent's) from being handed a bare message."""


async def _itself(message: Message, *, propagate: bool = False) -> Message:
    return message


class RawTopic(faust.Topic):  # type: ignore[misc]
    """A topic whose consumers receive its `Message`s as they are: no Faust Event, no key
    or value decoding. Only for reading with `finished_batches`; send through a plain
    `app.topic` of the same name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("key_type", RawMessages)
        kwargs.setdefault("value_type", RawMessages)
        super().__init__(*args, **kwargs)

    def _compile_decode(self) -> None:
        self.decode = _itself


class Holding(Protocol):
    """Whether the loop body stored a batch's work or holds it for a later batch
    (agents.write_behind.StateWrites)."""

    def held(self) -> bool: ...

    def due_in(self, now: float) -> float | None: ...


async def finished_batches(
    stream: Any, size: int, within: float, holding: Holding | None = None
) -> AsyncIterator[list[Message]]:
    """The messages of the agent's `stream` (over a RawTopic) in batches of up to `size`:
    a batch is handed over once it is full or `within` seconds after its first message
    (what `stream.take_events(size, within)` did). Each batch is acknowledged after the
    loop body that got it has finished with it; a body that raises or is cancelled never
    resumes this generator, so its batch stays unacknowledged and is read again.

    With `holding`, a body may finish a batch but hold its work (states not stored yet):
    the batch is then acknowledged together with the first later batch after which
    nothing is held. While work is held and no message comes, an empty batch is handed
    over, so the work is stored without traffic: when `holding.due_in` says it is due,
    or sooner, once no message has come for `within` seconds. Holding saves work while
    messages keep coming; once the input is idle it would only delay the store (and the
    commit, and what a crash must replay).

    Messages fetched before the latest rebalance (an older consumer generation, or taken
    while flow is suspended) are left out and marked acknowledged, so no ack of ours
    reaches the consumer: whoever owns the partition now reads them again from the
    committed offset. So are held messages whose generation ended before they were
    stored: the revoke dropped their held work."""
    app = stream.app
    channel = aiter(stream.channel)  # the iterator channel the conductor delivers to
    queue = channel.queue
    consumer = app.consumer
    unacked = consumer.unacked
    acking_topics = app.topics.acking_topics
    carried: list[Message] = []  # finished, held: acknowledged once stored
    try:
        while True:
            wait = None
            if holding is not None and carried:
                due = holding.due_in(time.monotonic())
                wait = within if due is None else min(due, within)  # due, or idle
            try:
                batch = await _fill(queue, size, within, wait)
            except StopAsyncIteration:  # what Faust throws into its channels on stopping
                return
            current = app.consumer_generation_id if app.flow_control.is_active() else None
            now = time.monotonic()
            taken: list[Message] = []
            for message in batch:
                if message.generation_id != current:
                    message.acked = True
                    continue
                if not message.tracked and message.topic in acking_topics:
                    message.tracked = True  # what Consumer.track_message does, minus sensors
                    unacked.add(message)
                if message.time_in is None:
                    # Taken now: Faust's Monitor sensor stamped this on the stream's take;
                    # the worker's processing-latency metric reads it (pipeline.metrics).
                    message.time_in = now
                taken.append(message)
            if not taken and not carried:
                continue
            yield taken
            if holding is not None and holding.held():
                carried += taken
                continue
            if carried:
                # As for a take above: during a rebalance, no generation is current.
                active = app.flow_control.is_active()
                _settle(carried, consumer, app.consumer_generation_id if active else None)
                carried = []
            for message in taken:
                message.ack(consumer)
    finally:
        channel.on_stop_iteration()


def _settle(held: list[Message], consumer: Any, generation: int | None) -> None:
    """Acknowledge held messages now stored. One of an ended generation (or any, while
    a rebalance runs: `generation` None) is only marked, as one taken before a rebalance
    is: the revoke may have dropped its held work, and its partition is read again from
    the committed offset."""
    unacked = consumer.unacked
    for message in held:
        if message.generation_id == generation:
            message.ack(consumer)
        else:
            message.acked = True
            unacked.discard(message)  # no longer in progress: not for the commit guard


async def _fill(
    queue: Any, size: int, within: float, first_within: float | None = None
) -> list[Message]:
    """Up to `size` messages: the next one, then whatever comes within `within` seconds.
    With `first_within`, none when the first does not come within that many seconds."""
    if first_within is None:
        batch = [await queue.get()]
    elif not queue.empty():  # wait_for with a timeout of 0 would not even look
        batch = take_now(queue, 1)
    else:
        try:
            batch = [await asyncio.wait_for(queue.get(), first_within)]
        except TimeoutError:
            return []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while len(batch) < size:
        if not queue.empty():
            batch += take_now(queue, size - len(batch))
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            batch.append(await asyncio.wait_for(queue.get(), remaining))
        except TimeoutError:
            break
    return batch


def take_now(queue: Any, limit: int) -> list[Message]:
    """Up to `limit` messages already in the buffer (a mode `ThrowableQueue`), taken as that
    many `get_nowait` calls would take them, without their ~7 calls per message (~1.5 % of
    a busy worker's samples, docs/benchmarks.md). An error thrown into the queue is raised
    first. While a partition is paused for a full buffer or a put waits for room (the
    fetch loop waiting), each message is taken as `get_nowait` does: the pressure-drop
    check at the size its get would see (it resumes the partition), then a waiting put
    woken; otherwise the messages are just taken."""
    if queue._errors:
        raise queue._errors.popleft()
    items = queue._queue
    n = min(limit, len(items))
    pending = queue._pending_pressure_drop_callbacks
    putters = queue._putters
    if not (pending or putters):
        return [items.popleft() for _ in range(n)]
    taken = []
    for _ in range(n):
        if pending:
            queue.maybe_endorse_pressure_drop()
        taken.append(items.popleft())
        if putters:
            queue._wakeup_next(putters)
    return taken
