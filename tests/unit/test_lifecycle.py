"""Lifecycle stages: each boundary, the purchase rhythm, won back, and the due days."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from pipeline.lifecycle import (
    Lifecycle,
    LifecyclePolicy,
    PurchaseHistory,
    at_risk_after,
    lifecycle,
    next_transition_day,
    rule_of,
    transition_days,
)

P = LifecyclePolicy()  # new 30, at risk 60, dormant 120, churned 240, won back 30
ONE_ORDER = PurchaseHistory(orders=1, first_day=100, last_day=100, previous_day=-1)
TWO_ORDERS = PurchaseHistory(orders=2, first_day=50, last_day=100, previous_day=50)


def test_never_purchased_has_no_lifecycle() -> None:
    assert lifecycle(None, 100, P) is None
    assert transition_days(None, P) == ()
    assert rule_of(None, None, P) == "lifecycle:never_purchased"


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (100, Lifecycle.NEW),
        (129, Lifecycle.NEW),
        (130, Lifecycle.ACTIVE),  # new_days after the first order
        (159, Lifecycle.ACTIVE),
        (160, Lifecycle.AT_RISK),  # at_risk_days without a purchase
        (219, Lifecycle.AT_RISK),
        (220, Lifecycle.DORMANT),
        (339, Lifecycle.DORMANT),
        (340, Lifecycle.CHURNED),
        (5000, Lifecycle.CHURNED),
    ],
)
def test_one_order_moves_through_every_stage_on_its_boundary_day(
    today: int, expected: Lifecycle
) -> None:
    assert lifecycle(ONE_ORDER, today, P) == expected


def test_the_transition_days_are_exactly_the_boundaries() -> None:
    assert sorted(transition_days(ONE_ORDER, P)) == [130, 160, 220, 340]
    days = sorted(transition_days(ONE_ORDER, P))
    for day in days:
        assert lifecycle(ONE_ORDER, day - 1, P) != lifecycle(ONE_ORDER, day, P)


def test_a_repeat_customer_is_active_not_new() -> None:
    assert lifecycle(TWO_ORDERS, 100, P) == Lifecycle.ACTIVE


def test_at_risk_follows_the_customers_own_rhythm() -> None:
    weekly = PurchaseHistory(orders=5, first_day=100, last_day=128, previous_day=121)
    assert at_risk_after(weekly, P) == 14  # 2 x 7 days
    assert lifecycle(weekly, 141, P) == Lifecycle.ACTIVE
    assert lifecycle(weekly, 142, P) == Lifecycle.AT_RISK
    slow = PurchaseHistory(orders=3, first_day=0, last_day=160, previous_day=80)
    assert at_risk_after(slow, P) == 119  # 2 x 80 = 160, capped just below dormant
    fast = PurchaseHistory(orders=10, first_day=0, last_day=9, previous_day=8)
    assert at_risk_after(fast, P) == 14  # 2 x 1 day, raised to the floor
    two = PurchaseHistory(orders=2, first_day=0, last_day=7, previous_day=0)
    assert at_risk_after(two, P) == 60  # too little history: the fixed threshold


def test_a_customer_returning_after_dormancy_is_won_back_then_active() -> None:
    back = PurchaseHistory(orders=2, first_day=0, last_day=200, previous_day=0)
    assert lifecycle(back, 200, P) == Lifecycle.WON_BACK
    assert lifecycle(back, 229, P) == Lifecycle.WON_BACK
    assert lifecycle(back, 230, P) == Lifecycle.ACTIVE
    assert 230 in transition_days(back, P)
    assert rule_of(Lifecycle.WON_BACK, back, P) == "lifecycle:won_back/returned_after>=120d"
    soon = PurchaseHistory(orders=2, first_day=0, last_day=119, previous_day=0)
    assert lifecycle(soon, 119, P) == Lifecycle.ACTIVE  # a gap shorter than dormancy


@pytest.mark.parametrize(
    ("stage", "threshold"),
    [
        (Lifecycle.CHURNED, "gap>=240d"),
        (Lifecycle.DORMANT, "gap>=120d"),
        (Lifecycle.AT_RISK, "gap>=14d"),  # the weekly buyer's own rhythm, not the fixed 60
        (Lifecycle.WON_BACK, "returned_after>=120d"),
        (Lifecycle.NEW, "first_order<30d"),
        (Lifecycle.ACTIVE, "gap<14d"),
    ],
)
def test_each_stage_names_its_own_threshold_whether_given_as_a_stage_or_its_value(
    stage: Lifecycle, threshold: str
) -> None:
    weekly = PurchaseHistory(orders=5, first_day=100, last_day=128, previous_day=121)
    expected = f"lifecycle:{stage.value}/{threshold}"
    assert rule_of(stage, weekly, P) == expected
    assert rule_of(str(stage.value), weekly, P) == expected  # as a decoded state holds it


@pytest.mark.parametrize(
    "kwargs",
    [
        {"at_risk_days": 120},
        {"dormant_days": 300},
        {"rhythm_floor_days": 0},
        {"rhythm_min_orders": 1},
        {"rhythm_factor": 0},
        {"new_days": 0},
    ],
)
def test_inconsistent_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LifecyclePolicy(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    orders=hs.integers(0, 12),
    first=hs.integers(0, 400),
    spans=hs.tuples(hs.integers(0, 300), hs.integers(0, 300)),
    today=hs.integers(0, 1_200),
    factor=hs.sampled_from([1.5, 2.0, 3.0]),
)
def test_the_next_transition_day_is_the_first_transition_day_after_today(
    orders: int, first: int, spans: tuple[int, int], today: int, factor: float
) -> None:
    """What the due-time index asks (compiled, in C integers), against its definition."""
    previous = first + spans[0] if orders > 1 else -1
    last = previous + spans[1] if orders > 1 else first
    h = PurchaseHistory(orders=orders, first_day=first, last_day=last, previous_day=previous)
    policy = LifecyclePolicy(rhythm_factor=factor)
    later = [d for d in transition_days(h, policy) if d > today]
    assert next_transition_day(h, today, policy) == (min(later) if later else -1)
    assert next_transition_day(None, today, policy) == -1


@settings(max_examples=300, deadline=None)
@given(
    first=hs.integers(0, 20_000),
    gap=hs.integers(1, 2_000),
    orders=hs.integers(2, 60),
    factor=hs.floats(0.1, 10.0),
    floor=hs.integers(1, 60),
)
def test_at_risk_after_rounds_the_rhythm_up_as_math_ceil(
    first: int, gap: int, orders: int, factor: float, floor: int
) -> None:
    """The rhythm's day count is rounded up in C integers (compiled): as math.ceil."""
    import math

    policy = LifecyclePolicy(  # dormancy far off: the rounding is not hidden by the cap
        rhythm_min_orders=2,
        rhythm_factor=factor,
        rhythm_floor_days=floor,
        dormant_days=100_000,
        churned_days=200_000,
    )
    h = PurchaseHistory(orders, first, first + gap, first + gap - 1)
    days = math.ceil(factor * (gap / (orders - 1)))
    assert at_risk_after(h, policy) == min(max(days, floor), policy.dormant_days - 1)
