"""Workers sharing partitions, rebalancing both ways, and a worker that starts with no
local state: every state comes back from the changelog, nothing is lost or changed."""

from __future__ import annotations

import shutil
import signal

from pipeline.settings import Settings
from tests.faults import harness as h
from tests.integration.helpers import async_wait_until

EVENTS = 6_000


async def test_two_workers_one_killed_then_rejoining_equal_the_reference(
    fault_settings: Settings, fleet: h.Fleet
) -> None:
    s = fault_settings
    await h.publish(s, h.encoded(h.workload(EVENTS, seed=3)))
    a, b = fleet.start(s, "worker-a"), fleet.start(s, "worker-b")

    async def share(x: float) -> bool:
        return await h.committed(s) >= x * EVENTS

    await async_wait_until(lambda: share(0.3), 240, "30% committed")
    assert b.stop(signal.SIGKILL) == -signal.SIGKILL  # a takes b's partitions over
    await async_wait_until(lambda: share(0.6), 240, "60% committed by the survivor")
    c = fleet.start(s, "worker-c")  # joins: partitions move back
    await h.wait_processed(s, [a, c], 300)

    ref = h.reference(await h.read_all(s.kafka_bootstrap, s.events_topic), s)
    assert h.differences(ref, await h.collect(s)) == []
    for w in (a, c):
        w.stop()


async def test_local_state_wiped_rebuilds_from_the_changelog_to_its_true_end(
    fault_settings: Settings, fleet: h.Fleet
) -> None:
    """Thousands of changelog records per partition, in multi-record batches: on Tansu
    the reported end is short of the real one (agents.broker_compat reads on to it)."""
    # States written after every batch of events (agents.write_behind, interval 0): batches
    # of 100 write ~3x the records that full batches of 500 do (a fetch fills a batch at
    # once: agents.bulk_delivery), enough to exercise the recovery below.
    s = fault_settings.model_copy(
        update={"worker_batch_events": 100, "worker_state_write_seconds": 0.0}
    )
    events = h.workload(16_000, seed=4, span_days=300)
    half = len(events) // 2
    await h.publish(s, h.encoded(events[:half]))
    first = fleet.start(s, "worker-0")
    await h.wait_processed(s, [first], 300)
    first.stop()
    shutil.rmtree(s.data_dir)  # the worker's local state, all of it

    changelog = await h.read_all(s.kafka_bootstrap, s.changelog_topic)
    assert len(changelog) >= 3_000, "too few changelog records to exercise recovery"
    await h.publish(s, h.encoded(events[half:]))
    second = fleet.start(s, "worker-1")
    await h.wait_processed(s, [second], 300)

    ref = h.reference(await h.read_all(s.kafka_bootstrap, s.events_topic), s)
    assert h.differences(ref, await h.collect(s)) == []
    second.stop()


async def test_a_restart_keeps_each_partitions_clock_for_the_late_events_after_it(
    fault_settings: Settings, fleet: h.Fleet
) -> None:
    """The newest events first, then a restart, then older ones: every one of those is
    late for its partition's clock, which decides which due times fire before it. A
    worker restarted with a fresh clock (the latest event time since its committed
    offset) fired fewer of them and gave other changes; the kept clock gives the
    reference's (agents.partition_clocks)."""
    s = fault_settings
    events = h.workload(4_000, seed=6, span_days=300)
    newest, older = events[-400:], events[:-400]
    await h.publish(s, h.encoded(newest))
    first = fleet.start(s, "worker-0")
    await h.wait_processed(s, [first], 300)
    first.stop()  # SIGTERM: everything committed, the clocks stored

    await h.publish(s, h.encoded(older))
    ref = h.reference(await h.read_all(s.kafka_bootstrap, s.events_topic), s)
    late = h.count_late(newest + older, s)
    assert late >= len(older) // 2, f"only {late} late events: nothing for the clock to decide"
    second = fleet.start(s, "worker-1")
    await h.wait_processed(s, [second], 300)

    assert h.differences(ref, await h.collect(s)) == []
    second.stop()
