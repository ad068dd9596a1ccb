"""The benchmark's latency probe (bench.latency_probe) on the real broker: a stand-in
worker answers some events with segment changes after a known delay, and the probe must
count exactly those, never report less than the delay, and pace its sends at the rate."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.latency_probe import Job, probe
from pipeline.codec import Codecs
from pipeline.settings import Settings
from pipeline.state import Scores, SegmentChange

DELAY = 0.3  # seconds the stand-in holds each answer after the event was sent
EVENTS = 60
RATE = 100.0


async def test_probe_times_each_answered_event_from_send_to_first_change(
    topics: Settings,
) -> None:
    s = topics
    codecs = Codecs()
    ids = [f"ev-{i}" for i in range(EVENTS)]
    answered = {eid for i, eid in enumerate(ids) if i % 3 != 0}  # a third cause no change
    all_answered = asyncio.Event()

    reader = AIOKafkaConsumer(
        s.events_topic, bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest"
    )
    writer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    await reader.start()
    await writer.start()

    async def stand_in_worker() -> None:
        done = 0
        async for m in reader:
            eid = m.value.decode()
            if eid not in answered:
                continue
            await asyncio.sleep(max(0.0, m.timestamp / 1000 + DELAY - time.time()))
            for seq in (1, 2):  # the second change of the same cause must not count
                change = SegmentChange(
                    "lumi", m.key.decode(), "tag", None, f"t{seq}", "rule", eid, 0, seq,
                    Scores(), Scores(),
                )  # fmt: skip
                await writer.send_and_wait(s.changes_topic, codecs.encode_change(change))
            done += 1
            if done == len(answered):
                all_answered.set()

    async def processed(ends: dict[TopicPartition, int]) -> None:
        assert sum(ends.values()) == EVENTS
        await asyncio.wait_for(all_answered.wait(), 60)

    job = Job(
        bootstrap=s.kafka_bootstrap,
        events_topic=s.events_topic,
        changes_topic=s.changes_topic,
        partitions=s.partitions,
        rate=RATE,
        records=[(f"p{i % 7}".encode(), eid.encode(), eid) for i, eid in enumerate(ids)],
        settings={},
    )
    answering = asyncio.create_task(stand_in_worker())
    try:
        result = await probe(job, processed, settle=0.05)
    finally:
        answering.cancel()
        await reader.stop()
        await writer.stop()

    assert result["latency_events"] == EVENTS
    assert result["latency_samples"] == len(answered)
    # Record timestamps are whole milliseconds, hence the 1 ms.
    assert result["latency_p50_ms"] >= DELAY * 1000 - 1
    assert result["latency_max_ms"] >= result["latency_p99_ms"] >= result["latency_p50_ms"]
    # Paced, never faster: event k leaves no earlier than (k - 1) / RATE seconds in.
    assert result["offered_load_events_per_s"] <= RATE * EVENTS / (EVENTS - 1)
    assert result["latency_probe_stall_max_ms"] >= result["latency_probe_stall_p99_ms"] >= 0
