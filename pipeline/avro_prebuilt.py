"""The Avro decoders and encoders compiled ahead of time, and how they are found.

`pipeline.avro_reader` and `pipeline.avro_writer` generate Python source from a schema
and run it with `exec`. `python -m pipeline.compiled_core` (make venv) also compiles the
source they generate for the registered schemas, with Cython and a few C types declared
(the message as `bytes`, the output as `bytearray`, positions as C integers), into
`pipeline._avro_readers` and `pipeline._avro_writers`: ~2x faster (docs/compiled-core.md).
Each function there is found by a digest of the exact source it was compiled from
(`source_key`), so one built from other schemas, or by another version of the
generators, is simply never used: the generated source is run instead. The rules'
evaluators (`pipeline.rules`, generated from the rules a deployment configures) are
compiled and found the same way, in `pipeline._rule_evaluators`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.core_loader import INTERPRETED_ENV, state_is_compiled

READERS_MODULE = "_avro_readers"
WRITERS_MODULE = "_avro_writers"


def source_key(source: str) -> str:
    """What a function compiled ahead of time is found by: a digest of its exact source."""
    return hashlib.sha256(source.encode()).hexdigest()[:20]


def prebuilt(module: str, reads_core_types: bool = False) -> Mapping[str, Callable[..., Any]]:
    """The functions `module` (READERS_MODULE, WRITERS_MODULE or rules.RULES_MODULE) holds,
    by their key: none without a build, or with `TOUCHFLOW_INTERPRETED=1` (which also runs
    the core uncompiled). `reads_core_types`: the module reads the core's objects as their
    C types (the rules' evaluators), so it is used only beside the compiled core it was
    built with: when the build is stale, the core runs from its `.py` files, whose
    objects have no such layout (pipeline.core_loader)."""
    if os.environ.get(INTERPRETED_ENV, "") not in ("", "0"):
        return {}
    if reads_core_types and not state_is_compiled():
        return {}
    try:
        built = importlib.import_module(f"pipeline.{module}")
    except (ImportError, AttributeError, TypeError, ValueError):
        # No build; or one whose C types do not match the core this process runs (a
        # module cimporting the core's classes checks them as it loads: a class missing,
        # not a type, or of another size): not used, its source runs instead.
        return {}
    # a build older than this module may name them otherwise: then it has none to give
    functions: Mapping[str, Callable[..., Any]] = getattr(built, "FUNCTIONS", {})
    return functions


def compiled_function(source: str, name: str, key: str, types: list[str]) -> str:
    """`source` (a generated `def {name}(...)`) as the build compiles it: renamed
    `{name}_{key}`, with Cython's C types `types` (e.g. `"b=bytes"`) declared."""
    head = source.split("\n", 1)[0]
    assert head.startswith(f"def {name}(") and head.endswith(":"), head
    decorator = f"@cython.locals({', '.join(types)})\n" if types else ""
    return decorator + f"def {name}_{key}(" + source[len(f"def {name}(") :]
