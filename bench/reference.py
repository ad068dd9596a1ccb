"""How fast this machine runs plain Python at the moment: a fixed loop timed beside the
benchmark's parts, so that figures taken on different days, or minutes, of a shared
machine can be compared (docs/benchmarks.md, "Comparing runs"). Not touchflow's code: the
interpreter's own dict, tuple and string work, of the kinds the core does most."""

from __future__ import annotations

import gc
import time

LOOP_STEPS = 200_000


def reference_loop(steps: int = LOOP_STEPS) -> int:
    """A keyed running total over 5 000 keys, a tuple per step. Returns the keys kept."""
    totals: dict[str, tuple[int, int]] = {}
    for i in range(steps):
        key = f"k{i % 5_000}"
        count, total = totals.get(key, (0, 0))
        totals[key] = (count + 1, total + i)
    return len(totals)


def reference_steps_per_s(repeats: int = 5, steps: int = LOOP_STEPS) -> float:
    """Steps of `reference_loop` per second: the best of `repeats` runs (the quietest
    moment: what a burst of a neighbour's work added is not the machine's speed)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            reference_loop(steps)
            best = min(best, time.perf_counter() - started)
        finally:
            gc.enable()
    return steps / best
