"""The compiled Avro encoders write exactly fastavro's bytes (pipeline.avro_writer)."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import fastavro
import pytest

from pipeline.avro_prebuilt import source_key
from pipeline.avro_writer import (
    ArrayMemo,
    ObjectLayout,
    compile_object_writer,
    compile_writer,
    prebuilt_writers,
    writer_source,
    writers_module_source,
)
from pipeline.codec import (
    CHANGE_LAYOUT,
    STATE_LAYOUT,
    Codecs,
    change_to_record,
    state_to_record,
)
from pipeline.engine import Outcome, PartitionEngine
from pipeline.generator import TrafficGenerator
from pipeline.identity import person_id_for
from pipeline.rfm import MS_PER_DAY
from pipeline.settings import Settings
from pipeline.state import PersonState, Scores
from tests.unit.test_codec import CHANGES, STATES

NOW = 1_790_000_000_000


def fastavro_bytes(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def compiled_bytes(schema: Any, record: dict[str, Any]) -> bytes:
    writer = compile_writer(schema)
    assert writer is not None
    out = bytearray()
    writer(record, out)
    return bytes(out)


def test_the_state_and_change_schemas_compile() -> None:
    """Also: the layouts place every field of the current state and change schemas, so
    both are written from their objects (a new field must be added to the layout)."""
    codecs = Codecs()
    assert compile_writer(codecs.state.schema) is not None
    assert compile_writer(codecs.changes.schema) is not None
    assert compile_object_writer(codecs.state.schema, STATE_LAYOUT) is not None
    assert compile_object_writer(codecs.changes.schema, CHANGE_LAYOUT) is not None


@pytest.mark.parametrize("state", STATES, ids=["empty", "full"])
def test_a_state_with_every_array_filled_encodes_as_fastavro_does(state: PersonState) -> None:
    """Pending refunds, layers and source offsets are rare in generated traffic."""
    codecs = Codecs()
    want = fastavro_bytes(codecs.state.schema, state_to_record(state))
    assert codecs.encode_state(state)[5:] == want


def test_a_state_schema_field_the_layout_does_not_place_falls_back_to_the_record() -> None:
    codecs = Codecs()
    schema = dict(codecs.state.schema)
    schema["fields"] = [*schema["fields"], {"name": "later", "type": "long", "default": 3}]
    assert compile_object_writer(schema, STATE_LAYOUT) is None
    partial = ObjectLayout(fields={"version": "s.version"})
    assert compile_object_writer(codecs.state.schema, partial) is None


def test_an_object_layout_reads_attributes_tuple_items_objects_and_a_prelude() -> None:
    class Point:
        def __init__(self, n: int) -> None:
            self.y, self.x = f"y{n}", n // 3  # attribute order unlike the schema's

    class Obj:
        def __init__(self, n: int) -> None:
            self.n, self.inner = n, self
            self.pairs = tuple((k, n - k) for k in range(abs(n) % 4))
            self.point = Point(n)

    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "t.O",
            "fields": [
                {"name": "n", "type": "long"},
                {"name": "m", "type": "long"},
                {
                    "name": "pairs",
                    "type": {
                        "type": "array",
                        "items": {
                            "type": "record",
                            "name": "t.P",
                            "fields": [
                                {"name": "a", "type": "long"},
                                {"name": "b", "type": "long"},
                            ],
                        },
                    },
                },
                {
                    "name": "point",
                    "type": {
                        "type": "record",
                        "name": "t.Point",
                        "fields": [
                            {"name": "x", "type": "long"},
                            {"name": "y", "type": "string"},
                        ],
                    },
                },
            ],
        }
    )
    layout = ObjectLayout(
        fields={"n": "s.n", "m": "i.n", "pairs": "s.pairs", "point": "s.point"},
        items={"pairs": ("b", "a")},  # the tuple holds b first: the writer must reorder
        prelude=("i = s.inner",),
        objects=frozenset({"point"}),
    )
    writer = compile_object_writer(schema, layout)
    assert writer is not None
    for n in EDGES:
        o = Obj(n)
        out = bytearray()
        writer(o, out)
        record = {
            "n": n,
            "m": n,
            "pairs": [{"a": a, "b": b} for b, a in o.pairs],
            "point": {"x": n // 3, "y": f"y{n}"},
        }
        assert bytes(out) == fastavro_bytes(schema, record)
    no_objects = ObjectLayout(fields=layout.fields, items=layout.items, prelude=layout.prelude)
    assert compile_object_writer(schema, no_objects) is None  # a record it cannot place


def test_every_state_and_change_of_a_workload_encodes_as_fastavro_does() -> None:
    """4 000 events of synthetic traffic (purchases, refunds, referrals, tags, identities
    on many channels) through the engine: each state after each event, each change."""
    codecs, settings = Codecs(), Settings()
    gen = TrafficGenerator(b"k" * 32, seed=5, referrals=True)
    states: dict[bytes, PersonState] = {}
    engine = PartitionEngine(settings.policy(), states, settings.allowed_lateness_ms)
    start, step = NOW - 400 * MS_PER_DAY, 400 * MS_PER_DAY // 4_000
    seen_states = seen_changes = 0
    for i in range(4_000):
        event = gen.next_event(start + i * step)
        out = Outcome()
        engine.on_event(event, person_id_for(event.user), i, out, (i % 3, i))
        for key in out.written:
            record = state_to_record(states[key])
            encoded = codecs.encode_state(states[key])
            assert encoded[5:] == fastavro_bytes(codecs.state.schema, record)
            assert codecs.decode_state(encoded) == states[key]
            seen_states += 1
        for change in out.changes:
            encoded = codecs.encode_change(change)
            want = fastavro_bytes(codecs.changes.schema, change_to_record(change))
            assert encoded[5:] == want
            assert codecs.decode_change(encoded) == change
            seen_changes += 1
    assert seen_states > 3_000 and seen_changes > 1_000


SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "t.Edge",
        "fields": [
            {"name": "n", "type": "long"},
            {"name": "i", "type": "int"},
            {"name": "flag", "type": "boolean"},
            {"name": "text", "type": "string"},
            {"name": "raw", "type": "bytes"},
            {"name": "maybe", "type": ["null", "string"]},
            {"name": "maybe_after", "type": ["long", "null"]},
            {"name": "nums", "type": {"type": "array", "items": "long"}},
            {"name": "nothing", "type": {"type": "array", "items": "null"}},
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "t.Inner",
                    "fields": [{"name": "x", "type": "int"}],
                },
            },
            {"name": "again", "type": {"type": "array", "items": "t.Inner"}},
            {"name": "later", "type": "long", "default": 7},
        ],
    }
)

EDGES = [-(2**63), -(2**31), -65, -64, -1, 0, 1, 63, 64, 127, 128, 2**31 - 1, 2**63 - 1]


@pytest.mark.parametrize("n", EDGES)
def test_edge_values_encode_as_fastavro_does(n: int) -> None:
    record = {
        "n": n,
        "i": max(-(2**31), min(2**31 - 1, n)),
        "flag": n % 2 == 0,
        "text": "重要价值客户 " * (abs(n) % 40),
        "raw": bytes(range(abs(n) % 200)),
        "maybe": None if n < 0 else "x" * (abs(n) % 70),
        "maybe_after": None if n > 0 else n,
        "nums": EDGES[: abs(n) % len(EDGES)],
        "nothing": [None] * (abs(n) % 3),
        "inner": {"x": -n % 1000},
        "again": [{"x": k} for k in range(abs(n) % 5)],
    }
    assert compiled_bytes(SCHEMA, record) == fastavro_bytes(SCHEMA, record)
    record["later"] = n
    assert compiled_bytes(SCHEMA, record) == fastavro_bytes(SCHEMA, record)


@pytest.mark.parametrize("n", EDGES)
def test_edge_values_of_states_and_changes_encode_as_fastavro_does(n: int) -> None:
    """The object encoders the build compiles hold a state's and a change's integers in
    C (signed in, zigzag unsigned): every 64-bit value must give fastavro's bytes."""
    codecs = Codecs()
    full = STATES[1]
    agg = replace(full.agg, first_seen=n, last_seen=n, lifetime_amount_minor=n, referred_at=n)
    state = replace(full, version=n, seq=n, last_offset=n, as_of=n, due=n, agg=agg)
    want = fastavro_bytes(codecs.state.schema, state_to_record(state))
    assert codecs.encode_state(state)[5:] == want
    scores = Scores(n, n, n)
    for change in CHANGES:
        change = replace(change, event_time=n, seq=n, scores_before=scores, scores_after=scores)
        want = fastavro_bytes(codecs.changes.schema, change_to_record(change))
        assert codecs.encode_change(change)[5:] == want


@pytest.mark.parametrize(
    "field_type",
    [
        {"type": "enum", "name": "t.E", "symbols": ["A", "B"]},
        {"type": "map", "values": "long"},
        {"type": "fixed", "name": "t.F", "size": 4},
        ["string", "long"],
        ["null", "string", "long"],
        "double",
    ],
    ids=["enum", "map", "fixed", "union-without-null", "union-of-three", "double"],
)
def test_other_types_are_left_to_fastavro(field_type: Any) -> None:
    schema = {"type": "record", "name": "t.Other", "fields": [{"name": "v", "type": field_type}]}
    assert compile_writer(fastavro.parse_schema(schema)) is None


def test_a_recursive_record_is_left_to_fastavro() -> None:
    schema = {
        "type": "record",
        "name": "t.Node",
        "fields": [{"name": "next", "type": ["null", "t.Node"]}],
    }
    assert compile_writer(fastavro.parse_schema(schema)) is None


# -- memoized arrays -----------------------------------------------------------------------

PAIRS_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "t.M",
        "fields": [
            {"name": "n", "type": "long"},
            {
                "name": "pairs",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "t.Pair",
                        "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"}],
                    },
                },
            },
        ],
    }
)
PAIRS_LAYOUT = ObjectLayout(
    fields={"n": "s[0]", "pairs": "s[1]"},
    items={"pairs": ("a", "b")},
    memoized=frozenset({"pairs"}),
)


class CountedPair(tuple[int, str]):
    """An immutable pair that counts how often the writer reads its fields."""

    reads = 0

    def __getitem__(self, i: Any) -> Any:
        CountedPair.reads += 1
        return super().__getitem__(i)


def write_pairs(writer: Any, n: int, pairs: tuple[Any, ...]) -> bytes:
    out = bytearray()
    writer((n, pairs), out)
    want = fastavro_bytes(PAIRS_SCHEMA, {"n": n, "pairs": [{"a": a, "b": b} for a, b in pairs]})
    assert bytes(out) == want
    return bytes(out)


def test_a_memoized_array_is_encoded_once_per_tuple_and_copied_after() -> None:
    writer = compile_object_writer(PAIRS_SCHEMA, PAIRS_LAYOUT)
    assert writer is not None
    pairs = tuple(CountedPair((k, f"o{k}")) for k in range(6))
    CountedPair.reads = 0
    write_pairs(writer, 1, pairs)
    assert CountedPair.reads == 12  # each field of each item once
    write_pairs(writer, 2, pairs)  # the same tuple, in another record
    assert CountedPair.reads == 12
    equal = tuple(list(pairs))  # a new tuple object: encoded again, though equal
    assert equal is not pairs
    write_pairs(writer, 3, equal)
    assert CountedPair.reads == 24
    short = pairs[:3]  # under ArrayMemo's min_items: never kept
    write_pairs(writer, 4, short)
    write_pairs(writer, 5, short)
    assert CountedPair.reads == 24 + 2 * 6


def test_a_memoized_array_never_gets_the_bytes_of_a_freed_tuple() -> None:
    """CPython reuses a freed tuple's memory, so its id, for the next tuple of its size:
    the memo holds each tuple it keeps, and compares identity, so that cannot happen."""
    writer = compile_object_writer(PAIRS_SCHEMA, PAIRS_LAYOUT)
    assert writer is not None
    for k in range(2_000):  # each tuple freed after its write
        write_pairs(writer, k, tuple((k * 7 + j, str(k)) for j in range(5)))


def test_an_array_memo_keeps_at_most_its_entries_and_drops_the_oldest() -> None:
    memo = ArrayMemo(max_entries=3, min_items=2)
    arrays = [(k, k + 1) for k in range(5)]
    for a in arrays:
        memo.keep(a, bytes(a))
    assert [kept for kept, _ in memo.entries.values()] == arrays[2:]
    memo.keep((9,), b"\x09")
    assert len(memo.entries) == 3 and all(len(kept) == 2 for kept, _ in memo.entries.values())


def test_memoizing_a_field_that_is_not_an_array_falls_back() -> None:
    layout = ObjectLayout(
        fields={"n": "s[0]", "pairs": "s[1]"},
        items={"pairs": ("a", "b")},
        memoized=frozenset({"n"}),
    )
    assert compile_object_writer(PAIRS_SCHEMA, layout) is None


def test_the_state_writer_memoizes_buckets_and_orders_and_stays_byte_exact() -> None:
    """A heavy customer's states in a row share their buckets until a purchase; each write
    equals fastavro's whether the buckets came from the memo or not."""
    codecs, settings = Codecs(), Settings()
    policy = settings.policy()
    gen = TrafficGenerator(b"k" * 32, seed=9)
    states: dict[bytes, PersonState] = {}
    engine = PartitionEngine(policy, states, settings.allowed_lateness_ms)
    start, step = NOW - 400 * MS_PER_DAY, MS_PER_DAY // 4
    previous: dict[bytes, PersonState] = {}
    reused = 0
    for i in range(3_000):
        event = gen.next_event(start + i * step)
        out = Outcome()
        engine.on_event(event, person_id_for(event.user), i, out)
        for key in out.written:
            s = states[key]
            before = previous.get(key)
            if (
                before is not None
                and before.agg.buckets is s.agg.buckets
                and len(s.agg.buckets) > 4
            ):
                reused += 1
            want = fastavro_bytes(codecs.state.schema, state_to_record(s))
            assert codecs.encode_state(s)[5:] == want
            previous[key] = s
    assert reused > 100  # the memo's case happened, and often


# -- the encoders compiled ahead of time (python -m pipeline.compiled_core) ---------------


def _workload_states_and_changes(n: int) -> tuple[list[PersonState], list[Any]]:
    settings = Settings()
    gen = TrafficGenerator(b"k" * 32, seed=5, referrals=True)
    states: dict[bytes, PersonState] = {}
    engine = PartitionEngine(settings.policy(), states, settings.allowed_lateness_ms)
    start, step = NOW - 400 * MS_PER_DAY, 400 * MS_PER_DAY // n
    written, changes = [], []
    for i in range(n):
        event = gen.next_event(start + i * step)
        out = Outcome()
        engine.on_event(event, person_id_for(event.user), i, out)
        written += [states[k] for k in out.written]
        changes += out.changes
    return written, changes


def test_the_codecs_encode_with_the_encoders_compiled_ahead_of_time() -> None:
    """What a worker runs for every change and every state it writes."""
    if not prebuilt_writers():
        pytest.skip("no build of the encoders here (make venv builds it), or interpreted")
    codecs = Codecs()
    assert codecs.changes.writers_prebuilt and codecs.state.writers_prebuilt
    assert type(codecs.state._object_writer).__name__ != "function"  # not the exec'd source


def test_without_a_build_the_encoders_run_their_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHFLOW_INTERPRETED", "1")
    assert prebuilt_writers() == {}
    codecs = Codecs()
    assert not codecs.state.writers_prebuilt
    assert type(codecs.state._object_writer).__name__ == "function"


def test_the_module_the_build_compiles_writes_as_the_sources_do() -> None:
    """The build's module as plain Python (Cython's decorators are no-ops there): one
    encoder per (schema, layout), under the key of its source, each memo a global of its
    own; each writes fastavro's bytes for a workload's states and changes."""
    pytest.importorskip("cython")  # the dev extra has it; the build needs it anyway
    codecs = Codecs()
    pairs = [
        (codecs.changes.schema, None),
        (codecs.state.schema, None),
        (codecs.changes.schema, CHANGE_LAYOUT),
        (codecs.state.schema, STATE_LAYOUT),
        (codecs.state.schema, STATE_LAYOUT),  # the same twice: built once
    ]
    module: dict[str, Any] = {}
    exec(compile(writers_module_source(pairs, typed=False), "<writers>", "exec"), module)
    sources = [writer_source(schema, layout) for schema, layout in pairs]
    keys = [source_key(made[0]) for made in sources if made is not None]
    assert sorted(module["FUNCTIONS"]) == sorted(set(keys)) and len(set(keys)) == 4
    memos = [name for name, v in module.items() if isinstance(v, ArrayMemo)]
    state_key = source_key(sources[3][0])  # type: ignore[index]
    assert memos and all(name.endswith(f"_{state_key}") for name in memos)
    states, changes = _workload_states_and_changes(1_500)
    for (schema, layout), key in zip(pairs, keys, strict=True):
        write = module["FUNCTIONS"][key]
        items = changes if schema is codecs.changes.schema else states
        to_record = change_to_record if items is changes else state_to_record
        for item in items[:: max(1, len(items) // 400)]:
            out = bytearray()
            write(item if layout else to_record(item), out)
            assert bytes(out) == fastavro_bytes(schema, to_record(item))


def test_the_build_declares_the_core_classes_an_object_encoder_reads() -> None:
    """Each name a layout's `classes` gives, and each `objects` field's variable, is
    declared its class (C field reads when compiled); the classes are cimported once; a
    record's encoder (no layout) declares none."""
    codecs = Codecs()
    pairs = [(codecs.changes.schema, None), (codecs.changes.schema, CHANGE_LAYOUT)]
    pairs += [(codecs.state.schema, STATE_LAYOUT)]
    module = writers_module_source(pairs)
    cimport = "from cython.cimports.pipeline.state import "
    assert module.count(cimport) == 1
    assert f"{cimport}Aggregates, Derived, PersonState, Scores, SegmentChange\n" in module
    declared = [line for line in module.splitlines() if line.startswith("@cython.locals(")]
    record, change, state = declared
    assert "=Scores" not in record and "s=" not in record
    assert "s=SegmentChange" in change and change.count("=Scores") == 2  # before, after
    for name, cls in STATE_LAYOUT.classes.items():
        assert f" {name}={cls}" in state or f", {name}={cls}" in state
    assert cimport not in writers_module_source(pairs, typed=False)
