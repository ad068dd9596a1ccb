"""Parts 1, 2 and 4 of the benchmark: the domain core, the hot path and state size, in
this process on one thread, with every input built before the clock starts."""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from agents.write_behind import StateWrites
from bench.workload import Workload
from pipeline import state as core
from pipeline.codec import Codecs
from pipeline.engine import Outcome, PartitionEngine
from pipeline.events import Chat, EventType, Join, Purchase, Refund, Share, Touchpoint, UserRef
from pipeline.identity import forget_person_ids, person_id_for
from pipeline.ingest import accept
from pipeline.pii import pseudonymise
from pipeline.rfm import MS_PER_DAY
from pipeline.rows import change_row, event_row, state_row
from pipeline.settings import Settings


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    """(seconds, what fn returned), with the collector settled first and off meanwhile."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        result = fn()
        return time.perf_counter() - started, result
    finally:
        gc.enable()


def engine_run(w: Workload, policy: core.Policy, lateness_ms: int) -> int:
    """Every event through PartitionEngine.on_event over a plain dict: the per-partition
    path of the worker (due-time index, watermark, dedup, redelivery guard) without Faust."""
    engine = PartitionEngine(policy, {}, lateness_ms)
    changes = 0
    for offset, (e, pid) in enumerate(zip(w.events, w.person_ids, strict=True)):
        changes += len(engine.on_event(e, pid, offset).changes)
    return changes


def apply_run(w: Workload, policy: core.Policy) -> int:
    """Every event through the bare `state.apply` over a dict (no due-time index)."""
    store: dict[str, core.PersonState] = {}
    changes = 0
    for offset, (e, pid) in enumerate(zip(w.events, w.person_ids, strict=True)):
        key = core.state_key(e.brand, pid)
        s, ch = core.apply(store.get(key), e, pid, policy, offset)
        store[key] = s
        changes += len(ch)
    return changes


def hot_path_run(raws: list[bytes], settings: Settings, codecs: Codecs) -> int:
    """What one worker and the sink do per event, minus Kafka and ClickHouse I/O: wire
    decode + contract checks, identity, engine, change encoding and the rows of the event
    and its changes; then, as the worker's write-behind does (agents/write_behind.py),
    the states written since the last write are encoded once each for the changelog and
    turned into their ClickHouse rows once `worker_state_write_seconds` have passed
    since the first batch (of `worker_batch_events`) that held them, checked at the end
    of each batch, by the same `StateWrites` on the same clock; and at the end of the
    pass, so every state written is encoded at least once. Returns the number of states
    encoded (the work saved by the interval depends on how fast the pass runs, as in the
    worker)."""
    policy, limits = settings.policy(), settings.limits()
    engine = PartitionEngine(policy, {}, settings.allowed_lateness_ms)
    store = engine.store
    forget_person_ids()  # each run meets its people for the first time, as the engine does
    now = int(time.time() * 1000)
    batch_events = settings.worker_batch_events
    writes = StateWrites(settings.worker_state_write_seconds)
    held: dict[bytes, None] = {}  # keys written since the last write, in first-write order
    encoded = 0
    last = len(raws) - 1
    for offset, raw in enumerate(raws):
        e = accept(raw, now, codecs, limits)
        pid = person_id_for(e.user)
        out = engine.on_event(e, pid, offset, Outcome())
        event_row(e, pid, 0, offset)
        for c in out.changes:
            codecs.encode_change(c)
            change_row(c)
        held.update(dict.fromkeys(out.written))
        batch_end = (offset + 1) % batch_events == 0
        if offset == last or (batch_end and not writes.hold(time.monotonic())):
            encoded += _write_states(held, store, codecs)
            writes.stored()
    return encoded


def _write_states(held: dict[bytes, None], store: Any, codecs: Codecs) -> int:
    for key in held:
        s = store[key]
        codecs.encode_state(s)
        brand, person_id = core.split_state_key(key.decode())
        state_row(brand, person_id, s)
    written = len(held)
    held.clear()
    return written


def core_rates(w: Workload, settings: Settings, repeats: int) -> dict[str, Any]:
    policy = settings.policy()
    engine_s = [
        _timed(lambda: engine_run(w, policy, settings.allowed_lateness_ms)) for _ in range(repeats)
    ]
    apply_s = [_timed(lambda: apply_run(w, policy)) for _ in range(repeats)]
    return {
        "core_events_per_s": len(w) / _median([s for s, _ in engine_s]),
        "core_apply_events_per_s": len(w) / _median([s for s, _ in apply_s]),
        "core_changes_per_event": engine_s[0][1] / len(w),
        "core_runs_events_per_s": [round(len(w) / s) for s, _ in engine_s],
    }


def hot_path_rates(w: Workload, settings: Settings, repeats: int) -> dict[str, Any]:
    codecs = Codecs()
    raws = [codecs.encode_event(e) for e in w.events]
    runs = [_timed(lambda: hot_path_run(raws, settings, codecs)) for _ in range(repeats)]
    # The same pass writing the states after every batch (the worker before 802fac1, or
    # TOUCHFLOW_WORKER_STATE_WRITE_SECONDS=0): what the interval saves, in the same run.
    every_batch = settings.model_copy(update={"worker_state_write_seconds": 0.0})
    runs_0 = [_timed(lambda: hot_path_run(raws, every_batch, codecs)) for _ in range(repeats)]
    return {
        "hot_path_every_batch_events_per_s": len(w) / _median([s for s, _ in runs_0]),
        "hot_path_every_batch_states_encoded_per_event": round(runs_0[0][1] / len(w), 3),
        "hot_path_events_per_s": len(w) / _median([s for s, _ in runs]),
        "hot_path_runs_events_per_s": [round(len(w) / s) for s, _ in runs],
        "hot_path_states_encoded_per_event": [round(n / len(w), 3) for _, n in runs],
        "event_wire_bytes_mean": sum(map(len, raws)) / len(raws),
    }


# -- state size ------------------------------------------------------------------------


def customer_events(
    pii_key: bytes, end_ms: int, days: int, purchases: int, touches: int, seed: int
) -> list[Touchpoint]:
    """One customer's history: a join, then `touches` chats/shares and `purchases` orders
    (some refunded) spread over `days` days up to `end_ms`, in time order."""
    rng = random.Random(seed)
    user = UserRef("unionid", pseudonymise("unionid", f"size-{seed}", pii_key))
    start = end_ms - days * MS_PER_DAY
    n = 1 + purchases + touches
    times = sorted(start + rng.randrange(days * MS_PER_DAY) for _ in range(n - 1))
    kinds = ["p"] * purchases + ["t"] * touches
    rng.shuffle(kinds)
    events = [
        Touchpoint(
            f"s{seed}-0",
            EventType.JOIN,
            "lumi",
            "wecom",
            user,
            start,
            Join("add_friend", "qr_code"),
        )
    ]
    for i, (kind, at) in enumerate(zip(kinds, times, strict=True), start=1):
        eid = f"s{seed}-{i}"
        if kind == "p":
            if i > 3 and rng.random() < 0.05:
                payload: Any = Refund(f"s{seed}-o{i - 1}", 9_900)
                events.append(Touchpoint(eid, EventType.REFUND, "lumi", "wecom", user, at, payload))
                continue
            payload = Purchase(f"s{seed}-o{i}", rng.choice((9_900, 19_900, 39_900)))
            events.append(Touchpoint(eid, EventType.PURCHASE, "lumi", "wecom", user, at, payload))
        elif rng.random() < 0.8:
            events.append(
                Touchpoint(
                    eid, EventType.CHAT, "lumi", "wecom", user, at, Chat("inbound", "customer")
                )
            )
        else:
            events.append(Touchpoint(eid, EventType.SHARE, "lumi", "wecom", user, at, Share("c1")))
    return events


def state_sizes(settings: Settings, pii_key: bytes) -> dict[str, Any]:
    """Serialized state (changelog value, Avro wire format) of a typical and a heavy customer."""
    policy, codecs = settings.policy(), Codecs()
    end = int(time.time() * 1000) - MS_PER_DAY

    def final_bytes(events: list[Touchpoint]) -> int:
        pid = person_id_for(events[0].user)
        s: core.PersonState | None = None
        for offset, e in enumerate(events):
            s, _ = core.apply(s, e, pid, policy, offset)
        assert s is not None
        return len(codecs.encode_state(s))

    typical = [final_bytes(customer_events(pii_key, end, 60, 3, 6, seed)) for seed in range(20)]
    heavy = [
        final_bytes(customer_events(pii_key, end, 365, 80, 320, 100 + seed)) for seed in range(5)
    ]
    return {
        "state_bytes_typical": _median([float(b) for b in typical]),
        "state_bytes_heavy": _median([float(b) for b in heavy]),
        "state_heavy_events": 401,
    }


def memory_per_state(w: Workload, settings: Settings) -> dict[str, Any]:
    """Python heap held by the engine's states of `w` (dict of PersonState + due index),
    per state, traced by tracemalloc: what a worker's in-memory table costs per person."""
    policy = settings.policy()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        engine = PartitionEngine(policy, {}, settings.allowed_lateness_ms)
        for offset, (e, pid) in enumerate(zip(w.events, w.person_ids, strict=True)):
            engine.on_event(e, pid, offset)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    states = len(engine.store)
    per_state = held / states
    return {
        "memory_states": states,
        "memory_bytes_per_state": per_state,
        "memory_1m_states_gib_extrapolated": per_state * 1_000_000 / 2**30,
    }


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2
