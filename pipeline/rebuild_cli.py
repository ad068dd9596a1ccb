"""`touchflow rebuild --config NEW.yaml`: new rules applied to history, compared with the live ones.

Reads the events topic from its first offset (what the broker still retains), replays it
through the pure engine twice — the live settings' policy and the candidate's — and
reports who would move where. Nothing is written to Kafka or ClickHouse: the candidate
goes live only when deployed (see docs/segmentation.md, "Changing the rules").
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline import rebuild
from pipeline.codec import Codecs
from pipeline.dlq_cli import read_to_end
from pipeline.errors import Rejected
from pipeline.identity import person_id_for
from pipeline.ingest import accept
from pipeline.schema_registry import registry_for
from pipeline.settings import Settings

# Settings a candidate may change: everything that decides segments, nothing else.
POLICY_FIELDS = frozenset(
    {"rfm", "brand_rfm", "aipl", "lifecycle", "rules", "rules_file", "policy_version",
     "dedup_window", "allowed_lateness_seconds"}
)  # fmt: skip


def candidate_settings(live: Settings, config: Path) -> Settings:
    """The live settings with the policy fields of `config` (a YAML mapping) replaced."""
    overrides = yaml.safe_load(config.read_text()) or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"{config}: expected a mapping of settings")
    unknown = set(overrides) - POLICY_FIELDS
    if unknown:
        raise ValueError(f"{config}: only policy settings can differ, not {sorted(unknown)}")
    return Settings.model_validate({**live.model_dump(), **overrides})


async def _records(settings: Settings) -> tuple[list[rebuild.Record], int]:
    raw, _ = await read_to_end(settings, settings.events_topic)
    codecs = Codecs(registry_for(settings.schema_registry_url))
    limits, now = settings.limits(), int(time.time() * 1000)
    records: list[rebuild.Record] = []
    rejected = 0
    for m in sorted(raw, key=lambda m: (m.partition, m.offset)):
        try:
            tp = accept(m.value, now, codecs, limits)
        except Rejected:
            rejected += 1  # the workers dead-lettered it too
            continue
        records.append((m.partition, m.offset, tp, person_id_for(tp.user)))
    return records, rejected


def run(live: Settings, candidate: Settings, output: Path | None) -> dict[str, Any]:
    records, rejected = asyncio.run(_records(live))
    old = rebuild.replay(records, live.policy(), live.allowed_lateness_ms)
    new = rebuild.replay(records, candidate.policy(), candidate.allowed_lateness_ms)
    report = rebuild.compare(old, new)
    summary = {
        "events": len(records),
        "rejected": rejected,
        "live_policy": live.policy_version,
        "candidate_policy": candidate.policy_version,
        **report.as_dict(),
    }
    if output is not None:
        output.write_text(
            json.dumps({**summary, "examples": report.examples}, ensure_ascii=False, indent=2)
        )
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"{summary['events']} events replayed ({summary['rejected']} rejected), "
        f"{summary['people']} customers; policy {summary['live_policy']} -> "
        f"{summary['candidate_policy']}"
    )
    changed = summary["changed"]
    if not changed:
        print("no customer would change")
    for dim, people in sorted(changed.items()):
        print(f"  {dim}: {people} customers would change")
        for move in summary["moves"].get(dim, [])[:10]:
            print(f"    {move['from']} -> {move['to']}: {move['people']}")
    for label in ("tags_added", "tags_removed"):
        if summary[label]:
            print(f"  {label}: " + ", ".join(f"{t} {n}" for t, n in summary[label].items()))
