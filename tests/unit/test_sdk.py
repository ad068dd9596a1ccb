"""The SDK's edge work before anything is sent: every identity hashed, the contract checked."""

from __future__ import annotations

import time

import pytest

from pipeline.errors import Reason, Rejected
from pipeline.events import EventType, Identify, Join, Share, Touchpoint, UserRef
from pipeline.pii import is_pseudonymised, pseudonymise
from pipeline.sdk import Publisher, pseudonymise_event
from pipeline.settings import Settings

KEY = b"unit-test-key-0123456789"
NOW = int(time.time() * 1000)


def _users(e: Touchpoint) -> list[UserRef]:
    p = e.payload
    users = [e.user]
    users += [p.referrer] if isinstance(p, Join) and p.referrer else []
    users += [p.invitee] if isinstance(p, Share) and p.invitee else []
    users += list(p.identities) if isinstance(p, Identify) else []
    return users


RAW = [
    Touchpoint("j", EventType.JOIN, "lumi", "wecom", UserRef("external_userid", "wm-1"), NOW,
               Join("add_friend", "referral", UserRef("unionid", "oU-2"))),
    Touchpoint("s", EventType.SHARE, "lumi", "douyin", UserRef("openid", "o-3"), NOW,
               Share("live-1", UserRef("openid", "o-4"))),
    Touchpoint("i", EventType.IDENTIFY, "lumi", "store", UserRef("member_id", "M-5"), NOW,
               Identify((UserRef("phone", "138 0013 8000"), UserRef("anonymous", "dev-6")))),
]  # fmt: skip


@pytest.mark.parametrize("event", RAW, ids=[e.event_id for e in RAW])
def test_every_identity_is_hashed_and_hashing_twice_changes_nothing(event: Touchpoint) -> None:
    hashed = pseudonymise_event(event, KEY)
    assert all(is_pseudonymised(u.id) for u in _users(hashed))
    assert _users(hashed) == [
        UserRef(u.id_type, pseudonymise(u.id_type, u.id, KEY)) for u in _users(event)
    ]
    assert pseudonymise_event(hashed, KEY) == hashed
    assert (hashed.event_id, hashed.type, hashed.occurred_at) == (
        event.event_id, event.type, event.occurred_at,
    )  # fmt: skip


async def test_prepare_takes_canonical_json_with_raw_ids_and_checks_the_contract() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:9", pii_key=KEY.decode())
    publisher = Publisher(settings)  # not started: prepare() sends nothing
    event = {
        "event_id": "p1", "type": "purchase", "brand": "lumi", "channel": "store",
        "user": {"id_type": "phone", "id": "+86 138 0013 8000"}, "occurred_at": NOW,
        "payload": {"order_id": "o-1", "amount_minor": 100},
    }  # fmt: skip
    prepared = publisher.prepare(event)
    assert prepared.user.id == pseudonymise("phone", "13800138000", KEY)
    with pytest.raises(Rejected) as caught:
        publisher.prepare({**event, "payload": {"order_id": "o-1", "amount_minor": -1}})
    assert caught.value.reason is Reason.BAD_AMOUNT


def test_a_publisher_needs_a_broker_address_and_a_pii_key() -> None:
    with pytest.raises(ValueError, match="TOUCHFLOW_KAFKA_BOOTSTRAP"):
        Publisher(Settings(pii_key=KEY.decode()))
    with pytest.raises(ValueError, match="TOUCHFLOW_PII_KEY"):
        Publisher(Settings(kafka_bootstrap="127.0.0.1:9"))
