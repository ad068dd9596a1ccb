"""Kafka -> ClickHouse sink: columnar-ish batches, dedup tokens, commit after store.

Reads three topics with its own consumer group: accepted events, segment changes and the
state table's changelog. A batch is flushed when it holds `sink_batch_rows` rows or is
`sink_flush_seconds` old; offsets are committed only after every table of the batch is
stored. While a flush is retrying nothing more is fetched, so memory stays bounded and the
broker keeps the backlog (back-pressure instead of dropping).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import metrics
from pipeline.codec import Codecs
from pipeline.errors import Rejected
from pipeline.identity import person_id_for
from pipeline.ingest import accept
from pipeline.kafka_security import client_options
from pipeline.schema_registry import registry_for
from pipeline.settings import Settings
from pipeline.state import split_state_key
from sinks import quantiles, rows, store

log = logging.getLogger(__name__)

EVENTS, STATE, CHANGES = "events", "person_state", "segment_changes"
COLUMNS = {EVENTS: rows.EVENT_COLUMNS, STATE: rows.STATE_COLUMNS, CHANGES: rows.CHANGE_COLUMNS}


@dataclass
class _Batch:
    rows: dict[str, list[list[Any]]] = field(default_factory=lambda: defaultdict(list))
    # (topic, partition) -> (first offset, last offset) consumed into this batch
    spans: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    started: float = 0.0

    def note(self, tp: TopicPartition, first: int, last: int) -> None:
        if not self.spans:
            self.started = time.monotonic()
        lo, _ = self.spans.get(tp, (first, last))
        self.spans[tp] = (lo, last)

    def token(self, table: str) -> str:
        """Same source offsets -> same token, so ClickHouse drops a retried insert."""
        span = ",".join(
            f"{tp.topic}/{tp.partition}:{a}-{b}" for tp, (a, b) in sorted(self.spans.items())
        )
        return f"{table}:" + hashlib.sha256(span.encode()).hexdigest()[:32]


class ClickHouseSink:
    def __init__(self, settings: Settings, bootstrap: str, codecs: Codecs | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.codecs = codecs or Codecs(registry_for(settings.schema_registry_url))
        self.limits = settings.limits()
        # chDB is one engine per process and not async: every call goes through one thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = None
        self._quantiles: asyncio.Task[None] | None = None  # the thresholds schedule, if on
        self._stop_metrics: Any = None  # stops the /metrics server, if sink_metrics_port
        self._route = {
            settings.events_topic: self._event_rows,
            settings.changes_topic: self._change_rows,
            settings.changelog_topic: self._state_rows,
        }

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def start(self) -> None:
        dsn, db = self.settings.resolved_clickhouse_dsn(), self.settings.clickhouse_database
        await self._call(store.migrate, dsn, db)
        self._client = await self._call(store.connect, dsn, db)
        metrics.sink_tables(COLUMNS)
        if self.settings.sink_metrics_port:
            self._stop_metrics = metrics.serve(metrics.SINK, self.settings.sink_metrics_port)

    # -- decoding ------------------------------------------------------------------------

    def _event_rows(self, batch: _Batch, msg: Any) -> None:
        try:
            e = accept(msg.value, int(time.time() * 1000), self.codecs, self.limits)
        except Rejected:
            return  # the worker dead-letters it; nothing to store
        batch.rows[EVENTS].append(
            rows.event_row(e, person_id_for(e.user), msg.partition, msg.offset)
        )

    def _change_rows(self, batch: _Batch, msg: Any) -> None:
        batch.rows[CHANGES].append(rows.change_row(self.codecs.decode_change(msg.value)))

    def _state_rows(self, batch: _Batch, msg: Any) -> None:
        if msg.value is None:
            return  # tombstone: a deleted key; the store keeps the last state
        brand, person_id = split_state_key(msg.key.decode())
        batch.rows[STATE].append(
            rows.state_row(brand, person_id, self.codecs.decode_state(msg.value))
        )

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        if s.rfm_quantile_brands and s.rfm_quantiles_every_seconds > 0:
            self._quantiles = asyncio.create_task(quantiles.refresh_every(self.query, s, stop))
        consumer = AIOKafkaConsumer(
            *self._route,
            bootstrap_servers=self.bootstrap,
            group_id=s.sink_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5_000,
            **client_options(s),
        )
        await consumer.start()
        batch = _Batch()
        try:
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=200, max_records=s.sink_batch_rows)
                for tp, msgs in fetched.items():
                    route = self._route[tp.topic]
                    for msg in msgs:
                        route(batch, msg)
                    batch.note(tp, msgs[0].offset, msgs[-1].offset)
                full = sum(len(r) for r in batch.rows.values()) >= s.sink_batch_rows
                due = batch.spans and time.monotonic() - batch.started >= s.sink_flush_seconds
                if full or due:
                    await self._flush(batch, consumer)
                    batch = _Batch()
            if batch.spans:
                await self._flush(batch, consumer)
        finally:
            await consumer.stop()

    async def _flush(self, batch: _Batch, consumer: AIOKafkaConsumer) -> None:
        started = time.monotonic()
        for table, table_rows in batch.rows.items():
            if table_rows:
                await self._insert_with_retry(table, table_rows, batch.token(table))
                metrics.sink_stored(table, len(table_rows))
        # Commit exactly what this batch consumed, after it is stored.
        await consumer.commit({tp: last + 1 for tp, (_, last) in batch.spans.items()})
        metrics.sink_batch_done(time.monotonic() - started)

    async def _insert_with_retry(self, table: str, table_rows: list[list[Any]], token: str) -> None:
        delay = 0.2
        while True:
            try:
                await self._call(
                    self._client.insert,
                    table,
                    table_rows,
                    column_names=COLUMNS[table],
                    settings={"insert_deduplication_token": token},
                )
                return
            except Exception as exc:  # any store error: keep the batch, back off, try again
                log.warning("insert into %s failed (%s); retrying in %.1fs", table, exc, delay)
                metrics.sink_insert_failed(table)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                metrics.sink_insert_retried(table)

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        result = await self._call(self._client.query, sql, parameters=parameters)
        return list(result.result_rows)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._stop_metrics is not None:
            self._stop_metrics()
