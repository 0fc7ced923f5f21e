"""Analyst-facing views: aggregates only, small cells suppressed, safe against differencing.

**One grid of cells.** Every number any view publishes is built from one grid of base cells,
each counted over one UTC day:

| facts of kind | base cell |
|---|---|
| MESSAGE | tenant, day, direction, channel |
| EXECUTION | tenant, day, workflow, feature, status |
| any other kind | tenant, day, kind |

and, for the execution log lines (latency, log search), the same cells as EXECUTION.

**Suppression.** A base cell counting fewer than `k` is suppressed (shown as NULL). Every
larger number — a total over channels (`channel = 'ALL'`), over days, features, statuses,
workflows or tenants, a success rate — is the sum of the *shown* cells under it only (NULL
when none is shown). So no published number depends on the value of a suppressed cell, and
no subtraction or other combination of published numbers, inside one view, across views, or
across `--since` cuts (which cut whole days, hence whole cells), can give a suppressed value
back. The price: totals count only what is shown, so they can be lower than the truth.

Log lines follow the fact grid: a line is visible (in `log_search`, in latency quantiles) only
when its cell has at least `k` lines *and* its EXECUTION fact cell is shown; a replayed
duplicate line therefore never lifts a cell whose fact count is suppressed. Latency figures
over fewer than `k` visible durations are NULL.

**k has a floor.** An analyst may ask for a larger k (more suppression), never a smaller one
than `MIN_K`: `--k 1` would publish every cell, and two snapshots at k = 2 and k = 5 would
give a suppressed cell back by subtraction. Two snapshots at any k ≥ `MIN_K` cannot: each
number is a sum of cells of at least `MIN_K`, so any difference is too.

**Days are UTC days**, whatever the host's time zone: `usage_daily.day` is the UTC date of the
fact's minute (`warehouse.py` sets DuckDB's TimeZone to UTC and names UTC in every cast), and
log lines are cut to days the same way.

Sources: `{daily}` (the daily aggregates) and `{logs}` (the redacted log lines), already cut to
the requested period when formatted. Analysts query these through `shredline analytics sql`,
which never exposes the raw tables.
"""

from __future__ import annotations

import datetime as dt

DEFAULT_K = 5
MIN_K = DEFAULT_K  # the smallest k any snapshot may use


class KTooSmall(ValueError):
    """A k below `MIN_K` was asked for."""

    def __init__(self, k: int) -> None:
        super().__init__(f"k must be at least {MIN_K} (asked for {k}): smaller cells would be published")


# The base grid of fact cells, each with `shown` = its count, or NULL below k.
_FACT_CELLS = """
fact_cells AS (
    SELECT tenant, day, kind,
        CASE WHEN kind = 'MESSAGE' THEN direction END AS direction,
        CASE WHEN kind = 'MESSAGE' THEN channel END AS channel,
        CASE WHEN kind = 'EXECUTION' THEN workflow_id END AS workflow_id,
        CASE WHEN kind = 'EXECUTION' THEN feature_id END AS feature_id,
        CASE WHEN kind = 'EXECUTION' THEN status END AS status,
        sum(n) AS n
    FROM {daily} GROUP BY ALL
), cells AS (
    SELECT *, CAST(CASE WHEN n >= {k} THEN n END AS BIGINT) AS shown FROM fact_cells
)"""

# Log lines of the cells that are shown on both sides (lines and facts).
_VISIBLE_LINES = """
days AS (
    SELECT *, CAST(timezone('UTC', minute) AS DATE) AS day FROM {logs}
), lines AS (
    SELECT *, count(*) OVER (PARTITION BY tenant, day, workflow_id, feature_id, status) AS cell_lines FROM days
), visible AS (
    SELECT l.* EXCLUDE (cell_lines) FROM lines l
    JOIN cells c ON c.kind = 'EXECUTION' AND c.shown IS NOT NULL AND c.tenant = l.tenant AND c.day = l.day
        AND c.workflow_id IS NOT DISTINCT FROM l.workflow_id AND c.feature_id IS NOT DISTINCT FROM l.feature_id
        AND c.status IS NOT DISTINCT FROM l.status
    WHERE l.cell_lines >= {k}
)"""


def _with(*parts: str) -> str:
    return "WITH " + ",".join(parts)


MESSAGES_DAILY = (
    _with(_FACT_CELLS)
    + """
SELECT tenant, day, direction, channel, shown AS messages FROM cells WHERE kind = 'MESSAGE'
UNION ALL
SELECT tenant, day, direction, 'ALL', CAST(sum(shown) AS BIGINT) FROM cells WHERE kind = 'MESSAGE' GROUP BY ALL
"""
)

CONVERSATIONS_DAILY = (
    _with(_FACT_CELLS)
    + """
SELECT tenant, day,
    CAST(max(shown) FILTER (WHERE kind = 'CONVERSATION_STARTED') AS BIGINT) AS conversations_started,
    CAST(max(shown) FILTER (WHERE kind = 'CONVERSATION_CLOSED') AS BIGINT) AS conversations_closed
FROM cells GROUP BY ALL
"""
)

_EXECUTIONS = """
    CAST(sum(shown) AS BIGINT) AS executions,
    round(coalesce(sum(shown) FILTER (WHERE status = 'SUCCEEDED'), 0) / sum(shown), 3) AS success_rate
FROM cells WHERE kind = 'EXECUTION'"""

EXECUTIONS_BY_WORKFLOW = _with(_FACT_CELLS) + "SELECT tenant, workflow_id, feature_id," + _EXECUTIONS + " GROUP BY ALL"

_LATENCY = """
    CASE WHEN count(duration_ms) >= {k} THEN count(duration_ms) END AS COUNTED,
    CASE WHEN count(duration_ms) >= {k} THEN round(quantile_cont(duration_ms, 0.5)) END AS p50_ms,
    CASE WHEN count(duration_ms) >= {k} THEN round(quantile_cont(duration_ms, 0.95)) END AS p95_ms
FROM visible"""

EXECUTION_LATENCY = (
    _with(_FACT_CELLS, _VISIBLE_LINES)
    + "SELECT tenant, workflow_id,"
    + _LATENCY.replace("COUNTED", "steps")
    + " GROUP BY ALL"
)

# One row per workflow across all tenants: the report's success and latency chart.
WORKFLOWS = (
    _with(_FACT_CELLS, _VISIBLE_LINES)
    + """
SELECT workflow_id, e.executions, e.success_rate, l.p50_ms, l.p95_ms FROM (
    SELECT workflow_id,"""
    + _EXECUTIONS
    + """ GROUP BY ALL) e
FULL JOIN (SELECT workflow_id,"""
    + _LATENCY.replace("COUNTED", "durations")
    + """ GROUP BY ALL) l USING (workflow_id)
"""
)

FEATURE_USAGE = (
    _with(_FACT_CELLS)
    + """
SELECT tenant, day, feature_id, CAST(sum(shown) AS BIGINT) AS uses
FROM cells WHERE kind = 'EXECUTION' AND feature_id IS NOT NULL GROUP BY ALL
"""
)

# Row-level: a line shows only when its cell (tenant, day, workflow, feature, status) has at
# least k lines and k facts, so no line stands alone.
LOG_SEARCH = (
    _with(_FACT_CELLS, _VISIBLE_LINES)
    + """
SELECT tenant, day, workflow_id, feature_id, step, status, message, error FROM visible
"""
)

# Aggregates outlive their tenant; analysts see which tenants are terminated.
TENANTS = (
    _with(_FACT_CELLS)
    + """
SELECT c.tenant, coalesce(s.state, 'unknown') AS state, s.changed_at, CAST(sum(c.shown) AS BIGINT) AS facts
FROM cells c LEFT JOIN w.tenant_states s USING (tenant) GROUP BY ALL
"""
)

# The audit trail holds no personal data; operators and auditors query it like the aggregates.
AUDIT_TRAIL = """
SELECT seq, recorded_at, actor, action, tenant, details, signed AS checkpoint FROM w.audit_trail
"""

VIEWS = {
    "tenants": TENANTS,
    "messages_daily": MESSAGES_DAILY,
    "conversations_daily": CONVERSATIONS_DAILY,
    "executions_by_workflow": EXECUTIONS_BY_WORKFLOW,
    "execution_latency": EXECUTION_LATENCY,
    "workflows": WORKFLOWS,
    "feature_usage": FEATURE_USAGE,
    "log_search": LOG_SEARCH,
    "audit_trail": AUDIT_TRAIL,
}


def view_sql(name: str, k: int, since: dt.date | None = None) -> str:
    """A view's SELECT over the warehouse `w`, counting only UTC days from `since` on.
    Raises `KTooSmall` for k below `MIN_K`."""
    if int(k) < MIN_K:
        raise KTooSmall(int(k))
    if since is None:
        daily, logs = "w.usage_daily", "w.execution_logs"
    else:
        day = since.isoformat()  # a date object's ISO form: no quoting issue
        daily = f"(SELECT * FROM w.usage_daily WHERE day >= DATE '{day}')"
        logs = f"(SELECT * FROM w.execution_logs WHERE timezone('UTC', minute) >= DATE '{day}')"
    return VIEWS[name].format(k=int(k), daily=daily, logs=logs)
