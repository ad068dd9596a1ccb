"""The event contract: each rejection reason from a minimal breaking event, and the edges
that still pass. Also `ingest.accept`, which runs size, wire format and contract in order."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.codec import Codecs
from pipeline.errors import Reason, Rejected
from pipeline.events import (
    Chat,
    EventType,
    Identify,
    Join,
    Purchase,
    Refund,
    Share,
    Touchpoint,
    UserRef,
)
from pipeline.ingest import accept
from pipeline.validation import Limits, check_size, validate

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
HOUR = 3_600_000
H = "h1:" + "0123456789abcdef" * 2
RAW_OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"  # how a WeChat openid looks in clear
LIMITS = Limits()

CHAT = Touchpoint(
    "e1",
    EventType.CHAT,
    "lumi",
    "wecom",
    UserRef("openid", H),
    NOW - HOUR,
    Chat("inbound", "customer"),
)
PURCHASE = replace(CHAT, type=EventType.PURCHASE, payload=Purchase("o1", 30_000))
REFUND = replace(CHAT, type=EventType.REFUND, payload=Refund("o1", 10_000))


def _reason(e: Touchpoint, limits: Limits = LIMITS) -> Reason:
    with pytest.raises(Rejected) as info:
        validate(e, NOW, limits)
    assert info.value.message
    return info.value.reason


@pytest.mark.parametrize(
    ("event", "limits", "expected"),
    [
        (replace(CHAT, event_id=""), LIMITS, Reason.MISSING_FIELD),
        (replace(CHAT, brand=""), LIMITS, Reason.MISSING_FIELD),
        (replace(CHAT, channel=""), LIMITS, Reason.MISSING_FIELD),
        (replace(CHAT, user=UserRef("openid", "")), LIMITS, Reason.MISSING_FIELD),
        (replace(CHAT, user=UserRef("", H)), LIMITS, Reason.MISSING_FIELD),
        (replace(CHAT, user=UserRef("openid", RAW_OPENID)), LIMITS, Reason.RAW_PII),
        (replace(CHAT, user=UserRef("phone", "13800138000")), LIMITS, Reason.RAW_PII),
        (replace(CHAT, user=UserRef("unionid", "h1:tooshort")), LIMITS, Reason.RAW_PII),
        (CHAT, Limits(brands=frozenset({"aura"})), Reason.UNKNOWN_BRAND),
        (replace(CHAT, occurred_at=NOW + HOUR), LIMITS, Reason.BAD_TIMESTAMP),
        (replace(CHAT, occurred_at=928_195_200_000), LIMITS, Reason.BAD_TIMESTAMP),  # 1999-06-01
        (replace(PURCHASE, payload=Purchase("o1", -1)), LIMITS, Reason.BAD_AMOUNT),
        (replace(PURCHASE, payload=Purchase("o1", 100_000_001)), LIMITS, Reason.BAD_AMOUNT),
        (replace(REFUND, payload=Refund("o1", -500)), LIMITS, Reason.BAD_AMOUNT),
        (replace(PURCHASE, payload=Purchase("", 30_000)), LIMITS, Reason.MISSING_FIELD),
        (replace(REFUND, payload=Refund("", 100)), LIMITS, Reason.MISSING_FIELD),
    ],
    ids=[
        "empty-event-id",
        "empty-brand",
        "empty-channel",
        "empty-user-id",
        "empty-id-type",
        "raw-openid",
        "raw-phone",
        "prefix-but-not-a-hash",
        "unknown-brand",
        "1h-in-the-future",
        "1999",
        "negative-amount",
        "amount-above-max",
        "negative-refund",
        "empty-order-id",
        "empty-refund-order-id",
    ],
)
def test_each_reason_from_a_minimal_event(
    event: Touchpoint, limits: Limits, expected: Reason
) -> None:
    assert _reason(event, limits) is expected


def test_raw_pii_message_never_echoes_the_value() -> None:
    with pytest.raises(Rejected) as info:
        validate(replace(CHAT, user=UserRef("openid", RAW_OPENID)), NOW, LIMITS)
    assert RAW_OPENID not in str(info.value)
    assert "openid" in info.value.message


@pytest.mark.parametrize(
    "event",
    [
        CHAT,
        replace(CHAT, occurred_at=NOW + 10 * 60 * 1000),  # exactly the allowed clock skew
        replace(CHAT, occurred_at=946_684_800_000),  # exactly 2000-01-01
        replace(PURCHASE, payload=Purchase("o1", 0)),
        replace(PURCHASE, payload=Purchase("o1", 100_000_000)),  # exactly the maximum
        replace(CHAT, user=UserRef("anonymous", "visitor-42")),  # not a personal id type
    ],
    ids=["chat", "max-skew", "earliest", "zero-amount", "max-amount", "anonymous"],
)
def test_valid_events_pass_unchanged(event: Touchpoint) -> None:
    assert validate(event, NOW, Limits(brands=frozenset({"lumi"}))) is event


def test_one_ms_past_the_allowed_skew_is_rejected() -> None:
    assert _reason(replace(CHAT, occurred_at=NOW + 10 * 60 * 1000 + 1)) is Reason.BAD_TIMESTAMP


def test_one_ms_before_2000_is_rejected() -> None:
    assert _reason(replace(CHAT, occurred_at=946_684_799_999)) is Reason.BAD_TIMESTAMP


def test_configured_limits_are_used() -> None:
    tight = Limits(max_amount_minor=1_000, max_future_ms=0)
    assert _reason(replace(PURCHASE, payload=Purchase("o1", 1_001)), tight) is Reason.BAD_AMOUNT
    assert _reason(replace(CHAT, occurred_at=NOW + 1), tight) is Reason.BAD_TIMESTAMP


# Personal ids in the payload (referrer, invitee, linked identities) are stored too
# (pipeline/rows.py writes referrer/invitee ids to events.related_id as "keyed hashes").
RAW_REF = UserRef("openid", RAW_OPENID)


@pytest.mark.parametrize(
    "event",
    [
        replace(CHAT, type=EventType.JOIN, payload=Join("follow", "referral", RAW_REF)),
        replace(CHAT, type=EventType.SHARE, payload=Share("c1", RAW_REF)),
        replace(CHAT, type=EventType.IDENTIFY, payload=Identify((RAW_REF,))),
    ],
    ids=["join-referrer", "share-invitee", "identify-identities"],
)
def test_raw_pii_inside_the_payload_is_rejected(event: Touchpoint) -> None:
    assert _reason(event) is Reason.RAW_PII


# -- size ---------------------------------------------------------------------------------


def test_check_size_at_and_above_the_limit() -> None:
    check_size(65_536, Limits())  # exactly the default limit passes
    with pytest.raises(Rejected) as info:
        check_size(65_537, Limits())
    assert info.value.reason is Reason.TOO_LARGE
    assert info.value.message == "65537 bytes > limit 65536"


# -- ingest.accept ------------------------------------------------------------------------


def test_accept_returns_the_typed_event(codecs: Codecs) -> None:
    assert accept(codecs.encode_event(PURCHASE), NOW, codecs, LIMITS) == PURCHASE


def test_accept_rejects_oversized_bytes_before_decoding(codecs: Codecs) -> None:
    data = codecs.encode_event(CHAT)
    limits = Limits(max_message_bytes=len(data) - 1)
    with pytest.raises(Rejected) as info:
        accept(data, NOW, codecs, limits)
    assert info.value.reason is Reason.TOO_LARGE
    # Even garbage is too large before it is anything else.
    with pytest.raises(Rejected) as info:
        accept(b"\xff" * 70_000, NOW, codecs, LIMITS)
    assert info.value.reason is Reason.TOO_LARGE


@pytest.mark.parametrize("raw", [None, b""], ids=["none", "empty"])
def test_accept_of_nothing_is_truncated(codecs: Codecs, raw: bytes | None) -> None:
    with pytest.raises(Rejected) as info:
        accept(raw, NOW, codecs, LIMITS)
    assert info.value.reason is Reason.TRUNCATED


def test_accept_applies_the_contract_after_decoding(codecs: Codecs) -> None:
    raw_pii = replace(CHAT, user=UserRef("openid", RAW_OPENID))
    with pytest.raises(Rejected) as info:
        accept(codecs.encode_event(raw_pii), NOW, codecs, LIMITS)
    assert info.value.reason is Reason.RAW_PII


def test_a_brand_must_be_a_slug_and_not_a_brand_group(make_event, hashed_user) -> None:
    from pipeline.errors import Reason, Rejected
    from pipeline.events import EventType, Leave
    from pipeline.validation import Limits, validate

    now = 1_700_000_000_000
    for brand, limits, message in [
        ("lumi:kids", Limits(), "is not a slug"),
        ("lumi\n", Limits(), "is not a slug"),  # `$` in the pattern once let this through
        ("house", Limits(groups=frozenset({"house"})), "is a brand group"),
    ]:
        event = make_event(EventType.LEAVE, Leave("unfollow"), now, brand=brand)
        try:
            validate(event, now, limits)
        except Rejected as rejected:
            assert rejected.reason == Reason.UNKNOWN_BRAND and message in rejected.message
        else:
            raise AssertionError(f"{brand} was accepted")


def test_brands_matched_once_are_remembered_within_a_bound(make_event) -> None:
    from pipeline import validation
    from pipeline.errors import Rejected
    from pipeline.events import EventType, Leave

    now = 1_700_000_000_000
    limits = validation.Limits()
    for i in range(validation._SLUGS_KEPT + 5):
        brand = f"memo-{i}"
        for _ in range(2):  # the second time from the memo
            event = make_event(EventType.LEAVE, Leave("unfollow"), now, brand=brand)
            assert validation.validate(event, now, limits) is event
    assert len(validation._SLUGS_SEEN) == validation._SLUGS_KEPT
    for brand in ("memo-0:x", "memo-0\n", ""):  # never a neighbour of a remembered one
        event = make_event(EventType.LEAVE, Leave("unfollow"), now, brand=brand)
        with pytest.raises(Rejected):
            validation.validate(event, now, limits)


def test_settings_check_brand_groups() -> None:
    import pytest
    from pydantic import ValidationError

    from pipeline.settings import Settings

    assert Settings(brand_groups={"house": ["lumi", "mosu"]}).policy().groups_of("lumi") == (
        "house",
    )
    with pytest.raises(ValidationError, match="not its own member"):
        Settings(brand_groups={"house": ["house"]})
    with pytest.raises(ValidationError, match="is also a brand"):
        Settings(brands=["lumi", "house"], brand_groups={"house": ["lumi"]})
