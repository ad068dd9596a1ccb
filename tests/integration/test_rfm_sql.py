"""The streamed RFM equals RFM computed by ClickHouse SQL from the stored events, for
every customer: random purchases and refunds over 400 days through the real broker,
worker and sink, then one query (sinks.rfm_sql) against person_state."""

from __future__ import annotations

import random
import time

import pytest

from pipeline.events import Chat, EventType, Purchase, Refund, Touchpoint, UserRef
from pipeline.rfm import MS_PER_DAY
from pipeline.settings import Settings
from sinks.rfm_sql import rfm_scores_query
from sinks.writer import ClickHouseSink
from tests.integration.helpers import async_wait_until, publish

pytestmark = pytest.mark.integration

PEOPLE = 40


def _history(seed: int, start: int) -> list[Touchpoint | bytes]:
    """Event-time ordered purchases, partial and whole refunds and chats of 40 people."""
    rnd = random.Random(seed)
    users = [UserRef("openid", "h1:" + f"{seed:08x}{n:024x}") for n in range(PEOPLE)]
    orders: dict[int, list[tuple[str, int]]] = {n: [] for n in range(PEOPLE)}
    events: list[Touchpoint | bytes] = []
    at = start
    for i in range(1500):
        at += rnd.randrange(0, 6 * 3_600_000)  # about 400 days in all
        n = rnd.randrange(PEOPLE)
        kind = rnd.random()
        if kind < 0.45 and len(orders[n]) < 8:  # refunds must find their order in state
            amount = rnd.randrange(1_000, 150_000)
            orders[n].append((f"o{i}", amount))
            payload: object = Purchase(f"o{i}", amount)
            etype = EventType.PURCHASE
        elif kind < 0.6 and orders[n]:
            order, paid = rnd.choice(orders[n])
            payload = Refund(order, rnd.choice([paid, paid // 2, paid // 3]))
            etype = EventType.REFUND
        else:
            payload, etype = Chat("inbound", "customer"), EventType.CHAT
        brand = "lumi" if n % 3 else "aurora"
        events.append(Touchpoint(f"e{i}", etype, brand, "wecom", users[n], at, payload))  # type: ignore[arg-type]
    # A last chat from everyone at one time: every clock ends on the same day.
    end = at + 3_600_000
    for n, user in enumerate(users):
        brand = "lumi" if n % 3 else "aurora"
        chat = Chat("inbound", "customer")
        events.append(Touchpoint(f"end{n}", EventType.CHAT, brand, "wecom", user, end, chat))
    return events


async def test_streamed_rfm_equals_sql_over_stored_events(
    settings: Settings, sink: ClickHouseSink, workers
) -> None:
    start = int(time.time() * 1000) - 420 * MS_PER_DAY
    events = _history(7, start)
    workers()
    await publish(settings, events)

    async def all_stored() -> bool:
        n = await sink.query("SELECT count() FROM events FINAL")
        return n[0][0] == len(events)

    await async_wait_until(all_stored, 120, f"{len(events)} events stored")
    end = max(e.occurred_at for e in events if isinstance(e, Touchpoint))

    async def all_applied() -> bool:
        n = await sink.query(
            "SELECT countIf(toUnixTimestamp64Milli(last_seen) = {end:Int64}) FROM person_state"
            " FINAL",
            {"end": end},
        )
        return n[0][0] == PEOPLE

    await async_wait_until(all_applied, 120, "every customer's last event applied and stored")

    async def states_settled() -> list[tuple[object, ...]]:
        return await sink.query(
            "SELECT brand, person_id, r, f, m, last_purchase_day FROM person_state FINAL"
            " WHERE lifetime_orders > 0 ORDER BY brand, person_id"
        )

    sql = rfm_scores_query(settings.policy().rfm)
    expected: list[tuple[object, ...]] = []

    expected = [(*row[:5], row[7]) for row in await sink.query(sql)]
    assert expected == await states_settled()
    assert len(expected) >= PEOPLE // 2  # most customers kept at least one order
    assert len({row[2:5] for row in expected}) > 5  # and the scores are varied
