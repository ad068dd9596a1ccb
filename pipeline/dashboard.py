"""The operators' dashboard, its pure part: request filters, names, and chart shapes.

No I/O here: `sinks.dashboard_data` runs the SQL (mostly `sinks.reports`) and hands the
rows to these functions; `pipeline.dashboard_web` serves what they return as JSON to the
page in `pipeline/static/dashboard/`, which draws it as SVG.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from pipeline.lifecycle import LIFECYCLE_NAMES_ZH
from pipeline.rfm import SEGMENT_NAMES_ZH, RfmSegment
from pipeline.stages import AIPL_NAMES_ZH, AiplStage
from pipeline.validation import SLUG

MAX_DAYS = 3660  # a date range longer than ten years is a typo, not a question
MAX_FEED = 200
SIZE_DIMENSIONS = ("rfm_segment", "lifecycle")  # AIPL's first stage has no change record


class Reason(StrEnum):
    """Why a dashboard request was refused (the JSON `reason`)."""

    BAD_BRAND = "bad_brand"
    BAD_DATE = "bad_date"
    BAD_RANGE = "bad_range"
    BAD_LIMIT = "bad_limit"
    BAD_DIMENSION = "bad_dimension"
    UNKNOWN_ENDPOINT = "unknown_endpoint"


class BadRequest(ValueError):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Filters:
    """Which brand (None = all) and which days, inclusive, in UTC (None = open end)."""

    brand: str | None = None
    since: date | None = None
    until: date | None = None

    def sql_parameters(self) -> dict[str, Any]:
        """Bound parameters for `{brand:String}`, `{since:Date}`, `{until:Date}` in SQL."""
        return {
            "brand": self.brand or "",
            "since": self.since or date(1970, 1, 1),
            "until": self.until or date(2149, 6, 6),  # ClickHouse Date's last day
        }


def _day(params: Mapping[str, str], name: str) -> date | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(Reason.BAD_DATE, f"{name}={raw!r} is not a YYYY-MM-DD date") from None


def parse_filters(params: Mapping[str, str]) -> Filters:
    """Filters from query parameters `brand`, `since`, `until` (empty = not set)."""
    brand = params.get("brand", "").strip() or None
    if brand is not None and not SLUG.match(brand):
        raise BadRequest(Reason.BAD_BRAND, f"brand={brand!r} is not a brand slug")
    since, until = _day(params, "since"), _day(params, "until")
    if since and until:
        if since > until:
            raise BadRequest(Reason.BAD_RANGE, f"since {since} is after until {until}")
        if (until - since).days > MAX_DAYS:
            raise BadRequest(Reason.BAD_RANGE, f"a range of more than {MAX_DAYS} days")
    return Filters(brand, since, until)


def parse_limit(params: Mapping[str, str], default: int, most: int = MAX_FEED) -> int:
    raw = params.get("limit", "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise BadRequest(Reason.BAD_LIMIT, f"limit={raw!r} must be a whole number 1..{most}")
    return int(raw)


def parse_dimension(params: Mapping[str, str]) -> str:
    dimension = params.get("dimension", "").strip() or SIZE_DIMENSIONS[0]
    if dimension not in SIZE_DIMENSIONS:
        raise BadRequest(
            Reason.BAD_DIMENSION, f"dimension={dimension!r}: one of {', '.join(SIZE_DIMENSIONS)}"
        )
    return dimension


def labels() -> dict[str, dict[str, str]]:
    """Operators' names (Chinese) for every segment value, by dimension."""
    return {
        "rfm_segment": {s.value: zh for s, zh in SEGMENT_NAMES_ZH.items()},
        "lifecycle": {s.value: zh for s, zh in LIFECYCLE_NAMES_ZH.items()},
        "aipl_stage": {s.value: zh for s, zh in AIPL_NAMES_ZH.items()},
    }


# -- chart shapes ------------------------------------------------------------------------

# The classic eight-segment RFM matrix: M high ("重要") or low ("一般") by row, and by
# column whether R and F are high: 价值 (R↑F↑), 发展 (R↑F↓), 保持 (R↓F↑), 挽留 (R↓F↓).
RFM_ROWS = ("important", "general")
RFM_COLUMNS = ("value", "develop", "keep", "retain")
_RF_HIGH = {"value": (True, True), "develop": (True, False), "keep": (False, True),
            "retain": (False, False)}  # fmt: skip


def rfm_matrix(rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The 8 cells, row by row, from the rfm-matrix report's (brand, rfm_segment,
    customers, revenue_minor) rows summed over brands; empty segments are zero cells."""
    customers: dict[str, int] = {}
    revenue: dict[str, int] = {}
    for _brand, segment, people, amount in rows:
        customers[segment] = customers.get(segment, 0) + int(people)
        revenue[segment] = revenue.get(segment, 0) + int(amount or 0)
    cells = []
    for row, level in enumerate(RFM_ROWS):
        for col, kind in enumerate(RFM_COLUMNS):
            segment = RfmSegment(f"{level}_{kind}")
            r_high, f_high = _RF_HIGH[kind]
            cells.append(
                {
                    "segment": segment.value,
                    "name": SEGMENT_NAMES_ZH[segment],
                    "row": row,
                    "col": col,
                    "r_high": r_high,
                    "f_high": f_high,
                    "m_high": level == "important",
                    "customers": customers.get(segment.value, 0),
                    "revenue_minor": revenue.get(segment.value, 0),
                }
            )
    return cells


def funnel(rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """AIPL steps from the aipl-funnel report's (brand, acquisition_channel, aware,
    interested, purchased, loyal) rows, summed: people who reached each stage (at it or
    beyond) and the share of the step before who did (None for the first step)."""
    reached = [0, 0, 0, 0]
    for row in rows:
        for i, n in enumerate(row[2:6]):
            reached[i] += int(n)
    steps: list[dict[str, Any]] = []
    for i, stage in enumerate(AiplStage):
        before = reached[i - 1] if i else 0
        steps.append(
            {
                "stage": stage.value,
                "name": AIPL_NAMES_ZH[stage],
                "reached": reached[i],
                "conversion": reached[i] / before if i and before else None,
            }
        )
    return steps


def flows(rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Lifecycle moves from the lifecycle-flow report's (brand, from_lifecycle,
    to_lifecycle, people) rows, summed over brands, biggest first. "(none)" = no lifecycle
    yet (not a buyer before the range)."""
    people: dict[tuple[str, str], int] = {}
    for _brand, source, target, n in rows:
        people[(source, target)] = people.get((source, target), 0) + int(n)
    ordered = sorted(people.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"from": s, "to": t, "people": n} for (s, t), n in ordered]


def sharers(rows: Iterable[tuple[Any, ...]], top: int = 10) -> dict[str, Any]:
    """Top sharers and totals from the fission report's (brand, sharer, invitations,
    invitees, converted_invitees, k_factor) rows; sharer "*" rows are a brand's totals.
    The K-factor is per brand, so the totals carry one only when one brand is shown."""
    people: list[dict[str, Any]] = []
    totals = {"invitations": 0, "invitees": 0, "converted_invitees": 0}
    k_factors: list[float] = []
    for brand, sharer, invitations, invitees, converted, k_factor in rows:
        if sharer == "*":
            totals["invitations"] += int(invitations)
            totals["invitees"] += int(invitees)
            totals["converted_invitees"] += int(converted)
            k_factors.append(float(k_factor))
            continue
        people.append(
            {"brand": brand, "person_id": sharer, "invitations": int(invitations),
             "invitees": int(invitees), "converted_invitees": int(converted)}
        )  # fmt: skip
    people.sort(key=lambda p: (-p["converted_invitees"], -p["invitations"], p["person_id"]))
    k = k_factors[0] if len(k_factors) == 1 else None
    return {"sharers": people[:top], "totals": {**totals, "k_factor": k}}


def membership_series(rows: Iterable[tuple[Any, ...]], dimension: str) -> dict[str, Any]:
    """Members of each `dimension` value at the end of each day, summed over brands, from
    the segment-membership report's (brand, day, dimension, value, members) rows.

    The report has a row for a brand's day only when that brand changed that day (and a
    value only while it has members): on its own days a brand's missing value is 0, on
    other days the brand's counts carry over from its last day.
    """
    by_brand: dict[str, dict[date, dict[str, int]]] = {}
    values: set[str] = set()
    for brand, day, dim, value, members in rows:
        if dim != dimension:
            continue
        by_brand.setdefault(brand, {}).setdefault(day, {})[value] = int(members)
        values.add(value)
    days = sorted({d for per_day in by_brand.values() for d in per_day})
    ordered = sorted(values)
    series = {v: [0] * len(days) for v in ordered}
    for per_day in by_brand.values():
        current: dict[str, int] = {}
        for i, day in enumerate(days):
            current = per_day.get(day, current)
            for value, n in current.items():
                series[value][i] += n
    return {"days": [d.isoformat() for d in days], "series": series}
