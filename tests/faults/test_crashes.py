"""Workers die (kill -9), stop (SIGTERM) and come back: nothing lost, nothing changed.

Quick versions run in `make test`; the full ones (issue sizes) in `make test-faults`.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass

import pytest

from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.faults import harness as h
from tests.integration.helpers import Worker, async_wait_until


@dataclass(frozen=True)
class Size:
    events: int
    kills: int
    timeout: float  # seconds for the whole topic to be processed after the last fault


QUICK = Size(events=6_000, kills=1, timeout=240)
FULL = Size(events=200_000, kills=3, timeout=1800)
SIZES = [
    pytest.param(QUICK, id="quick"),
    pytest.param(FULL, id="full", marks=[pytest.mark.faults, pytest.mark.timeout(3600)]),
]


async def kill_at_random_points(s: Settings, fleet: h.Fleet, size: Size) -> list[Worker]:
    """Start a worker, kill -9 it `size.kills` times at random shares of the events topic
    committed (increasing), each time starting another; returns them all."""
    rng = random.Random(size.events)
    points = sorted(rng.uniform(0.1, 0.9) for _ in range(size.kills))
    workers = [fleet.start(s, "worker-0")]
    for i, share in enumerate(points):

        async def reached(share: float = share) -> bool:
            return await h.committed(s) >= share * size.events

        await async_wait_until(reached, size.timeout, f"{share:.0%} of the events committed")
        time.sleep(rng.uniform(0, 0.5))  # not a wait: a random point inside a batch
        assert workers[-1].stop(signal.SIGKILL) == -signal.SIGKILL
        workers.append(fleet.start(s, f"worker-{i + 1}"))
    await h.wait_processed(s, workers, size.timeout)
    return workers


@pytest.mark.parametrize("size", SIZES)
async def test_kill_9_at_random_points_loses_and_changes_nothing(
    fault_settings: Settings, fault_sink: ClickHouseSink, fleet: h.Fleet, size: Size
) -> None:
    s = fault_settings
    await h.publish(s, h.encoded(h.workload(size.events)))
    workers = await kill_at_random_points(s, fleet, size)

    ref = h.reference(await h.read_all(s.kafka_bootstrap, s.events_topic), s)
    got = await h.collect(s)
    assert ref.changes, "the workload moved nobody: the comparison would prove nothing"
    print(f"{len(ref.changes)} changes, {len(ref.states)} states, {got.duplicates} repeats")
    assert h.differences(ref, got) == []
    assert await h.store_differences(fault_sink, s, ref, size.timeout) == []
    for w in workers:
        w.stop()


@pytest.mark.parametrize("fault_settings", [pytest.param(True, id="resolving")], indirect=True)
@pytest.mark.parametrize("elsewhere", [False, True], ids=["one-hop", "forwarded"])
@pytest.mark.parametrize("size", SIZES)
async def test_kill_9_with_identity_resolution_loses_and_changes_nothing(
    fault_settings: Settings,
    fault_sink: ClickHouseSink,
    fleet: h.Fleet,
    size: Size,
    elsewhere: bool,
) -> None:
    """The default configuration. Published keyed by their identity, events are applied
    on the partition they are read from (one hop); published on another partition, the
    resolver forwards each to the resolved topic, keyed by its person. Killed workers
    read again, and forward again, what they had not committed; each event must still be
    applied once."""
    s = fault_settings
    assert s.identity_resolution
    events = h.workload(size.events, links=False)
    await h.publish(s, h.encoded(events, elsewhere=s.partitions if elsewhere else None))
    workers = await kill_at_random_points(s, fleet, size)

    forwarded = await h.read_all(s.kafka_bootstrap, s.resolved_topic)
    stored = await h.read_all(s.kafka_bootstrap, s.events_topic)
    ref = h.reference(stored + forwarded, s)
    no_resolution = s.model_copy(update={"identity_resolution": False})
    published = h.reference(stored, no_resolution)
    assert ref.changes, "the workload moved nobody: the comparison would prove nothing"
    print(
        f"{len(forwarded)} forwarded for {len(published.event_ids)} events, "
        f"{ref.applied} applied, {len(ref.changes)} changes"
    )
    # Every good event forwarded or applied where it was read, and only by its route.
    assert ref.event_ids == published.event_ids
    assert (len(forwarded) >= len(published.event_ids)) if elsewhere else not forwarded
    # Read or forwarded again after a kill, an event is still applied once.
    assert ref.applied == len(ref.event_ids)
    got = await h.collect(s)
    assert h.differences(ref, got) == []
    assert await h.store_differences(fault_sink, s, ref, size.timeout) == []
    for w in workers:
        w.stop()


async def test_sigterm_stops_within_10_s_and_the_restart_resumes(
    fault_settings: Settings, fleet: h.Fleet
) -> None:
    s = fault_settings
    events = h.workload(QUICK.events)
    await h.publish(s, h.encoded(events[: len(events) // 2]))
    first = fleet.start(s, "worker-0")

    async def some() -> bool:
        return await h.committed(s) > 0

    await async_wait_until(some, 120, "the first events committed")
    started = time.monotonic()
    assert first.stop(signal.SIGTERM, timeout=10) == 0, first.log_tail()
    assert time.monotonic() - started < 10

    await h.publish(s, h.encoded(events[len(events) // 2 :]))
    second = fleet.start(s, "worker-1")
    await h.wait_processed(s, [second], QUICK.timeout)
    ref = h.reference(await h.read_all(s.kafka_bootstrap, s.events_topic), s)
    assert h.differences(ref, await h.collect(s)) == []
    second.stop()
