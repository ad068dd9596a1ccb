"""A partition's event-time clock across a restart (agents.partition_clocks).

The worker's tables are Faust tables; here each is its in-memory store (a dict behind
`.data`, which is all the engines touch) and the changelog sends are recorded, so the
adapter's bookkeeping is checked without a broker. The same restart against a real
worker and broker: tests/faults/test_restarts.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agents.partition_clocks import PartitionClocks, clock_key, decode_clock
from pipeline import state as core
from pipeline.engine import Outcome
from pipeline.events import Touchpoint
from pipeline.generator import TrafficGenerator
from pipeline.identity import person_id_for
from pipeline.rfm import MS_PER_DAY

POLICY = core.Policy()
LATENESS = 300_000
NOW = 20_400 * MS_PER_DAY


class Tables:
    """The state and clock tables one partition's worker keeps, and what reached their
    changelogs (partition, key, value), as a restart finds them."""

    def __init__(self) -> None:
        self.states = SimpleNamespace(data={})
        self.clocks = SimpleNamespace(data={})
        self.clock_records: list[tuple[int, bytes, bytes]] = []

    def worker(self, keep_clock: bool = True) -> PartitionClocks:
        async def changelog(partition: int, key: bytes, state: Any) -> None:
            pass  # flush already wrote the store; nothing else reads it here

        async def clock_changelog(partition: int, key: bytes, value: bytes) -> None:
            self.clock_records.append((partition, key, value))

        if not keep_clock:  # what a worker did before clocks were kept
            return PartitionClocks(POLICY, self.states, LATENESS, changelog)
        return PartitionClocks(
            POLICY, self.states, LATENESS, changelog, self.clocks, clock_changelog
        )


def traffic(n: int, span_days: int = 300) -> list[Touchpoint]:
    gen = TrafficGenerator(b"k" * 32, seed=5, referrals=False, second_channel_share=0.0)
    start = NOW - span_days * MS_PER_DAY
    return [gen.next_event(start + i * (span_days * MS_PER_DAY // n)) for i in range(n)]


async def run(clocks: PartitionClocks, events: list[Touchpoint], batch: int = 50) -> list[Any]:
    """Events through partition 0's engine in batches, each completed as the agent does:
    states flushed, then the clocks checkpointed. Returns the changes."""
    changes: list[Any] = []
    for start in range(0, len(events), batch):
        for e in events[start : start + batch]:
            out = Outcome()
            clocks.engine(0).on_event(e, person_id_for(e.user), -1, out)
            clocks.written(0, out)
            changes += out.changes
        await clocks.flush()
        await clocks.checkpoint()
    return changes


async def test_a_restarted_worker_continues_from_the_stored_clock() -> None:
    events = traffic(3_000)
    newest, older = events[-300:], events[:-300]  # then every older one is late

    never_stopped = Tables()
    expected = await run(never_stopped.worker(), newest + older)

    restarted = Tables()
    before = await run(restarted.worker(), newest)
    stored = decode_clock(restarted.clocks.data[clock_key(0)])
    assert stored == max(e.occurred_at for e in newest)
    after = await run(restarted.worker(), older)  # a new worker over the recovered tables
    assert before + after == expected

    fresh_clock = Tables()
    before = await run(fresh_clock.worker(), newest)
    after = await run(fresh_clock.worker(keep_clock=False), older)
    assert before + after != expected, "the workload never needed the clock"


async def test_a_clock_is_written_when_it_moves_and_read_again_after_a_revocation() -> None:
    tables = Tables()
    clocks = tables.worker()
    events = traffic(100)
    await run(clocks, events[:50], batch=25)
    latest = max(e.occurred_at for e in events[:50])
    assert tables.clock_records[-1] == (0, b"0", b"%d" % latest)
    written = len(tables.clock_records)

    assert not await clocks.checkpoint()  # nothing moved since: nothing sent
    await run(clocks, [e for e in events[:50] if e.occurred_at < latest][:10])  # late ones
    assert len(tables.clock_records) == written

    tables.clocks.data[clock_key(0)] = b"%d" % (latest + MS_PER_DAY)  # another owner's
    clocks.forget([0])
    assert clocks.engine(0).max_event_time == latest + MS_PER_DAY
