"""`touchflow rebuild`: history from the real broker replayed under a candidate policy and
compared with the live one; exact counts worked out by hand."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.events import EventType, Purchase, Touchpoint, UserRef
from pipeline.rfm import MS_PER_DAY
from pipeline.settings import Settings
from tests.integration.helpers import publish, run_cli

pytestmark = pytest.mark.integration


async def test_rebuild_reports_who_would_move_under_new_rules(
    topics: Settings, tmp_path: Path
) -> None:
    settings = topics.model_copy(update={"rules": {}})  # live: no tags
    now = int(time.time() * 1000) - MS_PER_DAY
    # Three customers spend 200, 900 and 1500 yuan today; one message is garbage.
    spends = [20_000, 90_000, 150_000]
    events: list[Touchpoint | bytes] = [
        Touchpoint(
            f"b{n}", EventType.PURCHASE, "lumi", "store", UserRef("member_id", f"h1:{n:032x}"),
            now, Purchase(f"o{n}", amount),
        )
        for n, amount in enumerate(spends)
    ]  # fmt: skip
    events.append(b"\x00garbage")
    await publish(settings, events)

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(
        "policy_version: v2\n"
        "rules:\n  default:\n    tags:\n"
        "      - {name: vip, when: {lifetime_amount_minor: {gte: 80000}}}\n"
        "rfm:\n  monetary_minor: [10000, 20000, 100000, 200000]\n"
    )
    out = tmp_path / "diff.json"
    result = run_cli(
        settings, tmp_path / "cfg.yaml", "rebuild", "--config", str(candidate),
        "--output", str(out), "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["events"], summary["rejected"], summary["people"]) == (3, 1, 3)
    assert (summary["live_policy"], summary["candidate_policy"]) == ("v1", "v2")
    assert summary["tags_added"] == {"vip": 2}
    # M under the live thresholds (20k, 50k, 100k, 300k) is 2, 3, 4; under the candidate's
    # (10k, 20k, 100k, 200k) 3, 3, 4. With R5 F1, M >= 3 makes "important": the 200-yuan
    # customer moves from general_develop to important_develop; the others stay.
    assert summary["changed"] == {"tags": 2, "rfm_segment": 1}
    assert summary["moves"]["rfm_segment"] == [
        {"from": "general_develop", "to": "important_develop", "people": 1}
    ]
    examples = json.loads(out.read_text())["examples"]
    assert sorted(map(str, (e.get("tags") for e in examples))) == sorted(
        ["None", "[[], ['vip']]", "[[], ['vip']]"]
    )

    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka_bootstrap: elsewhere:9092\n")
    refused = run_cli(settings, tmp_path / "cfg2.yaml", "rebuild", "--config", str(bad))
    assert refused.returncode == 2
    assert "only policy settings can differ" in refused.stderr
