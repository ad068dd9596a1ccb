"""Prometheus metrics: declared once here, with fixed label names; adapters call the small
functions below (one line at each place something happens).

Two registries, one per process role, so each endpoint exports only what that role
measures: WORKER (`touchflow worker`, served at /metrics on the Faust web port) and SINK
(`touchflow sink`, served on `Settings.sink_metrics_port`). Names and labels are the
contract with deploy/prometheus/alerts.yml and deploy/grafana (tests check both ways).

Labels only ever carry bounded values: event type, reason code, segment names, table,
topic/partition, and the brand and channel slugs (capped, see `_Bounded`). Never a person
id, user id or event id.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase

from pipeline.errors import Reason
from pipeline.events import Touchpoint

WORKER = CollectorRegistry()
SINK = CollectorRegistry()
ProcessCollector(registry=WORKER)
ProcessCollector(registry=SINK)

NONE = "none"  # label value for "no segment yet" (from_value of a first change)
OTHER = "other"  # label value for a brand/channel beyond the cap or not a slug

_SECONDS_IN_WORKER = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_SECONDS_END_TO_END = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_SECONDS_EVENT_AGE = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400)
_SECONDS_SINK_BATCH = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# -- worker ---------------------------------------------------------------------------------

EVENTS_CONSUMED = Counter(
    "touchflow_events_consumed_total",
    "Events accepted by the segmentation agent (passed the contract).",
    ["type", "channel", "brand"],
    registry=WORKER,
)
EVENTS_REJECTED = Counter(
    "touchflow_events_rejected_total",
    "Events that broke the contract, by reason code (pipeline.errors.Reason).",
    ["reason"],
    registry=WORKER,
)
EVENTS_DEAD_LETTERED = Counter(
    "touchflow_events_dead_lettered_total",
    "Messages written to the dead-letter topic, by reason code.",
    ["reason"],
    registry=WORKER,
)
DUPLICATES_DROPPED = Counter(
    "touchflow_duplicates_dropped_total",
    "Events dropped because their event id was already applied for that person.",
    registry=WORKER,
)
LATE_EVENTS = Counter(
    "touchflow_late_events_total",
    "Events older than their partition's watermark (applied, scored at the newer clock).",
    registry=WORKER,
)
REDELIVERED_SKIPPED = Counter(
    "touchflow_redelivered_skipped_total",
    "Records at or below a state's last applied offset (redelivered after a restart).",
    registry=WORKER,
)
SEGMENT_CHANGES = Counter(
    "touchflow_segment_changes_total",
    "Segment changes sent, by dimension and the values it moved between.",
    ["dimension", "from_value", "to_value"],
    registry=WORKER,
)
PROCESSING_LATENCY = Histogram(
    "touchflow_processing_latency_seconds",
    "Time in the worker per accepted event: fetched -> state stored and changes sent.",
    buckets=_SECONDS_IN_WORKER,
    registry=WORKER,
)
EMIT_LATENCY = Histogram(
    "touchflow_emit_latency_seconds",
    "Kafka record timestamp of the causing event (ingest) -> its segment change sent.",
    buckets=_SECONDS_END_TO_END,
    registry=WORKER,
)
EVENT_AGE = Histogram(
    "touchflow_event_age_seconds",
    "Event time of the causing event -> its segment change sent (late data, replays).",
    buckets=_SECONDS_EVENT_AGE,
    registry=WORKER,
)
CONSUMER_LAG = Gauge(
    "touchflow_consumer_lag",
    "Records not yet committed by this worker: log end - committed offset, per partition.",
    ["topic", "partition"],
    registry=WORKER,
)
PEOPLE_IN_STATE = Gauge(
    "touchflow_people_in_state",
    "(brand, person) states held by this worker (its active partitions).",
    registry=WORKER,
)
FETCHED_RECORDS = Counter(
    "touchflow_fetched_records_total",
    "Records the worker's fetch loop handed to its agents, by topic and by how: `bulk`, a "
    "partition's fetched batch at once (agents.bulk_delivery), or `per_message`, through "
    "Faust's conductor (changelogs, topics with several readers).",
    ["topic", "delivery"],
    registry=WORKER,
)
DUE_INDEX_BACKLOG = Gauge(
    "touchflow_due_index_backlog",
    "Entries in the workers' due-time index (people with a time-based change ahead).",
    registry=WORKER,
)

# -- sink -----------------------------------------------------------------------------------

SINK_ROWS = Counter(
    "touchflow_sink_rows_total",
    "Rows stored in ClickHouse, by table.",
    ["table"],
    registry=SINK,
)
SINK_BATCHES = Counter(
    "touchflow_sink_batches_total",
    "Batches stored in ClickHouse, by table.",
    ["table"],
    registry=SINK,
)
SINK_INSERT_FAILURES = Counter(
    "touchflow_sink_insert_failures_total",
    "Failed insert attempts, by table (each is retried with backoff).",
    ["table"],
    registry=SINK,
)
SINK_RETRIES = Counter(
    "touchflow_sink_retries_total",
    "Insert attempts that were retries of a failed one, by table.",
    ["table"],
    registry=SINK,
)
SINK_BATCH_SECONDS = Histogram(
    "touchflow_sink_batch_seconds",
    "Time to store one batch: every table's insert (retries included) and the offset commit.",
    buckets=_SECONDS_SINK_BATCH,
    registry=SINK,
)

# -- automations and the webhook bridge (pipeline.automation, pipeline.webhooks) -------------
# Their own registry: served by `touchflow webhooks` (and any automation that calls `serve`).
# `consumer` / `endpoint` are names from the operator's configuration: bounded.

AUTOMATION = CollectorRegistry()
_SECONDS_WEBHOOK = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

AUTOMATION_CHANGES = Counter(
    "touchflow_automation_changes_total",
    "Segment changes seen by an automation consumer, by outcome: handled, filtered, "
    "duplicate (seq already handled), dead_lettered.",
    ["consumer", "outcome"],
    registry=AUTOMATION,
)
AUTOMATION_HANDLER_FAILURES = Counter(
    "touchflow_automation_handler_failures_total",
    "Handler attempts that raised (each is retried with back-off, then dead-lettered).",
    ["consumer"],
    registry=AUTOMATION,
)
WEBHOOK_REQUESTS = Counter(
    "touchflow_webhook_requests_total",
    "HTTP requests to a webhook endpoint, by result: 2xx, 3xx, 4xx, 5xx, timeout, error.",
    ["endpoint", "result"],
    registry=AUTOMATION,
)
WEBHOOK_REQUEST_SECONDS = Histogram(
    "touchflow_webhook_request_seconds",
    "Time of one HTTP request to a webhook endpoint (any result).",
    ["endpoint"],
    buckets=_SECONDS_WEBHOOK,
    registry=AUTOMATION,
)
WEBHOOK_THROTTLED = Counter(
    "touchflow_webhook_throttled_total",
    "Requests that waited for the endpoint's rate limit (token bucket).",
    ["endpoint"],
    registry=AUTOMATION,
)
WEBHOOK_RESULTS = ("2xx", "3xx", "4xx", "5xx", "timeout", "error")

# -- pre-bound children ---------------------------------------------------------------------

M = TypeVar("M", bound=MetricWrapperBase)


class _Children(Generic[M]):
    """`metric.labels(...)` once per label tuple; the hot path is one dict lookup."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._cache.get(labels)
        if child is None:
            child = self._cache[labels] = self._metric.labels(*labels)
        return child

    def forget(self, *labels: str) -> None:
        if self._cache.pop(labels, None) is not None:
            self._metric.remove(*labels)


class _Bounded:
    """Label values that producers control (brand, channel): slugs only, at most `limit`
    distinct ones; anything else counts as "other", so neither an id sent in the wrong
    field nor a flood of typos can leak into labels or explode the series count."""

    _SLUG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,47}")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit or not self._SLUG.fullmatch(value):
            return OTHER
        self._seen.add(value)
        return value


_consumed = _Children(EVENTS_CONSUMED)
_rejected = _Children(EVENTS_REJECTED)
_dead_lettered = _Children(EVENTS_DEAD_LETTERED)
_changes = _Children(SEGMENT_CHANGES)
_lag = _Children(CONSUMER_LAG)
_fetched = _Children(FETCHED_RECORDS)
_sink_rows = _Children(SINK_ROWS)
_sink_batches = _Children(SINK_BATCHES)
_sink_failures = _Children(SINK_INSERT_FAILURES)
_sink_retries = _Children(SINK_RETRIES)
_brand = _Bounded(limit=200)
_channel = _Bounded(limit=50)
_lag_partitions: dict[str, set[int]] = {}

# Every reason exists from the start (value 0), so rate() and alerts see the first one.
for _reason in Reason:
    _rejected(_reason.value)
    _dead_lettered(_reason.value)


class _Change(Protocol):
    @property
    def dimension(self) -> str: ...
    @property
    def from_value(self) -> str | None: ...
    @property
    def to_value(self) -> str | None: ...
    @property
    def event_time(self) -> int: ...


# -- what the worker calls ------------------------------------------------------------------


def event_consumed(tp: Touchpoint) -> None:
    _consumed(tp.type.value, _channel(tp.channel), _brand(tp.brand)).inc()


def rejected(reason: Reason) -> None:
    """An event broke the contract and was dead-lettered (every rejection is)."""
    _rejected(reason.value).inc()
    _dead_lettered(reason.value).inc()


def dead_lettered(reason: Reason) -> None:
    """A message went to the DLQ for another cause than a contract rejection."""
    _dead_lettered(reason.value).inc()


def duplicate_dropped() -> None:
    DUPLICATES_DROPPED.inc()


def late_event() -> None:
    LATE_EVENTS.inc()


def redelivered_skipped() -> None:
    REDELIVERED_SKIPPED.inc()


def segment_changes(
    sent: Iterable[tuple[_Change, float | None]], clock: Callable[[], float] = time.time
) -> None:
    """Changes were sent, each with its causing record's Kafka timestamp (ingest, in s):
    each counted by its values, its emit latency and event age observed; every counter
    and histogram bucket moved once per call."""
    now = clock()
    counts: dict[tuple[str, str, str], int] = {}
    emitted: list[float] = []
    ages: list[float] = []
    for change, ingest_s in sent:
        labels = (change.dimension, change.from_value or NONE, change.to_value or NONE)
        counts[labels] = counts.get(labels, 0) + 1
        if ingest_s:
            emitted.append(max(0.0, now - ingest_s))
        ages.append(max(0.0, now - change.event_time / 1000))
    for labels, n in counts.items():
        _changes(*labels).inc(n)
    observe_all(EMIT_LATENCY, emitted)
    observe_all(EVENT_AGE, ages)


def events_processed(started_monotonic: Iterable[float | None]) -> None:
    """Accepted events are done; each `started_monotonic` is when the worker fetched one."""
    now = time.monotonic()
    observe_all(PROCESSING_LATENCY, [max(0.0, now - s) for s in started_monotonic if s is not None])


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """`histogram.observe(a)` for each of `amounts`, each bucket and the sum moved once.

    Why: `observe` scans the buckets in Python and takes two locks per value; the worker
    observes ~2 values per event (~3 % of its samples with the counters, docs/benchmarks.md).
    This uses the fields `observe` itself uses (prometheus_client 0.x, the range
    pyproject.toml allows; tests/unit/test_operations.py checks it against `observe`). A
    value lands in the first bucket whose upper bound is >= it, as in `observe`."""
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]
    if not amounts:
        return
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1
    histogram._sum.inc(sum(amounts))
    buckets = histogram._buckets
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)


def fetched(topic: str, delivery: str, n: int) -> None:
    """`n` fetched records of `topic` were delivered, `bulk` or `per_message`."""
    _fetched(topic, delivery).inc(n)


def consumer_lag(topic: str, lag: Mapping[int, int]) -> None:
    """Lag of the partitions of `topic` assigned here; partitions gone since are dropped."""
    for partition, records in lag.items():
        _lag(topic, str(partition)).set(max(0, records))
    gone = _lag_partitions.get(topic, set()) - set(lag)
    for partition in gone:
        _lag.forget(topic, str(partition))
    _lag_partitions[topic] = set(lag)


def people_in_state(count: int) -> None:
    PEOPLE_IN_STATE.set(count)


def due_index_backlog(count: int) -> None:
    DUE_INDEX_BACKLOG.set(count)


# -- what the sink calls --------------------------------------------------------------------


def sink_tables(tables: Iterable[str]) -> None:
    """Declare the sink's tables, so every per-table series exists (at 0) from the start."""
    for table in tables:
        for children in (_sink_rows, _sink_batches, _sink_failures, _sink_retries):
            children(table)


def sink_stored(table: str, rows: int) -> None:
    _sink_rows(table).inc(rows)
    _sink_batches(table).inc()


def sink_insert_failed(table: str) -> None:
    _sink_failures(table).inc()


def sink_insert_retried(table: str) -> None:
    _sink_retries(table).inc()


def sink_batch_done(seconds: float) -> None:
    SINK_BATCH_SECONDS.observe(seconds)


# -- what automations and the webhook bridge call -------------------------------------------


class AutomationChildren:
    """One consumer's pre-bound counters (every outcome exists at 0 from the start)."""

    def __init__(self, consumer: str) -> None:
        self.handled = AUTOMATION_CHANGES.labels(consumer, "handled")
        self.filtered = AUTOMATION_CHANGES.labels(consumer, "filtered")
        self.duplicate = AUTOMATION_CHANGES.labels(consumer, "duplicate")
        self.dead_lettered = AUTOMATION_CHANGES.labels(consumer, "dead_lettered")
        self.failure = AUTOMATION_HANDLER_FAILURES.labels(consumer)


def automation_consumer(consumer: str) -> AutomationChildren:
    return AutomationChildren(consumer)


class WebhookChildren:
    """One endpoint's pre-bound children."""

    def __init__(self, endpoint: str) -> None:
        self.results = {r: WEBHOOK_REQUESTS.labels(endpoint, r) for r in WEBHOOK_RESULTS}
        self.seconds = WEBHOOK_REQUEST_SECONDS.labels(endpoint)
        self.throttled = WEBHOOK_THROTTLED.labels(endpoint)


def webhook_endpoint(endpoint: str) -> WebhookChildren:
    return WebhookChildren(endpoint)


# -- export ---------------------------------------------------------------------------------


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> Callable[[], None]:
    """Serve `registry` over HTTP (any path, e.g. /metrics) from a daemon thread; returns
    the function that stops it. For processes without a web server of their own (the sink)."""
    server, thread = start_http_server(port, addr, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
