"""Which build of the domain core a process runs: compiled, or from its `.py` files.

The core modules in `MODULES` can be compiled by Cython into extensions beside their
`.py` files (`python -m pipeline.compiled_core`, run by `make venv`; docs/compiled-core.md).
An extension shadows its `.py` on import, so `use_source_where_needed` (called when the
package is imported) loads every core module from its `.py` instead when the sources of
any of them changed since the build (with a warning: a stale build never runs old rules),
or when `TOUCHFLOW_INTERPRETED=1` (the test suite runs the unit tests both ways). All of
them, not only the changed one: the extensions share C layouts (each cimports the ones
before it), and a compiled module refuses to import beside a changed one.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
# In the order they are built: each .pxd may cimport the ones before it.
MODULES = (
    "rfm", "lifecycle", "stages", "events", "state", "engine", "pii", "validation", "codec", "rows",
)  # fmt: skip
SIDECAR = PACKAGE_DIR / "_compiled_core.json"  # module -> digest of what it was built from
INTERPRETED_ENV = "TOUCHFLOW_INTERPRETED"


def source_digest(module: str, package_dir: Path = PACKAGE_DIR) -> str:
    """Digest of what a compiled module is built from: its `.py` and its `.pxd`."""
    h = hashlib.sha256()
    for suffix in (".py", ".pxd"):
        try:
            h.update((package_dir / f"{module}{suffix}").read_bytes())
        except FileNotFoundError:  # a deleted .pxd: no build matches it, so it runs from .py
            h.update(f"<no {module}{suffix}>".encode())
    return h.hexdigest()


def built_digests(sidecar: Path = SIDECAR) -> dict[str, str]:
    """module -> digest of the sources it was compiled from (empty when never built)."""
    try:
        recorded = json.loads(sidecar.read_text())
    except FileNotFoundError:
        return {}
    return {str(k): str(v) for k, v in recorded.items()}


def extension_path(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The compiled extension of `module` in the package, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = package_dir / f"{module}{suffix}"
        if path.exists():
            return path
    return None


def stale_modules(package_dir: Path = PACKAGE_DIR, sidecar: Path = SIDECAR) -> list[str]:
    """Modules with an extension that was not built from their current sources."""
    built = built_digests(sidecar)
    return [
        m
        for m in MODULES
        if extension_path(m, package_dir) is not None
        and built.get(m) != source_digest(m, package_dir)
    ]


def modules_from_source(
    environ: Mapping[str, str], package_dir: Path = PACKAGE_DIR, sidecar: Path = SIDECAR
) -> tuple[list[str], list[str]]:
    """(the modules to load from their `.py`, the stale ones that made it so): all or none.
    One stale module takes the whole build out: `engine` compiled against an older `state`
    fails its import ("pipeline.state.Policy size changed") rather than run."""
    if environ.get(INTERPRETED_ENV, "") not in ("", "0"):
        return list(MODULES), []
    stale = stale_modules(package_dir, sidecar)
    return (list(MODULES) if stale else []), stale


class SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the given `pipeline.<module>`s as their `.py`, ahead of their extension."""

    def __init__(self, modules: Sequence[str], package_dir: Path = PACKAGE_DIR) -> None:
        self.sources = {f"{__package__}.{m}": package_dir / f"{m}.py" for m in modules}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(fullname, source)


def use_source_where_needed() -> list[str]:
    """Put a `SourceFirst` finder for `modules_from_source` first on the import path (with a
    warning when the build is stale); return those modules. Called by pipeline/__init__.py."""
    modules, stale = modules_from_source(os.environ)
    if stale:
        warnings.warn(
            f"touchflow: the compiled core was built from older sources ({', '.join(stale)} "
            "changed since), so it runs from its .py files (slower). Rebuild: make venv, or "
            "python -m pipeline.compiled_core",
            RuntimeWarning,
            stacklevel=2,
        )
    if modules:
        sys.meta_path.insert(0, SourceFirst(modules))
    return modules


def is_compiled(module: ModuleType) -> bool:
    """Whether `module` was loaded from a compiled extension."""
    return str(getattr(module, "__file__", "")).endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES)
    )


def state_is_compiled() -> bool:
    """Whether `pipeline.state` runs compiled (and so the whole core: all or none). Read
    from the module being imported when asked during its import."""
    name = f"{__package__}.state"
    module = sys.modules.get(name) or importlib.import_module(name)
    return is_compiled(module)


def core_is_compiled() -> bool:
    """Whether every core module this process imported is the compiled one."""
    return all(is_compiled(importlib.import_module(f"{__package__}.{m}")) for m in MODULES)
