"""Real local components: one Tansu broker and one chDB engine per test session.

Each test gets its own topics, consumer groups and ClickHouse database (unique prefix), so
tests share the broker without seeing each other's data. Workers run as real processes
(`touchflow worker`) on free web ports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pipeline.broker import EmbeddedBroker, ensure_topics
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration.helpers import Worker, isolated_settings


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as b:
        yield b


@pytest.fixture
def settings(tmp_path: Path, broker: EmbeddedBroker, chdb_dsn: str) -> Settings:
    return isolated_settings(broker.bootstrap, chdb_dsn, tmp_path / "var", partitions=2)


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
        # pytest shows a test's captured output only when it fails: then each worker's
        # last lines are in the report (a clean-clone CI keeps nothing else).
        print(f"----- {w.log.name}, last lines\n{w.log_tail(60)}")


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
