"""Consumer lag and state size of this worker, refreshed by a Faust timer.

Lag per assigned partition of the events topic = log end offset - committed offset (what
Kafka's own tools report for the group). The log end comes from ListOffsets through Faust's
consumer; with the Tansu workaround on (agents.broker_compat) that is the corrected end, so
the lag is right on the embedded broker too. With the workaround off, Tansu's end is the
base offset of the last batch + 1 and the lag reads low by up to one batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sized

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted

from pipeline import metrics
from pipeline.settings import Settings

log = logging.getLogger(__name__)


async def partition_lag(app: faust.App, topic: str) -> dict[int, int] | None:
    """Lag of each partition of `topic` assigned to this worker; None if unknown now."""
    consumer = app.consumer
    try:
        tps = [tp for tp in consumer.assignment() if tp.topic == topic]
        if not tps:
            return {}
        ends = await consumer.highwaters(*tps)
        # Faust keeps the offsets it committed (and those found at assignment); private,
        # but a broker round trip per partition and tick would be the alternative.
        committed = {tp: consumer._committed_offset.get(tp) for tp in tps}
        never = [tp for tp, offset in committed.items() if offset is None]
        if never:  # nothing committed yet: the group starts from the earliest offset
            committed.update(await consumer.earliest_offsets(*never))
    except (KafkaError, ConsumerNotStarted, TimeoutError) as exc:
        log.info("consumer lag not available this time: %r", exc)
        return None
    return {
        tp.partition: ends[tp] - committed[tp]
        for tp in tps
        if ends.get(tp) is not None and committed.get(tp) is not None
    }


def register(app: faust.App, settings: Settings, table: Sized, backlog: Callable[[], int]) -> None:
    """Gauges refreshed on a timer, off the per-event path: people held, due-time index
    backlog (`backlog()`), consumer lag."""

    @app.timer(interval=settings.metrics_interval_seconds, name="touchflow-operations-gauges")
    async def refresh_gauges() -> None:
        metrics.people_in_state(len(table))
        metrics.due_index_backlog(backlog())
        if app.rebalancing or app.in_recovery:
            return  # assignment and offsets are moving; the next tick reports
        lag = await partition_lag(app, settings.events_topic)
        if lag is not None:
            metrics.consumer_lag(settings.events_topic, lag)
