"""Canonical JSON: the examples in docs/events.md and every event type survive
JSON -> Avro wire -> JSON unchanged, and bad JSON is rejected with a reason naming the field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.canonical import event_from_json, event_to_json, from_text_fields
from pipeline.codec import Codecs
from pipeline.errors import Reason, Rejected
from pipeline.events import EventType, Touchpoint
from tests.unit.test_codec import EVENTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
DOC_EXAMPLES = [
    json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)
]


def test_the_doc_has_one_example_per_event_type() -> None:
    assert sorted(e["type"] for e in DOC_EXAMPLES) == sorted(t.value for t in EventType)


def _through_the_wire(codecs: Codecs, obj: dict[str, Any]) -> dict[str, Any]:
    wire = codecs.encode_event(event_from_json(json.loads(json.dumps(obj))))
    return json.loads(json.dumps(event_to_json(codecs.decode_event(wire))))


@pytest.mark.parametrize("example", DOC_EXAMPLES, ids=[e["type"] for e in DOC_EXAMPLES])
def test_doc_examples_round_trip_through_avro(codecs: Codecs, example: dict[str, Any]) -> None:
    assert _through_the_wire(codecs, example) == example


@pytest.mark.parametrize("event", EVENTS, ids=[e.event_id for e in EVENTS])
def test_every_event_round_trips_json_avro_json(codecs: Codecs, event: Touchpoint) -> None:
    as_json = event_to_json(event)
    assert _through_the_wire(codecs, as_json) == as_json
    assert event_from_json(as_json) == event


def test_defaults_apply_when_left_out_or_null() -> None:
    (purchase,) = [e for e in DOC_EXAMPLES if e["type"] == "purchase"]
    short = {**purchase, "payload": {"order_id": "o-1", "amount_minor": 100, "currency": None}}
    assert event_to_json(event_from_json(short))["payload"] == {
        "order_id": "o-1", "amount_minor": 100, "currency": "CNY", "items": 1, "place": "online",
    }  # fmt: skip


def _purchase(**changes: Any) -> dict[str, Any]:
    (purchase,) = [e for e in DOC_EXAMPLES if e["type"] == "purchase"]
    out = json.loads(json.dumps(purchase))
    for path, value in changes.items():
        *parents, name = path.split("__")
        node = out
        for p in parents:
            node = node[p]
        if value is ...:
            del node[name]
        else:
            node[name] = value
    return out


BAD = [
    ("no-brand", _purchase(brand=...), Reason.MISSING_FIELD, "brand is missing"),
    ("no-amount", _purchase(payload__amount_minor=...), Reason.MISSING_FIELD, "amount_minor"),
    ("null-id", _purchase(user__id=None), Reason.MISSING_FIELD, "user.id is null"),
    ("unknown-type", _purchase(type="teleport"), Reason.UNKNOWN_TYPE, "'teleport'"),
    ("no-type", _purchase(type=...), Reason.MISSING_FIELD, "type is missing"),
    ("type-not-str", _purchase(type=3), Reason.MALFORMED, "type must be a string, not an integer"),
    ("time-as-text", _purchase(occurred_at="2025-01-01"), Reason.MALFORMED, "must be an integer"),
    ("float-amount", _purchase(payload__amount_minor=99.5), Reason.MALFORMED, "not a number"),
    ("bool-items", _purchase(payload__items=True), Reason.MALFORMED, "not a boolean"),
    ("int-overflow", _purchase(payload__items=2**31), Reason.MALFORMED, "does not fit an Avro int"),
    ("unknown-field", _purchase(payload__item=2), Reason.MALFORMED, "unknown fields ['item']"),
    ("user-not-object", _purchase(user="h1:x"), Reason.MALFORMED, "user must be an object"),
    ("wrong-payload", _purchase(payload={"kind": "follow"}), Reason.MALFORMED, "unknown fields"),
    ("not-an-object", [], Reason.MALFORMED, "not a list"),
]  # fmt: skip


@pytest.mark.parametrize(("obj", "reason", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_json_is_rejected_with_the_field_named(obj: Any, reason: Reason, says: str) -> None:
    with pytest.raises(Rejected) as caught:
        event_from_json(obj)
    assert caught.value.reason is reason
    assert says in caught.value.message


def test_text_fields_become_canonical_json_by_the_schema_types() -> None:
    flat = {
        "event_id": "e1", "type": "purchase", "brand": "lumi", "channel": "store",
        "user.id_type": "phone", "user.id": "13800138000", "occurred_at": "1763880120000",
        "payload.order_id": "o-1", "payload.amount_minor": "9900", "payload.items": "",
    }  # fmt: skip
    assert from_text_fields(flat) == {
        "event_id": "e1", "type": "purchase", "brand": "lumi", "channel": "store",
        "user": {"id_type": "phone", "id": "13800138000"}, "occurred_at": 1763880120000,
        "payload": {"order_id": "o-1", "amount_minor": 9900},
    }  # fmt: skip
    with pytest.raises(Rejected, match=r"payload\.amount_minor '99\.00' is not an integer"):
        from_text_fields({**flat, "payload.amount_minor": "99.00"})
