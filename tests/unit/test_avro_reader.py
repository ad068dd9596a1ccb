"""The compiled Avro decoders read exactly what fastavro reads (pipeline.avro_reader)."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import fastavro
import pytest

from pipeline.avro_prebuilt import source_key
from pipeline.avro_reader import (
    compile_reader,
    compiled_source,
    prebuilt_readers,
    reader_source,
    readers_module_source,
)
from pipeline.codec import SCHEMAS_DIR, Codecs, change_to_record, state_to_record
from pipeline.engine import Outcome, PartitionEngine
from pipeline.generator import TrafficGenerator
from pipeline.identity import person_id_for
from pipeline.rfm import MS_PER_DAY
from pipeline.settings import Settings
from pipeline.state import PersonState
from tests.unit.test_avro_writer import fastavro_bytes

NOW = 1_790_000_000_000
LONGS = [-(2**63), -(2**31), -65, -64, -1, 0, 1, 63, 64, 127, 128, 8191, 8192, 2**63 - 1]


def fastavro_read(schema: Any, data: bytes) -> tuple[Any, int]:
    """As `WireCodec` calls fastavro for a message of its own schema (no header here)."""
    body = io.BytesIO(data)
    record = fastavro.schemaless_reader(
        body, schema, None, return_record_name=True, return_record_name_override=True
    )
    return record, body.tell()


def compiled(schema: Any) -> Any:
    reader = compile_reader(schema)
    assert reader is not None
    return reader


class RandomRecords:
    """Random values of a parsed schema, every branch and size class reached: strings of
    0-200 characters (lengths of one byte and of two), numbers at the varint edges, arrays
    empty and of 70+ items, each union branch. Unions with several records are written
    as fastavro reads them, (full name, record), so the branch is the one chosen."""

    def __init__(self, schema: Any, seed: int) -> None:
        self.rng = random.Random(seed)
        self.named: dict[str, Any] = {}
        self.schema = schema
        self.collect(schema)

    def collect(self, schema: Any) -> None:
        """Every record defined in `schema`, by name: a branch may refer to one that the
        random choices have not passed through yet."""
        if isinstance(schema, list):
            for branch in schema:
                self.collect(branch)
        elif isinstance(schema, dict):
            if schema["type"] == "record":
                self.named[schema["name"]] = schema
                for f in schema["fields"]:
                    self.collect(f["type"])
            elif schema["type"] == "array":
                self.collect(schema["items"])
            elif isinstance(schema["type"], (dict, list)):
                self.collect(schema["type"])

    def record(self) -> Any:
        return self.value(self.schema)

    def value(self, schema: Any) -> Any:
        rng = self.rng
        if isinstance(schema, list):
            branch = rng.choice(schema)
            records = [b for b in schema if self.kind(b) == "record"]
            v = self.value(branch)
            if self.kind(branch) == "record" and len(records) > 1:
                return (self.resolve(branch)["name"], v)
            return v
        if isinstance(schema, str) and schema in self.named:
            return self.value(self.named[schema])
        kind = schema["type"] if isinstance(schema, dict) else schema
        if isinstance(kind, (dict, list)):
            return self.value(kind)
        if kind == "null":
            return None
        if kind == "int":
            return rng.choice([v for v in LONGS if -(2**31) <= v < 2**31])
        if kind == "long":
            return rng.choice([*LONGS, rng.randrange(-(2**40), 2**40)])
        if kind == "string":
            size = rng.choice([0, 1, 5, 63, 64, 100, 200])
            return "".join(rng.choice("ab重要价值客户 h1:0f") for _ in range(size))
        if kind == "record":
            return {f["name"]: self.value(f["type"]) for f in schema["fields"]}
        if kind == "array":
            return [self.value(schema["items"]) for _ in range(rng.choice([0, 1, 3, 70]))]
        raise AssertionError(f"no generator for {kind}")

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema in self.named:
            return self.named[schema]
        return schema

    def kind(self, schema: Any) -> str:
        schema = self.resolve(schema)
        if isinstance(schema, dict) and schema["type"] == "record":
            return "record"
        return "other"


def registry_schemas() -> list[tuple[str, Any]]:
    index = json.loads((SCHEMAS_DIR / "registry.json").read_text())
    return [
        (
            entry["file"],
            fastavro.parse_schema(json.loads((SCHEMAS_DIR / entry["file"]).read_text())),
        )
        for entry in index["schemas"]
    ]


SHAPES = fastavro.parse_schema(
    {
        "type": "record",
        "name": "t.Shapes",
        "fields": [
            {"name": "n", "type": "long"},
            {"name": "text", "type": "string"},
            {"name": "maybe", "type": ["null", "string"]},
            {"name": "maybe_after", "type": ["long", "null"]},
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "t.Inner",
                    "fields": [{"name": "x", "type": "int"}, {"name": "nothing", "type": "null"}],
                },
            },
            {"name": "one_record", "type": ["null", "t.Inner"]},
            {
                "name": "two_records",
                "type": [
                    "null",
                    "t.Inner",
                    {
                        "type": "record",
                        "name": "t.Other",
                        "fields": [{"name": "y", "type": "string"}],
                    },
                    "string",
                ],
            },
            {"name": "inners", "type": {"type": "array", "items": "t.Inner"}},
            {
                "name": "nested",
                "type": {"type": "array", "items": {"type": "array", "items": "long"}},
            },
            {"name": "choices", "type": {"type": "array", "items": ["null", "t.Other", "t.Inner"]}},
        ],
    }
)


@pytest.mark.parametrize(
    ("name", "schema"), [*registry_schemas(), ("shapes", SHAPES)], ids=lambda v: str(v)[:30]
)
def test_random_records_of_every_registered_schema_read_as_fastavro_reads_them(
    name: str, schema: Any
) -> None:
    read = compiled(schema)
    records = RandomRecords(schema, seed=len(name))
    for _ in range(300):
        data = fastavro_bytes(schema, records.record())
        assert read(data, 0) == fastavro_read(schema, data)


def test_every_event_state_and_change_of_a_workload_reads_as_fastavro_reads_it() -> None:
    """4 000 events of synthetic traffic (every event type, referrals, identities) through
    the engine: each event, each state after each event, each change; through the codecs,
    so the header and the end check are the ones in use."""
    codecs, settings = Codecs(), Settings()
    gen = TrafficGenerator(b"k" * 32, seed=7, referrals=True)
    states: dict[bytes, PersonState] = {}
    engine = PartitionEngine(settings.policy(), states, settings.allowed_lateness_ms)
    start, step = NOW - 400 * MS_PER_DAY, 400 * MS_PER_DAY // 4_000
    seen = {"event": 0, "state": 0, "change": 0}
    for i in range(4_000):
        event = gen.next_event(start + i * step)
        data = codecs.encode_event(event)
        assert codecs.events.decode(data) == fastavro_read(codecs.events.schema, data[5:])[0]
        assert codecs.decode_event(data) == event
        seen["event"] += 1
        out = Outcome()
        engine.on_event(event, person_id_for(event.user), i, out, (i % 3, i))
        for key in out.written:
            data = codecs.encode_state(states[key])
            assert codecs.state.decode(data) == fastavro_read(codecs.state.schema, data[5:])[0]
            assert codecs.state.decode(data) == state_to_record(states[key])
            seen["state"] += 1
        for change in out.changes:
            data = codecs.encode_change(change)
            assert codecs.changes.decode(data) == change_to_record(change)
            seen["change"] += 1
    assert seen["state"] > 3_000 and seen["change"] > 1_000


def own_schemas() -> list[tuple[str, Any]]:
    """The codecs' own schemas, whose decoders the build compiles ahead of time (what
    runs on every message), and SHAPES, which reaches every kind of value."""
    codecs = Codecs()
    return [
        ("shapes", SHAPES),
        *((c.schema["name"], c.schema) for c in (codecs.events, codecs.changes, codecs.state)),
    ]


@pytest.mark.parametrize(("name", "schema"), own_schemas(), ids=lambda v: str(v)[:30])
def test_every_cut_of_a_message_fails_as_ending_early(name: str, schema: Any) -> None:
    read = compiled(schema)
    records, rng = RandomRecords(schema, seed=3), random.Random(3)
    for _ in range(20):
        data = fastavro_bytes(schema, records.record())
        cuts: Any = range(len(data))
        if schema is not SHAPES and len(data) > 300:  # a state's long arrays: ends, a sample
            cuts = {*range(100), *range(len(data) - 100, len(data)), *rng.sample(cuts, 100)}
        for cut in cuts:
            with pytest.raises((IndexError, EOFError)):
                read(data[:cut], 0)


@pytest.mark.parametrize(("name", "schema"), own_schemas(), ids=lambda v: str(v)[:30])
def test_corrupted_messages_read_as_fastavro_reads_them_or_fail_cleanly(
    name: str, schema: Any
) -> None:
    """A byte changed anywhere: whatever the compiled reader returns, fastavro returns
    too (same record, same end); where it fails, it fails with one of the errors
    `WireCodec` turns into a rejection, never a TypeError or a hang."""
    read = compiled(schema)
    records, rng = RandomRecords(schema, seed=4), random.Random(4)
    succeeded = failed = 0
    for _ in range(3_000 if schema is SHAPES else 1_000):
        data = bytearray(fastavro_bytes(schema, records.record()))
        for _ in range(rng.choice([1, 2, 3])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            got = read(bytes(data), 0)
        except (IndexError, EOFError, ValueError):  # UnicodeDecodeError is a ValueError
            failed += 1
            continue
        assert got == fastavro_read(schema, bytes(data))
        succeeded += 1
    assert succeeded > 100 and failed > 100  # both sides of the property were exercised


def test_a_negative_length_is_malformed_not_a_step_back() -> None:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "t.S", "fields": [{"name": "s", "type": "string"}]}
    )
    with pytest.raises(ValueError, match="negative length"):
        compiled(schema)(bytes([0x03]) + b"abc", 0)  # zigzag 3 = -2
    with pytest.raises(ValueError, match="negative length"):
        compiled(schema)(bytes([0x81, 0x01]) + b"abc", 0)  # -65, two bytes


def test_an_array_claiming_more_items_than_bytes_left_fails_at_once() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "t.A",
            "fields": [{"name": "a", "type": {"type": "array", "items": "long"}}],
        }
    )
    count = 2**40
    zigzag, varint = count << 1, bytearray()
    while zigzag >= 128:
        varint.append((zigzag & 127) | 128)
        zigzag >>= 7
    varint.append(zigzag)
    with pytest.raises(EOFError):
        compiled(schema)(bytes(varint) + bytes(50), 0)


def test_a_union_index_out_of_range_and_a_number_beyond_64_bits_are_malformed() -> None:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "t.U", "fields": [{"name": "u", "type": ["null", "long"]}]}
    )
    with pytest.raises(ValueError, match="union index 2"):
        compiled(schema)(bytes([0x04]), 0)
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        compiled(schema)(bytes([0x02] + [0xFF] * 10 + [0x01]), 0)
    with pytest.raises(ValueError, match="beyond 64 bits"):
        compiled(schema)(bytes([0x02] + [0xFF] * 9 + [0x02]), 0)
    assert compiled(schema)(bytes([0x02] + [0xFF] * 9 + [0x01]), 0) == ({"u": -(2**63)}, 11)


@pytest.mark.parametrize(
    "field_type",
    [
        {"type": "enum", "name": "t.E", "symbols": ["A", "B"]},
        {"type": "map", "values": "long"},
        {"type": "fixed", "name": "t.F", "size": 4},
        "double",
        "boolean",
        "bytes",
        {"type": "array", "items": "null"},
    ],
    ids=["enum", "map", "fixed", "double", "boolean", "bytes", "array-of-null"],
)
def test_other_types_are_left_to_fastavro(field_type: Any) -> None:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "t.X", "fields": [{"name": "f", "type": field_type}]}
    )
    assert compile_reader(schema) is None


def test_a_recursive_record_is_left_to_fastavro() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "t.Node",
            "fields": [{"name": "next", "type": ["null", "t.Node"]}],
        }
    )
    assert compile_reader(schema) is None


def test_the_codecs_read_their_own_schemas_compiled() -> None:
    """A schema change that the reader cannot compile would silently fall back to the
    slower path: this says so."""
    codecs = Codecs()
    for codec in (codecs.events, codecs.changes, codecs.state):
        assert codec._reader is not None, codec.schema["name"]


def test_an_unparsed_schema_reads_with_full_record_names() -> None:
    """The schema file as JSON (short names, a namespace): the union's records still come
    back under their full names, which `touchpoint_from_record` looks up."""
    raw = json.loads((SCHEMAS_DIR / "touchpoint_event.v1.avsc").read_text())
    codecs = Codecs()
    gen = TrafficGenerator(b"k" * 32, seed=9, referrals=True)
    read = compiled(raw)
    for i in range(200):
        data = codecs.encode_event(gen.next_event(NOW + i))
        assert read(data[5:], 0) == fastavro_read(codecs.events.schema, data[5:])


# -- the decoders compiled ahead of time (python -m pipeline.compiled_core) ---------------


def test_the_codecs_decode_with_the_decoders_compiled_ahead_of_time() -> None:
    """What a worker runs: each codec's decoder is the build's, found by its source."""
    if not prebuilt_readers():
        pytest.skip("no build of the decoders here (make venv builds it), or interpreted")
    codecs = Codecs()
    for codec in (codecs.events, codecs.changes, codecs.state):
        source = reader_source(codec.schema)
        assert source is not None
        assert codec._reader is prebuilt_readers()[source_key(source)], codec.schema["name"]
        assert type(codec._reader).__name__ != "function"  # not the exec'd source
        assert codec.reader_prebuilt


def test_a_schema_the_build_has_not_seen_gets_its_source_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = compiled(SHAPES)
    assert type(read).__name__ == "function" and read.__name__ == "read"
    monkeypatch.setenv("TOUCHFLOW_INTERPRETED", "1")  # the uncompiled build: no prebuilt ones
    assert prebuilt_readers() == {}
    events = Codecs().events
    assert type(compile_reader(events.schema)).__name__ == "function"
    assert not Codecs().events.reader_prebuilt


def test_the_module_the_build_compiles_reads_as_the_sources_do() -> None:
    """The build's module as plain Python (Cython's decorators are no-ops there): one
    decoder per schema it can compile, under the key of the source it came from, with
    C types declared for each end position; each reads what that source reads."""
    pytest.importorskip("cython")  # the dev extra has it; the build needs it anyway
    schemas = [s for _, s in own_schemas()]
    module: dict[str, Any] = {}
    exec(compile(readers_module_source([*schemas, schemas[1]]), "<readers>", "exec"), module)
    sources = [reader_source(s) for s in schemas]
    assert sorted(module["FUNCTIONS"]) == sorted(source_key(s) for s in sources if s)
    for schema, source in zip(schemas, sources, strict=True):
        assert source is not None
        key = source_key(source)
        typed = compiled_source(source, key)
        ends = {n for n in source.replace("(", " ").split() if n[:1] == "e" and n[1:].isdigit()}
        assert ends and all(f"{e}=cython.Py_ssize_t" in typed.splitlines()[0] for e in ends)
        read, records = module["FUNCTIONS"][key], RandomRecords(schema, seed=11)
        for _ in range(200):
            data = fastavro_bytes(schema, records.record())
            assert read(data, 0) == compiled(schema)(data, 0) == fastavro_read(schema, data)


def test_a_forged_length_near_2_63_ends_early_rather_than_overflowing() -> None:
    """A string's length is compared with what is left before it is added to the position:
    with C positions (the compiled decoders), p + 2**63 - 1 would overflow."""
    read = Codecs().events._reader  # its first field is a string
    assert read is not None
    raw = (2**63 - 1) << 1  # zigzag
    varint = bytearray()
    while raw > 127:
        varint.append(raw & 127 | 128)
        raw >>= 7
    varint.append(raw)
    with pytest.raises(EOFError):
        read(bytes(varint) + b"abc", 0)
