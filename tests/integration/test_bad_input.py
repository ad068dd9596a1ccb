"""Every kind of bad input, through the real broker to one running worker: each lands in
the DLQ with Kafka Connect's headers and touchflow's reason, and the good event sent right
after it is still processed. Then `touchflow dlq` lists what the worker wrote.

One worker and one publish for the whole table keep this file fast: bad_i, good_i, ... go
to one partition in that order, so "after" holds on the log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.codec import Codecs, touchpoint_to_record
from pipeline.dlq_cli import read_to_end
from pipeline.events import EventType, Purchase, Share, Touchpoint, UserRef
from pipeline.pii import pseudonymise
from pipeline.settings import Settings
from tests.integration.helpers import (
    PII_KEY,
    Worker,
    async_wait_until,
    by_labels,
    get,
    parse,
    read_topic,
    run_cli,
    web_port,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000
NOW = int(time.time() * 1000)
RAW_OPENID = "oRAW-battery-openid-777"
CODECS = Codecs()


def _user(name: str) -> UserRef:
    return UserRef("openid", pseudonymise("openid", name, PII_KEY.encode()))


def _event(event_id: str, **changes: object) -> Touchpoint:
    fields: dict[str, object] = dict(
        event_id=event_id, type=EventType.PURCHASE, brand="lumi", channel="wecom",
        user=_user(event_id), occurred_at=NOW - DAY, payload=Purchase(f"o-{event_id}", 30_000),
    )  # fmt: skip
    fields.update(changes)
    return Touchpoint(**fields)  # type: ignore[arg-type]


def _wire(event_id: str, **changes: object) -> bytes:
    return CODECS.encode_event(_event(event_id, **changes))


def _retyped(event_id: str, type_: str) -> bytes:
    """A purchase whose `type` says something else: the codec cannot build it from a Touchpoint."""
    return CODECS.events.encode({**touchpoint_to_record(_event(event_id)), "type": type_})


@dataclass(frozen=True)
class Case:
    name: str
    value: Callable[[], bytes]
    reason: str
    says: str  # part of the __connect.errors.exception.message header


VALID = _wire("template")
CASES = [
    Case("truncated", lambda: VALID[: len(VALID) // 2], "truncated", "ends early"),
    Case("too-short", lambda: b"\x00\x00", "truncated", "shorter than the 5-byte header"),
    Case("garbage", lambda: b"\x00\x00\x00\x00\x01\x02\xff\xfe", "malformed", "UnicodeDecodeError"),
    Case("wrong-magic", lambda: b"\x07" + VALID[1:], "bad_magic", "first byte is 7"),
    Case("unknown-schema", lambda: b"\x00\x00\x00\x03\xe7" + VALID[5:], "unknown_schema", "999"),
    Case("missing-field", lambda: _wire("no-brand", brand=""), "missing_field", "brand is empty"),
    Case(
        "negative-amount",
        lambda: _wire("neg", payload=Purchase("o-neg", -1)),
        "bad_amount",
        "amount_minor -1",
    ),
    Case(
        "absurd-amount",
        lambda: _wire("absurd", payload=Purchase("o-absurd", 10**12)),
        "bad_amount",
        "outside 0..",
    ),
    Case("unknown-type", lambda: _retyped("teleport", "teleport"), "unknown_type", "'teleport'"),
    Case(
        "type-mismatch",
        lambda: _retyped("mismatch", "chat"),
        "type_mismatch",
        "payload is Purchase",
    ),
    Case(
        "future", lambda: _wire("future", occurred_at=NOW + DAY), "bad_timestamp", "in the future"
    ),
    Case(
        "before-2000",
        lambda: _wire("ancient", occurred_at=900_000_000_000),
        "bad_timestamp",
        "before 946684800000",
    ),
    Case(
        "oversized",
        lambda: _wire("big", type=EventType.SHARE, payload=Share("x" * 70_000)),
        "too_large",
        "> limit 65536",
    ),
    Case(
        "raw-pii",
        lambda: _wire("raw", user=UserRef("openid", RAW_OPENID)),
        "raw_pii",
        "user.id of type openid is not a keyed hash",
    ),
]


async def test_every_bad_input_is_dead_lettered_and_the_next_event_still_counts(
    topics: Settings, workers: Callable[[], Worker], tmp_path: Path
) -> None:
    settings = topics
    worker = workers()
    bad = {case.name: case.value() for case in CASES}
    assert len(set(bad.values())) == len(bad), "each case must be told apart by its bytes"
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=1 << 20
    )
    await producer.start()
    try:
        for case in CASES:  # one key: one partition, so each good event comes after its case
            await producer.send_and_wait(settings.events_topic, bad[case.name], key=b"battery")
            good = _wire(f"good-after-{case.name}")
            await producer.send_and_wait(settings.events_topic, good, key=b"battery")
    finally:
        await producer.stop()

    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic, len(CASES), timeout=60)
    assert worker.alive(), worker.log_tail()
    by_value = {r.value: r for r in dlq}
    assert len(dlq) == len(CASES)
    # Every good event changes its new customer's segments; wait until each has.
    goods = {f"good-after-{case.name}" for case in CASES}
    causes: set[str] = set()

    async def every_good_event_changed_something() -> bool:
        records, _ = await read_to_end(settings, settings.changes_topic)
        causes.update(CODECS.decode_change(r.value).cause_event_id for r in records)
        return causes >= goods

    await async_wait_until(every_good_event_changed_something, 60, "changes of all good events")
    failures = []
    for case in CASES:
        record = by_value.get(bad[case.name])
        if record is None:
            failures.append(f"{case.name}: not in the DLQ")
            continue
        h = {k: v.decode() for k, v in record.headers}
        expected = {
            "__connect.errors.topic": settings.events_topic,
            "__connect.errors.exception.class.name": "touchflow.Rejected",
            "touchflow.reason": case.reason,
        }
        got = {k: h.get(k) for k in expected}
        if got != expected:
            failures.append(f"{case.name}: headers {got} != {expected}")
        if not (
            h["__connect.errors.partition"].isdigit() and h["__connect.errors.offset"].isdigit()
        ):
            failures.append(f"{case.name}: partition/offset headers {h}")
        if case.says not in h["__connect.errors.exception.message"]:
            failures.append(f"{case.name}: message {h['__connect.errors.exception.message']!r}")
        if RAW_OPENID in json.dumps(h):
            failures.append(f"{case.name}: a header echoes the raw openid")
        if f"good-after-{case.name}" not in causes:
            failures.append(f"{case.name}: the good event after it made no segment changes")
    assert not failures, "\n".join(failures)

    # The worker counted each rejection by its reason (scraped from its /metrics).
    expected_counts: dict[tuple[str, ...], float] = {}
    for case in CASES:
        expected_counts[(case.reason,)] = expected_counts.get((case.reason,), 0.0) + 1
    status, text = await get(f"http://127.0.0.1:{web_port(worker)}/metrics")
    assert status == 200
    samples = parse(text)
    assert by_labels(samples, "touchflow_events_rejected_total", "reason") == expected_counts
    assert by_labels(samples, "touchflow_events_dead_lettered_total", "reason") == expected_counts

    # The operator's view of the same DLQ, through the real command.
    listed = run_cli(settings, tmp_path / "cli.yaml", "dlq", "--format", "json", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["reason"] for r in rows) == sorted(c.reason for c in CASES)
    assert {r["source_topic"] for r in rows} == {settings.events_topic}
    assert RAW_OPENID not in listed.stdout  # values are never printed
    amounts = run_cli(settings, tmp_path / "cli.yaml", "dlq", "--reason", "bad_amount")
    assert amounts.returncode == 0, amounts.stderr
    assert len(amounts.stdout.splitlines()) == 1 + 2  # header + the two amount cases
