"""The segmentation agent: touchpoint in -> per-person state -> segment changes out.

Thin adapter: decoding, contract checks and every decision live in `pipeline`; here we only
read the message, hand it to its partition's engine (over the Faust table), and send what
comes back: segment changes, referral credits for other partitions, dead letters. With
identity resolution, merges and forwarding are handled by `agents.identity`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any

import faust
from faust.serializers.codecs import Codec

from agents import identity, thresholds
from agents.batches import RawTopic, finished_batches
from agents.partition_clocks import PartitionClocks
from agents.raw_send import send_raw, send_to_changelog
from agents.write_behind import StateWrites
from pipeline import metrics
from pipeline.codec import Codecs
from pipeline.engine import Outcome
from pipeline.errors import Rejected
from pipeline.events import Touchpoint
from pipeline.identity import person_id_for
from pipeline.ingest import accept
from pipeline.settings import Settings

log = logging.getLogger(__name__)

TABLE_NAME = "person_state"  # Settings.changelog_topic derives the changelog name from it
CLOCK_TABLE_NAME = "partition_clock"  # partition -> its max event time (ASCII ms)


class StateCodec(Codec):  # type: ignore[misc]
    """Table values are PersonState objects in memory and Avro (wire format) in the changelog."""

    def __init__(self, codecs: Codecs) -> None:
        super().__init__()
        self._codecs = codecs

    def _dumps(self, obj: Any) -> bytes:
        return self._codecs.encode_state(obj)

    def _loads(self, s: bytes) -> Any:
        return self._codecs.decode_state(s)


def state_value_type(codecs: Codecs) -> type:
    """A `value_type` for faust.Table: Faust takes the codec from `_options.serializer`
    and rebuilds values with `from_data`; ours are already PersonState objects."""

    class PersonStateValue:
        _options = SimpleNamespace(serializer=StateCodec(codecs))

        @classmethod
        def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
            return data

    return PersonStateValue


def dead_letter_headers(message: Any, rejected: Rejected) -> list[tuple[str, bytes]]:
    """Kafka Connect's DLQ header convention, plus touchflow's reason code."""
    return [
        ("__connect.errors.topic", message.topic.encode()),
        ("__connect.errors.partition", str(message.partition).encode()),
        ("__connect.errors.offset", str(message.offset).encode()),
        ("__connect.errors.exception.class.name", b"touchflow.Rejected"),
        ("__connect.errors.exception.message", rejected.message.encode()[:1000]),
        ("touchflow.reason", rejected.reason.value.encode()),
    ]


@dataclass
class Segmentation:
    """Topics, table and partition engines of the segmentation agent, on one app."""

    dlq: faust.TopicT
    table: faust.Table
    clocks: PartitionClocks
    # Told of every event applied and every state merged in (agents.lookup's profiles);
    # called with the message as Faust's current event, so it may write a table.
    on_applied: Callable[[Any, Touchpoint | None, str], None] | None = None


def register(app: faust.App, settings: Settings, codecs: Codecs) -> Segmentation:
    raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": settings.partitions}
    table = app.Table(
        TABLE_NAME,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=state_value_type(codecs),
    )
    policy = settings.policy()
    limits = settings.limits()

    async def changelog(partition: int, key: bytes, state: Any) -> None:
        value = None if state is None else codecs.encode_state(state)
        await send_to_changelog(app, table, partition, key, value)

    # Each partition's event-time clock, kept across restarts (agents.partition_clocks).
    clock_table = app.Table(
        CLOCK_TABLE_NAME, partitions=settings.partitions, key_type=bytes, value_type=bytes
    )
    clock_changelog = partial(send_to_changelog, app, clock_table)
    clocks = PartitionClocks(
        policy, table, settings.allowed_lateness_ms, changelog, clock_table, clock_changelog
    )
    seg = Segmentation(
        dlq=app.topic(settings.dlq_topic, **raw),
        table=table,
        clocks=clocks,
    )
    thresholds.register(
        app,
        settings,
        lambda brand, rfm: clocks.set_brand_rfm(brand, rfm, range(settings.partitions)),
    )

    async def dead_letter(m: Any, rejected: Rejected) -> None:
        await seg.dlq.send(
            key=m.key, value=m.value, headers=dead_letter_headers(m, rejected), force=True
        )
        metrics.rejected(rejected.reason)

    internal = {settings.referrals_topic, settings.resolved_topic}  # never the events topic
    merges: identity.Merges | None = None
    resolver: identity.Resolver | None = None
    # Events and the referral credits for people of the same partition, co-partitioned.
    inputs: tuple[str, ...] = (settings.events_topic, settings.referrals_topic)
    if settings.identity_resolution:
        routing = identity.declare(app, settings)
        resolver = identity.Resolver(app, settings, codecs, routing, dead_letter)
        merges = identity.Merges(routing, seg.table, codecs, policy, lambda: drain())
        # One agent for both stages: an event whose person is on its own partition is
        # applied as it is read; the others reach their person's partition through the
        # resolved topic (agents.identity.Resolver).
        inputs = (*sorted(resolver.topics), settings.resolved_topic)
    source = RawTopic(app, topics=inputs, **raw)  # read in batches of messages

    # A batch is completed (changes sent, states written) or not at all while partitions
    # are handed over: the revoke handler waits for a batch in progress, then drops the
    # held writes of revoked partitions (their events were not acknowledged: the new
    # owner processes them again from the changelog's states).
    handover = asyncio.Lock()
    # Held states are written once per interval, not per batch (agents.write_behind).
    state_writes = StateWrites(settings.worker_state_write_seconds)

    @app.on_partitions_revoked.connect  # type: ignore[misc]
    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        async with handover:
            clocks.forget(tp.partition for tp in revoked if tp.topic in source.topics)

    def learned(m: Any, tp: Touchpoint | None, person: str) -> None:
        if seg.on_applied is not None:
            with identity.current(app, m):
                seg.on_applied(m, tp, person)

    async def apply_event(
        m: Any, tp: Touchpoint, person_id: str, offset: int, source: Any, out: Outcome
    ) -> bool:
        """One accepted event into `out`; False when it was forwarded to a survivor."""
        engine = clocks.engine(m.partition)
        # Before anything touches a state: states keep RFM, lifecycle and due time from
        # their last derivation (state._recompute), which must be under the current policy.
        clocks.reassess_pending(m.partition, engine, out)
        if merges is not None and await merges.forward_if_absorbed(m, tp, person_id):
            return False
        metrics.event_consumed(tp)
        engine.on_event(tp, person_id, offset, out, source)
        clocks.written(m.partition, out)
        learned(m, tp, person_id)
        return True

    async def apply_direct(m: Any, tp: Touchpoint, person_id: str, out: Outcome) -> bool:
        """An event of the events topic whose person is on this partition (one hop). Its
        (partition, offset) guards against applying it twice after a restart, as for a
        copy forwarded through the resolved topic; it has no resolved offset."""
        return await apply_event(m, tp, person_id, -1, (m.partition, m.offset), out)

    async def process(m: Any, out: Outcome) -> bool:
        """One message of the source topic into `out` (states go to the held writes);
        False when it was dead-lettered or forwarded instead."""
        kind = identity.header(m, identity.KIND)
        engine = clocks.engine(m.partition)
        if merges is not None and kind == identity.MERGE_IN:
            clocks.reassess_pending(m.partition, engine, out)
            await merges.on_merge_in(m, engine, out)
            learned(m, None, bytes(m.key).decode())
        elif kind == identity.REFERRAL and m.topic in internal:
            clocks.reassess_pending(m.partition, engine, out)
            person = identity.header(m, identity.PERSON) or bytes(m.key).decode()
            if merges is not None and await merges.forward_referral_if_absorbed(m, person):
                return False
            brand, invitee, at = identity.referral_of(m)
            engine.on_referral(brand, person, invitee, at, out)
        else:
            try:
                tp = accept(m.value, int(time.time() * 1000), codecs, limits)
            except Rejected as rejected:
                await dead_letter(m, rejected)
                return False
            person_id = identity.header(m, identity.PERSON) or person_id_for(tp.user)
            source = identity.source_of(m)
            if source is not None and source[0] == m.partition:
                # Forwarded from this same partition: only a version before one hop did
                # that. Later events of that partition may have been applied directly
                # since, so its origin would wrongly mark it as applied; its resolved
                # offset and the dedup window still recognise a repeat.
                source = None
            return await apply_event(m, tp, person_id, m.offset, source, out)
        clocks.written(m.partition, out)
        return True

    async def drain() -> None:
        """Until the broker has stored everything sent so far. Faust's own flush can
        return with table writes still in its buffer (it gives up after 0.1 s without
        progress), so the buffer is emptied first."""
        producer = app.producer
        while producer.buffer.size:
            await producer.buffer.flush()
        await producer.flush()

    async def complete(batch: list[tuple[Any, Outcome, bool]], store: bool = False) -> None:
        """Send a batch's changes and credits and wait for the broker. Then, once held
        states are `worker_state_write_seconds` old (or `store`), write them (and wait
        again), so nothing is acknowledged before it is stored (write_behind); then the
        clocks, only once those states are stored (partition_clocks)."""
        for _, out, _ in batch:
            for brand, referrer, invitee, at in out.referrals:
                headers = identity.referral_headers(brand, invitee, at)
                await send_raw(app, settings.referrals_topic, referrer.encode(), b"", headers)
            for change in out.changes:
                value = codecs.encode_change(change)
                await send_raw(app, settings.changes_topic, change.person_id.encode(), value)
        await drain()
        if not state_writes.hold(time.monotonic()) or store:
            await clocks.flush()
            await drain()
            if await clocks.checkpoint():
                await drain()
            state_writes.stored()
        # A message not processed may carry a reassessment's changes.
        metrics.segment_changes((c, m.timestamp) for m, out, _ in batch for c in out.changes)
        metrics.events_processed(m.time_in for m, _, processed in batch if processed)
        for _, out, processed in batch:
            if not processed:
                continue
            if out.duplicate:
                metrics.duplicate_dropped()
            if out.late:
                metrics.late_event()
            if out.redelivered:
                metrics.redelivered_skipped()
        batch.clear()

    async def segmentation(stream: faust.StreamT) -> None:
        batches = finished_batches(
            stream, settings.worker_batch_events, settings.worker_batch_seconds, state_writes
        )
        async for messages in batches:  # acknowledged once their states are stored
            async with handover:
                await process_batch(messages)

    async def process_batch(messages: list[Any]) -> None:
        batch: list[tuple[Any, Outcome, bool]] = []
        skipped = 0
        # Read once per batch (it builds a set): the assignment cannot change while the
        # batch runs, as a revocation first waits for the handover lock held around it.
        owned = app.consumer.assignment()
        generation = app.consumer_generation_id
        for m in messages:
            if m.tp not in owned or m.generation_id != generation:
                # Taken before a rebalance moved its partition away (the new owner reads
                # it again), or before one that gave it back (read again from the
                # committed offset). Marked acknowledged so no ack of ours reaches the
                # consumer, which would count it as done.
                m.acked = True
                skipped += 1
                continue
            if merges is not None and identity.header(m, identity.KIND) == identity.MERGE:
                await complete(batch, store=True)  # a merge reads and moves stored states
                with identity.current(app, m):
                    await merges.on_merge(m)
                continue
            if resolver is not None and m.topic in resolver.topics:
                direct = await resolver.on_message(m)
                if direct is not None:
                    out = Outcome()
                    batch.append((m, out, await apply_direct(m, *direct, out)))
                continue
            out = Outcome()
            batch.append((m, out, await process(m, out)))
        await complete(batch, store=not messages)  # none: held states came due (batches)
        if skipped:
            log.info("left %d events of partitions handed over to their new owner", skipped)

    app.agent(source, name="segmentation")(segmentation)
    return seg
