"""The operators' dashboard in headless Chromium, on data that went through the real pipeline.

A small story goes through the Tansu broker, a worker process and the sink into chDB; the
dashboard server runs in this process (chDB is one engine per process) and Chromium loads
its page. Expected figures are worked out by hand from the default thresholds (RFM
recency 7/30/90/180 days, frequency 2/3/5/8 orders, monetary 200/500/1000/3000 yuan, high
>= 3; loyalty at 2 orders; lifecycle new for 30 days after a first order):

  lumi  A  joins (WeCom, QR code), chats, buys 300 and, 10 days later, 600 yuan, shares to C
           -> R5 F2 M3: important_develop, L, active
  lumi  B  follows, buys 99 yuan                      -> R5 F1 M1: general_develop, P, new
  lumi  C  joins referred by A, buys 50 yuan          -> general_develop, P, new; A's
           invitee, converted
  mosu  D  follows, chats                             -> no RFM segment, I, no lifecycle
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from pipeline import dashboard_web
from pipeline.broker import free_port
from pipeline.events import Chat, EventType, Join, Purchase, Share, Touchpoint, UserRef
from pipeline.identity import person_id_for
from pipeline.pii import pseudonymise
from pipeline.settings import Settings
from sinks import store
from sinks.writer import ClickHouseSink
from tests.integration.helpers import (
    PII_KEY,
    Worker,
    async_wait_until,
    cli_env,
    get,
    publish,
    run_cli,
    web_port,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000
HOUR = 3_600_000
PANELS = ("panel-sizes", "panel-rfm", "panel-funnel", "panel-flow", "panel-sharers", "panel-feed")


def chromium() -> str:
    """Debian's chromium (deploy/dev/ensure-chromium.sh installs it), or TOUCHFLOW_CHROMIUM."""
    for candidate in (os.environ.get("TOUCHFLOW_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise AssertionError("no Chromium: run `make chromium` (deploy/dev/ensure-chromium.sh)")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium(), headless=True)
        yield b
        await b.close()


class Console:
    """Everything the page reports as wrong: console errors, uncaught errors, HTTP errors."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on(
            "response",
            lambda r: self.problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")


async def open_dashboard(browser: Browser, url: str) -> tuple[Page, Console]:
    page = await browser.new_page(viewport={"width": 1400, "height": 1800})
    console = Console(page)
    await page.goto(url)
    for panel in PANELS:
        await page.wait_for_selector(f"#{panel}[data-state=ready]", timeout=30_000)
    return page, console


async def attrs(page: Page, selector: str, *names: str) -> list[tuple[str | None, ...]]:
    """The named attributes of every element matching `selector`, in document order."""
    result: list[tuple[str | None, ...]] = await page.eval_on_selector_all(
        selector, "(els, names) => els.map((e) => names.map((n) => e.getAttribute(n)))", names
    )
    return [tuple(r) for r in result]


def story(t0: int) -> tuple[list[Touchpoint | bytes], dict[str, UserRef]]:
    key = PII_KEY.encode()
    u = {
        "a": UserRef("external_userid", pseudonymise("external_userid", "wm-dash-a", key)),
        "b": UserRef("openid", pseudonymise("openid", "o-dash-b", key)),
        "c": UserRef("openid", pseudonymise("openid", "o-dash-c", key)),
        "d": UserRef("openid", pseudonymise("openid", "o-dash-d", key)),
    }

    def ev(n: str, who: str, brand: str, t: EventType, at: int, payload: object) -> Touchpoint:
        channel = "wecom" if who == "a" else "wechat_oa"
        return Touchpoint(n, t, brand, channel, u[who], at, payload)  # type: ignore[arg-type]

    events: list[Touchpoint | bytes] = [
        ev("a1", "a", "lumi", EventType.JOIN, t0, Join("add_friend", source="qr_code")),
        ev("b1", "b", "lumi", EventType.JOIN, t0 + 1000, Join("follow")),
        ev("d1", "d", "mosu", EventType.JOIN, t0 + 2000, Join("follow")),
        ev("d2", "d", "mosu", EventType.CHAT, t0 + 3000, Chat("inbound", "customer")),
        ev("a2", "a", "lumi", EventType.CHAT, t0 + 60_000, Chat("inbound", "customer")),
        ev("a3", "a", "lumi", EventType.PURCHASE, t0 + DAY, Purchase("o-1", 30_000)),
        ev("a4", "a", "lumi", EventType.PURCHASE, t0 + 11 * DAY, Purchase("o-3", 60_000)),
        ev("b2", "b", "lumi", EventType.PURCHASE, t0 + 11 * DAY + HOUR, Purchase("o-2", 9_900)),
        ev("a5", "a", "lumi", EventType.SHARE, t0 + 12 * DAY, Share("live-room-9", u["c"])),
        ev("c1", "c", "lumi", EventType.JOIN, t0 + 12 * DAY + HOUR,
           Join("follow", "referral", u["a"])),
        ev("c2", "c", "lumi", EventType.PURCHASE, t0 + 13 * DAY, Purchase("o-4", 5_000)),
    ]  # fmt: skip
    return events, u


async def stored(sink: ClickHouseSink, people: int) -> bool:
    """Every person's state is stored, and every change up to the state's `seq`."""
    rows = await sink.query(
        "SELECT count(), countIf(s.seq = c.last) FROM current_people AS s"
        " LEFT JOIN (SELECT brand, person_id, max(seq) AS last FROM segment_changes FINAL"
        " GROUP BY brand, person_id) AS c ON c.brand = s.brand AND c.person_id = s.person_id"
    )
    return rows[0] == (people, people)


async def api(base: str, endpoint: str, query: str = "") -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}api/{endpoint}?{query}") as r,
    ):
        assert r.status == 200, await r.text()
        return await r.json()


async def test_dashboard_shows_what_the_store_holds(
    settings: Settings, sink: ClickHouseSink, workers: Any, browser: Browser
) -> None:
    t0 = int(time.time() * 1000) - 20 * DAY
    events, u = story(t0)
    pa, pb = person_id_for(u["a"]), person_id_for(u["b"])
    worker = workers()
    await publish(settings, events)
    await async_wait_until(lambda: stored(sink, 4), 90, "4 people and all their changes stored")

    service = dashboard_web.DashboardService(settings.clickhouse_dsn, settings.clickhouse_database)
    port = free_port()
    runner = await dashboard_web.start(service, "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}/dashboard/"
    try:
        page, console = await open_dashboard(browser, f"http://127.0.0.1:{port}/")

        # Headline figures: 4 people, 3 buyers, 11 events, 300 + 600 + 99 + 50 yuan.
        kpis = {k: await page.text_content(f"#kpi-{k}") for k in ("people", "buyers", "events")}
        assert kpis == {"people": "4", "buyers": "3", "events": "11"}
        assert await page.text_content("#kpi-revenue") == "¥1,049"

        # RFM heat map: 8 cells; A in 重要发展, B and C in 一般发展 (99 + 50 yuan in range).
        cells = await attrs(page, "#chart-rfm g.cell", "data-segment", "data-customers")
        assert len(cells) == 8
        assert {s: int(n or 0) for s, n in cells if n != "0"} == {
            "important_develop": 1,
            "general_develop": 2,
        }
        by_sql = dict(
            await sink.query(
                "SELECT rfm_segment, count() FROM current_people WHERE rfm_segment != ''"
                " GROUP BY rfm_segment"
            )
        )
        assert {s: int(n or 0) for s, n in cells if n != "0"} == by_sql
        general = page.locator('#chart-rfm g.cell[data-segment="general_develop"]')
        assert await general.get_attribute("data-revenue-minor") == "14900"
        assert await general.locator("text.count").text_content() == "2"

        # AIPL funnel, all brands: 4 aware, 4 interested or beyond (D chatted), 3 bought, A loyal.
        steps = await attrs(page, "#chart-funnel g.step", "data-stage", "data-reached")
        assert steps == [("A", "4"), ("I", "4"), ("P", "3"), ("L", "1")]

        # Lifecycle flows: nobody had one before; now A active, B and C new.
        flows = await attrs(page, "#chart-flow path.flow", "data-from", "data-to", "data-people")
        assert sorted(flows) == [("(none)", "active", "1"), ("(none)", "new", "2")]

        # Top sharers: A shared to C, who joined and bought.
        sharers = await attrs(page, "#chart-sharers g.sharer", "data-person", "data-converted")
        assert sharers == [(pa, "1")]

        # Segment sizes: RFM lines end at 2 general_develop, 1 important_develop.
        lines = await attrs(page, "#chart-sizes path.series", "data-value", "data-last")
        assert sorted(lines) == [("general_develop", "2"), ("important_develop", "1")]

        # Live feed: newest first, as SQL lists them; the newest is C's purchase.
        feed = await attrs(page, "#feed li.change", "data-key")
        latest = await sink.query(
            "SELECT brand, person_id, seq, toUnixTimestamp64Milli(event_time) FROM"
            " segment_changes FINAL ORDER BY event_time DESC, brand, person_id, seq DESC LIMIT 30"
        )
        assert feed == [(f"{b}|{p}|{s}",) for b, p, s, _ in latest]
        assert latest[0][3] == t0 + 13 * DAY
        assert (await api(base, "changes"))["changes"][0]["event_time_ms"] == t0 + 13 * DAY

        # A new change shows up in the feed by itself: B buys again (P -> L).
        await publish(
            settings,
            [Touchpoint("b3", EventType.PURCHASE, "lumi", "wechat_oa", u["b"], t0 + 14 * DAY,
                        Purchase("o-5", 20_000))],
        )  # fmt: skip
        first = page.locator("#feed li.change").first
        await first.and_(page.locator(f'#feed li.new[data-key^="lumi|{pb}|"]')).wait_for(
            timeout=60_000
        )

        # Another brand: mosu has nobody with an RFM segment, lifecycle or sharer.
        await page.select_option("#brand", "mosu")
        for panel in PANELS:
            await page.wait_for_selector(f"#{panel}[data-state=ready]", timeout=30_000)
        for chart in ("sizes", "rfm", "flow", "sharers"):
            assert await page.locator(f"#chart-{chart} .empty").count() == 1, chart
        assert await attrs(page, "#chart-funnel g.step", "data-reached") == [
            ("1",), ("1",), ("0",), ("0",)
        ]  # fmt: skip
        assert await page.text_content("#kpi-people") == "1"
        assert console.problems == []

        # The date range: the funnel counts people first seen in it (C, on day 12).
        day = datetime.fromtimestamp((t0 + 12 * DAY + HOUR) / 1000, UTC).date().isoformat()
        funnel = await api(base, "aipl-funnel", f"brand=lumi&since={day}&until={day}")
        assert [s["reached"] for s in funnel["steps"]] == [1, 1, 1, 0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}api/summary?since=2026-02-01&until=2026-01-01") as r:
                assert r.status == 400
                assert (await r.json())["reason"] == "bad_range"
            async with session.get(f"{base}api/nothing") as r:
                assert r.status == 404

        # The worker does not open chDB (the sink's process holds it): it says so instead.
        async def worker_answer() -> tuple[int, str] | None:
            try:
                return await get(f"http://127.0.0.1:{web_port(worker)}/dashboard/")
            except aiohttp.ClientError:
                return None

        status, body = await async_wait_until(worker_answer, 60, "the worker's web server")
        assert status == 503 and "one process per store" in body
    finally:
        await runner.cleanup()
        service.close()


async def test_cli_dashboard_on_an_empty_store_shows_empty_states(
    settings: Settings, browser: Browser, tmp_path: Path, chdb_dsn: str
) -> None:
    # `touchflow dashboard` refuses a store another process holds (this one holds chdb_dsn).
    holder = store.connect(chdb_dsn)  # chDB keeps the store locked while a client is open
    holder.query("SELECT 1")
    held = run_cli(settings, tmp_path / "held.yaml", "dashboard", "--port", str(free_port()))
    holder.close()
    assert held.returncode == 2
    assert "open in another process" in held.stderr

    empty = settings.model_copy(update={"clickhouse_dsn": f"chdb://{tmp_path / 'empty-store'}"})
    assert run_cli(empty, tmp_path / "migrate.yaml", "migrate").returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "dashboard", "--port", str(port)],
        env=cli_env(empty, tmp_path / "dashboard.yaml"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        async def brands() -> Any:
            try:
                status, body = await get(f"http://127.0.0.1:{port}/dashboard/api/brands")
            except aiohttp.ClientError:
                return None
            return body if status == 200 else None

        assert '"brands": []' in await async_wait_until(brands, 30, "the dashboard server")
        page, console = await open_dashboard(browser, f"http://127.0.0.1:{port}/dashboard")
        for chart in ("sizes", "rfm", "funnel", "flow", "sharers"):
            assert await page.locator(f"#chart-{chart} .empty").count() == 1, chart
        assert await page.locator("#feed li.empty").count() == 1
        assert await page.text_content("#kpi-people") == "0"
        assert console.problems == []
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_worker_serves_the_dashboard_when_the_store_is_a_server(
    topics: Settings, tmp_path: Path
) -> None:
    # No ClickHouse server can run here: the worker serves the page, and the API says the
    # store cannot be reached (the page shows that in its banner).
    server = topics.model_copy(update={"clickhouse_dsn": f"http://127.0.0.1:{free_port()}"})
    worker = Worker(server, tmp_path / "worker.log").start()
    try:
        base = f"http://127.0.0.1:{web_port(worker)}/dashboard"

        async def page() -> tuple[int, str] | None:
            try:
                return await get(base + "/")
            except aiohttp.ClientError:
                return None

        status, body = await async_wait_until(page, 60, "the worker's web server")
        assert status == 200 and "客户运营看板" in body
        status, script = await get(base + "/static/dashboard.js")
        assert status == 200 and "function drawRfm" in script
        status, answer = await get(base + "/api/summary")
        assert status == 503 and '"reason": "store_unavailable"' in answer
        status, answer = await get(base + "/api/summary?since=yesterday")
        assert status == 400 and '"reason": "bad_date"' in answer
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
