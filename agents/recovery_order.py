"""Faust's table recovery, with the stream partitions sought *before* they are resumed.

Why (issue 7, the restart gap): when recovery ends, Faust 0.15.3
(`faust.tables.recovery.Recovery.on_recovery_completed` and `_resume_streams`)

1. resumes the stream partitions while the flow is already running (it was resumed to
   read the changelogs), so the fetcher starts delivering events into the stream queues;
2. then seeks the partitions to their committed offsets, which takes a broker round trip;
3. then resumes flow control, which *clears* the stream queues (`clear_on_resume=True`).

Events fetched during (2) were already counted as read (`Consumer._read_offset`), and a
batch fetched before the seek keeps arriving after it, so Faust takes the re-read events
below it for duplicates. The events cleared in (3) never reach an agent: a worker started
while others committed (a restart, a kill -9's replacement, a rebalance) could miss 10-20
events per partition. Seen and measured in docs/notes/restart-gap.md.

Here the order is: seek while the stream partitions are still paused, clear the queues,
then resume the partitions and the flow. Nothing of a stream partition is fetched before
its position is final, so nothing is cleared that was not fetched again.

A stream partition with no committed offset (a group that never committed, or whose
offsets expired: Kafka drops an empty group's offsets after `offsets.retention.minutes`,
7 days by default) is sought to its beginning (offset 0) too. aiokafka's `seek_to_committed` leaves
such a partition where it is, and during a recovery that read anything, the fetcher had
already reset it to the beginning and read on, so its position was past events that were
then cleared: they were never processed (found by bench/recovered_memory.py, pinned by
tests/integration/test_recovery.py). The consumer resets to "earliest" (pipeline/app.py):
with nothing committed, everything retained is still to be processed, and the redelivery
guard in the state makes re-reading idempotent.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery


class SeekFirstRecovery(Recovery):  # type: ignore[misc]
    """`Recovery` whose two hand-over methods seek before resuming (see the module doc).
    The rest of each method is Faust 0.15.3's, step for step."""

    def _stream_partitions(self) -> set[Any]:
        return {tp for tp in self.app.consumer.assignment() if not self._is_changelog_tp(tp)}

    async def _seek_then_resume(self) -> None:
        consumer = self.app.consumer
        streams = self._stream_partitions()
        if streams:
            consumer.pause_partitions(streams)  # already paused on assignment; made sure
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
            # perform_seek has just set the read offset of every assigned partition from
            # its committed offset: None or 0 means nothing was committed (or 0 was).
            uncommitted = {tp for tp in streams if not consumer._read_offset.get(tp)}
            if uncommitted:
                self.log.info("Seek uncommitted stream partitions to their beginning.")
                # Offset 0, set at once: where the log starts later (retention), aiokafka
                # resets to the earliest offset kept. (`seek_to_beginning` waits for a
                # ListOffsets round trip, a window in which the fetcher runs on.)
                for tp in sorted(uncommitted):
                    await consumer.seek(tp, 0)
        self.completed.set()
        self.log.info("Resuming flow...")
        self.app.flow_control.resume()  # clears the stream queues: nothing of `streams` in them
        if streams:
            consumer.resume_partitions(streams)
        consumer.resume_flow()
        await cast(Any, self.app)._fetcher.maybe_start()

    async def _resume_streams(self, generation_id: int = 0) -> None:
        app = self.app
        await app.on_rebalance_complete.send()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        await self._seek_then_resume()
        self.tables.on_actives_ready()
        self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        app = self.app
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        if app.consumer_generation_id != generation_id:
            self.log.warning(
                "Recovery rebalancing again app id %s param %s",
                app.consumer_generation_id,
                generation_id,
            )
            return
        await self._seek_then_resume()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


class SeekFirstTableManager(TableManager):  # type: ignore[misc]
    """Faust's table manager with `SeekFirstRecovery` (set as the app's `TableManager`)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
