"""AIPL: the stage as a function of counters, and as a customer's events move it."""

from __future__ import annotations

import pytest

from pipeline import state as st
from pipeline.events import Chat, EventType, Purchase, Share
from pipeline.rfm import RfmPolicy
from pipeline.stages import AIPL_NAMES_ZH, AiplPolicy, AiplStage, aipl_stage

DAY = 86_400_000
HOUR = 3_600_000
T0 = 19_675 * DAY  # 2023-11-14T00:00Z

DEFAULT = AiplPolicy(interest_min_engagements=1, loyalty_min_orders=2)


@pytest.mark.parametrize(
    ("engagements", "lifetime_orders", "window_orders", "expected"),
    [
        (0, 0, 0, "A"),
        (1, 0, 0, "I"),
        (5, 0, 0, "I"),
        (0, 1, 1, "P"),
        (3, 1, 0, "P"),  # bought once, the order has left the window
        (0, 2, 1, "P"),  # bought twice, one order has left the window
        (0, 2, 2, "L"),
        (0, 9, 3, "L"),
    ],
)
def test_stage_from_counters(
    engagements: int, lifetime_orders: int, window_orders: int, expected: str
) -> None:
    assert aipl_stage(engagements, lifetime_orders, window_orders, DEFAULT) == expected


@pytest.mark.parametrize(
    ("engagements", "lifetime_orders", "window_orders", "expected"),
    [
        (2, 0, 0, AiplStage.AWARENESS),
        (3, 0, 0, AiplStage.INTEREST),
        (0, 2, 2, AiplStage.PURCHASE),
        (0, 3, 3, AiplStage.LOYALTY),
    ],
)
def test_stage_follows_the_configured_minimums(
    engagements: int, lifetime_orders: int, window_orders: int, expected: AiplStage
) -> None:
    policy = AiplPolicy(interest_min_engagements=3, loyalty_min_orders=3)
    assert aipl_stage(engagements, lifetime_orders, window_orders, policy) is expected


@pytest.mark.parametrize(
    ("interest", "loyalty"),
    [(0, 2), (-1, 2), (1, 1), (1, 0)],
)
def test_policy_rejects_minimums_below_their_floor(interest: int, loyalty: int) -> None:
    with pytest.raises(ValueError, match="interest_min_engagements"):
        AiplPolicy(interest_min_engagements=interest, loyalty_min_orders=loyalty)


def test_policy_accepts_the_floors() -> None:
    p = AiplPolicy(interest_min_engagements=1, loyalty_min_orders=2)
    assert (p.interest_min_engagements, p.loyalty_min_orders) == (1, 2)


def test_every_stage_has_a_chinese_name() -> None:
    assert AIPL_NAMES_ZH == {
        AiplStage.AWARENESS: "认知",
        AiplStage.INTEREST: "兴趣",
        AiplStage.PURCHASE: "购买",
        AiplStage.LOYALTY: "忠诚",
    }


# -- through a customer's events ----------------------------------------------------------


def test_stage_moves_a_i_p_l_and_back_to_p_when_an_order_leaves_the_window(make_event) -> None:
    policy = st.Policy(rfm=RfmPolicy(window_days=30))
    s: st.PersonState | None = None
    assert st.PersonState().aipl_stage == "A"
    stages: list[str] = []
    steps = [
        (EventType.CHAT, Chat("outbound", "staff"), T0),  # the brand spoke: still A
        (EventType.CHAT, Chat("inbound", "customer"), T0 + HOUR),  # I
        (EventType.PURCHASE, Purchase("o1", 10_000), T0 + 2 * HOUR),  # P
        (EventType.PURCHASE, Purchase("o2", 10_000), T0 + 10 * DAY),  # L
        (EventType.SHARE, Share("c1"), T0 + 29 * DAY),  # o1 still in the 30-day window: L
        (EventType.SHARE, Share("c2"), T0 + 30 * DAY),  # o1 has left the window: P
    ]
    for i, (kind, payload, at) in enumerate(steps):
        s, _ = st.apply(s, make_event(kind, payload, at, event_id=f"e{i}"), "p1", policy)
        stages.append(s.aipl_stage)
    assert stages == ["A", "I", "P", "L", "L", "P"]
