"""A scripted story through the real broker, a real worker process and chDB.

Customer A joins through WeCom, chats, buys twice, shares; customer B buys once; a garbage
message sits between them. Expected segment changes are worked out by hand from the
default thresholds (RFM: recency (7,30,90,180) days, frequency (2,3,5,8) orders, monetary
(20000,50000,100000,300000) fen, high >= 3; loyalty at 2 orders; lifecycle: new for 30
days after a first order) and one tag rule, VIP from 800 yuan.

Between A's purchases, A's recency passes 7 days (day 9): R drops 5 -> 4 on time alone,
which moves no segment but is one more state write (version).
"""

from __future__ import annotations

import time

import pytest

from pipeline.codec import Codecs
from pipeline.events import Chat, EventType, Join, Purchase, Share, Touchpoint, UserRef
from pipeline.identity import person_id_for
from pipeline.pii import pseudonymise
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration.helpers import PII_KEY, async_wait_until, publish, read_topic

pytestmark = pytest.mark.integration

DAY = 86_400_000
HOUR = 3_600_000
VIP_RULES = {
    "default": {"tags": [{"name": "vip", "when": {"lifetime_amount_minor": {"gte": 80_000}}}]}
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"rules": VIP_RULES})


def story(now_ms: int) -> tuple[list[Touchpoint | bytes], UserRef, UserRef]:
    key = PII_KEY.encode()
    a = UserRef("external_userid", pseudonymise("external_userid", "wm-a-0001", key))
    b = UserRef("openid", pseudonymise("openid", "o-b-0002", key))
    t0 = now_ms - 20 * DAY

    def ev(
        n: str, user: UserRef, channel: str, t: EventType, at: int, payload: object
    ) -> Touchpoint:
        return Touchpoint(n, t, "lumi", channel, user, at, payload)  # type: ignore[arg-type]

    events: list[Touchpoint | bytes] = [
        ev("a1", a, "wecom", EventType.JOIN, t0, Join("add_friend", source="qr_code")),
        ev("b1", b, "wechat_oa", EventType.JOIN, t0 + 1000, Join("follow")),
        ev("a2", a, "wecom", EventType.CHAT, t0 + 60_000, Chat("inbound", "customer")),
        b"\x07not-avro-at-all",
        ev("a3", a, "wecom", EventType.PURCHASE, t0 + DAY, Purchase("o-1", 30_000)),
        ev("a4", a, "wecom", EventType.PURCHASE, t0 + 11 * DAY, Purchase("o-3", 60_000)),
        ev("b2", b, "wechat_oa", EventType.PURCHASE, t0 + 11 * DAY + HOUR, Purchase("o-2", 9_900)),
        ev("a5", a, "wecom", EventType.SHARE, t0 + 12 * DAY, Share("live-room-9")),
    ]
    return events, a, b


async def test_story_gives_exact_segment_changes_and_rows(
    settings: Settings, sink: ClickHouseSink, workers
) -> None:
    now = int(time.time() * 1000)
    events, a, b = story(now)
    pa, pb = person_id_for(a), person_id_for(b)
    worker = workers()
    await publish(settings, events)

    records = await read_topic(settings.kafka_bootstrap, settings.changes_topic, 11, timeout=90)
    assert worker.alive(), worker.log_tail()
    codecs = Codecs()
    got = sorted(
        (
            c.person_id, c.seq, c.dimension, c.from_value, c.to_value, c.cause_event_id,
            (c.scores_after.r, c.scores_after.f, c.scores_after.m),
        )
        for c in (codecs.decode_change(r.value) for r in records)
    )  # fmt: skip
    assert got == sorted(
        [
            (pa, 1, "aipl_stage", "A", "I", "a2", (0, 0, 0)),
            (pa, 2, "rfm_segment", None, "general_develop", "a3", (5, 1, 2)),
            (pa, 3, "aipl_stage", "I", "P", "a3", (5, 1, 2)),
            (pa, 4, "lifecycle", None, "new", "a3", (5, 1, 2)),
            (pa, 5, "rfm_segment", "general_develop", "important_develop", "a4", (5, 2, 3)),
            (pa, 6, "aipl_stage", "P", "L", "a4", (5, 2, 3)),
            (pa, 7, "lifecycle", "new", "active", "a4", (5, 2, 3)),
            (pa, 8, "tag", None, "vip", "a4", (5, 2, 3)),
            (pb, 1, "rfm_segment", None, "general_develop", "b2", (5, 1, 1)),
            (pb, 2, "aipl_stage", "A", "P", "b2", (5, 1, 1)),
            (pb, 3, "lifecycle", None, "new", "b2", (5, 1, 1)),
        ]
    )
    # Each change is keyed by its person, so one person's changes stay in order.
    assert {r.key for r in records} == {pa.encode(), pb.encode()}

    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic, 1)
    assert len(dlq) == 1 and dlq[0].value == b"\x07not-avro-at-all"
    headers = {k: v.decode() for k, v in dlq[0].headers}
    assert headers["touchflow.reason"] == "bad_magic"
    assert headers["__connect.errors.topic"] == settings.events_topic
    assert headers["__connect.errors.offset"].isdigit()
    assert "expected 0" in headers["__connect.errors.exception.message"]

    async def stored() -> bool:
        n = await sink.query(
            "SELECT (SELECT count() FROM events FINAL),"
            " (SELECT count() FROM segment_changes FINAL),"
            " (SELECT sum(version) FROM person_state FINAL)"
        )
        return n[0] == (7, 11, 6 + 2)

    await async_wait_until(stored, 60, "7 events, 11 changes and all state versions stored")
    state = await sink.query(
        "SELECT person_id, version, seq, lifetime_orders, lifetime_amount_minor, engagements,"
        " r, f, m, rfm_segment, aipl_stage, lifecycle, tags, acquisition_source"
        " FROM person_state FINAL ORDER BY person_id"
    )
    assert sorted(state) == sorted(
        [
            # 5 events + the day-9 due time; 8 changes
            (pa, 6, 8, 2, 90_000, 2, 5, 2, 3, "important_develop", "L", "active", ["vip"],
             "qr_code"),
            (pb, 2, 3, 1, 9_900, 0, 5, 1, 1, "general_develop", "P", "new", [], ""),
        ]
    )  # fmt: skip
    rows = await sink.query(
        "SELECT event_id, type, channel, person_id, user_id, amount_minor FROM events FINAL"
        " ORDER BY event_id"
    )
    assert rows == [
        ("a1", "join", "wecom", pa, a.id, 0),
        ("a2", "chat", "wecom", pa, a.id, 0),
        ("a3", "purchase", "wecom", pa, a.id, 30_000),
        ("a4", "purchase", "wecom", pa, a.id, 60_000),
        ("a5", "share", "wecom", pa, a.id, 0),
        ("b1", "join", "wechat_oa", pb, b.id, 0),
        ("b2", "purchase", "wechat_oa", pb, b.id, 9_900),
    ]
    changes = await sink.query(
        "SELECT person_id, seq, dimension, from_value, to_value, rule FROM segment_changes FINAL"
        " WHERE person_id = {p:String} ORDER BY seq",
        {"p": pb},
    )
    assert changes == [
        (pb, 1, "rfm_segment", "", "general_develop", "rfm:R5F1M1/high>=3"),
        (pb, 2, "aipl_stage", "A", "P", "aipl:P"),
        (pb, 3, "lifecycle", "", "new", "lifecycle:new/first_order<30d"),
    ]
