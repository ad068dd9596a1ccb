"""Input faults at volume: repeats, shuffles, late events, replays and poison."""

from __future__ import annotations

import random

import pytest

from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.faults import harness as h
from tests.integration.helpers import by_labels, get, parse, web_port
from tests.integration.test_bad_input import CASES

DAY = 86_400_000


def _values(o: h.Outcome) -> dict[bytes, tuple[object, object]]:
    """What a person is (aggregates and segments), without the bookkeeping that counts
    deliveries (version, seq, offsets, recent ids)."""
    return {k: (s.agg, s.derived) for k, s in o.states.items()}


async def test_repeats_and_shuffles_within_the_lateness_give_the_same_states(
    fault_settings: Settings, fleet: h.Fleet
) -> None:
    lateness = 3 * DAY
    # A repeat is dropped while its id is among the person's last `dedup_window` ids. The
    # heaviest customer here has up to 30 events between an event and its shuffled repeat,
    # so the window is set to cover that (the default, 16, suits retries seconds apart).
    update = {"allowed_lateness_seconds": lateness / 1000, "dedup_window": 64}
    s = fault_settings.model_copy(update=update)
    clean = h.workload(6_000, seed=8, span_days=200)  # ~48 min apart: a 3-day shuffle bites
    noisy = h.shuffled_within(h.with_duplicates(clean, 0.10, seed=9), lateness, seed=10)
    assert [e.event_id for e in noisy] != [e.event_id for e in clean]
    await h.publish(s, h.encoded(noisy))
    w = fleet.start(s, "worker-0")
    await h.wait_processed(s, [w], 300)

    ref = h.reference_of(clean, s)  # the clean events, in time order, each once
    got = await h.collect(s)
    assert _values(got) == _values(ref)
    w.stop()


async def test_events_later_than_the_lateness_are_applied_and_counted(
    fault_settings: Settings, fleet: h.Fleet
) -> None:
    s = fault_settings  # allowed lateness: the default 5 minutes
    clean = h.workload(3_000, seed=12, span_days=100)
    rng = random.Random(13)
    late = set(rng.sample(range(len(clean)), 60))
    # each chosen event arrives 10 days after its time: behind its partition's clock
    order = sorted(
        range(len(clean)), key=lambda i: clean[i].occurred_at + (10 * DAY if i in late else 0)
    )
    arriving = [clean[i] for i in order]
    expected_late = h.count_late(arriving, s)
    assert expected_late >= 50
    await h.publish(s, h.encoded(arriving))
    w = fleet.start(s, "worker-0")
    await h.wait_processed(s, [w], 300)

    _, text = await get(f"http://127.0.0.1:{web_port(w)}/metrics")
    counted = sum(by_labels(parse(text), "touchflow_late_events_total").values())
    assert counted == expected_late
    # Applied, not dropped: every order is in the state (aggregates do not depend on order).
    got, ref = await h.collect(s), h.reference_of(clean, s)
    assert {k: v.agg for k, v in got.states.items()} == {k: v.agg for k, v in ref.states.items()}
    w.stop()


async def test_replay_into_fresh_state_repeats_the_same_changes_and_leaves_the_store(
    fault_settings: Settings, fault_sink: ClickHouseSink, fleet: h.Fleet
) -> None:
    s = fault_settings
    await h.publish(s, h.encoded(h.workload(4_000, seed=14)))
    first = fleet.start(s, "worker-0")
    await h.wait_processed(s, [first], 300)
    first.stop()
    ref = h.reference(await h.read_all(s.kafka_bootstrap, s.events_topic), s)
    assert await h.store_differences(fault_sink, s, ref, 300) == []

    # A new application id: a fresh table, changelog and group, reading from offset 0 and
    # writing its changes to the same topic the first run wrote to.
    fresh = s.model_copy(update={"app_id": s.app_id + "-replay"})
    replay = fleet.start(fresh, "replay")
    await h.wait_processed(fresh, [replay], 300)
    got = await h.collect(s)
    assert h.differences(ref, got) == []  # the first run's states and, twice, its changes
    assert all(len(copies) == 2 for copies in got.changes.values())
    assert await h.store_differences(fault_sink, s, ref, 300) == []
    replay.stop()


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(10_000, id="quick"),
        pytest.param(100_000, id="full", marks=[pytest.mark.faults, pytest.mark.timeout(2400)]),
    ],
)
async def test_one_percent_poison_all_dead_lettered_all_good_processed_no_restart(
    fault_settings: Settings, fleet: h.Fleet, events: int
) -> None:
    s = fault_settings
    good = h.encoded(h.workload(events - events // 100, seed=15))
    rng = random.Random(16)
    poison = [(b"poison-%d" % i, CASES[i % len(CASES)].value()) for i in range(events // 100)]
    mixed = list(good)
    for record in poison:
        mixed.insert(rng.randrange(len(mixed) + 1), record)
    await h.publish(s, mixed)
    w = fleet.start(s, "worker-0")
    pid = w.process.pid if w.process else None
    await h.wait_processed(s, [w], 900)

    dlq = await h.read_all(s.kafka_bootstrap, s.dlq_topic)
    assert sorted(r.value for r in dlq) == sorted(v for _, v in poison)
    ref = h.reference(await h.read_all(s.kafka_bootstrap, s.events_topic), s)
    assert len(ref.event_ids) == len(good)
    assert h.differences(ref, await h.collect(s)) == []
    assert w.alive() and w.process is not None and w.process.pid == pid
    w.stop()
