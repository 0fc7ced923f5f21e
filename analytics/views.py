"""Analyst-facing views: aggregates only, with small cells suppressed.

A cell counting fewer than `k` events is shown as NULL. Each view also carries a total row per
group (`channel = 'ALL'`); where exactly one cell of a group is suppressed, the total would
give it away (total minus the others), so the smallest other cell is suppressed too
(complementary suppression), and a total below `k` is suppressed itself.
Counts come from the daily aggregates (`{daily}`); latency and log search need the execution
log lines (`{logs}`). Both sources are already cut to the requested period when formatted.
Analysts query these through `shredline analytics sql`, which never exposes the raw tables.
"""

from __future__ import annotations

import datetime as dt

DEFAULT_K = 5

# Cells per (tenant, day, direction), plus a total per group.
MESSAGES_DAILY = """
WITH cells AS (
    SELECT tenant, day, direction, channel, sum(n) AS n
    FROM {daily} WHERE kind = 'MESSAGE' GROUP BY ALL
), ranked AS (
    SELECT *,
        count(*) FILTER (WHERE n < {k}) OVER g AS small,
        -- kept cells first, smallest first: r = 1 is the smallest cell that would stay visible
        row_number() OVER (PARTITION BY tenant, day, direction ORDER BY (n < {k}), n) AS r
    FROM cells WINDOW g AS (PARTITION BY tenant, day, direction)
)
SELECT tenant, day, direction, channel,
    CAST(CASE WHEN n < {k} OR (small = 1 AND r = 1) THEN NULL ELSE n END AS BIGINT) AS messages
FROM ranked
UNION ALL
SELECT tenant, day, direction, 'ALL', CAST(CASE WHEN sum(n) < {k} THEN NULL ELSE sum(n) END AS BIGINT)
FROM cells GROUP BY ALL
"""

CONVERSATIONS_DAILY = """
SELECT tenant, day,
    CAST(CASE WHEN started < {k} THEN NULL ELSE started END AS BIGINT) AS conversations_started,
    CAST(CASE WHEN closed < {k} THEN NULL ELSE closed END AS BIGINT) AS conversations_closed
FROM (SELECT tenant, day,
        coalesce(sum(n) FILTER (WHERE kind = 'CONVERSATION_STARTED'), 0) AS started,
        coalesce(sum(n) FILTER (WHERE kind = 'CONVERSATION_CLOSED'), 0) AS closed
      FROM {daily} GROUP BY ALL)
"""

_EXECUTIONS = """
    CAST(CASE WHEN sum(n) < {k} THEN NULL ELSE sum(n) END AS BIGINT) AS executions,
    CASE WHEN sum(n) < {k} THEN NULL
         ELSE round(coalesce(sum(n) FILTER (WHERE status = 'SUCCEEDED'), 0) / sum(n), 3) END AS success_rate
FROM {daily} WHERE kind = 'EXECUTION'"""
EXECUTIONS_BY_WORKFLOW = "SELECT tenant, workflow_id, feature_id," + _EXECUTIONS + " GROUP BY ALL"

EXECUTION_LATENCY = """
SELECT tenant, workflow_id,
    CASE WHEN count(*) < {k} THEN NULL ELSE count(*) END AS steps,
    CASE WHEN count(*) < {k} THEN NULL ELSE round(quantile_cont(duration_ms, 0.5)) END AS p50_ms,
    CASE WHEN count(*) < {k} THEN NULL ELSE round(quantile_cont(duration_ms, 0.95)) END AS p95_ms
FROM {logs} WHERE duration_ms IS NOT NULL GROUP BY ALL
"""

# One row per workflow across all tenants: the report's success and latency chart.
WORKFLOWS = (
    """
SELECT workflow_id, e.executions, e.success_rate, l.p50_ms, l.p95_ms FROM (
    SELECT workflow_id,"""
    + _EXECUTIONS
    + """ GROUP BY ALL) e
FULL JOIN (
    SELECT workflow_id,
        CASE WHEN count(*) < {k} THEN NULL ELSE round(quantile_cont(duration_ms, 0.5)) END AS p50_ms,
        CASE WHEN count(*) < {k} THEN NULL ELSE round(quantile_cont(duration_ms, 0.95)) END AS p95_ms
    FROM {logs} WHERE duration_ms IS NOT NULL GROUP BY ALL) l USING (workflow_id)
"""
)

FEATURE_USAGE = """
SELECT tenant, day, feature_id, CAST(CASE WHEN sum(n) < {k} THEN NULL ELSE sum(n) END AS BIGINT) AS uses
FROM {daily} WHERE kind = 'EXECUTION' AND feature_id IS NOT NULL GROUP BY ALL
"""

# Row-level, so suppressed by group: a line shows only when its (tenant, day, workflow, step)
# group has at least k lines, so no line stands alone.
LOG_SEARCH = """
SELECT tenant, CAST(minute AS DATE) AS day, workflow_id, step, status, message, error FROM (
    SELECT *, count(*) OVER (PARTITION BY tenant, CAST(minute AS DATE), workflow_id, step) AS group_size
    FROM {logs})
WHERE group_size >= {k}
"""

# Aggregates outlive their tenant; analysts see which tenants are terminated.
TENANTS = """
SELECT f.tenant, coalesce(s.state, 'unknown') AS state, s.changed_at,
    CAST(CASE WHEN sum(n) < {k} THEN NULL ELSE sum(n) END AS BIGINT) AS facts
FROM {daily} f LEFT JOIN w.tenant_states s USING (tenant) GROUP BY ALL
"""

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
    """A view's SELECT over the warehouse `w`, counting only days from `since` on."""
    if since is None:
        daily, logs = "w.usage_daily", "w.execution_logs"
    else:
        day = since.isoformat()  # a date object's ISO form: no quoting issue
        daily = f"(SELECT * FROM w.usage_daily WHERE day >= DATE '{day}')"
        logs = f"(SELECT * FROM w.execution_logs WHERE minute >= DATE '{day}')"
    return VIEWS[name].format(k=int(k), daily=daily, logs=logs)
