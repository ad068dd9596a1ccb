"""The benchmark's in-process parts run at tiny sizes and report what docs/benchmarks.md
quotes. No timing assertions: figures only have to be there and positive."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import IN_PROCESS_KEYS, main
from bench.inprocess import hot_path_run
from bench.workload import build
from pipeline.codec import Codecs
from pipeline.core_loader import core_is_compiled
from pipeline.engine import PartitionEngine
from pipeline.events import EventType
from pipeline.settings import Settings


def test_workload_mixes_every_kind_of_touch_over_a_zipf_population() -> None:
    w = build(2_000, 500, b"bench-test-key-0123456789", 1_700_000_000_000, 30)
    kinds = {e.type for e in w.events}
    assert kinds == {
        EventType.JOIN,
        EventType.CHAT,
        EventType.PURCHASE,
        EventType.SHARE,
        EventType.REFUND,
    }
    assert [e.occurred_at for e in w.events] == sorted(e.occurred_at for e in w.events)
    touched = len(set(w.person_ids))
    assert 50 < touched < 500  # a heavy head: some people many times, many never
    assert build(2_000, 500, b"bench-test-key-0123456789", 1_700_000_000_000, 30) == w


def test_in_process_parts_write_a_result_with_positive_figures(tmp_path: Path) -> None:
    argv = ["--quick", "--in-process-only", "--events", "400", "--people", "100"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert len(list(tmp_path.glob("2*.json"))) == 1  # the timestamped copy
    figures = (*IN_PROCESS_KEYS, "core_apply_events_per_s", "memory_bytes_per_state")
    references = ("machine_reference_steps_per_s", "machine_reference_end_steps_per_s")
    for key in (*figures, *references):
        assert isinstance(latest[key], float) and latest[key] > 0, key
    assert latest["state_bytes_heavy"] > latest["state_bytes_typical"]
    assert "cores" in latest["machine"] and "Python 3.11" in latest["machine"]
    assert latest["core_compiled"] is core_is_compiled()  # which build the figures are of
    assert latest["event_decoder_prebuilt"] is Codecs().events.reader_prebuilt
    assert latest["state_encoder_prebuilt"] is Codecs().state.writers_prebuilt


def test_hot_path_encodes_each_state_once_per_write_interval_as_the_worker_does() -> None:
    w = build(2_000, 500, b"bench-test-key-0123456789", 1_700_000_000_000, 30)
    codecs = Codecs()
    raws = [codecs.encode_event(e) for e in w.events]
    engine = PartitionEngine(Settings().policy(), {})
    for offset, (e, pid) in enumerate(zip(w.events, w.person_ids, strict=True)):
        engine.on_event(e, pid, offset)
    people = len(engine.store)  # every state written at least once

    def encoded(interval: float, batch: int = 100) -> int:
        settings = Settings(worker_state_write_seconds=interval, worker_batch_events=batch)
        return hot_path_run(raws, settings, codecs)

    # an interval longer than the pass: one write at its end, each state encoded once
    assert encoded(3600.0) == people
    # after every batch: a person written in several batches is encoded in each
    assert encoded(0.0) > encoded(0.0, batch=400) > people


def test_the_machine_reference_loop_keeps_a_running_total_per_key() -> None:
    from bench.reference import reference_loop, reference_steps_per_s

    assert reference_loop(12_000) == 5_000 and reference_loop(3) == 3
    assert reference_steps_per_s(repeats=1, steps=1_000) > 0
