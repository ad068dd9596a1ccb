"""The hot topics' fetched batches delivered in one step (agents.bulk_delivery), through the
worker's real consumer class, conductor, buffer and batch reader, with no broker: each test
hands the consumer the records a fetch returned. The worker, metrics and kill -9 tests run
the same path over a broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from agents.batches import RawTopic, finished_batches
from agents.bulk_delivery import admitted, bulk_channel
from pipeline.app import create_app
from pipeline.settings import Settings

TOPIC = "hot"
TP0 = TP(TOPIC, 0)
RAW = {"key_serializer": "raw", "value_serializer": "raw"}


def fausts_loop(
    offsets: list[int], read_offset: int | None
) -> tuple[list[int], list[tuple[int, int]]]:
    """Faust 0.15's `Consumer._drain_messages`, record by record: what it delivers (by
    index) and the gaps it adds, with the read offset it moves."""
    delivered, gaps = [], []
    r_offset = read_offset
    for i, offset in enumerate(offsets):
        if r_offset is None or offset >= r_offset:
            gap = offset - (r_offset or 0)
            if gap > 1 and r_offset:
                gaps.append((r_offset + 1, offset))
            delivered.append(i)
            r_offset = offset
    return delivered, gaps


@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=20, unique=True).map(sorted),
    st.none() | st.integers(0, 60),
)
def test_admitted_is_fausts_per_record_decision(offsets: list[int], read: int | None) -> None:
    kept, gaps = admitted(offsets, read)
    assert (list(kept), gaps) == fausts_loop(offsets, read)


def test_admitted_in_the_usual_case_and_the_edges() -> None:
    assert (list(admitted([10, 11, 12], 9)[0]), admitted([10, 11, 12], 9)[1]) == ([0, 1, 2], [])
    assert admitted([10, 11, 15], 9)[1] == [(12, 15)]  # compacted away inside the batch
    assert admitted([12, 13], 9)[1] == [(10, 12)]  # before it
    assert list(admitted([5, 6, 7], 6)[0]) == [1, 2]  # 5 is below the read offset: skipped
    assert admitted([5], 0)[1] == []  # Faust's `and r_offset`: no gap after offset 0


def records(first: int, n: int, skip: frozenset[int] = frozenset()) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(TOPIC, 0, o, 1_700_000_000_000, 0, b"k", b"v%d" % o, None, 1, 2, ())
        for o in range(first, first + n)
        if o not in skip
    ]


class Worker:
    """The worker's app and consumer (`create_app`), its conductor subscribed to TOPIC,
    partition 0, read by a RawTopic through `finished_batches`, as the segmentation agent
    reads its sources."""

    def __init__(self) -> None:
        self.app = create_app(Settings(), "localhost:1")
        self.app.flow_control.resume()
        self.consumer = self.app.consumer
        self.stream = self.app.stream(RawTopic(self.app, topics=[TOPIC], **RAW))

    async def batches(self, size: int, within: float = 0.05) -> AsyncIterator[list[Any]]:
        batches = finished_batches(self.stream, size, within)
        first = asyncio.ensure_future(batches.__anext__())  # registers its channel
        await asyncio.sleep(0)
        conductor = self.app.topics
        conductor._update_tp_index({TP0})
        await conductor._update_indices()
        self.consumer._committed_offset[TP0] = None
        self.channel = bulk_channel(conductor, TP0)
        assert self.channel is not None

        async def rest() -> AsyncIterator[list[Any]]:
            yield await first
            async for batch in batches:
                yield batch

        return rest()

    async def fetched(self, batch: list[ConsumerRecord]) -> None:
        # keyed as aiokafka keys a fetch: its own TopicPartition, not Faust's TP
        await self.consumer._deliver_bulk(TopicPartition(TOPIC, 0), batch, self.channel)


def offsets(batch: list[Any]) -> list[int]:
    return [m.offset for m in batch]


async def test_fetched_batches_reach_the_agent_in_order_and_commit_once_processed() -> None:
    w = Worker()
    batches = await w.batches(size=4)
    await w.fetched(records(0, 3))
    await w.fetched(records(3, 3))
    assert w.consumer._read_offset[TP0] == 5
    first = await batches.__anext__()
    assert offsets(first) == [0, 1, 2, 3]
    assert first[0].value == b"v0" and first[0].timestamp == 1_700_000_000.0
    assert first[0].generation_id == w.app.consumer_generation_id
    assert w.consumer._new_offset(TP0) is None  # taken, not yet processed
    second = await batches.__anext__()  # the first batch's body is done
    assert offsets(second) == [4, 5]
    assert w.consumer._new_offset(TP0) == 4


async def test_records_compacted_away_are_gaps_the_commit_passes_once_the_rest_is_done() -> None:
    w = Worker()
    batches = await w.batches(size=10)
    await w.fetched(records(0, 3))
    await w.fetched(records(3, 6, skip=frozenset({5, 6})))  # 3, 4, 7, 8
    await w.fetched(records(9, 1))
    got = await batches.__anext__()
    assert offsets(got) == [0, 1, 2, 3, 4, 7, 8, 9]
    assert sorted((i.begin, i.end) for i in w.consumer._gap[TP0]) == [(5, 7)]
    pending = asyncio.ensure_future(batches.__anext__())  # acknowledges `got`
    await asyncio.sleep(0.01)
    assert w.consumer._new_offset(TP0) == 10
    pending.cancel()


async def test_a_batch_larger_than_the_buffer_waits_for_room_and_pauses_its_partition() -> None:
    w = Worker()
    batches = await w.batches(size=1000)  # its first batch is taken at once
    queue = w.channel.queue
    n = queue.maxsize + 1000 + 300
    w.consumer._get_active_partitions().add(TP0)
    delivering = asyncio.ensure_future(w.fetched(records(0, n)))
    await asyncio.sleep(0.01)
    assert not delivering.done()  # the buffer was filled, the rest waits for room
    assert queue.qsize() == queue.maxsize  # filled again behind the first batch taken
    assert TP0 in w.consumer._buffered_partitions  # pressure: its fetching paused
    assert TP0 not in w.consumer._get_active_partitions()
    got: list[int] = []
    while len(got) < n:
        got += offsets(await asyncio.wait_for(batches.__anext__(), 5))
    await asyncio.wait_for(delivering, 5)
    assert got == list(range(n))
    assert w.consumer._read_offset[TP0] == n - 1
    assert TP0 in w.consumer._get_active_partitions()  # drained: fetching again


async def test_a_rebalance_interrupts_a_delivery_waiting_for_room() -> None:
    w = Worker()
    await w.batches(size=10)  # its first batch is taken at once
    queue = w.channel.queue
    delivering = asyncio.ensure_future(w.fetched(records(0, queue.maxsize + 20)))
    await asyncio.sleep(0.01)
    assert not delivering.done()
    w.consumer.suspend_flow.set()  # what Faust does when a rebalance starts
    await asyncio.wait_for(delivering, 1)
    assert queue.qsize() == queue.maxsize
    for _ in range(queue.qsize()):  # room again: the interrupted rest must not be put now
        queue.get_nowait()
    await asyncio.sleep(0.01)
    assert queue.qsize() == 0


async def test_only_a_partition_read_by_one_raw_topic_is_delivered_in_bulk() -> None:
    w = Worker()
    await w.batches(size=10)
    conductor = w.app.topics
    assert bulk_channel(conductor, TP0) is w.channel
    assert bulk_channel(conductor, TP("elsewhere", 0)) is None
    assert TP("elsewhere", 0) not in conductor._tp_index  # looked up, not added
    async with conductor._tp_to_callback_lock:  # the index is being rebuilt
        assert bulk_channel(conductor, TP0) is None
    conductor._tp_index[TP0].add(w.app.topic(TOPIC, **RAW))  # a second reader, Faust's kind
    assert bulk_channel(conductor, TP0) is None
    conductor._tp_index[TP0] = {w.app.topic(TOPIC, **RAW)}
    assert bulk_channel(conductor, TP0) is None
