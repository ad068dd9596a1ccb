"""`frozen.fast_init` builds the same objects as the dataclass's own `__init__`."""

from __future__ import annotations

import dataclasses
import inspect
import sys
from dataclasses import FrozenInstanceError, dataclass, field, fields, replace
from typing import Any

import pytest

from pipeline import events, rfm
from pipeline import state as core
from pipeline.core_loader import is_compiled
from pipeline.frozen import fast_init

_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on classes made by a class statement

DECORATED = [
    core.Scores,
    core.Aggregates,
    core.Derived,
    core.PersonState,
    core.SegmentChange,
    rfm.RfmScores,
    rfm.Window,
    events.UserRef,
    events.Join,
    events.Leave,
    events.Purchase,
    events.Refund,
    events.Chat,
    events.Share,
    events.Identify,
    events.Touchpoint,
]


def twins() -> tuple[type, type]:
    """The same class twice: with the dataclass's `__init__`, and with fast_init's."""

    def make() -> type:
        @dataclass(frozen=True, slots=True)
        class Point:
            x: int
            y: int
            label: str | None = None
            tags: tuple[str, ...] = ()
            cached: int = field(default=-1, compare=False)

        return Point

    return make(), fast_init(make())


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((1, 2), {}),
        ((1,), {"y": 2, "tags": ("a",)}),
        ((), {"y": 5, "x": 4, "label": "重要", "cached": 7}),
        ((1, 2, "l", ("t",), 3), {}),
    ],
)
def test_an_instance_is_the_same_as_the_dataclass_builds(args: Any, kwargs: Any) -> None:
    plain, fast = twins()
    a, b = plain(*args, **kwargs), fast(*args, **kwargs)
    assert dataclasses.astuple(a) == dataclasses.astuple(b)
    assert hash(dataclasses.astuple(a)) == hash(dataclasses.astuple(b))
    assert b == fast(*args, **kwargs) and hash(b) == hash(fast(*args, **kwargs))
    assert replace(b, label="z").label == "z" and replace(b, label="z").x == b.x
    with pytest.raises(FrozenInstanceError):
        b.x = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    "args, kwargs",
    [((), {}), ((1,), {}), ((1, 2), {"z": 3}), ((1, 2, None, (), 0, 9), {}), ((1,), {"x": 2})],
)
def test_wrong_arguments_fail_as_the_dataclass_fails(args: Any, kwargs: Any) -> None:
    plain, fast = twins()
    with pytest.raises(TypeError):
        plain(*args, **kwargs)
    with pytest.raises(TypeError):
        fast(*args, **kwargs)


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_the_value_classes_take_their_fields_with_their_defaults(cls: type) -> None:
    if is_compiled(sys.modules[cls.__module__]):
        # An extension type with Cython's own __init__ (docs/compiled-core.md); the run of
        # the unit tests with TOUCHFLOW_INTERPRETED=1 checks fast_init's below.
        assert not cls.__flags__ & _HEAPTYPE
        first = fields(cls)[0].name
        with pytest.raises(AttributeError):  # frozen
            setattr(cls.__new__(cls), first, None)
        return
    assert "<fast_init" in cls.__init__.__code__.co_filename  # type: ignore[misc]
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields(cls)]
    for p, f in zip(params, fields(cls), strict=True):
        want = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default is want


def test_classes_it_cannot_treat_exactly_are_refused() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclass(slots=True)
    class NotFrozen:
        x: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        xs: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("x")

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordsOnly:
        x: int

    for cls in (NoSlots, NotFrozen, Factory, Checked, KeywordsOnly):
        with pytest.raises(TypeError):
            fast_init(cls)
