"""A state carried forward event by event equals one derived from scratch.

`state._recompute` keeps RFM, the lifecycle and the due time of the previous state when
the purchases did not change and no due time passed, and skips the rules when they read
none of the facts that changed. These properties check that shortcut against `derive`
and `compute_due` from scratch after every step, under rules that read every fact.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from pipeline.events import (
    Chat,
    EventType,
    Identify,
    Join,
    Leave,
    Purchase,
    Refund,
    Share,
    Touchpoint,
    UserRef,
)
from pipeline.rfm import RfmPolicy
from pipeline.rules import FACT_NAMES, compile_rules
from pipeline.state import (
    PersonState,
    Policy,
    advance,
    apply,
    apply_referral,
    compute_due,
    derive,
)

from .test_state import PERSON, T0, USER

DAY = 86_400_000
HOUR = 3_600_000
BRAND = "lumi"


def _tag(name: str, when: dict) -> dict:
    return {"name": name, "when": when}


# One tag per fact, with thresholds the generated histories cross both ways.
EVERY_FACT_RULES = {
    "default": {
        "tags": [
            _tag("orders2", {"lifetime_orders": {"gte": 2}}),
            _tag("spent", {"lifetime_amount_minor": {"gte": 120_000}}),
            _tag("window2", {"window_orders": {"gte": 2}}),
            _tag("window_spent", {"window_amount_minor": {"gte": 100_000}}),
            _tag("r4", {"r": {"gte": 4}}),
            _tag("f2", {"f": {"gte": 2}}),
            _tag("m3", {"m": {"gte": 3}}),
            _tag("engaged", {"engagements": {"gte": 2}}),
            _tag("sharer", {"shares": {"eq": 2}}),
            _tag("inviter", {"invitations": {"gte": 1}}),
            _tag("converter", {"converted_invitees": {"gte": 1}}),
            _tag("lapsed", {"days_since_last_purchase": {"in": [9, 10, 25]}}),
            _tag("old_friend", {"days_since_first_seen": {"gte": 12}}),
            _tag("following", {"subscribed": {"eq": True}}),
            _tag("champion", {"rfm_segment": {"ne": "general_retain"}}),
            _tag("interested", {"aipl_stage": {"eq": "I"}}),
            _tag("at_risk", {"lifecycle": {"in": ["at_risk", "won_back"]}}),
            _tag("via_wecom", {"acquisition_channel": {"eq": "wecom"}}),
            _tag("via_qr", {"acquisition_source": {"eq": "qr_code"}}),
        ],
        "layers": [
            {
                "name": "value",
                "levels": [
                    {"name": "high", "when": {"m": {"gte": 4}}},
                    {"name": "chatty", "when": {"engagements": {"gte": 3}}},
                    {"name": "rest"},
                ],
            }
        ],
    }
}
WINDOW = RfmPolicy(window_days=30)
EVERY_FACT = Policy(rfm=WINDOW, rules=compile_rules(EVERY_FACT_RULES))
# And one policy per tag alone: a fact that changes only together with another (an
# invitation is also a share) must still make rules that read it alone run again.
POLICIES = [
    EVERY_FACT,
    Policy(),  # the built-in rules
    *(
        Policy(rfm=WINDOW, rules=compile_rules({"default": {"tags": [tag]}}))
        for tag in EVERY_FACT_RULES["default"]["tags"]
    ),
]

_step = hs.tuples(
    hs.sampled_from(
        [
            "purchase",
            "refund",
            "chat_in",
            "chat_out",
            "share",
            "invite",
            "join",
            "referred_join",
            "leave",
            "referral",
            "identify",
        ]
    ),
    # gap to the previous event; below 0 an event arrives late (the clock stays)
    hs.integers(-3 * DAY, 20 * DAY) | hs.integers(0, 6 * HOUR),
    hs.integers(1, 90_000),  # amount
    hs.integers(-1, 9),  # which earlier order a refund names (-1: an unknown one)
    hs.sampled_from(["wecom", "mini_program", "douyin"]),
)


def _events(steps: list[tuple[str, int, int, int, str]]) -> list[tuple[str, Touchpoint]]:
    out: list[tuple[str, Touchpoint]] = []
    orders: list[str] = []
    at = T0
    for i, (kind, gap, amount, target, channel) in enumerate(steps):
        at += gap
        eid = f"e{i}"
        payload: object
        if kind == "purchase":
            orders.append(f"o{i}")
            typ, payload = EventType.PURCHASE, Purchase(f"o{i}", amount)
        elif kind == "refund":
            order = orders[target % len(orders)] if orders and target >= 0 else "o-unknown"
            typ, payload = EventType.REFUND, Refund(order, amount)
        elif kind in ("chat_in", "chat_out"):
            inbound = kind == "chat_in"
            payload = Chat("inbound", "customer") if inbound else Chat("outbound", "staff")
            typ = EventType.CHAT
        elif kind in ("share", "invite"):
            invitee = UserRef("openid", "h1:" + "ab" * 16) if kind == "invite" else None
            typ, payload = EventType.SHARE, Share("c", invitee=invitee)
        elif kind in ("join", "referred_join"):
            referrer = UserRef("openid", "h1:" + "cd" * 16) if kind == "referred_join" else None
            source = "qr_code" if target % 2 else "search"
            typ, payload = EventType.JOIN, Join("follow", source=source, referrer=referrer)
        elif kind == "leave":
            typ, payload = EventType.LEAVE, Leave("unfollow")
        else:  # identify; for "referral" only its time is used (a credit, not an event)
            typ, payload = EventType.IDENTIFY, Identify((USER,))
        out.append((kind, Touchpoint(eid, typ, BRAND, channel, USER, at, payload)))  # type: ignore[arg-type]
    return out


histories = hs.lists(_step, min_size=1, max_size=40).map(_events)


def _assert_like_from_scratch(s: PersonState, policy: Policy) -> None:
    scratch = derive(s.agg, BRAND, s.as_of, policy)
    assert s.derived == scratch
    assert s.derived.window == scratch.window  # not part of ==: a cache carried forward
    assert s.due == compute_due(s.agg, s.as_of, BRAND, policy)


def test_the_rules_under_test_read_every_fact() -> None:
    assert EVERY_FACT.rules.default.facts_used == FACT_NAMES


@settings(max_examples=150, deadline=None)
@given(histories)
def test_each_state_equals_the_one_derived_from_scratch(
    events: list[tuple[str, Touchpoint]],
) -> None:
    for policy in POLICIES:
        _replayed(events, policy, check=True)


def _replayed(events: list[tuple[str, Touchpoint]], policy: Policy, check: bool) -> PersonState:
    """The state after `events` (`check`: each step compared with one from scratch)."""
    s: PersonState | None = None
    for i, (kind, e) in enumerate(events):
        if kind == "referral":
            s, _ = apply_referral(s, BRAND, PERSON, f"invitee-{i}", e.occurred_at, policy)
        else:
            s, _ = apply(s, e, PERSON, policy, i)
        if check:
            _assert_like_from_scratch(s, policy)
    assert s is not None
    return s


@settings(max_examples=100, deadline=None)
@given(histories, hs.lists(hs.integers(1, 60), min_size=1, max_size=8))
def test_each_time_step_equals_the_state_derived_from_scratch(
    events: list[tuple[str, Touchpoint]], gaps: list[int]
) -> None:
    """After the events, time alone: each due time reached by `advance` re-derives RFM,
    the stage and the lifecycle, and keeps the rules' tags and layers when they read none
    of what time moved (`state._moved_in_time`): under rules reading each fact alone,
    every step must equal the state derived from scratch."""
    for policy in POLICIES:
        s = _replayed(events, policy, check=False)
        at = s.as_of
        for gap in gaps:
            at += gap * DAY
            s, _ = advance(s, BRAND, PERSON, at, policy)
            _assert_like_from_scratch(s, policy)


def test_the_facts_time_moves_are_all_the_facts_read_from_more_than_the_aggregates() -> None:
    """A time step keeps the aggregates (but for buckets leaving the window): every fact
    not in `_TIME_FACTS` must read only the aggregates' other fields."""
    import re

    from pipeline.rules import FACT_SOURCES
    from pipeline.state import _TIME_FACTS

    assert set(_TIME_FACTS) <= set(FACT_SOURCES)
    for fact, source in FACT_SOURCES.items():
        if fact in _TIME_FACTS:
            continue
        assert not re.findall(r"\b(scores|segment|stage|life|today|window)\b", source), fact
        assert "buckets" not in source, fact


def _window_spender(policy: Policy) -> PersonState:
    s: PersonState | None = None
    for i, day in enumerate((0, 5)):  # 160 000 in the window, until the window passes
        buy = Touchpoint(
            f"e{i}",
            EventType.PURCHASE,
            BRAND,
            "wecom",
            USER,
            T0 + day * DAY,
            Purchase(f"o{i}", 80_000),
        )
        s, _ = apply(s, buy, PERSON, policy, i)
    assert s is not None
    return s


@pytest.mark.parametrize("decoded", [False, True], ids=["live", "decoded"])
@pytest.mark.parametrize("fact", ["window_amount_minor", "window_orders"])
def test_a_time_step_that_moves_only_the_windows_totals_runs_the_rules_reading_them(
    decoded: bool, fact: str
) -> None:
    """The window's orders and amount move together when a bucket leaves it, and a rule
    may read either alone; a state decoded from the changelog does not know its window
    (None) and must not be taken to have kept it."""
    when = {fact: {"gte": 100_000 if fact == "window_amount_minor" else 2}}
    policy = Policy(rfm=WINDOW, rules=compile_rules({"default": {"tags": [_tag("w", when)]}}))
    s = _window_spender(policy)
    if decoded:  # on the day before the first purchase leaves the window
        s, _ = advance(s, BRAND, PERSON, T0 + (WINDOW.window_days - 1) * DAY, policy)
        from pipeline.codec import Codecs

        codecs = Codecs()
        s = codecs.decode_state(codecs.encode_state(s))
        assert s.derived.window is None
    assert s.derived.tags == ("w",)
    for day in (WINDOW.window_days, 40, 60, 90):  # out: first one purchase, then both
        s, _ = advance(s, BRAND, PERSON, T0 + day * DAY, policy)
        _assert_like_from_scratch(s, policy)
    assert s.derived.tags == ()
