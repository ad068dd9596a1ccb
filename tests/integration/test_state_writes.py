"""The worker writes a busy person's state once per `worker_state_write_seconds`, not once
per micro-batch (agents.write_behind.StateWrites), while each batch's segment changes go
out at once; and once its input is idle for a batch window (agents.batches), it stores,
acknowledges and commits the last batches without waiting for the interval."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline import demo
from pipeline.broker import EmbeddedBroker, ensure_topics
from pipeline.codec import Codecs
from pipeline.events import UserRef
from pipeline.identity import person_id_for
from pipeline.pii import pseudonymise
from pipeline.state import state_key
from tests.integration.helpers import (
    PII_KEY,
    Worker,
    async_wait_until,
    isolated_settings,
    publish,
    read_topic,
)
from tests.integration.test_recovery import chats

pytestmark = pytest.mark.integration

EVENTS = 30
# A batch window longer than reading the first changes and publishing the rest takes, even
# on a slow box (the held state must still be held then), and an interval far longer than
# the wait for the commit below (so only the idle input can have stored the last batches).
WINDOW_SECONDS = 5.0
HOLD_SECONDS = 120.0


async def records_of(bootstrap: str, topic: str, key: bytes) -> list[Any]:
    """Every record of `topic` under `key`, as far as the topic holds them now."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Any] = []
    try:
        while fetched := await consumer.getmany(timeout_ms=1000):
            found += [m for msgs in fetched.values() for m in msgs if m.key == key]
    finally:
        await consumer.stop()
    return found


@pytest.mark.timeout(300)
async def test_a_busy_person_is_written_once_while_traffic_flows_and_stored_once_it_stops(
    broker: EmbeddedBroker, chdb_dsn: str, tmp_path: Path
) -> None:
    # One event per micro-batch: without the interval, each would write the state again.
    s = isolated_settings(
        broker.bootstrap,
        chdb_dsn,
        tmp_path / "var",
        partitions=1,
        worker_batch_events=1,
        worker_batch_seconds=WINDOW_SECONDS,
        worker_state_write_seconds=HOLD_SECONDS,
    )
    await ensure_topics(s.kafka_bootstrap, s)
    worker = Worker(s, tmp_path / "worker.log").start()
    try:
        ref = UserRef("openid", pseudonymise("openid", "o-busy", PII_KEY.encode()))
        key = state_key("lumi", person_id_for(ref)).encode()
        now = int(time.time() * 1000) - 3_600_000
        events = chats([ref], 0, EVENTS, now)

        await publish(s, events[:1])
        # Its segment changes (a first touch: stage, lifecycle) go out with its batch ...
        changes = await read_topic(s.kafka_bootstrap, s.changes_topic, 1, timeout=120)
        assert changes, worker.log_tail()
        # ... while its state is held (not yet a batch window without input).
        assert await records_of(s.kafka_bootstrap, s.changelog_topic, key) == []

        await publish(s, events[1:])
        ends = await demo.topic_ends(s.kafka_bootstrap, [s.events_topic])
        # Committed without another event, long before the interval: the input went idle.
        deadline = time.monotonic() + HOLD_SECONDS / 2
        assert await demo.wait_processed(s.kafka_bootstrap, s, ends, deadline), worker.log_tail()

        written = await async_wait_until(
            lambda: records_of(s.kafka_bootstrap, s.changelog_topic, key), 30, "the state written"
        )
        states = [Codecs().decode_state(m.value) for m in written]
        assert states[-1].version == EVENTS  # every event applied, the last one stored
        # 30 batches, held together (two writes if the box was slow enough for a batch
        # window to pass between the first event and the rest).
        assert len(written) <= 2, [st.version for st in states]
    finally:
        assert worker.stop() == 0, worker.log_tail()
