"""The latency part of the end-to-end benchmark, run in a process of its own: publish
events at a fixed rate and time each one from its send to the arrival of the first
segment change it caused (`cause_event_id`) at a consumer of the changes topic.

Why a process of its own: the benchmark's own process also runs the ClickHouse sink
(chDB is one engine per process, and the benchmark queries it), whose row encoding and
inserts hold the GIL for long stretches. A probe in that process read its clock late: its
event loop stalled up to 0.7 s (p99 93 ms, measured with a 10 ms sleep loop at 5 000
ev/s), which landed on the latencies as if the worker had taken that long. In
production the consumer of segment changes is a separate service too. The probe reports
its own loop's stalls (`latency_probe_stall_*`) so a reader can see its clock was read
on time.

`python -m bench.latency_probe INPUT OUTPUT`: INPUT is a pickle written by `write_job`,
OUTPUT gets the figures as JSON.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.codec import Codecs
from pipeline.demo import wait_processed
from pipeline.sdk import PUBLISH_LINGER_MS
from pipeline.settings import Settings

# Tansu holds a fetch for its whole max wait even when records are there, so the aiokafka
# default (500 ms) would add up to that to every sample.
FETCH_WAIT_MS = 50
# The probe publishes as a channel service does through pipeline.sdk: sends batched for
# up to PUBLISH_LINGER_MS (20 ms), which counts in each sample, as the clock starts before
# send(). Unbatched (linger 0, as before 2026-12-05), 5 000 ev/s wrote a record batch of a
# few events every few ms per partition, and Tansu's fetch cost grows with the batches a
# partition holds: its CPU went 18 -> 94 % in 20 s and p99 rose to 1.3 s
# (bench.broker_fetch_cost --linger-ms; docs/benchmarks-history.md, "What changed in 4578eed and
# 1249a84").
STALL_TICK = 0.01  # the probe's loop is sampled with sleeps of this length
DRAIN_TIMEOUT = 600.0


@dataclass(frozen=True)
class Job:
    bootstrap: str
    events_topic: str
    changes_topic: str
    partitions: int
    rate: float
    records: Sequence[tuple[bytes, bytes, str]]  # key, Avro value, event id
    settings: dict[str, Any]  # the worker's settings (JSON), to know when it is done
    linger_ms: int = PUBLISH_LINGER_MS


def write_job(path: Path, job: Job) -> None:
    path.write_bytes(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))


def percentile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


Done = Callable[[dict[TopicPartition, int]], Awaitable[None]]


async def probe(job: Job, done: Done, settle: float = 1.0) -> dict[str, Any]:
    """Publish `job.records` at `job.rate`; once `done(ends)` returns (everything
    published was processed) and `settle` seconds more (changes still in flight), stop
    listening and return the figures."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=job.bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )
    await consumer.start()
    tps = [TopicPartition(job.changes_topic, p) for p in range(job.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    codecs = Codecs()
    arrived: dict[str, float] = {}
    sent: dict[str, float] = {}
    stalls: list[float] = []
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            for msgs in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for m in msgs:
                    arrived.setdefault(codecs.decode_change(m.value).cause_event_id, now)

    async def watch_loop() -> None:
        while not stop.is_set():
            began = time.monotonic()
            await asyncio.sleep(STALL_TICK)
            stalls.append((time.monotonic() - began - STALL_TICK) * 1000)

    tasks = [asyncio.create_task(consume()), asyncio.create_task(watch_loop())]
    producer = AIOKafkaProducer(
        bootstrap_servers=job.bootstrap, acks="all", linger_ms=job.linger_ms
    )
    await producer.start()
    records = job.records
    ends: dict[TopicPartition, int] = {}
    unsettled = 0
    settled = asyncio.Event()
    failed: list[BaseException | None] = []

    def on_stored(fut: asyncio.Future[Any]) -> None:
        # Each send settles as it is acknowledged: gathering 100 000 futures at the end
        # stalled the loop ~0.5 s while the last changes were arriving.
        nonlocal unsettled
        if fut.exception() is not None:
            failed.append(fut.exception())
            settled.set()
            return
        md = fut.result()
        tp = TopicPartition(md.topic, md.partition)
        ends[tp] = max(ends.get(tp, 0), md.offset + 1)
        unsettled -= 1
        if not unsettled:
            settled.set()

    started = time.monotonic()
    try:
        i = 0
        while i < len(records):
            due = min(len(records), int((time.monotonic() - started) * job.rate) + 1)
            while i < due:
                key, value, event_id = records[i]
                sent[event_id] = time.time()
                unsettled += 1
                settled.clear()
                (await producer.send(job.events_topic, value, key=key)).add_done_callback(on_stored)
                i += 1
            await asyncio.sleep(0.005)
        offered_seconds = time.monotonic() - started
        await settled.wait()
        if failed:
            raise RuntimeError("latency probe: a send failed") from failed[0]
        await done(ends)
        await asyncio.sleep(settle)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await producer.stop()
        await consumer.stop()
    timed = [(at, (arrived[eid] - at) * 1000) for eid, at in sent.items() if eid in arrived]
    if not timed:
        raise RuntimeError("latency probe: no segment change arrived")
    latencies = [ms for _, ms in timed]
    # p99 of the events sent in each second of the run: flat if the pipeline keeps up,
    # rising if it queues.
    first = min(sent.values())
    by_second: dict[int, list[float]] = {}
    for at, ms in timed:
        by_second.setdefault(int(at - first), []).append(ms)
    return {
        "offered_load_events_per_s": len(records) / offered_seconds,
        "latency_events": len(records),
        "latency_samples": len(latencies),
        "latency_publish_linger_ms": job.linger_ms,
        "latency_p50_ms": percentile(latencies, 0.50),
        "latency_p99_ms": percentile(latencies, 0.99),
        "latency_max_ms": max(latencies),
        "latency_p99_ms_by_second": [
            round(percentile(v, 0.99)) for _, v in sorted(by_second.items())
        ],
        "latency_probe_stall_p99_ms": percentile(stalls, 0.99) if stalls else 0.0,
        "latency_probe_stall_max_ms": max(stalls, default=0.0),
    }


def worker_done(job: Job) -> Done:
    """The worker's group has committed every published event and what it forwarded."""
    settings = Settings(**job.settings)

    async def done(ends: dict[TopicPartition, int]) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        if not await wait_processed(job.bootstrap, settings, ends, deadline):
            raise TimeoutError(f"latency probe: group {settings.app_id} did not catch up")

    return done


def main(argv: list[str]) -> int:
    source, target = Path(argv[0]), Path(argv[1])
    job: Job = pickle.loads(source.read_bytes())
    result = asyncio.run(probe(job, worker_done(job)))
    target.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
