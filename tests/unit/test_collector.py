"""The worker's garbage-collector settings (agents.collector), on this process's own
collector: each test puts back the thresholds and unfreezes what it froze."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import collector
from pipeline.app import create_app
from pipeline.settings import Settings


@pytest.fixture(autouse=True)
def own_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    if was_enabled:
        gc.enable()


class Node:
    """A container that can be put in a cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A two-node cycle nothing else refers to: only the cyclic collector frees it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_tune_sets_the_young_generation_and_keeps_the_older_ones() -> None:
    gc.set_threshold(700, 11, 12)
    collector.tune(10_000)
    assert gc.get_threshold() == (10_000, 11, 12)
    collector.tune(0)  # off: Python's own settings are left alone
    assert gc.get_threshold() == (10_000, 11, 12)


def test_settle_collects_what_is_garbage_and_freezes_what_is_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gc.disable()  # nothing collects behind the test's back
    dead = cycle()
    kept_alive = Node()
    kept_alive.other = kept_alive  # a cycle of one, still referred to
    assert dead() is not None
    with caplog.at_level(logging.INFO, logger="agents.collector"):
        collector.settle()
    assert dead() is None  # garbage when recovery ended: collected
    assert gc.get_freeze_count() > 0
    assert not any(o is kept_alive for o in gc.get_objects())  # frozen: no generation walks it
    assert "frozen" in caplog.text


def test_a_cycle_alive_at_settle_that_dies_later_is_what_freezing_costs() -> None:
    gc.disable()
    survivor = Node()
    survivor.other = survivor
    probe = weakref.ref(survivor)
    collector.settle()
    del survivor
    gc.collect()
    assert probe() is not None  # frozen: not collected (agents.collector says so)
    gc.unfreeze()
    gc.collect()
    assert probe() is None


def test_the_worker_settles_its_collector_when_a_recovery_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled: list[str] = []
    monkeypatch.setattr(collector, "settle", lambda: settled.append("settled"))
    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    create_app(settings).on_rebalance_end()
    assert settled == ["settled"]
    off = settings.model_copy(update={"gc_freeze_after_recovery": False})
    create_app(off).on_rebalance_end()
    assert settled == ["settled"]
