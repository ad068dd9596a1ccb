"""Customer lifecycle (new, active, at risk, dormant, churned, won back). Pure.

The lifecycle is a function of a customer's purchase history and the clock, so time alone
moves it: `transition_days` lists the days on which it can change with no event, which
is what the due-time index in `pipeline.engine` schedules. People who never purchased
have no lifecycle (AIPL's A and I stages describe them).

"At risk" adapts to a customer's own rhythm: with enough history, a customer who buys
every 10 days is at risk sooner than one who buys every 80 days.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pipeline.frozen import fast_init


class Lifecycle(StrEnum):
    NEW = "new"
    ACTIVE = "active"
    AT_RISK = "at_risk"
    DORMANT = "dormant"
    CHURNED = "churned"
    WON_BACK = "won_back"


LIFECYCLE_NAMES_ZH: dict[Lifecycle, str] = {
    Lifecycle.NEW: "新客",
    Lifecycle.ACTIVE: "活跃",
    Lifecycle.AT_RISK: "流失预警",
    Lifecycle.DORMANT: "沉睡",
    Lifecycle.CHURNED: "流失",
    Lifecycle.WON_BACK: "召回",
}


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """Days without a purchase before each move, and how "at risk" follows the rhythm.

    new_days: a customer with one order stays "new" this many days after it.
    at_risk_days: at risk after this many days without purchase (no rhythm known).
    rhythm_min_orders: from this many orders on, at risk after `rhythm_factor` times the
      customer's mean interval between orders, clamped to [rhythm_floor_days, dormant_days).
    dormant_days / churned_days: dormant, then churned, after this many days.
    won_back_days: a customer who returns after being dormant (a gap of at least
      dormant_days) is "won back" for this many days, then active.
    """

    new_days: int = 30
    at_risk_days: int = 60
    rhythm_min_orders: int = 3
    rhythm_factor: float = 2.0
    rhythm_floor_days: int = 14
    dormant_days: int = 120
    churned_days: int = 240
    won_back_days: int = 30

    def __post_init__(self) -> None:
        if not 0 < self.at_risk_days < self.dormant_days < self.churned_days:
            raise ValueError(
                "lifecycle days must satisfy 0 < at_risk_days < dormant_days < churned_days, "
                f"got {self.at_risk_days}, {self.dormant_days}, {self.churned_days}"
            )
        if not 0 < self.rhythm_floor_days < self.dormant_days:
            raise ValueError(
                f"rhythm_floor_days must be within 1..dormant_days-1, got {self.rhythm_floor_days}"
            )
        if self.rhythm_min_orders < 2 or self.rhythm_factor <= 0:
            raise ValueError(
                "rhythm_min_orders must be >= 2 and rhythm_factor > 0, got "
                f"{self.rhythm_min_orders}, {self.rhythm_factor}"
            )
        if self.new_days < 1 or self.won_back_days < 1:
            raise ValueError("new_days and won_back_days must be >= 1")


@fast_init
@dataclass(frozen=True, slots=True)
class PurchaseHistory:
    """What the lifecycle needs, all order-independent aggregates (min, max, counts)."""

    orders: int  # lifetime orders, less wholly refunded ones
    first_day: int  # day of the first purchase
    last_day: int  # day of the latest purchase
    previous_day: int  # latest purchase day before last_day (-1 when none)


def at_risk_after(h: PurchaseHistory, policy: LifecyclePolicy) -> int:
    """Days without purchase after which this customer counts as at risk."""
    if h.orders < policy.rhythm_min_orders or h.last_day <= h.first_day:
        return policy.at_risk_days
    mean_interval = (h.last_day - h.first_day) / (h.orders - 1)
    x = policy.rhythm_factor * mean_interval
    days = int(x)  # truncated toward zero, then up: math.ceil, in C when compiled
    if days < x:
        days += 1
    return min(max(days, policy.rhythm_floor_days), policy.dormant_days - 1)


def _returned_after_dormancy(h: PurchaseHistory, policy: LifecyclePolicy) -> bool:
    return h.previous_day >= 0 and h.last_day - h.previous_day >= policy.dormant_days


# Bound once: reading a member off its enum class goes through a descriptor (~50 ns).
_NEW, _ACTIVE, _AT_RISK, _DORMANT, _CHURNED, _WON_BACK = (
    Lifecycle.NEW,
    Lifecycle.ACTIVE,
    Lifecycle.AT_RISK,
    Lifecycle.DORMANT,
    Lifecycle.CHURNED,
    Lifecycle.WON_BACK,
)


def lifecycle(h: PurchaseHistory | None, today: int, policy: LifecyclePolicy) -> Lifecycle | None:
    """The lifecycle stage at `today`, or None for someone who never purchased."""
    if h is None or h.orders <= 0:
        return None
    gap = today - h.last_day
    if gap >= policy.churned_days:
        return _CHURNED
    if gap >= policy.dormant_days:
        return _DORMANT
    if gap >= at_risk_after(h, policy):
        return _AT_RISK
    if _returned_after_dormancy(h, policy) and gap < policy.won_back_days:
        return _WON_BACK
    if h.orders == 1 and today - h.first_day < policy.new_days:
        return _NEW
    return _ACTIVE


# The threshold each stage's rule names, as text; only the stage at hand's is built.
_THRESHOLDS: dict[str, Callable[[PurchaseHistory, LifecyclePolicy], str]] = {
    Lifecycle.CHURNED: lambda h, p: f"gap>={p.churned_days}d",
    Lifecycle.DORMANT: lambda h, p: f"gap>={p.dormant_days}d",
    Lifecycle.AT_RISK: lambda h, p: f"gap>={at_risk_after(h, p)}d",
    Lifecycle.WON_BACK: lambda h, p: f"returned_after>={p.dormant_days}d",
    Lifecycle.NEW: lambda h, p: f"first_order<{p.new_days}d",
    Lifecycle.ACTIVE: lambda h, p: f"gap<{at_risk_after(h, p)}d",
}


def rule_of(stage: str | None, h: PurchaseHistory | None, policy: LifecyclePolicy) -> str:
    """The rule that put a customer in `stage` (a `Lifecycle`, or its value as a state
    holds it), as it appears on a segment change."""
    if stage is None or h is None:
        return "lifecycle:never_purchased"
    return f"lifecycle:{stage}/{_THRESHOLDS[stage](h, policy)}"


def transition_days(h: PurchaseHistory | None, policy: LifecyclePolicy) -> tuple[int, ...]:
    """Days on which the lifecycle may change with no new event (for the due-time index)."""
    if h is None or h.orders <= 0:
        return ()
    days = [
        h.last_day + at_risk_after(h, policy),
        h.last_day + policy.dormant_days,
        h.last_day + policy.churned_days,
    ]
    if h.orders == 1:
        days.append(h.first_day + policy.new_days)
    if _returned_after_dormancy(h, policy):
        days.append(h.last_day + policy.won_back_days)
    return tuple(days)


def next_transition_day(h: PurchaseHistory | None, today: int, policy: LifecyclePolicy) -> int:
    """The first of `transition_days` after `today`, -1 when none: what the due-time index
    asks on every re-derivation. Compiled, C integers throughout, where the days were
    boxed into a list and a tuple for one minimum."""
    if h is None or h.orders <= 0:
        return -1
    best = _earliest_after(-1, h.last_day + at_risk_after(h, policy), today)
    best = _earliest_after(best, h.last_day + policy.dormant_days, today)
    best = _earliest_after(best, h.last_day + policy.churned_days, today)
    if h.orders == 1:
        best = _earliest_after(best, h.first_day + policy.new_days, today)
    if _returned_after_dormancy(h, policy):
        best = _earliest_after(best, h.last_day + policy.won_back_days, today)
    return best


def _earliest_after(best: int, day: int, today: int) -> int:
    """`best` or `day`, whichever is earlier, of those after `today` (-1: none yet)."""
    if day > today and (best < 0 or day < best):
        return day
    return best
