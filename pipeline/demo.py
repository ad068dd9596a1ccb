"""`touchflow demo`: the whole pipeline on the embedded stack, with synthetic traffic.

Starts the local broker (unless TOUCHFLOW_KAFKA_BOOTSTRAP names one), the Faust worker(s)
as child processes, the ClickHouse sink in this process (chDB lives in one process), plays
traffic for --seconds, prints segment changes as they happen, waits for everything to be
processed and stored, and prints a summary whose last line is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.broker_compat import true_end_offsets
from pipeline.broker import EmbeddedBroker, ensure_topics, free_port
from pipeline.codec import Codecs
from pipeline.generator import TrafficGenerator
from pipeline.identity import partition_key
from pipeline.rfm import MS_PER_DAY, SEGMENT_NAMES_ZH, RfmSegment
from pipeline.settings import Settings
from sinks import store
from sinks.writer import ClickHouseSink

PRINT_PER_SECOND = 6  # segment-change lines shown per second; the rest are counted


@dataclass
class DemoOptions:
    seconds: float = 30.0
    rate: float = 300.0  # events per real second
    days_per_second: float = 3.0  # simulated days per real second: time moves segments too
    workers: int = 1
    seed: int = 7
    drain_timeout: float = 90.0


@dataclass
class _Progress:
    produced: int = 0
    ends: dict[TopicPartition, int] = field(default_factory=dict)


def _dev_pii_key(settings: Settings) -> bytes:
    """The configured key, or a random per-checkout dev key kept under data_dir (never in git)."""
    if settings.pii_key is not None:
        return settings.pii_key_bytes()
    path = settings.data_dir / "dev-pii.key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def _spawn_worker(
    settings: Settings, bootstrap: str, index: int, logs: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        TOUCHFLOW_KAFKA_BOOTSTRAP=bootstrap,
        TOUCHFLOW_BROKER_COMPAT="tansu" if settings.tansu_compat else "none",
        TOUCHFLOW_WEB_PORT=str(free_port()),
        TOUCHFLOW_DATA_DIR=str(settings.data_dir.resolve()),
    )
    out = open(logs / f"worker-{index}.log", "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "worker"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def stop_process(p: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _describe(change: Any) -> str:
    def name(v: str | None) -> str:
        if v is None:
            return "—"
        if change.dimension == "rfm_segment":
            return SEGMENT_NAMES_ZH[RfmSegment(v)]
        return v

    day = datetime.fromtimestamp(change.event_time / 1000, UTC).strftime("%Y-%m-%d")
    s = change.scores_after
    return (
        f"  [{day}] {change.brand:<8} {change.person_id}  {change.dimension:<11} "
        f"{name(change.from_value)} → {name(change.to_value)}  (R{s.r}F{s.f}M{s.m}, #{change.seq})"
    )


async def _print_changes(
    bootstrap: str, settings: Settings, progress: _Progress, stop: asyncio.Event
) -> None:
    codecs = Codecs()
    consumer = AIOKafkaConsumer(
        settings.changes_topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    window_start, shown, hidden = time.monotonic(), 0, 0
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200)
            for msgs in fetched.values():
                for msg in msgs:
                    if shown < PRINT_PER_SECOND:
                        print(_describe(codecs.decode_change(msg.value)), flush=True)
                        shown += 1
                    else:
                        hidden += 1
            if time.monotonic() - window_start >= 1.0:
                if hidden:
                    print(f"  … and {hidden} more segment changes", flush=True)
                window_start, shown, hidden = time.monotonic(), 0, 0
    finally:
        await consumer.stop()


async def _play_traffic(
    bootstrap: str, settings: Settings, opts: DemoOptions, key: bytes, progress: _Progress
) -> None:
    codecs = Codecs()
    gen = TrafficGenerator(key, seed=opts.seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    # Simulated time runs from the past up to now, so no event is in the future.
    sim_span_ms = int(opts.seconds * opts.days_per_second * MS_PER_DAY)
    sim_start = int(time.time() * 1000) - sim_span_ms
    started = time.monotonic()
    tick = 0.1
    try:
        while (elapsed := time.monotonic() - started) < opts.seconds:
            sim_now = sim_start + int(elapsed * opts.days_per_second * MS_PER_DAY)
            futures = []
            for _ in range(max(1, int(opts.rate * tick))):
                e = gen.next_event(sim_now)
                futures.append(
                    await producer.send(
                        settings.events_topic, codecs.encode_event(e), key=partition_key(e.user)
                    )
                )
            for md in await asyncio.gather(*futures):
                tp = TopicPartition(md.topic, md.partition)
                progress.ends[tp] = max(progress.ends.get(tp, 0), md.offset + 1)
            progress.produced += len(futures)
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - started - elapsed)))
    finally:
        await producer.stop()


class WorkerDied(RuntimeError):
    pass


def _check_alive(workers: list[subprocess.Popen[bytes]], logs: Path) -> None:
    for i, w in enumerate(workers):
        if w.poll() is not None:
            tail = (logs / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise WorkerDied(
                f"worker {i} exited with {w.returncode}; its log ends:\n" + "\n".join(tail)
            )


async def wait_caught_up(
    bootstrap: str,
    group: str,
    ends: dict[TopicPartition, int],
    deadline: float,
    alive: Callable[[], None] = lambda: None,
) -> bool:
    """Wait until `group` has committed every partition up to `ends` (or the deadline)."""
    # A consumer that never subscribes only reads the group's commits (OffsetFetch with
    # explicit partitions, which every broker here answers); it does not join the group.
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        while time.monotonic() < deadline:
            alive()
            behind = [tp for tp, end in ends.items() if (await reader.committed(tp) or 0) < end]
            if not behind:
                return True
            await asyncio.sleep(0.3)
        return False
    finally:
        await reader.stop()


async def wait_processed(
    bootstrap: str,
    settings: Settings,
    ends: dict[TopicPartition, int],
    deadline: float,
    alive: Callable[[], None] = lambda: None,
) -> bool:
    """Wait until the workers' group has committed the events up to `ends`, then what the
    workers sent each other meanwhile (referral credits; with identity resolution,
    re-keyed events, links and merges): all of it processed (or the deadline)."""
    if not await wait_caught_up(bootstrap, settings.app_id, ends, deadline, alive):
        return False
    internal = [settings.referrals_topic]
    if settings.identity_resolution:
        internal += [settings.resolved_topic, settings.links_topic]
    internal_ends = await topic_ends(bootstrap, internal)
    return await wait_caught_up(bootstrap, settings.app_id, internal_ends, deadline, alive)


async def topic_ends(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        reported = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    # True ends even where the broker misreports them (see agents.broker_compat).
    fixed = await true_end_offsets(
        bootstrap, {(tp.topic, tp.partition): o for tp, o in reported.items()}
    )
    return {TopicPartition(t, p): o or 0 for (t, p), o in fixed.items() if o}


async def summarise(sink: ClickHouseSink) -> dict[str, Any]:
    one = lambda rows: rows[0][0] if rows else 0  # noqa: E731
    events = one(await sink.query("SELECT count() FROM events FINAL"))
    changes = one(await sink.query("SELECT count() FROM segment_changes FINAL"))
    users = one(await sink.query("SELECT uniqExact(brand, person_id) FROM current_people"))
    merges = one(
        await sink.query("SELECT count() FROM segment_changes FINAL WHERE dimension = 'identity'")
    )
    segments = await sink.query(
        "SELECT rfm_segment, count() FROM current_people WHERE rfm_segment != '' "
        "GROUP BY rfm_segment ORDER BY count() DESC"
    )
    stages = await sink.query(
        "SELECT aipl_stage, count() FROM current_people GROUP BY aipl_stage ORDER BY aipl_stage"
    )
    lifecycles = await sink.query(
        "SELECT lifecycle, count() FROM current_people WHERE lifecycle != ''"
        " GROUP BY lifecycle ORDER BY count() DESC"
    )
    tags = await sink.query(
        "SELECT arrayJoin(tags) AS tag, count() FROM current_people GROUP BY tag"
        " ORDER BY count() DESC"
    )
    time_driven = one(
        await sink.query("SELECT count() FROM segment_changes FINAL WHERE cause = 'time'")
    )
    return {
        "events": events,
        "segment_changes": changes,
        "time_driven_changes": time_driven,
        "identity_merges": merges,
        "users": users,
        "rfm_segments": {k: v for k, v in segments},
        "aipl_stages": {k: v for k, v in stages},
        "lifecycles": {k: v for k, v in lifecycles},
        "tags": {k: v for k, v in tags},
    }


async def run_demo(settings: Settings, opts: DemoOptions) -> dict[str, Any]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    key = _dev_pii_key(settings)
    broker: EmbeddedBroker | None = None
    workers: list[subprocess.Popen[bytes]] = []
    stop_printer = asyncio.Event()
    stop_sink = asyncio.Event()
    progress = _Progress()
    started = time.monotonic()
    try:
        if settings.embedded_broker:
            broker = EmbeddedBroker(log_file=logs / "broker.log").start()
            bootstrap = broker.bootstrap
            # The embedded broker starts empty, so the embedded store must too.
            dsn = settings.resolved_clickhouse_dsn()
            if store.is_embedded(dsn):
                store.connect(dsn).command(
                    f"DROP DATABASE IF EXISTS {settings.clickhouse_database}"
                )
        else:
            bootstrap = settings.kafka_bootstrap
        print(
            f"touchflow demo: broker {bootstrap}, store {settings.resolved_clickhouse_dsn()}",
            flush=True,
        )
        await ensure_topics(bootstrap, settings)
        workers = [_spawn_worker(settings, bootstrap, i, logs) for i in range(opts.workers)]
        sink = ClickHouseSink(settings, bootstrap)
        await sink.start()
        sink_task = asyncio.create_task(sink.run(stop_sink))
        printer = asyncio.create_task(_print_changes(bootstrap, settings, progress, stop_printer))
        print(
            f"playing {opts.rate:.0f} events/s for {opts.seconds:.0f}s "
            f"({opts.days_per_second:g} simulated days per second); segment changes:",
            flush=True,
        )
        await _play_traffic(bootstrap, settings, opts, key, progress)

        deadline = time.monotonic() + opts.drain_timeout
        alive = lambda: _check_alive(workers, logs)  # noqa: E731
        alive()
        processed = await wait_processed(bootstrap, settings, progress.ends, deadline, alive)
        topics = [settings.events_topic, settings.changes_topic, settings.changelog_topic]
        stored = await wait_caught_up(
            bootstrap, settings.sink_group, await topic_ends(bootstrap, topics), deadline
        )
        if not (processed and stored):
            print(
                f"warning: not everything was processed within {opts.drain_timeout:.0f}s "
                f"(worker logs: {logs})",
                file=sys.stderr,
                flush=True,
            )
        stop_printer.set()
        stop_sink.set()
        await asyncio.gather(printer, sink_task)
        summary = await summarise(sink)
        sink.close()
        summary.update(
            published=progress.produced,
            seconds=round(time.monotonic() - started, 1),
            drained=processed and stored,
        )
        return summary
    finally:
        stop_printer.set()
        stop_sink.set()
        for w in workers:
            stop_process(w)
        if broker:
            broker.stop()


def print_summary(summary: dict[str, Any]) -> None:
    print("\nsummary")
    print(f"  events stored     {summary['events']:>8}   (published {summary['published']})")
    print(
        f"  segment changes   {summary['segment_changes']:>8}"
        f"   ({summary['time_driven_changes']} by time alone)"
    )
    print(
        f"  customers         {summary['users']:>8}"
        f"   ({summary['identity_merges']} merged across channels)"
    )
    for seg, n in summary["rfm_segments"].items():
        print(f"    {SEGMENT_NAMES_ZH[RfmSegment(seg)]:<8} {seg:<18} {n:>6}")
    print("  AIPL: " + "  ".join(f"{k}={v}" for k, v in summary["aipl_stages"].items()))
    print("  lifecycle: " + "  ".join(f"{k}={v}" for k, v in summary["lifecycles"].items()))
    print("  tags: " + "  ".join(f"{k}={v}" for k, v in summary["tags"].items()))
    print(json.dumps(summary, ensure_ascii=False, sort_keys=True), flush=True)


def main(settings: Settings, opts: DemoOptions) -> int:
    try:
        summary = asyncio.run(run_demo(settings, opts))
    except WorkerDied as exc:
        print(f"touchflow demo: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0 if summary["drained"] else 1
