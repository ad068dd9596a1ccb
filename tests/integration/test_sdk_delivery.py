"""A broker that goes away before the batch is sent: `flush()` raises DeliveryError naming
the events that were not delivered. Uses its own short-lived broker, not the session one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.broker import EmbeddedBroker, ensure_topics
from pipeline.sdk import DeliveryError, Publisher
from pipeline.settings import Settings
from tests.integration.helpers import PII_KEY

pytestmark = pytest.mark.integration


def _chat(event_id: str) -> dict[str, object]:
    return {
        "event_id": event_id, "type": "chat", "brand": "lumi", "channel": "wecom",
        "user": {"id_type": "openid", "id": f"raw-{event_id}"},
        "occurred_at": int(time.time() * 1000),
        "payload": {"direction": "inbound", "party": "customer"},
    }  # fmt: skip


async def test_undelivered_events_are_named_at_flush(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log").start()
    settings = Settings(kafka_bootstrap=broker.bootstrap, partitions=1, pii_key=PII_KEY)
    try:
        await ensure_topics(broker.bootstrap, settings)
        # A long linger holds the batch in the producer until the broker is gone.
        publisher = await Publisher(settings, linger_ms=3_000, request_timeout_ms=1_500).start()
        for n in (1, 2):
            await publisher.publish(_chat(f"lost-{n}"))
    finally:
        broker.stop()
    with pytest.raises(DeliveryError) as caught:
        await publisher.stop()
    assert caught.value.event_ids == ["lost-1", "lost-2"]
    assert "lost-1, lost-2" in str(caught.value)
