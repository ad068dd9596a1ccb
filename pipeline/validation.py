"""Checks a decoded touchpoint against the contract before it may touch any state. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import Reason, Rejected
from pipeline.events import Identify, Join, Purchase, Refund, Share, Touchpoint, UserRef
from pipeline.pii import PERSONAL_ID_TYPES, is_pseudonymised

MS_PER_DAY = 86_400_000
# Brand and brand-group names: short slugs (':' separates brand and person in state keys).
# `\Z`, not `$`, which also matches before a final newline ("lumi\n" is not a slug).
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 64 * 1024
    max_amount_minor: int = 100_000_000  # 1,000,000.00 in one order is absurd for these brands
    max_future_ms: int = 10 * 60 * 1000  # clock skew allowed for event time ahead of now
    earliest_ms: int = 946_684_800_000  # 2000-01-01: nothing older is a real touchpoint
    brands: frozenset[str] | None = None  # None: any brand slug is accepted
    groups: frozenset[str] = frozenset()  # brand-group names, never an event's brand


def _check_pseudonymised(where: str, user: UserRef) -> None:
    if user.id_type in PERSONAL_ID_TYPES and not is_pseudonymised(user.id):
        # Never echo the value: it is personal data.
        raise Rejected(Reason.RAW_PII, f"{where} of type {user.id_type} is not a keyed hash")


def _check_identities(e: Touchpoint) -> None:
    """Every identity an event carries, the customer's and any in the payload, must be a
    keyed hash where its type is personal (checked in place: no list of them per event)."""
    _check_pseudonymised("user.id", e.user)
    p = e.payload
    if isinstance(p, Join) and p.referrer is not None:
        _check_pseudonymised("payload.referrer", p.referrer)
    elif isinstance(p, Share) and p.invitee is not None:
        _check_pseudonymised("payload.invitee", p.invitee)
    elif isinstance(p, Identify):
        for u in p.identities:
            _check_pseudonymised("payload.identities", u)


# Brands already matched: the pattern runs once per brand rather than once per event (a
# topic carries a few brands). Bounded: past the limit, new brands are matched each time.
_SLUGS_SEEN: set[str] = set()
_SLUGS_KEPT = 1024


def _is_slug(brand: str) -> bool:
    if brand in _SLUGS_SEEN:
        return True
    if SLUG.match(brand) is None:
        return False
    if len(_SLUGS_SEEN) < _SLUGS_KEPT:
        _SLUGS_SEEN.add(brand)
    return True


def check_size(size: int, limits: Limits) -> None:
    if size > limits.max_message_bytes:
        raise Rejected(Reason.TOO_LARGE, f"{size} bytes > limit {limits.max_message_bytes}")


def validate(e: Touchpoint, now_ms: int, limits: Limits) -> Touchpoint:
    """Return the event if it keeps the contract; raise Rejected with the reason if not."""
    # each field by name, not getattr in a loop: compiled, these are C field reads
    if not e.event_id:
        raise Rejected(Reason.MISSING_FIELD, "event_id is empty")
    if not e.brand:
        raise Rejected(Reason.MISSING_FIELD, "brand is empty")
    if not e.channel:
        raise Rejected(Reason.MISSING_FIELD, "channel is empty")
    if not e.user.id or not e.user.id_type:
        raise Rejected(Reason.MISSING_FIELD, "user.id_type and user.id are required")
    _check_identities(e)
    if not _is_slug(e.brand):
        raise Rejected(Reason.UNKNOWN_BRAND, f"brand {e.brand[:80]!r} is not a slug")
    if e.brand in limits.groups:
        raise Rejected(Reason.UNKNOWN_BRAND, f"{e.brand!r} is a brand group, not a brand")
    if limits.brands is not None and e.brand not in limits.brands:
        raise Rejected(Reason.UNKNOWN_BRAND, f"brand {e.brand!r} is not configured")
    if e.occurred_at > now_ms + limits.max_future_ms:
        ahead = (e.occurred_at - now_ms) / 1000
        raise Rejected(Reason.BAD_TIMESTAMP, f"occurred_at is {ahead:.0f}s in the future")
    if e.occurred_at < limits.earliest_ms:
        raise Rejected(
            Reason.BAD_TIMESTAMP, f"occurred_at {e.occurred_at} is before {limits.earliest_ms}"
        )
    p = e.payload
    # an order's payloads, the classes named: compiled (cimported), C type checks
    if isinstance(p, (Purchase, Refund)):
        if not p.order_id:
            raise Rejected(Reason.MISSING_FIELD, "order_id is empty")
        if p.amount_minor < 0 or p.amount_minor > limits.max_amount_minor:
            raise Rejected(
                Reason.BAD_AMOUNT,
                f"amount_minor {p.amount_minor} outside 0..{limits.max_amount_minor}",
            )
    return e
