"""Time moves segments on the real stack: a customer who stops buying becomes at risk,
dormant and churned with no event of their own, when the partition's event-time clock
passes their due times. The clock is controlled by the event times we publish: another
customer on the same partition sends one event a day for 300 days.
"""

from __future__ import annotations

import time

import pytest

from pipeline.codec import Codecs
from pipeline.events import Chat, EventType, Purchase, Touchpoint, UserRef
from pipeline.identity import person_id_for
from pipeline.rfm import MS_PER_DAY
from pipeline.settings import Settings
from pipeline.state import TIME_CAUSE
from sinks.writer import ClickHouseSink
from tests.integration.helpers import async_wait_until, openid_where, publish, read_topic

pytestmark = pytest.mark.integration


def _same_partition_users(partitions: int) -> tuple[UserRef, UserRef]:
    """Two customers whose events share a partition (the producer's own partitioner)."""
    first = UserRef("openid", "h1:" + f"{1:032x}")
    return first, openid_where(partitions, first, same=True, skip=2)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Only RFM, AIPL and lifecycle: the expected list below stays short.
    return settings.model_copy(update={"rules": {}, "allowed_lateness_seconds": 0.0})


async def test_a_quiet_customer_moves_on_the_partition_clock(
    settings: Settings, sink: ClickHouseSink, workers
) -> None:
    quiet, busy = _same_partition_users(settings.partitions)
    pq = person_id_for(quiet)
    day0 = (int(time.time() * 1000) - 400 * MS_PER_DAY) // MS_PER_DAY
    t0 = day0 * MS_PER_DAY + 3_600_000  # 01:00 UTC on day0
    events: list[Touchpoint | bytes] = [
        Touchpoint("q-buy", EventType.PURCHASE, "lumi", "store", quiet, t0, Purchase("o1", 30_000))
    ]
    events += [
        Touchpoint(
            f"b-{d}", EventType.CHAT, "lumi", "wecom", busy, t0 + d * MS_PER_DAY,
            Chat("outbound", "bot"),
        )
        for d in range(1, 301)
    ]  # fmt: skip
    worker = workers()
    await publish(settings, events)

    # The quiet customer: 3 changes from the purchase, then lifecycle and segment moves in
    # time: active (day 30), R drops below "high" on day 91 (general_develop ->
    # general_retain), at risk (day 60), dormant (120), churned (240).
    expected = [
        ("rfm_segment", None, "general_develop", "q-buy", t0),
        ("aipl_stage", "A", "P", "q-buy", t0),
        ("lifecycle", None, "new", "q-buy", t0),
        ("lifecycle", "new", "active", TIME_CAUSE, (day0 + 30) * MS_PER_DAY),
        ("lifecycle", "active", "at_risk", TIME_CAUSE, (day0 + 60) * MS_PER_DAY),
        ("rfm_segment", "general_develop", "general_retain", TIME_CAUSE, (day0 + 91) * MS_PER_DAY),
        ("lifecycle", "at_risk", "dormant", TIME_CAUSE, (day0 + 120) * MS_PER_DAY),
        ("lifecycle", "dormant", "churned", TIME_CAUSE, (day0 + 240) * MS_PER_DAY),
    ]
    records = await read_topic(
        settings.kafka_bootstrap, settings.changes_topic, len(expected), timeout=120
    )
    assert worker.alive(), worker.log_tail()
    codecs = Codecs()
    mine = [c for c in map(codecs.decode_change, (r.value for r in records)) if c.person_id == pq]
    assert [
        (c.dimension, c.from_value, c.to_value, c.cause_event_id, c.event_time) for c in mine
    ] == expected
    assert [c.seq for c in mine] == list(range(1, len(expected) + 1))
    assert mine[-1].rule == "lifecycle:churned/gap>=240d"

    async def stored() -> bool:
        rows = await sink.query(
            "SELECT lifecycle, rfm_segment, toUnixTimestamp64Milli(as_of) FROM person_state FINAL"
            " WHERE person_id = {p:String}",
            {"p": pq},
        )
        return rows == [("churned", "general_retain", (day0 + 240) * MS_PER_DAY)]

    await async_wait_until(stored, 60, "the quiet customer's churned state in ClickHouse")
    causes = await sink.query(
        "SELECT cause, count() FROM segment_changes FINAL WHERE person_id = {p:String}"
        " GROUP BY cause ORDER BY cause",
        {"p": pq},
    )
    assert causes == [("event", 3), ("time", 5)]
