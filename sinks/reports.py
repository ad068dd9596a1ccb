"""Operators' reports: one SQL query each, over the stored events, states and changes.

Every query reads the base tables with FINAL (or argMax over a key), so the figures are
exact before ClickHouse has merged duplicates away, and leaves out people merged into
another (identity resolution): events are stored under their seed person id and mapped to
the person they belong to now through `person_of_seed`; states and changes of an absorbed
person are skipped (`current_people`, the `identity` changes).

Conventions shared by all reports:
- `brand` None = every brand (rows carry the brand); `since` / `until` are inclusive days
  (UTC), None = unbounded.
- Revenue is in the currency's minor unit (fen): purchases less refunds.
- An order is *kept* unless its refunds add up to its amount (as `pipeline.rfm` counts it).

`run(client, name, ...)` takes any clickhouse-connect client (chDB or HTTP server).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

NAMES: tuple[str, ...] = (
    "rfm-matrix",
    "aipl-funnel",
    "lifecycle-flow",
    "repurchase",
    "cohort-retention",
    "channel-contribution",
    "fission",
    "segment-membership",
)

EARLIEST, LATEST = date(1970, 1, 1), date(2149, 6, 6)  # the range of ClickHouse's Date
TOP_SHARERS = 10  # sharers listed per brand by the fission report

# Filters bound to the query parameters {brand}, {since}, {until}.
_BRAND = "({brand:String} = '' OR brand = {brand:String})"


@dataclass(frozen=True)
class ReportResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _events(where: str = "1") -> str:
    """Events of the chosen brand(s) with `person`: the person the event's seed is now."""
    return f"""
    SELECT e.*, if(m.person_id = '', e.person_id, m.person_id) AS person
    FROM (SELECT * FROM events FINAL WHERE {_BRAND} AND ({where})) AS e
    LEFT JOIN person_of_seed AS m ON m.seed = e.person_id"""


_IN_RANGE = "toDate(occurred_at) BETWEEN {since:Date} AND {until:Date}"

# Kept orders of every person: (brand, person, order_id, day of purchase, net amount).
_ORDERS = f"""
    orders AS (
        SELECT brand, person, order_id,
            min(toDate(occurred_at)) AS day,
            sumIf(amount_minor, type = 'purchase') - sumIf(amount_minor, type = 'refund') AS net
        FROM ({_events("type IN ('purchase', 'refund')")})
        GROUP BY brand, person, order_id
        HAVING countIf(type = 'purchase') > 0 AND net > 0
    )"""

# (brand, person_id) of people merged into another: not customers of their own any more.
_ABSORBED = """
    absorbed AS (
        SELECT brand, from_value AS person_id, min(toDate(event_time)) AS gone
        FROM segment_changes FINAL
        WHERE dimension = 'identity' AND {brand_filter}
        GROUP BY brand, from_value
    )""".replace("{brand_filter}", _BRAND)


RFM_MATRIX = f"""
WITH revenue AS (
    SELECT brand, person,
        sumIf(amount_minor, type = 'purchase') - sumIf(amount_minor, type = 'refund') AS revenue
    FROM ({_events(_IN_RANGE)})
    GROUP BY brand, person
)
SELECT p.brand AS brand, p.rfm_segment AS rfm_segment, count() AS customers,
    sum(r.revenue) AS revenue_minor
FROM (SELECT brand, person_id, rfm_segment FROM current_people
      WHERE rfm_segment != '' AND {_BRAND}) AS p
LEFT JOIN revenue AS r ON r.brand = p.brand AND r.person = p.person_id
GROUP BY brand, rfm_segment
ORDER BY brand, rfm_segment
"""

# Cumulative funnel: a person at P counts as aware, interested and purchased.
AIPL_FUNNEL = f"""
SELECT brand,
    if(acquisition_channel = '', '(none)', acquisition_channel) AS acquisition_channel,
    count() AS aware,
    countIf(aipl_stage IN ('I', 'P', 'L')) AS interested,
    countIf(aipl_stage IN ('P', 'L')) AS purchased,
    countIf(aipl_stage = 'L') AS loyal
FROM current_people
WHERE {_BRAND} AND toDate(first_seen) BETWEEN {{since:Date}} AND {{until:Date}}
GROUP BY brand, acquisition_channel
ORDER BY brand, acquisition_channel
"""


def _value_at(dimension: str, day_condition: str, alias: str) -> str:
    """(brand, person_id, value): each person's last `dimension` value by `day_condition`."""
    return f"""
    {alias} AS (
        SELECT brand, person_id, argMax(to_value, seq) AS value
        FROM segment_changes FINAL
        WHERE dimension = '{dimension}' AND {_BRAND} AND {day_condition}
        GROUP BY brand, person_id
    )"""


# From: lifecycle before `since` began; to: lifecycle when `until` ended.
LIFECYCLE_FLOW = f"""
WITH
{_value_at("lifecycle", "toDate(event_time) < {since:Date}", "before")},
{_value_at("lifecycle", "toDate(event_time) <= {until:Date}", "after")},
{_ABSORBED}
SELECT a.brand AS brand,
    if(b.value = '', '(none)', b.value) AS from_lifecycle,
    if(a.value = '', '(none)', a.value) AS to_lifecycle,
    count() AS people
FROM after AS a
LEFT JOIN before AS b ON b.brand = a.brand AND b.person_id = a.person_id
LEFT ANTI JOIN absorbed AS x ON x.brand = a.brand AND x.person_id = a.person_id
WHERE NOT (a.value = '' AND b.value = '')
GROUP BY brand, from_lifecycle, to_lifecycle
ORDER BY brand, from_lifecycle, to_lifecycle
"""

# Buyers with a kept order in the range; intervals between a person's consecutive orders.
REPURCHASE = f"""
WITH {_ORDERS},
per_person AS (
    SELECT brand, person, count() AS n,
        arrayPopFront(arrayDifference(arraySort(groupArray(toInt32(day))))) AS intervals
    FROM orders
    WHERE day BETWEEN {{since:Date}} AND {{until:Date}}
    GROUP BY brand, person
)
SELECT brand, buyers, repeat_buyers, repurchase_rate, avg_interval_days, median_interval_days
FROM (
SELECT brand,
    count() AS buyers,
    countIf(n >= 2) AS repeat_buyers,
    round(repeat_buyers / buyers, 4) AS repurchase_rate,
    round(sum(arraySum(intervals)) / nullIf(sum(length(intervals)), 0), 2) AS avg_interval_days,
    arrayFlatten(groupArray(intervals)) AS all_intervals,
    if(empty(all_intervals), NULL,
       arrayReduce('quantileExactInclusive(0.5)', all_intervals)) AS median_interval_days
FROM per_person
GROUP BY brand
)
ORDER BY brand
"""

# Cohort = month of a buyer's first kept order; retained in month k = a kept order then.
COHORT_RETENTION = f"""
WITH {_ORDERS},
first AS (
    SELECT brand, person, toStartOfMonth(min(day)) AS cohort FROM orders GROUP BY brand, person
),
sizes AS (SELECT brand, cohort, count() AS cohort_size FROM first GROUP BY brand, cohort)
SELECT f.brand AS brand, f.cohort AS cohort,
    toUInt32(dateDiff('month', f.cohort, toStartOfMonth(o.day))) AS months_since,
    any(s.cohort_size) AS cohort_size,
    uniqExact(o.person) AS buyers,
    round(buyers / cohort_size, 4) AS retention
FROM first AS f
INNER JOIN orders AS o ON o.brand = f.brand AND o.person = f.person
INNER JOIN sizes AS s ON s.brand = f.brand AND s.cohort = f.cohort
WHERE f.cohort BETWEEN toStartOfMonth({{since:Date}}) AND {{until:Date}}
GROUP BY brand, cohort, months_since
ORDER BY brand, cohort, months_since
"""

# Acquisition channel of the person now (their earliest join); revenue in the range.
CHANNEL_CONTRIBUTION = f"""
WITH {_ORDERS},
revenue AS (
    SELECT brand, person, sum(net) AS revenue
    FROM orders
    WHERE day BETWEEN {{since:Date}} AND {{until:Date}}
    GROUP BY brand, person
)
SELECT p.brand AS brand,
    if(p.acquisition_channel = '', '(none)', p.acquisition_channel) AS acquisition_channel,
    count() AS customers,
    countIf(r.revenue > 0) AS buyers,
    sum(r.revenue) AS revenue_minor,
    round(revenue_minor / customers, 2) AS ltv_minor
FROM (SELECT brand, person_id, acquisition_channel FROM current_people WHERE {_BRAND}) AS p
LEFT JOIN revenue AS r ON r.brand = p.brand AND r.person = p.person_id
GROUP BY brand, acquisition_channel
ORDER BY brand, revenue_minor DESC, acquisition_channel
"""

# Edges in the range between people as they are now; an invitee converts with a purchase
# at or after their first edge from that sharer, until the range ends. K-factor =
# converted invitees per sharer (for one sharer: their converted invitees).
FISSION = f"""
WITH
edges AS (
    SELECT e.brand AS brand,
        if(r.person_id = '', e.referrer, r.person_id) AS sharer,
        if(i.person_id = '', e.invitee, i.person_id) AS invitee,
        e.kind AS kind, e.at AS at, e.event_id AS event_id
    FROM (SELECT * FROM referral_edges FINAL
          WHERE {_BRAND} AND toDate(at) BETWEEN {{since:Date}} AND {{until:Date}}) AS e
    LEFT JOIN person_of_seed AS r ON r.seed = e.referrer
    LEFT JOIN person_of_seed AS i ON i.seed = e.invitee
    WHERE sharer != invitee
),
purchases AS (
    SELECT brand, person, occurred_at
    FROM ({_events("type = 'purchase' AND toDate(occurred_at) <= {until:Date}")})
),
pairs AS (
    SELECT brand, sharer, invitee, min(at) AS first_at, countIf(kind = 'share') AS invitations
    FROM edges GROUP BY brand, sharer, invitee
),
converted AS (
    SELECT DISTINCT p.brand AS brand, p.sharer AS sharer, p.invitee AS invitee
    FROM pairs AS p
    INNER JOIN purchases AS b ON b.brand = p.brand AND b.person = p.invitee
    WHERE b.occurred_at >= p.first_at
),
per_sharer AS (
    SELECT p.brand AS brand, p.sharer AS sharer,
        sum(p.invitations) AS invitations,
        count() AS invitees,
        countIf(c.invitee != '') AS converted_invitees
    FROM pairs AS p
    LEFT JOIN converted AS c
        ON c.brand = p.brand AND c.sharer = p.sharer AND c.invitee = p.invitee
    GROUP BY brand, sharer
),
totals AS (
    SELECT p.brand AS brand,
        sum(p.invitations) AS invitations,
        uniqExact(p.invitee) AS invitees,
        uniqExactIf(p.invitee, c.invitee != '') AS converted_invitees,
        uniqExact(p.sharer) AS sharers
    FROM pairs AS p
    LEFT JOIN converted AS c
        ON c.brand = p.brand AND c.sharer = p.sharer AND c.invitee = p.invitee
    GROUP BY brand
)
SELECT brand, sharer, invitations, invitees, converted_invitees,
    round(converted_invitees / sharers, 4) AS k_factor
FROM (
    SELECT brand, '*' AS sharer, toUInt64(invitations) AS invitations,
        toUInt64(invitees) AS invitees,
        toUInt64(converted_invitees) AS converted_invitees, toUInt64(sharers) AS sharers,
        0 AS rank
    FROM totals
    UNION ALL
    SELECT brand, sharer, toUInt64(invitations), toUInt64(invitees),
        toUInt64(converted_invitees), toUInt64(1),
        row_number() OVER (
            PARTITION BY brand ORDER BY converted_invitees DESC, invitations DESC, sharer
        ) AS rank
    FROM per_sharer
)
WHERE rank <= {TOP_SHARERS}
ORDER BY brand, rank
"""

# Members of every single-valued segment (RFM segment, AIPL stage, lifecycle, layers) at
# the end of each day on which any change happened. Linear in the changes: each change is
# +1 for its value and -1 for the person's previous value (by seq), summed per day and run
# cumulatively; everyone starts at AIPL stage A when first seen (the engine records no
# change for that); an absorbed person leaves every segment on the day of their merge.
SEGMENT_MEMBERSHIP = f"""
WITH
changes AS (
    SELECT brand, person_id, dimension, to_value, seq, toDate(event_time) AS day
    FROM segment_changes FINAL
    WHERE {_BRAND} AND dimension NOT IN ('identity', 'tag') AND day <= {{until:Date}}
    UNION ALL
    SELECT brand, person_id, 'aipl_stage', 'A', toUInt64(0), toDate(first_seen) AS day
    FROM person_state FINAL
    WHERE {_BRAND} AND day <= {{until:Date}}
),
{_ABSORBED},
exits AS (
    SELECT c.brand AS brand, c.person_id AS person_id, c.dimension AS dimension,
        '' AS to_value, toUInt64(-1) AS seq, any(x.gone) AS day
    FROM changes AS c
    INNER JOIN absorbed AS x ON x.brand = c.brand AND x.person_id = c.person_id
    WHERE x.gone <= {{until:Date}}
    GROUP BY brand, person_id, dimension
),
moves AS (
    SELECT brand, dimension, day, to_value,
        lagInFrame(to_value, 1, '') OVER (
            PARTITION BY brand, person_id, dimension ORDER BY seq
            ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
        ) AS previous
    FROM (SELECT * FROM changes UNION ALL SELECT * FROM exits)
),
daily AS (
    SELECT brand, dimension, day, step.1 AS value, sum(step.2) AS delta
    FROM moves
    ARRAY JOIN [(to_value, 1), (previous, -1)] AS step
    WHERE value != '' AND to_value != previous
    GROUP BY brand, dimension, day, value
),
running AS (
    SELECT brand, dimension, value, day,
        sum(delta) OVER (
            PARTITION BY brand, dimension, value ORDER BY day
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS members
    FROM daily
),
days AS (
    SELECT DISTINCT brand, day FROM changes WHERE day >= {{since:Date}}
),
grid AS (
    SELECT d.brand AS brand, d.day AS day, k.dimension AS dimension, k.value AS value
    FROM days AS d
    INNER JOIN (SELECT DISTINCT brand, dimension, value FROM daily) AS k ON k.brand = d.brand
)
SELECT g.brand AS brand, g.day AS day, g.dimension AS dimension, g.value AS value,
    toUInt64(r.members) AS members
FROM grid AS g
ASOF INNER JOIN running AS r
    ON r.brand = g.brand AND r.dimension = g.dimension AND r.value = g.value AND r.day <= g.day
WHERE members > 0
ORDER BY brand, day, dimension, value
"""

QUERIES: dict[str, str] = {
    "rfm-matrix": RFM_MATRIX,
    "aipl-funnel": AIPL_FUNNEL,
    "lifecycle-flow": LIFECYCLE_FLOW,
    "repurchase": REPURCHASE,
    "cohort-retention": COHORT_RETENTION,
    "channel-contribution": CHANNEL_CONTRIBUTION,
    "fission": FISSION,
    "segment-membership": SEGMENT_MEMBERSHIP,
}
assert tuple(QUERIES) == NAMES

# The columns of each report, also when it has no rows (chDB names none then).
COLUMNS: dict[str, list[str]] = {
    "rfm-matrix": ["brand", "rfm_segment", "customers", "revenue_minor"],
    "aipl-funnel": ["brand", "acquisition_channel", "aware", "interested", "purchased", "loyal"],
    "lifecycle-flow": ["brand", "from_lifecycle", "to_lifecycle", "people"],
    "repurchase": [
        "brand", "buyers", "repeat_buyers", "repurchase_rate", "avg_interval_days",
        "median_interval_days",
    ],
    "cohort-retention": [
        "brand", "cohort", "months_since", "cohort_size", "buyers", "retention",
    ],
    "channel-contribution": [
        "brand", "acquisition_channel", "customers", "buyers", "revenue_minor", "ltv_minor",
    ],
    "fission": ["brand", "sharer", "invitations", "invitees", "converted_invitees", "k_factor"],
    "segment-membership": ["brand", "day", "dimension", "value", "members"],
}  # fmt: skip


def parameters(brand: str | None, since: date | None, until: date | None) -> dict[str, Any]:
    """The query parameters every report takes (None = all brands / unbounded)."""
    if since is not None and until is not None and since > until:
        raise ValueError(f"since {since} is after until {until}")
    return {"brand": brand or "", "since": since or EARLIEST, "until": until or LATEST}


def run(
    client: Any,
    name: str,
    *,
    brand: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> ReportResult:
    """Run report `name` (one of NAMES) on a clickhouse-connect client."""
    if name not in QUERIES:
        raise ValueError(f"unknown report {name!r}; one of: {', '.join(NAMES)}")
    result = client.query(QUERIES[name], parameters=parameters(brand, since, until))
    columns = list(result.column_names) or COLUMNS[name]
    if columns != COLUMNS[name]:  # the dashboard relies on these names
        raise RuntimeError(f"report {name} returned columns {columns}, not {COLUMNS[name]}")
    return ReportResult(columns, [tuple(r) for r in result.result_rows])
