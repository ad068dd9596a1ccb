"""Sends of already-serialised records straight to the app's aiokafka producer.

Why: `faust.Topic.send` wraps every record in a FutureMessage and a PendingMessage, runs
the sensors, formats a debug line and goes through Faust's producer before reaching
aiokafka — about half the cost of a send in the worker's profile (docs/benchmarks.md).
The hot sends (each event's resolved copy, each segment change, each referral credit,
each state written to the changelog) carry bytes with no Faust schema, so they skip that
layer.

Nothing changes for delivery: the records go to the same aiokafka producer, so Faust's
`producer.flush()` (called by the agents before a batch is acknowledged, and by the
consumer before it commits offsets) waits for them like for any other send. Keys are
partitioned by aiokafka's default partitioner, as Faust's sends are.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

Headers = list[tuple[str, bytes]]


async def send_raw(
    app: Any,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None = None,
    partition: int | None = None,
) -> asyncio.Future[Any]:
    """Queue one record on the producer (on `partition`, or the key's); returns the future
    of its delivery."""
    producer = app.producer._ensure_producer()  # the running AIOKafkaProducer
    try:
        future: asyncio.Future[Any] = await producer.send(
            topic, value, key=key, headers=headers or None, partition=partition
        )
    except KafkaError as exc:  # as Faust's producer reports it
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    return future


async def send_to_changelog(
    app: Any, table: Any, partition: int, key: bytes, value: bytes | None
) -> None:
    """One record of `table`'s changelog, on `partition`, as Faust's `send_changelog`
    would write it for a raw key and value (None: the key deleted)."""
    topic = table.changelog_topic.get_topic_name()
    await send_raw(app, topic, key, value, partition=partition)
