"""`touchflow publish` as a real process against the real broker: good lines reach the
topic pseudonymised and keyed by person, bad ones land in the rejects file with their
reason, and the exit code says which happened."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.broker import free_port
from pipeline.codec import Codecs
from pipeline.identity import partition_key
from pipeline.pii import is_pseudonymised
from pipeline.settings import Settings
from tests.integration.helpers import read_topic, run_cli

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
RAW_PHONE = "+86 139-0000-1234"


def _purchase(event_id: str, amount: int = 9_900, at: int = NOW - 60_000) -> dict[str, object]:
    return {
        "event_id": event_id, "type": "purchase", "brand": "lumi", "channel": "store",
        "user": {"id_type": "phone", "id": RAW_PHONE}, "occurred_at": at,
        "payload": {"order_id": f"o-{event_id}", "amount_minor": amount},
    }  # fmt: skip


LINES = [
    json.dumps(_purchase("p1")),
    "",  # blank lines are skipped, not rejected
    "{not json",
    json.dumps({**_purchase("p2"), "type": "teleport"}),
    json.dumps({k: v for k, v in _purchase("p3").items() if k != "brand"}),
    json.dumps(_purchase("p4", amount=-5)),
    json.dumps(_purchase("p5", at=NOW + 86_400_000)),
    json.dumps({"event_id": "c1", "type": "chat", "brand": "lumi", "channel": "wecom",
                "user": {"id_type": "openid", "id": "oRaw-openid-1"}, "occurred_at": NOW - 1,
                "payload": {"direction": "inbound", "party": "customer"}}),
]  # fmt: skip
EXPECTED_REJECTS = [
    (3, "malformed"), (4, "unknown_type"), (5, "missing_field"), (6, "bad_amount"),
    (7, "bad_timestamp"),
]  # fmt: skip


async def test_publish_jsonl_sends_good_lines_and_rejects_bad_ones(
    topics: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(LINES) + "\n")
    rejects = tmp_path / "rejects.jsonl"
    done = run_cli(topics, tmp_path / "c.yaml", "publish", str(source), "--rejects", str(rejects))

    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary == {
        "lines": 7, "published": 2, "rejected": 5, "rejects_file": str(rejects),
    }  # fmt: skip
    assert "publish: 7 lines, 5 rejected" in done.stderr  # the progress line
    got = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in got] == EXPECTED_REJECTS
    assert [r["original"] for r in got] == [LINES[n - 1] for n, _ in EXPECTED_REJECTS]
    assert "type 'teleport' is not one of" in got[1]["message"]

    records = await read_topic(topics.kafka_bootstrap, topics.events_topic, 2)
    events = {Codecs().decode_event(r.value): r.key for r in records}
    assert sorted(e.event_id for e in events) == ["c1", "p1"]
    for event, key in events.items():
        assert is_pseudonymised(event.user.id)
        assert key == partition_key(event.user)
    assert RAW_PHONE.encode() not in b"".join(r.value for r in records)


async def test_publish_csv_through_a_column_map(topics: Settings, tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(
        "order_no,mobile,paid_at_ms,amount_fen\n"
        f"A-1,13900001234,{NOW - 5_000},19900\n"
        f"A-2,13900001234,{NOW - 4_000},19.90\n"
    )
    (tmp_path / "map.yaml").write_text(
        "event_id: order_no\ntype: {value: purchase}\nbrand: {value: lumi}\n"
        "channel: {value: store}\nuser.id_type: {value: phone}\nuser.id: mobile\n"
        "occurred_at: paid_at_ms\npayload.order_id: order_no\n"
        "payload.amount_minor: amount_fen\npayload.place: {value: store}\n"
    )
    args = ["publish", str(tmp_path / "orders.csv"), "--format", "csv"]
    done = run_cli(topics, tmp_path / "c.yaml", *args, "--csv-map", str(tmp_path / "map.yaml"))
    assert done.returncode == 1, done.stderr
    (reject,) = [json.loads(x) for x in (tmp_path / "orders.csv.rejects.jsonl").open()]
    assert (reject["line"], reject["reason"]) == (3, "malformed")
    assert reject["original"] == f"A-2,13900001234,{NOW - 4_000},19.90"

    (record,) = await read_topic(topics.kafka_bootstrap, topics.events_topic, 1)
    event = Codecs().decode_event(record.value)
    assert (event.event_id, event.payload.amount_minor) == ("A-1", 19_900)  # type: ignore[union-attr]
    assert is_pseudonymised(event.user.id)


def test_usage_and_connection_errors_exit_2(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "one.jsonl"
    source.write_text(LINES[0] + "\n")
    no_map = run_cli(settings, tmp_path / "c.yaml", "publish", str(source), "--format", "csv")
    assert (no_map.returncode, no_map.stderr.strip()) == (
        2, "touchflow publish: --format csv needs --csv-map MAP.yaml",
    )  # fmt: skip
    missing = run_cli(settings, tmp_path / "c.yaml", "publish", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    nobody = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    down = run_cli(nobody, tmp_path / "c.yaml", "publish", str(source))
    assert down.returncode == 2, down.stderr
    assert "touchflow publish:" in down.stderr
