"""The sink on the real broker and chDB: a crash between insert and offset commit, then a
restart that re-reads the same offsets, stores nothing twice; while ClickHouse refuses
inserts the sink holds a bounded batch and fetches nothing more (back-pressure); it
describes a table's columns once, not before every insert; and once caught up it stores a
batch without waiting for the flush age.

Duplicates are counted on the raw table (no FINAL) with merges stopped, so a background
merge of the ReplacingMergeTree cannot hide a duplicate and let the test pass by luck.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from pipeline import metrics
from pipeline.broker import EmbeddedBroker, ensure_topics, free_port
from pipeline.events import Chat, EventType, Purchase, Touchpoint, UserRef
from pipeline.settings import Settings
from sinks import store
from sinks.writer import ClickHouseSink
from tests.integration.helpers import async_wait_until, isolated_settings, publish

pytestmark = pytest.mark.integration


class Crash(Exception):
    """The sink process dying right after its inserts, before the offset commit."""


class CrashBeforeCommit(ClickHouseSink):
    async def _commit(self, consumer: Any, offsets: dict[TopicPartition, int]) -> None:
        raise Crash(offsets)


def events(first: int, count: int) -> list[Touchpoint | bytes]:
    at = int(time.time() * 1000) - 3_600_000
    out: list[Touchpoint | bytes] = []
    for i in range(first, first + count):
        user = UserRef("openid", f"h1:{i:032x}")
        if i % 3 == 0:
            payload: Any = Purchase(f"o-{i}", 1_000 + i)
            etype = EventType.PURCHASE
        else:
            payload, etype = Chat("inbound", "customer"), EventType.CHAT
        out.append(Touchpoint(f"e-{i}", etype, "lumi", "wecom", user, at + i, payload))
    return out


def stored(client: Any) -> tuple[int, int, int]:
    """(raw rows, distinct event ids, rows in active parts) of the events table."""
    raw, distinct = client.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0]
    parts = client.query(
        "SELECT sum(rows) FROM system.parts WHERE database = currentDatabase()"
        " AND table = 'events' AND active"
    ).result_rows[0][0]
    return int(raw), int(distinct), int(parts)


@pytest.fixture
def client(topics: Settings) -> Any:
    store.migrate(topics.resolved_clickhouse_dsn(), topics.clickhouse_database)
    c = store.connect(topics.resolved_clickhouse_dsn(), topics.clickhouse_database)
    c.command("SYSTEM STOP MERGES events")  # duplicates stay visible in the raw count
    yield c
    c.command("SYSTEM START MERGES events")


@asynccontextmanager
async def running(sink: ClickHouseSink) -> AsyncIterator[ClickHouseSink]:
    await sink.start()
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        yield sink
    finally:
        stop.set()
        await task
        sink.close()


async def run_until(sink: ClickHouseSink, done: Any, what: str) -> None:
    async with running(sink):
        await async_wait_until(done, 60, what)


@contextmanager
def events_table_away(client: Any) -> Iterator[Callable[[], None]]:
    """ClickHouse refuses the sink's inserts into `events` (the table is renamed away)
    until the block calls the function it is given, or ends."""
    client.command("RENAME TABLE events TO events_away")

    def back() -> None:
        if client.query("EXISTS TABLE events_away").result_rows == [(1,)]:
            client.command("RENAME TABLE events_away TO events")

    try:
        yield back
    finally:
        back()


def events_insert_failures() -> float:
    return (
        metrics.SINK.get_sample_value("touchflow_sink_insert_failures_total", {"table": "events"})
        or 0.0
    )


async def test_a_crash_between_insert_and_commit_stores_nothing_twice(
    topics: Settings, client: Any
) -> None:
    settings = topics.model_copy(update={"sink_batch_rows": 1_000, "sink_flush_seconds": 0.5})
    await publish(settings, events(0, 30))

    crashing = CrashBeforeCommit(settings, settings.kafka_bootstrap)
    await crashing.start()
    with pytest.raises(Crash) as crashed:
        await asyncio.wait_for(crashing.run(asyncio.Event()), 60)
    crashing.close()
    first_inserted, _, _ = stored(client)
    assert first_inserted > 0, "the crashed sink had stored its batch"
    assert crashed.value.args[0], "offsets it meant to commit"

    # More arrives while it is down: the restarted sink's first fetch reaches further than
    # the crashed batch did, so a token of "whatever the batch holds" would differ.
    await publish(settings, events(30, 20))

    async def all_there() -> bool:
        return stored(client)[1] == 50

    await run_until(ClickHouseSink(settings, settings.kafka_bootstrap), all_there, "50 events")
    raw, distinct, parts = stored(client)
    assert (raw, distinct, parts) == (50, 50, 50)
    assert client.query("SELECT count() FROM events FINAL").result_rows == [(50,)]


async def test_back_pressure_while_inserts_fail(topics: Settings, client: Any) -> None:
    """ClickHouse refuses inserts (the events table is renamed away): the sink keeps one
    batch of at most `sink_batch_rows` messages and fetches nothing more; once the table is
    back it stores everything, once."""
    settings = topics.model_copy(update={"sink_batch_rows": 10, "sink_flush_seconds": 0.2})
    await publish(settings, events(0, 45))
    before = events_insert_failures()

    async def refused_three_times() -> bool:
        return events_insert_failures() - before >= 3

    async def all_there() -> bool:
        return stored(client)[1] == 45

    sink = ClickHouseSink(settings, settings.kafka_bootstrap)
    with events_table_away(client) as bring_back:
        async with running(sink):
            await async_wait_until(refused_three_times, 30, "three refused inserts")
            # Retrying, it holds one bounded batch and has fetched nothing beyond it.
            assert 0 < sink.buffered <= 10
            assert sink.peak_buffered <= 10
            bring_back()
            await async_wait_until(all_there, 60, "45 events after the outage")
    assert stored(client) == (45, 45, 45)
    assert sink.peak_buffered <= 10


def events_parts(client: Any) -> int:
    """Active parts of the events table: with merges stopped, one per stored insert."""
    return int(
        client.query(
            "SELECT count() FROM system.parts WHERE database = currentDatabase()"
            " AND table = 'events' AND active"
        ).result_rows[0][0]
    )


async def test_columns_are_described_once_and_again_after_a_failed_insert(
    topics: Settings, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = topics.model_copy(update={"sink_batch_rows": 10, "sink_flush_seconds": 0.2})
    described: list[str] = []
    real = store.column_types

    def describing(c: Any, table: str, columns: Any) -> Any:
        described.append(table)
        return real(c, table, columns)

    monkeypatch.setattr(store, "column_types", describing)
    await publish(settings, events(0, 30))
    before = events_insert_failures()

    async def stored_30() -> bool:
        return stored(client)[1] == 30

    async def refused() -> bool:
        return events_insert_failures() > before

    async def stored_45() -> bool:
        return stored(client)[1] == 45

    async with running(ClickHouseSink(settings, settings.kafka_bootstrap)):
        await async_wait_until(stored_30, 60, "30 events")
        assert events_parts(client) >= 3, "batches of at most 10: several inserts"
        assert described.count("events") == 1

        # The table goes away and comes back (as a re-created table would): the types
        # held for it are dropped at the failed insert and described again.
        with events_table_away(client) as bring_back:
            await publish(settings, events(30, 15))
            await async_wait_until(refused, 30, "a refused insert")
            bring_back()
            await async_wait_until(stored_45, 60, "45 events after the table came back")
    assert described.count("events") >= 2
    assert stored(client) == (45, 45, 45)


class RefusedFirstCommit(ClickHouseSink):
    """The group refuses the first commit, as Kafka does when a sink stalled past its
    session and its partitions moved on. (Tansu keeps a stalled lone member's generation
    and accepts the commit, so the refusal is injected at the client call.)"""

    refused = False

    async def _commit(self, consumer: Any, offsets: dict[TopicPartition, int]) -> None:
        if self.refused:
            return await super()._commit(consumer, offsets)
        self.refused = True
        real = consumer.commit

        async def refuse(offsets: Any) -> None:
            raise CommitFailedError("the group has already rebalanced")

        consumer.commit = refuse
        try:
            await super()._commit(consumer, offsets)
        finally:
            consumer.commit = real


async def test_a_refused_commit_reads_again_and_stores_nothing_twice(
    topics: Settings, client: Any
) -> None:
    settings = topics.model_copy(update={"sink_batch_rows": 1_000, "sink_flush_seconds": 0.5})
    await publish(settings, events(0, 30))
    sink = RefusedFirstCommit(settings, settings.kafka_bootstrap)

    async def refused() -> bool:
        return sink.commits_refused > 0

    async def all_there() -> bool:
        return stored(client)[1] == 50

    async with running(sink):
        await async_wait_until(refused, 60, "the refused commit")
        await publish(settings, events(30, 20))
        await async_wait_until(all_there, 60, "50 events after the refused commit")
    assert sink.commits_refused == 1
    # The refused batch was read again and inserted under the same tokens: no duplicate.
    assert stored(client) == (50, 50, 50)


async def test_a_sink_started_before_its_broker_waits_for_it(tmp_path: Path, chdb_dsn: str) -> None:
    """The broker comes up 3 s after the sink: the sink keeps trying, then stores."""
    port = free_port()
    settings = isolated_settings(f"127.0.0.1:{port}", chdb_dsn, tmp_path / "var", partitions=2)
    sink = ClickHouseSink(settings, settings.kafka_bootstrap)
    await sink.start()
    client = store.connect(settings.resolved_clickhouse_dsn(), settings.clickhouse_database)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        await asyncio.sleep(3)
        assert not task.done(), "the sink gave up while the broker was away"
        with EmbeddedBroker(port=port, log_file=tmp_path / "broker.log"):
            await ensure_topics(settings.kafka_bootstrap, settings)
            await publish(settings, events(0, 10))

            async def all_there() -> bool:
                return stored(client)[1] == 10

            await async_wait_until(all_there, 60, "10 events")
            stop.set()
            await task
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        sink.close()


@pytest.mark.parametrize("idle_flush", [0.25, 8.0])  # 8 s: longer than the group join
async def test_a_caught_up_sink_stores_its_batch_without_waiting_for_the_flush_age(
    topics: Settings, client: Any, idle_flush: float
) -> None:
    # A flush age no test waits for: only the sink having caught up can store the rows,
    # and not before the batch is `idle_flush` old (the floor on inserts per table).
    settings = topics.model_copy(
        update={
            "sink_batch_rows": 1_000,
            "sink_flush_seconds": 120.0,
            "sink_idle_flush_seconds": idle_flush,
        }
    )
    await publish(settings, events(0, 30))
    batches_before = sink_batches()

    async def stored_30() -> bool:
        return stored(client)[1] == 30

    async with running(ClickHouseSink(settings, settings.kafka_bootstrap)):
        started = time.monotonic()
        await async_wait_until(stored_30, 30, "30 events, long before the flush age")
        assert idle_flush <= time.monotonic() - started < 60
    assert stored(client) == (30, 30, 30)
    assert sink_batches() - batches_before == 1  # the sink caught up once: one batch


def sink_batches() -> float:
    return metrics.SINK.get_sample_value("touchflow_sink_batch_seconds_count") or 0.0
