"""The order in which recovery hands the stream partitions back (agents.recovery_order).

The end-to-end proof is the fault suite (a worker started right after a graceful stop or
a kill -9 misses nothing: tests/faults). Here, the order itself, on a real Faust app
whose consumer is never connected: its calls are recorded, not faked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faust.types import TP

from agents.recovery_order import SeekFirstRecovery
from pipeline.app import create_app
from pipeline.settings import Settings

STREAM = TP("events", 0)
CHANGELOG = TP("tf-state-changelog", 0)


def recorded_recovery(
    tmp_path: Path, committed: int | None = 42
) -> tuple[SeekFirstRecovery, list[str]]:
    """`committed`: the stream partition's committed offset, as the seek finds it."""
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path))
    recovery = app.tables.recovery
    assert isinstance(recovery, SeekFirstRecovery)
    calls: list[str] = []
    consumer = app.consumer

    async def perform_seek() -> None:
        calls.append("seek")
        # What Faust's perform_seek leaves: each partition's read offset from its commit.
        for tp, offset in ((STREAM, committed), (CHANGELOG, None)):
            consumer._read_offset[tp] = offset if offset is not None and offset >= 0 else None

    async def seek(tp: TP, offset: int) -> None:
        calls.append(f"seek {tp.topic}[{tp.partition}] to {offset}")

    async def maybe_start() -> None:
        calls.append("fetcher")

    consumer.assignment = lambda: {STREAM, CHANGELOG}  # type: ignore[method-assign]
    consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    consumer.pause_partitions = lambda tps: calls.append(f"pause {sorted(tps)}")  # type: ignore[method-assign]
    consumer.resume_partitions = lambda tps: calls.append(f"resume {sorted(tps)}")  # type: ignore[method-assign]
    consumer.resume_flow = lambda: calls.append("flow")  # type: ignore[method-assign]
    app.flow_control.resume = lambda: calls.append("clear queues")  # type: ignore[method-assign]
    app._fetcher.maybe_start = maybe_start  # type: ignore[method-assign]
    consumer.seek = seek  # type: ignore[method-assign]
    recovery._is_changelog_tp = lambda tp: tp == CHANGELOG  # type: ignore[method-assign]
    # Recovery's `_wait` races the step against a rebalance signal of a started service.
    recovery._wait = lambda step, timeout=None: step  # type: ignore[method-assign]
    return recovery, calls


def test_stream_partitions_are_sought_while_paused_and_resumed_after_the_queues_clear(
    tmp_path: Path,
) -> None:
    recovery, calls = recorded_recovery(tmp_path)
    asyncio.run(recovery._seek_then_resume())
    stream = f"{sorted({STREAM})}"
    assert calls == [
        f"pause {stream}",
        "seek",
        "clear queues",
        f"resume {stream}",
        "flow",
        "fetcher",
    ]
    assert recovery.completed.is_set()


@pytest.mark.parametrize("committed", [None, 0])
def test_stream_partitions_with_nothing_committed_are_sought_to_their_beginning(
    tmp_path: Path, committed: int | None
) -> None:
    # aiokafka's seek_to_committed leaves them where the fetcher got to during recovery.
    recovery, calls = recorded_recovery(tmp_path, committed)
    asyncio.run(recovery._seek_then_resume())
    stream = f"{sorted({STREAM})}"
    assert calls == [
        f"pause {stream}",
        "seek",
        f"seek {STREAM.topic}[{STREAM.partition}] to 0",
        "clear queues",
        f"resume {stream}",
        "flow",
        "fetcher",
    ]


@pytest.mark.parametrize("committed", [None, 42])
def test_changelog_partitions_are_left_as_recovery_set_them(
    tmp_path: Path, committed: int | None
) -> None:
    recovery, calls = recorded_recovery(tmp_path, committed)
    asyncio.run(recovery._seek_then_resume())
    assert not any(CHANGELOG.topic in call for call in calls)
