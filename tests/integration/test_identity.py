"""One customer across channels on the real stack (identity_resolution on): a member id in
the store and an openid in the mini-program are two people until an identify event links
them; then their states merge into the smaller id, an `identity` change says so, and later
events of either identity land on the merged person."""

from __future__ import annotations

import time

import pytest

from pipeline.codec import Codecs
from pipeline.events import EventType, Identify, Purchase, Touchpoint, UserRef
from pipeline.identity import seed_of
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration.helpers import async_wait_until, openid_where, publish, read_topic

pytestmark = pytest.mark.integration


def _users_on_two_partitions(partitions: int) -> tuple[UserRef, UserRef]:
    member = UserRef("member_id", "h1:" + "a" * 32)
    return member, openid_where(partitions, member, same=False)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"identity_resolution": True, "rules": {}})


async def test_an_identify_event_merges_two_people_into_one(
    settings: Settings, sink: ClickHouseSink, workers
) -> None:
    member, openid = _users_on_two_partitions(settings.partitions)
    pm, po = seed_of(member), seed_of(openid)
    keep, gone = min(pm, po), max(pm, po)
    gone_user = member if gone == pm else openid
    now = int(time.time() * 1000) - 3_600_000

    def ev(eid: str, user: UserRef, etype: EventType, at: int, payload: object) -> Touchpoint:
        return Touchpoint(eid, etype, "lumi", "store", user, at, payload)  # type: ignore[arg-type]

    worker = workers()
    await publish(
        settings,
        [
            ev("buy-m", member, EventType.PURCHASE, now, Purchase("o1", 30_000)),
            ev("buy-o", openid, EventType.PURCHASE, now + 1, Purchase("o2", 40_000)),
        ],
    )

    async def people(n: int) -> bool:
        rows = await sink.query("SELECT count() FROM person_state FINAL")
        return rows[0][0] == n

    await async_wait_until(lambda: people(2), 90, "two separate people first")
    await publish(settings, [ev("link", openid, EventType.IDENTIFY, now + 2, Identify((member,)))])

    codecs = Codecs()

    async def merged() -> bool:
        rows = await sink.query(
            "SELECT from_value, to_value, cause_event_id FROM segment_changes FINAL"
            " WHERE dimension = 'identity'"
        )
        return rows == [(gone, keep, f"merge:{gone}")]

    await async_wait_until(merged, 90, "an identity change for the merge")
    assert worker.alive(), worker.log_tail()

    # Later events of the absorbed identity land on the survivor.
    await publish(
        settings, [ev("again", gone_user, EventType.PURCHASE, now + 3, Purchase("o3", 5_000))]
    )

    async def three_orders() -> bool:
        rows = await sink.query(
            "SELECT lifetime_orders, lifetime_amount_minor, aipl_stage FROM person_state FINAL"
            " WHERE person_id = {p:String}",
            {"p": keep},
        )
        return rows == [(3, 75_000, "L")]

    await async_wait_until(three_orders, 90, "the survivor holding all three orders")
    changes = await read_topic(settings.kafka_bootstrap, settings.changes_topic, 1)
    keys = {codecs.decode_change(r.value).person_id for r in changes}
    assert keys <= {keep, gone}
    current = await sink.query(
        "SELECT person_id FROM current_people WHERE brand = 'lumi' ORDER BY person_id"
    )
    assert current == [(keep,)]
