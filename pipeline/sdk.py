"""The producer SDK for channel services: raw event in, contract-keeping Avro on the topic.

`Publisher` (asyncio) and `SyncPublisher` (blocking, for services without an event loop)
take a `Touchpoint` or its canonical JSON (docs/events.md) whose ids may still be raw,
and on the caller's side of the wire: pseudonymise every identity with the keyed hash
(`pipeline.pii`), check the contract (`pipeline.validation`, the same checks the worker
makes, so bad events fail at the source instead of in the DLQ), encode in the wire format
and send keyed by person (`pipeline.identity.partition_key`). Sending is batched by the
producer (linger / batch size); `flush()` waits for every send and raises `DeliveryError`
naming the events the broker did not take.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.canonical import event_from_json
from pipeline.codec import Codecs
from pipeline.events import Identify, Join, Payload, Share, Touchpoint, UserRef
from pipeline.identity import partition_key
from pipeline.kafka_security import client_options
from pipeline.pii import pseudonymise
from pipeline.schema_registry import registry_for
from pipeline.settings import Settings
from pipeline.validation import check_size, validate

# A channel service's sends batch for up to this long: one record batch per partition
# per linger, not one per send (fewer requests on any broker; on Tansu, also cheaper
# fetches: bench.broker_fetch_cost).
PUBLISH_LINGER_MS = 20

T = TypeVar("T")
C = TypeVar("C", AIOKafkaProducer, AIOKafkaConsumer)
Event = Touchpoint | dict[str, Any]


class DeliveryError(RuntimeError):
    """The broker did not accept some events: `event_ids` names them, `cause` says why."""

    def __init__(self, event_ids: list[str], cause: BaseException) -> None:
        shown = ", ".join(event_ids[:5]) + (
            f" and {len(event_ids) - 5} more" if len(event_ids) > 5 else ""
        )
        super().__init__(f"{len(event_ids)} event(s) not delivered ({shown}): {cause!r}")
        self.event_ids = event_ids
        self.cause = cause


async def started(client: C) -> C:
    """`await client.start()` for an aiokafka client, closing it again when that fails
    (aiokafka leaves a half-started client open otherwise)."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    return client


def _hashed(user: UserRef, key: bytes) -> UserRef:
    return UserRef(user.id_type, pseudonymise(user.id_type, user.id, key))


def pseudonymise_event(e: Touchpoint, key: bytes) -> Touchpoint:
    """The event with every identity it carries (user, referrer, invitee, identities) keyed-hashed.

    Every id type is hashed, not only the personal ones: an "anonymous" device id is still
    a tracking id. Idempotent, so already-hashed events pass unchanged."""
    p: Payload = e.payload
    if isinstance(p, Join) and p.referrer is not None:
        p = dataclasses.replace(p, referrer=_hashed(p.referrer, key))
    elif isinstance(p, Share) and p.invitee is not None:
        p = dataclasses.replace(p, invitee=_hashed(p.invitee, key))
    elif isinstance(p, Identify):
        p = Identify(tuple(_hashed(u, key) for u in p.identities))
    return dataclasses.replace(e, user=_hashed(e.user, key), payload=p)


class Publisher:
    """Publishes touchpoints to the events topic. Build it inside a running event loop
    (aiokafka binds to it): `async with Publisher(settings) as p: await p.publish(e)`."""

    def __init__(
        self,
        settings: Settings,
        *,
        linger_ms: int = PUBLISH_LINGER_MS,
        max_batch_size: int = 256 * 1024,
        request_timeout_ms: int = 30_000,
    ) -> None:
        if settings.embedded_broker:
            raise ValueError("set TOUCHFLOW_KAFKA_BOOTSTRAP to the broker to publish to")
        self.settings = settings
        self._key = settings.pii_key_bytes()
        self._limits = settings.limits()
        self._codecs = Codecs(registry_for(settings.schema_registry_url))
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
            request_timeout_ms=request_timeout_ms,
            **client_options(settings),
        )
        self._pending: list[tuple[str, asyncio.Future[Any]]] = []

    async def start(self) -> Publisher:
        await started(self._producer)
        return self

    async def stop(self) -> None:
        """Flush, then close the connection (also when the flush fails)."""
        try:
            await self.flush()
        finally:
            await self._producer.stop()

    async def __aenter__(self) -> Publisher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def prepare(self, event: Event) -> Touchpoint:
        """The event as it will be sent: parsed, pseudonymised, checked (Rejected if not)."""
        e = event if isinstance(event, Touchpoint) else event_from_json(event)
        return validate(pseudonymise_event(e, self._key), int(time.time() * 1000), self._limits)

    async def publish(self, event: Event) -> Touchpoint:
        """Queue one event for sending; returns it as sent (hashed ids). Raises Rejected
        when it breaks the contract; delivery failures surface at `flush()`."""
        e = self.prepare(event)
        value = self._codecs.encode_event(e)
        check_size(len(value), self._limits)
        future = await self._producer.send(
            self.settings.events_topic, value, key=partition_key(e.user)
        )
        self._pending.append((e.event_id, future))
        return e

    async def flush(self) -> None:
        """Wait until every queued event is acknowledged; DeliveryError names the ones not."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        failed = [
            (eid, r)
            for (eid, _), r in zip(pending, results, strict=True)
            if isinstance(r, BaseException)
        ]
        if failed:
            raise DeliveryError([eid for eid, _ in failed], failed[0][1])


class SyncPublisher:
    """`Publisher` for blocking code: its own event loop runs in a daemon thread."""

    def __init__(self, settings: Settings, **producer_options: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="touchflow-publisher", daemon=True
        )
        self._thread.start()
        try:
            self._publisher = self._run(self._create(settings, producer_options))
        except BaseException:
            self._close_loop()
            raise

    @staticmethod
    async def _create(settings: Settings, options: dict[str, int]) -> Publisher:
        # aiokafka binds to the running loop when it is built, so build it on ours.
        return await Publisher(settings, **options).start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def publish(self, event: Event) -> Touchpoint:
        return self._run(self._publisher.publish(event))

    def flush(self) -> None:
        self._run(self._publisher.flush())

    def close(self) -> None:
        """Flush, disconnect and stop the thread."""
        try:
            self._run(self._publisher.stop())
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
