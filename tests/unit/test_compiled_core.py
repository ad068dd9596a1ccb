"""The compiled domain core (docs/compiled-core.md): it is what runs, it gives what the
`.py` modules give, and a build older than its sources is never what runs."""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.compiled_core import as_extension_types, declared_classes, untracked_classes
from pipeline.core_loader import (
    INTERPRETED_ENV,
    MODULES,
    PACKAGE_DIR,
    SourceFirst,
    core_is_compiled,
    is_compiled,
    modules_from_source,
    source_digest,
)

ROOT = Path(__file__).resolve().parents[2]


def _interpreted_here() -> bool:
    return os.environ.get(INTERPRETED_ENV, "") not in ("", "0")


def test_the_core_runs_compiled_unless_told_not_to() -> None:
    """`make venv` builds the extensions; the suite runs on them, and once more on the
    `.py` modules with TOUCHFLOW_INTERPRETED=1 (make test)."""
    compiled = {m: is_compiled(importlib.import_module(f"pipeline.{m}")) for m in MODULES}
    if _interpreted_here():
        assert not any(compiled.values()), compiled
    else:
        assert all(compiled.values()), f"not compiled (run make venv): {compiled}"


def digest_of_a_run() -> dict[str, object]:
    """Every change and every final state of a 3 000-event workload through the engine,
    with the referral credits fed back as the worker does, time run on past every due
    time, and a merge of some of the people: as one digest of their Avro encodings."""
    from bench.workload import build
    from pipeline import state as core
    from pipeline.codec import Codecs
    from pipeline.core_loader import core_is_compiled
    from pipeline.engine import Outcome, PartitionEngine
    from pipeline.settings import Settings

    policy = Settings().policy()
    codecs = Codecs()
    start = 1_750_000_000_000  # fixed: the run must not depend on today's date
    w = build(3_000, 1_500, b"test-compiled-core", start, 365, seed=3)
    engine = PartitionEngine(policy, {}, 0)
    h = hashlib.sha256()
    changes = 0

    def take(out: Outcome) -> None:
        nonlocal changes
        for c in out.changes:
            h.update(codecs.encode_change(c))
        changes += len(out.changes)
        h.update(f"{out.duplicate}{out.redelivered}{out.late}{out.written}".encode())

    for offset, (event, person_id) in enumerate(zip(w.events, w.person_ids, strict=True)):
        out = engine.on_event(event, person_id, offset)
        take(out)
        for brand, referrer, invitee, at in out.referrals:
            credit = Outcome()
            engine.on_referral(brand, referrer, invitee, at, credit)
            take(credit)
    for c in engine.advance_to(max(e.occurred_at for e in w.events) + 400 * 86_400_000):
        h.update(codecs.encode_change(c))
        changes += 1
    keys = sorted(engine.store)
    for a, b in zip(keys[:40:2], keys[1:40:2], strict=True):  # same brand: sorted keys
        brand, survivor = core.split_state_key(a.decode())
        _, absorbed = core.split_state_key(b.decode())
        merged, more = core.merge(
            engine.store[a], engine.store[b], brand, survivor, absorbed, policy
        )
        engine.store[a] = merged
        for c in more:
            h.update(codecs.encode_change(c))
        changes += len(more)
    for key in keys:
        s = engine.store[key]
        h.update(key + codecs.encode_state(s) + str(s.due).encode())
    return {"digest": h.hexdigest(), "changes": changes, "compiled": core_is_compiled()}


def test_compiled_and_interpreted_cores_give_the_same_changes_and_states() -> None:
    """The same run here and in a process on the other build: the same bytes."""
    here = digest_of_a_run()
    other_env = {**os.environ, INTERPRETED_ENV: "0" if _interpreted_here() else "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from tests.unit.test_compiled_core import digest_of_a_run; "
            "print(json.dumps(digest_of_a_run()))",
        ],
        cwd=ROOT,
        env=other_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert here["compiled"] != there["compiled"], (here, there)
    assert int(str(here["changes"])) > 1_000  # a run that moves segments, stages, tags
    assert there == {**here, "compiled": there["compiled"]}


def test_without_cython_installed_the_core_runs_from_source_and_gives_the_same() -> None:
    """A runtime without the build's tools (no Cython): `state` reads `cython.compiled`
    from its stand-in (pipeline/_no_cython.py) and runs as plain Python, to the same bytes."""
    here = digest_of_a_run()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['cython'] = None  # import cython: ImportError\n"
            "import json; from tests.unit.test_compiled_core import digest_of_a_run\n"
            "import pipeline.state; assert pipeline.state.cython.__name__ == "
            "'pipeline._no_cython'\n"
            "print(json.dumps(digest_of_a_run()))",
        ],
        cwd=ROOT,
        env={**os.environ, INTERPRETED_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert there["compiled"] is False
    assert there == {**here, "compiled": False}


def _fake_package(tmp: Path) -> Path:
    """A package directory with every core module's sources and a built extension."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for m in MODULES:
        (tmp / f"{m}.py").write_text(f"NAME = {m!r}\n")
        (tmp / f"{m}.pxd").write_text("")
        (tmp / f"{m}{suffix}").write_bytes(b"")
    digests = {m: source_digest(m, tmp) for m in MODULES}
    (tmp / "_compiled_core.json").write_text(json.dumps(digests))
    return tmp / "_compiled_core.json"


def test_a_module_changed_since_its_build_takes_the_whole_core_to_source(tmp_path: Path) -> None:
    sidecar = _fake_package(tmp_path)
    everything = list(MODULES)
    assert modules_from_source({}, tmp_path, sidecar) == ([], [])
    (tmp_path / "state.py").write_text("NAME = 'state, edited'\n")
    assert modules_from_source({}, tmp_path, sidecar) == (everything, ["state"])
    (tmp_path / "rfm.pxd").write_text("cdef class Window:\n    pass\n")
    assert modules_from_source({}, tmp_path, sidecar) == (everything, ["rfm", "state"])
    assert modules_from_source({INTERPRETED_ENV: "1"}, tmp_path, sidecar) == (everything, [])
    (tmp_path / "stages.pxd").unlink()  # no declarations: no build is of these sources
    assert modules_from_source({}, tmp_path, sidecar)[1] == ["rfm", "stages", "state"]
    sidecar.unlink()  # extensions with no record of their sources: all of them
    assert modules_from_source({}, tmp_path, sidecar) == (everything, everything)
    (tmp_path / f"engine{importlib.machinery.EXTENSION_SUFFIXES[0]}").unlink()
    assert "engine" not in modules_from_source({}, tmp_path, sidecar)[1]  # nothing shadows it


def test_a_real_build_with_one_source_edited_imports_and_runs_from_source(
    tmp_path: Path,
) -> None:
    """The real extensions, a copy of the package with `state.py` edited after the build:
    the modules compiled against the old `state` must not load beside the new one."""
    if not core_is_compiled():
        pytest.skip("needs the compiled core (make venv builds it)")
    package = tmp_path / "pipeline"
    shutil.copytree(PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PACKAGE_DIR.parent / "schemas", tmp_path / "schemas")  # the codecs'
    with (package / "state.py").open("a") as f:
        f.write("\n# edited after the build\n")
    probe = (
        "import warnings; warnings.simplefilter('error', RuntimeWarning)\n"
        "try:\n    import pipeline\nexcept RuntimeWarning as w:\n    print('warned:', w)\n"
        "warnings.resetwarnings(); warnings.simplefilter('ignore')\n"
        "import pipeline, pipeline.engine as e, pipeline.state as s\n"
        "from pipeline.core_loader import is_compiled\n"
        "print('engine compiled:', is_compiled(e), 'state compiled:', is_compiled(s))\n"
        "print('applied:', e.PartitionEngine(s.Policy(), {}).backlog)\n"
        # the built evaluators read the compiled core's objects as C types: not these
        "from pipeline.rules import compile_rules\n"
        "print('evaluator:', type(compile_rules(None).default.compiled).__name__)\n"
        "print('tags:', s.derive(s.Aggregates(lifetime_orders=2), 'b', 0, s.Policy()).tags)\n"
        "from pipeline.codec import Codecs\n"
        "c = Codecs(); st = s.PersonState()\n"
        "print('state:', c.decode_state(c.encode_state(st)) == st, c.state.writers_prebuilt)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path), INTERPRETED_ENV: ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warned: touchflow: the compiled core was built from older sources (state" in proc.stdout
    assert "engine compiled: False state compiled: False" in proc.stdout
    assert "applied: 0" in proc.stdout
    assert "evaluator: function" in proc.stdout
    assert "tags: ('repeat_buyer',)" in proc.stdout
    assert "state: True False" in proc.stdout  # encoded, by the source's encoder


def test_the_source_finder_finds_only_the_modules_it_is_given(tmp_path: Path) -> None:
    _fake_package(tmp_path)
    finder = SourceFirst(["state"], tmp_path)
    spec = finder.find_spec("pipeline.state", None)
    assert spec is not None and spec.origin == str(tmp_path / "state.py")
    assert finder.find_spec("pipeline.rfm", None) is None
    assert finder.find_spec("state", None) is None


CLASSES = """
@fast_init
@dataclass(frozen=True, slots=True)
class Value:
    x: int = 0


@dataclass(frozen=True, slots=True)
class Policyish:
    y: int = 1


@dataclass
class Engine:
    z: list[int]


class Plain:
    __slots__ = ("a",)


@dataclass(frozen=True, slots=True)
class Undeclared:
    w: int = 2
"""


def test_the_build_takes_slots_and_fast_init_off_the_declared_classes_only() -> None:
    out = as_extension_types(CLASSES, ["Value", "Policyish", "Engine", "Plain"])
    assert "@dataclass(frozen=True)\nclass Value:" in out
    assert "@fast_init" not in out
    assert "@dataclass(frozen=True)\nclass Policyish:" in out
    assert "@dataclass\nclass Engine:" in out
    assert 'class Plain:\n    __slots__ = ("a",)' in out
    assert "@dataclass(frozen=True, slots=True)\nclass Undeclared:" in out  # not in the .pxd


def test_the_build_makes_the_untracked_classes_extension_types_without_gc_support() -> None:
    source = "from __future__ import annotations\n\nfrom dataclasses import dataclass\n" + CLASSES
    out = as_extension_types(source, ["Value", "Policyish", "Engine"], ["Value"])
    # Cython takes the directive in this order only (cclass first, on a known extension type)
    assert "@cython.no_gc\n@cython.cclass\n@dataclass(frozen=True)\nclass Value:" in out
    assert "\n@dataclass(frozen=True)\nclass Policyish:" in out
    assert "no_gc\n@cython.cclass\n@dataclass(frozen=True)\nclass Policyish" not in out
    assert out.startswith("from __future__ import annotations\nimport cython\n")
    already = as_extension_types("import cython\n" + CLASSES, ["Value"], ["Value"])
    assert already.count("import cython") == 1
    with pytest.raises(ValueError, match="Plain"):
        as_extension_types(CLASSES, ["Plain"], ["Plain"])


def test_a_pxd_marks_its_untracked_classes_by_the_directive_above_them() -> None:
    pxd = "import cython\n\n@cython.no_gc\ncdef class A:\n    pass\n\ncdef class B:\n    pass\n"
    assert declared_classes(pxd) == ["A", "B"]
    assert untracked_classes(pxd) == ["A"]


def _untracked_by_module() -> dict[str, list[str]]:
    return {m: untracked_classes((ROOT / "pipeline" / f"{m}.pxd").read_text()) for m in MODULES}


def test_the_core_values_are_built_without_gc_support() -> None:
    import gc

    if not core_is_compiled():
        pytest.skip("needs the compiled core (make venv builds it)")
    untracked = _untracked_by_module()
    assert "PersonState" in untracked["state"] and "Touchpoint" in untracked["events"]
    for m, names in untracked.items():
        module = importlib.import_module(f"pipeline.{m}")
        for name in names:
            has_gc = bool(getattr(module, name).__flags__ & (1 << 14))  # Py_TPFLAGS_HAVE_GC
            assert not has_gc, f"{m}.{name}"
    from pipeline import state

    # one with object fields, not marked (its rules cache may hold anything): tracked
    assert not gc.is_tracked(state.Aggregates()) and gc.is_tracked(state.Policy())


def test_the_untracked_classes_hold_values_only_so_no_cycle_can_pass_through_them() -> None:
    """What no_gc asks of a class (compiled_core.untracked_classes), checked on what a
    real run builds: everything reachable from its states, changes and events is a number,
    a string, None, a tuple, or another untracked object. A list, dict or set field (or
    any object the collector tracks) would let a cycle through, one never freed."""
    import dataclasses

    from bench.workload import build
    from pipeline.engine import PartitionEngine
    from pipeline.settings import Settings

    untracked = {name for names in _untracked_by_module().values() for name in names}
    w = build(1_000, 300, b"test-untracked-classes", 1_750_000_000_000, 365, seed=5)
    engine = PartitionEngine(Settings().policy(), {}, 0)
    roots: list[object] = list(w.events)
    for event, person_id in zip(w.events, w.person_ids, strict=True):
        roots += engine.on_event(event, person_id).changes
    roots += engine.store.values()
    seen: set[str] = set()
    stack = roots
    while stack:
        obj = stack.pop()
        name = type(obj).__name__
        if isinstance(obj, (int, str, float)) or obj is None:
            continue
        if isinstance(obj, tuple):
            stack.extend(obj)
            continue
        assert name in untracked, f"an untracked class holds a {name}: {obj!r}"
        seen.add(name)
        stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
    assert {"PersonState", "Aggregates", "Derived", "SegmentChange", "Touchpoint"} <= seen


def test_the_build_refuses_a_declared_class_it_cannot_find() -> None:
    with pytest.raises(ValueError, match="Missing"):
        as_extension_types(CLASSES, ["Missing"])


@pytest.mark.parametrize("module", MODULES)
def test_every_class_a_pxd_declares_is_in_its_module(module: str) -> None:
    pxd = (ROOT / "pipeline" / f"{module}.pxd").read_text()
    source = (ROOT / "pipeline" / f"{module}.py").read_text()
    classes = declared_classes(pxd)
    assert classes or "cpdef " in pxd, f"{module}.pxd declares nothing"  # pii: functions only
    as_extension_types(source, classes)  # raises if one is missing


def test_remove_takes_away_every_extension_the_build_makes(tmp_path: Path) -> None:
    from pipeline.compiled_core import PREBUILT_MODULES, remove

    sidecar = _fake_package(tmp_path)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for m in PREBUILT_MODULES:
        (tmp_path / f"{m}{suffix}").write_bytes(b"")
    remove(tmp_path, sidecar)
    assert not list(tmp_path.glob(f"*{suffix}")) and not sidecar.exists()
    assert all((tmp_path / f"{m}.py").exists() for m in MODULES)  # the sources stay
