"""Metrics helpers and readiness logic, without a broker (the real stack is in
tests/integration/test_metrics.py)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram

from agents.web import clickhouse_check, clickhouse_ping_url, readiness
from pipeline import metrics
from pipeline.broker import free_port
from pipeline.errors import Reason
from pipeline.events import EventType, Join, Touchpoint, UserRef


def sample(name: str, **labels: str) -> float:
    value = metrics.WORKER.get_sample_value(name, labels)
    return 0.0 if value is None else value


def touchpoint(brand: str, channel: str) -> Touchpoint:
    user = UserRef("openid", "h1:0123456789abcdef")
    return Touchpoint("e-1", EventType.JOIN, brand, channel, user, 0, Join("follow"))


def test_producer_controlled_labels_are_slugs_and_capped() -> None:
    bounded = metrics._Bounded(limit=2)
    assert bounded("wecom") == "wecom"
    assert bounded("h1:0123456789abcdef") == metrics.OTHER  # an id in the wrong field
    assert bounded("WeChat OA") == metrics.OTHER
    assert bounded("douyin") == "douyin"
    assert bounded("xiaohongshu") == metrics.OTHER  # over the cap
    assert bounded("wecom") == "wecom"  # known values keep their label


def test_event_consumed_never_labels_an_id() -> None:
    before = sample("touchflow_events_consumed_total", type="join", channel="other", brand="lumi")
    metrics.event_consumed(touchpoint("lumi", "h1:feedface00000000"))
    after = sample("touchflow_events_consumed_total", type="join", channel="other", brand="lumi")
    assert after == before + 1


def test_every_reason_exists_from_the_start() -> None:
    for reason in Reason:
        assert (
            metrics.WORKER.get_sample_value(
                "touchflow_events_rejected_total", {"reason": reason.value}
            )
            is not None
        )


@dataclass(frozen=True)
class Change:
    dimension: str
    from_value: str | None
    to_value: str | None
    event_time: int


def test_segment_change_counts_and_observes_both_latencies() -> None:
    labels = {"dimension": "rfm_segment", "from_value": "none", "to_value": "general_develop"}
    before = sample("touchflow_segment_changes_total", **labels)
    emit_le_1 = sample("touchflow_emit_latency_seconds_bucket", le="1.0")
    age_le_60 = sample("touchflow_event_age_seconds_bucket", le="60.0")
    age_le_10 = sample("touchflow_event_age_seconds_bucket", le="10.0")

    change = Change("rfm_segment", None, "general_develop", event_time=1_000_000)
    metrics.segment_changes([(change, 1_020.5)], clock=lambda: 1_021.0)  # 0.5 s, 21 s

    assert sample("touchflow_segment_changes_total", **labels) == before + 1
    assert sample("touchflow_emit_latency_seconds_bucket", le="1.0") == emit_le_1 + 1
    assert sample("touchflow_event_age_seconds_bucket", le="60.0") == age_le_60 + 1
    assert sample("touchflow_event_age_seconds_bucket", le="10.0") == age_le_10


def test_a_batch_of_changes_counts_and_observes_each_change() -> None:
    moved = {"dimension": "lifecycle", "from_value": "active", "to_value": "at_risk"}
    first = {"dimension": "lifecycle", "from_value": "none", "to_value": "new"}
    before = {
        k: sample("touchflow_segment_changes_total", **v) for k, v in [("m", moved), ("f", first)]
    }
    emit_count = sample("touchflow_emit_latency_seconds_count")
    emit_le_01 = sample("touchflow_emit_latency_seconds_bucket", le="0.1")
    age_le_1 = sample("touchflow_event_age_seconds_bucket", le="1.0")
    age_count = sample("touchflow_event_age_seconds_count")

    sent = [  # now = 2 000 s: emitted 0.05 s, 0.5 s and (no timestamp) not at all
        (Change("lifecycle", "active", "at_risk", event_time=1_999_500), 1_999.95),
        (Change("lifecycle", "active", "at_risk", event_time=1_000_000), 1_999.5),
        (Change("lifecycle", None, "new", event_time=2_000_000), None),
    ]
    metrics.segment_changes(sent, clock=lambda: 2_000.0)

    assert sample("touchflow_segment_changes_total", **moved) == before["m"] + 2
    assert sample("touchflow_segment_changes_total", **first) == before["f"] + 1
    assert sample("touchflow_emit_latency_seconds_count") == emit_count + 2
    assert sample("touchflow_emit_latency_seconds_bucket", le="0.1") == emit_le_01 + 1
    assert sample("touchflow_event_age_seconds_count") == age_count + 3
    assert sample("touchflow_event_age_seconds_bucket", le="1.0") == age_le_1 + 2  # 0.5 s, 0 s


def test_observe_all_fills_a_histogram_exactly_as_observe_does() -> None:
    bounds = (0.001, 0.01, 0.25, 1, 5)
    # Every bound exactly (a value on a bound belongs to that bucket), between them,
    # zero, and beyond the last bound (+Inf).
    values = [0.0, 0.001, 0.0010001, 0.005, 0.01, 0.2, 0.25, 0.9999, 1, 3, 5, 5.0001, 120.0]
    registry_one, registry_all = CollectorRegistry(), CollectorRegistry()
    one = Histogram("h", "h", buckets=bounds, registry=registry_one)
    batched = Histogram("h", "h", buckets=bounds, registry=registry_all)
    for v in values:
        one.observe(v)
    metrics.observe_all(batched, values[:5])
    metrics.observe_all(batched, values[5:])
    metrics.observe_all(batched, [])

    def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, s.value)
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    def exact(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
        return [s for s in samples(registry) if s[0] != "h_sum"]

    def total(registry: CollectorRegistry) -> float:
        return next(s[2] for s in samples(registry) if s[0] == "h_sum")

    assert exact(registry_all) == exact(registry_one)  # every bucket, and the count
    assert ("h_count", {}, len(values)) in exact(registry_one)
    assert total(registry_all) == pytest.approx(total(registry_one))  # summed in another order


def test_events_processed_observes_only_events_with_a_fetch_time() -> None:
    count = sample("touchflow_processing_latency_seconds_count")
    metrics.events_processed([time.monotonic(), None, time.monotonic() - 0.3])
    assert sample("touchflow_processing_latency_seconds_count") == count + 2
    assert sample("touchflow_processing_latency_seconds_sum") >= 0.3


def test_lag_of_revoked_partitions_is_dropped() -> None:
    metrics.consumer_lag("t.events", {0: 5, 1: 7})
    assert sample("touchflow_consumer_lag", topic="t.events", partition="1") == 7
    metrics.consumer_lag("t.events", {0: -3})  # end read before the commit: never negative
    assert sample("touchflow_consumer_lag", topic="t.events", partition="0") == 0
    assert (
        metrics.WORKER.get_sample_value(
            "touchflow_consumer_lag", {"topic": "t.events", "partition": "1"}
        )
        is None
    )


def test_sink_registry_serves_over_http() -> None:
    metrics.sink_tables(["events"])
    metrics.sink_stored("events", 3)
    port = free_port()
    stop = metrics.serve(metrics.SINK, port, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        stop()
    assert 'touchflow_sink_rows_total{table="events"}' in text
    # Other tests in the session may have counted failures: the series exists, any value.
    assert 'touchflow_sink_insert_failures_total{table="events"} ' in text
    assert "touchflow_events_consumed_total" not in text  # worker metrics stay in WORKER


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        ("http://u:secret@clickhouse:8123", "http://clickhouse:8123/ping"),
        ("https://u:p@ch.example.com", "https://ch.example.com:8443/ping"),
        ("chdb:///var/lib/touchflow/clickhouse", None),
        ("", None),
    ],
)
def test_clickhouse_ping_url_drops_credentials(dsn: str, url: str | None) -> None:
    assert clickhouse_ping_url(dsn) == url


@pytest.fixture
async def fake_clickhouse() -> AsyncIterator[str]:
    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    app = web.Application()
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/ping"
    await runner.cleanup()


async def test_readiness_needs_every_check(fake_clickhouse: str) -> None:
    async def ok() -> str | None:
        return None

    async def recovering() -> str | None:
        return "table recovery has not completed yet"

    status, body = await readiness(
        {"recovery": ok, "clickhouse": clickhouse_check(fake_clickhouse)}
    )
    assert (status, body) == (
        200,
        {"ready": True, "checks": {"recovery": "ok", "clickhouse": "ok"}},
    )

    closed = f"http://127.0.0.1:{free_port()}/ping"
    status, body = await readiness({"recovery": recovering, "clickhouse": clickhouse_check(closed)})
    assert status == 503 and body["ready"] is False
    assert str(body["reason"]).startswith("recovery: table recovery has not completed yet; ")
    assert "clickhouse: ClickHouse" in str(body["reason"]) and "unreachable" in str(body["reason"])
