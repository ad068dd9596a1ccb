"""Part 4, measured rather than extrapolated: the memory of a `touchflow worker` that holds
N people (1M in `make bench`), and how long it takes such a worker to start.

The changelog of the state table is filled with N states, as a worker that had seen N
people would have left it, then a fresh worker recovers them, as after a restart or a
rebalance. The states are the core workload's own final states, cycled over N synthetic
person keys and written to the partitions the worker would have used, so the bytes, the
shapes and the spread over partitions are those of real processing; only their number
is scaled. Every recovered state is decoded into its own Python objects, so nothing is
shared between the copies in the worker's memory.

Ready means: the worker has recovered every changelog partition and processed one batch of
events on every events partition, so each partition's due-time index over its recovered
states has been built (it is built when the partition's first event arrives).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

from bench import e2e
from bench.inprocess import rss_bytes
from bench.workload import Workload
from pipeline import state as core
from pipeline.broker import EmbeddedBroker, ensure_topics
from pipeline.codec import Codecs
from pipeline.demo import stop_process
from pipeline.engine import PartitionEngine
from pipeline.settings import Settings

FILL_BATCH = 5_000  # sends in flight before waiting for their acknowledgements


def final_states(w: Workload, settings: Settings) -> list[bytes]:
    """Changelog values (Avro wire format) of the states the core workload ends with."""
    engine = PartitionEngine(settings.policy(), {}, settings.allowed_lateness_ms)
    for offset, (e, pid) in enumerate(zip(w.events, w.person_ids, strict=True)):
        engine.on_event(e, pid, offset)
    codecs = Codecs()
    return [codecs.encode_state(s) for s in engine.store.values()]


def synthetic_person(i: int) -> str:
    """A person id shaped like the real ones (`p` + 16 hex digits), distinct per i."""
    return f"p{i:016x}"


def partition_of(person_id: str, partitions: int) -> int:
    """The events partition of a person: the default partitioner (aiokafka's, the Java
    client's) over the record key, the person id, as the worker's topics are keyed."""
    ids = list(range(partitions))
    return int(DefaultPartitioner()(person_id.encode(), ids, ids))


async def fill_changelog(
    bootstrap: str, topic: str, partitions: int, values: list[bytes], people: int
) -> int:
    """Write `people` states to the changelog, each on its person's partition; returns the
    bytes written (values only)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20
    )
    await producer.start()
    written = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        for i in range(people):
            pid = synthetic_person(i)
            value = values[i % len(values)]
            key = core.state_key("lumi", pid).encode()
            part = partition_of(pid, partitions)
            pending.append(await producer.send(topic, value, key=key, partition=part))
            written += len(value)
            if len(pending) >= FILL_BATCH:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return written


async def people_in_state(worker_config: Path, at_least: int) -> float:
    """The worker's `touchflow_people_in_state` gauge once it shows `at_least` (it is
    refreshed every `metrics_interval_seconds`), or what it shows after a minute."""
    port = yaml.safe_load(worker_config.read_text())["web_port"]
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            count = next(
                (
                    float(f.samples[0].value)
                    for f in text_string_to_metric_families(text)
                    if f.name == "touchflow_people_in_state" and f.samples
                ),
                0.0,
            )
            if count >= at_least or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.5)


async def run(
    settings: Settings,
    templates: list[bytes],
    people: int,
    warmup: Workload,
    logs: Path,
    broker: EmbeddedBroker,
) -> dict[str, Any]:
    """One worker started over a changelog of `people` states; its memory once ready."""
    settings = e2e.fresh_settings(settings, broker, "mem")
    await ensure_topics(broker.bootstrap, settings)
    began = time.monotonic()
    value_bytes = await fill_changelog(
        broker.bootstrap, settings.changelog_topic, settings.partitions, templates, people
    )
    filled = time.monotonic()
    worker = e2e.start_worker(settings, logs)
    alive = e2e.liveness(worker, logs / "worker.log")
    try:
        ends = await e2e.publish_all(
            broker.bootstrap, settings.events_topic, e2e.avro(Codecs(), warmup)
        )
        await e2e.drained(settings, ends, alive)
        ready = time.monotonic()
        held = await people_in_state(logs / "worker.yaml", people)
        if held < people:  # a short recovery would make the figure a flattering lie
            raise RuntimeError(f"the worker holds {held:.0f} states, not the {people} written")
        rss = rss_bytes(worker.pid)
    finally:
        stop_process(worker)
    return {
        "memory_people": people,
        "memory_people_in_state": held,
        "memory_worker_rss_bytes": rss,
        "memory_worker_rss_gib": rss / 2**30,
        "memory_worker_rss_per_person": rss / people,
        "memory_changelog_value_bytes": value_bytes,
        "memory_fill_seconds": filled - began,
        "memory_ready_seconds": ready - filled,
        "memory_recovered_people_per_s": people / (ready - filled),
    }
