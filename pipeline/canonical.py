"""The canonical JSON form of a touchpoint: the Avro record of `touchpoint_event` as JSON.

Field for field the same as the Avro record (same names, same types, same defaults), with
one simplification: `payload` is a plain object and `type` says which payload record it is
(Avro's union needs the record name; here `type` already carries it). The checks are
driven by the schema itself, so a field added to a new schema version with a default is
accepted without code changes here. See docs/events.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from fastavro.schema import expand_schema

from pipeline.codec import EVENTS_SUBJECT, FileSchemaRegistry, touchpoint_from_record
from pipeline.codec import touchpoint_to_record as _to_record
from pipeline.errors import Reason, Rejected
from pipeline.events import Touchpoint

_INT_RANGE = {"int": 2**31, "long": 2**63}
_NO_DEFAULT = object()


@cache
def _event_schema() -> dict[str, Any]:
    """The newest events schema this code reads, named types (UserRef) written out in place."""
    expanded = expand_schema(FileSchemaRegistry().latest(EVENTS_SUBJECT)[1])
    assert isinstance(expanded, dict)
    return expanded


@cache
def payload_schemas() -> dict[str, dict[str, Any]]:
    """Event type (`purchase`) -> its payload record schema (`touchflow.Purchase`)."""
    union = next(f["type"] for f in _event_schema()["fields"] if f["name"] == "payload")
    return {r["name"].rsplit(".", 1)[-1].lower(): r for r in union}


def event_to_json(e: Touchpoint) -> dict[str, Any]:
    """The canonical JSON object of an event: every field, defaults written out."""
    record = _to_record(e)
    record["payload"] = record["payload"][1]
    return record


def event_from_json(obj: Any) -> Touchpoint:
    """A typed Touchpoint from canonical JSON; Rejected names the field and what is wrong."""
    if not isinstance(obj, Mapping):
        raise Rejected(Reason.MALFORMED, f"an event is a JSON object, not {_json_type(obj)}")
    event_type = obj.get("type")
    payload_schema = payload_schemas().get(event_type) if isinstance(event_type, str) else None
    if isinstance(event_type, str) and payload_schema is None:
        raise Rejected(
            Reason.UNKNOWN_TYPE, f"type {event_type!r} is not one of {sorted(payload_schemas())}"
        )
    fields = [f for f in _event_schema()["fields"] if f["name"] != "payload"]
    record = _record(obj, fields, "", exclude=frozenset({"payload"}))
    assert payload_schema is not None  # `type` is a required string field, checked above
    record["payload"] = (
        payload_schema["name"],
        _record(
            _field_value(obj, "payload", _NO_DEFAULT, ""), payload_schema["fields"], "payload."
        ),
    )
    return touchpoint_from_record(record)


def _field_value(obj: Mapping[str, Any], name: str, default: Any, prefix: str) -> Any:
    if name in obj and obj[name] is not None:
        return obj[name]
    if name in obj or default is not _NO_DEFAULT:
        return None if default is _NO_DEFAULT else default
    raise Rejected(Reason.MISSING_FIELD, f"{prefix}{name} is missing")


def _record(
    obj: Any, fields: list[dict[str, Any]], prefix: str, exclude: frozenset[str] = frozenset()
) -> dict[str, Any]:
    where = prefix.rstrip(".") or "event"
    if not isinstance(obj, Mapping):
        raise Rejected(Reason.MALFORMED, f"{where} must be an object, not {_json_type(obj)}")
    known = {f["name"] for f in fields} | set(exclude)
    unknown = sorted(set(obj) - known)
    if unknown:
        raise Rejected(Reason.MALFORMED, f"{where} has unknown fields {unknown}")
    out: dict[str, Any] = {}
    for f in fields:
        value = _field_value(obj, f["name"], f.get("default", _NO_DEFAULT), prefix)
        out[f["name"]] = _value(value, f["type"], prefix + f["name"])
    return out


def _value(value: Any, avro_type: Any, path: str) -> Any:
    """`value` checked against an Avro type (the subset touchpoint schemas use)."""
    if isinstance(avro_type, list):  # ["null", T]: an optional value
        if value is None:
            if "null" in avro_type:
                return None
            raise Rejected(Reason.MISSING_FIELD, f"{path} is null")
        (branch,) = [t for t in avro_type if t != "null"]
        return _value(value, branch, path)
    if value is None:
        raise Rejected(Reason.MISSING_FIELD, f"{path} is null")
    kind = avro_type["type"] if isinstance(avro_type, dict) else avro_type
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind in _INT_RANGE:
        if isinstance(value, int) and not isinstance(value, bool):
            limit = _INT_RANGE[kind]
            if not -limit <= value < limit:
                raise Rejected(Reason.MALFORMED, f"{path} {value} does not fit an Avro {kind}")
            return value
    elif kind == "record":
        return _record(value, avro_type["fields"], path + ".")
    elif kind == "array":
        if isinstance(value, list):
            return [_value(v, avro_type["items"], f"{path}[{i}]") for i, v in enumerate(value)]
    else:  # pragma: no cover - a schema change brought a type this form does not map yet
        raise Rejected(Reason.MALFORMED, f"{path}: Avro type {kind} has no canonical JSON form")
    expected = {"string": "a string", "record": "an object", "array": "a list"}
    raise Rejected(
        Reason.MALFORMED,
        f"{path} must be {expected.get(kind, 'an integer')}, not {_json_type(value)}",
    )


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def from_text_fields(flat: Mapping[str, str]) -> dict[str, Any]:
    """Canonical JSON from dotted field paths with text values (a CSV row through a column
    map): integers parsed where the schema has int/long, empty cells left out so defaults
    apply. The result still goes through `event_from_json` for every other check."""
    event: dict[str, Any] = {}
    payload = payload_schemas().get(flat.get("type", ""))
    for path, text in flat.items():
        if text == "":
            continue
        *parents, name = path.split(".")
        node = event
        for part in parents:
            node = node.setdefault(part, {})
        avro_type = _type_at(path.split("."), payload)
        node[name] = text
        if avro_type in _INT_RANGE:
            try:
                node[name] = int(text)
            except ValueError:
                raise Rejected(Reason.MALFORMED, f"{path} {text!r} is not an integer") from None
    return event


def _type_at(path: list[str], payload: dict[str, Any] | None) -> Any:
    """The Avro type at a dotted path (None where the path is not in the schema)."""
    fields = _event_schema()["fields"]
    avro_type: Any = None
    for i, part in enumerate(path):
        if i == 1 and path[0] == "payload":
            fields = payload["fields"] if payload else []
        avro_type = next((f["type"] for f in fields if f["name"] == part), None)
        if isinstance(avro_type, list):
            avro_type = next((t for t in avro_type if t != "null"), None)
        fields = avro_type.get("fields", []) if isinstance(avro_type, dict) else []
    return avro_type
