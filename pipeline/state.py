"""Per-person state and its transition: `apply(state, event) -> (state, changes)`. Pure.

A state belongs to one (brand, person). Every change of a derived dimension (RFM segment,
AIPL stage) becomes one `SegmentChange` with the next per-person sequence number, so
consumers can see gaps and drop repeats by (brand, person_id, seq).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline import rfm, stages
from pipeline.events import Chat, EventType, Purchase, Refund, Share, Touchpoint

# Refunds look up the order they undo among the customer's most recent orders only,
# which keeps state bounded; an older order's refund is counted as unmatched.
RECENT_ORDERS_KEPT = 8

OrderRef = tuple[str, int, int]  # (order_id, day, amount_minor)


@dataclass(frozen=True, slots=True)
class Policy:
    rfm: rfm.RfmPolicy = field(default_factory=rfm.RfmPolicy)
    aipl: stages.AiplPolicy = field(default_factory=stages.AiplPolicy)


@dataclass(frozen=True, slots=True)
class Scores:
    """The R, F, M scores a change was decided on (0 where the person never bought)."""

    r: int = 0
    f: int = 0
    m: int = 0


NO_SCORES = Scores()


@dataclass(frozen=True, slots=True)
class PersonState:
    version: int = 0  # events applied; orders state rows in the store
    seq: int = 0  # sequence number of the last segment change emitted
    last_offset: int = -1  # source offset of the last applied event (redelivery guard)
    first_seen: int = 0  # ms
    last_seen: int = 0  # ms, the person's event-time clock (never goes back)
    engagements: int = 0
    lifetime_orders: int = 0
    lifetime_amount_minor: int = 0
    last_purchase_day: int = -1
    buckets: tuple[rfm.Bucket, ...] = ()
    recent_orders: tuple[OrderRef, ...] = ()
    scores: Scores = NO_SCORES
    rfm_segment: str | None = None
    aipl_stage: str = stages.AiplStage.AWARENESS.value


@dataclass(frozen=True, slots=True)
class SegmentChange:
    brand: str
    person_id: str
    dimension: str  # "rfm_segment" | "aipl_stage"
    from_value: str | None
    to_value: str | None
    rule: str  # why: the rule that decided `to_value`
    cause_event_id: str
    event_time: int  # ms, event time of the cause
    seq: int
    scores_before: Scores
    scores_after: Scores


@dataclass(frozen=True, slots=True)
class _Counters:
    engagements: int
    lifetime_orders: int
    lifetime_amount_minor: int
    last_purchase_day: int
    buckets: tuple[rfm.Bucket, ...]
    recent_orders: tuple[OrderRef, ...]


def _on_purchase(c: _Counters, e: Touchpoint) -> _Counters:
    p = e.payload
    assert isinstance(p, Purchase)
    day = rfm.day_of(e.occurred_at)
    return _Counters(
        engagements=c.engagements,
        lifetime_orders=c.lifetime_orders + 1,
        lifetime_amount_minor=c.lifetime_amount_minor + p.amount_minor,
        last_purchase_day=max(c.last_purchase_day, day),
        buckets=rfm.add_purchase(c.buckets, day, 1, p.amount_minor),
        recent_orders=(*c.recent_orders, (p.order_id, day, p.amount_minor))[-RECENT_ORDERS_KEPT:],
    )


def _on_refund(c: _Counters, e: Touchpoint) -> _Counters:
    """A refund takes its amount off the order's day; a whole refund also takes the order."""
    p = e.payload
    assert isinstance(p, Refund)
    for i, (order_id, day, amount) in enumerate(c.recent_orders):
        if order_id == p.order_id:
            refunded = min(p.amount_minor, amount)
            whole = refunded >= amount
            remaining = () if whole else ((order_id, day, amount - refunded),)
            return _Counters(
                engagements=c.engagements,
                lifetime_orders=c.lifetime_orders - (1 if whole else 0),
                lifetime_amount_minor=c.lifetime_amount_minor - refunded,
                last_purchase_day=c.last_purchase_day,
                buckets=rfm.add_purchase(c.buckets, day, -1 if whole else 0, -refunded),
                recent_orders=(*c.recent_orders[:i], *remaining, *c.recent_orders[i + 1 :]),
            )
    return c


def _on_engagement(c: _Counters, e: Touchpoint) -> _Counters:
    p = e.payload
    if isinstance(p, Chat) and p.direction != "inbound":
        return c  # a brand's own message says nothing of the customer's interest
    assert isinstance(p, Chat | Share)
    return _Counters(
        c.engagements + 1,
        c.lifetime_orders,
        c.lifetime_amount_minor,
        c.last_purchase_day,
        c.buckets,
        c.recent_orders,
    )


# What each event type does to the counters; types not listed only move the clock.
_EFFECTS: dict[EventType, Callable[[_Counters, Touchpoint], _Counters]] = {
    EventType.PURCHASE: _on_purchase,
    EventType.REFUND: _on_refund,
    EventType.CHAT: _on_engagement,
    EventType.SHARE: _on_engagement,
}


def apply(
    state: PersonState | None,
    event: Touchpoint,
    person_id: str,
    policy: Policy,
    offset: int = -1,
) -> tuple[PersonState, list[SegmentChange]]:
    """Apply one event to a person's state; return the new state and the changes it caused."""
    s = state if state is not None else PersonState(first_seen=event.occurred_at)
    now = max(s.last_seen, event.occurred_at)
    today = rfm.day_of(now)
    c = _Counters(
        s.engagements,
        s.lifetime_orders,
        s.lifetime_amount_minor,
        s.last_purchase_day,
        rfm.trim(s.buckets, today, policy.rfm.window_days),
        s.recent_orders,
    )
    effect = _EFFECTS.get(event.type)
    if effect is not None:
        c = effect(c, event)

    scores = NO_SCORES
    segment: str | None = None
    window_orders = 0
    segment_rule = "rfm:never_purchased"
    if c.last_purchase_day >= 0:
        rs = rfm.score(c.buckets, c.last_purchase_day, today, policy.rfm)
        scores = Scores(rs.r, rs.f, rs.m)
        segment = rfm.segment(rs, policy.rfm).value
        window_orders = rs.orders
        segment_rule = f"rfm:R{rs.r}F{rs.f}M{rs.m}/high>={policy.rfm.high_score}"
    stage = stages.aipl_stage(c.engagements, c.lifetime_orders, window_orders, policy.aipl).value

    changes: list[SegmentChange] = []
    seq = s.seq
    for dimension, before, after, rule in (
        ("rfm_segment", s.rfm_segment, segment, segment_rule),
        ("aipl_stage", s.aipl_stage, stage, f"aipl:{stage}"),
    ):
        if before != after:
            seq += 1
            changes.append(
                SegmentChange(
                    brand=event.brand,
                    person_id=person_id,
                    dimension=dimension,
                    from_value=before,
                    to_value=after,
                    rule=rule,
                    cause_event_id=event.event_id,
                    event_time=event.occurred_at,
                    seq=seq,
                    scores_before=s.scores,
                    scores_after=scores,
                )
            )

    new = PersonState(
        version=s.version + 1,
        seq=seq,
        last_offset=max(s.last_offset, offset),
        first_seen=min(s.first_seen, event.occurred_at),
        last_seen=now,
        engagements=c.engagements,
        lifetime_orders=c.lifetime_orders,
        lifetime_amount_minor=c.lifetime_amount_minor,
        last_purchase_day=c.last_purchase_day,
        buckets=c.buckets,
        recent_orders=c.recent_orders,
        scores=scores,
        rfm_segment=segment,
        aipl_stage=stage,
    )
    return new, changes


def state_key(brand: str, person_id: str) -> str:
    """Table key of a (brand, person) state; brand slugs never contain ':'."""
    return f"{brand}:{person_id}"


def split_state_key(key: str) -> tuple[str, str]:
    brand, _, person_id = key.partition(":")
    return brand, person_id
