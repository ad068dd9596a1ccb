"""Builds the Faust app from Settings (wiring only; the logic is in the core modules)."""

from __future__ import annotations

from typing import Any

import faust

from agents import collector, lag, lookup, segmentation, web
from agents.broker_compat import TrueEndConsumer
from agents.commit_guard import GuardedCommitConsumer
from agents.partitioner import CachedPartitioner
from agents.recovery_order import SeekFirstTableManager
from agents.refilling_queue import RefillingQueue
from pipeline.codec import Codecs
from pipeline.kafka_security import faust_credentials
from pipeline.schema_registry import registry_for
from pipeline.settings import Settings


class TouchflowApp(faust.App):  # type: ignore[misc]
    """faust.App whose consumer commits only what is finished (agents.commit_guard) and can
    carry broker workarounds (agents.broker_compat), and whose stream buffers fill and
    drain in large steps (agents.refilling_queue)."""

    def __init__(
        self,
        *args: Any,
        tansu_compat: bool = False,
        fetch_max_wait_ms: int | None = None,
        freeze_after_recovery: bool = False,
        **kwargs: Any,
    ) -> None:
        self.tansu_compat = tansu_compat
        self.fetch_max_wait_ms = fetch_max_wait_ms  # agents.consumer_tuning
        self.freeze_after_recovery = freeze_after_recovery  # agents.collector
        super().__init__(*args, **kwargs)

    def on_rebalance_end(self) -> None:
        """Recovery has ended (Faust calls this just before it logs "Worker ready")."""
        super().on_rebalance_end()
        if self.freeze_after_recovery:
            collector.settle()

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        transport.Consumer = TrueEndConsumer if self.tansu_compat else GuardedCommitConsumer
        return transport

    def FlowControlQueue(
        self, maxsize: int | None = None, *, clear_on_resume: bool = False
    ) -> RefillingQueue:
        """Every stream buffer, and the changelog buffer recovery reads: agents.refilling_queue."""
        return RefillingQueue(
            maxsize=maxsize, flow_control=self.flow_control, clear_on_resume=clear_on_resume
        )


class QuietWorker(faust.Worker):  # type: ignore[misc]
    """faust.Worker without the terminal spinner. At log level warn and above the spinner
    sets the root logger to DEBUG (to spin on every record) and leaves it there, so every
    `logger.debug` in Faust's and aiokafka's per-message paths builds a LogRecord that the
    handler then drops: ~6 % of a busy worker's CPU (py-spy, docs/benchmarks.md)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None


def faust_broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap.split(","))


def create_app(settings: Settings, bootstrap: str | None = None) -> TouchflowApp:
    bootstrap = bootstrap or settings.kafka_bootstrap
    if bootstrap == "embedded":
        raise ValueError(
            "a worker needs a broker address: set TOUCHFLOW_KAFKA_BOOTSTRAP "
            "(`touchflow broker` starts a local one; `touchflow demo` wires everything)"
        )
    worker_dir = settings.data_dir / "faust" / f"worker-{settings.web_port}"
    worker_dir.mkdir(parents=True, exist_ok=True)
    app = TouchflowApp(
        settings.app_id,
        tansu_compat=settings.tansu_compat,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        freeze_after_recovery=settings.gc_freeze_after_recovery,
        broker=faust_broker_url(bootstrap),
        broker_credentials=faust_credentials(settings),
        store="memory://",
        Worker=QuietWorker,
        TableManager=SeekFirstTableManager,  # seek stream partitions before resuming them
        datadir=str(worker_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_partitioner=CachedPartitioner(),  # aiokafka's choice, hashes kept
        web_port=settings.web_port,
        canonical_url=settings.advertised_web_url(),  # where other workers forward lookups
        web_in_thread=False,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.worker_session_timeout_seconds,
        # The agents take messages in batches (agents.batches), which leaves the last
        # batch unacknowledged when an agent stops; waiting for it would
        # hang a SIGTERM. Safe without: what is not acknowledged is processed again, and
        # the agent finishes or drops a batch before a partition is handed over.
        stream_wait_empty=False,
    )
    codecs = Codecs(registry_for(settings.schema_registry_url))
    seg = segmentation.register(app, settings, codecs)
    web.register(app, settings)
    lookup.register(app, settings, codecs, seg)
    lag.register(app, settings, seg.table, seg.clocks.backlog)
    return app
