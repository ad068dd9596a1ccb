"""Avro in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

Schemas come from a registry behind `SchemaRegistry`; the embedded default reads the
permanent ids in `schemas/registry.json`. Decoding always resolves the writer's schema
(by id) against the reader's latest one, so old data stays readable as schemas evolve.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import fastavro

try:
    import cython
except ImportError:  # not installed (a runtime without the build's tools): plain Python
    from pipeline import _no_cython as cython

from pipeline.avro_reader import compile_reader, prebuilt_readers
from pipeline.avro_writer import (
    ObjectLayout,
    compile_object_writer,
    compile_writer,
    prebuilt_writers,
)
from pipeline.errors import Reason, Rejected
from pipeline.events import (
    Chat,
    EventType,
    Identify,
    Join,
    Leave,
    Payload,
    Purchase,
    Refund,
    Share,
    Touchpoint,
    UserRef,
)
from pipeline.state import Aggregates, Derived, OrderRef, PersonState, Scores, SegmentChange

MAGIC = 0
HEADER = struct.Struct(">bI")
SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

EVENTS_SUBJECT = "touchflow.events-value"
CHANGES_SUBJECT = "touchflow.segment-changes-value"
STATE_SUBJECT = "touchflow.person-state-value"


class SchemaRegistry(Protocol):
    def schema(self, schema_id: int) -> Any:
        """The parsed schema with this id; KeyError when unknown."""

    def latest(self, subject: str) -> tuple[int, Any]:
        """(id, parsed schema) of the newest version of a subject."""


class FileSchemaRegistry:
    """Embedded registry: `.avsc` files with permanent ids listed in `registry.json`."""

    def __init__(self, directory: Path = SCHEMAS_DIR) -> None:
        index = json.loads((directory / "registry.json").read_text())
        self._by_id: dict[int, Any] = {}
        self._latest: dict[str, tuple[int, int]] = {}  # subject -> (version, id)
        for entry in index["schemas"]:
            raw = json.loads((directory / entry["file"]).read_text())
            sid = int(entry["id"])
            if sid in self._by_id:
                raise ValueError(f"schema id {sid} is used twice in {directory}/registry.json")
            self._by_id[sid] = fastavro.parse_schema(raw)
            subject, version = entry["subject"], int(entry["version"])
            if subject not in self._latest or self._latest[subject][0] < version:
                self._latest[subject] = (version, sid)

    def schema(self, schema_id: int) -> Any:
        return self._by_id[schema_id]

    def latest(self, subject: str) -> tuple[int, Any]:
        _, sid = self._latest[subject]
        return sid, self._by_id[sid]


class WireCodec:
    """Encode/decode one subject's records in the wire format."""

    def __init__(
        self, registry: SchemaRegistry, subject: str, layout: ObjectLayout | None = None
    ) -> None:
        self._registry = registry
        self.schema_id, self.schema = registry.latest(subject)
        self._header = HEADER.pack(MAGIC, self.schema_id)
        self._writers: dict[int, Any] = {}
        self._compiled = compile_writer(self.schema)  # None: fastavro writes it
        self._reader = compile_reader(self.schema)  # None: fastavro reads it
        # None (no layout, or a schema with a field it does not place): via the record
        self._layout = layout
        self._object_writer = compile_object_writer(self.schema, layout) if layout else None

    @property
    def reader_prebuilt(self) -> bool:
        """Whether messages of its own schema are decoded by the decoder compiled ahead of
        time (`python -m pipeline.compiled_core`), not by its source run with `exec`."""
        return self._reader is not None and self._reader in prebuilt_readers().values()

    @property
    def writers_prebuilt(self) -> bool:
        """Whether its encoders (of records, and of objects where it has a layout) are the
        ones compiled ahead of time, not their source run with `exec`."""
        built = prebuilt_writers().values()
        wanted = (self._compiled, self._object_writer) if self._layout else (self._compiled,)
        return all(w is not None and w in built for w in wanted)

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._compiled is not None:
            out = bytearray(self._header)
            self._compiled(record, out)
            return bytes(out)
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def encode_object(self, obj: Any, to_record: Callable[[Any], dict[str, Any]]) -> bytes:
        """`encode(to_record(obj))`, without building the record when the layout allows."""
        if self._object_writer is None:
            return self.encode(to_record(obj))
        out = bytearray(self._header)
        self._object_writer(obj, out)
        return bytes(out)

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < HEADER.size:
            raise Rejected(Reason.TRUNCATED, f"{len(data)} bytes, shorter than the 5-byte header")
        magic, schema_id = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise Rejected(Reason.BAD_MAGIC, f"first byte is {magic & 0xFF}, expected 0")
        if schema_id == self.schema_id and self._reader is not None:
            return self._read_compiled(data)  # its own schema: known, and needs no lookup
        writer = self._writers.get(schema_id)
        if writer is None:
            try:
                writer = self._registry.schema(schema_id)
            except KeyError:
                raise Rejected(Reason.UNKNOWN_SCHEMA, f"schema id {schema_id}") from None
            self._writers[schema_id] = writer
        body = io.BytesIO(data)
        body.seek(HEADER.size)
        reader = None if schema_id == self.schema_id else self.schema
        try:
            decoded = fastavro.schemaless_reader(
                body, writer, reader, return_record_name=True, return_record_name_override=True
            )
        except (EOFError, IndexError):  # fastavro raises IndexError when cut inside a number
            raise Rejected(Reason.TRUNCATED, "Avro body ends early") from None
        except Exception as exc:  # fastavro raises many kinds on garbage: all mean the same
            raise Rejected(Reason.MALFORMED, f"{type(exc).__name__}: {exc}") from None
        if body.tell() != len(data):
            raise Rejected(Reason.MALFORMED, f"{len(data) - body.tell()} bytes after the record")
        if not isinstance(decoded, dict):
            raise Rejected(Reason.MALFORMED, f"decoded a {type(decoded).__name__}, not a record")
        return decoded

    def _read_compiled(self, data: bytes) -> dict[str, Any]:
        """`decode` of a message written with this codec's own schema (no resolution)."""
        assert self._reader is not None
        if type(data) is not bytes:  # the reader slices and decodes: a memoryview cannot
            data = bytes(data)
        try:
            decoded, end = self._reader(data, HEADER.size)
        except (EOFError, IndexError):
            raise Rejected(Reason.TRUNCATED, "Avro body ends early") from None
        except Exception as exc:  # as fastavro: every kind of garbage means the same
            raise Rejected(Reason.MALFORMED, f"{type(exc).__name__}: {exc}") from None
        if end != len(data):
            raise Rejected(Reason.MALFORMED, f"{len(data) - end} bytes after the record")
        return decoded


# -- touchpoints -------------------------------------------------------------------------


# Decoded events are built field by field when compiled (codec.pxd types them): a class
# call parses its arguments through Python, and a decoded event builds three objects.


def _user_ref(id_type: str, id: str) -> UserRef:
    if cython.compiled:
        u = UserRef.__new__(UserRef)
        u.id_type = id_type
        u.id = id
        return u
    return UserRef(id_type, id)


def _user(d: dict[str, Any] | None) -> UserRef | None:
    return None if d is None else _user_ref(d["id_type"], d["id"])


def _join_from_avro(d: dict[str, Any]) -> Join:
    if cython.compiled:
        p = Join.__new__(Join)
        p.kind = d["kind"]
        p.source = d["source"]
        p.referrer = _user(d["referrer"])
        return p
    return Join(d["kind"], d["source"], _user(d["referrer"]))


def _purchase_from_avro(d: dict[str, Any]) -> Purchase:
    if cython.compiled:
        p = Purchase.__new__(Purchase)
        p.order_id = d["order_id"]
        p.amount_minor = d["amount_minor"]
        p.currency = d["currency"]
        p.items = d["items"]
        p.place = d["place"]
        return p
    return Purchase(d["order_id"], d["amount_minor"], d["currency"], d["items"], d["place"])


def _chat_from_avro(d: dict[str, Any]) -> Chat:
    if cython.compiled:
        p = Chat.__new__(Chat)
        p.direction = d["direction"]
        p.party = d["party"]
        return p
    return Chat(d["direction"], d["party"])


def _share_from_avro(d: dict[str, Any]) -> Share:
    if cython.compiled:
        p = Share.__new__(Share)
        p.content_id = d["content_id"]
        p.invitee = _user(d["invitee"])
        return p
    return Share(d["content_id"], _user(d["invitee"]))


def _user_dict(u: UserRef | None) -> dict[str, str] | None:
    return None if u is None else {"id_type": u.id_type, "id": u.id}


@dataclass(frozen=True, slots=True)
class _PayloadKind:
    type: EventType
    record_name: str
    from_avro: Callable[[dict[str, Any]], Payload]
    to_avro: Callable[[Any], dict[str, Any]]


_PAYLOADS: tuple[_PayloadKind, ...] = (
    _PayloadKind(
        EventType.JOIN,
        "touchflow.Join",
        _join_from_avro,
        lambda p: {"kind": p.kind, "source": p.source, "referrer": _user_dict(p.referrer)},
    ),
    _PayloadKind(
        EventType.LEAVE, "touchflow.Leave", lambda d: Leave(d["kind"]), lambda p: {"kind": p.kind}
    ),
    _PayloadKind(
        EventType.PURCHASE,
        "touchflow.Purchase",
        _purchase_from_avro,
        lambda p: {
            "order_id": p.order_id,
            "amount_minor": p.amount_minor,
            "currency": p.currency,
            "items": p.items,
            "place": p.place,
        },
    ),
    _PayloadKind(
        EventType.REFUND,
        "touchflow.Refund",
        lambda d: Refund(d["order_id"], d["amount_minor"], d["currency"]),
        lambda p: {"order_id": p.order_id, "amount_minor": p.amount_minor, "currency": p.currency},
    ),
    _PayloadKind(
        EventType.CHAT,
        "touchflow.Chat",
        _chat_from_avro,
        lambda p: {"direction": p.direction, "party": p.party},
    ),
    _PayloadKind(
        EventType.SHARE,
        "touchflow.Share",
        _share_from_avro,
        lambda p: {"content_id": p.content_id, "invitee": _user_dict(p.invitee)},
    ),
    _PayloadKind(
        EventType.IDENTIFY,
        "touchflow.Identify",
        lambda d: Identify(tuple(_user_ref(u["id_type"], u["id"]) for u in d["identities"])),
        lambda p: {"identities": [_user_dict(u) for u in p.identities]},
    ),
)
_BY_RECORD = {k.record_name: k for k in _PAYLOADS}
_BY_TYPE = {k.type: k for k in _PAYLOADS}
_EVENT_TYPES = {t.value: t for t in EventType}
# (compiled: typed dicts, codec.pxd) record name -> the event type its payload is for
_TYPE_OF_RECORD: dict[str, EventType] = {k.record_name: k.type for k in _PAYLOADS}
_JOIN, _PURCHASE = EventType.JOIN, EventType.PURCHASE
_CHAT, _SHARE = EventType.CHAT, EventType.SHARE


def _payload_from_avro(event_type: EventType, record_name: str, d: dict[str, Any]) -> Payload:
    """`_BY_RECORD[record_name].from_avro(d)`; the common kinds by a C call when compiled."""
    if event_type is _CHAT:
        return _chat_from_avro(d)
    if event_type is _PURCHASE:
        return _purchase_from_avro(d)
    if event_type is _JOIN:
        return _join_from_avro(d)
    if event_type is _SHARE:
        return _share_from_avro(d)
    return _BY_RECORD[record_name].from_avro(d)


def _touchpoint(
    event_id: str,
    event_type: EventType,
    brand: str,
    channel: str,
    user: UserRef,
    occurred_at: int,
    payload: Payload,
) -> Touchpoint:
    if cython.compiled:
        t = Touchpoint.__new__(Touchpoint)
        t.event_id = event_id
        t.type = event_type
        t.brand = brand
        t.channel = channel
        t.user = user
        t.occurred_at = occurred_at
        t.payload = payload
        return t
    return Touchpoint(event_id, event_type, brand, channel, user, occurred_at, payload)


def touchpoint_from_record(r: dict[str, Any]) -> Touchpoint:
    """A decoded Avro record (payload as (record name, dict)) as a typed Touchpoint."""
    record_name, payload = r["payload"]
    payload_type = _TYPE_OF_RECORD[record_name]
    event_type = _EVENT_TYPES.get(r["type"])
    if event_type is None:
        raise Rejected(
            Reason.UNKNOWN_TYPE, f"type {r['type']!r} is not one of {list(_EVENT_TYPES)}"
        )
    if event_type is not payload_type:
        raise Rejected(
            Reason.TYPE_MISMATCH, f"type {r['type']!r} but payload is {record_name.split('.')[-1]}"
        )
    user = r["user"]
    return _touchpoint(
        r["event_id"],
        event_type,
        r["brand"],
        r["channel"],
        _user_ref(user["id_type"], user["id"]),
        r["occurred_at"],
        _payload_from_avro(event_type, record_name, payload),
    )


def touchpoint_to_record(e: Touchpoint) -> dict[str, Any]:
    kind = _BY_TYPE[e.type]
    return {
        "event_id": e.event_id,
        "type": e.type.value,
        "brand": e.brand,
        "channel": e.channel,
        "user": {"id_type": e.user.id_type, "id": e.user.id},
        "occurred_at": e.occurred_at,
        "payload": (kind.record_name, kind.to_avro(e.payload)),
    }


# -- segment changes and state -----------------------------------------------------------


def _scores(s: Scores) -> dict[str, int]:
    return {"r": s.r, "f": s.f, "m": s.m}


def change_to_record(c: SegmentChange) -> dict[str, Any]:
    return {
        "brand": c.brand,
        "person_id": c.person_id,
        "dimension": c.dimension,
        "from_value": c.from_value,
        "to_value": c.to_value,
        "rule": c.rule,
        "cause_event_id": c.cause_event_id,
        "event_time": c.event_time,
        "seq": c.seq,
        "scores_before": _scores(c.scores_before),
        "scores_after": _scores(c.scores_after),
        "policy_version": c.policy_version,
    }


def change_from_record(r: dict[str, Any]) -> SegmentChange:
    b, a = r["scores_before"], r["scores_after"]
    return SegmentChange(
        brand=r["brand"],
        person_id=r["person_id"],
        dimension=r["dimension"],
        from_value=r["from_value"],
        to_value=r["to_value"],
        rule=r["rule"],
        cause_event_id=r["cause_event_id"],
        event_time=r["event_time"],
        seq=r["seq"],
        scores_before=Scores(b["r"], b["f"], b["m"]),
        scores_after=Scores(a["r"], a["f"], a["m"]),
        policy_version=r["policy_version"],
    )


def state_to_record(s: PersonState) -> dict[str, Any]:
    """Flat Avro record of a state (the nested dataclasses are a code-side grouping)."""
    a, d = s.agg, s.derived
    return {
        "version": s.version,
        "seq": s.seq,
        "last_offset": s.last_offset,
        "as_of": s.as_of,
        "recent_event_ids": list(s.recent_event_ids),
        "source_offsets": [{"partition": p, "offset": o} for p, o in s.source_offsets],
        "first_seen": a.first_seen,
        "last_seen": a.last_seen,
        "engagements": a.engagements,
        "shares": a.shares,
        "invitations": a.invitations,
        "lifetime_orders": a.lifetime_orders,
        "lifetime_amount_minor": a.lifetime_amount_minor,
        "first_purchase_day": a.first_purchase_day,
        "last_purchase_day": a.last_purchase_day,
        "previous_purchase_day": a.previous_purchase_day,
        "buckets": [{"day": d_, "orders": o, "amount_minor": m} for d_, o, m in a.buckets],
        "recent_orders": [
            {"order_id": i, "day": d_, "amount_minor": m} for i, d_, m in a.recent_orders
        ],
        "pending_refunds": [{"order_id": i, "amount_minor": m} for i, m in a.pending_refunds],
        "last_join": a.last_join,
        "last_leave": a.last_leave,
        "acquired_at": a.acquired_at,
        "acquisition_channel": a.acquisition_channel,
        "acquisition_source": a.acquisition_source,
        "referred_by": a.referred_by,
        "referred_at": a.referred_at,
        "converted_invitees": a.converted_invitees,
        "r": d.scores.r,
        "f": d.scores.f,
        "m": d.scores.m,
        "rfm_segment": d.rfm_segment,
        "aipl_stage": d.aipl_stage,
        "lifecycle": d.lifecycle,
        "tags": list(d.tags),
        "layers": [{"layer": layer, "level": level} for layer, level in d.layers],
    }


# Where `change_to_record` finds each field, for the change's compiled writer: the same
# names, its two `Scores` by attribute (~0.3 µs less per change than building the dict).
CHANGE_LAYOUT = ObjectLayout(
    fields={f.name: f"s.{f.name}" for f in fields(SegmentChange)},
    objects=frozenset({"scores_before", "scores_after"}),
    classes={"s": "SegmentChange", "scores_before": "Scores", "scores_after": "Scores"},
)

# Where `state_to_record` finds each field, for the state's compiled writer (it encodes
# the same bytes without building that dict: tests/unit/test_avro_writer.py).
STATE_LAYOUT = ObjectLayout(
    prelude=("a = s.agg", "d = s.derived", "sc = d.scores"),
    classes={"s": "PersonState", "a": "Aggregates", "d": "Derived", "sc": "Scores"},
    fields={
        "version": "s.version",
        "seq": "s.seq",
        "last_offset": "s.last_offset",
        "as_of": "s.as_of",
        "recent_event_ids": "s.recent_event_ids",
        "source_offsets": "s.source_offsets",
        **{f.name: f"a.{f.name}" for f in fields(Aggregates)},  # same names
        "r": "sc.r",
        "f": "sc.f",
        "m": "sc.m",
        "rfm_segment": "d.rfm_segment",
        "aipl_stage": "d.aipl_stage",
        "lifecycle": "d.lifecycle",
        "tags": "d.tags",
        "layers": "d.layers",
    },
    items={
        "source_offsets": ("partition", "offset"),
        "buckets": ("day", "orders", "amount_minor"),
        "recent_orders": ("order_id", "day", "amount_minor"),
        "pending_refunds": ("order_id", "amount_minor"),
        "layers": ("layer", "level"),
    },
    # Purchases and refunds change these; the other ~85 % of events keep the same tuples,
    # which the next batch writes again (docs/benchmarks-history.md, "What changed in
    # 5088a57-2f3dc50").
    memoized=frozenset({"buckets", "recent_orders"}),
)


def state_from_record(r: dict[str, Any]) -> PersonState:
    buckets = tuple((b["day"], b["orders"], b["amount_minor"]) for b in r["buckets"])
    orders: tuple[OrderRef, ...] = tuple(
        (o["order_id"], o["day"], o["amount_minor"]) for o in r["recent_orders"]
    )
    first_purchase_day = r["first_purchase_day"]
    if first_purchase_day < 0 <= r["last_purchase_day"]:  # written by v1: best known bound
        first_purchase_day = min([r["last_purchase_day"]] + [b[0] for b in buckets])
    agg = Aggregates(
        first_seen=r["first_seen"],
        last_seen=r["last_seen"],
        engagements=r["engagements"],
        shares=r["shares"],
        invitations=r["invitations"],
        lifetime_orders=r["lifetime_orders"],
        lifetime_amount_minor=r["lifetime_amount_minor"],
        first_purchase_day=first_purchase_day,
        last_purchase_day=r["last_purchase_day"],
        previous_purchase_day=r["previous_purchase_day"],
        buckets=buckets,
        recent_orders=orders,
        pending_refunds=tuple((p["order_id"], p["amount_minor"]) for p in r["pending_refunds"]),
        last_join=r["last_join"],
        last_leave=r["last_leave"],
        acquired_at=r["acquired_at"],
        acquisition_channel=r["acquisition_channel"],
        acquisition_source=r["acquisition_source"],
        referred_by=r["referred_by"],
        referred_at=r["referred_at"],
        converted_invitees=r["converted_invitees"],
    )
    derived = Derived(
        scores=Scores(r["r"], r["f"], r["m"]),
        rfm_segment=r["rfm_segment"],
        aipl_stage=r["aipl_stage"],
        lifecycle=r["lifecycle"],
        tags=tuple(r["tags"]),
        layers=tuple((x["layer"], x["level"]) for x in r["layers"]),
    )
    return PersonState(
        version=r["version"],
        seq=r["seq"],
        last_offset=r["last_offset"],
        as_of=r["as_of"] or r["last_seen"],
        recent_event_ids=tuple(r["recent_event_ids"]),
        agg=agg,
        derived=derived,
        source_offsets=tuple((x["partition"], x["offset"]) for x in r["source_offsets"]),
    )


class Codecs:
    """The three wire codecs touchflow uses, built once from one registry."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        registry = registry if registry is not None else FileSchemaRegistry()
        self.events = WireCodec(registry, EVENTS_SUBJECT)
        self.changes = WireCodec(registry, CHANGES_SUBJECT, CHANGE_LAYOUT)
        self.state = WireCodec(registry, STATE_SUBJECT, STATE_LAYOUT)

    def encode_event(self, e: Touchpoint) -> bytes:
        return self.events.encode(touchpoint_to_record(e))

    def decode_event(self, data: bytes) -> Touchpoint:
        return touchpoint_from_record(self.events.decode(data))

    def encode_change(self, c: SegmentChange) -> bytes:
        return self.changes.encode_object(c, change_to_record)

    def decode_change(self, data: bytes) -> SegmentChange:
        return change_from_record(self.changes.decode(data))

    def encode_state(self, s: PersonState) -> bytes:
        return self.state.encode_object(s, state_to_record)

    def decode_state(self, data: bytes) -> PersonState:
        return state_from_record(self.state.decode(data))
