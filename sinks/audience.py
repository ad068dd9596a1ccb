"""Writes an audience (pipeline.audience) to a file, in a format ClickHouse itself emits.

CSV and Parquet both come from the server (`FORMAT CSVWithNames` / `FORMAT Parquet`),
streamed to a temporary file and renamed into place, so no Parquet library is needed and
a failed export leaves no half-written file behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from pipeline.audience import FORMATS, Audience, counts_query, export_query, parameters

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Exported:
    members: int  # people in the segment now
    with_ids: int  # of those, people with at least one hashed id in the brand's events
    rows: int  # (person, channel, id kind, id) rows written
    output: str
    format: str


def _chunks(stream: Any) -> Any:
    """chDB gives a file-like object, the HTTP client a stream of byte chunks."""
    if hasattr(stream, "read"):
        while chunk := stream.read(CHUNK):
            yield chunk
    else:
        yield from stream


def export(client: Client, audience: Audience, fmt: str, output: Path) -> Exported:
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    params = parameters(audience)
    sql = export_query(audience)
    counts = client.query(counts_query(audience), parameters=params).first_row
    members, with_ids, rows = counts or (0, 0, 0)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    stream = client.raw_stream(sql, parameters=params, fmt=FORMATS[fmt])
    with partial.open("wb") as f:
        for chunk in _chunks(stream):
            f.write(chunk)
    os.replace(partial, output)
    return Exported(int(members), int(with_ids), int(rows), str(output), fmt)
