"""Parts 3 and 5 of the benchmark: the real local stack (Tansu broker, one `touchflow
worker` process, the ClickHouse sink on chDB in this process, the latency probe in a
process of its own: bench.latency_probe), and in the same run the yardsticks: a plain
Faust worker (bench.baseline_faust) on the same broker and events, and the RFM computed
as one ClickHouse SQL batch over the stored events."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.baseline_faust import touch_json
from bench.inprocess import rss_bytes
from bench.latency_probe import Job, write_job
from bench.workload import Workload
from pipeline.broker import EmbeddedBroker, ensure_topics, free_port
from pipeline.codec import Codecs
from pipeline.demo import stop_process, topic_ends, wait_caught_up, wait_processed
from pipeline.settings import Settings
from sinks.rfm_sql import rfm_scores_query
from sinks.writer import ClickHouseSink

DRAIN_TIMEOUT = 600.0


@dataclass
class Stack:
    settings: Settings
    logs: Path


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def start_worker(settings: Settings, logs: Path) -> subprocess.Popen[bytes]:
    """`touchflow worker` configured like production: a YAML file, no PII key (workers
    only check that ids are hashed)."""
    config = logs / "worker.yaml"
    data = settings.model_dump(mode="json", exclude={"pii_key"})
    data["web_port"] = free_port()
    config.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHFLOW_")}
    env["TOUCHFLOW_CONFIG"] = str(config)
    return _spawn([sys.executable, "-m", "pipeline.cli", "worker"], env, logs / "worker.log")


def start_baseline(
    bootstrap: str, topic: str, app_id: str, partitions: int, logs: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        BENCH_BOOTSTRAP=bootstrap,
        BENCH_TOPIC=topic,
        BENCH_APP_ID=app_id,
        BENCH_PARTITIONS=str(partitions),
        BENCH_WEB_PORT=str(free_port()),
        BENCH_DATADIR=str(logs / "baseline-faust"),
    )
    args = [sys.executable, "-m", "bench.baseline_faust", "worker", "-l", "warn"]
    return _spawn(args, env, logs / "baseline.log")


async def publish_all(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]
) -> dict[TopicPartition, int]:
    """Publish as fast as the producer allows; returns the end offset of each partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    ends: dict[TopicPartition, int] = {}
    pending: list[asyncio.Future[Any]] = []

    async def settle() -> None:
        for md in await asyncio.gather(*pending):
            tp = TopicPartition(md.topic, md.partition)
            ends[tp] = max(ends.get(tp, 0), md.offset + 1)
        pending.clear()

    try:
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 2_000:
                await settle()
        await settle()
    finally:
        await producer.stop()
    return ends


def avro(codecs: Codecs, w: Workload) -> list[tuple[bytes, bytes]]:
    return [
        (p.encode(), codecs.encode_event(e)) for e, p in zip(w.events, w.person_ids, strict=True)
    ]


def _json(w: Workload) -> list[tuple[bytes, bytes]]:
    return [
        (p.encode(), json.dumps(touch_json(e, p)).encode())
        for e, p in zip(w.events, w.person_ids, strict=True)
    ]


async def _count(sink: ClickHouseSink, sql: str) -> int:
    rows = await sink.query(sql)
    return int(rows[0][0]) if rows else 0


async def _wait(
    predicate: Callable[[], Any],
    what: str,
    alive: Callable[[], None],
    timeout: float = DRAIN_TIMEOUT,
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: no {what} after {timeout:.0f}s")
        await asyncio.sleep(0.1)


def liveness(p: subprocess.Popen[bytes], log: Path) -> Callable[[], None]:
    def check() -> None:
        if p.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-80:])
            raise RuntimeError(f"{log.stem} exited with {p.returncode}:\n{tail}")

    return check


async def _caught_up(
    bootstrap: str, group: str, ends: dict[TopicPartition, int], alive: Callable[[], None]
) -> None:
    if not await wait_caught_up(bootstrap, group, ends, time.monotonic() + DRAIN_TIMEOUT, alive):
        raise TimeoutError(f"benchmark: consumer group {group} did not catch up")


async def drained(
    settings: Settings, ends: dict[TopicPartition, int], alive: Callable[[], None]
) -> None:
    """The worker has committed every event up to `ends`, then everything its first stage
    forwarded on the internal topics (identity resolution, referrals): all processed."""
    if not await wait_processed(
        settings.kafka_bootstrap, settings, ends, time.monotonic() + DRAIN_TIMEOUT, alive
    ):
        raise TimeoutError(f"benchmark: consumer group {settings.app_id} did not catch up")


async def _latency(
    settings: Settings,
    w: Workload,
    rate: float,
    codecs: Codecs,
    logs: Path,
    alive: Callable[[], None],
    linger_ms: int,
) -> dict[str, Any]:
    """Publish `w` at `rate` events/s and time each event to the first segment change it
    caused, from a process of its own (bench.latency_probe: this one runs the sink)."""
    job_file, result_file, log = (
        logs / "latency-job.pkl",
        logs / "latency.json",
        logs / "latency-probe.log",
    )
    records = [
        (key, value, e.event_id) for (key, value), e in zip(avro(codecs, w), w.events, strict=True)
    ]
    write_job(
        job_file,
        Job(
            bootstrap=settings.kafka_bootstrap,
            events_topic=settings.events_topic,
            changes_topic=settings.changes_topic,
            partitions=settings.partitions,
            rate=rate,
            records=records,
            settings=settings.model_dump(mode="json", exclude={"pii_key"}),
            linger_ms=linger_ms,
        ),
    )
    result_file.unlink(missing_ok=True)
    args = [sys.executable, "-m", "bench.latency_probe", str(job_file), str(result_file)]
    probe = _spawn(args, dict(os.environ), log)
    probe_alive = liveness(probe, log)
    try:
        deadline = time.monotonic() + len(records) / rate + DRAIN_TIMEOUT
        while probe.poll() is None:  # the sink goes on storing in this process meanwhile
            alive()
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark: the latency probe did not finish")
            await asyncio.sleep(0.2)
        if probe.returncode != 0:
            probe_alive()  # raises with the probe's log
        return dict(json.loads(result_file.read_text()))
    finally:
        stop_process(probe)


async def run(
    settings: Settings,
    warmup: Workload,
    throughput: Workload,
    latency: Workload,
    latency_rate: float,
    logs: Path,
    broker: EmbeddedBroker,
    probe_linger_ms: int,
) -> dict[str, Any]:
    """One end-to-end run on fresh topics, group and database; returns its figures."""
    settings = fresh_settings(settings, broker, "bench")
    bootstrap = broker.bootstrap
    codecs = Codecs()
    await ensure_topics(bootstrap, settings)
    out: dict[str, Any] = {}
    worker = start_worker(settings, logs)
    alive = liveness(worker, logs / "worker.log")
    sink = ClickHouseSink(settings, bootstrap)
    await sink.start()
    stop_sink = asyncio.Event()
    sink_task = asyncio.create_task(sink.run(stop_sink))
    baseline: subprocess.Popen[bytes] | None = None
    try:
        # Warm-up: the worker has joined its group and processed a first batch.
        ends = await publish_all(bootstrap, settings.events_topic, avro(codecs, warmup))
        await drained(settings, ends, alive)
        await _wait(
            lambda: _has(sink, "SELECT count() FROM events FINAL", len(warmup)),
            "warm-up rows",
            alive,
        )
        rss_before = rss_bytes(worker.pid)

        # Throughput: publish everything as fast as possible; done when the worker has
        # committed it all and every event, change and state is queryable in ClickHouse.
        # The records are built before the clock starts, for both workers: encoding the
        # workload is the producers' work, not the system's (docs/benchmarks-history.md,
        # "The clock starts at the first send").
        began = time.monotonic()
        records = avro(codecs, throughput)
        t0 = time.monotonic()
        out["records_build_seconds"] = t0 - began
        ends = await publish_all(bootstrap, settings.events_topic, records)
        published = time.monotonic()
        await drained(settings, ends, alive)
        processed = time.monotonic()
        total = len(warmup) + len(throughput)
        await _wait(
            lambda: _has(sink, "SELECT count() FROM events FINAL", total), "stored events", alive
        )
        outputs = await topic_ends(bootstrap, [settings.changes_topic, settings.changelog_topic])
        await _caught_up(bootstrap, settings.sink_group, outputs, alive)
        stored = time.monotonic()
        n = len(throughput)
        states = await _count(sink, "SELECT count() FROM person_state FINAL")
        out.update(
            e2e_events_per_s=n / (stored - t0),
            worker_events_per_s=n / (processed - t0),
            publish_events_per_s=n / (published - t0),
            e2e_events=n,
            identity_resolution=settings.identity_resolution,
            e2e_seconds=stored - t0,
            e2e_states_stored=states,
            e2e_changes_stored=await _count(sink, "SELECT count() FROM segment_changes FINAL"),
            worker_rss_bytes=rss_bytes(worker.pid),
            worker_rss_growth_per_state=(rss_bytes(worker.pid) - rss_before) / max(1, states),
        )

        # Latency at a fixed offered load, the sink still storing alongside.
        out.update(
            await _latency(settings, latency, latency_rate, codecs, logs, alive, probe_linger_ms)
        )

        # Batch yardstick: the same RFM as one SQL query over the stored events.
        policy = settings.policy().rfm
        sql_runs = []
        for _ in range(3):
            began = time.monotonic()
            rows = await sink.query(rfm_scores_query(policy))
            sql_runs.append(time.monotonic() - began)
        stored_events = await _count(sink, "SELECT count() FROM events FINAL")
        sql_s = sorted(sql_runs)[1]
        out.update(
            sql_rfm_seconds=sql_s,
            sql_rfm_buyers=len(rows),
            sql_rfm_events=stored_events,
            sql_rfm_events_per_s=stored_events / sql_s,
        )
        stop_process(worker)

        # Streaming yardstick: a plain Faust worker over the same events as JSON.
        topic = f"{settings.app_id}.baseline"
        await _create_topic(bootstrap, topic, settings.partitions)
        app_id = f"{settings.app_id}-baseline"
        baseline = start_baseline(bootstrap, topic, app_id, settings.partitions, logs)
        base_alive = liveness(baseline, logs / "baseline.log")
        ends = await publish_all(bootstrap, topic, _json(warmup))
        await _caught_up(bootstrap, app_id, ends, base_alive)
        began = time.monotonic()
        records = _json(throughput)
        t0 = time.monotonic()
        out["baseline_records_build_seconds"] = t0 - began
        ends = await publish_all(bootstrap, topic, records)
        await _caught_up(bootstrap, app_id, ends, base_alive)
        out["baseline_faust_events_per_s"] = n / (time.monotonic() - t0)
        out["e2e_vs_baseline"] = out["e2e_events_per_s"] / out["baseline_faust_events_per_s"]
        out["worker_vs_baseline"] = out["worker_events_per_s"] / out["baseline_faust_events_per_s"]
        return out
    finally:
        stop_process(worker)
        if baseline is not None:
            stop_process(baseline)
        stop_sink.set()
        await sink_task
        sink.close()


def fresh_settings(settings: Settings, broker: EmbeddedBroker, prefix: str) -> Settings:
    """`settings` on `broker` with topics, group and database of their own."""
    tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(
        update={
            "kafka_bootstrap": broker.bootstrap,
            "broker_compat": "tansu",
            "app_id": tag,
            "events_topic": f"{tag}.events",
            "changes_topic": f"{tag}.segment-changes",
            "dlq_topic": f"{tag}.dlq",
            "thresholds_topic": f"{tag}.rfm-thresholds",
            "links_topic": f"{tag}.identity-links",
            "referrals_topic": f"{tag}.referrals",
            "resolved_topic": f"{tag}.resolved",
            "clickhouse_database": tag.replace("-", "_"),
            "sink_group": f"{tag}-sink",
        }
    )


async def _has(sink: ClickHouseSink, sql: str, at_least: int) -> bool:
    return await _count(sink, sql) >= at_least


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
