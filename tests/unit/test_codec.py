"""Avro in the Confluent wire format: round trips, the header, and every rejection reason."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from pipeline.codec import (
    CHANGES_SUBJECT,
    EVENTS_SUBJECT,
    SCHEMAS_DIR,
    STATE_SUBJECT,
    Codecs,
    FileSchemaRegistry,
    touchpoint_to_record,
)
from pipeline.errors import Reason, Rejected
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
from pipeline.state import Aggregates, Derived, PersonState, Scores, SegmentChange

AT = 1_700_000_000_000
H = "h1:" + "0123456789abcdef" * 2
H2 = "h1:" + "fedcba9876543210" * 2
USER = UserRef("openid", H)

EVENTS = [
    Touchpoint("j1", EventType.JOIN, "lumi", "wecom", USER, AT, Join("add_friend")),
    Touchpoint(
        "j2",
        EventType.JOIN,
        "lumi",
        "wechat_oa",
        USER,
        AT,
        Join("follow", "referral", UserRef("unionid", H2)),
    ),
    Touchpoint("l1", EventType.LEAVE, "lumi", "community", USER, AT, Leave("exit_group")),
    Touchpoint(
        "b1",
        EventType.PURCHASE,
        "lumi",
        "store",
        USER,
        AT,
        Purchase("o-1", 12_345_678_901, "USD", 3, "store"),
    ),
    Touchpoint("b2", EventType.PURCHASE, "lumi", "mini_program", USER, AT, Purchase("o-2", 0)),
    Touchpoint("r1", EventType.REFUND, "lumi", "mini_program", USER, AT, Refund("o-1", 500, "CNY")),
    Touchpoint("c1", EventType.CHAT, "lumi", "wecom", USER, AT, Chat("inbound", "customer")),
    Touchpoint("s1", EventType.SHARE, "lumi", "douyin", USER, AT, Share("live-7")),
    Touchpoint(
        "s2", EventType.SHARE, "lumi", "douyin", USER, AT, Share("live-7", UserRef("openid", H2))
    ),
    Touchpoint("i0", EventType.IDENTIFY, "lumi", "store", USER, AT, Identify(())),
    Touchpoint(
        "i2",
        EventType.IDENTIFY,
        "lumi",
        "store",
        USER,
        AT,
        Identify((UserRef("phone", H2), UserRef("member_id", H))),
    ),
]


def test_the_examples_cover_every_event_type() -> None:
    assert {e.type for e in EVENTS} == set(EventType)


@pytest.mark.parametrize("event", EVENTS, ids=[e.event_id for e in EVENTS])
def test_event_round_trip(codecs: Codecs, event: Touchpoint) -> None:
    assert codecs.decode_event(codecs.encode_event(event)) == event


CHANGES = [
    SegmentChange(
        "lumi", "p1", "rfm_segment", None, "general_develop", "rfm:R5F1M2/high>=3", "e1", AT, 1,
        Scores(), Scores(5, 1, 2),
    ),
    SegmentChange(
        "lumi", "p1", "aipl_stage", "P", "L", "aipl:L", "e9", AT + 1, 2**40,
        Scores(5, 1, 2), Scores(4, 2, 3),
    ),
]  # fmt: skip


@pytest.mark.parametrize("change", CHANGES, ids=["from-none", "big-seq"])
def test_segment_change_round_trip(codecs: Codecs, change: SegmentChange) -> None:
    assert codecs.decode_change(codecs.encode_change(change)) == change


STATES = [
    PersonState(),
    PersonState(
        version=7,
        seq=5,
        last_offset=2**40,
        as_of=AT + 5,
        recent_event_ids=("b1", "b2"),
        source_offsets=((0, 17), (3, 2**40)),
        agg=Aggregates(
            first_seen=AT - 10**9,
            last_seen=AT,
            engagements=3,
            shares=2,
            invitations=1,
            lifetime_orders=2,
            lifetime_amount_minor=70_000,
            first_purchase_day=19_665,
            last_purchase_day=19_675,
            previous_purchase_day=19_665,
            buckets=((19_665, 1, 30_000), (19_675, 1, 40_000), (19_676, 0, 0)),
            recent_orders=(("o1", 19_665, 30_000), ("o2", 19_675, 40_000)),
            pending_refunds=(("o9", 500),),
            last_join=AT - 10**9,
            last_leave=AT - 10,
            acquired_at=AT - 10**9,
            acquisition_channel="wecom",
            acquisition_source="live_stream",
            referred_by="p0011223344556677",
            referred_at=AT - 10**9,
            converted_invitees=2,
        ),
        derived=Derived(
            scores=Scores(5, 2, 3),
            rfm_segment="important_develop",
            aipl_stage="L",
            lifecycle="active",
            tags=("koc", "repeat_buyer"),
            layers=(("value", "mid"),),
        ),
    ),
]


@pytest.mark.parametrize("state", STATES, ids=["empty", "full"])
def test_person_state_round_trip(codecs: Codecs, state: PersonState) -> None:
    assert codecs.decode_state(codecs.encode_state(state)) == state


# -- the wire format ----------------------------------------------------------------------


def _registry_id(subject: str, version: int) -> int:
    index = json.loads((SCHEMAS_DIR / "registry.json").read_text())
    (sid,) = [
        e["id"] for e in index["schemas"] if e["subject"] == subject and e["version"] == version
    ]
    return int(sid)


def _has_version(subject: str, version: int) -> bool:
    index = json.loads((SCHEMAS_DIR / "registry.json").read_text())
    return any(e["subject"] == subject and e["version"] == version for e in index["schemas"])


def test_registry_ids_are_the_permanent_ones() -> None:
    subjects = (EVENTS_SUBJECT, CHANGES_SUBJECT, STATE_SUBJECT)
    assert [_registry_id(s, 1) for s in subjects] == [1, 2, 3]
    assert [_registry_id(s, 2) for s in subjects[1:]] == [4, 5]
    assert _registry_id(STATE_SUBJECT, 3) == 6
    assert [Codecs().events.schema_id, Codecs().changes.schema_id, Codecs().state.schema_id] == [
        1,
        4,
        6,
    ]


@pytest.mark.parametrize(
    ("subject", "encode"),
    [
        (EVENTS_SUBJECT, lambda c: c.encode_event(EVENTS[0])),
        (CHANGES_SUBJECT, lambda c: c.encode_change(CHANGES[0])),
        (STATE_SUBJECT, lambda c: c.encode_state(STATES[1])),
    ],
    ids=["event", "change", "state"],
)
def test_header_is_magic_zero_then_the_big_endian_schema_id(
    codecs: Codecs, subject: str, encode: Any
) -> None:
    data: bytes = encode(codecs)
    assert data[0] == 0
    latest = max(v for v in (1, 2, 3) if _has_version(subject, v))
    assert int.from_bytes(data[1:5], "big") == _registry_id(subject, latest)


# -- rejections ---------------------------------------------------------------------------

CHAT = EVENTS[6]


def _reject(codecs: Codecs, data: bytes) -> Rejected:
    with pytest.raises(Rejected) as info:
        codecs.decode_event(data)
    assert info.value.message
    return info.value


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00"], ids=["empty", "3-bytes"])
def test_shorter_than_the_header_is_truncated(codecs: Codecs, data: bytes) -> None:
    assert _reject(codecs, data).reason is Reason.TRUNCATED


def test_header_without_a_body_is_truncated(codecs: Codecs) -> None:
    assert _reject(codecs, codecs.encode_event(CHAT)[:5]).reason is Reason.TRUNCATED


@pytest.mark.parametrize("magic", [1, 0x7F, 0xFF])
def test_wrong_magic_byte(codecs: Codecs, magic: int) -> None:
    data = codecs.encode_event(CHAT)
    rejected = _reject(codecs, bytes([magic]) + data[1:])
    assert rejected.reason is Reason.BAD_MAGIC
    assert str(magic) in rejected.message


def test_unknown_schema_id(codecs: Codecs) -> None:
    body = codecs.encode_event(CHAT)[5:]
    rejected = _reject(codecs, struct.pack(">bI", 0, 999) + body)
    assert rejected.reason is Reason.UNKNOWN_SCHEMA
    assert "999" in rejected.message


def test_body_cut_inside_the_last_string_is_truncated(codecs: Codecs) -> None:
    data = codecs.encode_event(CHAT)
    assert data.endswith(b"customer")
    rejected = _reject(codecs, data[:-3])
    assert rejected.reason is Reason.TRUNCATED
    assert rejected.message == "Avro body ends early"


def test_every_cut_of_the_body_is_truncated(codecs: Codecs) -> None:
    """`Reason.TRUNCATED` covers "a cut Avro body" wherever the cut falls, including inside
    a varint (here the `occurred_at` long)."""
    data = codecs.encode_event(CHAT)
    reasons = {n: _reject(codecs, data[:n]).reason for n in range(5, len(data))}
    assert {n: r for n, r in reasons.items() if r is not Reason.TRUNCATED} == {}


def test_trailing_bytes_are_malformed(codecs: Codecs) -> None:
    rejected = _reject(codecs, codecs.encode_event(CHAT) + b"\x00\x01")
    assert rejected.reason is Reason.MALFORMED
    assert rejected.message == "2 bytes after the record"


def test_a_body_written_with_another_subjects_schema_is_malformed(codecs: Codecs) -> None:
    """A segment change (schema id 2) sent to the events topic does not resolve."""
    assert _reject(codecs, codecs.encode_change(CHANGES[0])).reason is Reason.MALFORMED


def test_type_that_disagrees_with_the_payload(codecs: Codecs) -> None:
    record = touchpoint_to_record(CHAT) | {"type": "purchase"}
    rejected = _reject(codecs, codecs.events.encode(record))
    assert rejected.reason is Reason.TYPE_MISMATCH
    assert "Chat" in rejected.message


def test_unknown_type_with_a_valid_payload(codecs: Codecs) -> None:
    record = {
        "event_id": "x1",
        "type": "wink",
        "brand": "lumi",
        "channel": "wecom",
        "user": {"id_type": "openid", "id": H},
        "occurred_at": AT,
        "payload": ("touchflow.Chat", {"direction": "inbound", "party": "customer"}),
    }
    rejected = _reject(codecs, codecs.events.encode(record))
    assert rejected.reason is Reason.UNKNOWN_TYPE
    assert "wink" in rejected.message


def test_rejected_carries_reason_and_message_in_its_text() -> None:
    r = Rejected(Reason.TOO_LARGE, "70000 bytes > limit 65536")
    assert str(r) == "too_large: 70000 bytes > limit 65536"


# -- the embedded registry ----------------------------------------------------------------


V1_ENTRIES: list[dict[str, Any]] = [
    {"id": 1, "subject": EVENTS_SUBJECT, "version": 1, "file": "touchpoint_event.v1.avsc"},
    {"id": 2, "subject": CHANGES_SUBJECT, "version": 1, "file": "segment_change.v1.avsc"},
    {"id": 3, "subject": STATE_SUBJECT, "version": 1, "file": "person_state.v1.avsc"},
]


def _registry_dir(directory: Path, entries: list[dict[str, Any]]) -> Path:
    """A copy of the repository's schemas under `directory` with its own registry.json."""
    directory.mkdir(exist_ok=True)
    for avsc in SCHEMAS_DIR.glob("*.avsc"):
        shutil.copy(avsc, directory / avsc.name)
    (directory / "registry.json").write_text(json.dumps({"schemas": entries}))
    return directory


def test_a_copy_of_the_registry_loads(tmp_path: Path) -> None:
    """The fixture below is sound: the copied files with their own ids make a registry."""
    registry = FileSchemaRegistry(_registry_dir(tmp_path, V1_ENTRIES))
    assert [registry.latest(e["subject"])[0] for e in V1_ENTRIES] == [1, 2, 3]


def test_registry_rejects_an_id_used_twice(tmp_path: Path) -> None:
    entries = [*V1_ENTRIES[:2], {**V1_ENTRIES[2], "id": 2}]
    with pytest.raises(ValueError, match="schema id 2 is used twice"):
        FileSchemaRegistry(_registry_dir(tmp_path, entries))


def test_registry_unknown_id_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        FileSchemaRegistry().schema(999)


def test_newer_schema_version_reads_data_written_with_the_older_one(tmp_path: Path) -> None:
    """Schema evolution: v2 adds a field with a default; v1 records still decode under v2."""
    old = Codecs(FileSchemaRegistry(_registry_dir(tmp_path / "old", V1_ENTRIES)))
    new_dir = _registry_dir(
        tmp_path / "new",
        [
            *V1_ENTRIES,
            {"id": 11, "subject": EVENTS_SUBJECT, "version": 2, "file": "touchpoint_event.v2.avsc"},
        ],
    )
    schema = json.loads((SCHEMAS_DIR / "touchpoint_event.v1.avsc").read_text())
    schema["fields"].append({"name": "trace_id", "type": "string", "default": ""})
    (new_dir / "touchpoint_event.v2.avsc").write_text(json.dumps(schema))
    new = Codecs(FileSchemaRegistry(new_dir))

    assert new.events.schema_id == 11
    written_by_old = old.encode_event(CHAT)
    assert int.from_bytes(written_by_old[1:5], "big") == 1
    assert new.decode_event(written_by_old) == CHAT
    assert int.from_bytes(new.encode_event(CHAT)[1:5], "big") == 11


def test_state_and_changes_written_by_v1_still_decode(tmp_path: Path) -> None:
    """A worker upgraded to v2 recovers v1 changelogs: new fields take their defaults."""
    old = Codecs(FileSchemaRegistry(_registry_dir(tmp_path, V1_ENTRIES)))
    full = STATES[1]
    state = Codecs().decode_state(old.encode_state(full))
    assert state.agg.buckets == full.agg.buckets
    assert state.derived.scores == full.derived.scores
    assert state.agg.shares == 0 and state.derived.tags == () and state.derived.lifecycle is None
    assert state.agg.first_purchase_day == 19_665  # v1 had none: the earliest bucket day
    assert state.as_of == full.agg.last_seen  # v1 had no clock: its last event time
    change = Codecs().decode_change(old.encode_change(CHANGES[0]))
    assert change == CHANGES[0]
