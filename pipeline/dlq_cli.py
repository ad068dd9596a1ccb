"""`touchflow dlq`: what the workers dead-lettered and why, and replay once the cause is fixed.

Records carry Kafka Connect's error headers plus `touchflow.reason` (written by
`agents.segmentation.dead_letter_headers`). Listing never prints record values: a
`raw_pii` reject holds personal data in clear. Replay re-publishes the original key and
bytes to the topic named in `__connect.errors.topic`, and keeps a bookmark per reason
(consumer group `<app_id>-dlq-replay.<reason>`) so a record is replayed at most once,
whatever the order of `--reason` filters used.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.kafka_security import client_options
from pipeline.sdk import started
from pipeline.settings import Settings

SOURCE_TOPIC = "__connect.errors.topic"
REPLAYED_FROM = "touchflow.replayed-from"
COLUMNS = [
    "dlq_partition", "dlq_offset", "time", "reason", "source_topic", "source_partition",
    "source_offset", "bytes", "message",
]  # fmt: skip
ERRORS = (KafkaError, ValueError)  # what the command reports as exit code 2


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ record: where it sits, its original key and bytes, and its headers."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers.get("touchflow.reason", "unknown")

    def row(self) -> list[Any]:
        h = self.headers
        return [
            self.partition,
            self.offset,
            datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(timespec="seconds"),
            self.reason,
            h.get(SOURCE_TOPIC, ""),
            h.get("__connect.errors.partition", ""),
            h.get("__connect.errors.offset", ""),
            len(self.value or b""),
            h.get("__connect.errors.exception.message", ""),
        ]


def _check(settings: Settings) -> None:
    if settings.embedded_broker:
        raise ValueError("set TOUCHFLOW_KAFKA_BOOTSTRAP to the broker that holds the DLQ")


async def read_to_end(settings: Settings, topic: str) -> tuple[list[Any], dict[int, int]]:
    """Every record of `topic` (aiokafka ConsumerRecords), and where each partition ended."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
    )
    await started(consumer)
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return [], {}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        # Read to the reported end, then on until a fetch comes back empty: some brokers
        # (Tansu) report less than the true log end (see agents.broker_compat).
        while True:
            fetched = await consumer.getmany(timeout_ms=500)
            for msgs in fetched.values():
                records.extend(msgs)
            if not fetched and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                break
        return records, {tp.partition: await consumer.position(tp) for tp in tps}
    finally:
        await consumer.stop()


async def read_all(settings: Settings) -> tuple[list[DeadLetter], dict[int, int]]:
    """Every record of the DLQ topic, and the offset each partition was read up to."""
    records, read_to = await read_to_end(settings, settings.dlq_topic)
    return [_dead_letter(m) for m in records], read_to


def _dead_letter(m: Any) -> DeadLetter:
    headers = {k: v.decode(errors="replace") for k, v in m.headers or ()}
    return DeadLetter(m.partition, m.offset, m.timestamp, m.key, m.value, headers)


async def listing(
    settings: Settings, limit: int, reason: str | None
) -> tuple[list[str], list[list[Any]]]:
    """The newest `limit` dead letters (optionally of one reason) as table rows."""
    _check(settings)
    records, _ = await read_all(settings)
    chosen = [r for r in records if reason is None or r.reason == reason]
    chosen.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    return COLUMNS, [r.row() for r in chosen[-limit:]] if limit > 0 else []


def bookmark_group(settings: Settings, reason: str) -> str:
    return f"{settings.app_id}-dlq-replay.{reason}"


async def replay(settings: Settings, reason: str | None) -> dict[str, Any]:
    """Re-publish every not yet replayed dead letter (of one reason, or all) to its source."""
    _check(settings)
    records, read_to = await read_all(settings)
    reasons = sorted({r.reason for r in records if reason is None or r.reason == reason})
    tps = [TopicPartition(settings.dlq_topic, p) for p in read_to]
    bookmarks = {why: await _bookmarks(settings, why, tps) for why in reasons}
    todo = [
        r for r in records if r.reason in bookmarks and r.offset >= bookmarks[r.reason][r.partition]
    ]
    no_source = [r for r in todo if not r.headers.get(SOURCE_TOPIC)]
    sent: dict[str, int] = {}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, **client_options(settings), acks="all"
    )
    await started(producer)
    try:
        futures = []
        for r in todo:
            if r in no_source:
                continue
            origin = f"{settings.dlq_topic}:{r.partition}:{r.offset}".encode()
            futures.append(
                await producer.send(
                    r.headers[SOURCE_TOPIC], r.value, key=r.key, headers=[(REPLAYED_FROM, origin)]
                )
            )
            sent[r.reason] = sent.get(r.reason, 0) + 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    for why in reasons:  # only after every send was acknowledged: at least once
        await _commit(settings, why, {tp: read_to[tp.partition] for tp in tps})
    return {"replayed": sum(sent.values()), "by_reason": sent, "no_source_topic": len(no_source)}


@asynccontextmanager
async def _bookmark_reader(settings: Settings, reason: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of the reason's bookmark group that only reads and commits its offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        **client_options(settings),
        group_id=bookmark_group(settings, reason),
        enable_auto_commit=False,
    )
    await started(consumer)
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _bookmarks(settings: Settings, reason: str, tps: list[TopicPartition]) -> dict[int, int]:
    async with _bookmark_reader(settings, reason) as consumer:
        return {tp.partition: await consumer.committed(tp) or 0 for tp in tps}


async def _commit(settings: Settings, reason: str, offsets: dict[TopicPartition, int]) -> None:
    async with _bookmark_reader(settings, reason) as consumer:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
