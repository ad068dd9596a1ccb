"""State survives a worker restart: recovery reads the changelog to its true end.

Tansu reports the log end as the last batch's base offset + 1 (shared/notes/dev-stack.md);
without agents.broker_compat the restarted worker would skip the changelog's tail.
"""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.broker_compat import true_end_offsets
from pipeline.events import Chat, EventType, Touchpoint, UserRef
from pipeline.identity import person_id_for
from pipeline.pii import pseudonymise
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration.helpers import PII_KEY, async_wait_until, publish

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
    await publish(settings, chats(users, 100, 1, now))
    expected_101 = sorted((person_id_for(u), 101) for u in users)
    # A recovery that stopped short would resume at a lower version; the store keeps the
    # highest version, so the result would stay at 100 instead of reaching 101.
    # The budget is for the group join, not the recovery (0.03 s here): Tansu holds each
    # JoinGroup ~30 s, and a worker may join twice (again after its subscription grows).
    await async_wait_until(
        lambda: _eq(versions, expected_101), 300, "recovered state + 1 event per person"
    )
    assert second.alive(), second.log_tail()


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
