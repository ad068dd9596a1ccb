"""State survives a worker restart: recovery reads the changelog to its true end.

Tansu reports the log end as the last batch's base offset + 1 (shared/notes/dev-stack.md);
without agents.broker_compat the restarted worker would skip the changelog's tail.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.broker_compat import true_end_offsets
from pipeline import state as core
from pipeline.codec import Codecs
from pipeline.events import Chat, EventType, Touchpoint, UserRef
from pipeline.identity import person_id_for
from pipeline.pii import pseudonymise
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration.helpers import (
    PII_KEY,
    async_wait_until,
    get,
    parse,
    partition_of,
    publish,
    value,
    web_port,
)

pytestmark = pytest.mark.integration


async def test_true_end_offsets_match_what_the_partition_holds(settings: Settings) -> None:
    topic = f"{settings.app_id}.batched"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    futures = [await producer.send(topic, b"x" * 100) for _ in range(500)]  # batched sends
    for f in futures:
        await f
    await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
        auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    held = []
    while fetched := await consumer.getmany(timeout_ms=1000):
        for msgs in fetched.values():
            held.extend(m.offset for m in msgs)
    reported = (await consumer.end_offsets([TopicPartition(topic, 0)]))[TopicPartition(topic, 0)]
    await consumer.stop()

    assert len(held) == 500
    fixed = await true_end_offsets(settings.kafka_bootstrap, {(topic, 0): reported})
    assert fixed[(topic, 0)] == max(held) + 1 == 500


def chats(users: list[UserRef], start: int, count: int, at_ms: int) -> list[Touchpoint]:
    return [
        Touchpoint(
            f"{u.id[-6:]}-{i}",
            EventType.CHAT,
            "lumi",
            "wecom",
            u,
            at_ms + i,
            Chat("inbound", "customer"),
        )
        for i in range(start, start + count)
        for u in users
    ]


@pytest.mark.timeout(600)
async def test_restarted_worker_continues_from_the_full_state(
    settings: Settings, sink: ClickHouseSink, workers
) -> None:
    key = PII_KEY.encode()
    users = [UserRef("openid", pseudonymise("openid", f"o-{n}", key)) for n in range(3)]
    now = int(time.time() * 1000) - 3_600_000
    first = workers()
    await publish(settings, chats(users, 0, 100, now))

    async def versions() -> list[tuple[str, int]]:
        return await sink.query(
            "SELECT person_id, version FROM person_state FINAL ORDER BY person_id"
        )

    expected_100 = sorted((person_id_for(u), 100) for u in users)
    await async_wait_until(lambda: _eq(versions, expected_100), 90, "100 events applied per person")
    assert first.stop() == 0, first.log_tail()
    # A graceful stop leaves the consumer group, on Tansu too (whose first generation is
    # 0, from which aiokafka would not leave: agents.broker_compat.leave_group). Otherwise
    # the next worker's join waits until the broker gives the old member up (~110 s).
    assert await group_members(settings.kafka_bootstrap, settings.app_id) == []

    second = workers()  # empty memory store: everything comes from the changelog
    # Events keep arriving while it joins and recovers: a recovery once dropped such
    # events for good when a fetch ran in the moment its active partitions were all
    # paused (agents/fetch_partitions.py); the worker then never processed anything.
    sent, joining_until = 100, time.monotonic() + 240
    while not await _ready(second):
        assert second.alive() and time.monotonic() < joining_until, second.log_tail()
        await publish(settings, chats(users, sent, 1, now))
        sent += 1
        await asyncio.sleep(1)
    await publish(settings, chats(users, sent, 1, now))
    sent += 1
    expected = sorted((person_id_for(u), sent) for u in users)
    # A recovery that stopped short would resume at a lower version; the store keeps the
    # highest version, so the result would stay below `sent`. A dropped event stalls it.
    await async_wait_until(
        lambda: _eq(versions, expected), 120, f"recovered state + all {sent} events per person"
    )
    assert second.alive(), second.log_tail()


async def test_recovered_worker_without_committed_offsets_processes_every_event(
    settings: Settings, sink: ClickHouseSink, workers
) -> None:
    """A group with nothing committed (its offsets expired, or a worker died before its
    first commit) over a changelog that holds states: the recovery reads the changelog,
    and every event already on the events topic must still be processed, from the first.
    (The fetcher read the stream partitions during the recovery; with no committed offset
    to seek back to, those events were skipped: agents/recovery_order.py.)"""
    key = PII_KEY.encode()
    now = int(time.time() * 1000) - 3_600_000
    policy, codecs = settings.policy(), Codecs()
    # States such as an earlier worker left, 5 events each; enough of them that the
    # recovery takes a while (the fetcher reads the stream partitions meanwhile).
    known = [UserRef("openid", pseudonymise("openid", f"known-{n}", key)) for n in range(3000)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = []
        for user in known:
            pid = person_id_for(user)
            s: core.PersonState | None = None
            for offset, e in enumerate(chats([user], 0, 5, now - 60_000)):
                s, _ = core.apply(s, e, pid, policy, offset)
            assert s is not None
            sent.append(
                await producer.send(
                    settings.changelog_topic,
                    codecs.encode_state(s),
                    key=core.state_key("lumi", pid).encode(),
                    partition=partition_of(user, settings.partitions),
                )
            )
        for f in sent:
            await f
    finally:
        await producer.stop()
    new = [UserRef("openid", pseudonymise("openid", f"new-{n}", key)) for n in range(3)]
    await publish(settings, chats(new, 0, 30, now))  # before the worker: read in recovery

    worker = workers()
    expected = sorted((person_id_for(u), 30) for u in new)
    pids = tuple(person_id_for(u) for u in new)

    async def versions() -> list[tuple[str, int]]:
        return await sink.query(
            "SELECT person_id, version FROM person_state FINAL "
            f"WHERE person_id IN {pids} ORDER BY person_id"
        )

    await async_wait_until(lambda: _eq(versions, expected), 300, "30 events applied per person")

    # The recovery read the states (the path under test), and the new people joined them.
    async def people_in_state() -> float:
        _, text = await get(f"http://127.0.0.1:{web_port(worker)}/metrics")
        return value(parse(text), "touchflow_people_in_state")

    await async_wait_until(
        lambda: _eq(people_in_state, len(known) + len(new)), 60, "recovered + new people"
    )
    assert worker.alive(), worker.log_tail()


async def _ready(worker) -> bool:  # type: ignore[no-untyped-def]
    try:
        status, _ = await get(f"http://127.0.0.1:{web_port(worker)}/readyz")
    except OSError:  # not listening yet
        return False
    return status == 200


async def group_members(bootstrap: str, group: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [(error_code, _, _, _, _, members)] = response.groups
    assert error_code == 0, f"DescribeGroups({group}) failed with error code {error_code}"
    return [member[0] for member in members]


async def _eq(query, expected) -> bool:  # type: ignore[no-untyped-def]
    return await query() == expected
