"""RFM thresholds from the quantiles of each brand's buyers, computed in ClickHouse and
published to the thresholds topic for the workers (see pipeline.thresholds)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.kafka_security import client_options
from pipeline.rfm import policy_from_quantiles
from pipeline.settings import Settings
from pipeline.thresholds import BrandThresholds, applies_to
from sinks.rfm_sql import rfm_quantiles_query

log = logging.getLogger(__name__)


def compute(rows: list[tuple[Any, ...]], settings: Settings, now_ms: int) -> list[BrandThresholds]:
    """Thresholds for the quantile-scored brands from `rfm_quantiles_query` rows."""
    base = settings.policy()
    return [
        BrandThresholds(
            brand,
            policy_from_quantiles(base.rfm_for(brand), list(rq), list(oq), list(aq)),
            int(buyers),
            now_ms,
        )
        for brand, buyers, rq, oq, aq in rows
        if applies_to(brand, settings.rfm_quantile_brands)
    ]


async def publish(settings: Settings, thresholds: list[BrandThresholds]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", **client_options(settings)
    )
    await producer.start()
    try:
        for t in thresholds:
            key, value = t.encode()
            await producer.send_and_wait(settings.thresholds_topic, value, key=key)
    finally:
        await producer.stop()


async def refresh(query: Any, settings: Settings) -> list[BrandThresholds]:
    """Compute with `query` (an async SQL runner, e.g. ClickHouseSink.query) and publish."""
    sql = rfm_quantiles_query(settings.policy().rfm.window_days)
    thresholds = compute(await query(sql), settings, int(time.time() * 1000))
    await publish(settings, thresholds)
    return thresholds


async def refresh_every(query: Any, settings: Settings, stop: asyncio.Event) -> None:
    """The sink's schedule: refresh, then wait `rfm_quantiles_every_seconds`, until stopped."""
    while not stop.is_set():
        try:
            done = await refresh(query, settings)
            log.info("published RFM quantile thresholds for %d brands", len(done))
        except Exception as exc:  # a failed run must not stop the sink; the next one retries
            log.warning("RFM quantile refresh failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.rfm_quantiles_every_seconds)
