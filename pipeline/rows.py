"""Domain values -> ClickHouse rows (column order below). Pure, no I/O."""

from __future__ import annotations

from typing import Any

from pipeline.events import EventType, Join, Purchase, Refund, Share, Touchpoint
from pipeline.identity import seed_of
from pipeline.state import PersonState, SegmentChange

EVENT_COLUMNS = (
    "event_id", "type", "brand", "channel", "person_id", "id_type", "user_id", "occurred_at",
    "amount_minor", "order_id", "source", "related_id", "src_partition", "src_offset",
    "related_person",
)  # fmt: skip

STATE_COLUMNS = (
    "brand", "person_id", "version", "seq", "first_seen", "last_seen", "engagements",
    "lifetime_orders", "lifetime_amount_minor", "last_purchase_day", "r", "f", "m",
    "rfm_segment", "aipl_stage", "as_of", "lifecycle", "tags", "layers", "shares",
    "invitations", "first_purchase_day", "subscribed", "acquisition_channel",
    "acquisition_source",
)  # fmt: skip

CHANGE_COLUMNS = (
    "brand", "person_id", "seq", "dimension", "from_value", "to_value", "rule",
    "cause_event_id", "event_time", "r_before", "f_before", "m_before", "r_after", "f_after",
    "m_after", "policy_version",
)  # fmt: skip


# An enum member's `.value` is a property written in Python (~80 ns); a dict is not.
_TYPE_VALUE: dict[EventType, str] = {t: t.value for t in EventType}


def event_row(e: Touchpoint, person_id: str, partition: int, offset: int) -> list[Any]:
    p = e.payload
    amount, order_id, source, related, related_person = 0, "", "", "", ""
    # an order's payloads, the classes named: compiled (cimported), C type checks
    if isinstance(p, (Purchase, Refund)):
        amount, order_id = p.amount_minor, p.order_id
    elif isinstance(p, Join):
        source = p.source or ""
        if p.referrer:
            related, related_person = p.referrer.id, seed_of(p.referrer)
    elif isinstance(p, Share) and p.invitee:
        related, related_person = p.invitee.id, seed_of(p.invitee)
    return [
        e.event_id, _TYPE_VALUE[e.type], e.brand, e.channel, person_id, e.user.id_type, e.user.id,
        e.occurred_at, amount, order_id, source, related, partition, offset, related_person,
    ]  # fmt: skip


def state_row(brand: str, person_id: str, s: PersonState) -> list[Any]:
    a, d = s.agg, s.derived
    known = a.subscribed  # a property: read once
    subscribed = None if known is None else int(known)
    return [
        brand, person_id, s.version, s.seq, a.first_seen, a.last_seen, a.engagements,
        a.lifetime_orders, a.lifetime_amount_minor, a.last_purchase_day, d.scores.r,
        d.scores.f, d.scores.m, d.rfm_segment or "", d.aipl_stage, s.as_of, d.lifecycle or "",
        list(d.tags), dict(d.layers), a.shares, a.invitations, a.first_purchase_day,
        subscribed, a.acquisition_channel or "", a.acquisition_source or "",
    ]  # fmt: skip


def change_row(c: SegmentChange) -> list[Any]:
    b, a = c.scores_before, c.scores_after
    return [
        c.brand, c.person_id, c.seq, c.dimension, c.from_value or "", c.to_value or "", c.rule,
        c.cause_event_id, c.event_time, b.r, b.f, b.m, a.r, a.f, a.m, c.policy_version,
    ]  # fmt: skip
