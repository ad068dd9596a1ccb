"""Rolling RFM: daily purchase buckets, 1-5 scores, the eight classic segments. Pure.

Purchases are kept as per-day buckets `(day, orders, amount_minor)` inside the window, so a
customer's memory is bounded by the window length in days however long they live.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from enum import StrEnum

try:
    import cython
except ImportError:  # not installed (a runtime without the build's tools): plain Python
    from pipeline import _no_cython as cython

from pipeline.frozen import fast_init

MS_PER_DAY = 86_400_000
_DAY_MS = MS_PER_DAY  # compiled, a C constant (rfm.pxd); MS_PER_DAY stays a Python name

Bucket = tuple[int, int, int]  # (day since epoch, orders, amount_minor)


class RfmSegment(StrEnum):
    """The eight classic segments, by whether R, F and M are each high or low."""

    IMPORTANT_VALUE = "important_value"  # R high F high M high
    IMPORTANT_DEVELOP = "important_develop"  # R high F low  M high
    IMPORTANT_KEEP = "important_keep"  # R low  F high M high
    IMPORTANT_RETAIN = "important_retain"  # R low  F low  M high
    GENERAL_VALUE = "general_value"  # R high F high M low
    GENERAL_DEVELOP = "general_develop"  # R high F low  M low
    GENERAL_KEEP = "general_keep"  # R low  F high M low
    GENERAL_RETAIN = "general_retain"  # R low  F low  M low


SEGMENT_NAMES_ZH: dict[RfmSegment, str] = {
    RfmSegment.IMPORTANT_VALUE: "重要价值客户",
    RfmSegment.IMPORTANT_DEVELOP: "重要发展客户",
    RfmSegment.IMPORTANT_KEEP: "重要保持客户",
    RfmSegment.IMPORTANT_RETAIN: "重要挽留客户",
    RfmSegment.GENERAL_VALUE: "一般价值客户",
    RfmSegment.GENERAL_DEVELOP: "一般发展客户",
    RfmSegment.GENERAL_KEEP: "一般保持客户",
    RfmSegment.GENERAL_RETAIN: "一般挽留客户",
}

_SEGMENT_BY_HIGH: dict[tuple[bool, bool, bool], RfmSegment] = {
    (True, True, True): RfmSegment.IMPORTANT_VALUE,
    (True, False, True): RfmSegment.IMPORTANT_DEVELOP,
    (False, True, True): RfmSegment.IMPORTANT_KEEP,
    (False, False, True): RfmSegment.IMPORTANT_RETAIN,
    (True, True, False): RfmSegment.GENERAL_VALUE,
    (True, False, False): RfmSegment.GENERAL_DEVELOP,
    (False, True, False): RfmSegment.GENERAL_KEEP,
    (False, False, False): RfmSegment.GENERAL_RETAIN,
}
# The same, indexed by the three as bits (4: R high, 2: F high, 1: M high): compiled, a
# tuple indexed by a C integer, where the dict's key was a tuple of bools built and hashed.
_SEGMENT_BY_BITS: tuple[RfmSegment, ...] = tuple(
    _SEGMENT_BY_HIGH[(bool(bits & 4), bool(bits & 2), bool(bits & 1))] for bits in range(8)
)


@dataclass(frozen=True, slots=True)
class RfmPolicy:
    """How a brand scores RFM. Thresholds are ascending, four each, splitting five scores.

    recency_days: days since the last purchase; at or below threshold k scores 5-k.
    frequency_orders / monetary_minor: at or above threshold k scores k+2.
    A dimension is "high" when its score is at least `high_score`.
    """

    window_days: int = 365
    recency_days: tuple[int, int, int, int] = (7, 30, 90, 180)
    frequency_orders: tuple[int, int, int, int] = (2, 3, 5, 8)
    monetary_minor: tuple[int, int, int, int] = (20_000, 50_000, 100_000, 300_000)
    high_score: int = 3

    def __post_init__(self) -> None:
        for name in ("recency_days", "frequency_orders", "monetary_minor"):
            values = getattr(self, name)
            if len(values) != 4 or list(values) != sorted(set(values)):
                raise ValueError(f"{name} must be 4 strictly ascending thresholds, got {values}")
        if self.window_days < 1:
            raise ValueError(f"window_days must be >= 1, got {self.window_days}")
        if not 1 <= self.high_score <= 5:
            raise ValueError(f"high_score must be within 1..5, got {self.high_score}")


@fast_init
@dataclass(frozen=True, slots=True)
class RfmScores:
    r: int
    f: int
    m: int
    recency_days: int
    orders: int
    amount_minor: int


def day_of(ms: int) -> int:
    return ms // _DAY_MS


def add_purchase(
    buckets: tuple[Bucket, ...], day: int, orders: int, amount_minor: int
) -> tuple[Bucket, ...]:
    """Buckets with `orders`/`amount_minor` added to `day` (kept sorted by day).

    Purchases nearly always fall on the latest day or after it: that is one look at the
    last bucket; any other day is found by bisection, not by a walk (a heavy customer
    has a bucket for each of up to `window_days` days)."""
    if not buckets or buckets[-1][0] < day:
        return (*buckets, (day, orders, amount_minor))
    i = bisect_left(buckets, (day,))  # (day,) sorts just before (day, orders, amount)
    d, o, a = buckets[i]
    if d == day:
        return (*buckets[:i], (d, o + orders, a + amount_minor), *buckets[i + 1 :])
    return (*buckets[:i], (day, orders, amount_minor), *buckets[i:])


def trim(buckets: tuple[Bucket, ...], today: int, window_days: int) -> tuple[Bucket, ...]:
    """Drop buckets that fell out of the window ending `today` (inclusive, `window_days` long)."""
    first = today - window_days + 1
    if not buckets or buckets[0][0] >= first:
        return buckets
    return buckets[bisect_left(buckets, (first,)) :]


@fast_init
@dataclass(frozen=True, slots=True)
class Window:
    """Orders and amount inside the RFM window ending on a day."""

    orders: int
    amount_minor: int


def window(buckets: tuple[Bucket, ...], today: int, policy: RfmPolicy) -> Window:
    """The orders and amount of the buckets inside the window ending `today`."""
    first = today - policy.window_days + 1
    # one loop (compiled, over C integers: rfm.pxd), not sum(map(...)) twice: a builtin
    # and an iterator per sum cost more than the few buckets a person has
    orders = amount = 0
    for d, o, a in buckets:
        if first <= d <= today:
            orders += o
            amount += a
    if cython.compiled:  # the fields set in C: calling the class boxes and parses them
        n = Window.__new__(Window)
        n.orders = orders
        n.amount_minor = amount
        return n
    return Window(orders, amount)


def score_window(w: Window, last_purchase_day: int, today: int, policy: RfmPolicy) -> RfmScores:
    """R, F and M scores at `today` of a customer with window totals `w`."""
    recency = max(0, today - last_purchase_day)
    if cython.compiled:  # C loops over the four thresholds, the result's fields set in C
        n = RfmScores.__new__(RfmScores)
        n.r = 5 - _below(policy.recency_days, recency)
        n.f = 1 + _at_or_below(policy.frequency_orders, w.orders)
        n.m = 1 + _at_or_below(policy.monetary_minor, w.amount_minor)
        n.recency_days = recency
        n.orders = w.orders
        n.amount_minor = w.amount_minor
        return n
    return RfmScores(
        r=5 - bisect_left(policy.recency_days, recency),
        f=1 + bisect_right(policy.frequency_orders, w.orders),
        m=1 + bisect_right(policy.monetary_minor, w.amount_minor),
        recency_days=recency,
        orders=w.orders,
        amount_minor=w.amount_minor,
    )


def _below(thresholds: tuple[int, ...], value: int) -> int:
    """`bisect_left(thresholds, value)` (ascending thresholds): how many are below."""
    n = 0
    for t in thresholds:
        if t >= value:
            break
        n += 1
    return n


def _at_or_below(thresholds: tuple[int, ...], value: int) -> int:
    """`bisect_right(thresholds, value)` (ascending thresholds): how many are at or below."""
    n = 0
    for t in thresholds:
        if t > value:
            break
        n += 1
    return n


def score(
    buckets: tuple[Bucket, ...], last_purchase_day: int, today: int, policy: RfmPolicy
) -> RfmScores:
    """R, F and M scores at `today` for a customer who has purchased at least once."""
    return score_window(window(buckets, today, policy), last_purchase_day, today, policy)


def segment(scores: RfmScores, policy: RfmPolicy) -> RfmSegment:
    high = policy.high_score
    bits = (4 if scores.r >= high else 0) | (2 if scores.f >= high else 0)
    return _SEGMENT_BY_BITS[bits | (1 if scores.m >= high else 0)]


def _ascending(values: list[float], floor: int) -> tuple[int, int, int, int]:
    """Round up and force strictly ascending (ties are common: most buy once)."""
    out: list[int] = []
    for v in values:
        out.append(max(math.ceil(v), out[-1] + 1 if out else floor))
    a, b, c, d = out
    return a, b, c, d


def policy_from_quantiles(
    base: RfmPolicy,
    recency_q: list[float],
    orders_q: list[float],
    amount_q: list[float],
) -> RfmPolicy:
    """Thresholds at the 20/40/60/80 % quantiles of a brand's buyers, so scores split
    them in fifths where ties allow: the most recent fifth scores R5, the top fifth by
    orders F5 and by amount M5."""
    if not (len(recency_q) == len(orders_q) == len(amount_q) == 4):
        raise ValueError("expected four quantiles (20/40/60/80 %) per dimension")
    return RfmPolicy(
        window_days=base.window_days,
        recency_days=_ascending(recency_q, 0),
        frequency_orders=_ascending(orders_q, 1),
        monetary_minor=_ascending(amount_q, 1),
        high_score=base.high_score,
    )
