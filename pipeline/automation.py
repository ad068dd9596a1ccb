"""Act on segment changes: a small consumer library for automations (see docs/automations.md).

    consumer = ChangeConsumer(settings, group="winback", filters=Filter(dimensions={"lifecycle"},
                              to_values={"at_risk"}))
    await consumer.run(handler)          # async def handler(change: SegmentChange) -> None

What it guarantees: at-least-once delivery with offsets committed only after the handler
returned (or the change was dead-lettered); repeats dropped by (brand, person_id, seq) with
the highest handled seq per (brand, person) kept in a SQLite file in the consumer's state
dir, so redeliveries after a restart are dropped too; a person's changes handled in order
(one person = one partition, each partition in offset order); a failing handler retried with
exponential back-off, then the change goes to the consumer's dead-letter topic with the
reason and the partition moves on. Plain aiokafka, no Faust: an automation is a tiny program.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError, TopicAlreadyExistsError

from pipeline import metrics
from pipeline.codec import Codecs
from pipeline.errors import Rejected
from pipeline.kafka_security import client_options
from pipeline.sdk import started
from pipeline.settings import Settings
from pipeline.state import SegmentChange

log = logging.getLogger(__name__)

Handler = Callable[[SegmentChange], Awaitable[None]]
TagChange = Literal["added", "removed"]
# Dimensions a segment change can have (pipeline.state); layers are "layer:<name>".
DIMENSIONS = ("rfm_segment", "aipl_stage", "lifecycle", "tag", "identity")
FILTER_KEYS = ("brands", "dimensions", "to", "from", "tags", "tag_change")


class FilterError(ValueError):
    """A filter that cannot be built; the message names where it is and what is wrong."""


# -- filters (pure) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filter:
    """Which changes a consumer wants. Every criterion given must hold; within one, any of
    the listed values. Empty = no condition. A tag change is from=null,to=tag (added) or
    from=tag,to=null (removed): `tags` names the tag, `tag_change` which of the two."""

    brands: frozenset[str] = frozenset()
    dimensions: frozenset[str] = frozenset()
    to_values: frozenset[str] = frozenset()  # the target segment / stage / tag
    from_values: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    tag_change: TagChange | None = None

    def matches(self, c: SegmentChange) -> bool:
        if self.brands and c.brand not in self.brands:
            return False
        if self.dimensions and c.dimension not in self.dimensions:
            return False
        if self.to_values and c.to_value not in self.to_values:
            return False
        if self.from_values and c.from_value not in self.from_values:
            return False
        if self.tags or self.tag_change:
            if c.dimension != "tag":
                return False
            added = c.from_value is None
            tag = c.to_value if added else c.from_value
            if self.tags and tag not in self.tags:
                return False
            if self.tag_change is not None and self.tag_change != ("added" if added else "removed"):
                return False
        return True

    @classmethod
    def from_spec(cls, spec: Any, where: str = "filters") -> Filter:
        """A filter from YAML data `{brands: [..], dimensions: [..], to: [..], from: [..],
        tags: [..], tag_change: added|removed}`; FilterError names any mistake exactly."""
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise FilterError(f"{where}: expected a mapping of {list(FILTER_KEYS)}, got {spec!r}")
        unknown = set(spec) - set(FILTER_KEYS)
        if unknown:
            raise FilterError(
                f"{where}: unknown keys {sorted(unknown)}; expected {list(FILTER_KEYS)}"
            )
        lists = {k: _strings(spec.get(k), f"{where}.{k}") for k in FILTER_KEYS[:5]}
        for d in sorted(lists["dimensions"]):
            if d not in DIMENSIONS and not (d.startswith("layer:") and len(d) > 6):
                raise FilterError(
                    f"{where}.dimensions: unknown dimension {d!r}; use {list(DIMENSIONS)} "
                    "or layer:<name>"
                )
        tag_change = spec.get("tag_change")
        if tag_change not in (None, "added", "removed"):
            raise FilterError(f"{where}.tag_change: expected added or removed, got {tag_change!r}")
        if (lists["tags"] or tag_change) and lists["dimensions"] - {"tag"}:
            raise FilterError(f"{where}: tags / tag_change only match dimension tag")
        return cls(
            brands=lists["brands"],
            dimensions=lists["dimensions"],
            to_values=lists["to"],
            from_values=lists["from"],
            tags=lists["tags"],
            tag_change=tag_change,
        )


def _strings(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not value:
        raise FilterError(f"{where}: expected a non-empty list of strings, got {value!r}")
    for v in value:
        if not isinstance(v, str) or not v:
            raise FilterError(f"{where}: expected non-empty strings, got {v!r}")
    return frozenset(value)


def idempotency_key(c: SegmentChange) -> str:
    """One change's identity (the worker may send a change twice, never two different ones
    with one key): give it to side-effect services that can drop repeats themselves."""
    return f"{c.brand}:{c.person_id}:{c.seq}"


# -- retries (pure) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off: wait initial * multiplier^(n-1) after the n-th failure, capped."""

    initial_seconds: float = 0.5
    multiplier: float = 2.0
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.initial_seconds < 0 or self.multiplier < 1 or self.max_seconds < 0:
            raise ValueError("back-off needs initial_seconds >= 0, multiplier >= 1, max >= 0")

    def delay(self, failures: int) -> float:
        if failures < 1:
            return 0.0
        return float(
            min(self.max_seconds, self.initial_seconds * self.multiplier ** (failures - 1))
        )


class Permanent(Exception):
    """Raised by a handler for a change that no retry can fix: dead-lettered at once."""


class DeadLetterReason(StrEnum):
    RETRIES_EXHAUSTED = "retries_exhausted"  # the handler failed max_attempts times
    REJECTED = "rejected"  # the handler raised Permanent
    # Undecodable records use the codec's reason (pipeline.errors.Reason): bad_magic, ...


# -- the dedup store -----------------------------------------------------------------------


class HandledStore:
    """Highest seq handled per (brand, person), in SQLite: survives restarts of the consumer.

    A change with seq <= the stored one was handled (or dead-lettered) already. seq has no
    gaps and a person's changes arrive in order, so one number per person is enough."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS handled (brand TEXT NOT NULL, person_id TEXT NOT NULL, "
            "seq INTEGER NOT NULL, PRIMARY KEY (brand, person_id))"
        )
        self._db.commit()

    def seen(self, c: SegmentChange) -> bool:
        row = self._db.execute(
            "SELECT seq FROM handled WHERE brand = ? AND person_id = ?", (c.brand, c.person_id)
        ).fetchone()
        return row is not None and c.seq <= int(row[0])

    def mark(self, c: SegmentChange) -> None:
        self._db.execute(
            "INSERT INTO handled (brand, person_id, seq) VALUES (?, ?, ?) "
            "ON CONFLICT (brand, person_id) DO UPDATE SET seq = max(seq, excluded.seq)",
            (c.brand, c.person_id, c.seq),
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()


# -- the consumer --------------------------------------------------------------------------


def dead_letter_headers(
    record: Any, consumer: str, reason: str, error: str, attempts: int, error_class: str
) -> list[tuple[str, bytes]]:
    """Kafka Connect's DLQ headers (as pipeline.dlq_cli reads them), plus touchflow's."""
    return [
        ("__connect.errors.topic", record.topic.encode()),
        ("__connect.errors.partition", str(record.partition).encode()),
        ("__connect.errors.offset", str(record.offset).encode()),
        ("__connect.errors.exception.class.name", error_class.encode()),
        ("__connect.errors.exception.message", error.encode()[:1000]),
        ("touchflow.reason", reason.encode()),
        ("touchflow.consumer", consumer.encode()),
        ("touchflow.attempts", str(attempts).encode()),
    ]


@dataclass
class ChangeConsumer:
    """Subscribe `group` to the changes topic; hand matching changes to a handler."""

    settings: Settings
    group: str
    filters: Filter = field(default_factory=Filter)
    dlq_topic: str = ""  # "" = "<group>.dlq"
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    state_dir: Path | None = None  # None = <data_dir>/automations
    start_from: Literal["earliest", "latest"] = "latest"  # for a group with no commit yet
    name: str = ""  # metric label; "" = group
    # Extra AIOKafkaConsumer options, e.g. {"session_timeout_ms": 6000}.
    kafka_options: Mapping[str, Any] = field(default_factory=dict)
    _consumer: Any = field(default=None, init=False, repr=False)
    _producer: Any = field(default=None, init=False, repr=False)
    _store: HandledStore | None = field(default=None, init=False, repr=False)
    _handler: Handler | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.dlq_topic = self.dlq_topic or f"{self.group}.dlq"
        self.name = self.name or self.group
        self._codecs = Codecs()
        self._m = metrics.automation_consumer(self.name)

    def handler(self, fn: Handler) -> Handler:
        """Decorator form: `@consumer.handler async def on_change(change): ...`."""
        self._handler = fn
        return fn

    @property
    def store_path(self) -> Path:
        base = self.state_dir or self.settings.data_dir / "automations"
        return base / f"{self.group.replace('/', '_')}.sqlite3"

    async def start(self) -> None:
        s = self.settings
        await ensure_topic(s, self.dlq_topic)
        self._store = HandledStore(self.store_path)
        self._producer = await started(
            AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, **client_options(s), acks="all")
        )
        self._consumer = await started(self.new_consumer())

    def new_consumer(self) -> AIOKafkaConsumer:
        """The runner's consumer, not started (inside a running loop: aiokafka needs one).
        Its fetch wait is the worker's unless `kafka_options` names one: on Tansu, which
        holds every fetch for its whole wait, aiokafka's 500 ms default would add up to
        half a second between a segment change and its automation."""
        s = self.settings
        options = {"fetch_max_wait_ms": s.consumer_fetch_max_wait_ms, **self.kafka_options}
        return AIOKafkaConsumer(
            s.changes_topic,
            bootstrap_servers=s.kafka_bootstrap,
            **client_options(s),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self.start_from,
            **options,
        )

    async def stop(self) -> None:
        """Leave the group without committing anything not yet committed."""
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()
        self._consumer = self._producer = None
        if self._store is not None:
            self._store.close()
            self._store = None

    async def run(self, handler: Handler | None = None, stop: asyncio.Event | None = None) -> None:
        """Consume until `stop` is set (or the task is cancelled)."""
        fn = handler or self._handler
        if fn is None:
            raise ValueError("no handler: pass one to run() or decorate it with @handler")
        stop = stop or asyncio.Event()
        await self.start()
        try:
            while not stop.is_set():
                await self.poll(fn)
        finally:
            await self.stop()

    def assignment(self) -> set[TopicPartition]:
        """The changes-topic partitions this instance holds now (empty before it joined)."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    async def poll(self, handler: Handler, timeout_ms: int = 500) -> int:
        """One fetch: every partition's records in order (partitions side by side), then
        one commit of what was done. Returns the number of records processed."""
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        if not batches:
            return 0
        await asyncio.gather(*(self._partition(rs, handler) for rs in batches.values()))
        try:
            await self._commit({tp: rs[-1].offset + 1 for tp, rs in batches.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced meanwhile: whoever owns the partitions now gets these
            # records again; on this instance the handled-seq store drops them.
            log.warning("%s: commit after a rebalance failed (%r); records will come again",
                        self.name, exc)  # fmt: skip
        return sum(len(rs) for rs in batches.values())

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self._consumer.commit(offsets)

    async def _partition(self, records: Iterable[Any], handler: Handler) -> None:
        for record in records:
            await self._one(record, handler)

    async def _one(self, record: Any, handler: Handler) -> None:
        assert self._store is not None
        try:
            change = self._codecs.decode_change(record.value or b"")
        except Rejected as rejected:
            await self._dead_letter(record, rejected.reason.value, rejected.message, 1, "Rejected")
            return
        if not self.filters.matches(change):
            self._m.filtered.inc()
            return
        if self._store.seen(change):
            self._m.duplicate.inc()
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                await handler(change)
            except Permanent as exc:
                await self._dead_letter(record, DeadLetterReason.REJECTED, str(exc), attempt, exc)
                break
            except Exception as exc:  # any handler failure is retried, then dead-lettered
                self._m.failure.inc()
                if attempt >= self.max_attempts:
                    reason = DeadLetterReason.RETRIES_EXHAUSTED
                    await self._dead_letter(record, reason, str(exc) or repr(exc), attempt, exc)
                    break
                log.warning("%s: attempt %d failed: %r", self.name, attempt, exc)
                await asyncio.sleep(self.backoff.delay(attempt))
            else:
                self._m.handled.inc()
                break
        self._store.mark(change)

    async def _dead_letter(
        self, record: Any, reason: str, error: str, attempts: int, exc: BaseException | str
    ) -> None:
        error_class = exc if isinstance(exc, str) else type(exc).__name__
        headers = dead_letter_headers(record, self.name, reason, error, attempts, error_class)
        await self._producer.send_and_wait(
            self.dlq_topic, record.value, key=record.key, headers=headers
        )
        self._m.dead_lettered.inc()


async def ensure_topic(settings: Settings, topic: str) -> None:
    """Create `topic` (the changes topic's partition count) unless it exists."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **client_options(settings)
    )
    await admin.start()
    try:
        if topic not in set(await admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):  # another instance won the race
                await admin.create_topics(
                    [NewTopic(topic, settings.partitions, settings.replication_factor)]
                )
    finally:
        await admin.close()
