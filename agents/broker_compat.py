"""Broker quirk workarounds, all in one place and switched on by `Settings.tansu_compat`.

Tansu answers ListOffsets(latest) with the base offset of the last record batch + 1, not
the log-end offset. Faust's table recovery reads each changelog partition only up to that
"high watermark", so after a restart the tail of every changelog partition would be
skipped and state would silently lose updates. The fix: take the reported offset as a
lower bound and read from the last batch's base offset to the real end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.commit_guard import GuardedCommitConsumer

log = logging.getLogger(__name__)


async def true_end_offsets(
    bootstrap: str | list[str], reported: Mapping[Any, int | None], timeout_ms: int = 500
) -> dict[Any, int | None]:
    """Log-end offsets, given what the broker reported (keys are any (topic, partition) tuples)."""
    probe_from = {tp: off for tp, off in reported.items() if off}
    if not probe_from:
        return dict(reported)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    result: dict[Any, int | None] = dict(reported)
    try:
        tps = {TopicPartition(tp[0], tp[1]): tp for tp in probe_from}
        consumer.assign(list(tps))
        for ktp, tp in tps.items():
            consumer.seek(ktp, probe_from[tp] - 1)  # base offset of the last batch
        # Read on until a fetch comes back empty: only the last batch of each partition
        # (and anything appended since) is read, so this stays short.
        while fetched := await consumer.getmany(timeout_ms=timeout_ms):
            for ktp, msgs in fetched.items():
                tp = tps[ktp]
                result[tp] = max(result[tp] or 0, msgs[-1].offset + 1)
    finally:
        await consumer.stop()
    moved = {tp: (reported[tp], result[tp]) for tp in reported if result[tp] != reported[tp]}
    if moved:
        log.info("log-end offsets corrected (reported -> true): %s", moved)
    return result


class _TrueEndConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: Iterable[Any]) -> Mapping[Any, int]:
        reported = await super()._highwaters(list(partitions))
        if self.consumer.in_transaction:
            return reported
        servers = [f"{u.host}:{u.port or 9092}" for u in self.app.conf.broker_consumer]
        return await true_end_offsets(servers, reported)  # type: ignore[return-value]


class TrueEndConsumer(GuardedCommitConsumer):
    """Faust's aiokafka consumer (commits guarded), reporting true log-end offsets as
    highwaters."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _TrueEndConsumerThread(self, loop=self.loop, beacon=self.beacon)
