"""`python -m bench [--quick]`: every part of the benchmark in one run; writes
bench/results/<UTC timestamp>.json and bench/results/latest.json (see docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench import inprocess, workload
from bench.reference import reference_steps_per_s
from pipeline.codec import Codecs
from pipeline.core_loader import core_is_compiled
from pipeline.rfm import MS_PER_DAY
from pipeline.sdk import PUBLISH_LINGER_MS
from pipeline.settings import Settings

RESULTS = Path(__file__).parent / "results"
PII_KEY = "bench-pii-key-0123456789abcdef"  # synthetic ids only

# Keys every result file has, with positive numbers (plus `machine`, a string).
REQUIRED = (
    "core_events_per_s",
    "hot_path_events_per_s",
    "e2e_events_per_s",
    "baseline_faust_events_per_s",
    "e2e_vs_baseline",
    "state_bytes_typical",
    "state_bytes_heavy",
    "latency_p50_ms",
    "latency_p99_ms",
    "offered_load_events_per_s",
)
IN_PROCESS_KEYS = REQUIRED[:2] + REQUIRED[5:7]


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kib / 2**20:.1f} GiB RAM, "
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}"
    )


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (~1.5 min)")
    p.add_argument("--in-process-only", action="store_true", help="skip the broker parts")
    p.add_argument(
        "--no-memory", action="store_true", help="skip the worker's memory at --memory-people"
    )
    p.add_argument(
        "--memory-only", action="store_true", help="only the worker's memory at --memory-people"
    )
    p.add_argument("--repeats", type=int, help="timed repeats of each in-process part")
    p.add_argument("--e2e-runs", type=int, help="end-to-end runs (fresh topics each)")
    p.add_argument("--events", type=int, help="events of the core workload")
    p.add_argument("--people", type=int, help="population the events are drawn from")
    p.add_argument("--e2e-events", type=int, help="events published in the throughput run")
    p.add_argument(
        "--e2e-people", type=int, help="population the throughput run's events are drawn from"
    )
    p.add_argument("--rate", type=float, help="offered load of the latency run, events/s")
    p.add_argument("--latency-seconds", type=float, help="length of the latency run")
    p.add_argument(
        "--probe-linger-ms",
        type=int,
        default=PUBLISH_LINGER_MS,
        help="the latency probe's producer linger (0: a batch per send, as before 2026-12-05)",
    )
    p.add_argument(
        "--memory-people", type=int, help="people a worker recovers for the memory figure"
    )
    p.add_argument("--profile", action="store_true", help="profile the core (needs pyinstrument)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    a = p.parse_args(argv)
    # The throughput run is long enough (~14 s here) that what every run pays once (the
    # first fetch, the last offset commit, the sink's last flush: ~1.2 s together) is a
    # small part of it; at 30 000 events it was ~27 %, which understated the sustained
    # rate of the faster of the two workers the most (docs/benchmarks-history.md, "Run length").
    # Its population grows with it, so the mix (new people per event) stays as it was.
    full = dict(repeats=3, e2e_runs=3, events=40_000, people=20_000, e2e_events=120_000,
                e2e_people=80_000, rate=5_000.0, latency_seconds=20.0,
                memory_people=1_000_000)  # fmt: skip
    quick = dict(repeats=1, e2e_runs=1, events=3_000, people=1_000, e2e_events=2_000,
                 e2e_people=1_000, rate=300.0, latency_seconds=3.0,
                 memory_people=5_000)  # fmt: skip
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def in_process(a: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    key = PII_KEY.encode()
    now = int(time.time() * 1000)
    w = workload.build(a.events, a.people, key, now - 400 * MS_PER_DAY, 365)
    out: dict[str, Any] = {"core_events": len(w), "core_states": w.states}
    out.update(inprocess.core_rates(w, settings, a.repeats))
    out.update(inprocess.hot_path_rates(w, settings, a.repeats))
    out.update(inprocess.state_sizes(settings, key))
    out.update(inprocess.memory_per_state(w, settings))
    return out


def profile_core(a: argparse.Namespace, settings: Settings, stamp: str) -> Path:
    from pyinstrument import Profiler  # dev dependency, only for --profile

    now = int(time.time() * 1000)
    w = workload.build(a.events, a.people, PII_KEY.encode(), now - 400 * MS_PER_DAY, 365)
    codecs = Codecs()
    raws = [codecs.encode_event(e) for e in w.events]
    path: Path = a.out / f"{stamp}-profile.txt"
    with path.open("w") as f:
        runs: tuple[tuple[str, Callable[[], object]], ...] = (
            (
                "core: PartitionEngine.on_event",
                lambda: inprocess.engine_run(w, settings.policy(), settings.allowed_lateness_ms),
            ),
            ("hot path", lambda: inprocess.hot_path_run(raws, settings, codecs)),
        )
        for name, fn in runs:
            profiler = Profiler(interval=0.0005)
            profiler.start()
            fn()
            profiler.stop()
            f.write(f"===== {name}\n")
            f.write(profiler.output_text(unicode=False, color=False, show_all=False))
    return path


def end_to_end(a: argparse.Namespace, settings: Settings, logs: Path) -> dict[str, Any]:
    from bench import e2e
    from pipeline.broker import EmbeddedBroker

    key = PII_KEY.encode()
    now = int(time.time() * 1000)
    n_latency = int(a.rate * a.latency_seconds)
    # Event time: the throughput run's year, then the latency run's month, up to yesterday.
    warm = workload.build(500, 200, key, now - 420 * MS_PER_DAY, 10, seed=1, id_prefix="warm")
    runs: list[dict[str, Any]] = []
    for i in range(a.e2e_runs):
        # A broker per run, so every run starts from the same state: with one broker for
        # all (Tansu keeps every topic in memory), the last run was the slowest in seven
        # invocations; with a broker each, in none of three (docs/benchmarks-history.md, "A broker
        # per run").
        with EmbeddedBroker(log_file=logs / f"broker-{i + 1}.log") as broker:
            tput = workload.build(
                a.e2e_events, a.e2e_people, key, now - 400 * MS_PER_DAY, 365, seed=10 + i
            )
            lat = workload.build(
                n_latency, a.people, key, now - 30 * MS_PER_DAY, 29, seed=10 + i, id_prefix="lat"
            )
            run = asyncio.run(
                e2e.run(settings, warm, tput, lat, a.rate, logs, broker, a.probe_linger_ms)
            )
            print(
                f"  e2e run {i + 1}: "
                + json.dumps({k: round(v, 1) for k, v in run.items() if isinstance(v, float)})
                + f"\n    p99 by second sent (ms): {run['latency_p99_ms_by_second']}",
                flush=True,
            )
            runs.append(run)
    out = {
        k: statistics.median(r[k] for r in runs)
        for k, v in runs[0].items()
        if not isinstance(v, list)
    }
    out["e2e_runs"] = runs
    return out


def recovered_memory(a: argparse.Namespace, settings: Settings, logs: Path) -> dict[str, Any]:
    """A worker's memory at `a.memory_people` people, on a broker of its own (Tansu keeps
    every topic in memory; the end-to-end runs' data should not weigh on it)."""
    from bench import recovered_memory as part
    from pipeline.broker import EmbeddedBroker

    key = PII_KEY.encode()
    now = int(time.time() * 1000)
    w = workload.build(a.events, a.people, key, now - 400 * MS_PER_DAY, 365)
    templates = part.final_states(w, settings)
    warm = workload.build(500, 200, key, now - 420 * MS_PER_DAY, 10, seed=1, id_prefix="warm")
    with EmbeddedBroker(log_file=logs / "broker-memory.log") as broker:
        return asyncio.run(part.run(settings, templates, a.memory_people, warm, logs, broker))


def main(argv: list[str] | None = None) -> int:
    a = options(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="touchflow-bench-") as tmp:
        settings = Settings(
            kafka_bootstrap="embedded",
            clickhouse_dsn=f"chdb://{tmp}/clickhouse",
            data_dir=Path(tmp),
            pii_key=SecretStr(PII_KEY),
        )
        result: dict[str, Any] = {"machine": machine(), "started": stamp, "quick": a.quick}
        # which build of the domain core ran (docs/compiled-core.md): the worker runs the same
        result["core_compiled"] = core_is_compiled()
        codecs = Codecs()  # which Avro coders: compiled ahead of time, or their source run
        result["event_decoder_prebuilt"] = codecs.events.reader_prebuilt
        result["state_encoder_prebuilt"] = codecs.state.writers_prebuilt
        build = "compiled" if result["core_compiled"] else "uncompiled (make venv compiles it)"
        print(f"touchflow bench on {result['machine']}; the core {build}", flush=True)
        # this machine's speed at plain Python, before and after the timed parts
        result["machine_reference_steps_per_s"] = reference_steps_per_s()
        if not a.memory_only:
            result.update(in_process(a, settings))
            print(
                "  in process: " + json.dumps({k: round(result[k]) for k in IN_PROCESS_KEYS}),
                flush=True,
            )
        if a.profile:
            print(f"  profile: {profile_core(a, settings, stamp)}", flush=True)
        if not (a.in_process_only or a.memory_only):
            result.update(end_to_end(a, settings, Path(tmp)))
        if not (a.in_process_only or a.no_memory):
            result.update(recovered_memory(a, settings, Path(tmp)))
            print(
                f"  worker at {a.memory_people} people: "
                f"{result['memory_worker_rss_gib']:.2f} GiB RSS, "
                f"ready in {result['memory_ready_seconds']:.0f} s",
                flush=True,
            )
    result["machine_reference_end_steps_per_s"] = reference_steps_per_s()
    result["seconds"] = round(time.monotonic() - started, 1)
    result["params"] = {k: v for k, v in vars(a).items() if k != "out"}
    text = json.dumps(result, indent=2, sort_keys=True)
    (a.out / f"{stamp}.json").write_text(text + "\n")
    (a.out / "latest.json").write_text(text + "\n")
    summary = {k: round(result[k], 2) for k in REQUIRED if k in result}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
