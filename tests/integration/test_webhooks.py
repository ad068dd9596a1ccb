"""`touchflow webhooks` as a real process: real segment changes on the Tansu broker, a real
local HTTP server that fails on purpose (500s, a time-out, an endpoint that is always down),
signatures checked by the server, the dead-letter topic, the rate limit and /metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from pipeline import metrics
from pipeline.broker import free_port
from pipeline.codec import Codecs
from pipeline.settings import Settings
from tests.integration import test_deploy_config as deploy
from tests.integration.helpers import (
    Samples,
    async_wait_until,
    by_labels,
    cli_env,
    get,
    parse,
    read_topic,
    value,
)
from tests.integration.test_automation import history, produce

pytestmark = pytest.mark.integration

SECRET_A = "webhook-secret-a-0123456789"
SECRET_B = "webhook-secret-b-9876543210"


@dataclass
class Receiver:
    """What the HTTP server saw, per path."""

    requests: Counter[str] = field(default_factory=Counter)
    delivered: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    bad_signatures: list[str] = field(default_factory=list)
    arrivals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    attempt_headers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def signed_ok(secret: str, raw: bytes, header: str) -> bool:
    """The receiver's check, written here from the documented scheme (not the library's)."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    t = parts["t"]
    mac = hmac.new(secret.encode(), t.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return abs(time.time() - int(t)) < 300 and hmac.compare_digest(mac, parts["v1"])


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    seen = Receiver()
    release = asyncio.Event()  # the slow endpoint's first answer never comes before the end

    async def handle(request: web.Request) -> web.Response:
        path = request.path.strip("/")
        raw = await request.read()
        seen.requests[path] += 1
        seen.arrivals[path].append(time.monotonic())
        secret = SECRET_A if path == "flaky" else SECRET_B
        if not signed_ok(secret, raw, request.headers["X-Touchflow-Signature"]):
            seen.bad_signatures.append(path)
            return web.Response(status=401)
        key = json.loads(raw)["idempotency_key"]
        assert request.headers["X-Touchflow-Idempotency-Key"] == key
        assert request.headers["Content-Type"] == "application/json"
        seen.attempts[(path, key)] += 1
        seen.attempt_headers[path].append(request.headers["X-Touchflow-Attempt"])
        n = seen.attempts[(path, key)]
        if path == "flaky" and n <= 2:
            return web.Response(status=500)
        if path == "down":
            return web.Response(status=503)
        if path == "slow" and n == 1:
            await release.wait()  # longer than the endpoint's time-out
        if path == "limited":
            assert request.headers["X-Campaign"] == "spring"
        seen.delivered[path].append(key)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{name}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield seen, port
    release.set()
    await runner.cleanup()


def bridge_config(port: int, metrics_port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    at_risk = {"dimensions": ["lifecycle"], "to": ["at_risk"]}
    quick = {"initial_seconds": 0.05, "max_seconds": 0.2}
    return {
        "start_from": "earliest",
        "metrics_port": metrics_port,
        "endpoints": [
            {
                "name": "flaky",
                "url": f"{base}/flaky",
                "secret_env": "TEST_WEBHOOK_SECRET_A",
                "filters": at_risk,
                "max_attempts": 4,
                "backoff": quick,
            },
            {
                "name": "slow",
                "url": f"{base}/slow",
                "secret_env": "TEST_WEBHOOK_SECRET_B",
                "filters": {"tags": ["vip"], "tag_change": "added"},
                "timeout_seconds": 0.5,
                "max_attempts": 3,
                "backoff": quick,
            },
            {
                "name": "down",
                "url": f"{base}/down",
                "secret_env": "TEST_WEBHOOK_SECRET_B",
                "filters": at_risk,
                "max_attempts": 3,
                "backoff": quick,
            },
            {
                "name": "limited",
                "url": f"{base}/limited",
                "secret_env": "TEST_WEBHOOK_SECRET_B",
                "rate_limit": {"per_second": 5, "burst": 2},
                "headers": {"X-Campaign": "spring"},
            },
        ],
    }


def start_bridge(settings: Settings, tmp_path: Path, config: dict[str, Any]) -> Any:
    path = tmp_path / "webhooks.yaml"
    path.write_text(yaml.safe_dump(config))
    env = cli_env(settings, tmp_path / "settings.yaml")
    env |= {"TEST_WEBHOOK_SECRET_A": SECRET_A, "TEST_WEBHOOK_SECRET_B": SECRET_B}
    log = open(tmp_path / "bridge.log", "wb")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "webhooks", "--config", str(path)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def test_bridge_retries_signs_limits_and_dead_letters(
    topics: Settings, receiver: tuple[Receiver, int], tmp_path: Path
) -> None:
    settings = topics
    seen, port = receiver
    people = [f"p-{n}" for n in range(4)]
    changes = [c for p in people for c in history("lumi", p)]  # 16: 4 at_risk, 4 vip added
    await produce(settings, [*changes, changes[2]])  # + p-0's at_risk change sent twice
    metrics_port = free_port()
    bridge = start_bridge(settings, tmp_path, bridge_config(port, metrics_port))
    log = tmp_path / "bridge.log"
    try:

        async def all_done() -> bool:
            assert bridge.poll() is None, log.read_text()
            return (
                len(seen.delivered["flaky"]) == 4
                and len(seen.delivered["slow"]) == 4
                and seen.requests["down"] == 12
                and len(seen.delivered["limited"]) == 16
            )

        await async_wait_until(all_done, 90, "every endpoint's deliveries")
        dead = await read_topic(settings.kafka_bootstrap, f"{settings.app_id}.webhooks-dlq", 4)

        async def scrape() -> Samples | None:
            status, text = await get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200
            s = parse(text)
            done = value(s, "touchflow_automation_changes_total", consumer="down",
                         outcome="dead_lettered") == 4  # fmt: skip
            return s if done else None

        s = await async_wait_until(scrape, 30, "the bridge's metrics")
    finally:
        bridge.terminate()
        exit_code = bridge.wait(30)
    assert exit_code == 0, log.read_text()

    assert seen.bad_signatures == []
    at_risk = sorted(f"lumi:{p}:3" for p in people)
    vip = sorted(f"lumi:{p}:4" for p in people)
    # flaky: 500, 500, then 204 for each of the 4 at-risk changes; the repeat was dropped.
    assert sorted(seen.delivered["flaky"]) == at_risk
    assert seen.requests["flaky"] == 12
    assert Counter(seen.attempt_headers["flaky"]) == {"1": 4, "2": 4, "3": 4}
    # slow: the first try times out (0.5 s), the second is answered.
    assert sorted(seen.delivered["slow"]) == vip and seen.requests["slow"] == 8
    # down: 3 attempts each, then the dead-letter topic, with the endpoint named.
    assert seen.delivered["down"] == [] and seen.requests["down"] == 12
    codecs = Codecs()
    assert sorted(f"lumi:{codecs.decode_change(r.value).person_id}:3" for r in dead) == at_risk
    for r in dead:
        h = {k: v.decode() for k, v in r.headers}
        assert h["touchflow.consumer"] == "down"
        assert h["touchflow.reason"] == "retries_exhausted"
        assert h["touchflow.attempts"] == "3"
        assert h["__connect.errors.exception.message"] == "down: HTTP 503"
        assert h["__connect.errors.topic"] == settings.changes_topic
    # limited: 16 changes at 5/s with a burst of 2 take at least (16 - 2) / 5 = 2.8 s, and
    # no one-second window holds more than 5 + 2 (+1 for network jitter).
    arrivals = seen.arrivals["limited"]
    assert sorted(seen.delivered["limited"]) == sorted(
        f"lumi:{p}:{n}" for p in people for n in (1, 2, 3, 4)
    )
    assert arrivals[-1] - arrivals[0] >= 2.5
    assert max(sum(1 for b in arrivals if a <= b < a + 1.0) for a in arrivals) <= 8

    results = by_labels(s, "touchflow_webhook_requests_total", "endpoint", "result")
    assert results == {
        ("flaky", "5xx"): 8,
        ("flaky", "2xx"): 4,
        ("slow", "timeout"): 4,
        ("slow", "2xx"): 4,
        ("down", "5xx"): 12,
        ("limited", "2xx"): 16,
    }
    outcomes = by_labels(s, "touchflow_automation_changes_total", "consumer", "outcome")
    assert outcomes[("flaky", "handled")] == 4
    assert outcomes[("flaky", "duplicate")] == 1  # the repeated change
    assert outcomes[("flaky", "filtered")] == 12
    assert outcomes[("down", "dead_lettered")] == 4
    assert outcomes[("limited", "handled")] == 16
    failures = by_labels(s, "touchflow_automation_handler_failures_total", "consumer")
    assert failures == {("flaky",): 8, ("slow",): 4, ("down",): 12}
    assert value(s, "touchflow_webhook_request_seconds_count", endpoint="limited") == 16
    assert 10 <= value(s, "touchflow_webhook_throttled_total", endpoint="limited") <= 14
    assert value(s, "touchflow_webhook_throttled_total", endpoint="flaky") == 0

    # Every automation metric the dashboard shows is in the bridge's real scrape.
    scraped = {name.removesuffix("_bucket") for name, _ in s}
    shown = {n for e in deploy.dashboard_exprs() for n in deploy.metric_names(e)}
    mine = set(deploy.registry_names(metrics.AUTOMATION))
    assert mine <= shown
    assert mine <= scraped


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"secret_env": "TEST_WEBHOOK_UNSET"},
            "touchflow webhooks: webhooks.endpoints[0].secret_env: $TEST_WEBHOOK_UNSET is "
            "unset or shorter than 16 bytes",
        ),
        (
            {"filters": {"dimension": ["tag"]}},
            "touchflow webhooks: webhooks.endpoints[0].filters: unknown keys ['dimension']",
        ),
    ],
)
def test_bad_config_stops_at_start_up_with_the_place(
    settings: Settings, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    config = bridge_config(1, 0)
    config["endpoints"] = [config["endpoints"][0] | change]
    bridge = start_bridge(settings, tmp_path, config)
    assert bridge.wait(60) == 2
    assert (tmp_path / "bridge.log").read_text().startswith(message)
