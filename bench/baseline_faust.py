"""The benchmark's yardstick: a straightforward Faust app, the way one would write it first.

JSON `faust.Record` values, one agent, one Table of per-(brand, user) dicts keeping the
same RFM-ish counters as touchflow (first/last seen, engagements, orders and amount with
refunds taken off, last purchase day, R/F/M scores on the default thresholds) but none of
its guarantees: no window, no due times, no segment changes, no dedup, no contract checks.

Run as a worker: `python -m bench.baseline_faust worker -l warn`, configured by the
environment (BENCH_BOOTSTRAP, BENCH_TOPIC, BENCH_APP_ID, BENCH_PARTITIONS, BENCH_WEB_PORT,
BENCH_DATADIR).
"""

from __future__ import annotations

import os
from typing import Any

import faust

from pipeline.rfm import MS_PER_DAY, RfmPolicy

RECENT_ORDERS_KEPT = 8


class Touch(faust.Record, serializer="json"):
    event_id: str
    type: str
    brand: str
    user: str
    occurred_at: int
    amount_minor: int = 0
    order_id: str = ""


def touch_json(e: Any, person_id: str) -> dict[str, Any]:
    """The JSON value the benchmark publishes for one touchpoint."""
    p = e.payload
    return {
        "event_id": e.event_id,
        "type": e.type.value,
        "brand": e.brand,
        "user": person_id,
        "occurred_at": e.occurred_at,
        "amount_minor": getattr(p, "amount_minor", 0),
        "order_id": getattr(p, "order_id", ""),
    }


def update(s: dict[str, Any], t: Touch, policy: RfmPolicy) -> dict[str, Any]:
    """One event's effect on the per-user dict (plain code, the way a first version looks)."""
    day = t.occurred_at // MS_PER_DAY
    s["first_seen"] = min(s.get("first_seen", t.occurred_at), t.occurred_at)
    s["last_seen"] = max(s.get("last_seen", 0), t.occurred_at)
    s["engagements"] = s.get("engagements", 0) + (t.type in ("chat", "share"))
    orders = s.setdefault("orders", [])
    if t.type == "purchase":
        orders.append([t.order_id, t.amount_minor])
        del orders[:-RECENT_ORDERS_KEPT]
        s["order_count"] = s.get("order_count", 0) + 1
        s["amount_minor"] = s.get("amount_minor", 0) + t.amount_minor
        s["last_purchase_day"] = max(s.get("last_purchase_day", 0), day)
    elif t.type == "refund":
        s["amount_minor"] = s.get("amount_minor", 0) - t.amount_minor
        for o in orders:
            if o[0] == t.order_id and o[1] <= t.amount_minor:
                s["order_count"] -= 1
    if s.get("order_count", 0) > 0:
        recency = day - s["last_purchase_day"]
        s["r"] = 5 - sum(recency > d for d in policy.recency_days)
        s["f"] = 1 + sum(s["order_count"] >= n for n in policy.frequency_orders)
        s["m"] = 1 + sum(s["amount_minor"] >= m for m in policy.monetary_minor)
    return s


def create_app() -> faust.App:
    env = os.environ
    partitions = int(env.get("BENCH_PARTITIONS", "4"))
    app = faust.App(
        env.get("BENCH_APP_ID", "bench-baseline"),
        broker=f"kafka://{env.get('BENCH_BOOTSTRAP', '127.0.0.1:9092')}",
        store="memory://",
        datadir=env.get("BENCH_DATADIR", "var/bench-baseline"),
        topic_partitions=partitions,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_port=int(env.get("BENCH_WEB_PORT", "6067")),
        broker_commit_interval=1.0,  # as touchflow's worker
    )
    topic = app.topic(env.get("BENCH_TOPIC", "bench.baseline"), value_type=Touch)
    table = app.Table("rfm", default=dict, partitions=partitions)
    policy = RfmPolicy()

    @app.agent(topic)
    async def rfm(stream: Any) -> None:
        async for t in stream:
            key = f"{t.brand}:{t.user}"
            table[key] = update(table[key], t, policy)

    return app


if __name__ == "__main__":
    create_app().main()
