"""Apply a policy to history and compare the outcome with another policy's. Pure.

`touchflow rebuild` feeds the events topic from its first offset through `replay` twice
— once with the live policy, once with the candidate — and prints `compare`'s report, so
an operator sees who would move where before new rules go live.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline import state as core
from pipeline.engine import PartitionEngine
from pipeline.events import Touchpoint

# (partition, offset, event, person id) in partition order
Record = tuple[int, int, Touchpoint, str]
DIMENSIONS = ("rfm_segment", "aipl_stage", "lifecycle")


def replay(
    records: Iterable[Record], policy: core.Policy, allowed_lateness_ms: int
) -> dict[bytes, core.PersonState]:
    """Every (brand, person) state after the records, each partition's clock advanced to
    its final watermark — what a worker holds after reading the same records."""
    engines: dict[int, PartitionEngine] = {}
    states: dict[bytes, core.PersonState] = {}
    for partition, offset, event, person_id in records:
        engine = engines.get(partition)
        if engine is None:
            engine = engines[partition] = PartitionEngine(policy, states, allowed_lateness_ms)
        engine.on_event(event, person_id, offset)
    return states


@dataclass
class Comparison:
    people: int = 0
    changed: Counter[str] = field(default_factory=Counter)  # dimension -> people
    moves: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)  # (old, new)
    tags_added: Counter[str] = field(default_factory=Counter)
    tags_removed: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "people": self.people,
            "changed": dict(self.changed),
            "moves": {
                dim: [{"from": a, "to": b, "people": n} for (a, b), n in counter.most_common()]
                for dim, counter in self.moves.items()
            },
            "tags_added": dict(self.tags_added),
            "tags_removed": dict(self.tags_removed),
        }


def _value(v: str | None) -> str:
    return v if v is not None else "-"


def compare(
    old: Mapping[bytes, core.PersonState],
    new: Mapping[bytes, core.PersonState],
    examples: int = 20,
) -> Comparison:
    """Who differs between two sets of states, per dimension, with (old -> new) counts."""
    report = Comparison(moves={d: Counter() for d in (*DIMENSIONS, "layers")})
    for key in sorted(old.keys() | new.keys()):
        report.people += 1
        a = old.get(key, core.PersonState()).derived
        b = new.get(key, core.PersonState()).derived
        diff: dict[str, object] = {}
        for dim in DIMENSIONS:
            before, after = getattr(a, dim), getattr(b, dim)
            if before != after:
                report.changed[dim] += 1
                report.moves[dim][(_value(before), _value(after))] += 1
                diff[dim] = [before, after]
        if a.layers != b.layers:
            report.changed["layers"] += 1
            report.moves["layers"][(str(dict(a.layers)), str(dict(b.layers)))] += 1
            diff["layers"] = [dict(a.layers), dict(b.layers)]
        added, removed = set(b.tags) - set(a.tags), set(a.tags) - set(b.tags)
        if added or removed:
            report.changed["tags"] += 1
            report.tags_added.update(added)
            report.tags_removed.update(removed)
            diff["tags"] = [list(a.tags), list(b.tags)]
        if diff and len(report.examples) < examples:
            brand, person_id = core.split_state_key(key.decode())
            report.examples.append({"brand": brand, "person_id": person_id, **diff})
    return report
