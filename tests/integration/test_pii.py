"""Raw personal ids given to the SDK appear nowhere downstream: not on any topic (events,
segment changes, the state changelog, the DLQ), not in any ClickHouse table, not in the
worker's log. Both SDK flavours publish; a real worker and the sink process everything."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.codec import Codecs
from pipeline.dlq_cli import read_to_end
from pipeline.sdk import Publisher, SyncPublisher
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration.helpers import Worker, async_wait_until

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
PHONE = "+86 138-0013-8000"
RAW = {  # every raw value, as given and as normalised before hashing
    "phone": [PHONE, "13800138000"],
    "openid": ["oAbCdEf-raw-openid-01"],
    "unionid": ["oU-raw-unionid-02"],
    "invitee": ["oInvitee-raw-openid-03"],
    "member_id": ["M-raw-member-04"],
    "external_userid": ["wm-raw-external-userid-05"],
}


def _event(n: int, type_: str, user: tuple[str, str], payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": f"pii-{n}", "type": type_, "brand": "lumi", "channel": "wecom",
        "user": {"id_type": user[0], "id": user[1]}, "occurred_at": NOW - 3_600_000 + n,
        "payload": payload,
    }  # fmt: skip


U1 = ("openid", RAW["openid"][0])
U4 = ("member_id", RAW["member_id"][0])
UNIONID = {"id_type": "unionid", "id": RAW["unionid"][0]}
INVITEE = {"id_type": "openid", "id": RAW["invitee"][0]}
ASYNC_EVENTS = [
    _event(1, "join", U1, {"kind": "follow", "referrer": UNIONID}),
    _event(2, "share", U1, {"content_id": "c-1", "invitee": INVITEE}),
    _event(3, "purchase", U1, {"order_id": "o-3", "amount_minor": 30_000}),
    _event(4, "identify", U4, {"identities": [{"id_type": "phone", "id": PHONE}, UNIONID]}),
    _event(5, "purchase", U4, {"order_id": "o-5", "amount_minor": 50_000}),
]
SYNC_EVENTS = [
    _event(6, "purchase", ("phone", PHONE), {"order_id": "o-6", "amount_minor": 9_900}),
    _event(7, "purchase", ("external_userid", RAW["external_userid"][0]),
           {"order_id": "o-7", "amount_minor": 19_900}),
]  # fmt: skip
LAST_OF_EACH_PERSON = {"pii-3", "pii-5", "pii-6", "pii-7"}  # purchases: each makes a change


def _leaks(where: str, blob: bytes) -> list[str]:
    return [
        f"{where}: raw {kind} {value!r}"
        for kind, values in RAW.items()
        for value in values
        if value.encode() in blob
    ]


async def test_raw_ids_never_leave_the_sdk(
    topics: Settings, sink: ClickHouseSink, workers: Callable[[], Worker]
) -> None:
    settings = topics
    worker = workers()
    async with Publisher(settings) as publisher:
        for e in ASYNC_EVENTS:
            await publisher.publish(e)
    with SyncPublisher(settings) as sync:
        for e in SYNC_EVENTS:
            sync.publish(e)

    codecs = Codecs()

    async def all_processed_and_stored() -> bool:
        changes, _ = await read_to_end(settings, settings.changes_topic)
        causes = {codecs.decode_change(r.value).cause_event_id for r in changes}
        (stored,) = await sink.query(
            "SELECT (SELECT count() FROM events FINAL), (SELECT count() FROM segment_changes FINAL)"
        )
        return causes >= LAST_OF_EACH_PERSON and stored == (7, len(changes))

    await async_wait_until(all_processed_and_stored, 90, "every event processed and stored")
    assert worker.alive(), worker.log_tail()

    leaks: list[str] = []
    topic_names = [
        settings.events_topic, settings.changes_topic, settings.changelog_topic, settings.dlq_topic,
    ]  # fmt: skip
    counts = {}
    for topic in topic_names:
        records, _ = await read_to_end(settings, topic)
        counts[topic] = len(records)
        for r in records:
            blob = b"".join([r.key or b"", r.value or b"", *(v for _, v in r.headers or ())])
            leaks += _leaks(f"{topic}@{r.partition}:{r.offset}", blob)
    assert counts[settings.events_topic] == 7 and counts[settings.dlq_topic] == 0, counts
    assert counts[settings.changelog_topic] > 0, counts

    tables = await sink.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    assert len(tables) >= 3
    for (table,) in tables:
        # as text: aggregate-function states (daily views) have no Python form
        rows = await sink.query(f"SELECT * APPLY(toString) FROM `{table}`")
        leaks += _leaks(f"table {table}", repr(rows).encode())
    leaks += _leaks("worker log", worker.log.read_bytes())
    assert not leaks, "\n".join(leaks)
