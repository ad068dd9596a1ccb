"""The dashboard's queries: the operators' reports (`sinks.reports`) shaped for the charts,
plus what the reports do not cover (brands, headline figures, the live feed of changes).

Each endpoint is a function (client, filters, query parameters) -> JSON-able dict, run on
the dashboard's one ClickHouse thread. Shapes come from the pure `pipeline.dashboard`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline import dashboard
from pipeline.dashboard import Filters
from sinks import reports

_BRAND = "({brand:String} = '' OR brand = {brand:String})"

BRANDS = """
SELECT brand, count() AS people, countIf(lifetime_orders > 0) AS buyers,
    toString(toDate(min(first_seen))) AS first_day, toString(toDate(max(as_of))) AS last_day
FROM current_people
GROUP BY brand
ORDER BY brand
"""

# Headline figures for the brand and range: people now, and what happened in the range.
SUMMARY = f"""
SELECT
    (SELECT count() FROM current_people WHERE {_BRAND}) AS people,
    (SELECT countIf(lifetime_orders > 0) FROM current_people WHERE {_BRAND}) AS buyers,
    (SELECT count() FROM events FINAL WHERE {_BRAND}
        AND toDate(occurred_at) BETWEEN {{since:Date}} AND {{until:Date}}) AS events,
    (SELECT sumIf(amount_minor, type = 'purchase') - sumIf(amount_minor, type = 'refund')
        FROM events FINAL WHERE {_BRAND}
        AND toDate(occurred_at) BETWEEN {{since:Date}} AND {{until:Date}}) AS revenue_minor,
    (SELECT count() FROM segment_changes FINAL WHERE {_BRAND} AND dimension != 'identity'
        AND toDate(event_time) BETWEEN {{since:Date}} AND {{until:Date}}) AS changes
"""

# The newest segment changes (event time; time-driven changes carry their due time).
FEED = f"""
SELECT brand, person_id, seq, dimension, from_value, to_value, rule, cause_event_id,
    toUnixTimestamp64Milli(event_time) AS event_time_ms
FROM segment_changes FINAL
WHERE {_BRAND}
ORDER BY event_time DESC, brand, person_id, seq DESC
LIMIT {{limit:UInt32}}
"""

Endpoint = Callable[[Any, Filters, Mapping[str, str]], dict[str, Any]]


def _report(client: Any, name: str, f: Filters) -> list[tuple[Any, ...]]:
    return reports.run(client, name, brand=f.brand, since=f.since, until=f.until).rows


def _rows(client: Any, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(sql, parameters=parameters).result_rows]


def brands(client: Any, f: Filters, params: Mapping[str, str]) -> dict[str, Any]:
    rows = _rows(client, BRANDS, {})
    return {
        "brands": [
            {"brand": b, "people": p, "buyers": n, "first_day": first, "last_day": last}
            for b, p, n, first, last in rows
        ],
        "labels": dashboard.labels(),
    }


def summary(client: Any, f: Filters, params: Mapping[str, str]) -> dict[str, Any]:
    ((people, buyers, events, revenue, changes),) = _rows(client, SUMMARY, f.sql_parameters())
    return {"people": people, "buyers": buyers, "events": events,
            "revenue_minor": revenue, "changes": changes}  # fmt: skip


def segment_sizes(client: Any, f: Filters, params: Mapping[str, str]) -> dict[str, Any]:
    dimension = dashboard.parse_dimension(params)
    rows = _report(client, "segment-membership", f)
    return {"dimension": dimension, **dashboard.membership_series(rows, dimension)}


def rfm_matrix(client: Any, f: Filters, params: Mapping[str, str]) -> dict[str, Any]:
    return {"cells": dashboard.rfm_matrix(_report(client, "rfm-matrix", f))}


def aipl_funnel(client: Any, f: Filters, params: Mapping[str, str]) -> dict[str, Any]:
    return {"steps": dashboard.funnel(_report(client, "aipl-funnel", f))}


def lifecycle_flow(client: Any, f: Filters, params: Mapping[str, str]) -> dict[str, Any]:
    return {"flows": dashboard.flows(_report(client, "lifecycle-flow", f))}


def top_sharers(client: Any, f: Filters, params: Mapping[str, str]) -> dict[str, Any]:
    return dashboard.sharers(_report(client, "fission", f))


def changes(client: Any, f: Filters, params: Mapping[str, str]) -> dict[str, Any]:
    limit = dashboard.parse_limit(params, default=30)
    rows = _rows(client, FEED, {"brand": f.brand or "", "limit": limit})
    keys = ("brand", "person_id", "seq", "dimension", "from_value", "to_value", "rule",
            "cause_event_id", "event_time_ms")  # fmt: skip
    return {"changes": [dict(zip(keys, row, strict=True)) for row in rows]}


ENDPOINTS: dict[str, Endpoint] = {
    "brands": brands,
    "summary": summary,
    "segment-sizes": segment_sizes,
    "rfm-matrix": rfm_matrix,
    "aipl-funnel": aipl_funnel,
    "lifecycle-flow": lifecycle_flow,
    "top-sharers": top_sharers,
    "changes": changes,
}
