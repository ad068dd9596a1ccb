"""Follows the RFM thresholds topic and hands each brand's new thresholds to the engines.

A plain consumer without a group (every worker reads every brand), from the earliest
offset, so a starting worker scores with the latest published thresholds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import faust
from aiokafka import AIOKafkaConsumer

from pipeline.kafka_security import client_options
from pipeline.rfm import RfmPolicy
from pipeline.settings import Settings
from pipeline.thresholds import applies_to, decode

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings, apply: Callable[[str, RfmPolicy], None]) -> None:
    if not settings.rfm_quantile_brands:
        return

    @app.task  # type: ignore[misc]
    async def follow_thresholds() -> None:
        consumer = AIOKafkaConsumer(
            settings.thresholds_topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            **client_options(settings),
        )
        await consumer.start()
        try:
            async for msg in consumer:
                try:
                    t = decode(msg.key or b"", msg.value or b"")
                except ValueError as exc:
                    log.warning("skipping thresholds record at offset %d: %s", msg.offset, exc)
                    continue
                if applies_to(t.brand, settings.rfm_quantile_brands):
                    apply(t.brand, t.policy)
                    log.info("brand %s: RFM thresholds from %d buyers", t.brand, t.buyers)
        finally:
            await consumer.stop()
