"""The analytics warehouse: one encrypted DuckDB file, and the exactly-once load transaction.

No Kafka here. `load()` inserts a batch and records the consumed positions in the *same*
transaction, so after a crash at any point the file holds either the whole batch and its
offsets or neither; the sink resumes from the stored offsets. Facts carry no identifier; the
only per-event data is the de-dup token, kept in `dedup_tokens` for DEDUP_KEEP_DAYS and then
purged (the keys behind the tokens are shredded after 3 days anyway).

Days are UTC days whatever the host's time zone: DuckDB takes its `TimeZone` setting from the
host, so every connection here (the warehouse's and each analyst snapshot's) sets it to UTC,
and every TIMESTAMPTZ-to-date cast names UTC explicitly as well.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from shredline.analytics.views import MIN_K, VIEWS, view_sql
from shredline.schemas.errors import ShredlineError

DEDUP_KEEP_DAYS = 4
FACT_COLUMNS = (
    "tenant",
    "kind",
    "minute",
    "channel",
    "direction",
    "workflow_id",
    "feature_id",
    "status",
    "duration_bucket",
    "length_bucket",
)
DAILY_KEY = ("tenant", "day", "kind", "channel", "direction", "workflow_id", "feature_id", "status")
LOG_COLUMNS = ("tenant", "minute", "workflow_id", "step", "feature_id", "status", "duration_ms", "message", "error")
#: The Arrow shapes of a batch as the sink decodes it (Avro timestamps arrive as aware datetimes).
FACT_SCHEMA = pa.schema(
    [
        ("tenant", pa.string()),
        ("kind", pa.string()),
        ("minute", pa.timestamp("us", tz="UTC")),
        *((c, pa.string()) for c in FACT_COLUMNS[3:]),
        ("dedup", pa.binary()),
    ]
)
LOG_SCHEMA = pa.schema(
    [
        ("tenant", pa.string()),
        ("minute", pa.timestamp("us", tz="UTC")),
        ("workflow_id", pa.string()),
        ("step", pa.string()),
        ("feature_id", pa.string()),
        ("status", pa.string()),
        ("duration_ms", pa.int64()),
        ("message", pa.string()),
        ("error", pa.string()),
    ]
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS w.usage_facts (
    tenant VARCHAR NOT NULL, kind VARCHAR NOT NULL, minute TIMESTAMPTZ NOT NULL, channel VARCHAR, direction VARCHAR,
    workflow_id VARCHAR, feature_id VARCHAR, status VARCHAR, duration_bucket VARCHAR, length_bucket VARCHAR);
CREATE TABLE IF NOT EXISTS w.execution_logs (
    tenant VARCHAR NOT NULL, minute TIMESTAMPTZ NOT NULL, workflow_id VARCHAR NOT NULL, step VARCHAR,
    feature_id VARCHAR, status VARCHAR, duration_ms BIGINT, message VARCHAR, error VARCHAR);
CREATE TABLE IF NOT EXISTS w.usage_daily (
    tenant VARCHAR NOT NULL, day DATE NOT NULL, kind VARCHAR NOT NULL, channel VARCHAR, direction VARCHAR,
    workflow_id VARCHAR, feature_id VARCHAR, status VARCHAR, n BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS w.dedup_tokens (token BLOB PRIMARY KEY, day DATE NOT NULL);
CREATE TABLE IF NOT EXISTS w.tenant_states (
    tenant VARCHAR PRIMARY KEY, state VARCHAR NOT NULL, changed_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS w.audit_trail (
    seq BIGINT PRIMARY KEY, recorded_at TIMESTAMPTZ NOT NULL, actor VARCHAR NOT NULL, action VARCHAR NOT NULL,
    tenant VARCHAR, subject VARCHAR, details VARCHAR NOT NULL, hash BLOB NOT NULL, signed BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS w.sink_offsets (
    topic VARCHAR NOT NULL, partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (topic, partition));
"""


class WarehouseError(ShredlineError):
    pass


@dataclass(frozen=True)
class Loaded:
    facts: int
    duplicates: int
    logs: int


def _audit_table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    return pa.table(
        {
            "seq": [r["seq"] for r in records],
            "recorded_at": [r["at"] for r in records],
            "actor": [r["actor"] for r in records],
            "action": [r["action"] for r in records],
            "tenant": [r["tenant"] for r in records],
            "subject": [r["subject"] for r in records],
            "details": [json.dumps(r["details"], sort_keys=True) for r in records],
            "hash": pa.array([r["hash"] for r in records], type=pa.binary()),
            "signed": [r["signature"] is not None for r in records],
        }
    )


def httpfs_extension() -> Path:
    """DuckDB writes encrypted files only with OpenSSL from httpfs; the PyPI wheel ships it (no download)."""
    spec = importlib.util.find_spec("duckdb_extension_httpfs")
    if spec is None or not spec.submodule_search_locations:
        raise WarehouseError("warehouse: the duckdb-extension-httpfs package is missing (pip install it)")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("httpfs.duckdb_extension"))
    if not found:
        raise WarehouseError("warehouse: duckdb-extension-httpfs has no extension binary")
    return found[-1]


def _utc_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose dates and displayed times are UTC, not the host's."""
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    return db


class Warehouse:
    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = _utc_connection()
        self.db.execute(f"LOAD '{httpfs_extension()}'")
        try:
            # The key is hex of 32 derived bytes; DuckDB takes it only inline, so it never goes to a log.
            self.db.execute(f"ATTACH '{path}' AS w (ENCRYPTION_KEY '{key.hex()}')")
        except duckdb.Error as exc:
            kind = type(exc).__name__
            raise WarehouseError(f"warehouse: cannot open {path} ({kind}); wrong key or not a warehouse") from None
        had_daily = self.db.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'w' AND table_name = 'usage_daily'"
        ).fetchone() == (1,)
        self.db.execute("BEGIN TRANSACTION")
        for statement in filter(str.strip, SCHEMA.split(";")):
            self.db.execute(statement)
        if not had_daily:  # a warehouse from before the daily table: derive it once
            self._add_daily("w.usage_facts")
        self.db.execute("COMMIT")

    def analyst_snapshot(self, k: int, since: dt.date | None = None) -> duckdb.DuckDBPyConnection:
        """A separate in-memory database holding only the suppressed views, materialised: an
        analyst's SQL runs there and can neither see the raw tables nor change the warehouse.
        k below `MIN_K` is refused (a `WarehouseError` naming the floor)."""
        if k < MIN_K:
            raise WarehouseError(f"analytics: --k must be at least {MIN_K}; smaller cells would be published")
        snapshot = _utc_connection()
        for name in VIEWS:
            table = self.db.execute(view_sql(name, k, since)).to_arrow_table()
            snapshot.register(f"_{name}", table)
            snapshot.execute(f"CREATE TABLE {name} AS SELECT * FROM _{name}")
            snapshot.unregister(f"_{name}")
        return snapshot

    def offsets(self) -> dict[tuple[str, int], int]:
        rows = self.db.execute("SELECT topic, partition, next_offset FROM w.sink_offsets").fetchall()
        return {(t, p): o for t, p, o in rows}

    def load(
        self,
        facts: Sequence[Mapping[str, Any]],
        logs: Sequence[Mapping[str, Any]],
        offsets: Mapping[tuple[str, int], int],
        tenant_events: Sequence[Mapping[str, Any]] = (),
        audit: Sequence[Mapping[str, Any]] = (),
    ) -> Loaded:
        """Insert a batch and its offsets atomically; facts whose token was seen are skipped.

        Facts and log lines are dicts as decoded (`usage_metric`, `redacted_log`); one Arrow table
        each goes in. Returns how many facts were new, how many were duplicates, how many log lines.
        """
        fact_table = pa.Table.from_pylist(facts, schema=FACT_SCHEMA) if facts else None
        log_table = pa.Table.from_pylist(logs, schema=LOG_SCHEMA) if logs else None
        inserted = 0
        self.db.execute("BEGIN TRANSACTION")
        try:
            if fact_table is not None:
                self.db.register("batch_facts", fact_table)
                # Once per token: first occurrence within this batch, and not seen before (an anti-join;
                # a read, so the transaction still writes only to the warehouse: DuckDB allows one
                # written database per transaction, hence the Arrow round trip instead of a temp table).
                fresh = self.db.execute("""
                    SELECT b.* FROM (
                        SELECT * FROM batch_facts
                        QUALIFY dedup IS NULL OR row_number() OVER (PARTITION BY dedup ORDER BY minute) = 1) b
                    ANTI JOIN w.dedup_tokens s ON b.dedup = s.token""").to_arrow_table()
                self.db.unregister("batch_facts")
                inserted = fresh.num_rows
                self.db.register("fresh_facts", fresh)
                self.db.execute("""
                    INSERT INTO w.dedup_tokens
                    SELECT dedup, CAST(timezone('UTC', minute) AS DATE) FROM fresh_facts WHERE dedup IS NOT NULL""")
                self.db.execute(f"INSERT INTO w.usage_facts SELECT {', '.join(FACT_COLUMNS)} FROM fresh_facts")
                self._add_daily("fresh_facts")
                self.db.unregister("fresh_facts")
            if log_table is not None:
                self.db.register("batch_logs", log_table)
                self.db.execute(f"INSERT INTO w.execution_logs SELECT {', '.join(LOG_COLUMNS)} FROM batch_logs")
                self.db.unregister("batch_logs")
            for event in tenant_events:  # control events arrive in order: the latest state wins
                state = "terminated" if event["kind"] == "TERMINATED" else "active"
                self.db.execute(
                    "INSERT OR REPLACE INTO w.tenant_states VALUES (?, ?, ?)",
                    [event["tenant"], state, event["occurred_at"]],
                )
            if audit:
                self.db.register("batch_audit", _audit_table(audit))
                self.db.execute("INSERT OR IGNORE INTO w.audit_trail SELECT * FROM batch_audit")
                self.db.unregister("batch_audit")
            for (topic, partition), next_offset in offsets.items():
                self.db.execute(
                    "INSERT OR REPLACE INTO w.sink_offsets VALUES (?, ?, ?)", [topic, partition, next_offset]
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return Loaded(inserted, len(facts) - inserted, len(logs))

    def _add_daily(self, facts: str) -> None:
        """Fold minute facts into the daily aggregates (UTC days); NULL matches NULL in the key."""
        on = " AND ".join(f"d.{c} IS NOT DISTINCT FROM s.{c}" for c in DAILY_KEY)
        self.db.execute(f"""
            MERGE INTO w.usage_daily d
            USING (SELECT {", ".join(DAILY_KEY[:1])}, CAST(timezone('UTC', minute) AS DATE) AS day,
                          {", ".join(DAILY_KEY[2:])}, count(*) AS n FROM {facts} GROUP BY ALL) s
            ON {on}
            WHEN MATCHED THEN UPDATE SET n = d.n + s.n
            WHEN NOT MATCHED THEN INSERT BY NAME""")

    def purge_dedup(self, today: dt.date) -> int:
        cutoff = today - dt.timedelta(days=DEDUP_KEEP_DAYS)
        before = self._count("dedup_tokens")
        self.db.execute("DELETE FROM w.dedup_tokens WHERE day < ?", [cutoff])
        return before - self._count("dedup_tokens")

    def _count(self, table: str) -> int:
        row = self.db.execute(f"SELECT count(*) FROM w.{table}").fetchone()  # table is one of ours
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.close()
