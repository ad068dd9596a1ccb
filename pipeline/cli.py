"""The `touchflow` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        sys.exit(f"touchflow: invalid configuration:\n{exc}")


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import DemoOptions, main

    opts = DemoOptions(
        seconds=args.seconds, rate=args.rate, days_per_second=args.days_per_second,
        workers=args.workers, seed=args.seed,
    )  # fmt: skip
    return main(_settings(), opts)


def cmd_worker(args: argparse.Namespace) -> int:
    from agents import collector

    settings = _settings()
    collector.tune(settings.gc_young_threshold)  # before Faust's imports allocate

    from pipeline.app import create_app

    app = create_app(settings)
    # No --web-port: the app has it, and Faust's option would reset canonical_url (the
    # URL other workers forward lookups to, Settings.web_url) to http://<hostname>:<port>.
    sys.argv = ["touchflow", "worker", "--loglevel", settings.log_level]
    app.main()
    return 0


def cmd_sink(args: argparse.Namespace) -> int:
    from sinks.writer import ClickHouseSink

    settings = _settings()
    if settings.embedded_broker:
        sys.exit("touchflow sink: set TOUCHFLOW_KAFKA_BOOTSTRAP to the broker's address")

    async def run() -> None:
        sink = ClickHouseSink(settings, settings.kafka_bootstrap)
        await sink.start()
        try:
            await sink.run(asyncio.Event())
        finally:
            sink.close()

    asyncio.run(run())
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    import time

    from pipeline.broker import EmbeddedBroker, ensure_topics

    settings = _settings()
    with EmbeddedBroker(port=args.port) as broker:
        asyncio.run(ensure_topics(broker.bootstrap, settings))
        print(f"Tansu broker on {broker.bootstrap} with touchflow's topics (Ctrl-C stops it)")
        print(f"export TOUCHFLOW_KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
        try:
            while broker.process and broker.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from pipeline.broker import ensure_topics

    settings = _settings()
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap, settings))
    print("created: " + (", ".join(created) or "nothing (all exist)"))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from sinks import store

    settings = _settings()
    applied = store.migrate(settings.resolved_clickhouse_dsn(), settings.clickhouse_database)
    print("applied: " + (", ".join(applied) or "nothing (up to date)"))
    return 0


def _print_rows(columns: list[str], rows: list[Any], fmt: str) -> None:
    if fmt == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False, default=str))
        return
    if fmt == "tsv":
        print("\t".join(columns))
        for row in rows:
            print("\t".join(str(v) for v in row))
        return
    cells = [[str(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def cmd_sql(args: argparse.Namespace) -> int:
    from sinks import store

    settings = _settings()
    dsn, db = settings.resolved_clickhouse_dsn(), settings.clickhouse_database
    try:
        client = store.connect(dsn, db)
        result = client.query(args.query)
    except Exception as exc:  # the server's own message is the useful part
        hint = ""
        if "UNKNOWN_DATABASE" in str(exc):
            hint = f"\nno database {db} at {dsn}: run `touchflow migrate` or `touchflow demo` first"
        print(f"touchflow sql: {exc}{hint}", file=sys.stderr)
        return 2
    _print_rows(list(result.column_names), list(result.result_rows), args.format)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import csv

    from sinks import reports, store

    settings = _settings()
    dsn, db = settings.resolved_clickhouse_dsn(), settings.clickhouse_database
    try:
        result = reports.run(
            store.connect(dsn, db), args.name, brand=args.brand, since=args.since, until=args.until
        )
    except Exception as exc:  # the server's own message is the useful part
        print(f"touchflow report: {exc}", file=sys.stderr)
        return 2
    if args.format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(result.columns)
        out.writerows(result.rows)
    else:
        _print_rows(result.columns, result.rows, args.format)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from pipeline import publish_cli

    return publish_cli.main(_settings(), args.file, args.format, args.csv_map, args.rejects)


def cmd_dlq(args: argparse.Namespace) -> int:
    from pipeline import dlq_cli

    settings = _settings()
    try:
        if args.replay:
            print(json.dumps(asyncio.run(dlq_cli.replay(settings, args.reason)), sort_keys=True))
        else:
            columns, rows = asyncio.run(dlq_cli.listing(settings, args.limit, args.reason))
            _print_rows(columns, rows, args.format)
    except dlq_cli.ERRORS as exc:
        print(f"touchflow dlq: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_rfm_quantiles(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from sinks import quantiles, store
    from sinks.rfm_sql import rfm_quantiles_query

    settings = _settings()
    dsn, db = settings.resolved_clickhouse_dsn(), settings.clickhouse_database
    client = store.connect(dsn, db)

    async def query(sql: str) -> list[Any]:
        return list(client.query(sql).result_rows)

    if args.publish:
        if settings.embedded_broker:
            sys.exit("touchflow rfm-quantiles: set TOUCHFLOW_KAFKA_BOOTSTRAP to publish")
        found = asyncio.run(quantiles.refresh(query, settings))
    else:
        rows = client.query(rfm_quantiles_query(settings.policy().rfm.window_days)).result_rows
        found = quantiles.compute(list(rows), settings, 0)
    for t in found:
        print(json.dumps({"brand": t.brand, "buyers": t.buyers, **asdict(t.policy)}))
    if not found:
        print("no quantile-scored brand with buyers (see rfm_quantile_brands)", file=sys.stderr)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from pipeline import dashboard_web

    settings = _settings()
    service = dashboard_web.DashboardService(
        settings.resolved_clickhouse_dsn(), settings.clickhouse_database
    )
    try:
        service.check()
    except Exception as exc:  # the store's own message, explained
        print(f"touchflow dashboard: {dashboard_web.explain_store_error(exc)}", file=sys.stderr)
        return 2

    async def run() -> None:
        runner = await dashboard_web.start(service, args.host, args.port)
        print(f"dashboard on http://{args.host}:{args.port}/dashboard/ (Ctrl-C stops it)")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from pipeline import rebuild_cli

    live = _settings()
    if live.embedded_broker:
        sys.exit("touchflow rebuild: set TOUCHFLOW_KAFKA_BOOTSTRAP to the broker with the events")
    try:
        candidate = rebuild_cli.candidate_settings(live, args.config)
        summary = rebuild_cli.run(live, candidate, args.output)
    except (ValueError, OSError, ValidationError) as exc:
        print(f"touchflow rebuild: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(summary, ensure_ascii=False, sort_keys=True))
    else:
        rebuild_cli.print_summary(summary)
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    import os
    import signal

    import yaml

    from pipeline import metrics, webhooks

    settings = _settings()
    if settings.embedded_broker:
        sys.exit("touchflow webhooks: set TOUCHFLOW_KAFKA_BOOTSTRAP to the broker's address")
    try:
        spec = yaml.safe_load(args.config.read_text())
        config = webhooks.load_config(spec, os.environ, settings)
    except (OSError, yaml.YAMLError, webhooks.WebhookConfigError) as exc:
        print(f"touchflow webhooks: {exc}", file=sys.stderr)
        return 2
    stop_metrics = (
        metrics.serve(metrics.AUTOMATION, config.metrics_port) if config.metrics_port else None
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await webhooks.run(settings, config, stop)

    try:
        asyncio.run(run())
    finally:
        if stop_metrics is not None:
            stop_metrics()
    return 0


def cmd_whois(args: argparse.Namespace) -> int:
    from pipeline import whois_cli

    return whois_cli.main(_settings(), args)


def cmd_audience_export(args: argparse.Namespace) -> int:
    from pipeline import audience
    from sinks import store
    from sinks.audience import export

    settings = _settings()
    try:
        wanted = audience.audience_for(
            args.brand, args.dimension, args.segment, settings.brand_groups, args.id_type or ()
        )
        client = store.connect(settings.resolved_clickhouse_dsn(), settings.clickhouse_database)
        done = export(client, wanted, args.format, args.output)
    except audience.AudienceError as exc:
        print(f"touchflow audience export: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the server's own message is the useful part
        print(f"touchflow audience export: {exc}", file=sys.stderr)
        return 2
    from dataclasses import asdict

    print(json.dumps(asdict(done), sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="touchflow", description="Real-time customer segments for private-domain traffic."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo", help="run the whole pipeline on the embedded stack with synthetic traffic"
    )
    p.add_argument(
        "--seconds", type=float, default=30.0, help="how long traffic plays (default 30)"
    )
    p.add_argument("--rate", type=float, default=300.0, help="events per second (default 300)")
    p.add_argument("--days-per-second", type=float, default=3.0, help="simulated days per second")
    p.add_argument("--workers", type=int, default=1, help="Faust worker processes (default 1)")
    p.add_argument("--seed", type=int, default=7, help="traffic generator seed")
    p.set_defaults(func=cmd_demo)

    sub.add_parser(
        "worker", help="run a Faust worker (needs TOUCHFLOW_KAFKA_BOOTSTRAP)"
    ).set_defaults(func=cmd_worker)
    sub.add_parser("sink", help="run the Kafka -> ClickHouse sink").set_defaults(func=cmd_sink)
    p = sub.add_parser("broker", help="run a local Tansu broker with touchflow's topics")
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_broker)
    sub.add_parser(
        "topics", help="create touchflow's topics on the configured broker"
    ).set_defaults(func=cmd_topics)
    sub.add_parser("migrate", help="create / upgrade the ClickHouse tables").set_defaults(
        func=cmd_migrate
    )
    p = sub.add_parser("sql", help="run a query against the store")
    p.add_argument("query")
    p.add_argument("--format", choices=("table", "tsv", "json"), default="table")
    p.set_defaults(func=cmd_sql)
    from sinks.reports import NAMES as REPORTS  # plain SQL text: no client imported

    p = sub.add_parser("report", help="an operators' report from the store (docs/storage.md)")
    p.add_argument("name", choices=REPORTS)
    p.add_argument("--brand", help="one brand (default: every brand)")
    p.add_argument("--since", type=date.fromisoformat, help="first day, YYYY-MM-DD (UTC)")
    p.add_argument("--until", type=date.fromisoformat, help="last day, YYYY-MM-DD (UTC)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("dashboard", help="serve the operators' web dashboard (docs/dashboard.md)")
    p.add_argument("--port", type=int, default=8066, help="default 8066")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.set_defaults(func=cmd_dashboard)
    p = sub.add_parser("publish", help="publish a file of canonical events (docs/events.md)")
    p.add_argument("file", type=Path)
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--csv-map", type=Path, help="YAML: canonical field path -> CSV column")
    p.add_argument("--rejects", type=Path, help="rejected lines (default FILE.rejects.jsonl)")
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser(
        "rfm-quantiles", help="RFM thresholds from each brand's buyers (quantile scoring)"
    )
    p.add_argument("--publish", action="store_true", help="send them to the workers")
    p.set_defaults(func=cmd_rfm_quantiles)
    p = sub.add_parser(
        "rebuild", help="replay history under new rules and compare with the live rules"
    )
    p.add_argument("--config", type=Path, required=True, help="YAML: the candidate's policy")
    p.add_argument("--output", type=Path, help="write the full comparison (JSON) here")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_rebuild)
    p = sub.add_parser("dlq", help="list dead-lettered records, or --replay them")
    p.add_argument("--limit", type=int, default=50, help="newest N records (default 50)")
    p.add_argument("--reason", help="only this reason code (e.g. bad_amount)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--replay", action="store_true", help="re-publish to the source topics")
    p.set_defaults(func=cmd_dlq)
    p = sub.add_parser("whois", help="a person's live segments from the workers' lookup API")
    p.add_argument("person_id", nargs="?", help="person id (or name an identity below)")
    p.add_argument("--brand", required=True)
    p.add_argument("--id-type", help="identity kind: openid, unionid, member_id, phone, ...")
    p.add_argument("--raw", help="the identity's raw value: hashed here, never sent")
    p.add_argument("--hashed", help="the identity's keyed hash (h1:...)")
    p.add_argument("--url", help="a worker's base URL (default TOUCHFLOW_API_URL)")
    p.add_argument("--token", help="API token (default TOUCHFLOW_API_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    p.set_defaults(func=cmd_whois)
    p = sub.add_parser("audience", help="audiences for channels that take uploaded lists")
    audience_sub = p.add_subparsers(dest="audience_command", required=True)
    p = audience_sub.add_parser("export", help="a segment's current members and hashed ids")
    p.add_argument("--brand", required=True, help="brand (or brand group)")
    p.add_argument("--segment", required=True, help="value on the dimension, e.g. important_value")
    p.add_argument(
        "--dimension", default="rfm_segment", help="rfm_segment (default), aipl_stage, "
        "lifecycle, tag or layer:<name>"
    )  # fmt: skip
    p.add_argument("--id-type", action="append", help="only ids of this kind (repeatable)")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--output", type=Path, required=True)
    p.set_defaults(func=cmd_audience_export)

    p = sub.add_parser("webhooks", help="post matching segment changes to HTTP endpoints")
    p.add_argument("--config", type=Path, required=True, help="YAML: endpoints (see docs)")
    p.set_defaults(func=cmd_webhooks)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
