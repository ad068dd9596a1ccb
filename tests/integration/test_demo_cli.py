"""The README's flow through the real command line: `touchflow demo`, then `touchflow sql`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def touchflow(args: list[str], data_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHFLOW_")}
    env["TOUCHFLOW_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_stops_by_itself_and_its_numbers_match_the_store(tmp_path: Path) -> None:
    demo = touchflow(["demo", "--seconds", "8", "--rate", "200"], tmp_path, timeout=240)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    assert summary["drained"] is True
    assert summary["events"] == summary["published"] > 1000
    assert summary["segment_changes"] > 0 and summary["users"] > 0
    assert sum(summary["aipl_stages"].values()) == summary["users"]
    assert "→" in demo.stdout  # segment changes were printed as they happened

    sql = touchflow(
        ["sql", "SELECT count() AS n FROM events FINAL", "--format", "json"], tmp_path, timeout=60
    )
    assert sql.returncode == 0, sql.stderr
    assert json.loads(sql.stdout.strip()) == {"n": summary["events"]}

    changes = touchflow(
        ["sql", "SELECT count() AS n FROM segment_changes FINAL", "--format", "json"],
        tmp_path,
        timeout=60,
    )
    assert json.loads(changes.stdout.strip()) == {"n": summary["segment_changes"]}

    # Raw ids never reach the store: every user id is a keyed hash.
    raw = touchflow(
        ["sql", "SELECT count() FROM events WHERE user_id NOT LIKE 'h1:%'", "--format", "tsv"],
        tmp_path,
        timeout=60,
    )
    assert raw.stdout.split() == ["count()", "0"]


def test_sql_reports_the_servers_error(tmp_path: Path) -> None:
    fresh = touchflow(["sql", "SELECT 1"], tmp_path, timeout=60)
    assert fresh.returncode == 2
    assert "run `touchflow migrate` or `touchflow demo` first" in fresh.stderr

    assert touchflow(["migrate"], tmp_path, timeout=60).returncode == 0
    result = touchflow(["sql", "SELECT no_such_column FROM events"], tmp_path, timeout=60)
    assert result.returncode == 2
    assert "no_such_column" in result.stderr and "Traceback" not in result.stderr
