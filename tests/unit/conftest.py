"""Shared builders for the pure-core unit tests: events at fixed times, one codec set.

Fixtures are session-scoped (they hold no state), so hypothesis tests may use them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.codec import Codecs
from pipeline.events import EventType, Payload, Touchpoint, UserRef

# A keyed hash as `pipeline.pii` spells one: prefix + 32 hex digits.
HASHED_OPENID = "h1:" + "0123456789abcdef" * 2

MakeEvent = Callable[..., Touchpoint]


def _make_event(
    type: EventType,
    payload: Payload,
    at: int,
    event_id: str = "e1",
    brand: str = "lumi",
    channel: str = "wecom",
    user: UserRef | None = None,
) -> Touchpoint:
    return Touchpoint(
        event_id=event_id,
        type=type,
        brand=brand,
        channel=channel,
        user=user if user is not None else UserRef("openid", HASHED_OPENID),
        occurred_at=at,
        payload=payload,
    )


@pytest.fixture(scope="session")
def make_event() -> MakeEvent:
    """`make_event(type, payload, at_ms, event_id=..., brand=..., channel=..., user=...)`."""
    return _make_event


@pytest.fixture(scope="session")
def hashed_user() -> UserRef:
    return UserRef("openid", HASHED_OPENID)


@pytest.fixture(scope="session")
def codecs() -> Codecs:
    """Codecs over the repository's own `schemas/` (the embedded registry)."""
    return Codecs()
