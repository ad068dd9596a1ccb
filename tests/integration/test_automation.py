"""The automation consumer on the real Tansu broker: real segment changes (Avro, keyed by
person) on the changes topic, consumer groups, commits, redelivery after a crash, the DLQ.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline import metrics
from pipeline.automation import Backoff, ChangeConsumer, Filter, Permanent, idempotency_key
from pipeline.codec import Codecs
from pipeline.settings import Settings
from pipeline.state import Scores, SegmentChange
from tests.integration.helpers import cli_env, read_topic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ZERO = Scores(0, 0, 0)
# Tansu makes a group's next member wait out the last one's session: keep it short.
FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def lifecycle(brand: str, person: str, seq: int, frm: str | None, to: str) -> SegmentChange:
    return SegmentChange(
        brand, person, "lifecycle", frm, to, f"lifecycle:{to}", "time", 1_700_000_000_000 + seq,
        seq, ZERO, ZERO, "v1",
    )  # fmt: skip


def history(brand: str, person: str) -> list[SegmentChange]:
    """A buyer's lifecycle: new -> active -> at_risk, seq 1..3, plus a tag at seq 4."""
    tag = SegmentChange(
        brand, person, "tag", None, "vip", "tag:vip", "e-9", 1_700_000_000_009, 4, ZERO, ZERO, "v1"
    )
    return [
        lifecycle(brand, person, 1, None, "new"),
        lifecycle(brand, person, 2, "new", "active"),
        lifecycle(brand, person, 3, "active", "at_risk"),
        tag,
    ]


async def produce(settings: Settings, items: list[SegmentChange | bytes]) -> None:
    """Changes as the worker sends them: Avro wire format, keyed by person id."""
    codecs = Codecs()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for item in items:
            if isinstance(item, bytes):
                await producer.send_and_wait(settings.changes_topic, item, key=b"junk")
            else:
                value = codecs.encode_change(item)
                key = item.person_id.encode()
                await producer.send_and_wait(settings.changes_topic, value, key=key)
    finally:
        await producer.stop()


async def drain(consumer: ChangeConsumer, handler: Any, records: int, timeout: float = 60) -> int:
    """Poll until `records` records were processed (fails on more, or after `timeout`)."""
    done = 0
    deadline = time.monotonic() + timeout
    while done < records:
        assert time.monotonic() < deadline, f"{done} of {records} records after {timeout}s"
        done += await consumer.poll(handler, timeout_ms=200)
    done += await consumer.poll(handler, timeout_ms=500)  # nothing more may come
    assert done == records
    return done


async def nothing_after_joining(consumer: ChangeConsumer, handler: Any) -> int:
    """Records processed until the consumer holds partitions, plus one more fetch: 0 when
    the group's commits cover everything."""
    done = 0
    deadline = time.monotonic() + 60
    while not consumer.assignment():
        assert time.monotonic() < deadline, "no partitions assigned after 60s"
        done += await consumer.poll(handler, timeout_ms=200)
    return done + await consumer.poll(handler, timeout_ms=1000)


def counted(name: str, outcome: str) -> float:
    value = metrics.AUTOMATION.get_sample_value(
        "touchflow_automation_changes_total", {"consumer": name, "outcome": outcome}
    )
    return value or 0.0


class Crash(Exception):
    """The process dies after handling, before the commit (a kill -9 at the worst moment)."""


class CrashBeforeCommit(ChangeConsumer):
    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        raise Crash


async def test_redelivery_after_a_crash_has_no_second_effect(topics: Settings) -> None:
    settings = topics
    people = [f"p-{n}" for n in range(6)]
    changes: list[SegmentChange | bytes] = [c for p in people for c in history("lumi", p)]
    changes += history("mosu", "p-0")  # another brand: filtered out
    changes.append(history("lumi", "p-1")[1])  # the worker sent p-1's seq 2 twice
    await produce(settings, changes)
    total = len(changes)  # 6*4 + 4 + 1 = 29 records

    effects: list[tuple[str, int]] = []  # the side effects (e.g. coupons issued)

    async def handler(change: SegmentChange) -> None:
        effects.append((change.person_id, change.seq))

    wanted = Filter(brands=frozenset({"lumi"}), dimensions=frozenset({"lifecycle"}))
    group = f"{settings.app_id}-winback"
    first = CrashBeforeCommit(
        settings,
        group=group,
        filters=wanted,
        start_from="earliest",
        name=f"{group}-1",
        kafka_options=FAST,
    )
    await first.start()
    with pytest.raises(Crash):
        while True:
            await first.poll(handler)
    await first.stop()
    handled_before_crash = len(effects)
    assert handled_before_crash > 0

    second = ChangeConsumer(
        settings,
        group=group,
        filters=wanted,
        start_from="earliest",
        name=f"{group}-2",
        kafka_options=FAST,
    )
    await second.start()
    try:
        await drain(second, handler, total)  # nothing was committed: all 29 come again
    finally:
        await second.stop()

    # 6 people x 3 lifecycle changes of brand lumi: each handled exactly once, in seq order.
    assert Counter(effects) == {(p, s): 1 for p in people for s in (1, 2, 3)}
    for p in people:
        assert [s for q, s in effects if q == p] == [1, 2, 3]
    # The second consumer saw again what the first had handled, and dropped it by seq.
    assert counted(f"{group}-2", "duplicate") == handled_before_crash + 1  # + the repeat
    assert counted(f"{group}-2", "handled") == 18 - handled_before_crash
    # Filtered: 6 tags + mosu's 4 changes; the repeated p-1 seq 2 is a duplicate either way.
    assert counted(f"{group}-2", "filtered") == 10
    assert counted(f"{group}-1", "handled") + counted(f"{group}-2", "handled") == 18

    # Committed now: a restart of the group gets nothing (though a group without commits
    # would start from the oldest change), and handles nothing again.
    third = ChangeConsumer(
        settings,
        group=group,
        filters=wanted,
        start_from="earliest",
        name=f"{group}-3",
        kafka_options=FAST,
    )
    await third.start()
    try:
        assert await nothing_after_joining(third, handler) == 0
    finally:
        await third.stop()
    assert len(effects) == 18


async def test_a_poison_change_goes_to_the_dlq_and_the_partition_moves_on(
    topics: Settings,
) -> None:
    settings = topics
    changes: list[SegmentChange | bytes] = [
        *history("lumi", "p-ok"),
        *history("lumi", "p-poison"),
        *history("lumi", "p-refused"),
        b"\x07not-a-change",
    ]
    await produce(settings, changes)
    attempts: Counter[tuple[str, int]] = Counter()
    handled: list[str] = []

    async def handler(change: SegmentChange) -> None:
        attempts[(change.person_id, change.seq)] += 1
        if change.person_id == "p-poison" and change.seq == 2:
            raise RuntimeError("coupon service says no")
        if change.person_id == "p-refused" and change.seq == 1:
            raise Permanent("no coupon for this brand")
        handled.append(idempotency_key(change))

    group = f"{settings.app_id}-poison"
    quick = Backoff(initial_seconds=0.01, max_seconds=0.05)
    consumer = ChangeConsumer(
        settings,
        group=group,
        max_attempts=3,
        backoff=quick,
        start_from="earliest",
        kafka_options=FAST,
    )
    await consumer.start()
    try:
        await drain(consumer, handler, len(changes))
    finally:
        await consumer.stop()

    assert attempts[("p-poison", 2)] == 3  # max_attempts
    assert attempts[("p-refused", 1)] == 1  # Permanent: not retried
    # Everything after the poison change, even the same person's next ones, was handled.
    assert "lumi:p-poison:3" in handled and "lumi:p-poison:4" in handled
    assert len(handled) == 12 - 2
    assert counted(group, "dead_lettered") == 3
    failures = metrics.AUTOMATION.get_sample_value(
        "touchflow_automation_handler_failures_total", {"consumer": group}
    )
    assert failures == 3  # the poison change's three attempts

    dead = await read_topic(settings.kafka_bootstrap, f"{group}.dlq", 3)
    by_reason = {dict(r.headers)["touchflow.reason"].decode(): r for r in dead}
    assert set(by_reason) == {"retries_exhausted", "rejected", "bad_magic"}
    poison = by_reason["retries_exhausted"]
    h = {k: v.decode() for k, v in poison.headers}
    assert h["touchflow.attempts"] == "3" and h["touchflow.consumer"] == group
    assert h["__connect.errors.topic"] == settings.changes_topic
    assert h["__connect.errors.exception.message"] == "coupon service says no"
    assert h["__connect.errors.exception.class.name"] == "RuntimeError"
    original = Codecs().decode_change(poison.value)
    assert (original.person_id, original.seq) == ("p-poison", 2)
    assert dict(by_reason["rejected"].headers)["touchflow.attempts"] == b"1"
    assert by_reason["bad_magic"].value == b"\x07not-a-change"

    # A restart re-runs nothing: the dead-lettered change is not retried again.
    again = ChangeConsumer(
        settings, group=group, max_attempts=3, start_from="earliest", kafka_options=FAST
    )
    await again.start()
    try:
        assert await nothing_after_joining(again, handler) == 0
    finally:
        await again.stop()
    assert attempts[("p-poison", 2)] == 3


async def test_winback_example_issues_a_coupon_per_at_risk_customer(
    topics: Settings, tmp_path: Path
) -> None:
    settings = topics
    await produce(settings, [*history("lumi", "p-a"), *history("lumi", "p-b")])
    env = cli_env(settings, tmp_path / "example.yaml")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "winback_coupon.py"), "--from-beginning",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while sum("coupon" in line for line in lines) < 2:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, "the example exited:\n" + "".join(lines)
            lines.append(line.decode())
    finally:
        process.terminate()
        await process.wait()
    coupons = [line for line in lines if "coupon" in line]
    assert sorted(coupons) == [
        '{"brand": "lumi", "coupon": "WINBACK-20", "idempotency_key": "lumi:p-a:3", '
        '"person_id": "p-a"}\n',
        '{"brand": "lumi", "coupon": "WINBACK-20", "idempotency_key": "lumi:p-b:3", '
        '"person_id": "p-b"}\n',
    ]
