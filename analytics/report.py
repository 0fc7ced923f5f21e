"""`shredline analytics report`: one self-contained HTML page of charts over the suppressed views.

Built only from the analyst snapshot, so it shows nothing an analyst could not query. The charts
are inline SVG drawn here (no script, no font, no request: the page's CSP forbids any), so the
file opens offline, in a mail client, or with JavaScript off. Suppressed cells are left out of
the sums and the page says how many were.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import duckdb

# One colour per chart, so a rendering test can find each chart's marks in a screenshot.
COLOURS = {
    "inbound": "#2b6cb0",
    "outbound": "#90cdf4",
    "channels": "#2f855a",
    "success": "#c05621",
    "p50": "#6b46c1",
    "p95": "#d6bcfa",
    "features": "#b83280",
}
WIDTH = 720
BAR = 22


@dataclass(frozen=True)
class ReportData:
    volume: list[tuple[str, int, int]]  # day, inbound, outbound
    channels: list[tuple[str, int]]
    conversations: list[tuple[str, int | None, int | None]]  # day, started, closed
    workflows: list[tuple[str, int | None, float | None, float | None, float | None]]
    features: list[tuple[str, int]]
    tenants: list[tuple[str, str, int | None]]
    suppressed: int  # message cells left out of the sums


def _rows(snapshot: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return snapshot.execute(sql).fetchall()


def gather(snapshot: duckdb.DuckDBPyConnection) -> ReportData:
    volume = _rows(
        snapshot,
        """SELECT CAST(day AS VARCHAR), coalesce(sum(messages) FILTER (WHERE direction = 'INBOUND'), 0),
                  coalesce(sum(messages) FILTER (WHERE direction = 'OUTBOUND'), 0)
           FROM messages_daily WHERE channel = 'ALL' GROUP BY day ORDER BY day""",
    )
    suppressed = _rows(snapshot, "SELECT count(*) FROM messages_daily WHERE messages IS NULL")[0][0]
    return ReportData(
        volume=[(d, int(i), int(o)) for d, i, o in volume],
        channels=_rows(
            snapshot,
            """SELECT channel, CAST(sum(messages) AS BIGINT) AS n FROM messages_daily
               WHERE channel <> 'ALL' AND messages IS NOT NULL GROUP BY channel ORDER BY n DESC""",
        ),
        conversations=_rows(
            snapshot,
            """SELECT CAST(day AS VARCHAR), CAST(sum(conversations_started) AS BIGINT),
                      CAST(sum(conversations_closed) AS BIGINT)
               FROM conversations_daily GROUP BY day ORDER BY day""",
        ),
        workflows=_rows(
            snapshot,
            "SELECT * FROM workflows WHERE workflow_id IS NOT NULL ORDER BY executions DESC NULLS LAST, workflow_id",
        ),
        features=_rows(
            snapshot,
            """SELECT feature_id, CAST(sum(uses) AS BIGINT) AS n FROM feature_usage WHERE uses IS NOT NULL
               GROUP BY feature_id ORDER BY n DESC, feature_id LIMIT 10""",
        ),
        tenants=_rows(snapshot, "SELECT tenant, state, facts FROM tenants ORDER BY state, tenant"),
        suppressed=int(suppressed),
    )


def _empty() -> str:
    return '<p class="empty">No data in this period, or every cell was below k.</p>'


def _svg(height: int, body: str, label: str) -> str:
    return (
        f'<svg role="img" aria-label="{escape(label)}" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def columns_chart(labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[int]]], label: str) -> str:
    """Stacked columns, one per label (a day); series are (name, colour, values)."""
    if not labels:
        return _empty()
    height, top, bottom, left = 260, 10, 40, 60
    plot_h, plot_w = height - top - bottom, WIDTH - left - 10
    peak = max(sum(values[i] for _n, _c, values in series) for i in range(len(labels))) or 1
    step = plot_w / len(labels)
    marks = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{WIDTH - 10}" y2="{top + plot_h}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{peak:,}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for i, day in enumerate(labels):
        base = float(top + plot_h)
        x = left + i * step + step * 0.15
        for name, colour, values in series:
            h = values[i] / peak * plot_h
            base -= h
            marks.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(day)} {escape(name)}: {values[i]:,}</title></rect>"
            )
        if len(labels) <= 16 or i % (len(labels) // 8 + 1) == 0:
            marks.append(f'<text x="{x + step * 0.35:.1f}" y="{height - 22}" text-anchor="middle">{day[5:]}</text>')
    legend = "".join(
        f'<rect x="{left + j * 110}" y="{height - 14}" width="10" height="10" fill="{c}"/>'
        f'<text x="{left + j * 110 + 14}" y="{height - 5}">{escape(n)}</text>'
        for j, (n, c, _v) in enumerate(series)
    )
    return _svg(height, "".join(marks) + legend, label)


def bars_chart(rows: Sequence[tuple[str, float]], colours: Sequence[str], label: str, fmt: str = "{:,.0f}") -> str:
    """Horizontal bars, one per (name, value), scaled to the largest value; colours cycle."""
    if not rows:
        return _empty()
    left, height = 170, len(rows) * (BAR + 6) + 10
    peak = max(v for _n, v in rows) or 1
    marks = []
    for i, (name, value) in enumerate(rows):
        y = 5 + i * (BAR + 6)
        w = value / peak * (WIDTH - left - 90)
        marks.append(
            f'<text x="{left - 8}" y="{y + BAR * 0.7:.1f}" text-anchor="end">{escape(name)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{BAR}" fill="{colours[i % len(colours)]}"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + BAR * 0.7:.1f}">{escape(fmt.format(value))}</text>'
        )
    return _svg(height, "".join(marks), label)


def _cell(value: Any) -> str:
    if value is None:
        return "<i>suppressed</i>"
    if value == "terminated":
        return '<span class="terminated">terminated</span>'
    return escape(f"{value:,}" if isinstance(value, int) else str(value))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return _empty()
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body{font:14px system-ui,sans-serif;margin:2em auto;max-width:760px;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
svg text{font:12px system-ui,sans-serif;fill:#333}
table{border-collapse:collapse} td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
.empty,.note{color:#666} .terminated{color:#9b2c2c;font-weight:600}
"""


def render_html(data: ReportData, since: dt.date | None, generated: dt.datetime, k: int) -> str:
    period = f"from {since.isoformat()}" if since else "all time"
    days = [d for d, _i, _o in data.volume]
    volume = columns_chart(
        days,
        [
            ("inbound", COLOURS["inbound"], [i for _d, i, _o in data.volume]),
            ("outbound", COLOURS["outbound"], [o for _d, _i, o in data.volume]),
        ],
        "Messages per day",
    )
    total = sum(n for _c, n in data.channels) or 1
    channels = bars_chart(
        [(c, n / total * 100) for c, n in data.channels], [COLOURS["channels"]], "Channel mix", "{:.1f}%"
    )
    rates = [(name, rate * 100) for name, _n, rate, _p50, _p95 in data.workflows if rate is not None]
    success = bars_chart(rates, [COLOURS["success"]], "Success rate", "{:.1f}%")
    timings = [
        bar
        for name, _n, _rate, p50, p95 in data.workflows
        if p50 is not None and p95 is not None
        for bar in ((f"{name} p50", p50), (f"{name} p95", p95))
    ]
    latency = bars_chart(
        timings,
        [COLOURS["p50"], COLOURS["p95"]],
        "Latency",
        "{:,.0f} ms",
    )
    features = bars_chart(data.features, [COLOURS["features"]], "Top features")
    tenants = _table(["tenant", "state", "usage facts"], data.tenants)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Shredline usage report ({escape(period)})</title><style>{STYLE}</style></head><body>
<h1>Usage report, {escape(period)}</h1>
<p class="note">Generated {escape(generated.strftime("%Y-%m-%d %H:%M UTC"))} from anonymised aggregates only.
Cells counting fewer than {k} events are suppressed and left out of the sums
({data.suppressed:,} message cells in this period).</p>
<h2>Message volume</h2>{volume}
<h2>Channel mix</h2>{channels}
<h2>Conversations</h2>{_table(["day", "started", "closed"], data.conversations)}
<h2>Workflow success rate</h2>{success}
<h2>Workflow latency (p50 and p95)</h2>{latency}
<h2>Top features</h2>{features}
<h2>Tenants</h2>{tenants}
</body></html>
"""
