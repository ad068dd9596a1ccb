"""Avro binary decoders compiled from a record schema: straight-line Python, no I/O.

Why: every event a worker or the sink takes in is decoded first, and fastavro's
`schemaless_reader` walks the schema on every call behind a file-like object: ~4 µs for a
touchpoint, plus ~1 µs of our own around it (a `BytesIO`, the position checks). The same
schema turned once into Python source — one block per field, a one-byte number read
without a loop, strings sliced straight from the message — decodes the same record in
about half that (docs/benchmarks-history.md, "Stop 37"). The mirror of `pipeline.avro_writer`.

The output is fastavro's, value for value, as `WireCodec` calls it
(`return_record_name=True, return_record_name_override=True`: a record in a union with
other records comes as `(full name, dict)`, the only record of a union as the dict):
`tests/unit/test_avro_reader.py` compares the two on every schema version in the
registry, over a whole workload, and on truncated and corrupted messages.

Only for a message written with the schema it was compiled from (the reader's own): one
written with an older schema needs resolution, and `WireCodec` keeps fastavro for it.
Supported: null, int, long, string, records (and references to them by name), arrays of
items that take at least one byte, and unions of those — what touchflow's schemas use.
For any other schema `compile_reader` returns None and the caller keeps fastavro.

Bad input fails with the errors fastavro raises, which `WireCodec` turns into its
rejections: IndexError or EOFError where the message ends early, ValueError (or
UnicodeDecodeError) where it cannot be a record of the schema. It is stricter in three
places, each a message no Avro writer makes: a negative length, a number longer than 10
bytes or beyond 64 bits (fastavro wraps it round), and an array that claims more items
than there are bytes left (so a forged count cannot make it loop or allocate for long).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import fastavro

from pipeline.avro_prebuilt import READERS_MODULE, compiled_function, prebuilt, source_key

# read(message, position) -> (record, position after it)
Reader = Callable[[bytes, int], tuple[dict[str, Any], int]]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class Unsupported(Exception):
    pass


class _Source:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names = 0
        self.named: dict[str, Any] = {}  # records by full name, for later references
        self.open: set[str] = set()  # records being read: a reference back is recursion
        self.longs: set[str] = set()  # variables `long` reads a number into
        self.others: set[str] = set()  # variables given anything else (a union's None)

    def name(self, stem: str) -> str:
        self.names += 1
        return f"{stem}{self.names}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def long(self, indent: int, target: str) -> None:
        """Code reading one zigzag varint into `target` (a one-byte number without a loop).
        The bits gather in `w`: compiled (`compiled_source`), an unsigned 64-bit integer,
        and `target` a signed one."""
        self.longs.add(target)
        self.emit(indent, "x = b[p]")  # IndexError: the message ended
        self.emit(indent, "p += 1")
        self.emit(indent, f"if x < 128: {target} = (x >> 1) ^ -(x & 1)")
        self.emit(indent, "else:")
        self.emit(indent + 1, "w = x & 127")
        self.emit(indent + 1, "s = 7")
        self.emit(indent + 1, "while True:")
        self.emit(indent + 2, "x = b[p]")
        self.emit(indent + 2, "p += 1")
        self.emit(indent + 2, "w |= (x & 127) << s")
        self.emit(indent + 2, "if x < 128: break")
        self.emit(indent + 2, "s += 7")
        self.emit(indent + 2, "if s > 63: raise ValueError('a number longer than 10 bytes')")
        # the 10th byte holds bit 63 alone: more would not fit 64 bits (fastavro wraps it)
        self.emit(indent + 1, "if s == 63 and x > 1: raise ValueError('a number beyond 64 bits')")
        self.emit(indent + 1, f"{target} = (w >> 1) ^ -(w & 1)")

    def resolve(self, schema: Any) -> Any:
        """`schema` itself, or the record it names."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if schema not in self.named:
                raise Unsupported(f"unknown name {schema}")
            return self.named[schema]
        if isinstance(schema, dict) and isinstance(schema["type"], (dict, list)):
            return self.resolve(schema["type"])
        return schema

    def kind(self, schema: Any) -> str:
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return "union"
        return str(schema["type"] if isinstance(schema, dict) else schema)

    def min_bytes(self, schema: Any) -> int:
        """The fewest bytes a value of `schema` takes (0 for null or an empty record)."""
        schema = self.resolve(schema)
        kind = self.kind(schema)
        if kind == "record":
            if schema["name"] in self.open:
                return 1  # a recursive record: rejected by `value` anyway
            return sum(self.min_bytes(f["type"]) for f in schema["fields"])
        return 0 if kind == "null" else 1

    def value(self, indent: int, schema: Any, target: str) -> None:
        """Code reading a value of `schema` into the variable `target`."""
        if isinstance(schema, list):
            self.union(indent, schema, target)
            return
        kind = schema["type"] if isinstance(schema, dict) else schema
        if isinstance(kind, (dict, list)):
            self.value(indent, kind, target)
        elif kind == "null":
            self.others.add(target)
            self.emit(indent, f"{target} = None")
        elif kind in ("int", "long"):
            self.long(indent, target)
            return
        elif kind == "string":
            self.string(indent, target)
        elif kind in self.named:  # a record defined earlier in the schema, by name
            if kind in self.open:
                raise Unsupported(f"recursive {kind}")
            self.value(indent, self.named[kind], target)
        elif kind == "record":
            self.record(indent, schema, target)
        elif kind == "array":
            self.array(indent, schema["items"], target)
        else:
            raise Unsupported(str(kind))
        self.others.add(target)

    def string(self, indent: int, target: str) -> None:
        length, end = self.name("n"), self.name("e")
        self.emit(indent, "x = b[p]")
        self.emit(indent, "if not x & 129:")  # one byte, even: a length of 0-63, the usual
        self.emit(indent + 1, f"{end} = p + 1 + (x >> 1)")
        self.emit(indent + 1, f"if {end} > size: raise EOFError")
        self.emit(indent + 1, f"{target} = b[p + 1:{end}].decode()")
        self.emit(indent, "else:")
        self.long(indent + 1, length)
        self.emit(indent + 1, f"if {length} < 0: raise ValueError('a negative length')")
        # compared before it is added: built with C positions (`compiled_source`), p + a
        # forged 63-bit length would overflow rather than end early
        self.emit(indent + 1, f"if {length} > size - p: raise EOFError")
        self.emit(indent + 1, f"{end} = p + {length}")
        self.emit(indent + 1, f"{target} = b[p:{end}].decode()")
        self.emit(indent, f"p = {end}")

    def record(self, indent: int, schema: dict[str, Any], target: str) -> None:
        self.named[schema["name"]] = schema
        self.open.add(schema["name"])
        parts = []
        for f in schema["fields"]:
            v = self.name("v")
            self.value(indent, f["type"], v)
            parts.append(f"{f['name']!r}: {v}")
        self.emit(indent, f"{target} = {{{', '.join(parts)}}}")
        self.open.discard(schema["name"])

    def array(self, indent: int, items: Any, target: str) -> None:
        if self.min_bytes(items) < 1:
            raise Unsupported("array items that take no bytes")  # a count could not be bounded
        count, item = self.name("c"), self.name("i")
        self.emit(indent, f"{target} = []")
        self.emit(indent, "while True:")
        self.long(indent + 1, count)
        self.emit(indent + 1, f"if {count} == 0: break")
        self.emit(indent + 1, f"if {count} < 0:")  # a block that gives its size in bytes
        self.emit(indent + 2, f"{count} = -{count}")
        self.long(indent + 2, "_")
        self.emit(indent + 1, f"if {count} > size - p: raise EOFError")  # each item: >= 1 byte
        self.emit(indent + 1, f"for _ in range({count}):")
        self.value(indent + 2, items, item)
        self.emit(indent + 2, f"{target}.append({item})")

    def union(self, indent: int, branches: list[Any], target: str) -> None:
        records = [b for b in branches if self.kind(b) == "record"]
        index = self.name("u")
        self.long(indent, index)
        for i, branch in enumerate(branches):
            self.emit(indent, f"{'if' if i == 0 else 'elif'} {index} == {i}:")
            if self.kind(branch) == "record" and len(records) > 1:
                v = self.name("v")
                self.value(indent + 1, branch, v)
                full_name = self.resolve(branch)["name"]
                self.emit(indent + 1, f"{target} = ({full_name!r}, {v})")
            else:
                self.value(indent + 1, branch, target)
        self.emit(indent, "else:")
        self.emit(indent + 1, f"raise ValueError(f'union index {{{index}}} out of range')")


def reader_source(schema: Any) -> str | None:
    """The Python source of the decoder `compile_reader` makes for `schema` (a function
    `read`), or None when the schema uses a type this module does not compile. `schema`
    is parsed first (a no-op for a parsed one): names in unions must be the full names
    fastavro returns."""
    made = _generated(schema)
    return None if made is None else made[0]


def _generated(schema: Any) -> tuple[str, _Source] | None:
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    schema = fastavro.parse_schema(schema)
    source = _Source()
    try:
        source.value(1, schema, "r")
    except Unsupported:
        return None
    code = "def read(b, p):\n    size = len(b)\n" + "\n".join(source.lines) + "\n    return r, p\n"
    return code, source


# -- decoders compiled ahead of time (pipeline.avro_prebuilt) -----------------------------

_END = re.compile(r"\b(e\d+)\b")  # the end of a string: a position, like p


def compiled_source(source: str, key: str, longs: Iterable[str] = ()) -> str:
    """`source` (a `reader_source`) as the build compiles it: named `read_<key>`, with
    Cython's C types for the message (`bytes`), the positions, the byte just read, the
    bits of a number being read, and `longs`: the variables that only ever hold a number
    (64-bit; not a union's, which may hold None)."""
    ends = sorted(set(_END.findall(source)), key=lambda n: int(n[1:]))
    types = ["b=bytes", "p=cython.Py_ssize_t", "size=cython.Py_ssize_t", "x=cython.long"]
    types += ["w=cython.ulonglong", "s=cython.int"]
    types += [f"{name}=cython.Py_ssize_t" for name in ends]
    types += [f"{name}=cython.longlong" for name in sorted(longs, key=lambda n: (n[0], int(n[1:])))]
    return compiled_function(source, "read", key, types)


def readers_module_source(schemas: Iterable[Any]) -> str:
    """The module `pipeline._avro_readers` is compiled from: a decoder for each of
    `schemas` this module compiles, in FUNCTIONS by its `source_key`."""
    lines = ["import cython", "", "FUNCTIONS = {}", ""]
    seen: set[str] = set()
    for schema in schemas:
        made = _generated(schema)
        if made is None:
            continue
        source, names = made
        key = source_key(source)
        if key in seen:
            continue
        seen.add(key)
        longs = names.longs - names.others - {"_"}
        lines += ["", compiled_source(source, key, longs), f"FUNCTIONS[{key!r}] = read_{key}", ""]
    return "\n".join(lines)


def prebuilt_readers() -> Mapping[str, Reader]:
    """The decoders compiled ahead of time, by `source_key` (pipeline.avro_prebuilt)."""
    return prebuilt(READERS_MODULE)


def compile_reader(schema: Any) -> Reader | None:
    """A decoder `read(message, position)` returning the record whose Avro body starts at
    `position` and the position after it, or None when the schema uses a type this
    module does not compile. `schema` is parsed first (a no-op for a parsed one): names in
    unions must be the full names fastavro returns. The decoder compiled ahead of time
    for this source when there is one (it takes `bytes` only, as `WireCodec` passes)."""
    source = reader_source(schema)
    if source is None:
        return None
    built = prebuilt_readers().get(source_key(source))
    if built is not None:
        return built
    scope: dict[str, Any] = {}
    name = schema.get("name", "?")
    exec(compile(source, f"<avro reader {name}>", "exec"), scope)
    reader: Reader = scope["read"]
    return reader
