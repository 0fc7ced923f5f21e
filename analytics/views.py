"""Analyst-facing views: aggregates only, with small cells suppressed.

A cell counting fewer than `k` events is shown as NULL. Each view also carries a total row per
group (`channel = 'ALL'`); where exactly one cell of a group is suppressed, the total would
give it away (total minus the others), so the smallest other cell is suppressed too
(complementary suppression), and a total below `k` is suppressed itself.
Analysts query these through `shredline analytics sql`, which never exposes the raw tables.
"""

from __future__ import annotations

DEFAULT_K = 5

# Cells per (tenant, day, direction), plus a total per group.
MESSAGES_DAILY = """
WITH cells AS (
    SELECT tenant, CAST(minute AS DATE) AS day, direction, channel, count(*) AS n
    FROM w.usage_facts WHERE kind = 'MESSAGE' GROUP BY ALL
), ranked AS (
    SELECT *,
        count(*) FILTER (WHERE n < {k}) OVER g AS small,
        -- kept cells first, smallest first: r = 1 is the smallest cell that would stay visible
        row_number() OVER (PARTITION BY tenant, day, direction ORDER BY (n < {k}), n) AS r
    FROM cells WINDOW g AS (PARTITION BY tenant, day, direction)
)
SELECT tenant, day, direction, channel,
    CASE WHEN n < {k} OR (small = 1 AND r = 1) THEN NULL ELSE n END AS messages
FROM ranked
UNION ALL
SELECT tenant, day, direction, 'ALL', CASE WHEN sum(n) < {k} THEN NULL ELSE CAST(sum(n) AS BIGINT) END
FROM cells GROUP BY ALL
"""

CONVERSATIONS_DAILY = """
SELECT tenant, CAST(minute AS DATE) AS day,
    CASE WHEN count(*) FILTER (WHERE kind = 'CONVERSATION_CLOSED') < {k} THEN NULL
         ELSE count(*) FILTER (WHERE kind = 'CONVERSATION_CLOSED') END AS conversations_closed
FROM w.usage_facts GROUP BY ALL
"""

EXECUTIONS_BY_WORKFLOW = """
SELECT tenant, workflow_id, feature_id,
    CASE WHEN count(*) < {k} THEN NULL ELSE count(*) END AS executions,
    CASE WHEN count(*) < {k} THEN NULL
         ELSE round(avg(CASE WHEN status = 'SUCCEEDED' THEN 1.0 ELSE 0.0 END), 3) END AS success_rate
FROM w.usage_facts WHERE kind = 'EXECUTION' GROUP BY ALL
"""

EXECUTION_LATENCY = """
SELECT tenant, workflow_id,
    CASE WHEN count(*) < {k} THEN NULL ELSE count(*) END AS steps,
    CASE WHEN count(*) < {k} THEN NULL ELSE quantile_cont(duration_ms, 0.5) END AS p50_ms,
    CASE WHEN count(*) < {k} THEN NULL ELSE quantile_cont(duration_ms, 0.95) END AS p95_ms
FROM w.execution_logs WHERE duration_ms IS NOT NULL GROUP BY ALL
"""

FEATURE_USAGE = """
SELECT tenant, CAST(minute AS DATE) AS day, feature_id,
    CASE WHEN count(*) < {k} THEN NULL ELSE count(*) END AS uses
FROM w.usage_facts WHERE kind = 'EXECUTION' AND feature_id IS NOT NULL GROUP BY ALL
"""

# Row-level, so suppressed by group: a line shows only when its (tenant, day, workflow, step)
# group has at least k lines, so no line stands alone.
LOG_SEARCH = """
SELECT tenant, CAST(minute AS DATE) AS day, workflow_id, step, status, message, error FROM (
    SELECT *, count(*) OVER (PARTITION BY tenant, CAST(minute AS DATE), workflow_id, step) AS group_size
    FROM w.execution_logs)
WHERE group_size >= {k}
"""

# Aggregates outlive their tenant; analysts see which tenants are terminated.
TENANTS = """
SELECT f.tenant, coalesce(s.state, 'unknown') AS state, s.changed_at,
    CASE WHEN count(*) < {k} THEN NULL ELSE count(*) END AS facts
FROM w.usage_facts f LEFT JOIN w.tenant_states s USING (tenant) GROUP BY ALL
"""

VIEWS = {
    "tenants": TENANTS,
    "messages_daily": MESSAGES_DAILY,
    "conversations_daily": CONVERSATIONS_DAILY,
    "executions_by_workflow": EXECUTIONS_BY_WORKFLOW,
    "execution_latency": EXECUTION_LATENCY,
    "feature_usage": FEATURE_USAGE,
    "log_search": LOG_SEARCH,
}
