"""Quantile scoring on the real stack: thresholds computed by ClickHouse from a brand's
buyers, published to the thresholds topic, picked up by a running worker."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right

import pytest

from pipeline.events import EventType, Purchase, Touchpoint, UserRef
from pipeline.identity import person_id_for
from pipeline.settings import Settings
from sinks import quantiles
from sinks.writer import ClickHouseSink
from tests.integration.helpers import async_wait_until, publish

pytestmark = pytest.mark.integration


def _buy(n: int, amount: int, at: int) -> Touchpoint:
    user = UserRef("member_id", f"h1:{n:032x}")
    return Touchpoint(
        f"b{n}", EventType.PURCHASE, "lumi", "store", user, at, Purchase(f"o{n}", amount)
    )


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"rfm_quantile_brands": ["lumi"], "rules": {}})


async def test_published_quantile_thresholds_rescore_the_brand(
    settings: Settings, sink: ClickHouseSink, workers
) -> None:
    now = int(time.time() * 1000) - 60_000
    await publish(settings, [_buy(n, 10_000 * n, now) for n in range(1, 11)])
    workers()

    async def stored() -> bool:
        rows = await sink.query("SELECT count() FROM person_state FINAL WHERE m > 0")
        return rows[0][0] == 10

    await async_wait_until(stored, 90, "10 buyers stored")
    published = await quantiles.refresh(sink.query, settings)
    assert [(t.brand, t.buyers) for t in published] == [("lumi", 10)]
    monetary = published[0].policy.monetary_minor
    assert monetary[0] < monetary[1] < monetary[2] < monetary[3] <= 95_000 < 100_000

    # 950 yuan scores M3 on the fixed thresholds (200/500/1000/3000 yuan) but M5 among
    # these buyers. Probes go on until the worker has read the new thresholds and every
    # partition has had an event (the brand's people are re-scored on the next one).
    probe = 100
    expected = sorted(1 + bisect_right(monetary, 10_000 * n) for n in range(1, 11))
    assert expected != sorted([1, 2, 2, 2, 3, 3, 3, 3, 3, 4])  # what fixed thresholds give

    async def rescored() -> bool:
        nonlocal probe
        probe += 1
        await publish(settings, [_buy(probe, 95_000, int(time.time() * 1000) - 1000)])
        # The probe's state reaches the store once the worker writes its held states.
        await asyncio.sleep(settings.worker_state_write_seconds + 1.0)
        rows = await sink.query(
            "SELECT m FROM person_state FINAL WHERE person_id = {p:String}",
            {"p": person_id_for(_buy(probe, 0, 0).user)},
        )
        buyers = await sink.query(
            "SELECT m FROM person_state FINAL WHERE person_id IN {ids:Array(String)} ORDER BY m",
            {"ids": [person_id_for(_buy(n, 0, 0).user) for n in range(1, 11)]},
        )
        return rows == [(5,)] and [m for (m,) in buyers] == expected

    await async_wait_until(rescored, 90, "new and existing buyers scored on the quantiles")
