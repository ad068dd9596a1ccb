"""The worker's operations endpoints, on Faust's web server (Settings.web_port).

/metrics  Prometheus text format (pipeline.metrics.WORKER)
/healthz  200 while the process and its event loop answer (liveness)
/readyz   200 once table recovery has completed and the broker answers (and the ClickHouse
          server, when one is configured); 503 with a JSON reason otherwise (readiness)
/dashboard/  the operators' dashboard, when the store is a ClickHouse server
          (pipeline.dashboard_web.mount; docs/dashboard.md)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import faust
from faust.exceptions import NotReady
from faust.web import Request, Response, View

from pipeline import dashboard_web, metrics
from pipeline.settings import Settings

CHECK_TIMEOUT = 2.0  # seconds per readiness check; probes time out after a few seconds

Check = Callable[[], Awaitable[str | None]]  # None when fine, else why not


def clickhouse_ping_url(dsn: str) -> str | None:
    """ClickHouse's unauthenticated /ping for a server DSN; None for chDB (in-process)."""
    url = urlsplit(dsn)
    if url.scheme not in ("http", "https") or not url.hostname:
        return None
    port = url.port or (8443 if url.scheme == "https" else 8123)
    return f"{url.scheme}://{url.hostname}:{port}/ping"


def recovery_check(app: faust.App) -> Check:
    async def check() -> str | None:
        if not app.tables.recovery.completed.is_set():
            return "table recovery has not completed yet"
        if app.in_recovery:
            return "table recovery in progress after a rebalance"
        return None

    return check


def broker_check(app: faust.App) -> Check:
    """A metadata round trip on the worker's own producer connection."""

    async def check() -> str | None:
        try:
            client = app.producer._ensure_producer().client  # faust-streaming 0.15: aiokafka
        except NotReady:
            return "Kafka producer not started"
        try:
            updated = await asyncio.wait_for(client.force_metadata_update(), CHECK_TIMEOUT)
        except TimeoutError:
            return f"no metadata from the Kafka brokers within {CHECK_TIMEOUT}s"
        return None if updated else "Kafka metadata request failed"

    return check


def clickhouse_check(ping_url: str) -> Check:
    async def check() -> str | None:
        timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(ping_url) as response,
            ):
                if response.status == 200:
                    return None
                return f"ClickHouse {ping_url} answered {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"ClickHouse {ping_url} unreachable ({type(exc).__name__})"

    return check


async def readiness(checks: dict[str, Check]) -> tuple[int, dict[str, object]]:
    """HTTP status and JSON body for /readyz: every check runs, all must pass."""
    results = dict(zip(checks, await asyncio.gather(*(c() for c in checks.values())), strict=True))
    reasons = [f"{name}: {why}" for name, why in results.items() if why is not None]
    body: dict[str, object] = {
        "ready": not reasons,
        "checks": {name: why or "ok" for name, why in results.items()},
    }
    if reasons:
        body["reason"] = "; ".join(reasons)
    return (503 if reasons else 200), body


def register(app: faust.App, settings: Settings) -> None:
    checks = {"recovery": recovery_check(app), "broker": broker_check(app)}
    ping_url = clickhouse_ping_url(settings.clickhouse_dsn)
    if ping_url is not None:
        checks["clickhouse"] = clickhouse_check(ping_url)

    @app.page("/metrics", name="touchflow-metrics")
    async def prometheus_metrics(self: View, request: Request) -> Response:
        body, content_type = metrics.exposition(metrics.WORKER)
        return self.bytes(body, headers={"Content-Type": content_type})

    @app.page("/healthz", name="touchflow-healthz")
    async def healthz(self: View, request: Request) -> Response:
        return self.json({"alive": True})

    @app.page("/readyz", name="touchflow-readyz")
    async def readyz(self: View, request: Request) -> Response:
        status, body = await readiness(checks)
        return self.json(body, status=status)

    dashboard_web.mount(app, settings.resolved_clickhouse_dsn(), settings.clickhouse_database)
