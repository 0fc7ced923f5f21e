"""Suppressed views and the read-only SQL command on a real DuckDB warehouse."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from shredline.analytics.query import QueryError, render, run_query
from shredline.analytics.warehouse import Warehouse

KEY = bytes(range(32))
DAY = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


def message(channel: str, i: int, tenant: str = "acme") -> dict[str, Any]:
    return {
        "tenant": tenant,
        "kind": "MESSAGE",
        "minute": DAY + dt.timedelta(minutes=i % 50),
        "channel": channel,
        "direction": "INBOUND",
        "workflow_id": None,
        "feature_id": None,
        "status": None,
        "duration_bucket": None,
        "length_bucket": "1-64",
        "dedup": None,
    }


@pytest.fixture
def snapshot(tmp_path: Path) -> Any:
    w = Warehouse(tmp_path / "a.duckdb", KEY)
    facts = [message("WHATSAPP", i) for i in range(40)] + [message("SMS", i) for i in range(3)]
    facts += [message("WHATSAPP", i, tenant="tiny") for i in range(2)]
    w.load(facts, [], {("m", 0): len(facts)})
    yield w.analyst_snapshot(5)
    w.close()


def cells(snapshot: Any, tenant: str) -> dict[str, Any]:
    _cols, rows = run_query(snapshot, f"SELECT channel, messages FROM messages_daily WHERE tenant = '{tenant}'")
    return dict(rows)


def test_small_cells_are_suppressed_and_totals_count_only_shown_cells(snapshot: Any) -> None:
    # SMS (3) is below k; the total counts only WhatsApp (40), so total minus WhatsApp gives nothing.
    assert cells(snapshot, "acme") == {"SMS": None, "WHATSAPP": 40, "ALL": 40}
    assert cells(snapshot, "tiny") == {"WHATSAPP": None, "ALL": None}


def test_cells_at_or_above_k_are_shown(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "b.duckdb", KEY)
    facts = [message("WHATSAPP", i) for i in range(7)] + [message("SMS", i) for i in range(5)]
    w.load(facts, [], {("m", 0): 12})
    assert cells(w.analyst_snapshot(5), "acme") == {"SMS": 5, "WHATSAPP": 7, "ALL": 12}


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO messages_daily VALUES (1)",
        "DELETE FROM messages_daily",
        "CREATE TABLE x (a INT)",
        "SELECT 1; SELECT 2",
        "ATTACH 'x.db' AS y",
        "COPY messages_daily TO 'out.csv'",
    ],
)
def test_anything_but_one_select_is_refused(snapshot: Any, sql: str) -> None:
    with pytest.raises(QueryError, match=r"^sql: "):
        run_query(snapshot, sql)


def test_raw_tables_are_out_of_reach_and_errors_are_one_line(snapshot: Any) -> None:
    for sql in ("SELECT * FROM usage_facts", "SELECT * FROM w.usage_facts", "SELECT * FROM dedup_tokens"):
        with pytest.raises(QueryError) as err:
            run_query(snapshot, sql)
        assert "\n" not in str(err.value)
    with pytest.raises(QueryError, match=r"^sql: "):
        run_query(snapshot, "SELEC nonsense")


def test_formats(snapshot: Any) -> None:
    cols, rows = run_query(
        snapshot, "SELECT channel, messages FROM messages_daily WHERE tenant = 'acme' ORDER BY channel"
    )
    assert render(cols, rows, "csv").splitlines() == ["channel,messages", "ALL,40", "SMS,", "WHATSAPP,40"]
    assert json.loads(render(cols, rows, "json"))[0] == {"channel": "ALL", "messages": 40}
    table = render(cols, rows, "table").splitlines()
    assert table[0].split() == ["channel", "messages"] and "(suppressed)" in table[3] and table[-1] == "(3 rows)"


def execution(i: int, status: str = "SUCCEEDED", feature: str | None = None, **more: Any) -> dict[str, Any]:
    return {
        **message("WHATSAPP", i),
        "kind": "EXECUTION",
        "workflow_id": "order-status",
        "feature_id": feature,
        "status": status,
        **more,
    }


def log(i: int, status: str = "SUCCEEDED", step: str = "respond", **more: Any) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "minute": DAY,
        "workflow_id": "order-status",
        "step": step,
        "feature_id": None,
        "status": status,
        "duration_ms": 100 * (i + 1),
        "message": f"sent [NAME] #{i}",
        "error": None,
        **more,
    }


def test_feature_usage_and_log_search_hide_small_groups(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "c.duckdb", KEY)
    facts = [execution(i, feature="calendar" if i < 6 else "payments") for i in range(8)]
    facts += [execution(i) for i in range(7)] + [execution(i, "FAILED") for i in range(3)]
    logs = [log(i, step="respond" if i < 5 else "notify") for i in range(7)]
    logs += [log(i % 3, "FAILED") for i in range(6)]  # replayed twice: 6 lines of 3 facts
    w.load(facts, logs, {("m", 0): 8})
    snap = w.analyst_snapshot(5)
    assert dict(run_query(snap, "SELECT feature_id, uses FROM feature_usage")[1]) == {"calendar": 6, "payments": None}
    _cols, rows = run_query(snap, "SELECT status, step, count(*) FROM log_search GROUP BY ALL ORDER BY ALL")
    # the 7 succeeded lines form one cell (shown with its 7 facts); the failed lines' fact cell (3) is hidden
    assert rows == [("SUCCEEDED", "notify", 2), ("SUCCEEDED", "respond", 5)]


def test_terminated_tenants_keep_their_aggregates_and_show_as_terminated(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "d.duckdb", KEY)
    facts = [message("SMS", i) for i in range(6)] + [message("SMS", i, tenant="other") for i in range(6)]
    events = [
        {"tenant": "acme", "kind": "PROVISIONED", "occurred_at": DAY},
        {"tenant": "other", "kind": "PROVISIONED", "occurred_at": DAY},
        {"tenant": "acme", "kind": "TERMINATED", "occurred_at": DAY + dt.timedelta(days=1)},
    ]
    w.load(facts, [], {("m", 0): 12}, tenant_events=events)
    _cols, rows = run_query(w.analyst_snapshot(5), "SELECT tenant, state, facts FROM tenants ORDER BY tenant")
    assert rows == [("acme", "terminated", 6), ("other", "active", 6)]


def test_conversations_started_and_closed_per_day_and_the_since_cut(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "e.duckdb", KEY)
    yesterday = DAY - dt.timedelta(days=1)
    facts = [{**message("SMS", i), "kind": "CONVERSATION_STARTED"} for i in range(7)]
    facts += [{**message("SMS", i), "kind": "CONVERSATION_CLOSED"} for i in range(3)]
    facts += [{**message("SMS", i), "kind": "CONVERSATION_STARTED", "minute": yesterday} for i in range(9)]
    w.load(facts, [], {("m", 0): len(facts)})
    sql = "SELECT day, conversations_started, conversations_closed FROM conversations_daily ORDER BY day"
    assert run_query(w.analyst_snapshot(5), sql)[1] == [(yesterday.date(), 9, None), (DAY.date(), 7, None)]
    assert run_query(w.analyst_snapshot(5, since=DAY.date()), sql)[1] == [(DAY.date(), 7, None)]


def test_workflows_view_gives_success_rate_and_latency_across_tenants(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "f.duckdb", KEY)
    counts = {("acme", "SUCCEEDED"): 6, ("acme", "FAILED"): 5, ("beta", "SUCCEEDED"): 5, ("beta", "FAILED"): 2}
    facts = [
        {**message("SMS", i, tenant=t), "kind": "EXECUTION", "workflow_id": "faq", "status": s}
        for (t, s), n in counts.items()
        for i in range(n)
    ]
    logs = [{**log(i), "workflow_id": "faq", "duration_ms": 100 * (i + 1)} for i in range(6)]
    w.load(facts, logs, {("m", 0): len(facts)})
    rows = run_query(w.analyst_snapshot(5), "SELECT * FROM workflows")[1]
    # beta's 2 failures are suppressed, so they count nowhere: 16 executions, 11 succeeded
    assert rows == [("faq", 16, 0.688, 350.0, 575.0)]
    sql = "SELECT tenant, executions, success_rate FROM executions_by_workflow ORDER BY tenant"
    assert run_query(w.analyst_snapshot(5), sql)[1] == [("acme", 11, 0.545), ("beta", 5, 1.0)]
