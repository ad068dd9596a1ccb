"""Fault tests: each test gets its own Tansu broker (a test may stop it with SIGSTOP) and
its own topics, consumer groups and ClickHouse database on the session's chDB engine.

Workers run with a short group session, so a killed worker's partitions move on within
seconds, and without identity resolution unless a test asks for it (parametrize
`fault_settings` indirectly with True): the harness explains what its reference covers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pipeline.broker import EmbeddedBroker, ensure_topics
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.faults.harness import Fleet
from tests.integration.helpers import isolated_settings


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as b:
        yield b


@pytest.fixture
async def fault_settings(
    request: pytest.FixtureRequest, tmp_path: Path, own_broker: EmbeddedBroker, chdb_dsn: str
) -> Settings:
    s = isolated_settings(
        own_broker.bootstrap,
        chdb_dsn,
        tmp_path / "var",
        partitions=4,
        identity_resolution=getattr(request, "param", False),
        worker_session_timeout_seconds=6,
    )
    await ensure_topics(s.kafka_bootstrap, s)
    return s


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Starts workers for a test and stops every one of them afterwards, pass or fail."""
    started = Fleet(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
async def fault_sink(fault_settings: Settings) -> AsyncIterator[ClickHouseSink]:
    """The Kafka -> ClickHouse sink in this process (chDB is one engine per process)."""
    s = ClickHouseSink(fault_settings, fault_settings.kafka_bootstrap)
    await s.start()
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    yield s
    stop.set()
    await task
    s.close()
