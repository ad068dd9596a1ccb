"""`touchflow dlq`: listing with filters, and replay that puts the original key and bytes
back on the source topic exactly once per record, whatever the order of --reason filters.

The DLQ records are written with the worker's own header function, so the command reads
what a worker writes (test_bad_input.py lists a real worker's DLQ too).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaProducer

from agents.segmentation import dead_letter_headers
from pipeline.errors import Reason, Rejected
from pipeline.settings import Settings
from tests.integration.helpers import read_topic, run_cli

pytestmark = pytest.mark.integration


async def _dead_letter(settings: Settings) -> list[tuple[bytes, bytes, Reason]]:
    """Four DLQ records as a worker would write them; the last has lost its source header."""
    letters = [
        (b"k1", b"\x00bad-amount-1", Reason.BAD_AMOUNT, 0, 11),
        (b"k2", b"\x00bad-amount-2", Reason.BAD_AMOUNT, 1, 12),
        (b"k3", b"\x00raw-pii-3", Reason.RAW_PII, 0, 13),
        (b"k4", b"\x00no-source-4", Reason.MALFORMED, 1, 14),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i, (key, value, reason, partition, offset) in enumerate(letters):
            source = SimpleNamespace(
                topic=settings.events_topic, partition=partition, offset=offset
            )
            headers = dead_letter_headers(source, Rejected(reason, f"case {i}"))
            if i == 3:
                headers = [(k, v) for k, v in headers if k != "__connect.errors.topic"]
            await producer.send_and_wait(
                settings.dlq_topic, value, key=key, partition=i % 2, headers=headers,
                timestamp_ms=int(time.time() * 1000) - 10_000 + i,  # listing order: oldest first
            )  # fmt: skip
    finally:
        await producer.stop()
    return [(k, v, r) for k, v, r, _, _ in letters]


async def test_list_filter_and_replay_once(topics: Settings, tmp_path: Path) -> None:
    settings, config = topics, tmp_path / "c.yaml"
    letters = await _dead_letter(settings)

    def dlq(*args: str) -> str:
        done = run_cli(settings, config, "dlq", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rows = [json.loads(x) for x in dlq("--format", "json").splitlines()]
    assert [r["reason"] for r in rows] == ["bad_amount", "bad_amount", "raw_pii", "malformed"]
    assert [(r["source_partition"], r["source_offset"]) for r in rows[:3]] == [
        ("0", "11"), ("1", "12"), ("0", "13"),
    ]  # fmt: skip
    assert rows[0]["message"] == "case 0" and rows[0]["source_topic"] == settings.events_topic
    newest = [json.loads(x) for x in dlq("--format", "json", "--limit", "1").splitlines()]
    assert [r["message"] for r in newest] == ["case 3"]
    table = dlq("--reason", "raw_pii").splitlines()
    assert table[0].split()[:4] == ["dlq_partition", "dlq_offset", "time", "reason"]
    assert len(table) == 2 and "raw_pii" in table[1]

    assert json.loads(dlq("--replay", "--reason", "bad_amount")) == {
        "replayed": 2, "by_reason": {"bad_amount": 2}, "no_source_topic": 0,
    }  # fmt: skip
    assert json.loads(dlq("--replay", "--reason", "bad_amount"))["replayed"] == 0
    assert json.loads(dlq("--replay")) == {
        "replayed": 1, "by_reason": {"raw_pii": 1}, "no_source_topic": 1,
    }  # fmt: skip
    assert json.loads(dlq("--replay"))["replayed"] == 0

    back = await read_topic(settings.kafka_bootstrap, settings.events_topic, 3)
    assert sorted((r.key, r.value) for r in back) == sorted((k, v) for k, v, _ in letters[:3])
    origins = sorted(dict(r.headers)["touchflow.replayed-from"].decode() for r in back)
    assert origins == [f"{settings.dlq_topic}:0:0", f"{settings.dlq_topic}:0:1",
                       f"{settings.dlq_topic}:1:0"]  # fmt: skip
