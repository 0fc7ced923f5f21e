"""The warehouse without Kafka: atomic loads with offsets, de-dup by token, encryption at rest."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shredline.analytics.warehouse import Warehouse, WarehouseError

KEY = bytes(range(32))
MINUTE = dt.datetime(2026, 11, 28, 10, 5, tzinfo=dt.UTC)


def fact(token: bytes | None, kind: str = "MESSAGE", tenant: str = "acme") -> dict[str, Any]:
    return {
        "tenant": tenant,
        "kind": kind,
        "minute": MINUTE,
        "channel": "SMS",
        "direction": "INBOUND",
        "workflow_id": "order-status",
        "feature_id": None,
        "status": None,
        "duration_bucket": None,
        "length_bucket": "1-64",
        "dedup": token,
    }


def log_line(message: str) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "minute": MINUTE,
        "workflow_id": "order-status",
        "step": "respond",
        "feature_id": "llm-reply",
        "status": "SUCCEEDED",
        "duration_ms": 120,
        "message": message,
        "error": None,
    }


def count(w: Warehouse, table: str) -> int:
    row = w.db.execute(f"SELECT count(*) FROM w.{table}").fetchone()
    return int(row[0]) if row else -1


def test_a_batch_and_its_offsets_commit_together_and_tokens_count_once(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "a.duckdb", KEY)
    loaded = w.load([fact(b"t1"), fact(b"t2"), fact(b"t1")], [log_line("hi [NAME]")], {("m", 0): 3, ("l", 1): 1})
    assert (loaded.facts, loaded.duplicates, loaded.logs) == (2, 1, 1)
    again = w.load([fact(b"t2"), fact(b"t3"), fact(None)], [], {("m", 0): 6})
    assert (again.facts, again.duplicates) == (2, 1)  # t2 was seen; a token-less fact always counts
    assert w.offsets() == {("m", 0): 6, ("l", 1): 1}
    assert count(w, "usage_facts") == 4
    assert w.db.execute("SELECT * FROM w.usage_facts LIMIT 0").description is not None
    columns = [d[0] for d in w.db.execute("SELECT * FROM w.usage_facts LIMIT 0").description]
    assert "token" not in columns and "dedup" not in columns  # facts carry no per-event data


def test_a_failed_batch_leaves_neither_rows_nor_offsets(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "a.duckdb", KEY)
    w.load([fact(b"t1")], [], {("m", 0): 1})
    with pytest.raises(Exception):  # noqa: B017 - any failure inside the transaction
        w.load([fact(b"t2"), {"tenant": None}], [], {("m", 0): 3})  # type: ignore[list-item]
    assert count(w, "usage_facts") == 1 and w.offsets() == {("m", 0): 1}
    assert count(w, "dedup_tokens") == 1


def test_the_file_is_unreadable_without_its_key(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    w = Warehouse(path, KEY)
    w.load([fact(b"t1", tenant="zq9-canary-tenant")], [log_line("zq9-canary-log")], {("m", 0): 1})
    w.close()
    raw = path.read_bytes()
    assert b"zq9-canary" not in raw and KEY.hex().encode() not in raw
    with pytest.raises(duckdb.Error):
        duckdb.connect(str(path)).execute("SELECT * FROM usage_facts").fetchall()
    with pytest.raises(WarehouseError, match="wrong key"):
        Warehouse(path, bytes(32))
    assert count(Warehouse(path, KEY), "usage_facts") == 1


def test_dedup_tokens_are_purged_after_their_window(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "a.duckdb", KEY)
    w.load([fact(b"t1")], [], {("m", 0): 1})
    assert w.purge_dedup(MINUTE.date() + dt.timedelta(days=3)) == 0
    assert w.purge_dedup(MINUTE.date() + dt.timedelta(days=5)) == 1
    assert count(w, "usage_facts") == 1  # the aggregate stays, the token goes


def test_daily_aggregates_match_the_minute_facts_and_are_derived_for_an_older_file(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "d.duckdb", KEY)
    w.load([fact(b"a"), fact(b"b"), fact(b"a"), fact(b"c", kind="CONVERSATION_STARTED")], [], {("m", 0): 4})
    w.load([fact(b"d"), fact(None, tenant="beta")], [], {("m", 0): 6})
    daily = "SELECT tenant, kind, channel, feature_id, n FROM w.usage_daily ORDER BY ALL"
    from_facts = """SELECT tenant, kind, channel, feature_id, count(*) FROM w.usage_facts
                    GROUP BY tenant, CAST(minute AS DATE), kind, channel, direction, workflow_id, feature_id, status
                    ORDER BY ALL"""
    expected = [("acme", "CONVERSATION_STARTED", "SMS", None, 1), ("acme", "MESSAGE", "SMS", None, 3)]
    assert w.db.execute(daily).fetchall() == [*expected, ("beta", "MESSAGE", "SMS", None, 1)]
    assert w.db.execute(from_facts).fetchall() == w.db.execute(daily).fetchall()
    w.db.execute("DROP TABLE w.usage_daily")  # as a file written before the daily table existed
    w.close()
    reopened = Warehouse(tmp_path / "d.duckdb", KEY)
    assert reopened.db.execute(daily).fetchall() == [*expected, ("beta", "MESSAGE", "SMS", None, 1)]


def test_the_audit_trail_loads_once_per_record(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "t.duckdb", KEY)
    record = {
        "seq": 0,
        "at": MINUTE,
        "actor": "alice",
        "action": "tenant.provision",
        "tenant": "acme",
        "subject": None,
        "details": {"generation": "1"},
        "hash": b"h" * 32,
        "signature": b"s" * 64,
    }
    w.load([], [], {("a", 0): 1}, audit=[record])
    w.load([], [], {("a", 0): 2}, audit=[record, {**record, "seq": 1, "signature": None}])
    rows = w.db.execute("SELECT seq, action, details, signed FROM w.audit_trail ORDER BY seq").fetchall()
    assert rows == [
        (0, "tenant.provision", '{"generation": "1"}', True),
        (1, "tenant.provision", '{"generation": "1"}', False),
    ]
    assert w.analyst_snapshot(5).execute("SELECT count(*) FROM audit_trail").fetchone() == (2,)
