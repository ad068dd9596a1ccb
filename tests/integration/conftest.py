"""Real local components: one Tansu broker and one chDB engine per test session.

Each test gets its own topics, consumer groups and ClickHouse database (unique prefix), so
tests share the broker without seeing each other's data. Workers run as real processes
(`touchflow worker`) on free web ports.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pipeline.broker import EmbeddedBroker, ensure_topics
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration.helpers import PII_KEY, Worker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as b:
        yield b


@pytest.fixture
def settings(tmp_path: Path, broker: EmbeddedBroker, chdb_dsn: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        broker_compat="tansu",
        app_id=f"tf-{tag}",
        events_topic=f"t{tag}.events",
        changes_topic=f"t{tag}.segment-changes",
        dlq_topic=f"t{tag}.dlq",
        links_topic=f"t{tag}.identity-links",
        resolved_topic=f"t{tag}.resolved",
        referrals_topic=f"t{tag}.referrals",
        thresholds_topic=f"t{tag}.rfm-thresholds",
        partitions=2,
        clickhouse_dsn=chdb_dsn,
        clickhouse_database=f"t_{tag}",
        sink_group=f"t{tag}-sink",
        sink_flush_seconds=0.2,
        data_dir=tmp_path / "var",
        pii_key=PII_KEY,
    )


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Callable[[], Worker]]:
    started: list[Worker] = []

    def start() -> Worker:
        w = Worker(settings, tmp_path / f"worker-{len(started)}.log").start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
async def topics(settings: Settings) -> Settings:
    await ensure_topics(settings.kafka_bootstrap, settings)
    return settings


@pytest.fixture
async def sink(topics: Settings) -> AsyncIterator[ClickHouseSink]:
    s = ClickHouseSink(topics, topics.kafka_bootstrap)
    await s.start()
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    yield s
    stop.set()
    await task
    s.close()
