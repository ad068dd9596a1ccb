"""Operations endpoints on the real stack: a worker process, the sink, the Tansu broker.

A known set of events (some breaking the contract) goes in; the worker's /metrics over
HTTP must count exactly that, /healthz and /readyz must answer, and every metric the
alerts and the Grafana dashboard use must exist in the real scrape of worker and sink.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from pipeline import metrics
from pipeline.broker import free_port
from pipeline.codec import Codecs
from pipeline.events import Chat, EventType, Join, Purchase, Touchpoint, UserRef
from pipeline.pii import pseudonymise
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration import test_deploy_config as deploy
from tests.integration.helpers import (
    PII_KEY,
    Samples,
    async_wait_until,
    by_labels,
    get,
    parse,
    publish,
    read_topic,
    value,
    web_port,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings, with the sink serving /metrics and fast gauge refreshes."""
    return settings.model_copy(
        update={"sink_metrics_port": free_port(), "metrics_interval_seconds": 2.0}
    )


def traffic(now_ms: int) -> list[Touchpoint | bytes]:
    key = PII_KEY.encode()
    a = UserRef("external_userid", pseudonymise("external_userid", "wm-a-0001", key))
    b = UserRef("openid", pseudonymise("openid", "o-b-0002", key))
    raw = UserRef("openid", "o-raw-unhashed-0003")  # personal id without its keyed hash
    t0 = now_ms - 10 * DAY

    def ev(n: str, brand: str, ch: str, user: UserRef, t: EventType, at: int, p: Any) -> Touchpoint:
        return Touchpoint(n, t, brand, ch, user, at, p)

    return [
        ev("a1", "lumi", "wecom", a, EventType.JOIN, t0, Join("add_friend")),
        b"\x07not-avro-at-all",  # bad_magic
        ev("a2", "lumi", "wecom", a, EventType.CHAT, t0 + 60_000, Chat("inbound", "customer")),
        ev("a3", "lumi", "wecom", a, EventType.PURCHASE, t0 + DAY, Purchase("o-1", 30_000)),
        ev("a4", "aster", "douyin", a, EventType.JOIN, t0 + DAY, Join("follow")),
        b"\x00\x00",  # truncated
        ev("b1", "lumi", "wechat_oa", b, EventType.JOIN, t0, Join("follow")),
        ev("b2", "lumi", "wechat_oa", b, EventType.PURCHASE, t0 + DAY, Purchase("o-2", 9_900)),
        ev("r1", "lumi", "wechat_oa", raw, EventType.JOIN, t0, Join("follow")),  # raw_pii
        b"\x07again",  # bad_magic
    ]


async def test_worker_and_sink_metrics_count_what_was_sent(
    settings: Settings, sink: ClickHouseSink, workers: Any
) -> None:
    worker = workers()
    base = f"http://127.0.0.1:{web_port(worker)}"

    async def up() -> bool:
        try:
            return (await get(base + "/healthz"))[0] == 200
        except aiohttp.ClientError:
            assert worker.alive(), worker.log_tail()
            return False

    await async_wait_until(up, 60, "the worker's /healthz")

    async def ready() -> bool:
        status, body = await get(base + "/readyz")
        assert status in (200, 503), body
        return status == 200

    await async_wait_until(ready, 60, "the worker's /readyz")
    _, body = await get(base + "/readyz")
    assert json.loads(body) == {"ready": True, "checks": {"recovery": "ok", "broker": "ok"}}

    sink_url = f"http://127.0.0.1:{settings.sink_metrics_port}/metrics"
    sink_before = parse((await get(sink_url))[1])
    events = traffic(int(time.time() * 1000))
    await publish(settings, events)
    accepted = [e for e in events if isinstance(e, Touchpoint) and e.event_id != "r1"]

    async def scrape() -> Samples:
        status, text = await get(base + "/metrics")
        assert status == 200
        return parse(text)

    def lag_of(s: Samples) -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["topic"], dict(labels)["partition"]): v
            for (n, labels), v in s.items()
            if n == "touchflow_consumer_lag"
        }

    caught_up = {(settings.events_topic, "0"): 0, (settings.events_topic, "1"): 0}

    async def all_counted() -> Samples | None:
        s = await scrape()
        consumed = sum(by_labels(s, "touchflow_events_consumed_total", "type").values())
        rejected = sum(by_labels(s, "touchflow_events_rejected_total", "reason").values())
        done = (consumed, rejected) == (len(accepted), 4) and lag_of(s) == caught_up
        return s if done else None

    s = await async_wait_until(all_counted, 60, "every event counted and no lag left")

    assert by_labels(s, "touchflow_events_consumed_total", "type", "channel", "brand") == {
        ("join", "wecom", "lumi"): 1,
        ("chat", "wecom", "lumi"): 1,
        ("purchase", "wecom", "lumi"): 1,
        ("join", "douyin", "aster"): 1,
        ("join", "wechat_oa", "lumi"): 1,
        ("purchase", "wechat_oa", "lumi"): 1,
    }
    expected_reasons = {("bad_magic",): 2, ("truncated",): 1, ("raw_pii",): 1}
    assert by_labels(s, "touchflow_events_rejected_total", "reason") == expected_reasons
    assert by_labels(s, "touchflow_events_dead_lettered_total", "reason") == expected_reasons
    assert value(s, "touchflow_events_rejected_total", reason="too_large") == 0  # declared at 0
    assert value(s, "touchflow_duplicates_dropped_total") == 0

    # Segment changes: the metric counts exactly what the worker put on the changes topic.
    counted = by_labels(s, "touchflow_segment_changes_total", "dimension", "from_value", "to_value")
    records = await read_topic(
        settings.kafka_bootstrap, settings.changes_topic, int(sum(counted.values()))
    )
    codecs = Codecs()
    sent = Counter(
        (c.dimension, c.from_value or "none", c.to_value or "none")
        for c in (codecs.decode_change(r.value) for r in records)
    )
    assert dict(sent) == counted
    assert ("aipl_stage", "A", "I") in sent  # a2, the inbound chat
    n_changes = sum(sent.values())
    assert value(s, "touchflow_emit_latency_seconds_count") == n_changes
    assert value(s, "touchflow_event_age_seconds_count") == n_changes
    # Event times are ~9-10 days old: every change lands in the 7d..30d age buckets.
    age_7d = value(s, "touchflow_event_age_seconds_bucket", le=str(7 * 86_400.0))
    assert age_7d == 0
    assert value(s, "touchflow_processing_latency_seconds_count") == len(accepted)

    # Every record of the events topic reached the agent once, in fetched batches
    # (agents.bulk_delivery), none through Faust's per-message conductor.
    fetched = by_labels(s, "touchflow_fetched_records_total", "topic", "delivery")
    assert fetched.get((settings.events_topic, "bulk")) == len(events)
    assert (settings.events_topic, "per_message") not in fetched

    # Gauges: three (brand, person) states.
    assert value(s, "touchflow_people_in_state") == 3
    assert lag_of(s) == caught_up  # lag per assigned partition, both back to 0

    # The sink: rows per table over its own HTTP endpoint. Its registry is per process and
    # this test process runs other tests' sinks too: compare with what it held before.
    def delta(now: Samples, name: str, **labels: str) -> float:
        return value(now, name, **labels) - value(sink_before, name, **labels)

    async def sink_stored() -> Samples | None:
        status, text = await get(sink_url)
        assert status == 200
        t = parse(text)
        return t if delta(t, "touchflow_sink_rows_total", table="events") == len(accepted) else None

    t = await async_wait_until(sink_stored, 30, "the sink's row counters")
    assert delta(t, "touchflow_sink_rows_total", table="segment_changes") == n_changes
    assert delta(t, "touchflow_sink_insert_failures_total", table="events") == 0
    assert delta(t, "touchflow_sink_batches_total", table="events") >= 1
    assert delta(t, "touchflow_sink_batch_seconds_count") >= 1

    # Every metric the alerts and the dashboard query exists in the real scrapes.
    scraped = {name for name, _ in s} | {name for name, _ in t}
    for suffix in deploy.HISTOGRAM_SUFFIXES:
        scraped |= {n.removesuffix(suffix) for n in scraped if n.endswith(suffix)}
    used: set[str] = set()
    for expr in [r["expr"] for r in deploy.alert_rules()] + deploy.dashboard_exprs():
        used |= deploy.metric_names(expr)
    # Automation / webhook metrics come from `touchflow webhooks` (test_webhooks.py scrapes it).
    missing = used - {"up"} - scraped - set(deploy.registry_names(metrics.AUTOMATION))
    assert not missing, f"used by deploy/ but not exposed: {sorted(missing)}"
    # And no person, user or event id anywhere in a label.
    labels = {v for (_, ls) in [*s, *t] for _, v in ls}
    for e in events:
        if isinstance(e, Touchpoint):
            assert not {e.event_id, e.user.id} & labels
