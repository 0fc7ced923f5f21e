"""`shredline sink` and `shredline analytics sql / report`: the anonymised aggregates."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from shredline.schemas.errors import ShredlineError
from shredline.streams.console import Commands, duration_s, positive, progress
from shredline.streams.settings import Settings

if TYPE_CHECKING:
    import duckdb


def _sink(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.analytics.sink import run_sink
    from shredline.analytics.warehouse import Warehouse
    from shredline.streams.acl import AccessRole
    from shredline.streams.kafka.connection import resolve_connection
    from shredline.streams.key_store import open_keys
    from shredline.streams.reporting.feed import KafkaSinkSource

    keys = open_keys(settings, actor="sink")
    warehouse = Warehouse(settings.data_dir / "analytics.duckdb", keys.service_secret("duckdb"))
    try:
        stats = run_sink(
            KafkaSinkSource(resolve_connection(settings, AccessRole.SINK), settings.topic_prefix),
            warehouse,
            batch_size=args.batch_size,
            until_idle_s=args.until_idle,
            progress=progress,
        )
    finally:
        warehouse.close()
    print(
        f"sink: {stats.facts} facts loaded, {stats.duplicates} duplicates skipped, {stats.logs} log lines, "
        f"{stats.skipped} undecodable records skipped"
    )
    return 0


def _analyst_snapshot(settings: Settings, k: int, since: dt.date | None = None) -> duckdb.DuckDBPyConnection:
    from shredline.analytics.warehouse import Warehouse
    from shredline.streams.key_store import open_keys

    path = settings.data_dir / "analytics.duckdb"
    if not path.exists():
        raise ShredlineError(f"analytics: no warehouse at {path}; run `shredline sink` first")
    warehouse = Warehouse(path, open_keys(settings, actor="analyst").service_secret("duckdb"))
    try:
        return warehouse.analyst_snapshot(k, since)
    finally:
        warehouse.close()


def k_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=positive, default=5, help="suppress cells counting fewer than K (default 5)")


def _analytics_sql(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.analytics.query import render, run_query

    columns, rows = run_query(_analyst_snapshot(settings, args.k), args.sql)
    print(render(columns, rows, args.format))
    return 0


def _analytics_report(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.analytics.report import gather, render_html

    now = dt.datetime.now(dt.UTC)
    since = (now - dt.timedelta(seconds=args.since)).date() if args.since else None
    data = gather(_analyst_snapshot(settings, args.k, since))
    out: Path = args.out
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(render_html(data, since, now, args.k), encoding="utf-8")
    partial.replace(out)  # whole or not at all
    days = len(data.volume)
    print(f"report: {out} ({days} days, {len(data.workflows)} workflows, {len(data.tenants)} tenants)")
    return 0


def register(sub: Commands) -> None:
    sink = sub.add_parser("sink", help="load metrics and redacted logs into the encrypted DuckDB warehouse")
    sink.add_argument("--until-idle", type=float, metavar="SECONDS", help="exit once caught up and idle that long")
    sink.add_argument(
        "--batch-size",
        type=positive,
        default=20_000,
        help="most records per transaction (default 20000); a batch also closes after 1 s",
    )
    sink.set_defaults(run=_sink)

    analytics = sub.add_parser("analytics", help="query the anonymised aggregates")
    analytics_sub = analytics.add_subparsers(dest="action", required=True, metavar="ACTION")
    sql = analytics_sub.add_parser("sql", help="one read-only SELECT over the suppressed views")
    sql.add_argument("sql")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    k_option(sql)
    sql.set_defaults(run=_analytics_sql)
    report = analytics_sub.add_parser("report", help="a self-contained HTML report with charts")
    report.add_argument("--since", type=duration_s, metavar="DURATION", help="only the last DURATION, e.g. 7d")
    report.add_argument("--out", type=Path, default=Path("report.html"), help="where to write (default report.html)")
    k_option(report)
    report.set_defaults(run=_analytics_report)
