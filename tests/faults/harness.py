"""The fault suite's harness: a workload, its reference, a real run, and the comparison.

The reference is the pure engine over the segmentation stage's input *as stored* —
partition by partition, in offset order — which is what one clean worker computes: a
person's changes depend only on their own events in partition order
(docs/segmentation.md). That input is the events topic; with identity resolution, an
event published on its person's partition is applied from there (one hop, with its
origin as the guard against applying it twice), the others from the resolved topic
(forwarded by the resolver, keyed and headed with its person). Each run publishes all
its events one way (`encoded(..., elsewhere=...)`), so a person's events reach the
state by one path, in an order the topics record. The resolver is then checked on its
own: every good event applied or forwarded, none invented, and none applied twice (an
event read or forwarded again after a kill must be dropped). The workload has no
referral credits and, with identity resolution, no identity links: those are the paths
where work crosses partitions at moments no replay can reproduce (merges, credits;
docs/reliability.md).

A run is compared with the reference on:
- segment changes, keyed (brand, person_id, seq): every reference key present, no other
  key, and every copy identical (a repeat of an identical change is the one duplicate
  allowed: consumers drop it by its key);
- the final state of every (brand, person) in the changelog (the state's value, i.e.
  aggregates, derived segments and bookkeeping; not caches).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.identity import PERSON, header, source_of
from pipeline import demo
from pipeline import state as core
from pipeline.codec import Codecs
from pipeline.demo import topic_ends, wait_caught_up
from pipeline.engine import PartitionEngine
from pipeline.errors import Rejected
from pipeline.events import Touchpoint
from pipeline.generator import TrafficGenerator
from pipeline.identity import partition_key, person_id_for
from pipeline.ingest import accept
from pipeline.rfm import MS_PER_DAY
from pipeline.settings import Settings
from tests.integration.helpers import PII_KEY, Worker

ChangeKey = tuple[str, str, int]  # (brand, person_id, seq)
CODECS = Codecs()


def workload(n: int, seed: int = 11, span_days: int = 500, links: bool = True) -> list[Touchpoint]:
    """`n` events of synthetic traffic spread evenly over `span_days` days up to now, so
    time moves customers (at risk, dormant ...) as well as events do. `links=False`: no
    customer turns up on a second channel (no identify events, so no merges)."""
    gen = TrafficGenerator(
        PII_KEY.encode(),
        seed=seed,
        referrals=False,
        second_channel_share=0.01 if links else 0.0,
    )
    start = int(time.time() * 1000) - span_days * MS_PER_DAY
    step = span_days * MS_PER_DAY // n
    return [gen.next_event(start + i * step) for i in range(n)]


def with_duplicates(events: list[Touchpoint], share: float, seed: int) -> list[Touchpoint]:
    """Each event repeated (same event id, right after it) with probability `share`."""
    rng = random.Random(seed)
    out: list[Touchpoint] = []
    for e in events:
        out.append(e)
        if rng.random() < share:
            out.append(e)
    return out


def shuffled_within(events: list[Touchpoint], window_ms: int, seed: int) -> list[Touchpoint]:
    """Arrival order shuffled, no event arriving after one `window_ms` newer than itself:
    sort by event time plus a random delay below the window."""
    rng = random.Random(seed)
    delayed = [(e.occurred_at + rng.randrange(window_ms), i, e) for i, e in enumerate(events)]
    return [e for _, _, e in sorted(delayed)]


async def publish(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    """(key, value) records to the events topic, in order per key, acknowledged by all."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(values), 2000):
            chunk = values[start : start + 2000]
            futures = [await producer.send(settings.events_topic, v, key=k) for k, v in chunk]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


def encoded(events: list[Touchpoint], elsewhere: int | None = None) -> list[tuple[bytes, bytes]]:
    """Records keyed as the SDK keys them; with `elsewhere` (the partition count), keyed
    so that each lands on a partition other than its person's: forwarded, not one hop."""
    if elsewhere is None:
        return [(partition_key(e.user), CODECS.encode_event(e)) for e in events]
    return [(_elsewhere(partition_key(e.user), elsewhere), CODECS.encode_event(e)) for e in events]


def _elsewhere(key: bytes, partitions: int) -> bytes:
    home = partition_of_key(key, partitions)
    keys = (key + b"~%d" % n for n in range(100))
    return next(k for k in keys if partition_of_key(k, partitions) != home)


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic` up to its true end, partition by partition, in offset order."""
    ends = await topic_ends(bootstrap, [topic])
    records: list[Any] = []
    if not ends:
        return records
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        left = {tp for tp, end in ends.items() if end > 0}
        while left:
            for tp, msgs in (await consumer.getmany(*left, timeout_ms=500)).items():
                records.extend(m for m in msgs if m.offset < ends[tp])
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return records


@dataclass
class Outcome:
    """Segment changes (every copy) and the last state per key, as a run left them."""

    changes: dict[ChangeKey, list[core.SegmentChange]] = field(
        default_factory=lambda: defaultdict(list)
    )
    states: dict[bytes, core.PersonState] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)  # the good events (reference only)
    applied: int = 0  # events applied, not dropped as duplicates (reference only)

    @property
    def duplicates(self) -> int:
        return sum(len(copies) - 1 for copies in self.changes.values())


def reference(records: list[Any], settings: Settings) -> Outcome:
    """What one clean worker computes from the stored events (see the module doc):
    `records` of the events topic, or with identity resolution of both the events and
    the resolved topics."""
    policy, limits = settings.policy(), settings.limits()
    states: dict[bytes, core.PersonState] = {}
    engines: dict[int, PartitionEngine] = {}
    out = Outcome()
    now = int(time.time() * 1000)
    for m in records:
        try:
            event = accept(m.value, now, CODECS, limits)
        except Rejected:
            continue  # dead-lettered
        out.event_ids.add(event.event_id)
        engine = engines.get(m.partition)
        if engine is None:
            engine = engines[m.partition] = PartitionEngine(
                policy, states, settings.allowed_lateness_ms
            )
        # As the segmentation agent has it: the resolver's person, else the event's own.
        person_id = header(m, PERSON) or person_id_for(event.user)
        offset, source = m.offset, source_of(m)
        if settings.identity_resolution and m.topic == settings.events_topic:
            if partition_of_key(person_id.encode(), settings.partitions) != m.partition:
                continue  # forwarded: applied from its copy on the resolved topic
            offset, source = -1, (m.partition, m.offset)  # one hop (agents.identity)
        result = engine.on_event(event, person_id, offset, source=source)
        out.applied += not (result.duplicate or result.redelivered)
        for c in result.changes:
            out.changes[(c.brand, c.person_id, c.seq)].append(c)
    out.states = states
    return out


async def collect(settings: Settings) -> Outcome:
    """The changes topic and the state changelog as the workers left them."""
    out = Outcome()
    for r in await read_all(settings.kafka_bootstrap, settings.changes_topic):
        c = CODECS.decode_change(r.value)
        out.changes[(c.brand, c.person_id, c.seq)].append(c)
    for r in await read_all(settings.kafka_bootstrap, settings.changelog_topic):
        if r.value is None:
            out.states.pop(r.key, None)
        else:
            out.states[r.key] = CODECS.decode_state(r.value)
    return out


def differences(ref: Outcome, got: Outcome, limit: int = 15) -> list[str]:
    """What differs between a run and its reference, most telling first (empty: equal)."""
    problems: list[str] = []
    missing = sorted(ref.changes.keys() - got.changes.keys())
    extra = sorted(got.changes.keys() - ref.changes.keys())
    if missing:
        problems.append(f"{len(missing)} changes missing (lost), e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} changes not in the reference, e.g. {extra[:3]}")
    for key, copies in sorted(got.changes.items()):
        expected = ref.changes.get(key)
        if expected and any(c != expected[0] for c in copies):
            problems.append(f"change {key} differs: {copies[0]} != {expected[0]}")
    for key in sorted(ref.states.keys() | got.states.keys()):
        a, b = ref.states.get(key), got.states.get(key)
        if a != b:  # the state's value (its cached due time is not compared)
            problems.append(f"state {key!r} differs:\n  reference {a}\n  run       {b}")
    return problems[:limit]


async def wait_processed(settings: Settings, workers: list[Worker], timeout: float) -> None:
    """Until the workers' group has committed the whole events topic, and then what the
    workers forwarded each other (a worker that died fails this at once, with its log)."""
    ends = await topic_ends(settings.kafka_bootstrap, [settings.events_topic])

    def alive() -> None:
        if not any(w.alive() for w in workers):
            raise AssertionError("every worker died:\n" + workers[-1].log_tail())

    done = await demo.wait_processed(
        settings.kafka_bootstrap, settings, ends, time.monotonic() + timeout, alive
    )
    assert done, f"not processed within {timeout}s:\n" + workers[-1].log_tail()


async def committed(settings: Settings) -> int:
    """Events the workers' group has committed so far (all partitions)."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
        return sum([await reader.committed(tp) or 0 for tp in tps])
    finally:
        await reader.stop()


class Fleet:
    """The workers a test started (the `fleet` fixture stops them all at teardown)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.workers: list[Worker] = []

    def start(self, settings: Settings, name: str) -> Worker:
        w = Worker(settings, self.logs / f"{name}.log").start()
        self.workers.append(w)
        return w

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop()


async def store_differences(
    sink: Any, settings: Settings, ref: Outcome, timeout: float
) -> list[str]:
    """Once the sink has stored every topic to its end: what differs between ClickHouse
    (tables read with FINAL) and the reference."""
    topics = [settings.events_topic, settings.changes_topic, settings.changelog_topic]
    ends = await topic_ends(settings.kafka_bootstrap, topics)
    stored = await wait_caught_up(
        settings.kafka_bootstrap, settings.sink_group, ends, time.monotonic() + timeout
    )
    if not stored:
        return [f"the sink did not store every topic within {timeout}s"]
    problems: list[str] = []
    ((events,),) = await sink.query("SELECT count() FROM events FINAL")
    if events != len(ref.event_ids):
        problems.append(f"events FINAL holds {events} rows, expected {len(ref.event_ids)}")
    rows = await sink.query(
        "SELECT brand, person_id, seq, dimension, from_value, to_value, cause_event_id "
        "FROM segment_changes FINAL"
    )
    got_changes = {(b, p, s): rest for b, p, s, *rest in rows}
    want_changes = {
        k: [c.dimension, c.from_value or "", c.to_value or "", c.cause_event_id]
        for k, (c, *_) in ref.changes.items()
    }
    if len(rows) != len(got_changes):
        problems.append(f"segment_changes FINAL has {len(rows) - len(got_changes)} repeated keys")
    for k in sorted(want_changes.keys() ^ got_changes.keys())[:5]:
        problems.append(f"segment_changes: {k} in one of store/reference only")
    for k in sorted(want_changes.keys() & got_changes.keys()):
        if list(got_changes[k]) != want_changes[k]:
            problems.append(f"segment_changes {k}: {got_changes[k]} != {want_changes[k]}")
    rows = await sink.query(
        "SELECT brand, person_id, version, seq, lifetime_orders, lifetime_amount_minor, "
        "r, f, m, rfm_segment, aipl_stage, lifecycle FROM person_state FINAL"
    )
    got_states = {(b, p): list(rest) for b, p, *rest in rows}
    want_states = {}
    for key, s in ref.states.items():
        brand, person_id = core.split_state_key(key.decode())
        d = s.derived
        want_states[(brand, person_id)] = [
            s.version, s.seq, s.agg.lifetime_orders, s.agg.lifetime_amount_minor,
            d.scores.r, d.scores.f, d.scores.m, d.rfm_segment or "", d.aipl_stage,
            d.lifecycle or "",
        ]  # fmt: skip
    for k in sorted(want_states.keys() ^ got_states.keys())[:5]:
        problems.append(f"person_state: {k} in one of store/reference only")
    for k in sorted(want_states.keys() & got_states.keys()):
        if got_states[k] != want_states[k]:
            problems.append(f"person_state {k}: {got_states[k]} != {want_states[k]}")
    return problems[:15]


def reference_of(events: list[Touchpoint], settings: Settings) -> Outcome:
    """The reference of a clean event list: each partition's events in list order."""

    class Record:
        def __init__(self, partition: int, offset: int, value: bytes) -> None:
            self.partition, self.offset, self.value = partition, offset, value
            self.headers = ()

    offsets: dict[int, int] = defaultdict(int)
    records = []
    for key, value in encoded(events):
        p = partition_of_key(key, settings.partitions)
        records.append(Record(p, offsets[p], value))
        offsets[p] += 1
    return reference(records, settings)


def partition_of_key(key: bytes, partitions: int) -> int:
    """The partition the default (murmur2) partitioner gives a key, as producers do."""
    from aiokafka.partitioner import DefaultPartitioner

    return int(DefaultPartitioner()(key, list(range(partitions)), list(range(partitions))))


def count_late(arriving: list[Touchpoint], settings: Settings) -> int:
    """Events behind their partition's watermark when they arrive (the engine's rule:
    newest event time in the partition so far, minus the allowed lateness)."""
    newest: dict[int, int] = {}
    late = 0
    for e in arriving:
        p = partition_of_key(partition_key(e.user), settings.partitions)
        top = newest.get(p)
        if top is not None and e.occurred_at < top - settings.allowed_lateness_ms:
            late += 1
        newest[p] = max(top or e.occurred_at, e.occurred_at)
    return late
