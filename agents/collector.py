"""The worker's cyclic garbage collector, set for a process that holds everyone's state.

Why: CPython's cyclic collector runs a young collection every 700 net allocations of
container objects, and a full one (every tracked object in the process) once enough
objects have survived into the oldest generation. The worker allocates several objects
per event (a state is ~8 tracked objects) and keeps most of them, and its states never
form cycles, so nearly all of that work finds nothing: on a 120 000-event benchmark run
the collector took ~2.4 s of the worker's ~15.7 s of CPU (17 full collections of ~0.1 s
each, and 2 100 young ones) and collected a few hundred objects (docs/benchmarks-history.md,
"The garbage collector").

Two settings, both of the collector only (reference counting frees everything acyclic, as
before):

- `tune`: a young collection every `young_threshold` allocations instead of 700 (the
  older generations keep Python's factors of 10), so ~14x fewer collections, each of
  which promotes what survives as before.
- `settle`: once the worker has recovered its tables, collect once and move every object
  alive then into the permanent generation (`gc.freeze`). A full collection walks every
  tracked object: at 1M people that is ~7.8M objects and ~1.3 s, during which no event
  is processed. Frozen, the recovered states are not walked again; a state replaced
  later is still freed by its reference count. What it costs: a cycle that is alive at
  that moment and dies later is never collected (no state forms one; Faust's and
  aiokafka's long-lived objects are mostly made once, at start), once per recovery. A
  later recovery's collection walks only what was made since the last freeze.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def tune(young_threshold: int) -> None:
    """A young collection every `young_threshold` allocations (0: Python's own settings)."""
    if young_threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)


def settle() -> None:
    """Collect what recovery left, then exempt everything alive from later collections."""
    started = time.monotonic()
    collected = gc.collect()
    gc.freeze()
    log.info(
        "collector: %d objects collected, %d frozen, in %.2f s",
        collected,
        gc.get_freeze_count(),
        time.monotonic() - started,
    )
