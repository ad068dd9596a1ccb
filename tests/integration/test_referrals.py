"""KOC on the real stack: a sharer whose invitee makes a first purchase within 30 days of
joining gets the `koc` tag, credited in the sharer's own partition — with and without
identity resolution."""

from __future__ import annotations

import time

import pytest

from pipeline.events import EventType, Join, Purchase, Share, Touchpoint, UserRef
from pipeline.identity import seed_of
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration.helpers import async_wait_until, openid_where, publish

pytestmark = pytest.mark.integration


def _two_partitions(partitions: int) -> tuple[UserRef, UserRef]:
    sharer = UserRef("unionid", "h1:" + "5" * 32)
    return sharer, openid_where(partitions, sharer, same=False)


@pytest.fixture(params=[False, True], ids=["plain", "identity-resolution"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    return settings.model_copy(update={"identity_resolution": request.param})


async def test_an_invitees_first_purchase_makes_the_sharer_a_koc(
    settings: Settings, sink: ClickHouseSink, workers
) -> None:
    sharer, invitee = _two_partitions(settings.partitions)
    now = int(time.time() * 1000) - 10 * 86_400_000

    def ev(eid: str, user: UserRef, etype: EventType, at: int, payload: object) -> Touchpoint:
        return Touchpoint(eid, etype, "lumi", "wechat_oa", user, at, payload)  # type: ignore[arg-type]

    workers()
    await publish(
        settings,
        [
            *(
                ev(f"s{i}", sharer, EventType.SHARE, now + i, Share("live-1", invitee))
                for i in range(3)
            ),
            ev("join", invitee, EventType.JOIN, now + 60_000, Join("follow", "referral", sharer)),
            ev("buy", invitee, EventType.PURCHASE, now + 86_400_000, Purchase("o1", 9_900)),
        ],
    )

    async def koc() -> bool:
        rows = await sink.query(
            "SELECT cause_event_id FROM segment_changes FINAL"
            " WHERE person_id = {p:String} AND dimension = 'tag' AND to_value = 'koc'",
            {"p": seed_of(sharer)},
        )
        return rows == [(f"referral:{seed_of(invitee)}",)]

    await async_wait_until(koc, 90, "the sharer tagged koc by the invitee's purchase")

    async def state() -> list[tuple[int, int, int]]:
        return await sink.query(
            "SELECT shares, invitations, has(tags, 'koc') FROM person_state FINAL"
            " WHERE person_id = {p:String}",
            {"p": seed_of(sharer)},
        )

    # The state reaches ClickHouse from the changelog, which the worker writes after the
    # change is acknowledged and the sink reads apart from the changes topic: it may land
    # a moment after the change row.
    await async_wait_until(lambda: _is(state, [(3, 3, 1)]), 30, "the sharer's state stored")
    assert await state() == [(3, 3, 1)]


async def _is(query, expected) -> bool:  # type: ignore[no-untyped-def]
    return await query() == expected
