"""Every report on a known story pushed through the real pipeline (publish -> worker ->
sink -> chDB), compared with figures worked out by hand below.

Thresholds are set so that time alone moves nobody during the story (Aug-Oct 2026):
recency thresholds of 400+ days keep R at 5, lifecycle `new` lasts 200 days and at risk
comes after 300 (no rhythm below 10 orders). So RFM segments follow F and M only:
F = 1 + #{2,3,5,8 <= orders}, M = 1 + #{20000,50000,100000,300000 <= amount (fen)}, high
at >= 3; lifecycle is `new` with one kept order, `active` with two or more, none with none.

The story (lumi unless noted; day = 2026-MM-DD 10:00 UTC):

  ann  wechat_oa: join 08-01; buys o1 30000 08-05, o2 40000 09-04, o3 20000 10-04; shares
       to cat 09-01, to eve 09-03, to nobody 09-03 11:00. mosu: buys o14 30000 09-12.
  bob  wecom: join 08-10; buys o4 15000 08-12, refunded whole 08-14; buys o5 25000 09-20.
  cat  wechat_oa: join 09-02 referred by ann; buys o6 60000 09-10.
  dan  douyin: join 09-05; inbound chat 09-06.
  eve  wechat_oa: join 09-04 referred by ann; inbound chat 09-05.
  fay  wecom: join 09-15; buys o7 50000 10-02; shares to gus 10-03; buys o8 10000 10-12,
       4000 of it refunded 10-13.
  gus  wechat_oa: join 10-04 referred by fay; buys o9 9900 10-06.
  hal  two identities: hw (wecom) joins 08-20, buys o10 20000 08-22; ho (wechat_oa) chats
       09-24, buys o11 35000 09-25 and identifies as hw 09-26 -> one person (hw survives).
  kim  wecom: join 08-25; buys o15 100000 08-26, o16 100000 09-15, o17 150000 09-16.
  leo  wechat_oa: inbound chat 10-05 (no join).
  ivy  mosu, douyin: join 09-08; buys o12 120000 09-09, o13 80000 10-10.
  jay  mosu, wechat_oa: join 10-01; outbound chat (the brand wrote) 10-02.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from pipeline import cli
from pipeline.events import (
    Chat,
    EventType,
    Identify,
    Join,
    Purchase,
    Refund,
    Share,
    Touchpoint,
    UserRef,
)
from pipeline.identity import seed_of
from pipeline.settings import LifecycleSettings, RfmSettings, Settings
from sinks import reports, store
from sinks.writer import ClickHouseSink
from tests.integration.helpers import async_wait_until, publish

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "rfm": RfmSettings(recency_days=(400, 500, 600, 700)),
            "lifecycle": LifecycleSettings(
                new_days=200,
                at_risk_days=300,
                dormant_days=400,
                churned_days=500,
                rhythm_min_orders=10,
            ),
        }
    )


def user(id_type: str, n: int) -> UserRef:
    return UserRef(id_type, f"h1:{n:032x}")


ANN, BOB, CAT, DAN = (
    user("openid", 1),
    user("external_userid", 2),
    user("openid", 3),
    user("openid", 4),
)
EVE, FAY, GUS = user("openid", 5), user("external_userid", 6), user("openid", 7)
KIM, LEO, IVY, JAY = (
    user("external_userid", 11),
    user("openid", 12),
    user("openid", 9),
    user("openid", 10),
)


def hal_identities() -> tuple[UserRef, UserRef]:
    """hw (wecom) and ho (wechat_oa) with seed(hw) < seed(ho): hw's id survives the merge."""
    for n in range(100, 200):
        hw, ho = user("external_userid", n), user("openid", n + 1000)
        if seed_of(hw) < seed_of(ho):
            return hw, ho
    raise AssertionError("no pair")


HW, HO = hal_identities()


def at(month: int, day: int, hour: int = 10) -> int:
    return int(datetime(2026, month, day, hour, tzinfo=UTC).timestamp() * 1000)


def story() -> tuple[list[Touchpoint], list[Touchpoint]]:
    """(events up to hal's merge, the rest): the merge is stored before the rest is sent."""
    n = 0

    def ev(u: UserRef, brand: str, channel: str, t: int, payload: Any) -> Touchpoint:
        nonlocal n
        n += 1
        etype = {
            Join: EventType.JOIN, Purchase: EventType.PURCHASE, Refund: EventType.REFUND,
            Chat: EventType.CHAT, Share: EventType.SHARE, Identify: EventType.IDENTIFY,
        }[type(payload)]  # fmt: skip
        return Touchpoint(f"r{n}", etype, brand, channel, u, t, payload)

    lumi, mosu, oa, wecom, douyin = "lumi", "mosu", "wechat_oa", "wecom", "douyin"
    inbound = Chat("inbound", "customer")
    events = [
        ev(ANN, lumi, oa, at(8, 1), Join("follow", "qr_code")),
        ev(ANN, lumi, oa, at(8, 5), Purchase("o1", 30_000)),
        ev(BOB, lumi, wecom, at(8, 10), Join("add_friend", "live_stream")),
        ev(BOB, lumi, wecom, at(8, 12), Purchase("o4", 15_000)),
        ev(BOB, lumi, wecom, at(8, 14), Refund("o4", 15_000)),
        ev(HW, lumi, wecom, at(8, 20), Join("add_friend", "store")),
        ev(HW, lumi, wecom, at(8, 22), Purchase("o10", 20_000)),
        ev(KIM, lumi, wecom, at(8, 25), Join("add_friend", "qr_code")),
        ev(KIM, lumi, wecom, at(8, 26), Purchase("o15", 100_000)),
        ev(ANN, lumi, oa, at(9, 1), Share("c1", CAT)),
        ev(CAT, lumi, oa, at(9, 2), Join("follow", "referral", ANN)),
        ev(ANN, lumi, oa, at(9, 3), Share("c1", EVE)),
        ev(ANN, lumi, oa, at(9, 3, 11), Share("c2")),
        ev(ANN, lumi, oa, at(9, 4), Purchase("o2", 40_000)),
        ev(EVE, lumi, oa, at(9, 4), Join("follow", "referral", ANN)),
        ev(DAN, lumi, douyin, at(9, 5), Join("follow", "ad")),
        ev(EVE, lumi, oa, at(9, 5), inbound),
        ev(DAN, lumi, douyin, at(9, 6), inbound),
        ev(IVY, mosu, douyin, at(9, 8), Join("follow", "ad")),
        ev(IVY, mosu, douyin, at(9, 9), Purchase("o12", 120_000)),
        ev(CAT, lumi, oa, at(9, 10), Purchase("o6", 60_000)),
        ev(ANN, mosu, oa, at(9, 12), Purchase("o14", 30_000)),
        ev(FAY, lumi, wecom, at(9, 15), Join("add_friend", "qr_code")),
        ev(KIM, lumi, wecom, at(9, 15), Purchase("o16", 100_000)),
        ev(KIM, lumi, wecom, at(9, 16), Purchase("o17", 150_000)),
        ev(BOB, lumi, wecom, at(9, 20), Purchase("o5", 25_000)),
        ev(HO, lumi, oa, at(9, 24), inbound),
        ev(HO, lumi, oa, at(9, 25), Purchase("o11", 35_000)),
        ev(HO, lumi, oa, at(9, 26), Identify((HW,))),
    ]
    rest = [
        ev(JAY, mosu, oa, at(10, 1), Join("follow", "qr_code")),
        ev(FAY, lumi, wecom, at(10, 2), Purchase("o7", 50_000)),
        ev(JAY, mosu, oa, at(10, 2), Chat("outbound", "staff")),
        ev(FAY, lumi, wecom, at(10, 3), Share("c3", GUS)),
        ev(ANN, lumi, oa, at(10, 4), Purchase("o3", 20_000)),
        ev(GUS, lumi, oa, at(10, 4), Join("follow", "referral", FAY)),
        ev(LEO, lumi, oa, at(10, 5), inbound),
        ev(GUS, lumi, oa, at(10, 6), Purchase("o9", 9_900)),
        ev(IVY, mosu, douyin, at(10, 10), Purchase("o13", 80_000)),
        ev(FAY, lumi, wecom, at(10, 12), Purchase("o8", 10_000)),
        ev(FAY, lumi, wecom, at(10, 13), Refund("o8", 4_000)),
    ]
    return events, rest


def d(month: int, day: int) -> date:
    return date(2026, month, day)


def expected() -> dict[tuple[str, str | None, date | None, date | None], list[tuple[Any, ...]]]:
    """(report, brand, since, until) -> rows, worked out by hand from the story."""
    ann, fay = seed_of(ANN), seed_of(FAY)
    return {
        # Segments now; revenue = purchases - refunds of the range, per person.
        # lumi: important_value ann (3 orders, 90000) + kim (3, 350000);
        # important_develop cat (1, 60000), fay (2, 56000), hal (2 via two ids, 55000);
        # general_develop bob (1 kept, 15000-15000+25000), gus (1, 9900).
        # mosu: important_develop ivy (2, 200000); general_develop ann (1, 30000).
        ("rfm-matrix", None, None, None): [
            ("lumi", "general_develop", 2, 34_900),
            ("lumi", "important_develop", 3, 171_000),
            ("lumi", "important_value", 2, 440_000),
            ("mosu", "general_develop", 1, 30_000),
            ("mosu", "important_develop", 1, 200_000),
        ],
        # September only: ann o2 40000 + kim o16+o17 250000; cat 60000 + fay 0 + hal o11
        # 35000; bob o5 25000 + gus 0.
        ("rfm-matrix", "lumi", d(9, 1), d(9, 30)): [
            ("lumi", "general_develop", 2, 25_000),
            ("lumi", "important_develop", 3, 95_000),
            ("lumi", "important_value", 2, 290_000),
        ],
        # By acquisition channel (earliest join), cumulative: aware, >=I, >=P, L.
        # lumi (none): leo I. douyin: dan I. wechat_oa: ann L, cat P, eve I, gus P.
        # wecom: bob P, fay L, hal L (hw joined on wecom), kim L.
        # mosu (none): ann P. douyin: ivy L. wechat_oa: jay A (an outbound chat is no interest).
        ("aipl-funnel", None, None, None): [
            ("lumi", "(none)", 1, 1, 0, 0),
            ("lumi", "douyin", 1, 1, 0, 0),
            ("lumi", "wechat_oa", 4, 4, 3, 1),
            ("lumi", "wecom", 4, 4, 4, 3),
            ("mosu", "(none)", 1, 1, 1, 0),
            ("mosu", "douyin", 1, 1, 1, 1),
            ("mosu", "wechat_oa", 1, 0, 0, 0),
        ],
        # First seen in September: cat P, eve I (wechat_oa), dan I (douyin), fay L (wecom);
        # hal was first seen 08-20 (hw).
        ("aipl-funnel", "lumi", d(9, 1), d(9, 30)): [
            ("lumi", "douyin", 1, 1, 0, 0),
            ("lumi", "wechat_oa", 2, 2, 1, 0),
            ("lumi", "wecom", 1, 1, 1, 1),
        ],
        # Before 09-01 -> end of 09-30: ann new -> active (o2); hal new -> active (the merge
        # gives two orders); bob none (o4 refunded whole) -> new (o5); cat none -> new.
        # kim is active from 09-15 but new before: new -> active too.
        ("lifecycle-flow", "lumi", d(9, 1), d(9, 30)): [
            ("lumi", "(none)", "new", 2),
            ("lumi", "new", "active", 3),
        ],
        # Kept orders (o4 refunded whole is not): lumi buyers ann, bob, cat, fay, gus, hal,
        # kim = 7; repeat ann, fay, hal, kim = 4 -> 0.5714. Intervals (days): ann 30, 30;
        # fay 10; hal 34; kim 20, 1 -> mean 125/6 = 20.83, median (20+30)/2 = 25.
        # mosu: ann, ivy; repeat ivy (31 days).
        ("repurchase", None, None, None): [
            ("lumi", 7, 4, 0.5714, 20.83, 25.0),
            ("mosu", 2, 1, 0.5, 31.0, 31.0),
        ],
        # Cohorts by first kept order: lumi Aug ann, hal, kim (Sep: all three again; Oct: ann);
        # Sep bob, cat; Oct fay, gus. mosu Sep ann, ivy (Oct: ivy).
        ("cohort-retention", None, None, None): [
            ("lumi", d(8, 1), 0, 3, 3, 1.0),
            ("lumi", d(8, 1), 1, 3, 3, 1.0),
            ("lumi", d(8, 1), 2, 3, 1, 0.3333),
            ("lumi", d(9, 1), 0, 2, 2, 1.0),
            ("lumi", d(10, 1), 0, 2, 2, 1.0),
            ("mosu", d(9, 1), 0, 2, 2, 1.0),
            ("mosu", d(9, 1), 1, 2, 1, 0.5),
        ],
        # Customers by acquisition channel, buyers, net kept revenue, revenue per customer.
        # lumi wecom: bob 25000, fay 56000, hal 55000, kim 350000 = 486000 / 4.
        # wechat_oa: ann 90000, cat 60000, eve 0, gus 9900 = 159900 / 4.
        ("channel-contribution", None, None, None): [
            ("lumi", "wecom", 4, 4, 486_000, 121_500.0),
            ("lumi", "wechat_oa", 4, 3, 159_900, 39_975.0),
            ("lumi", "(none)", 1, 0, 0, 0.0),
            ("lumi", "douyin", 1, 0, 0, 0.0),
            ("mosu", "douyin", 1, 1, 200_000, 200_000.0),
            ("mosu", "(none)", 1, 1, 30_000, 30_000.0),
            ("mosu", "wechat_oa", 1, 0, 0, 0.0),
        ],
        # Edges: ann->cat (share 09-01, join 09-02), ann->eve (share 09-03, join 09-04),
        # fay->gus (share 10-03, join 10-04); the share to nobody is no edge. Converted: cat
        # (09-10), gus (10-06); eve never bought. Totals: 3 invitations, 3 invitees,
        # 2 converted, 2 sharers -> K = 1.0; ann first (more invitations).
        ("fission", None, None, None): [
            ("lumi", "*", 3, 3, 2, 1.0),
            ("lumi", ann, 2, 2, 1, 1.0),
            ("lumi", fay, 1, 1, 1, 1.0),
        ],
        # Only September's edges: fay's are out; one sharer, one converted -> K = 1.0.
        ("fission", "lumi", d(9, 1), d(9, 30)): [
            ("lumi", "*", 2, 2, 1, 1.0),
            ("lumi", ann, 2, 2, 1, 1.0),
        ],
    }


def membership_expected() -> dict[tuple[str, date, date], list[tuple[Any, ...]]]:
    """Lifecycle / RFM / AIPL members at the end of each day with changes (layers aside)."""
    return {
        # lumi, end of 09-25 (ho's merge is on 09-26), everyone seen so far:
        #   AIPL: A fay (joined only); I dan, eve; L ann, kim; P bob, cat, hw, ho.
        #   lifecycle: active ann, kim; new bob, cat, hw, ho.
        #   RFM: ann 2 orders 70000 and cat 1/60000 important_develop; kim important_value;
        #   bob 1/25000, hw 1/20000, ho 1/35000 general_develop.
        # End of 09-26: ho is merged away; hal (hw) has 2 orders, 55000: L, active,
        # important_develop.
        ("lumi", d(9, 25), d(9, 26)): [
            ("lumi", d(9, 25), "aipl_stage", "A", 1),
            ("lumi", d(9, 25), "aipl_stage", "I", 2),
            ("lumi", d(9, 25), "aipl_stage", "L", 2),
            ("lumi", d(9, 25), "aipl_stage", "P", 4),
            ("lumi", d(9, 25), "lifecycle", "active", 2),
            ("lumi", d(9, 25), "lifecycle", "new", 4),
            ("lumi", d(9, 25), "rfm_segment", "general_develop", 3),
            ("lumi", d(9, 25), "rfm_segment", "important_develop", 2),
            ("lumi", d(9, 25), "rfm_segment", "important_value", 1),
            ("lumi", d(9, 26), "aipl_stage", "A", 1),
            ("lumi", d(9, 26), "aipl_stage", "I", 2),
            ("lumi", d(9, 26), "aipl_stage", "L", 3),
            ("lumi", d(9, 26), "aipl_stage", "P", 2),
            ("lumi", d(9, 26), "lifecycle", "active", 3),
            ("lumi", d(9, 26), "lifecycle", "new", 2),
            ("lumi", d(9, 26), "rfm_segment", "general_develop", 1),
            ("lumi", d(9, 26), "rfm_segment", "important_develop", 3),
            ("lumi", d(9, 26), "rfm_segment", "important_value", 1),
        ],
        # mosu, end of 10-10 (ivy's second order): ann P, new, general_develop; ivy L,
        # active, important_develop; jay A.
        ("mosu", d(10, 10), d(10, 10)): [
            ("mosu", d(10, 10), "aipl_stage", "A", 1),
            ("mosu", d(10, 10), "aipl_stage", "L", 1),
            ("mosu", d(10, 10), "aipl_stage", "P", 1),
            ("mosu", d(10, 10), "lifecycle", "active", 1),
            ("mosu", d(10, 10), "lifecycle", "new", 1),
            ("mosu", d(10, 10), "rfm_segment", "general_develop", 1),
            ("mosu", d(10, 10), "rfm_segment", "important_develop", 1),
        ],
    }


def actual(client: Any) -> dict[Any, list[tuple[Any, ...]]]:
    got: dict[Any, list[tuple[Any, ...]]] = {}
    for name, brand, since, until in expected():
        got[name, brand, since, until] = reports.run(
            client, name, brand=brand, since=since, until=until
        ).rows
    for brand, since, until in membership_expected():
        rows = reports.run(client, "segment-membership", brand=brand, since=since, until=until).rows
        got[brand, since, until] = [r for r in rows if not str(r[2]).startswith("layer:")]
    return got


def wanted() -> dict[Any, list[tuple[Any, ...]]]:
    return {**expected(), **membership_expected()}


async def test_every_report_on_a_known_story(
    settings: Settings, sink: ClickHouseSink, workers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = store.connect(settings.resolved_clickhouse_dsn(), settings.clickhouse_database)
    worker = workers()
    first, rest = story()
    await publish(settings, list(first))

    async def merged() -> bool:
        rows = client.query("SELECT seed, person_id FROM identity_links FINAL").result_rows
        return rows == [(seed_of(HO), seed_of(HW))]

    await async_wait_until(merged, 90, "hal's two identities merged")
    await publish(settings, list(rest))

    async def all_stored() -> bool:
        return actual(client) == wanted()

    try:
        await async_wait_until(all_stored, 90, "every report as worked out")
    except AssertionError:
        assert worker.alive(), worker.log_tail()
    got = actual(client)
    for key, rows in wanted().items():
        assert got[key] == rows, key

    # The materialized views kept up: ann's two shares on 09-03, hal's merge on 09-26.
    daily = client.query(
        "SELECT sum(events), uniqMerge(people) FROM events_daily"
        " WHERE day = '2026-09-03' AND brand = 'lumi' AND type = 'share'"
    ).result_rows
    assert daily == [(2, 1)]
    merges = client.query(
        "SELECT sum(changes) FROM segment_changes_daily"
        " WHERE day = '2026-09-26' AND brand = 'lumi' AND dimension = 'identity'"
    ).result_rows
    assert merges == [(1,)]
    edges = client.query(
        "SELECT kind, count() FROM referral_edges FINAL GROUP BY kind ORDER BY kind"
    )
    assert edges.result_rows == [("join", 3), ("share", 3)]

    # The command: `touchflow report fission --brand lumi --format csv`.
    monkeypatch.setenv("TOUCHFLOW_CLICKHOUSE_DSN", settings.resolved_clickhouse_dsn())
    monkeypatch.setenv("TOUCHFLOW_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    args = ["report", "fission", "--brand", "lumi", "--until", "2026-09-30", "--format", "csv"]
    assert cli.main(args) == 0
    table = list(csv.reader(io.StringIO(out.getvalue())))
    assert table == [
        ["brand", "sharer", "invitations", "invitees", "converted_invitees", "k_factor"],
        ["lumi", "*", "2", "2", "1", "1.0"],
        ["lumi", seed_of(ANN), "2", "2", "1", "1.0"],
    ]


def test_every_report_runs_on_an_empty_store(chdb_dsn: str) -> None:
    """Fresh migrations (twice: the second run applies nothing), then every report: valid
    SQL on this engine, its declared columns, no rows."""
    db = f"t_empty_{uuid.uuid4().hex[:8]}"
    applied = store.migrate(chdb_dsn, db)
    assert [name[:4] for name in applied] == [
        "0001",
        "0002",
        "0003",
        "0004",
        "0005",
        "0006",
        "0007",
    ]
    assert store.migrate(chdb_dsn, db) == []
    client = store.connect(chdb_dsn, db)
    for name in reports.NAMES:
        assert reports.run(client, name) == reports.ReportResult(reports.COLUMNS[name], [])
