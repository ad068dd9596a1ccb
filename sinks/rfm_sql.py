"""RFM computed by ClickHouse from the stored events alone: the batch counterpart of the
streaming state, used to check it (tests), to derive quantile thresholds, and as the
batch baseline in the benchmark.

Same definitions as `pipeline.rfm` and `pipeline.state`: an order counts unless refunds
add up to its amount; a refund reduces its order's day; the window ends on the person's
clock day (`person_state.as_of`), `window_days` long; R from days since the latest kept
order, F from orders and M from amount inside the window.
"""

from __future__ import annotations

from pipeline.rfm import MS_PER_DAY, RfmPolicy


def _per_person(window_days: int) -> str:
    """CTEs ending in `per_person`: recency, window orders and amount of every buyer."""
    return f"""
WITH
    orders AS (
        SELECT brand, person_id, order_id,
            anyIf(intDiv(toUnixTimestamp64Milli(occurred_at), {MS_PER_DAY}), type = 'purchase')
                AS day,
            sumIf(amount_minor, type = 'purchase') AS paid,
            sumIf(amount_minor, type = 'refund') AS refunded
        FROM events FINAL
        WHERE type IN ('purchase', 'refund')
        GROUP BY brand, person_id, order_id
        HAVING countIf(type = 'purchase') > 0 AND refunded < paid
    ),
    clock AS (
        SELECT brand, person_id, intDiv(toUnixTimestamp64Milli(as_of), {MS_PER_DAY}) AS today
        FROM person_state FINAL
    ),
    per_person AS (
        SELECT o.brand AS brand, o.person_id AS person_id,
            max(o.day) AS last_purchase_day,
            c.today - max(o.day) AS recency,
            countIf(o.day > c.today - {window_days}) AS window_orders,
            sumIf(o.paid - o.refunded, o.day > c.today - {window_days}) AS window_amount
        FROM orders AS o
        INNER JOIN clock AS c ON o.brand = c.brand AND o.person_id = c.person_id
        GROUP BY o.brand, o.person_id, c.today
    )
"""


def rfm_scores_query(policy: RfmPolicy) -> str:
    """SELECT brand, person_id, r, f, m, window_orders, window_amount, last_purchase_day."""
    recency = list(policy.recency_days)
    frequency = list(policy.frequency_orders)
    monetary = list(policy.monetary_minor)
    return (
        _per_person(policy.window_days)
        + f"""SELECT brand, person_id,
    5 - arrayCount(t -> t < recency, {recency}) AS r,
    1 + arrayCount(t -> t <= window_orders, {frequency}) AS f,
    1 + arrayCount(t -> t <= window_amount, {monetary}) AS m,
    window_orders, window_amount, last_purchase_day
FROM per_person
ORDER BY brand, person_id
"""
    )


QUANTILES = (0.2, 0.4, 0.6, 0.8)


def rfm_quantiles_query(window_days: int) -> str:
    """SELECT brand, buyers, recency, orders, amount quantiles (20/40/60/80 %) per brand."""
    q = ", ".join(map(str, QUANTILES))
    return (
        _per_person(window_days)
        + f"""SELECT brand, count() AS buyers,
    quantilesExact({q})(recency) AS recency_q,
    quantilesExact({q})(window_orders) AS orders_q,
    quantilesExact({q})(window_amount) AS amount_q
FROM per_person
GROUP BY brand
ORDER BY brand
"""
    )
