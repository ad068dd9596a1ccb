"""Builds the domain core's compiled extensions: `python -m pipeline.compiled_core`.

The core's cost is in building and reading Python objects (docs/benchmarks.md, "Why").
Each module in `core_loader.MODULES` has a `.pxd` beside it that declares its value
classes (and the engine) as extension types with C fields, and its hot functions with
those types; Cython compiles the unchanged `.py` against it ("pure Python mode"). The
rules stay in one place: the `.py` is both the uncompiled fallback and the compiled
module's only source (docs/compiled-core.md). `make venv` runs this; `--remove` takes the
extensions away. `pipeline.core_loader` decides at import which build runs.

The one difference between what runs interpreted and what Cython compiles: Cython's
dataclass refuses `slots=True` (an extension type has C fields, not slots) and any other
decorator on an extension type (`frozen.fast_init`), so the build compiles a copy of
each module with those taken off the classes its `.pxd` declares (`as_extension_types`).

It also compiles `pipeline._avro_readers` and `pipeline._avro_writers`: the Avro decoders
and encoders the codecs use, as `pipeline.avro_reader` and `avro_writer` generate them (no
`.py` of them is kept; each is found by a digest of its source, so a stale one is never
used: `pipeline.avro_prebuilt`), and `pipeline._rule_evaluators`: the evaluators of the
built-in rules and of the rules this environment's settings name (`pipeline.rules`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.avro_prebuilt import READERS_MODULE, WRITERS_MODULE
from pipeline.avro_reader import readers_module_source
from pipeline.avro_writer import ObjectLayout, writers_module_source
from pipeline.core_loader import MODULES, PACKAGE_DIR, SIDECAR, extension_path, source_digest
from pipeline.rules import RULES_MODULE, evaluators_module_source

_DIRECTIVES = {
    "language_level": 3,
    # Annotations are for mypy: Cython would take `x: str` as "exactly str" and refuse
    # a StrEnum member (seen on the prototype). Every C type is in a .pxd.
    "annotation_typing": False,
}


# The modules of functions found by a digest of their source (avro_prebuilt): the Avro
# decoders and encoders of the codecs, and the rules' evaluators.
PREBUILT_MODULES = (READERS_MODULE, WRITERS_MODULE, RULES_MODULE)


def registered_schemas() -> list[Any]:
    """The schemas the codecs read their own messages with: each subject's latest, as
    `codec.WireCodec` takes them from the registry in schemas/."""
    from pipeline.codec import CHANGES_SUBJECT, EVENTS_SUBJECT, STATE_SUBJECT, FileSchemaRegistry

    registry = FileSchemaRegistry()
    return [registry.latest(s)[1] for s in (EVENTS_SUBJECT, CHANGES_SUBJECT, STATE_SUBJECT)]


def registered_writers() -> list[tuple[Any, ObjectLayout | None]]:
    """What the codecs write with: each of those schemas, and the layouts of the two
    whose records are written from their objects (changes and states)."""
    from pipeline.codec import CHANGE_LAYOUT, STATE_LAYOUT

    events, changes, state = registered_schemas()
    return [
        (events, None),
        (changes, None),
        (state, None),
        (changes, CHANGE_LAYOUT),
        (state, STATE_LAYOUT),
    ]


def registered_rule_sources() -> list[Any]:
    """The evaluators of the built-in rules, and of the rules this environment's settings
    name (TOUCHFLOW_RULES or TOUCHFLOW_RULES_FILE, read as a worker reads them): build
    where the deployment's settings are, and its own rules run compiled too."""
    from pipeline.rules import compile_rules
    from pipeline.settings import Settings

    books = [compile_rules(None)]
    try:
        books.append(Settings().policy().rules)
    except (ValueError, OSError) as exc:  # settings a worker would refuse: not the build's
        print(f"touchflow: the built-in rules only ({exc})", file=sys.stderr)
    return [b.source for book in books for b in (book.default, *book.brands.values()) if b.source]


# -- the build ------------------------------------------------------------------------------

_DECLARED = re.compile(r"^cdef class (\w+)", re.MULTILINE)
_UNTRACKED = re.compile(r"^@cython\.no_gc\ncdef class (\w+)", re.MULTILINE)


def declared_classes(pxd: str) -> list[str]:
    return _DECLARED.findall(pxd)


def untracked_classes(pxd: str) -> list[str]:
    """The classes a `.pxd` marks `@cython.no_gc`: values whose fields hold only numbers,
    strings, tuples of them and other such values, so no reference cycle can pass through
    one. Built so, an object skips the cycle collector's list on every allocation and
    free, and never triggers or takes part in a collection (~4 % of the core's work,
    docs/compiled-core.md). Cython reads this directive only in the `.py`, on a class it
    knows to be an extension type there: the build puts it there (`as_extension_types`)."""
    return _UNTRACKED.findall(pxd)


_CYTHON_IMPORT = re.compile(r"^(?:import cython|    import cython)$", re.MULTILINE)
_FUTURE_IMPORT = re.compile(r"^from __future__ import annotations\n", re.MULTILINE)


def as_extension_types(source: str, classes: Sequence[str], untracked: Sequence[str] = ()) -> str:
    """`source` with `@fast_init` and `slots=True` taken off each of `classes` that is a
    dataclass (decorated `@dataclass(...)` right above `class Name`), and those of them
    in `untracked` made extension types without the cycle collector's support
    (`untracked_classes`)."""
    if untracked and not _CYTHON_IMPORT.search(source):
        future = _FUTURE_IMPORT.search(source)
        at = future.end() if future else 0
        source = f"{source[:at]}import cython\n{source[at:]}"
    for name in classes:
        pattern = re.compile(
            rf"^(?:@fast_init\n)?@dataclass(?:\((?P<args>[^)]*)\))?\n(?P<cls>class {name}\b)",
            re.MULTILINE,
        )
        found = pattern.findall(source)
        if not found and len(re.findall(rf"^class {name}\b", source, re.MULTILINE)) == 1:
            if name in untracked:
                raise ValueError(f"{name}: no_gc is put on the declared dataclasses only")
            continue  # a plain class (no dataclass decorator): compiled as it is
        if len(found) != 1:
            raise ValueError(f"{name}: expected one class, found {len(found)}")

        def strip(match: re.Match[str], untracked_here: bool = name in untracked) -> str:
            args = [a.strip() for a in (match["args"] or "").split(",") if a.strip()]
            kept = [a for a in args if a != "slots=True"]
            decorator = f"@dataclass({', '.join(kept)})" if kept else "@dataclass"
            if untracked_here:  # in this order, or Cython refuses the directive
                decorator = f"@cython.no_gc\n@cython.cclass\n{decorator}"
            return f"{decorator}\n{match['cls']}"

        source = pattern.sub(strip, source)
    return source


def build(package_dir: Path = PACKAGE_DIR, sidecar: Path = SIDECAR) -> list[Path]:
    """Compile `MODULES` into extensions beside their `.py` and record their digests."""
    from Cython.Build import cythonize  # build-time only (the dev extra, the image build)
    from setuptools import Extension
    from setuptools.dist import Distribution

    with tempfile.TemporaryDirectory(prefix="touchflow-core-") as tmp:
        staged = Path(tmp) / "src" / "pipeline"
        staged.mkdir(parents=True)
        (staged / "__init__.py").write_text("")
        digests: dict[str, str] = {}
        for m in MODULES:
            pxd = (package_dir / f"{m}.pxd").read_text()
            source = (package_dir / f"{m}.py").read_text()
            (staged / f"{m}.pxd").write_text(pxd)
            extension_types = as_extension_types(
                source, declared_classes(pxd), untracked_classes(pxd)
            )
            (staged / f"{m}.py").write_text(extension_types)
            digests[m] = source_digest(m, package_dir)
        (staged / f"{READERS_MODULE}.py").write_text(readers_module_source(registered_schemas()))
        (staged / f"{WRITERS_MODULE}.py").write_text(writers_module_source(registered_writers()))
        rule_sources = registered_rule_sources()
        (staged / f"{RULES_MODULE}.py").write_text(evaluators_module_source(rule_sources))
        extensions = [
            Extension(f"pipeline.{m}", [str(staged / f"{m}.py")])
            for m in (*MODULES, *PREBUILT_MODULES)
        ]
        said = io.StringIO()  # Cython's warnings on its own generated code: shown on failure
        try:
            with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
                modules = cythonize(  # type: ignore[no-untyped-call]
                    extensions,
                    compiler_directives=_DIRECTIVES,
                    include_path=[str(staged.parent)],
                    build_dir=str(Path(tmp) / "c"),
                    quiet=True,
                )
        except Exception:
            sys.stderr.write(said.getvalue())
            raise
        dist = Distribution({"name": "touchflow-core", "ext_modules": modules})
        cmd = dist.get_command_obj("build_ext")
        cmd.build_lib = str(Path(tmp) / "lib")
        cmd.build_temp = str(Path(tmp) / "tmp")
        cmd.parallel = os.cpu_count() or 1
        dist.run_command("build_ext")
        built = []
        for m in (*MODULES, *PREBUILT_MODULES):
            old = extension_path(m, package_dir)
            if old is not None:
                old.unlink()
            (so,) = (Path(tmp) / "lib" / "pipeline").glob(f"{m}.*")
            target = package_dir / so.name
            shutil.copyfile(so, target)
            built.append(target)
    sidecar.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    return built


def remove(package_dir: Path = PACKAGE_DIR, sidecar: Path = SIDECAR) -> None:
    """Take the compiled extensions away (back to the `.py` modules)."""
    for m in (*MODULES, *PREBUILT_MODULES):
        path = extension_path(m, package_dir)
        if path is not None:
            path.unlink()
    sidecar.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--remove"]:
        remove()
        print("touchflow: compiled core removed; the core runs from its .py modules")
        return 0
    if args:
        print("usage: python -m pipeline.compiled_core [--remove]", file=sys.stderr)
        return 2
    for path in build():
        print(f"touchflow: compiled {path.relative_to(PACKAGE_DIR.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
