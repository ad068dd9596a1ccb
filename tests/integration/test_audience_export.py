"""`touchflow audience export` on the real stack: a segment's current members (merged-away
people excluded) with each hashed channel id seen in the brand's events, including the ids
of people merged into them; CSV and Parquet, both written by ClickHouse itself."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.events import Chat, EventType, Identify, Purchase, Touchpoint, UserRef
from pipeline.identity import seed_of
from pipeline.settings import Settings
from sinks.writer import ClickHouseSink
from tests.integration.helpers import async_wait_until, cli_env, publish

pytestmark = pytest.mark.integration

A = UserRef("member_id", "h1:" + "a" * 32)  # two orders: L
B = UserRef("openid", "h1:" + "b" * 32)  # one order, then identifies as C: B+C is L
C = UserRef("member_id", "h1:" + "c" * 32)  # one order
D = UserRef("openid", "h1:" + "d" * 32)  # a chat at lumi (I); two orders at mosu (L there)
E = UserRef("unionid", "h1:" + "e" * 32)  # one order: P


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"identity_resolution": True})


def run_export(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> int:
    """`touchflow audience export ARGS` in this process: chDB allows one engine per process,
    and this one already holds the store the sink writes."""
    for key, value in cli_env(settings, tmp_path / "cli.yaml").items():
        if key.startswith("TOUCHFLOW_"):
            monkeypatch.setenv(key, value)
    return cli.main(["audience", "export", *args])


async def test_export_lists_current_members_with_their_hashed_ids(
    settings: Settings,
    sink: ClickHouseSink,
    workers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    at = int(time.time() * 1000) - 3_600_000

    def ev(eid: str, brand: str, channel: str, user: UserRef, payload: object) -> Touchpoint:
        kinds = {Purchase: EventType.PURCHASE, Chat: EventType.CHAT, Identify: EventType.IDENTIFY}
        etype = kinds[type(payload)]  # type: ignore[index]
        return Touchpoint(eid, etype, brand, channel, user, at, payload)  # type: ignore[arg-type]

    workers()
    await publish(
        settings,
        [
            ev("a1", "lumi", "store", A, Purchase("o1", 30_000)),
            ev("a2", "lumi", "store", A, Purchase("o2", 20_000)),
            ev("b1", "lumi", "wechat_mp", B, Purchase("o3", 10_000)),
            ev("c1", "lumi", "store", C, Purchase("o4", 10_000)),
            ev("d1", "lumi", "wechat_mp", D, Chat("inbound", "customer")),
            ev("d2", "mosu", "store", D, Purchase("o5", 10_000)),
            ev("d3", "mosu", "store", D, Purchase("o6", 10_000)),
            ev("e1", "lumi", "douyin", E, Purchase("o7", 10_000)),
        ],
    )

    async def count(sql: str, n: int) -> bool:
        rows = await sink.query(sql)
        return bool(rows[0][0] == n)

    people = "SELECT count() FROM person_state FINAL"
    await async_wait_until(lambda: count(people, 6), 120, "six (brand, person) states")
    await publish(settings, [ev("link", "lumi", "wechat_mp", B, Identify((C,)))])
    keep = min(seed_of(B), seed_of(C))
    expected_current = sorted([seed_of(A), keep, seed_of(D), seed_of(E)])

    async def merged() -> bool:
        rows = await sink.query(
            "SELECT person_id, lifetime_orders, aipl_stage FROM current_people"
            " WHERE brand = 'lumi' ORDER BY person_id"
        )
        stored = await sink.query("SELECT count() FROM events FINAL")
        return (
            [r[0] for r in rows] == expected_current
            and (keep, 2, "L") in rows
            and (stored[0][0] == 9)
        )

    await async_wait_until(merged, 120, "B and C merged, all nine events stored")

    # By hand: lumi's L members are A (two orders) and B+C (one each). Their ids: A's
    # member id in store; B's openid (wechat_mp, incl. the identify event) and C's member
    # id (store), both under the survivor. D is I at lumi (its L is at mosu), E is P.
    expected = sorted(
        [
            (seed_of(A), "store", "member_id", A.id),
            (keep, "wechat_mp", "openid", B.id),
            (keep, "store", "member_id", C.id),
        ],
        key=lambda r: (r[0], r[2], r[3], r[1]),
    )
    out_csv, out_parquet = tmp_path / "l.csv", tmp_path / "out" / "l.parquet"
    common = ["--brand", "lumi", "--dimension", "aipl_stage", "--segment", "L"]
    code = run_export(settings, tmp_path, monkeypatch, *common, "--output", str(out_csv))
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert (summary["members"], summary["with_ids"], summary["rows"]) == (2, 2, 3)
    with out_csv.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["person_id", "channel", "id_type", "user_id"]
    assert [tuple(r) for r in rows[1:]] == expected

    code = run_export(
        settings, tmp_path, monkeypatch, *common, "--format", "parquet",
        "--output", str(out_parquet),
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    assert out_parquet.read_bytes()[:4] == b"PAR1"
    back = await sink.query(f"SELECT * FROM file('{out_parquet}', Parquet)")
    assert back == expected
    described = await sink.query(f"DESCRIBE TABLE file('{out_parquet}', Parquet)")
    assert [r[0] for r in described] == ["person_id", "channel", "id_type", "user_id"]

    # Only WeChat openids (a list for a WeChat ads upload).
    code = run_export(
        settings, tmp_path, monkeypatch, *common, "--id-type", "openid",
        "--output", str(tmp_path / "openids.csv"),
    )  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 1
    assert (tmp_path / "openids.csv").read_text().splitlines()[1:] == [
        f'"{keep}","wechat_mp","openid","{B.id}"'
    ]

    # Another brand: D is L at mosu; only mosu's events give ids (not D's lumi chat).
    code = run_export(
        settings, tmp_path, monkeypatch, "--brand", "mosu", "--dimension", "aipl_stage",
        "--segment", "L", "--output", str(tmp_path / "mosu.csv"),
    )  # fmt: skip
    assert code == 0
    capsys.readouterr()
    assert (tmp_path / "mosu.csv").read_text().splitlines()[1:] == [
        f'"{seed_of(D)}","store","openid","{D.id}"'
    ]

    # A tag: built-in repeat_buyer (>= 2 orders) at lumi is A and B+C too; a bad dimension
    # is refused before any query.
    code = run_export(
        settings, tmp_path, monkeypatch, "--brand", "lumi", "--dimension", "tag",
        "--segment", "repeat_buyer", "--output", str(tmp_path / "tag.csv"),
    )  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["members"] == 2
    code = run_export(
        settings, tmp_path, monkeypatch, "--brand", "lumi", "--dimension", "rfm",
        "--segment", "x", "--output", str(tmp_path / "bad.csv"),
    )  # fmt: skip
    assert code == 2 and "dimension 'rfm'" in capsys.readouterr().err
    assert not (tmp_path / "bad.csv").exists()
