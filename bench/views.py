"""Time of the analyst views over N synthetic usage facts (default 10 million; 40 tenants, 90 days,
12 workflows, 9 features) in an encrypted warehouse, read from the daily aggregates, against the
same views aggregating the minute facts on the fly (the baseline), in the same run.

    python -m bench.views [--rows 10000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.results import Figure, save
from shredline.analytics.views import VIEWS, view_sql
from shredline.analytics.warehouse import Warehouse

# The minute facts grouped as the daily table holds them: what every view would scan without it.
ON_THE_FLY = """(SELECT tenant, CAST(minute AS DATE) AS day, kind, channel, direction, workflow_id, feature_id,
    status, count(*) AS n FROM w.usage_facts GROUP BY ALL)"""

FILL = """
INSERT INTO w.usage_facts
SELECT tenant, kind, minute,
    CASE WHEN kind <> 'EXECUTION' THEN ['WHATSAPP', 'SMS'][1 + (i // 7) % 2] END,
    CASE WHEN kind <> 'EXECUTION' THEN ['INBOUND', 'OUTBOUND'][1 + (i // 3) % 2] END,
    'workflow-' || ((i // 6) % 12),
    CASE WHEN kind = 'EXECUTION' THEN 'feature-' || ((i // 6) % 9) END,
    CASE WHEN kind = 'EXECUTION' THEN ['SUCCEEDED', 'SUCCEEDED', 'FAILED', 'STARTED'][1 + (i // 5) % 4] END,
    CASE WHEN kind = 'EXECUTION' THEN '<100ms' END,
    CASE WHEN kind = 'MESSAGE' THEN '1-64' END
FROM (SELECT i, 'tenant-' || ((i // 11) % 40) AS tenant,
        ['MESSAGE', 'MESSAGE', 'MESSAGE', 'EXECUTION', 'CONVERSATION_STARTED', 'CONVERSATION_CLOSED'][1 + i % 6]
            AS kind,
        TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_minutes(CAST((i * 7919) % (90 * 1440) AS BIGINT)) AS minute
      FROM range({start}, {stop}) t(i))
"""


def timed(w: Warehouse, sql: str) -> tuple[float, int]:
    started = time.perf_counter()
    rows = len(w.db.execute(sql).fetchall())
    return time.perf_counter() - started, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        w = Warehouse(Path(tmp) / "bench.duckdb", bytes(32))
        started = time.perf_counter()
        step = 1_000_000
        for start in range(0, args.rows, step):
            w.db.execute(FILL.format(start=start, stop=min(args.rows, start + step)))
            print(f"  filled {min(args.rows, start + step):,} facts", flush=True)
        w.db.execute("DELETE FROM w.usage_daily")
        w.db.execute("INSERT INTO w.usage_daily " + ON_THE_FLY[1:-1])
        fill_s = time.perf_counter() - started
        daily = w.db.execute("SELECT count(*) FROM w.usage_daily").fetchone()
        print(f"{args.rows:,} facts -> {daily[0] if daily else 0:,} daily rows in {fill_s:.1f} s")
        print(f"{'view':<24}{'daily table':>14}{'on the fly':>14}{'speed-up':>10}{'rows':>9}")
        figures = {}
        for name in VIEWS:
            if "{daily}" not in VIEWS[name]:
                continue  # latency and log search read the log lines, not the facts
            fast, rows = timed(w, view_sql(name, 5))
            slow, _ = timed(w, VIEWS[name].format(k=5, daily=ON_THE_FLY, logs="w.execution_logs"))
            figures[name] = {"daily_s": round(fast, 3), "on_the_fly_s": round(slow, 3), "rows": rows}
            print(f"{name:<24}{fast:>13.3f}s{slow:>13.3f}s{slow / fast:>9.1f}x{rows:>9,}")
        w.close()
    save(
        "views",
        [
            Figure(
                f"view {name} over {args.rows:,} facts",
                f["daily_s"],
                "same view aggregating minute facts",
                f["on_the_fly_s"],
                "s",
            )
            for name, f in figures.items()
        ],
        facts=args.rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
