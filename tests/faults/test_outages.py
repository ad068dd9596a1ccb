"""The broker stops answering, ClickHouse refuses inserts: everything catches up by itself."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from pipeline import metrics
from pipeline.broker import EmbeddedBroker
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.faults import harness as h
from tests.integration.helpers import async_wait_until

EVENTS = 6_000


@pytest.mark.parametrize(
    "pause",
    [
        pytest.param(8.0, id="quick"),
        pytest.param(30.0, id="full", marks=[pytest.mark.faults, pytest.mark.timeout(900)]),
    ],
)
async def test_broker_stopped_then_resumed_the_worker_recovers_by_itself(
    fault_settings: Settings,
    fault_sink: ClickHouseSink,
    own_broker: EmbeddedBroker,
    fleet: h.Fleet,
    pause: float,
) -> None:
    s = fault_settings
    await h.publish(s, h.encoded(h.workload(EVENTS, seed=5)))
    w = fleet.start(s, "worker-0")

    async def some() -> bool:
        return await h.committed(s) >= 0.3 * EVENTS

    await async_wait_until(some, 240, "30% committed")
    assert own_broker.process is not None
    os.kill(own_broker.process.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(pause)  # the outage itself, not a wait for a condition
    finally:
        os.kill(own_broker.process.pid, signal.SIGCONT)
    await h.wait_processed(s, [w], 300)
    assert w.alive(), "the worker must ride the outage out, not exit"

    ref = h.reference(await h.read_all(s.kafka_bootstrap, s.events_topic), s)
    assert h.differences(ref, await h.collect(s)) == []
    assert await h.store_differences(fault_sink, s, ref, 300) == []
    w.stop()


async def test_clickhouse_refusing_inserts_delays_the_store_and_loses_nothing(
    fault_settings: Settings, fault_sink: ClickHouseSink, fleet: h.Fleet
) -> None:
    s = fault_settings
    await fault_sink.query("DETACH TABLE segment_changes")  # every insert into it fails
    await h.publish(s, h.encoded(h.workload(EVENTS, seed=6)))
    w = fleet.start(s, "worker-0")
    await h.wait_processed(s, [w], 300)  # segmentation does not wait for the store

    def failures() -> float:
        found = metrics.SINK.get_sample_value(
            "touchflow_sink_insert_failures_total", {"table": "segment_changes"}
        )
        return found or 0.0

    before = failures()

    async def failing() -> bool:
        return failures() - before >= 3

    await async_wait_until(failing, 120, "the sink retrying its inserts")
    await fault_sink.query("ATTACH TABLE segment_changes")
    ref = h.reference(await h.read_all(s.kafka_bootstrap, s.events_topic), s)
    assert await h.store_differences(fault_sink, s, ref, 300) == []
    w.stop()
