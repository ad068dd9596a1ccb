"""Identity resolution: one customer across channels (when `identity_resolution` is on).

Two stages, both thin around `pipeline.identity.decide_link` and `pipeline.state.merge`,
both run by the segmentation agent (one agent reads all four topics):

1. The *resolver* (`Resolver`) reads the events topic (keyed by channel identity) and an
   internal links topic keyed the same way, and keeps `identity -> person` in a table.
   An event whose person lives on the partition it was read from is handed back to be
   applied there (one hop, docs/architecture.md); any other is re-published to the
   *resolved* topic keyed by its person. An `identify` event sends a link
   `(linked identity -> this person)` to each linked identity's partition; a link that
   joins two people sends a `merge` of the larger id into the smaller.
2. The segmentation side reads the resolved topic. A `merge` moves every brand state of
   the absorbed person to the survivor's partition (`merge-in`), remembers an alias, and
   emits an `identity` change there. Events or merges still addressed to an absorbed id
   are forwarded along the alias, and the event's identity is taught the survivor.

Message kinds on the resolved topic are told apart by the `touchflow.kind` header.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner
from faust.streams import _current_event

from agents.raw_send import send_raw
from pipeline import state as core
from pipeline.codec import Codecs
from pipeline.engine import Outcome, PartitionEngine
from pipeline.errors import Rejected
from pipeline.events import Identify, Touchpoint
from pipeline.identity import decide_link, seed_of, survivor
from pipeline.ingest import accept
from pipeline.settings import Settings

KIND, PERSON = "touchflow.kind", "touchflow.person"
MERGE_TO, MERGE_FROM, BRAND = "touchflow.merge-to", "touchflow.merge-from", "touchflow.brand"
INVITEE, AT = "touchflow.invitee", "touchflow.at"
EVENT, MERGE, MERGE_IN, REFERRAL = "event", "merge", "merge-in", "referral"
# "partition:offset" of a forwarded event in the events topic: its copies, forwarded again
# by a resolver that died before committing, carry the same (state.is_forwarded_again).
SOURCE = "touchflow.source"


@contextmanager
def current(app: faust.App, message: Any) -> Iterator[None]:
    """Make `message` Faust's current event: a table write takes its changelog partition
    from it, and a send without `force` is published when its offset is committed. The
    agents read messages without Faust events (agents.batches), so one is made here, for
    the few messages that write a table or send that way."""
    event = app.create_event(message.key, message.value, message.headers, message)
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def stored(table: faust.Table, key: bytes) -> Any:
    """`table.get(key)` read from the memory store's dict (the app's store): Faust's
    mapping layers make `Table.get` ~10x slower (3.8 against 0.34 µs), once per event."""
    return table.data.data.get(key)


def header(message: Any, name: str) -> str | None:
    for k, v in message.headers or ():
        if k == name:
            return bytes(v).decode()
    return None


@dataclass
class Routing:
    links: faust.TopicT
    resolved: faust.TopicT
    aliases: faust.Table  # absorbed person id (bytes) -> survivor id (str)


def declare(app: faust.App, settings: Settings) -> Routing:
    raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": settings.partitions}
    return Routing(
        links=app.topic(settings.links_topic, **raw),
        resolved=app.topic(settings.resolved_topic, **raw),
        aliases=app.Table("aliases", key_type=bytes, value_type=str),
    )


# `force=True` sends now instead of attaching the message to the current event's offset
# (Faust publishes attachments at commit). The segmentation agent works in batches, where
# the current event is not the one handled: it sends now and flushes the producer before
# it writes states and before the batch is acknowledged.


def source_of(message: Any) -> tuple[int, int] | None:
    """Where a forwarded event came from in the events topic (None: not forwarded)."""
    text = header(message, SOURCE)
    if text is None:
        return None
    partition, _, offset = text.partition(":")
    return int(partition), int(offset)


async def send_event(
    routing: Routing, person: str, value: bytes, source: tuple[int, int] | None
) -> None:
    """The event's resolved copy, keyed by its person: once per event, so a raw send."""
    headers = [(KIND, EVENT.encode()), (PERSON, person.encode())]
    if source is not None:
        headers.append((SOURCE, f"{source[0]}:{source[1]}".encode()))
    topic = routing.resolved.get_topic_name()
    await send_raw(routing.resolved.app, topic, person.encode(), value, headers)


async def send_merge(routing: Routing, absorbed: str, target: str, force: bool = False) -> None:
    headers = [(KIND, MERGE.encode()), (MERGE_TO, target.encode())]
    await routing.resolved.send(key=absorbed.encode(), value=b"", headers=headers, force=force)


def referral_headers(brand: str, invitee: str, at: int) -> list[tuple[str, bytes]]:
    return [
        (KIND, REFERRAL.encode()),
        (BRAND, brand.encode()),
        (INVITEE, invitee.encode()),
        (AT, str(at).encode()),
    ]


def referral_of(message: Any) -> tuple[str, str, int]:
    """(brand, invitee, event time) of a referral record."""
    return (
        header(message, BRAND) or "",
        header(message, INVITEE) or "",
        int(header(message, AT) or 0),
    )


def with_person(headers: Any, person: str) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in headers or () if k != PERSON] + [(PERSON, person.encode())]


class Resolver:
    """Stage 1 of identity resolution: each event's person, links, referral credits.

    Runs inside the segmentation agent, which reads the events, links and referrals
    topics beside the resolved one. An event whose person lives on the partition the
    event was read from (an identity not linked elsewhere, published keyed by its own
    identity as `pipeline.identity.partition_key` does) is handed straight back to be
    applied here: one hop. Only the others take the resolved topic to their person's
    partition (docs/architecture.md, "One hop").
    """

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        codecs: Codecs,
        routing: Routing,
        dead_letter: Callable[[Any, Rejected], Awaitable[None]],
    ) -> None:
        self.app = app
        self.settings = settings
        self.codecs = codecs
        self.routing = routing
        self.dead_letter = dead_letter
        self.identities = app.Table("identities", key_type=bytes, value_type=str)  # seed -> person
        self.topics = frozenset(
            (settings.events_topic, settings.links_topic, settings.referrals_topic)
        )
        self._limits = settings.limits()
        self._partitions = list(range(settings.partitions))
        self._partitioner = app.conf.producer_partitioner or DefaultPartitioner()

    def partition_of(self, person: str) -> int:
        """The partition the producer sends a person's records to: where their state is."""
        return int(self._partitioner(person.encode(), self._partitions, self._partitions))

    def person_of(self, seed: str) -> str:
        found: str | None = stored(self.identities, seed.encode())
        return found or seed

    async def on_message(self, m: Any) -> tuple[Touchpoint, str] | None:
        """Handle one message of the resolver's topics; an event to apply on this very
        partition comes back as (event, person), everything else is done here."""
        if m.topic == self.settings.links_topic:
            with current(self.app, m):  # its table write goes to this partition's changelog
                await self.on_link(m)
            return None
        if m.topic == self.settings.referrals_topic:
            with current(self.app, m):  # the credit leaves when this offset is committed
                await self.on_referral(m)
            return None
        return await self.on_event(m)

    async def on_link(self, m: Any) -> None:
        seed, claimed = bytes(m.key).decode(), bytes(m.value).decode()
        current_person = self.person_of(seed)
        target, absorbed, relink = decide_link(current_person, claimed)
        # The merge and relink must be stored before the new link is: once the link is in
        # the changelog, a replay of this message decides nothing new and would not resend.
        routing = self.routing
        if absorbed is not None:
            await send_merge(routing, absorbed, target, force=True)
        if relink is not None:
            await routing.links.send(key=relink.encode(), value=target.encode(), force=True)
        if absorbed is not None or relink is not None:
            await self.app.producer.flush()
        if target != current_person:
            self.identities[seed.encode()] = target

    async def on_event(self, m: Any) -> tuple[Touchpoint, str] | None:
        try:
            tp = accept(m.value, int(time.time() * 1000), self.codecs, self._limits)
        except Rejected as rejected:
            await self.dead_letter(m, rejected)
            return None
        seed = seed_of(tp.user)
        person = self.person_of(seed)
        if isinstance(tp.payload, Identify):
            with current(self.app, m):  # the links leave when this event's offset is committed
                for linked in {seed_of(u) for u in tp.payload.identities} - {seed}:
                    await self.routing.links.send(key=linked.encode(), value=person.encode())
        if self.partition_of(person) == m.partition:
            return tp, person
        await send_event(self.routing, person, m.value, (m.partition, m.offset))
        return None

    async def on_referral(self, m: Any) -> None:
        person = self.person_of(bytes(m.key).decode())
        headers = with_person(m.headers, person)
        await self.routing.resolved.send(key=person.encode(), value=b"", headers=headers)


class Merges:
    """Stage 2 helpers for the segmentation agent: aliases, forwarding, merging states."""

    def __init__(
        self,
        routing: Routing,
        table: Any,
        codecs: Codecs,
        policy: core.Policy,
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.routing = routing
        self.table = table
        self.codecs = codecs
        self.policy = policy
        self.flush = flush  # waits until everything sent so far is stored by the broker

    def alias(self, person: str) -> str | None:
        found: str | None = stored(self.routing.aliases, person.encode())
        return found

    async def forward_if_absorbed(self, m: Any, tp: Touchpoint, person: str) -> bool:
        """An event for a person merged away goes on to the survivor; its identity learns."""
        target = self.alias(person)
        if target is None:
            return False
        # Without its origin: on this detour it may arrive after later events of the same
        # events partition (the survivor's own), so the origin would wrongly mark it as
        # applied. The dedup window still recognises a repeat (docs/reliability.md).
        await send_event(self.routing, target, m.value, None)
        link = {"key": seed_of(tp.user).encode(), "value": target.encode()}
        await self.routing.links.send(**link, force=True)
        return True

    async def on_merge(self, m: Any) -> None:
        """Move the absorbed person's states to the survivor's partition. Called with the
        merge as Faust's current event (its table writes go to this partition)."""
        absorbed, target = bytes(m.key).decode(), header(m, MERGE_TO) or ""
        if not target or absorbed == target:
            return
        earlier = self.alias(absorbed)
        if earlier is not None:  # absorbed before: its two survivors are one person too
            if earlier != target:
                keep = survivor(earlier, target)
                await send_merge(
                    self.routing, earlier if keep == target else target, keep, force=True
                )
            return
        suffix = b":" + absorbed.encode()
        keys = [k for k in self.table if bytes(k).endswith(suffix)]
        for key in keys:
            brand, _ = core.split_state_key(bytes(key).decode())
            headers = [
                (KIND, MERGE_IN.encode()),
                (BRAND, brand.encode()),
                (MERGE_FROM, absorbed.encode()),
            ]
            state = self.codecs.encode_state(self.table[key])
            await self.routing.resolved.send(
                key=target.encode(), value=state, headers=headers, force=True
            )
        # Only once the states are stored on their way may they and the alias be written
        # here: a crash before that replays this merge and sends them again (the
        # survivor drops a repeated merge-in by its merge id).
        await self.flush()
        self.routing.aliases[absorbed.encode()] = target
        for key in keys:
            del self.table[key]

    async def forward_referral_if_absorbed(self, m: Any, person: str) -> bool:
        target = self.alias(person)
        if target is None:
            return False
        headers = with_person(m.headers, target)
        await self.routing.resolved.send(
            key=target.encode(), value=b"", headers=headers, force=True
        )
        return True

    async def on_merge_in(self, m: Any, engine: PartitionEngine, out: Outcome) -> None:
        target = bytes(m.key).decode()
        onward = self.alias(target)
        if onward is not None:  # the survivor was itself absorbed meanwhile
            await self.routing.resolved.send(
                key=onward.encode(), value=m.value, headers=m.headers, force=True
            )
            return
        brand, absorbed = header(m, BRAND) or "", header(m, MERGE_FROM) or ""
        key = core.state_key(brand, target).encode()
        current = engine.store.get(key) or core.PersonState()
        if current.last_offset >= m.offset:
            out.redelivered = True
            return
        if core.merge_id(absorbed) in current.recent_event_ids:  # sent again after a crash
            out.duplicate = True
            return
        merged, changes = core.merge(
            current, self.codecs.decode_state(m.value), brand, target, absorbed, self.policy
        )
        merged = replace(merged, last_offset=m.offset)
        engine.store[key] = merged
        engine.schedule(key, merged)
        out.written.append(key)
        out.changes += changes
