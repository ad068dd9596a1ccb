"""Kafka -> ClickHouse sink: batches, deduplication tokens, commit after store.

Reads three topics with its own consumer group: accepted events, segment changes and the
state table's changelog. A batch is flushed when it holds `sink_batch_rows` messages, when
it is `sink_flush_seconds` old, or when a fetch brings nothing new and it is at least
`sink_idle_flush_seconds` old (the sink has caught up); offsets are committed only after
every insert of the batch is stored. The buffer is bounded: a fetch asks for no more than
the room left in the batch, and nothing is fetched while a flush (or its retries) runs,
so the broker keeps the backlog (back-pressure instead of growing or dropping).

Exactly-once into ClickHouse despite at-least-once delivery (docs/storage.md): each insert
holds the rows of *one* source partition's offset span and carries a token naming that
span. Before inserting, the sink records the spans it is about to insert (`sink_intents`);
after a crash between insert and commit, a restarted sink finds the intent that starts at
its committed offset and cuts its first insert of that partition at exactly the same last
offset, so the insert carries the same token and ClickHouse drops it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from pipeline import metrics, rows
from pipeline.codec import Codecs
from pipeline.errors import Rejected
from pipeline.identity import person_id_for
from pipeline.ingest import accept
from pipeline.kafka_security import client_options
from pipeline.schema_registry import registry_for
from pipeline.settings import Settings
from pipeline.state import split_state_key
from sinks import quantiles, store

log = logging.getLogger(__name__)

EVENTS, STATE, CHANGES = "events", "person_state", "segment_changes"
COLUMNS = {EVENTS: rows.EVENT_COLUMNS, STATE: rows.STATE_COLUMNS, CHANGES: rows.CHANGE_COLUMNS}
INTENTS = "sink_intents"
INTENT_COLUMNS = ("consumer_group", "topic", "partition", "first_offset", "last_offset")


def insert_token(table: str, topic: str, partition: int, first: int, last: int) -> str:
    """The deduplication token of the insert of `topic`/`partition` offsets first..last:
    the same span always gives the same token, whatever else the batch held."""
    span = f"{table}|{topic}|{partition}|{first}|{last}"
    return f"{table}:{partition}:{first}-{last}:" + hashlib.sha256(span.encode()).hexdigest()[:16]


@dataclass
class Span:
    """What a batch took from one source partition: offsets first..last and their rows."""

    first: int
    last: int
    rows: list[list[Any]] = field(default_factory=list)
    messages: int = 0


@dataclass
class Batch:
    spans: dict[TopicPartition, Span] = field(default_factory=dict)
    messages: int = 0
    started: float = 0.0

    def add(self, tp: TopicPartition, offset: int, row: list[Any] | None) -> None:
        """Take the message at `offset` (and its row, if it makes one)."""
        if not self.spans:
            self.started = time.monotonic()
        span = self.spans.get(tp)
        if span is None:
            span = self.spans[tp] = Span(offset, offset)
        span.last = offset
        if row is not None:
            span.rows.append(row)
        span.messages += 1
        self.messages += 1

    def commits(self) -> dict[TopicPartition, int]:
        """The offsets to commit once every span is stored: the next one to read."""
        return {tp: span.last + 1 for tp, span in self.spans.items()}

    def hold_back(self, pending: set[TopicPartition]) -> Batch:
        """Take out the spans of `pending` partitions (a replayed span not complete yet: it
        must be inserted whole, as first recorded) and return them as the next batch."""
        held = {tp: self.spans.pop(tp) for tp in pending if tp in self.spans}
        for span in held.values():
            self.messages -= span.messages
        return Batch(held, sum(sp.messages for sp in held.values()), time.monotonic())


def columnar(table_rows: list[list[Any]], width: int) -> list[list[Any]]:
    """Rows -> one list per column: what clickhouse-connect sends without re-pivoting."""
    if not table_rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*table_rows, strict=True)]


def take(msgs: list[Any], cap: int | None) -> tuple[list[Any], bool]:
    """The messages of one fetch the batch may take from a partition: all of them, or with a
    replay cap (the last offset of an intent being re-formed) those up to it. The flag says
    the cap was reached, so the batch must be flushed before that partition goes on."""
    if cap is None:
        return msgs, False
    kept = [m for m in msgs if m.offset <= cap]
    # Reached also when the cap's own offset is gone (compacted away) and later ones came.
    return kept, bool(msgs) and msgs[-1].offset >= cap


class Abandoned(Exception):
    """The sink was stopped while a batch could not be stored; its offsets stay uncommitted."""


class Regrouped(Exception):
    """The group refused a batch's commit: this sink lost its partitions meanwhile (e.g. it
    stalled past its session timeout). The batch is stored; whoever owns the partitions
    now reads it again and inserts it under the same tokens, which inserts nothing twice."""


class ClickHouseSink:
    def __init__(self, settings: Settings, bootstrap: str, codecs: Codecs | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.codecs = codecs or Codecs(registry_for(settings.schema_registry_url))
        self.limits = settings.limits()
        # chDB is one engine per process and not async: every call goes through one thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = None
        self._insert_settings: dict[str, Any] = {}
        # table -> its columns' types, described once (see _insert_now)
        self._column_types: dict[str, list[Any]] = {}
        self._quantiles: asyncio.Task[None] | None = None  # the thresholds schedule, if on
        self._stop_metrics: Any = None  # stops the /metrics server, if sink_metrics_port
        # topic -> (table, message -> row or None)
        self._route = {
            settings.events_topic: (EVENTS, self._event_row),
            settings.changes_topic: (CHANGES, self._change_row),
            settings.changelog_topic: (STATE, self._state_row),
        }
        self._next: dict[TopicPartition, int] = {}  # next offset expected per partition
        self._caps: dict[TopicPartition, int] = {}  # replay: cut this partition's span here
        self._stop = asyncio.Event()
        self.buffered = 0  # messages held in the current batch (never > sink_batch_rows)
        self.peak_buffered = 0
        self.commits_refused = 0  # batches read again after the group moved on (Regrouped)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def start(self) -> None:
        dsn, db = self.settings.resolved_clickhouse_dsn(), self.settings.clickhouse_database
        await self._call(store.migrate, dsn, db)
        self._client = await self._call(store.connect, dsn, db)
        self._insert_settings = await self._call(store.insert_settings, self._client)
        metrics.sink_tables(COLUMNS)
        if self.settings.sink_metrics_port:
            self._stop_metrics = metrics.serve(metrics.SINK, self.settings.sink_metrics_port)

    # -- decoding ------------------------------------------------------------------------

    def _event_row(self, msg: Any) -> list[Any] | None:
        try:
            e = accept(msg.value, int(time.time() * 1000), self.codecs, self.limits)
        except Rejected:
            return None  # the worker dead-letters it; nothing to store
        return rows.event_row(e, person_id_for(e.user), msg.partition, msg.offset)

    def _change_row(self, msg: Any) -> list[Any] | None:
        return rows.change_row(self.codecs.decode_change(msg.value))

    def _state_row(self, msg: Any) -> list[Any] | None:
        if msg.value is None:
            return None  # tombstone: a deleted key; the store keeps the last state
        brand, person_id = split_state_key(msg.key.decode())
        return rows.state_row(brand, person_id, self.codecs.decode_state(msg.value))

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self._stop = stop
        if s.rfm_quantile_brands and s.rfm_quantiles_every_seconds > 0:
            self._quantiles = asyncio.create_task(quantiles.refresh_every(self.query, s, stop))
        consumer = await self._connect(stop)
        if consumer is None:
            return  # stopped before the broker answered
        batch = Batch()
        try:
            while not stop.is_set():
                # Bounded buffer: fetch at most the room left; a full batch is flushed below.
                # (At least 1: a replayed span held back may fill a batch made smaller since.)
                room = max(1, s.sink_batch_rows - batch.messages)
                fetched = await consumer.getmany(timeout_ms=200, max_records=room)
                capped = False
                for tp, msgs in fetched.items():
                    capped |= await self._take(batch, consumer, tp, msgs)
                self.buffered = batch.messages
                self.peak_buffered = max(self.peak_buffered, batch.messages)
                full = batch.messages >= s.sink_batch_rows
                age = time.monotonic() - batch.started
                due = batch.spans and age >= s.sink_flush_seconds
                # Caught up: a whole fetch wait brought nothing, so waiting out the flush age
                # would only delay the rows. The floor keeps it to a few inserts per second
                # per table when traffic comes in short bursts.
                idle = batch.spans and not fetched and age >= s.sink_idle_flush_seconds
                if full or due or idle or capped:
                    try:
                        batch = await self._flush(batch, consumer)
                    except Regrouped as refused:
                        batch = await self._start_over(consumer, refused)
                    self.buffered = batch.messages
            if batch.spans:
                await self._flush(batch, consumer)
        except Regrouped as refused:
            log.warning("last commit refused (%s): left for the partitions' owner", refused)
        except Abandoned as gave_up:
            log.warning("%s: %d messages left for the next start", gave_up, batch.messages)
        finally:
            await consumer.stop()

    def new_consumer(self) -> AIOKafkaConsumer:
        """The sink's consumer, not started (inside a running loop: aiokafka needs one).
        Its fetch wait is the worker's (`Settings.consumer_fetch_max_wait_ms`): on Tansu,
        which holds every fetch for its whole wait, aiokafka's 500 ms default would add up
        to half a second before rows reach ClickHouse."""
        s = self.settings
        return AIOKafkaConsumer(
            *self._route,
            bootstrap_servers=self.bootstrap,
            group_id=s.sink_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5_000,
            fetch_max_wait_ms=s.consumer_fetch_max_wait_ms,
            **client_options(s),
        )

    async def _connect(self, stop: asyncio.Event) -> AIOKafkaConsumer | None:
        """The sink's consumer, started; while the broker cannot be reached (not up yet,
        or the process was too busy to finish connecting in time) it tries again."""
        delay = 0.5
        while not stop.is_set():
            consumer = self.new_consumer()
            try:
                await consumer.start()
                return consumer
            except KafkaConnectionError as exc:
                await consumer.stop()
                log.warning("broker not reachable (%s); trying again in %.1fs", exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, 30.0)
        return None

    async def _take(
        self, batch: Batch, consumer: AIOKafkaConsumer, tp: TopicPartition, msgs: list[Any]
    ) -> bool:
        """Add one partition's fetched messages to the batch; True when a replayed span is
        complete (the batch must be flushed now)."""
        if not msgs:
            return False
        expected = self._next.get(tp)
        if expected is None or msgs[0].offset < expected:  # (re)started: an intent to re-form?
            await self._find_intent(tp, msgs[0].offset, batch)
        to_row = self._route[tp.topic][1]
        cap = self._caps.get(tp)
        kept, reached = take(msgs, cap)
        for msg in kept:
            batch.add(tp, msg.offset, to_row(msg))
        if reached:
            assert cap is not None
            del self._caps[tp]
            consumer.seek(tp, cap + 1)  # what lay beyond comes again, in the next batch
            self._next[tp] = cap + 1
        elif kept:
            self._next[tp] = kept[-1].offset + 1
        return reached

    async def _find_intent(self, tp: TopicPartition, offset: int, batch: Batch) -> None:
        """A span recorded as about to be inserted that `offset` falls in: re-form it."""
        found = await self._retry(
            INTENTS,
            self.query,
            f"SELECT first_offset, last_offset FROM {INTENTS} FINAL"
            " WHERE consumer_group = {g:String} AND topic = {t:String}"
            " AND partition = {p:UInt32} AND first_offset <= {o:UInt64}"
            " AND last_offset >= {o:UInt64} ORDER BY first_offset DESC LIMIT 1",
            {"g": self.settings.sink_group, "t": tp.topic, "p": tp.partition, "o": offset},
        )
        self._caps.pop(tp, None)
        if tp in batch.spans:  # a rebalance handed back a partition mid-batch: start afresh
            log.warning("%s/%d restarts at %d inside a batch", tp.topic, tp.partition, offset)
        if found:
            first, last = int(found[0][0]), int(found[0][1])
            log.info("re-forming %s/%d offsets %d-%d after a restart", *tp, first, last)
            self._caps[tp] = last
            # The token names the recorded span, even if compaction removed its first offsets.
            batch.spans[tp] = Span(first, first)
            if not batch.started:
                batch.started = time.monotonic()

    async def _flush(self, batch: Batch, consumer: AIOKafkaConsumer) -> Batch:
        """Store and commit the batch; returns the next one (replayed spans held back)."""
        following = batch.hold_back(set(self._caps))
        if batch.spans:
            await self._store(batch, consumer)
        return following

    async def _store(self, batch: Batch, consumer: AIOKafkaConsumer) -> None:
        started = time.monotonic()
        group = self.settings.sink_group
        intents = [
            [group, tp.topic, tp.partition, sp.first, sp.last] for tp, sp in batch.spans.items()
        ]
        await self._insert_with_retry(INTENTS, intents, INTENT_COLUMNS, None)
        for tp, span in sorted(batch.spans.items()):
            if span.rows:
                table = self._route[tp.topic][0]
                token = insert_token(table, tp.topic, tp.partition, span.first, span.last)
                await self._insert_with_retry(table, span.rows, COLUMNS[table], token)
                metrics.sink_stored(table, len(span.rows))
        # Commit exactly what this batch consumed, after it is stored.
        await self._commit(consumer, batch.commits())
        metrics.sink_batch_done(time.monotonic() - started)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            raise Regrouped(str(exc)) from exc

    async def _start_over(self, consumer: AIOKafkaConsumer, refused: Regrouped) -> Batch:
        """After a refused commit: drop what is buffered and read every assigned partition
        again from its committed offset (re-forming recorded spans, see `_find_intent`)."""
        log.warning("commit refused (%s): reading again from the committed offsets", refused)
        self.commits_refused += 1
        self._next.clear()
        self._caps.clear()
        for tp in consumer.assignment():
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        return Batch()

    async def _insert_with_retry(
        self, table: str, table_rows: list[list[Any]], columns: tuple[str, ...], token: str | None
    ) -> None:
        settings = dict(self._insert_settings)
        if token is not None:
            settings["insert_deduplication_token"] = token
        data = columnar(table_rows, len(columns))
        await self._retry(table, self._call, self._insert_now, table, data, columns, settings)

    def _insert_now(
        self, table: str, data: list[list[Any]], columns: tuple[str, ...], settings: dict[str, Any]
    ) -> None:
        """One insert, in the ClickHouse thread. The table's column types are described
        once and reused, which halves the statements per insert (one round trip fewer per
        insert on a server); after a failed insert they are described again, in case the
        table was altered or re-created meanwhile."""
        types = self._column_types.get(table)
        if types is None:
            types = self._column_types[table] = store.column_types(self._client, table, columns)
        try:
            self._client.insert(
                table,
                data,
                column_names=columns,
                column_types=types,
                column_oriented=True,
                settings=settings,
            )
        except Exception:
            del self._column_types[table]
            raise

    async def _retry(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call until it succeeds, backing off; meanwhile nothing more is fetched. Asked to
        stop meanwhile, it gives the batch up: not committed, it is read again next time."""
        delay = 0.2
        while True:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:  # any store error: keep the batch, back off, try again
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                metrics.sink_insert_failed(what)
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    raise Abandoned(f"stopped while retrying {what}") from exc
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)
                metrics.sink_insert_retried(what)

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        result = await self._call(self._client.query, sql, parameters=parameters)
        return list(result.result_rows)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._stop_metrics is not None:
            self._stop_metrics()
