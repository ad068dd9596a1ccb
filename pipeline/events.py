"""Typed touchpoint events: the values the domain core works on.

One envelope (`Touchpoint`) carries what every event has; `payload` is one of the typed
records below. The Avro schema in `schemas/touchpoint_event.v1.avsc` maps 1:1 onto these
(see `pipeline.codec`). Identity values are already pseudonymised (keyed hash) by the
time they are here: see `pipeline.pii`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pipeline.frozen import fast_init


class EventType(StrEnum):
    JOIN = "join"
    LEAVE = "leave"
    PURCHASE = "purchase"
    REFUND = "refund"
    CHAT = "chat"
    SHARE = "share"
    IDENTIFY = "identify"


@fast_init
@dataclass(frozen=True, slots=True)
class UserRef:
    """A channel identity: which kind of id (openid, unionid, ...) and its keyed hash."""

    id_type: str
    id: str


@fast_init
@dataclass(frozen=True, slots=True)
class Join:
    kind: str  # follow | add_friend | join_group | register
    source: str | None = None  # acquisition source: qr_code, live_stream, ad, referral ...
    referrer: UserRef | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Leave:
    kind: str  # unfollow | delete_friend | exit_group


@fast_init
@dataclass(frozen=True, slots=True)
class Purchase:
    order_id: str
    amount_minor: int  # in the currency's minor unit (fen for CNY)
    currency: str = "CNY"
    items: int = 1
    place: str = "online"  # online | store


@fast_init
@dataclass(frozen=True, slots=True)
class Refund:
    order_id: str
    amount_minor: int
    currency: str = "CNY"


@fast_init
@dataclass(frozen=True, slots=True)
class Chat:
    direction: str  # inbound (customer wrote) | outbound (brand wrote)
    party: str  # customer | staff | bot


@fast_init
@dataclass(frozen=True, slots=True)
class Share:
    content_id: str
    invitee: UserRef | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Identify:
    identities: tuple[UserRef, ...]


Payload = Join | Leave | Purchase | Refund | Chat | Share | Identify


@fast_init
@dataclass(frozen=True, slots=True)
class Touchpoint:
    """One touchpoint of one customer with one brand on one channel."""

    event_id: str
    type: EventType
    brand: str
    channel: str
    user: UserRef
    occurred_at: int  # event time, ms since the Unix epoch (UTC)
    payload: Payload
