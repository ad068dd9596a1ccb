"""Broker quirk workarounds, all in one place and switched on by `Settings.tansu_compat`.

Tansu answers ListOffsets(latest) with the base offset of the last record batch + 1, not
the log-end offset. Faust's table recovery reads each changelog partition only up to that
"high watermark", so after a restart the tail of every changelog partition would be
skipped and state would silently lose updates. The fix: take the reported offset as a
lower bound, fetch once from the last batch's base offset, and take the end from the
Fetch response's high watermark, which Tansu reports right.

Tansu also numbers a group's first generation 0; aiokafka leaves a group only from a
generation above 0, so `leave_group` leaves from 0 too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.commit_guard import GuardedCommitConsumer
from agents.consumer_tuning import TunedConsumerThread

log = logging.getLogger(__name__)


async def true_end_offsets(
    bootstrap: str | list[str], reported: Mapping[Any, int | None], timeout_s: float = 60.0
) -> dict[Any, int | None]:
    """Log-end offsets, given what the broker reported (keys are any (topic, partition) tuples).

    Tansu's Fetch responses carry the right high watermark where its ListOffsets does
    not: fetch once from the last batch of each partition and read it from there. (Reading
    on "until a fetch comes back empty" stopped early under load: a slow fetch looks like
    an empty one, and recovery then stopped short of the end.)"""
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
        pending = set(tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while pending:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no fetch answered for {sorted(pending)} in {timeout_s}s")
            await consumer.getmany(*pending, timeout_ms=500)
            for ktp in list(pending):
                end = consumer.highwater(ktp)  # set by the partition's first fetch response
                if end is not None:
                    tp = tps[ktp]
                    result[tp] = max(result[tp] or 0, end)
                    pending.discard(ktp)
    finally:
        await consumer.stop()
    moved = {tp: (reported[tp], result[tp]) for tp in reported if result[tp] != reported[tp]}
    if moved:
        log.info("log-end offsets corrected (reported -> true): %s", moved)
    return result


async def leave_group(coordinator: Any) -> None:
    """aiokafka's `_maybe_leave_group`, also from generation 0.

    aiokafka sends LeaveGroup only when `generation > 0` (Apache Kafka numbers a group's
    generations from 1). Tansu numbers them from 0, so the first member of a new group
    never left it on a graceful stop, and the next worker to join waited until the broker
    gave that member up (~110 s measured in tests/integration/test_recovery.py)."""
    if coordinator.generation == 0 and coordinator.member_id and not coordinator._group_instance_id:
        request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
        try:
            await coordinator._send_req(request)
        except KafkaError as err:
            log.error("LeaveGroup request failed: %s", err)
        else:
            log.info("LeaveGroup request succeeded (generation 0)")
        coordinator.reset_generation()
        return
    await type(coordinator)._maybe_leave_group(coordinator)


class _TrueEndConsumerThread(TunedConsumerThread):
    async def on_start(self) -> None:
        await super().on_start()
        coordinator = self._consumer._coordinator
        coordinator._maybe_leave_group = functools.partial(leave_group, coordinator)

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
