"""Avro binary encoders compiled from a record schema: straight-line Python, no I/O.

Why: fastavro's `schemaless_writer` walks the schema on every call. For the person state
(48 fields, five arrays) that is ~30 µs for a typical customer and ~170 µs for a heavy
one; the worker encodes every state it writes, and after one hop (docs/architecture.md)
that was 14 % of a busy worker's main thread (docs/benchmarks.md). The same schema
turned once into Python source — one line per field, small numbers written as one byte
without a call — encodes the same bytes ~1.35x faster for a typical state, ~1.2x for a
heavy one.

`compile_object_writer` goes one step further for the person state: it reads the fields
straight from the objects (`s.agg.first_seen`, tuples of buckets) through a layout, so the
per-write dict of 35 fields and the dicts of each bucket and order are never built; and
varints of two bytes or more (every timestamp) are written inline, not by a call that
built a temporary `bytes`. Together ~1.5x on the states of a workload (paired runs,
docs/benchmarks-history.md, "What changed in 93416a6"). Arrays a layout names as `memoized`
(tuples of immutable items, e.g. a customer's purchase buckets) are encoded once per
tuple object: most events leave them alone, so the next batch writes the same tuple
again, and its bytes are copied instead of re-encoded item by item (a heavy customer's
year of buckets is ~1 100 varints).

The output is byte-for-byte fastavro's (`tests/unit/test_avro_writer.py` compares them on
the states and changes of a whole workload). Supported: null, boolean, int, long,
string, bytes, records (and references to them by name), arrays, and unions of null
with one other type — what the hot-path schemas use. For any other schema
`compile_writer` returns None and the caller keeps fastavro. Values are not validated
beyond what Python does anyway (a wrong type fails with TypeError or AttributeError);
records come from our own code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.avro_prebuilt import WRITERS_MODULE, compiled_function, prebuilt, source_key

Writer = Callable[[dict[str, Any], bytearray], None]
ObjectWriter = Callable[[Any, bytearray], None]


@dataclass(frozen=True)
class ObjectLayout:
    """Where each field of a record schema is on an object, for `compile_object_writer`.

    `fields`: per top-level field, a Python expression over the object `s` (e.g.
    `"s.agg.first_seen"`). `items`: per array field whose items are records, the item's
    field names in the order of the tuple each item is (e.g. `("day", "orders",
    "amount_minor")` for buckets held as `(day, orders, amount)`). `prelude`: statements
    run first, naming what several expressions share (e.g. `"a = s.agg"`).
    `memoized`: array fields held as tuples of immutable values (ints, strings, tuples of
    them), whose encoded bytes the writer remembers per tuple object (`ArrayMemo`).
    `objects`: record fields held as an object whose attributes are named as the
    record's fields (e.g. a change's `scores_before`, a `Scores`).
    `classes`: the classes of `pipeline.state` the object `s`, the prelude's names and the
    `objects` fields hold (e.g. `{"s": "SegmentChange", "scores_before": "Scores"}`):
    the build declares them, so each attribute is a C field read (`writers_module_source`).
    """

    fields: Mapping[str, str]
    items: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prelude: tuple[str, ...] = ()
    memoized: frozenset[str] = frozenset()
    objects: frozenset[str] = frozenset()
    classes: Mapping[str, str] = field(default_factory=dict)


class ArrayMemo:
    """The encoded bytes of recently written arrays, by the identity of their tuple.

    An entry holds its tuple, so the tuple's id cannot be reused while the entry lives:
    a hit is the same immutable object, whose bytes cannot have changed. Bounded two
    ways: arrays shorter than `min_items` are cheap to encode and never kept, and past
    `max_entries` the oldest entry goes (the tuples it held may outlive their states
    until then: at most `max_entries` arrays)."""

    __slots__ = ("entries", "max_entries", "min_items")

    def __init__(self, max_entries: int = 4096, min_items: int = 4) -> None:
        self.entries: dict[int, tuple[tuple[Any, ...], bytes]] = {}
        self.max_entries = max_entries
        self.min_items = min_items

    def keep(self, array: tuple[Any, ...], encoded: bytes) -> None:
        if len(array) < self.min_items:
            return
        entries = self.entries
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # the oldest: dicts keep insertion order
        entries[id(array)] = (array, encoded)


class Unsupported(Exception):
    pass


class _Source:
    def __init__(self, layout: ObjectLayout | None = None) -> None:
        self.layout = layout  # None: the record is a dict
        self.item_fields: dict[str, tuple[str, ...]] = {}  # tuple items: their field names
        self.lines: list[str] = []
        self.names = 0
        self.named: dict[str, Any] = {}  # records by full name, for later references
        self.open: set[str] = set()  # records being written: a reference back is recursion
        self.memoized: set[str] = set()  # variables holding an array to memoize
        self.objects: set[str] = set()  # variables holding a record as an object
        self.classes: dict[str, str] = {}  # variables holding an object of a core class
        self.scope: dict[str, Any] = {}  # names the generated code reads (memos)
        self.longs: list[str] = []  # variables holding a `long` field's value, never None
        self.zigzags: list[str] = []  # variables holding a zigzag-encoded long

    def name(self, stem: str) -> str:
        self.names += 1
        return f"{stem}{self.names}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def long(self, indent: int, expr: str) -> None:
        z = self.name("z")
        self.zigzags.append(z)
        self.emit(indent, f"{z} = ({expr} << 1) ^ ({expr} >> 63)")
        self.emit(indent, f"if {z} < 128: out.append({z})")
        self.emit(indent, "else:")  # inline: no call, no temporary bytes (~2x a call)
        self.emit(indent + 1, f"while {z} >= 128:")
        self.emit(indent + 2, f"out.append(({z} & 127) | 128)")
        self.emit(indent + 2, f"{z} >>= 7")
        self.emit(indent + 1, f"out.append({z})")

    def value(self, indent: int, schema: Any, expr: str) -> None:
        """Code writing `expr` (a simple name) as `schema`."""
        if isinstance(schema, list):
            self.union(indent, schema, expr)
            return
        kind = schema["type"] if isinstance(schema, dict) else schema
        if isinstance(kind, (dict, list)):
            self.value(indent, kind, expr)
        elif kind == "null":
            pass
        elif kind == "boolean":
            self.emit(indent, f"out.append(1 if {expr} else 0)")
        elif kind in ("int", "long"):
            self.long(indent, expr)
        elif kind in ("string", "bytes"):
            data = self.name("b")
            self.emit(
                indent, f"{data} = {expr}.encode()" if kind == "string" else f"{data} = {expr}"
            )
            self.long(indent, f"len({data})")
            self.emit(indent, f"out += {data}")
        elif kind in self.named:  # a record defined earlier in the schema, by name
            if kind in self.open:
                raise Unsupported(f"recursive {kind}")
            self.value(indent, self.named[kind], expr)
        elif kind == "record":
            self.named[schema["name"]] = schema
            self.open.add(schema["name"])
            for f in schema["fields"]:
                v = self.name("v")
                self.emit(indent, f"{v} = {self.field_of(expr, f)}")
                if _plain_long(f["type"]):
                    self.longs.append(v)
                if self.layout is not None and expr == "r":
                    if f["name"] in self.layout.items:
                        self.item_fields[v] = self.layout.items[f["name"]]
                    if f["name"] in self.layout.memoized:
                        self.memoized.add(v)
                    if f["name"] in self.layout.objects:
                        self.objects.add(v)
                        if f["name"] in self.layout.classes:
                            self.classes[v] = self.layout.classes[f["name"]]
                self.value(indent, f["type"], v)
            self.open.discard(schema["name"])
        elif kind == "array" and expr in self.memoized:
            self.memoized_array(indent, schema, expr)
        elif kind == "array":
            item = self.name("i")
            if expr in self.item_fields:
                self.item_fields[item] = self.item_fields[expr]
            self.emit(indent, f"if {expr}:")
            self.long(indent + 1, f"len({expr})")
            self.emit(indent + 1, f"for {item} in {expr}:")
            self.block(indent + 2, schema["items"], item)
            self.emit(indent, "out.append(0)")  # the end of the (single) block
        else:
            raise Unsupported(str(kind))

    def memoized_array(self, indent: int, schema: Any, expr: str) -> None:
        """The array `expr` copied from its `ArrayMemo` entry, or encoded and kept."""
        memo, hit, start = self.name("memo"), self.name("hit"), self.name("start")
        self.scope[memo] = ArrayMemo()
        self.memoized.discard(expr)  # the array itself, below, is written item by item
        self.emit(indent, f"{hit} = {memo}.entries.get(id({expr}))")
        self.emit(indent, f"if {hit} is not None and {hit}[0] is {expr}: out += {hit}[1]")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{start} = len(out)")
        self.value(indent + 1, schema, expr)
        # the copy only for an array the memo keeps: most are short (~1.03-1.28x per state
        # on a 40k-event mix, where they are)
        self.emit(indent + 1, f"if len({expr}) >= {memo}.min_items:")
        self.emit(indent + 2, f"{memo}.keep({expr}, bytes(out[{start}:]))")

    def field_of(self, expr: str, f: dict[str, Any]) -> str:
        """The expression reading field `f` of the record `expr`."""
        name = f["name"]
        if self.layout is None:
            if "default" in f:  # as fastavro: a missing field takes its default
                return f"{expr}.get({name!r}, {f['default']!r})"
            return f"{expr}[{name!r}]"
        if expr == "r":  # the top-level record: the object
            if name not in self.layout.fields:
                raise Unsupported(f"no layout for field {name}")
            return self.layout.fields[name]
        if expr in self.objects:
            return f"{expr}.{name}"
        names = self.item_fields.get(expr)
        if names is None or name not in names:
            raise Unsupported(f"no layout for {name} of an item")
        return f"{expr}[{names.index(name)}]"

    def union(self, indent: int, branches: list[Any], expr: str) -> None:
        kinds = [b["type"] if isinstance(b, dict) else b for b in branches]
        if len(branches) != 2 or "null" not in kinds:
            raise Unsupported(f"union {kinds}")
        null = kinds.index("null")
        other = 1 - null
        self.emit(indent, f"if {expr} is None: out.append({null * 2})")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"out.append({other * 2})")
        self.block(indent + 1, branches[other], expr)

    def block(self, indent: int, schema: Any, expr: str) -> None:
        """`value` as the body of a statement: `pass` when it writes nothing (null)."""
        before = len(self.lines)
        self.value(indent, schema, expr)
        if len(self.lines) == before:
            self.emit(indent, "pass")


def _plain_long(schema: Any) -> bool:
    """A field of type int or long (a union with null is not: it may hold None)."""
    kind = schema.get("type") if isinstance(schema, dict) else schema
    return kind in ("int", "long")


def compile_writer(schema: dict[str, Any]) -> Writer | None:
    """An encoder `write(record, out)` appending `record`'s Avro body to `out`, or None
    when the schema uses a type this module does not compile."""
    return _compile(schema, None)


def compile_object_writer(schema: dict[str, Any], layout: ObjectLayout) -> ObjectWriter | None:
    """An encoder `write(obj, out)` appending the Avro body of the record that `layout`
    reads off `obj`, or None when the schema uses a type this module does not compile or
    has a field the layout does not place (e.g. a newer schema: the caller falls back)."""
    return _compile(schema, layout)


def writer_source(
    schema: dict[str, Any], layout: ObjectLayout | None = None
) -> tuple[str, dict[str, Any]] | None:
    """The Python source of the encoder `compile_writer` (no layout) or
    `compile_object_writer` makes (a function `write`), and the names it reads besides
    its arguments (its `ArrayMemo`s); None when it would return None."""
    made = _generated(schema, layout)
    return None if made is None else (made[0], dict(made[1].scope))


def _generated(schema: dict[str, Any], layout: ObjectLayout | None) -> tuple[str, _Source] | None:
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    source = _Source(layout)
    try:
        source.value(1, schema, "r")
        if source.memoized:  # a layout error: say so by falling back, tests check for it
            raise Unsupported("memoized fields that are not arrays")
    except Unsupported:
        return None
    prologue = []
    if layout is not None:  # layouts speak of `s`
        prologue = ["    s = r", *(f"    {line}" for line in layout.prelude)]
    code = "def write(r, out):\n" + "\n".join(prologue + source.lines or ["    pass"]) + "\n"
    return code, source


def _compile(schema: dict[str, Any], layout: ObjectLayout | None) -> ObjectWriter | None:
    made = writer_source(schema, layout)
    if made is None:
        return None
    code, scope = made
    built = prebuilt_writers().get(source_key(code))
    if built is not None:
        return built
    exec(compile(code, f"<avro writer {schema.get('name', '?')}>", "exec"), scope)
    writer: ObjectWriter = scope["write"]
    return writer


# -- encoders compiled ahead of time (pipeline.avro_prebuilt) -----------------------------

_MEMO = re.compile(r"\bmemo(\d+)\b")  # an ArrayMemo the source reads by name


def writers_module_source(
    writers: Iterable[tuple[dict[str, Any], ObjectLayout | None]], typed: bool = True
) -> str:
    """The module `pipeline._avro_writers` is compiled from: the encoder of each (schema,
    layout) of `writers` that this module compiles, with `out` declared a `bytearray`, in
    FUNCTIONS by its `source_key`; each `ArrayMemo` it reads becomes a module global of
    its own (shared by every codec of the process that uses the encoder: an entry is an
    immutable tuple and its bytes, the same whoever wrote it). An object's encoder has
    its object and the names `layout.classes` gives declared as those core classes, so
    the module is used only beside the compiled core it was built with (`prebuilt`).
    Without `typed`, none are, and the module also runs as plain Python (tests)."""
    writers = list(writers)
    core = sorted({c for _, layout in writers if layout for c in layout.classes.values()})
    lines = ["import cython", ""]
    if core and typed:
        lines += [f"from cython.cimports.pipeline.state import {', '.join(core)}"]
    lines += ["from pipeline.avro_writer import ArrayMemo", "", "FUNCTIONS = {}", ""]
    seen: set[str] = set()
    for schema, layout in writers:
        made = _generated(schema, layout)
        if made is None:
            continue
        code, source = made
        scope = source.scope
        key = source_key(code)
        if key in seen:
            continue
        seen.add(key)
        assert all(_MEMO.fullmatch(name) and isinstance(v, ArrayMemo) for name, v in scope.items())
        code = _MEMO.sub(rf"\g<0>_{key}", code)
        lines += [f"{name}_{key} = ArrayMemo()" for name in scope]
        types = ["out=bytearray"]
        if layout is not None:  # an object's fields, from touchflow's own values: C integers
            types += [f"{v}=cython.longlong" for v in source.longs]
            types += [f"{z}=cython.ulonglong" for z in source.zigzags]
            named = {n: c for n, c in layout.classes.items() if n not in layout.objects}
            types += [f"{n}={c}" for n, c in {**named, **source.classes}.items() if typed]
        lines += ["", compiled_function(code, "write", key, types)]
        lines += [f"FUNCTIONS[{key!r}] = write_{key}", ""]
    return "\n".join(lines)


def prebuilt_writers() -> Mapping[str, ObjectWriter]:
    """The encoders compiled ahead of time, by `source_key` (pipeline.avro_prebuilt)."""
    return prebuilt(WRITERS_MODULE, reads_core_types=True)
