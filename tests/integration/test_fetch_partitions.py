"""What a fetch may return when Faust's active set is empty (agents.fetch_partitions):
aiokafka's real fetcher over the local broker."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.fetch_partitions import fetchable
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def assigned(settings: Settings):  # type: ignore[no-untyped-def]
    """A consumer assigned one partition that holds 5 records, positioned at offset 0."""
    topic = f"{settings.app_id}.fetch"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    for n in range(5):
        await producer.send_and_wait(topic, f"e{n}".encode(), partition=0)
    await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    try:
        yield consumer, tp
    finally:
        await consumer.stop()


async def test_an_empty_active_set_fetches_nothing_and_keeps_the_position(assigned) -> None:  # type: ignore[no-untyped-def]
    consumer, tp = assigned
    fetcher = consumer._fetcher
    active: set[TopicPartition] = set()  # every partition paused, as at a recovery's end

    assert await fetcher.fetched_records(fetchable(active), timeout=3.0) == {}
    assert await consumer.position(tp) == 0

    active.add(tp)  # resumed: the same live set
    records = await fetcher.fetched_records(fetchable(active), timeout=10.0)
    assert [r.offset for r in records[tp]] == [0, 1, 2, 3, 4]
    assert await consumer.position(tp) == 5


async def test_aiokafka_reads_a_bare_empty_set_as_every_partition(assigned) -> None:  # type: ignore[no-untyped-def]
    """The hazard itself, so that an aiokafka that stops doing this is noticed: handed
    Faust's bare set while it is empty, the fetch returns a paused partition's records
    and moves its position past them."""
    consumer, tp = assigned
    records = await consumer._fetcher.fetched_records(set(), timeout=10.0)
    assert [r.offset for r in records[tp]] == [0, 1, 2, 3, 4]
    assert await consumer.position(tp) == 5
