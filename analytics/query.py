"""`shredline analytics sql`: read-only queries over the suppressed views, as table, CSV or JSON."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
from typing import Any

import duckdb

from shredline.schemas.errors import ShredlineError


class QueryError(ShredlineError):
    exit_code = 2


def run_query(snapshot: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Exactly one SELECT; anything else is refused before it runs."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"sql: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise QueryError("sql: give exactly one statement")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError(f"sql: read-only: {statements[0].type.name} statements are refused")
    try:
        cursor = snapshot.execute(sql)
        rows = cursor.fetchall()
    except duckdb.Error as exc:
        raise QueryError(f"sql: {str(exc).splitlines()[0]}") from None
    return [d[0] for d in cursor.description or []], rows


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def render(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows], indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_plain(v) if v is not None else "" for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    cells = [columns] + [["(suppressed)" if v is None else str(_plain(v)) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, f"({len(rows)} rows)"])
