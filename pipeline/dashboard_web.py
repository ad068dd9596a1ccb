"""Serves the operators' dashboard: the page (package data under pipeline/static/dashboard),
and its JSON API at /dashboard/api/<endpoint>?brand=&since=&until=.

Two hosts, one `DashboardService`: `touchflow dashboard` (a small aiohttp server) and the
worker's Faust web server (`mount`, when the store is a ClickHouse server: chDB allows one
process per store, and a worker is not the process that holds it; see docs/dashboard.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from clickhouse_connect.driver.exceptions import ClickHouseError

from pipeline.dashboard import BadRequest, Reason, parse_filters
from sinks import dashboard_data, store

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
EMBEDDED_ON_WORKER = (
    "The dashboard is not served by workers when the store is embedded (chDB): chDB allows "
    "one process per store, and that is the sink's (or the demo's). Run `touchflow dashboard` "
    "where the store is free, or point TOUCHFLOW_CLICKHOUSE_DSN at a ClickHouse server."
)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str


def _json(status: int, value: Any) -> Reply:
    body = json.dumps(value, ensure_ascii=False, default=str).encode()
    return Reply(status, body, "application/json; charset=utf-8")


def static_file(name: str) -> Reply:
    """index.html, the script and the style sheet, from the package (no CDN, works offline)."""
    folder = resources.files("pipeline").joinpath("static", "dashboard")
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    entry = folder.joinpath(name)
    if "/" in name or suffix not in STATIC_TYPES or not entry.is_file():
        return Reply(404, b"not found", "text/plain; charset=utf-8")
    return Reply(200, entry.read_bytes(), STATIC_TYPES[suffix])


class DashboardService:
    """Answers API requests from ClickHouse through one client on one thread (chDB is not
    thread-safe across a client and has no async client; a server is fine either way)."""

    def __init__(self, dsn: str, database: str) -> None:
        self.dsn, self.database = dsn, database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-ch")
        self._client: Any = None

    def _connected(self) -> Any:
        if self._client is None:
            self._client = store.connect(self.dsn, self.database)
        return self._client

    def check(self) -> None:
        """Connect and read once, so a missing or locked store fails at start-up (CLI)."""
        self._connected().query("SELECT count() FROM current_people")

    async def api(self, endpoint: str, params: dict[str, str]) -> Reply:
        handler = dashboard_data.ENDPOINTS.get(endpoint)
        if handler is None:
            known = ", ".join(dashboard_data.ENDPOINTS)
            message = f"no endpoint {endpoint!r}; one of: {known}"
            return _json(404, {"error": message, "reason": Reason.UNKNOWN_ENDPOINT})
        try:
            filters = parse_filters(params)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                self._executor, lambda: handler(self._connected(), filters, params)
            )
        except BadRequest as exc:
            return _json(400, {"error": str(exc), "reason": exc.reason})
        except ClickHouseError as exc:  # the store's own message is what an operator needs
            log.warning("dashboard %s: %s", endpoint, exc)
            return _json(503, {"error": explain_store_error(exc), "reason": "store_unavailable"})
        return _json(200, result)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._client is not None:
            self._client.close()


def explain_store_error(exc: BaseException) -> str:
    text = str(exc)
    if "Cannot lock file" in text or "Unable to open the chdb engine" in text:
        return (
            "the embedded store is open in another process (a running demo or sink): chDB "
            "allows one process per store; wait for it to stop or use a ClickHouse server"
        )
    if "UNKNOWN_DATABASE" in text or "UNKNOWN_TABLE" in text:
        return f"the store has no touchflow tables yet: run `touchflow migrate` ({text[:200]})"
    return text[:500]


async def _respond(service: DashboardService, tail: str, query: dict[str, str]) -> Reply:
    if tail in ("", "index.html"):
        return static_file("index.html")
    if tail.startswith("static/"):
        return static_file(tail.removeprefix("static/"))
    if tail.startswith("api/"):
        return await service.api(tail.removeprefix("api/"), query)
    return Reply(404, b"not found", "text/plain; charset=utf-8")


# -- touchflow dashboard: its own aiohttp server -------------------------------------------


def aiohttp_app(service: DashboardService) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/", PREFIX):
            raise web.HTTPFound(PREFIX + "/")
        reply = await _respond(service, path.removeprefix(PREFIX + "/"), dict(request.query))
        return web.Response(
            status=reply.status,
            body=reply.body,
            headers={"Content-Type": reply.content_type, "Cache-Control": "no-store"},
        )

    app = web.Application()
    app.router.add_get("/", handle)
    app.router.add_get(PREFIX, handle)
    app.router.add_get(PREFIX + "/{tail:.*}", handle)
    return app


async def start(service: DashboardService, host: str, port: int) -> web.AppRunner:
    """Start serving on host:port (returns the runner: `await runner.cleanup()` stops it)."""
    runner = web.AppRunner(aiohttp_app(service), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


# -- the worker: Faust's web server ----------------------------------------------------------


def mount(app: Any, dsn: str, database: str) -> DashboardService | None:
    """Add the dashboard's routes to a Faust app's web server. With chDB the worker would
    open a second engine on the store the sink holds, so it explains that instead."""
    if store.is_embedded(dsn):

        async def unavailable(view: Any, request: Any, **match: str) -> Any:
            return view.text(EMBEDDED_ON_WORKER, status=503)

        for n, path in enumerate((PREFIX, PREFIX + "/", PREFIX + "/{tail:.*}")):
            app.page(path, name=f"touchflow-dashboard-off-{n}")(unavailable)
        return None

    service = DashboardService(dsn, database)

    async def redirect(view: Any, request: Any) -> Any:
        return view.bytes(b"", status=302, headers={"Location": PREFIX + "/"})

    async def page(view: Any, request: Any, tail: str = "") -> Any:
        reply = await _respond(service, tail, dict(request.query))
        headers = {"Content-Type": reply.content_type, "Cache-Control": "no-store"}
        return view.bytes(reply.body, status=reply.status, headers=headers)

    app.page(PREFIX, name="touchflow-dashboard-root")(redirect)
    app.page(PREFIX + "/", name="touchflow-dashboard")(page)
    app.page(PREFIX + "/{tail:.*}", name="touchflow-dashboard-files")(page)
    return service
