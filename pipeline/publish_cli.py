"""`touchflow publish FILE`: a file of canonical events through the SDK onto the events topic.

JSONL holds one canonical event (docs/events.md) per line; a CSV needs a YAML map from
canonical field paths to its columns (or constants). Every line is checked exactly as
the SDK checks it; good lines are published, bad ones go to the rejects file with their
line number, reason code and message. Exit 0: all published; 1: some rejected; 2: usage
or connection error (nothing more is read then).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from aiokafka.errors import KafkaError

from pipeline.canonical import from_text_fields
from pipeline.errors import Reason, Rejected
from pipeline.schema_registry import SchemaRegistryError
from pipeline.sdk import DeliveryError, Publisher
from pipeline.settings import Settings

FLUSH_EVERY = 10_000  # bounds the futures held in memory and how far a failure is noticed late
PROGRESS_SECONDS = 0.5


class UsageError(Exception):
    """The command cannot run as asked (file, map, broker): exit code 2."""


@dataclass
class Line:
    """One input record: where it is, its text as read, and its canonical JSON (or why not)."""

    number: int
    text: str
    event: Any = None  # parsed JSON; event_from_json says what is wrong with it
    rejected: Rejected | None = None


def read_jsonl(f: TextIO) -> Iterator[Line]:
    for number, text in enumerate(f, 1):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            yield Line(number, text, event=json.loads(text))
        except json.JSONDecodeError as exc:
            yield Line(number, text, rejected=Rejected(Reason.MALFORMED, f"not JSON: {exc}"))


def load_csv_map(path: Path) -> dict[str, str | dict[str, str]]:
    """`field.path: column` or `field.path: {value: constant}` for every canonical field."""
    try:
        mapping = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read the CSV map {path}: {exc}") from None
    ok = isinstance(mapping, dict) and all(
        isinstance(k, str) and (isinstance(v, str) or (isinstance(v, dict) and set(v) == {"value"}))
        for k, v in mapping.items()
    )
    if not ok:
        raise UsageError(
            f"{path}: expected `canonical.field: column` or `canonical.field: {{value: x}}` lines"
        )
    return {k: v if isinstance(v, str) else {"value": str(v["value"])} for k, v in mapping.items()}


def read_csv(f: TextIO, mapping: dict[str, str | dict[str, str]]) -> Iterator[Line]:
    reader = csv.DictReader(f)
    columns = set(reader.fieldnames or ())
    missing = sorted({c for c in mapping.values() if isinstance(c, str)} - columns)
    if missing:
        raise UsageError(f"the CSV has no column(s) {missing} named in the map")
    for row in reader:
        out = io.StringIO()
        csv.writer(out).writerow(row.values())
        line = Line(reader.line_num, out.getvalue().rstrip("\r\n"))
        flat = {k: v["value"] if isinstance(v, dict) else row[v] or "" for k, v in mapping.items()}
        try:
            line.event = from_text_fields(flat)
        except Rejected as rejected:
            line.rejected = rejected
        yield line


class Progress:
    """A one-line counter on stderr, redrawn at most every PROGRESS_SECONDS."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = self.shown = time.monotonic()
        self.lines = self.rejected = 0

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.shown >= PROGRESS_SECONDS:
            rate = self.lines / max(now - self.started, 1e-9)
            self.stream.write(
                f"\rpublish: {self.lines} lines, {self.rejected} rejected, {rate:,.0f} lines/s"
            )
            self.stream.flush()
            self.shown = now


async def publish_lines(
    settings: Settings, lines: Iterator[Line], rejects: Path, progress: Progress
) -> dict[str, Any]:
    """Publish every good line; write each bad one to `rejects` (created on the first)."""
    out: TextIO | None = None
    published = 0
    async with Publisher(settings) as publisher:
        try:
            for line in lines:
                progress.lines += 1
                if line.rejected is None:
                    try:
                        await publisher.publish(line.event)
                        published += 1
                        if published % FLUSH_EVERY == 0:
                            await publisher.flush()
                    except Rejected as rejected:
                        line.rejected = rejected
                if line.rejected is not None:
                    progress.rejected += 1
                    out = out or rejects.open("w", encoding="utf-8")
                    out.write(reject_record(line, line.rejected) + "\n")
                progress.tick()
        finally:
            if out is not None:
                out.close()
            progress.tick(force=True)
            progress.stream.write("\n")
    return {"lines": progress.lines, "published": published, "rejected": progress.rejected}


def reject_record(line: Line, rejected: Rejected) -> str:
    return json.dumps(
        {
            "line": line.number,
            "reason": rejected.reason.value,
            "message": rejected.message,
            "original": line.text,
        },
        ensure_ascii=False,
    )


def main(
    settings: Settings, path: Path, fmt: str, csv_map: Path | None, rejects: Path | None
) -> int:
    """The whole command; returns the exit code."""
    rejects = rejects or path.with_name(path.name + ".rejects.jsonl")
    try:
        if fmt == "csv" and csv_map is None:
            raise UsageError("--format csv needs --csv-map MAP.yaml")
        mapping = load_csv_map(csv_map) if fmt == "csv" and csv_map else {}
        try:
            f = path.open(encoding="utf-8", newline="")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        rejects.unlink(missing_ok=True)  # a previous run's rejects would mislead
        with f:
            lines = read_csv(f, mapping) if fmt == "csv" else read_jsonl(f)
            summary = asyncio.run(publish_lines(settings, lines, rejects, Progress(sys.stderr)))
    except (UsageError, ValueError, KafkaError, DeliveryError, SchemaRegistryError) as exc:
        # ValueError: settings that cannot publish (no PII key, no broker address).
        print(f"touchflow publish: {exc}", file=sys.stderr)
        return 2
    if summary["rejected"]:
        summary["rejects_file"] = str(rejects)
    print(json.dumps(summary, sort_keys=True))
    return 1 if summary["rejected"] else 0
